//! The one part of an execution that depends on the command's types, behind [`Drive`].
//!
//! The engine (the retry loop, turns and holds, reading, the stream cache, snapshots, the
//! hand-over, the append and tracing) takes a `&mut dyn Drive` and is compiled once per
//! backend. Per command, only [`Driver`]'s few methods are compiled: binding the streams,
//! folding, calling `handle` and the continuations, and encoding the decision. A rejection
//! stays typed inside the driver; the engine only learns that there was one.

use super::*;
use crate::backend::StoredSnapshot;
use crate::command::{__private::Round, FoldError, Unwritable};
use crate::{EventMetadata, Payload};
use read::ReadsIter;
use snapshot::Covered;

/// What the engine reports in place of a command's rejection, which the [`Driver`] keeps with
/// its type: [`Driver::restore`] puts it back.
#[derive(Debug)]
pub(super) struct Rejection;

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("rejected")
    }
}

impl std::error::Error for Rejection {}

/// Where a decision stands after `handle` or a continuation ran.
pub(super) enum Step {
    /// The final decision's writes.
    Decided(Writes),
    /// A continuation waits for the streams of [`Drive::round_ids`].
    Discover,
}

/// Why deciding stopped.
pub(super) enum Stop {
    /// The command rejected; the driver holds its error.
    Rejected,
    Fold(FoldError),
    Unwritable(Unwritable),
    /// The engine and the driver disagree about where the command stands (a step resumed
    /// with no round pending): an error, so that nothing is written on a broken invariant.
    Broken(&'static str),
}

/// A command's declared stream ids, the usual handful inline.
pub(super) type StreamIds = smallvec::SmallVec<[StreamId; 4]>;

/// A command during one execution, its types erased.
pub(super) trait Drive: Send {
    /// Binds the command's streams afresh, with a default state and no round pending, and
    /// pushes the declared stream ids to `ids` when given.
    fn bind(&mut self, ids: Option<&mut StreamIds>);
    /// Replaces the state with one decoded from a snapshot.
    fn restore(&mut self, json: &str) -> Result<(), serde_json::Error>;
    /// The state encoded for a snapshot.
    fn encode(&self) -> Option<Result<Payload, serde_json::Error>>;
    /// Folds the declared streams.
    fn fold(&mut self, reads: &mut ReadsIter<'_>) -> Result<(), FoldError>;
    /// Runs `handle` on the state.
    fn decide(&mut self, stamp: &dyn Fn() -> EventMetadata) -> Result<Step, Stop>;
    /// The streams the pending continuation asked for.
    fn round_ids(&self) -> &[StreamId];
    /// Folds a round's streams and resumes its continuation.
    fn resume(
        &mut self,
        reads: &mut dyn Iterator<Item = StreamRead<'_>>,
        stamp: &dyn Fn() -> EventMetadata,
    ) -> Result<Step, Stop>;
}

/// [`Drive`] for a command `C`.
pub(super) struct Driver<'a, C: Handle> {
    command: &'a C,
    snap: Option<&'a Snapshotting<C::State>>,
    state: C::State,
    bound: Option<Bindings<C::Streams>>,
    round: Option<Box<dyn Round<C::State, C::Error>>>,
    rejection: Option<C::Error>,
}

impl<'a, C: Handle> Driver<'a, C> {
    pub(super) fn new(command: &'a C, snap: Option<&'a Snapshotting<C::State>>) -> Self {
        Self {
            command,
            snap,
            state: C::State::default(),
            bound: None,
            round: None,
            rejection: None,
        }
    }

    /// Puts the command's rejection back into an error the engine reported.
    pub(super) fn restore(&mut self, error: ExecuteError<Rejection>) -> ExecuteError<C::Error> {
        with_rejection(error, self.rejection.take())
    }

    fn rejected(&mut self, rejection: C::Error) -> Stop {
        self.rejection = Some(rejection);
        Stop::Rejected
    }
}

/// [`Driver::restore`]'s work: compiled once per error type, not once per command.
fn with_rejection<E>(error: ExecuteError<Rejection>, rejection: Option<E>) -> ExecuteError<E> {
    match error {
        ExecuteError::Rejected(Rejection) => match rejection {
            Some(rejection) => ExecuteError::Rejected(rejection),
            None => ExecuteError::Store(StoreError::Other(
                "a rejection was reported without its error".into(),
            )),
        },
        ExecuteError::Conflict { attempts, last } => ExecuteError::Conflict { attempts, last },
        ExecuteError::Store(e) => ExecuteError::Store(e),
        ExecuteError::Fold(e) => ExecuteError::Fold(e),
        ExecuteError::Encode(e) => ExecuteError::Encode(e),
        ExecuteError::UndeclaredStream(e) => ExecuteError::UndeclaredStream(e),
        ExecuteError::Timeout(limit) => ExecuteError::Timeout(limit),
        ExecuteError::EventTypeClash(e) => ExecuteError::EventTypeClash(e),
        ExecuteError::KeyReused { key, first, this } => {
            ExecuteError::KeyReused { key, first, this }
        }
    }
}

impl<C: Handle> Drive for Driver<'_, C> {
    fn bind(&mut self, ids: Option<&mut StreamIds>) {
        let bound = self.command.streams();
        if let Some(ids) = ids {
            C::Streams::for_each_id(&bound, &mut |id| ids.push(id.clone()));
        }
        self.bound = Some(bound);
        self.state = C::State::default();
        self.round = None;
    }

