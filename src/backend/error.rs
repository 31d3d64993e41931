//! Errors of the storage layer.

use crate::{EventId, StreamId, StreamVersion};

use super::UnreadableEvent;

/// A stream was not at the version a writer expected, or (with `expected` equal to `actual`)
/// its event at that version is not the one the writer named with
/// [`AppendRequest::expect_event`](super::AppendRequest::expect_event).
///
/// ```
/// use eventcore::{backend::Conflict, StreamId, StreamVersion};
/// let c = Conflict { stream: StreamId::try_new("a")?, expected: StreamVersion::new(1), actual: StreamVersion::new(2) };
/// assert_eq!(c.to_string(), "stream `a` is at version 2, expected 1");
/// let c = Conflict { stream: StreamId::try_new("a")?, expected: StreamVersion::new(2), actual: StreamVersion::new(2) };
/// assert_eq!(c.to_string(), "stream `a` holds another event at version 2 than expected");
/// # Ok::<(), eventcore::ValidationError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", describe(self))]
pub struct Conflict {
    /// The stream that moved.
    pub stream: StreamId,
    /// The version the writer read.
    pub expected: StreamVersion,
    /// The version the store holds.
    pub actual: StreamVersion,
}

fn describe(c: &Conflict) -> String {
    if c.expected == c.actual {
        format!("stream `{}` holds another event at version {} than expected", c.stream, c.actual)
    } else {
        format!("stream `{}` is at version {}, expected {}", c.stream, c.actual, c.expected)
    }
}

/// A failure of the store, as opposed to a command's own rejection.
///
/// ```
/// use eventcore::backend::StoreError;
/// let e = StoreError::Timeout;
/// assert!(e.is_transient());
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Optimistic concurrency: a stream the writer read has changed.
    #[error("conflict: {0}")]
    Conflict(#[from] Conflict),
    /// The request breaks the contract (for example it writes a stream it did not read).
    #[error("invalid append: {0}")]
    InvalidAppend(String),
    /// A log filter names a category no stream can be in, or an event type no event can have
    /// (see [`LogFilter::check`](super::LogFilter::check)): reading with it would silently find
    /// nothing.
    #[error("invalid log filter: {0}")]
    InvalidFilter(crate::ValidationError),
    /// A projection's lease is longer than
    /// [`MAX_LEASE`](crate::subscription::MAX_LEASE) (see
    /// [`ProjectionStore::claim`](crate::subscription::ProjectionStore::claim)).
    #[error("invalid lease: {0}")]
    InvalidLease(crate::ValidationError),
    /// An event is larger than the store accepts: its payload, event type and custom metadata
    /// (as JSON text) together.
    #[error(
        "event {event_id} for stream `{stream}` is {size} bytes (its payload, event type and \
         custom metadata); the limit is {limit}"
    )]
    PayloadTooLarge {
        /// The stream it was meant for.
        stream: StreamId,
        /// The event.
        event_id: EventId,
        /// Its size in bytes: payload, event type and custom metadata.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A request is larger than the store accepts in one append: the payloads, event types and
    /// custom metadata (as JSON text) of all its events together. Nothing of it is written.
    #[error(
        "the request is {size} bytes (its events' payloads, event types and custom metadata); \
         the limit on one append is {limit}"
    )]
    RequestTooLarge {
        /// Its size in bytes: payloads, event types and custom metadata of all its events.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A stored event could not be read back.
    #[error("stored event {event_id} in stream `{stream}` is corrupt: {reason}")]
    Corrupt {
        /// The stream holding it.
        stream: StreamId,
        /// The event.
        event_id: EventId,
        /// What is wrong.
        reason: String,
    },
    /// A stored row is so broken that it has no readable event id.
    #[error("stored row is unreadable: {0}")]
    UnreadableRow(String),
    /// An event of the global log cannot be read (see [`UnreadableEvent`]).
    #[error(transparent)]
    Unreadable(Box<UnreadableEvent>),
    /// The database was moved to a cluster whose transaction ids lie below the stored log
    /// (restored from a dump, or replicated logically), and the log was not re-based yet:
    /// appends would get positions below events already stored, so they are refused, and
    /// reads are too. Run `Postgres::migrate()` (after replication has drained and writes
    /// have moved), which re-bases the log; stored positions are kept.
    #[error("the event log was moved and must be re-based: {0}")]
    LogMoved(String),
    /// The store could not be reached, or the connection broke. Whether an append that failed
    /// this way committed is unknown: retry it with an idempotency key.
    #[error("store unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The store did not answer in time. As with `Unavailable`, an append may have committed.
    #[error("store timed out")]
    Timeout,
    /// The store's schema is missing or of another version.
    #[error("schema mismatch: {0}")]
    Schema(String),
    /// Anything else the store reported.
    #[error("store error: {0}")]
    Other(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    /// Whether trying again later may succeed (connection trouble, timeouts).
    ///
    /// ```
    /// use eventcore::backend::StoreError;
    /// assert!(!StoreError::InvalidAppend("x".into()).is_transient());
    /// ```
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Timeout)
    }
}
