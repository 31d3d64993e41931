//! What a process manager writes to each process instance's stream: the events it observed,
//! the progress of its reactions, and its timers.

use serde::{Deserialize, Serialize};

use crate::{
    EventMetadata, GlobalPosition, NewEvent, Payload, RecordedEvent, StreamId, StreamVersion,
    Timestamp, event::Event,
};

/// What one entry of a process instance's stream says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum Record {
    /// An event of the log routed to this process, copied (the process's state is folded
    /// from its own stream).
    Observed(Observed),
    /// Reaction `ordinal` to `cause` ran its command (in the same append as this record).
    Done { cause: Cause, ordinal: u32 },
    /// Reaction `ordinal` to `cause` was a command (named `command`) that was rejected: an
    /// input of the process.
    Rejected { cause: Cause, ordinal: u32, command: String, reason: String },
    /// Reaction `ordinal` to `cause` set timer `timer` to fire at `due`.
    Scheduled { cause: Cause, ordinal: u32, timer: String, due: Timestamp },
    /// Reaction `ordinal` to `cause` cancelled timer `timer`.
    Cancelled { cause: Cause, ordinal: u32, timer: String },
    /// Timer `timer` fired: an input of the process.
    Fired { timer: String },
    /// The input recorded at version `input` of this stream (a rejection, a fired timer) has
    /// had all its reactions run: a runner taking over does not handle it again, so a
    /// reaction added by newer code never runs for an input the older code finished with.
    /// Written in the append of the input's last reaction, or alone when that one had run
    /// (or there was none). A release before this record stops on it, as on any record it
    /// cannot read.
    Handled { input: StreamVersion },
}

/// What a reaction answered: an observed event of the log (by its position), or an input
/// recorded in the instance's own stream (a rejection, a fired timer; by its version there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) enum Cause {
    Event(GlobalPosition),
    Record(StreamVersion),
}

/// Payloads up to this many bytes are copied into an [`Observed`] record; a larger one is read
/// back from the log when the instance is loaded: a copy of an event near the store's payload
/// limit, with the record around it, could not be stored, and the process would stop on it.
/// A store may take less than this: a copy it refuses is left out the same way.
pub(crate) const INLINE_PAYLOAD: usize = 64 * 1024;

/// An observed event, as copied (its payload only up to [`INLINE_PAYLOAD`] bytes; without its
/// payload, the custom part of its metadata is left out too, and both are read back).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Observed {
    stream: StreamId,
    version: StreamVersion,
    position: GlobalPosition,
    event_type: String,
    schema_version: u32,
    /// `None`: too large to copy; read back from the log at `position`, with the metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    payload: Option<String>,
    /// Without its custom fields when the payload is `None`: they have no size limit, so a
    /// copy of them could make the record too large for the store.
    metadata: EventMetadata,
}

impl Observed {
    /// `event` observed, with a copy of its payload and custom metadata when `copy` says so
    /// and the payload is small enough.
    pub(crate) fn of(event: &RecordedEvent, copy: bool) -> Self {
        let copy = copy && event.payload.len() <= INLINE_PAYLOAD;
        let metadata = if copy {
            event.metadata.clone()
        } else {
            let m = &event.metadata;
            EventMetadata {
                event_id: m.event_id,
                correlation_id: m.correlation_id,
                causation_id: m.causation_id,
                timestamp: m.timestamp,
                custom: Default::default(),
            }
        };
        Self {
            stream: event.stream_id.clone(),
            version: event.version,
            position: event.position,
            event_type: event.event_type.to_string(),
            schema_version: event.schema_version,
            payload: copy.then(|| event.payload.as_str().to_owned()),
            metadata,
        }
    }

    pub(crate) fn position(&self) -> GlobalPosition {
        self.position
    }

    /// Whether the payload was too large to copy, and is still to be read back.
    pub(crate) fn lacks_payload(&self) -> bool {
        self.payload.is_none()
    }

    /// Takes the payload and metadata from `event`, read back from the log at this record's
    /// position: `false` (and nothing taken) when it is not the event observed.
    pub(crate) fn fill(&mut self, event: &RecordedEvent) -> bool {
        let same = event.position == self.position && event.event_id() == self.metadata.event_id;
        if same {
            self.payload = Some(event.payload.as_str().to_owned());
            self.metadata = event.metadata.clone();
        }
        same
    }

    /// The event as it was read from the log.
    pub(crate) fn event(&self) -> Result<RecordedEvent, serde_json::Error> {
        let Some(payload) = &self.payload else {
            return Err(serde::de::Error::custom("the payload was not read back from the log"));
        };
        let payload = Payload::from_json_str(payload)?;
        Ok(RecordedEvent::from_new(
            self.stream.clone(),
            self.version,
            self.position,
            NewEvent::new(
                self.event_type.as_str(),
                self.schema_version,
                payload,
                self.metadata.clone(),
            ),
        ))
    }
}

impl Event for Record {
    const EVENT_TYPE: &'static str = "eventcore.ProcessRecord";
}
