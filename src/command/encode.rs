//! Serializing a decision: each slot's emitted events to JSON, then back into emission order
//! with fresh metadata, grouped per stream for the append.

use super::slot::{Bound, EmittedEvents, Slot, SlotIds};
use crate::{EventMetadata, NewEvent, Payload, StreamId};

/// A command's events ready to append: runs of events of one stream, in emission order.
pub(crate) type Writes = Vec<(StreamId, Vec<NewEvent>)>;

/// A decision's serialized events: the first four inline (most decisions emit a few).
pub(crate) type SerializedEvents = smallvec::SmallVec<[Serialized; 4]>;

/// One emitted event, serialized, waiting for its metadata.
#[doc(hidden)]
#[derive(Debug)]
pub struct Serialized {
    seq: usize,
    stream: StreamId,
    event_type: &'static str,
    schema_version: u32,
    payload: Payload,
}

/// Puts serialized events back in emission order (across slots and discovery rounds), stamps
/// each with fresh metadata in that order, and groups consecutive events of one stream, so the
/// store assigns positions in the order the command emitted.
pub(crate) fn into_writes(
    mut events: SerializedEvents,
    stamp: &dyn Fn() -> EventMetadata,
) -> Writes {
    events.sort_unstable_by_key(|e| e.seq);
    // Usually one run per stream, each stream written once: at most one run per event.
    let mut out: Writes = Vec::with_capacity(events.len().min(8));
    for e in events {
        let new = NewEvent::typed(e.event_type, e.schema_version, e.payload, stamp());
        match out.last_mut() {
            Some((stream, run)) if *stream == e.stream => run.push(new),
            _ => out.push((e.stream, vec![new])),
        }
    }
    out
}

/// An event that serde could not serialize.
///
/// ```
/// let e = eventcore::EncodeError { event_type: "T", reason: "key must be a string".into() };
/// assert_eq!(e.to_string(), "cannot serialize event `T`: key must be a string");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot serialize event `{event_type}`: {reason}")]
pub struct EncodeError {
    /// The event type.
    pub event_type: &'static str,
    /// What serde said.
    pub reason: String,
}

/// Serializes the events emitted to one slot into `out`, tagged with their emission sequence
/// numbers.
pub(crate) fn encode_slot<S: Slot>(
    bound: &mut Bound<S>,
    out: &mut SerializedEvents,
) -> Result<(), EncodeError> {
    encode_events(bound.ids.as_slice(), std::mem::take(&mut bound.events), out)
}

/// [`encode_slot`]'s work, generic over the event type only: compiled once per event type
/// rather than once per slot.
fn encode_events<E: crate::Event>(
    ids: &[StreamId],
    events: EmittedEvents<E>,
    out: &mut SerializedEvents,
) -> Result<(), EncodeError> {
    let event_type = E::EVENT_TYPE;
    for emitted in events {
        let payload = Payload::to_json(&emitted.event)
            .map_err(|e| EncodeError { event_type, reason: e.to_string() })?;
        // `stream` was produced by `emit`/`emit_to` as an index into this very slice.
        if let Some(stream) = ids.get(emitted.stream) {
            out.push(Serialized {
                seq: emitted.seq,
                stream: stream.clone(),
                event_type,
                schema_version: E::SCHEMA_VERSION,
                payload,
            });
        }
    }
    Ok(())
}
