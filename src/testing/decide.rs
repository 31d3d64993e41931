//! Deciding without a backend: the command's own fold, `handle` and continuations, fed from
//! a function that answers reads synchronously.
//!
//! The executor runs the same steps between its (async) reads: the check that no two event
//! types of the command store under one name, `fold_all` over the command's streams, `handle`,
//! then for each discovery round [`Round::resume`], which folds the discovered streams and
//! resumes the continuation, and finally the decision's `into_writes`.
//! Nothing here decides anything of its own.

use crate::{
    EventMetadata, StreamId,
    backend::StreamEvents,
    command::{
        __private::{RoundError, RoundOutcome},
        Decision, FoldAll, Handle, Next, Resume, StreamRead, StreamSet, Writes,
    },
    executor::{ExecuteError, check_event_names},
};

/// Runs `command` to its final decision, reading every stream it asks for (its own, then each
/// discovery round's) through `read`, which must answer one [`StreamEvents`] per id, in order.
///
/// Returns the events the executor would append, stamped by `stamp`, or the error it would
/// report: [`ExecuteError::EventTypeClash`] (before anything is read),
/// [`ExecuteError::Rejected`], [`ExecuteError::Fold`], [`ExecuteError::Encode`] or
/// [`ExecuteError::UndeclaredStream`].
pub(crate) fn decide<C: Handle>(
    command: &C,
    read: &mut dyn FnMut(&[StreamId]) -> Vec<StreamEvents>,
    stamp: &dyn Fn() -> EventMetadata,
) -> Result<Writes, ExecuteError<C::Error>> {
    check_event_names::<C::Streams, C::Continuation>()?;
    let bound = command.streams();
    let mut ids = Vec::with_capacity(C::Streams::LEN);
    C::Streams::for_each_id(&bound, &mut |id| ids.push(id.clone()));
    let reads = read(&ids);
    let mut state = C::State::default();
    state.fold_all(&bound, &mut reads.iter().map(StreamRead::plain))?;
    let next = command.handle(&state, Decision::new(bound)).map_err(ExecuteError::Rejected)?;
    let decision = match Into::<Next<C::Streams, C::Continuation>>::into(next) {
        Next::Decided(decision) => return Ok(decision.into_writes(stamp)?),
        Next::Discover(discovery) => discovery,
    };
    let mut round = C::Continuation::into_round(decision);
    loop {
        let reads = read(round.ids());
        let resumed = round.resume(&mut state, &mut reads.iter().map(StreamRead::plain));
        match resumed.map_err(|e| match e {
            RoundError::Rejected(e) => ExecuteError::Rejected(e),
            RoundError::Fold(e) => ExecuteError::Fold(e),
        })? {
            RoundOutcome::Decided(decision) => return Ok(decision.into_writes(stamp)?),
            RoundOutcome::Again(next) => round = next,
        }
    }
}
