//! Deciding without a backend: the command's own fold, `handle` and continuations, fed from
//! a function that answers reads synchronously.
//!
//! The executor runs the same steps between its (async) reads: the check that no two event
//! types of the command store under one name, `fold_all` over the command's streams, `handle`,
//! then for each discovery round [`Round::resume`], which folds the discovered streams and
//! resumes the continuation, and finally the decision's `into_writes`.
//! Nothing here decides anything of its own.

use crate::{
    Bindings, EventMetadata, GlobalPosition, Payload, RecordedEvent, Snapshot, StreamId,
    StreamVersion,
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

/// [`decide`] as the executor runs it from snapshots taken when the log ended at each of
/// `cuts`, in order, each restored by the next execution: the command's own streams are folded
/// up to their events at or before the first cut, the state goes through its JSON form and
/// back, the events up to the next cut are folded onto it and it goes through JSON again, and
/// so on; then the rest of each stream is folded onto it. A state that folded no new event
/// since the last snapshot is not snapshotted again (the executor takes none then, and
/// restores the one it has). Discovered streams are read in full, as the executor never
/// snapshots them. `None` when no event of the command's own streams is at or before the
/// first cut: the executor takes no snapshot of a state that folded nothing (see
/// `SnapshotPolicy::takes`), so none is restored there.
pub(crate) fn decide_from_snapshots<C>(
    command: &C,
    read: &mut dyn FnMut(&[StreamId]) -> Vec<StreamEvents>,
    stamp: &dyn Fn() -> EventMetadata,
    cuts: &[GlobalPosition],
) -> Option<Restored<C::Error>>
where
    C: Handle,
    C::State: Snapshot,
{
    if let Err(e) = check_event_names::<C::Streams, C::Continuation>() {
        return Some(Ok(Err(e.into())));
    }
    let bound = command.streams();
    let streams = read(&ids::<C>(&bound));
    // The events of each stream between two cuts (after the last one, for the last segment).
    let segments: Vec<Vec<StreamEvents>> = (0..=cuts.len())
        .map(|k| {
            let after = k.checked_sub(1).and_then(|i| cuts.get(i)).copied();
            let upto = cuts.get(k).copied();
            let within = |e: &RecordedEvent| {
                after.is_none_or(|a| e.position > a) && upto.is_none_or(|u| e.position <= u)
            };
            streams
                .iter()
                .map(|stream| {
                    let events: Vec<RecordedEvent> =
                        stream.events.iter().filter(|e| within(e)).cloned().collect();
                    let version = match upto {
                        Some(u) => StreamVersion::new(
                            stream.events.iter().filter(|e| e.position <= u).count() as u64,
                        ),
                        None => stream.version,
                    };
                    StreamEvents::new(stream.stream_id.clone(), version, events)
                })
                .collect()
        })
        .collect();
    if segments[0].iter().all(|stream| stream.events.is_empty()) {
        return None;
    }
    Some(restored(command, bound, &segments, read, stamp))
}

/// The decision from the state folded from `segments` in turn, through JSON and back after
/// each segment that folded an event, but the last.
fn restored<C>(
    command: &C,
    bound: Bindings<C::Streams>,
    segments: &[Vec<StreamEvents>],
    read: &mut dyn FnMut(&[StreamId]) -> Vec<StreamEvents>,
    stamp: &dyn Fn() -> EventMetadata,
) -> Restored<C::Error>
where
    C: Handle,
    C::State: Snapshot,
{
    let mut state = C::State::default();
    let last = segments.len().saturating_sub(1);
    for (k, segment) in segments.iter().enumerate() {
        if let Err(e) = state.fold_all(&bound, &mut segment.iter().map(StreamRead::plain)) {
            return Ok(Err(e.into()));
        }
        if k == last || segment.iter().all(|stream| stream.events.is_empty()) {
            continue;
        }
        // Through the executor's codec: it refuses a non-finite float, which serde_json alone
        // writes as `null` (read back, an `Option<f64>` is then `None`), so the executor never
        // stores such a state.
        let json = Payload::to_json(&state).map_err(RoundTrip::Serialize)?.as_str().to_owned();
        state = serde_json::from_str(&json)
            .map_err(|error| RoundTrip::Deserialize { json: json.clone(), error })?;
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
