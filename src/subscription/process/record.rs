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
    /// With ordinal [`MARK`] and `last`, no reaction: the mark of a cause whose reactions had
    /// all run already (or that has none).
    Done {
        cause: Cause,
        ordinal: u32,
        #[serde(default, skip_serializing_if = "is_false")]
        last: bool,
    },
    /// Reaction `ordinal` to `cause` was a command (named `command`) that was rejected: an
    /// input of the process.
    Rejected {
        cause: Cause,
        ordinal: u32,
        command: String,
        reason: String,
        #[serde(default, skip_serializing_if = "is_false")]
        last: bool,
    },
    /// Reaction `ordinal` to `cause` set timer `timer` to fire at `due`.
    Scheduled {
        cause: Cause,
        ordinal: u32,
        timer: String,
        due: Timestamp,
        #[serde(default, skip_serializing_if = "is_false")]
        last: bool,
    },
    /// Reaction `ordinal` to `cause` cancelled timer `timer`.
    Cancelled {
        cause: Cause,
        ordinal: u32,
        timer: String,
        #[serde(default, skip_serializing_if = "is_false")]
        last: bool,
    },
    /// Timer `timer` fired: an input of the process.
    Fired { timer: String },
}

/// The ordinal of a [`Record::Done`] that is only a mark: no reaction has it (an input would
/// need four billion reactions to reach it).
pub(crate) const MARK: u32 = u32::MAX;

/// `last` on a progress record: its cause, an input recorded in the instance's stream (a
/// rejection, a fired timer), has had all its reactions run, so a runner taking over does not
/// hand it to the instance again, and a reaction that newer code adds never runs for an input
/// the older code finished with. Set on the record of the input's last reaction (in its
/// append), or on a `Done` of ordinal [`MARK`] of its own when that one had run already or
/// there is none. Left out when false, so records without it read as before, and a release
/// that does not know it reads it as nothing (and handles the input again at a takeover, as
/// it always did).
#[allow(clippy::trivially_copy_pass_by_ref)] // serde's `skip_serializing_if` passes a reference
fn is_false(b: &bool) -> bool {
    !*b
}

impl Record {
    /// The reaction a progress record says ran (its cause and ordinal), and whether it marks
    /// its cause handled (`last`); `None` for other records.
    pub(crate) fn progress(&self) -> Option<(Cause, u32, bool)> {
        match self {
            Record::Done { cause, ordinal, last }
            | Record::Rejected { cause, ordinal, last, .. }
            | Record::Scheduled { cause, ordinal, last, .. }
            | Record::Cancelled { cause, ordinal, last, .. } => Some((*cause, *ordinal, *last)),
            Record::Observed(_) | Record::Fired { .. } => None,
        }
    }

    /// The input recorded in the same stream that this record marks as handled, if it does.
    pub(crate) fn marks(&self) -> Option<StreamVersion> {
        match self.progress()? {
            (Cause::Record(input), _, true) => Some(input),
            _ => None,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The progress records as releases before the mark wrote and read them.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Before {
        Done { cause: Cause, ordinal: u32 },
        Rejected { cause: Cause, ordinal: u32, command: String, reason: String },
        Scheduled { cause: Cause, ordinal: u32, timer: String, due: Timestamp },
        Cancelled { cause: Cause, ordinal: u32, timer: String },
    }

    /// A mark is a flag an earlier release reads as nothing: every progress record, marked
    /// or not, reads there as the same record unmarked; a record it wrote reads here unmarked;
    /// and an unmarked record is written exactly as it wrote it.
    #[test]
    fn marked_records_read_in_an_earlier_release_as_they_did() {
        let cause = Cause::Record(StreamVersion::new(3));
        let due = Timestamp::from_datetime(chrono::DateTime::from_timestamp(60, 0).unwrap());
        let (command, reason, timer) = (String::from("C"), String::from("no"), String::from("t"));
        for last in [false, true] {
            let pairs = [
                (Record::Done { cause, ordinal: 1, last }, Before::Done { cause, ordinal: 1 }),
                (
                    Record::Rejected {
                        cause,
                        ordinal: 0,
                        command: command.clone(),
                        reason: reason.clone(),
                        last,
                    },
                    Before::Rejected {
                        cause,
                        ordinal: 0,
                        command: command.clone(),
                        reason: reason.clone(),
                    },
                ),
                (
                    Record::Scheduled { cause, ordinal: 2, timer: timer.clone(), due, last },
                    Before::Scheduled { cause, ordinal: 2, timer: timer.clone(), due },
                ),
                (
                    Record::Cancelled { cause, ordinal: 4, timer: timer.clone(), last },
                    Before::Cancelled { cause, ordinal: 4, timer: timer.clone() },
                ),
            ];
            for (now, before) in pairs {
                let written = serde_json::to_string(&now).unwrap();
                assert_eq!(serde_json::from_str::<Before>(&written).unwrap(), before, "{written}");
                assert_eq!(now.marks().is_some(), last, "{written}");
                let earlier = serde_json::to_string(&before).unwrap();
                let read: Record = serde_json::from_str(&earlier).unwrap();
                assert_eq!(read.marks(), None, "{earlier}");
                if !last {
                    assert_eq!(written, earlier);
                }
            }
        }
    }
}
