//! Deciding without a backend: the command's own fold, `handle` and continuations, fed from
//! a function that answers reads synchronously.
//!
//! The executor runs the same steps between its (async) reads: the check that no two event
//! types of the command store under one name, `fold_all` over the command's streams, `handle`,
//! then for each discovery round [`Round::resume`], which folds the discovered streams and
//! resumes the continuation, and finally the decision's `into_writes`.
//! Nothing here decides anything of its own.

use crate::{
    Bindings, EventMetadata, GlobalPosition, Payload, Snapshot, StreamId, StreamVersion,
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
    let reads = read(&ids::<C>(&bound));
    let mut state = C::State::default();
    state.fold_all(&bound, &mut reads.iter().map(StreamRead::plain))?;
    finish(command, bound, state, read, stamp)
}

/// Why a state could not go through a snapshot: the executor would never restore one (it
/// logs a state that does not serialize, and folds the full history in place of one that
/// does not deserialize).
#[derive(Debug)]
pub(crate) enum RoundTrip {
    /// The state did not serialize.
    Serialize(serde_json::Error),
    /// The state's JSON, as serialized, did not deserialize.
    Deserialize { json: String, error: serde_json::Error },
}

/// A decision from a restored state, or why the state could not be restored.
pub(crate) type Restored<E> = Result<Result<Writes, ExecuteError<E>>, RoundTrip>;

/// [`decide`] as the executor runs it from a snapshot taken when the log ended at `cut`: the
/// command's own streams are folded up to their events at or before `cut`, the state goes
/// through its JSON form and back, then the rest of each stream is folded onto it. Discovered
/// streams are read in full, as the executor never snapshots them. `None` when no event of
/// the command's own streams is at or before `cut`: the executor takes no snapshot of a
/// state that folded nothing (see `SnapshotPolicy::takes`), so none is restored there.
pub(crate) fn decide_from_snapshot<C>(
    command: &C,
    read: &mut dyn FnMut(&[StreamId]) -> Vec<StreamEvents>,
    stamp: &dyn Fn() -> EventMetadata,
    cut: GlobalPosition,
) -> Option<Restored<C::Error>>
where
    C: Handle,
    C::State: Snapshot,
{
    if let Err(e) = check_event_names::<C::Streams, C::Continuation>() {
        return Some(Ok(Err(e.into())));
    }
    let bound = command.streams();
    let (before, after): (Vec<_>, Vec<_>) = read(&ids::<C>(&bound))
        .into_iter()
        .map(|stream| {
            let (before, after) =
                stream.events.into_iter().partition::<Vec<_>, _>(|e| e.position <= cut);
            let covered = StreamVersion::new(before.len() as u64);
            let id = stream.stream_id;
            (
                StreamEvents::new(id.clone(), covered, before),
                StreamEvents::new(id, stream.version, after),
            )
        })
        .unzip();
    if before.iter().all(|stream| stream.events.is_empty()) {
        return None;
    }
    Some(restored(command, bound, before, after, read, stamp))
}

/// The decision from the state folded from `before`, through JSON and back, then `after`.
fn restored<C>(
    command: &C,
    bound: Bindings<C::Streams>,
    before: Vec<StreamEvents>,
    after: Vec<StreamEvents>,
    read: &mut dyn FnMut(&[StreamId]) -> Vec<StreamEvents>,
    stamp: &dyn Fn() -> EventMetadata,
) -> Restored<C::Error>
where
    C: Handle,
    C::State: Snapshot,
{
    let mut state = C::State::default();
    if let Err(e) = state.fold_all(&bound, &mut before.iter().map(StreamRead::plain)) {
        return Ok(Err(e.into()));
    }
    // Through the executor's codec: it refuses a non-finite float, which serde_json alone
    // writes as `null` (read back, an `Option<f64>` is then `None`), so the executor never
    // stores such a state.
    let json = Payload::to_json(&state).map_err(RoundTrip::Serialize)?.as_str().to_owned();
    let mut state: C::State = serde_json::from_str(&json)
        .map_err(|error| RoundTrip::Deserialize { json: json.clone(), error })?;
    if let Err(e) = state.fold_all(&bound, &mut after.iter().map(StreamRead::plain)) {
        return Ok(Err(e.into()));
    }
    Ok(finish(command, bound, state, read, stamp))
}

/// The ids of the command's own streams, in slot order.
fn ids<C: Handle>(bound: &Bindings<C::Streams>) -> Vec<StreamId> {
    let mut ids = Vec::with_capacity(C::Streams::LEN);
    C::Streams::for_each_id(bound, &mut |id| ids.push(id.clone()));
    ids
}

/// `handle` on the folded `state`, then every discovery round to the final decision.
fn finish<C: Handle>(
    command: &C,
    bound: Bindings<C::Streams>,
    mut state: C::State,
    read: &mut dyn FnMut(&[StreamId]) -> Vec<StreamEvents>,
    stamp: &dyn Fn() -> EventMetadata,
) -> Result<Writes, ExecuteError<C::Error>> {
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