    fn restore(&mut self, json: &str) -> Result<(), serde_json::Error> {
        if let Some(snap) = self.snap {
            self.state = (snap.decode)(json)?;
        }
        Ok(())
    }

    fn encode(&self) -> Option<Result<Payload, serde_json::Error>> {
        self.snap.map(|snap| (snap.encode)(&self.state))
    }

    fn fold(&mut self, reads: &mut ReadsIter<'_>) -> Result<(), FoldError> {
        match &self.bound {
            Some(bound) => self.state.fold_all(bound, reads),
            None => Ok(()),
        }
    }

    fn decide(&mut self, stamp: &dyn Fn() -> EventMetadata) -> Result<Step, Stop> {
        let bound = match self.bound.take() {
            Some(bound) => bound,
            // Not reached: the engine binds before each pass.
            None => self.command.streams(),
        };
        // Matches rather than `map`s: a closure or a function item passed to `map` is one more
        // function compiled per command.
        let next: Next<C::Streams, C::Continuation> =
            match self.command.handle(&self.state, Decision::new(bound)) {
                Ok(step) => step.into(),
                Err(rejection) => return Err(self.rejected(rejection)),
            };
        match next {
            Next::Decided(decision) => decided(decision.into_writes(stamp)),
            Next::Discover(discovery) => {
                self.round = Some(C::Continuation::into_round(discovery));
                Ok(Step::Discover)
            }
        }
    }

    fn round_ids(&self) -> &[StreamId] {
        self.round.as_ref().map_or(&[], |round| round.ids())
    }

    fn resume(
        &mut self,
        reads: &mut dyn Iterator<Item = StreamRead<'_>>,
        stamp: &dyn Fn() -> EventMetadata,
    ) -> Result<Step, Stop> {
        // A constant per command: for one that never discovers, no round exists and nothing
        // of `resume_round` is compiled for it.
        if !<C::Continuation as crate::command::Discovers>::DISCOVERS {
            // Not reached: the engine resumes only after `Step::Discover`.
            return Err(Stop::Broken(NO_ROUND));
        }
        resume_round(&mut self.round, &mut self.state, &mut self.rejection, reads, stamp)
    }
}

const NO_ROUND: &str = "the executor resumed a command that has no discovery round pending";

/// The step for a final decision's writes.
fn decided(writes: Result<Writes, Unwritable>) -> Result<Step, Stop> {
    writes.map(Step::Decided).map_err(Stop::Unwritable)
}

/// Resumes the pending discovery round, if any, over `state`.
fn resume_round<St, E>(
    pending: &mut Option<Box<dyn Round<St, E>>>,
    state: &mut St,
    rejection: &mut Option<E>,
    reads: &mut dyn Iterator<Item = StreamRead<'_>>,
    stamp: &dyn Fn() -> EventMetadata,
) -> Result<Step, Stop> {
    let Some(round) = pending.take() else {
        // Not reached: the engine resumes only after `Step::Discover`.
        return Err(Stop::Broken(NO_ROUND));
    };
    match round.resume(state, reads) {
        Ok(RoundOutcome::Decided(decision)) => decided(decision.into_writes(stamp)),
        Ok(RoundOutcome::Again(next)) => {
            *pending = Some(next);
            Ok(Step::Discover)
        }
        Err(RoundError::Rejected(e)) => {
            *rejection = Some(e);
            Err(Stop::Rejected)
        }
        Err(RoundError::Fold(e)) => Err(Stop::Fold(e)),
    }
}

/// Takes a snapshot of the state `drive` holds, when the policy asks for one.
pub(super) fn take_snapshot(
    drive: &dyn Drive,
    meta: &SnapshotMeta,
    reads: &read::Reads,
    base: &[Covered],
) -> Option<StoredSnapshot> {
    meta.take(reads, base, &|| drive.encode())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::HNil;
    use crate::{Bindings, Command, Decision, Handled, NoDiscovery};

    /// A command over no streams that decides nothing.
    struct Nothing;

    impl Command for Nothing {
        type Streams = HNil;
        type State = ();
        type Error = std::fmt::Error;
        type Continuation = NoDiscovery;

        fn streams(&self) -> Bindings<HNil> {
            HNil
        }
    }

    impl Handle for Nothing {
        fn handle(&self, (): &(), decision: Decision<HNil>) -> Handled<Self> {
            Ok(decision)
        }
    }

    fn stamp() -> EventMetadata {
        RequestContext::new().stamp()
    }

    #[test]
    fn resuming_a_command_that_never_discovers_is_an_error_not_an_empty_commit() {
        let mut driver = Driver::new(&Nothing, None);
        driver.bind(None);
        let outcome = driver.resume(&mut std::iter::empty(), &stamp);
        assert!(matches!(outcome, Err(Stop::Broken(NO_ROUND))));
    }

    #[test]
    fn resuming_with_no_round_pending_is_an_error_not_an_empty_commit() {
        let outcome = resume_round::<(), std::fmt::Error>(
            &mut None,
            &mut (),
            &mut None,
            &mut std::iter::empty(),
            &stamp,
        );
        assert!(matches!(outcome, Err(Stop::Broken(NO_ROUND))));
    }

    #[test]
    fn a_decision_of_nothing_is_decided_with_no_writes() {
        let mut driver = Driver::new(&Nothing, None);
        driver.bind(None);
        assert!(matches!(driver.decide(&stamp), Ok(Step::Decided(writes)) if writes.is_empty()));
    }
}
