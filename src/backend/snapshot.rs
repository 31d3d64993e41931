//! Snapshots as a backend stores them: a folded state, serialized, with what it covers.
//!
//! The executor decides what a snapshot is and whether to trust one (see
//! [`Snapshot`](crate::Snapshot)); a backend keeps the last record saved per key.

use crate::{Payload, StreamId, StreamVersion};

/// The identity of a snapshot in the store: the state's [`NAME`](crate::Snapshot::NAME) and
/// the streams it was folded from, each with the slot it is bound to, in the command's slot
/// order, as JSON text (`["account",[["Account",["account-7"]]]]`). Two commands share a
/// snapshot exactly when their states have the same name and they bind the same streams to
/// the same slots.
///
/// Built by the executor ([`snapshot_key`](crate::executor::snapshot_key)); a backend treats
/// it as opaque text, compared byte for byte.
///
/// ```
/// use eventcore::backend::SnapshotKey;
/// let key = SnapshotKey::new(r#"["account",[["Account",["account-7"]]]]"#);
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
/// and no stream is behind the version the snapshot claims; otherwise it folds the full
/// history (see [`Snapshot`](crate::Snapshot)).
///
/// ```
/// use eventcore::backend::{SnapshotKey, StoredSnapshot};
/// use eventcore::{Payload, StreamId, StreamVersion};
///
/// let snapshot = StoredSnapshot {
///     key: SnapshotKey::new("k"),
///     state_type: "my_app::AccountView".into(),
///     state_version: 1,
///     streams: vec![(StreamId::try_new("account-7")?, StreamVersion::new(1_000))],
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
    /// The state, serialized.
    pub state: Payload,
}

impl StoredSnapshot {
    /// Whether it covers exactly `streams`, in that order: only then can the events after it
    /// be read on top of it.
    ///
    /// ```
    /// use eventcore::backend::{SnapshotKey, StoredSnapshot};
    /// use eventcore::{Payload, StreamId, StreamVersion};
    /// let (a, b) = (StreamId::try_new("a")?, StreamId::try_new("b")?);
    /// let snapshot = StoredSnapshot {
    ///     key: SnapshotKey::new("k"),
    ///     state_type: "T".into(),
    ///     state_version: 1,
    ///     streams: vec![(a.clone(), StreamVersion::new(3)), (b.clone(), StreamVersion::new(1))],
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
}
