//! Snapshots as a backend stores them: a folded state, serialized, with what it covers.
//!
//! The executor decides what a snapshot is and whether to trust one (see
//! [`Snapshot`](crate::Snapshot)); a backend keeps the last record saved per key.

use crate::{EventId, Payload, StreamEvents, StreamId, StreamVersion};

/// The identity of a snapshot in the store: the state's [`NAME`](crate::Snapshot::NAME) and
/// the streams it was folded from, each with the slot it is bound to (its
/// [`PATH`](crate::Slot::PATH), and the slot's event type, schema version and
/// [fingerprint](crate::Event::FINGERPRINT)), in the command's slot order, as JSON text
/// (`["account",[["bank::Account","AccountEvent",1,7710924,["account-7"]]]]`). Two commands
/// share a snapshot exactly when their states have the same name and they bind the same
/// streams to the same slots, whose events they read at the same schema versions and
/// definitions.
///
/// Built by the executor ([`snapshot_key`](crate::executor::snapshot_key)); a backend treats
/// it as opaque text, compared byte for byte.
///
/// ```
/// use eventcore::backend::SnapshotKey;
/// let key = SnapshotKey::new(r#"["account",[["bank::Account","AccountEvent",1,7710924,["account-7"]]]]"#);
/// assert!(key.as_str().starts_with(r#"["account""#));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SnapshotKey(String);

impl SnapshotKey {
    /// Wraps key text (the executor builds real keys; this is for backends and tests).
    ///
    /// ```
    /// assert_eq!(eventcore::backend::SnapshotKey::new("k").as_str(), "k");
    /// ```
    #[must_use]
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The key's text.
    ///
    /// ```
    /// assert_eq!(eventcore::backend::SnapshotKey::new("k").as_str(), "k");
    /// ```
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A stored snapshot: a command's folded state and the version of each stream it covers.
///
/// The executor trusts one only when its `state_type` and `state_version` are those of the
/// state being folded, its `streams` are the command's streams in order, its `state` decodes,
/// and every stream still holds, at the version the snapshot covers, the event the snapshot
/// recorded there (`last_event_ids`; see
/// [`Backend::read_with_snapshot`](super::Backend::read_with_snapshot)); otherwise it folds
/// the full history (see [`Snapshot`](crate::Snapshot)).
///
/// ```
/// use eventcore::backend::{SnapshotKey, StoredSnapshot};
/// use eventcore::{EventId, Payload, StreamId, StreamVersion};
///
/// let snapshot = StoredSnapshot {
///     key: SnapshotKey::new("k"),
///     state_type: "my_app::AccountView".into(),
///     state_version: 1,
///     streams: vec![(StreamId::try_new("account-7")?, StreamVersion::new(1_000))],
///     last_event_ids: vec![Some(EventId::new())], // the id of event 1,000 of account-7
///     state: Payload::to_json(&42)?,
/// };
/// assert_eq!(snapshot.streams.len(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSnapshot {
    /// Where it is stored.
    pub key: SnapshotKey,
    /// The fingerprint of the state's type: its Rust path (`std::any::type_name`).
    pub state_type: String,
    /// The state's [`VERSION`](crate::Snapshot::VERSION) when it was taken.
    pub state_version: u32,
    /// Each stream folded into it, in the command's order, with the version it covers.
    pub streams: Vec<(StreamId, StreamVersion)>,
    /// For each of `streams`, in the same order, the id of the event at the version it covers
    /// (`None` for a stream covered at version 0). A store restored from an older backup and
    /// grown again holds other events at those versions: the ids tell, and the snapshot is
    /// not trusted. A missing entry counts as `None`.
    pub last_event_ids: Vec<Option<EventId>>,
    /// The state, serialized.
    pub state: Payload,
}

impl StoredSnapshot {
    /// Whether it covers exactly `streams`, in that order: only then can the events after it
    /// be read on top of it.
    ///
    /// ```
    /// use eventcore::backend::{SnapshotKey, StoredSnapshot};
    /// use eventcore::{EventId, Payload, StreamId, StreamVersion};
    /// let (a, b) = (StreamId::try_new("a")?, StreamId::try_new("b")?);
    /// let snapshot = StoredSnapshot {
    ///     key: SnapshotKey::new("k"),
    ///     state_type: "T".into(),
    ///     state_version: 1,
    ///     streams: vec![(a.clone(), StreamVersion::new(3)), (b.clone(), StreamVersion::new(1))],
    ///     last_event_ids: vec![Some(EventId::new()), Some(EventId::new())],
    ///     state: Payload::to_json(&0)?,
    /// };
    /// assert!(snapshot.covers(&[a.clone(), b.clone()]));
    /// assert!(!snapshot.covers(&[b, a.clone()]));
    /// assert!(!snapshot.covers(&[a]));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn covers(&self, streams: &[StreamId]) -> bool {
        self.streams.iter().map(|(id, _)| id).eq(streams)
    }

    /// The id recorded for the `i`th stream's covered event.
    pub(crate) fn last_event_id(&self, i: usize) -> Option<EventId> {
        self.last_event_ids.get(i).copied().flatten()
    }

    /// Where to read each stream from to check the snapshot against the store: from the
    /// event it covers (after the version before it), or from the start for a stream covered
    /// at version 0.
    pub(crate) fn reread_from(&self) -> Vec<(StreamId, StreamVersion)> {
        let before = |v: StreamVersion| StreamVersion::new(v.get().saturating_sub(1));
        self.streams.iter().map(|(id, v)| (id.clone(), before(*v))).collect()
    }

    /// Given `reads` of its streams from [`reread_from`](Self::reread_from), whether every
    /// stream still holds the event the snapshot covers at its version; if so, those events
    /// are taken out of `reads`, which then hold the events after the snapshot.
    pub(crate) fn still_covered(&self, reads: &mut [StreamEvents]) -> bool {
        let fits = reads.len() == self.streams.len()
            && self.streams.iter().enumerate().all(|(i, (id, version))| {
                let Some(read) = reads.get(i).filter(|read| read.stream_id == *id) else {
                    return false;
                };
                version.get() == 0
                    || read.events.first().is_some_and(|first| {
                        first.version == *version && Some(first.event_id()) == self.last_event_id(i)
                    })
            });
        if fits {
            for (read, (_, version)) in reads.iter_mut().zip(&self.streams) {
                if version.get() > 0 {
                    read.events.remove(0);
                }
            }
        }
        fits
    }
}

/// What a log may say of a state that did not decode: the kind of error and where, not
/// `serde_json`'s message, which quotes the value it could not take (`invalid type: string
/// "..."`): the state's data.
pub(crate) fn decode_failure(error: &serde_json::Error) -> String {
    let kind = match error.classify() {
        serde_json::error::Category::Io => "an I/O error",
        serde_json::error::Category::Syntax => "a syntax error",
        serde_json::error::Category::Data => "a value of the wrong type or shape",
        serde_json::error::Category::Eof => "an unexpected end",
    };
    format!("{kind} at line {} column {}", error.line(), error.column())
}

/// Logs a snapshot answered as none because its streams no longer hold the events it covers.
pub(crate) fn restored_under(snapshot: &StoredSnapshot) {
    tracing::warn!(
        key = snapshot.key.as_str(),
        "snapshot discarded: a stream holds other events than it covers (was the store \
         restored from an older backup?); folding the full history"
    );
}
