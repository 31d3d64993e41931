//! Reading the global log: filters, pages, per-event failures, and the wake-up signal live
//! readers wait on.

use std::{fmt, sync::Arc};

use tokio::sync::watch;

use crate::{DecodeError, EventId, GlobalPosition, RecordedEvent, StreamId};

/// Which events of the log a reader wants. The default wants every event.
///
/// A *category* is the text of a stream id before its first `-` (the whole id when it has
/// none), as [`StreamId::with_category`] builds it: `account-7` is in category `account`.
/// Categories and event types are compared as plain text, never as patterns: `%` and `_`
/// mean themselves.
///
/// ```
/// use eventcore::{backend::LogFilter, StreamId};
/// let filter = LogFilter::all().category("account").event_type("Deposited");
/// assert!(filter.matches_stream(&StreamId::try_new("account-7")?));
/// assert!(!filter.matches_stream(&StreamId::try_new("accounts-7")?));
/// assert!(filter.matches_type("Deposited") && !filter.matches_type("Withdrawn"));
/// # Ok::<(), eventcore::ValidationError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct LogFilter {
    categories: Vec<Arc<str>>,
    event_types: Vec<Arc<str>>,
}

impl LogFilter {
    /// Every event.
    ///
    /// ```
    /// assert!(eventcore::backend::LogFilter::all().is_all());
    /// ```
    #[must_use]
    pub fn all() -> Self {
        Self::default()
    }

    /// Also accepts events of streams in `category` (several calls accept any of them).
    ///
    /// ```
    /// # use eventcore::{backend::LogFilter, StreamId};
    /// let f = LogFilter::all().category("order").category("product");
    /// assert!(f.matches_stream(&StreamId::try_new("product-1")?));
    /// # Ok::<(), eventcore::ValidationError>(())
    /// ```
    #[must_use]
    pub fn category(mut self, category: impl AsRef<str>) -> Self {
        self.categories.push(Arc::from(category.as_ref()));
        self
    }

    /// Checks that every category given to [`category`](Self::category) is one that some
    /// stream can be in: a category with a `-` in it matches no stream ever, nor does one that
    /// no valid stream id can begin with (a leading space, a control character). The category
    /// of a stream id may be empty (`-7`) or end with a space (`order -1`): those are accepted,
    /// though [`StreamId::check_category`] refuses the empty one for building ids. And that
    /// no event type given to [`event_type`](Self::event_type) holds U+0000, which every
    /// append refuses in an event type. Reading the log with such a filter fails with
    /// [`StoreError::InvalidFilter`](super::StoreError::InvalidFilter) rather than finding
    /// nothing.
    ///
    /// # Errors
    /// The [`ValidationError`](crate::ValidationError) of the first category that cannot be
    /// one, else of the first event type that no event can have.
    ///
    /// ```
    /// # use eventcore::backend::LogFilter;
    /// assert!(LogFilter::all().category("order").event_type("Paid").check().is_ok());
    /// assert!(LogFilter::all().category("order-line").check().is_err());
    /// assert!(LogFilter::all().category(" order").check().is_err());
    /// assert!(LogFilter::all().category("").category("order ").check().is_ok()); // `-7`, `order -1`
    /// assert!(LogFilter::all().event_type("Paid\0").check().is_err());
    /// ```
    pub fn check(&self) -> Result<(), crate::ValidationError> {
        self.categories.iter().try_for_each(|c| check_category(c))?;
        match self.event_types.iter().find(|t| t.contains('\0')) {
            Some(t) => Err(crate::ValidationError::new(
                "event type",
                format!("{t:?} contains U+0000, which no stored event type holds"),
            )),
            None => Ok(()),
        }
    }

    /// Also accepts events whose stored type is `event_type` (several calls accept any).
    ///
    /// ```
    /// # use eventcore::backend::LogFilter;
    /// assert!(LogFilter::all().event_type("A").event_type("B").matches_type("B"));
    /// ```
    #[must_use]
    pub fn event_type(mut self, event_type: impl AsRef<str>) -> Self {
        self.event_types.push(Arc::from(event_type.as_ref()));
        self
    }

    /// Whether this filter accepts every event.
    ///
    /// ```
    /// # use eventcore::backend::LogFilter;
    /// assert!(!LogFilter::all().category("a").is_all());
    /// ```
    #[must_use]
    pub fn is_all(&self) -> bool {
        self.categories.is_empty() && self.event_types.is_empty()
    }

    /// The accepted categories; empty means any.
    ///
    /// ```
    /// # use eventcore::backend::LogFilter;
    /// assert_eq!(LogFilter::all().category("a").categories().len(), 1);
    /// ```
    #[must_use]
    pub fn categories(&self) -> &[Arc<str>] {
        &self.categories
    }

    /// The accepted event types; empty means any.
    ///
    /// ```
    /// # use eventcore::backend::LogFilter;
    /// assert!(LogFilter::all().event_types().is_empty());
    /// ```
    #[must_use]
    pub fn event_types(&self) -> &[Arc<str>] {
        &self.event_types
    }

    /// Whether events of `stream` pass the category part of the filter.
    ///
    /// ```
    /// # use eventcore::{backend::LogFilter, StreamId};
    /// assert!(LogFilter::all().category("a_b").matches_stream(&StreamId::try_new("a_b-1")?));
    /// assert!(!LogFilter::all().category("a_b").matches_stream(&StreamId::try_new("axb-1")?));
    /// # Ok::<(), eventcore::ValidationError>(())
    /// ```
    #[must_use]
    pub fn matches_stream(&self, stream: &StreamId) -> bool {
        self.categories.is_empty() || {
            let category = category_of(stream.as_str());
            self.categories.iter().any(|c| &**c == category)
        }
    }

    /// Whether events of type `event_type` pass the type part of the filter.
    ///
    /// ```
    /// # use eventcore::backend::LogFilter;
    /// assert!(LogFilter::all().matches_type("anything"));
    /// ```
    #[must_use]
    pub fn matches_type(&self, event_type: &str) -> bool {
        self.event_types.is_empty() || self.event_types.iter().any(|t| &**t == event_type)
    }

    /// Whether the filter accepts `event`.
    ///
    /// ```
    /// # use eventcore::*;
    /// # use eventcore::backend::LogFilter;
    /// let new = NewEvent::new("T", 1, Payload::to_json(&1)?, EventMetadata::new(CorrelationId::new()));
    /// let e = RecordedEvent::from_new(StreamId::try_new("a-1")?, StreamVersion::new(1), GlobalPosition::new(1), new);
    /// assert!(LogFilter::all().category("a").event_type("T").matches(&e));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn matches(&self, event: &RecordedEvent) -> bool {
        self.matches_stream(&event.stream_id) && self.matches_type(&event.event_type)
    }
}

/// Whether `category` is the category of some valid stream id: the categories
/// [`StreamId::check_category`] takes, and the empty one, of ids that start with `-` (`-7`),
/// which it refuses only for building ids. Otherwise the error it gives.
fn check_category(category: &str) -> Result<(), crate::ValidationError> {
    if category.is_empty() { Ok(()) } else { StreamId::check_category(category) }
}

/// The category of a stream id: the text before its first `-`, or the whole id.
pub(crate) fn category_of(stream: &str) -> &str {
    stream.split_once('-').map_or(stream, |(category, _)| category)
}

/// A stored event that could not be read: its row is broken (a column that does not decode,
/// an invalid stream id), or, for a typed reader, its payload does not decode as the reader's
/// event type. It names the event's place so that a consumer can decide (stop, park, skip it
/// knowingly); the events around it are delivered as usual.
///
/// ```
/// use eventcore::{backend::UnreadableEvent, GlobalPosition};
/// let e = UnreadableEvent::new(GlobalPosition::new(7), None, "bad-1", "custom metadata is not an object");
/// assert!(e.to_string().contains("position 7"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the event at position {position} (id {}, stream `{stream}`) cannot be read: {reason}",
    .event_id.map_or_else(|| "unreadable".to_owned(), |id| id.to_string()))]
pub struct UnreadableEvent {
    /// Its global position.
    pub position: GlobalPosition,
    /// Its id, when that much of the row could be read.
    pub event_id: Option<EventId>,
    /// Its stream id as stored (possibly not a valid [`StreamId`]).
    pub stream: String,
    /// What is wrong.
    pub reason: String,
    /// Set when the row is fine but its payload does not decode as a typed reader's event
    /// type: tells a schema version newer than the reader's code
    /// ([`DecodeError::UnknownSchemaVersion`]) from a malformed payload.
    pub decode_error: Option<DecodeError>,
}

impl UnreadableEvent {
    /// Describes an unreadable event (for backends and typed readers).
    ///
    /// ```
    /// # use eventcore::{backend::UnreadableEvent, GlobalPosition};
    /// let e = UnreadableEvent::new(GlobalPosition::new(1), None, "s", "why");
    /// assert_eq!(e.reason, "why");
    /// ```
    #[must_use]
    pub fn new(
        position: GlobalPosition,
        event_id: Option<EventId>,
        stream: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            position,
            event_id,
            stream: stream.into(),
            reason: reason.into(),
            decode_error: None,
        }
    }

    /// Describes a stored event whose payload does not decode as a reader's event type.
    ///
    /// ```
    /// # use eventcore::*;
    /// # use eventcore::backend::UnreadableEvent;
    /// let new = NewEvent::new("T", 9, Payload::to_json(&1)?, EventMetadata::new(CorrelationId::new()));
    /// let e = RecordedEvent::from_new(StreamId::try_new("s")?, StreamVersion::new(1), GlobalPosition::new(3), new);
    /// let err = DecodeError::UnknownSchemaVersion { event_id: e.event_id(), event_type: "T", version: 9 };
    /// let u = UnreadableEvent::undecodable(&e, err.clone());
    /// assert_eq!((u.position, u.decode_error), (GlobalPosition::new(3), Some(err)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn undecodable(event: &RecordedEvent, error: DecodeError) -> Self {
        Self {
            position: event.position,
            event_id: Some(event.event_id()),
            stream: event.stream_id.to_string(),
            reason: error.to_string(),
            decode_error: Some(error),
        }
    }
}

/// One page of the global log, as [`Backend::read_log`](super::Backend::read_log) returns it.
///
/// `entries` hold the events that passed the filter, in position order, each either readable
/// or an [`UnreadableEvent`]. `checked_to` is how far the page looked: every event at or
/// before it that passed the filter is in this page or an earlier one, whether or not the page
/// holds any. A reader resumes after `checked_to`, not after its last event, so that a
/// filter that matches nothing still moves its checkpoint forward.
///
/// `caught_up` says whether the page went as far as the log could be read when it was taken
/// (rather than stopping at `limit`): a live reader then waits for more before asking again.
///
/// ```
/// use eventcore::{backend::LogPage, GlobalPosition};
/// let page = LogPage::new(vec![], GlobalPosition::new(40), true);
/// assert!(page.entries.is_empty() && page.caught_up);
/// assert_eq!(page.checked_to, GlobalPosition::new(40));
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LogPage {
    /// The events that passed the filter, in position order.
    pub entries: Vec<Result<RecordedEvent, UnreadableEvent>>,
    /// The position up to which the log was looked at (see above).
    pub checked_to: GlobalPosition,
    /// Whether the page reached the end of what could be read (see above).
    pub caught_up: bool,
}

impl LogPage {
    /// Assembles a page (for backends).
    ///
    /// ```
    /// # use eventcore::{backend::LogPage, GlobalPosition};
    /// assert_eq!(LogPage::new(vec![], GlobalPosition::START, true).entries.len(), 0);
    /// ```
    #[must_use]
    pub fn new(
        entries: Vec<Result<RecordedEvent, UnreadableEvent>>,
        checked_to: GlobalPosition,
        caught_up: bool,
    ) -> Self {
        Self { entries, checked_to, caught_up }
    }

    /// The events, failing at the first unreadable one.
    ///
    /// # Errors
    /// [`StoreError::Unreadable`](super::StoreError::Unreadable) naming the first event that
    /// cannot be read.
    ///
    /// ```
    /// # use eventcore::{backend::LogPage, GlobalPosition};
    /// assert!(LogPage::new(vec![], GlobalPosition::START, true).into_events()?.is_empty());
    /// # Ok::<(), eventcore::backend::StoreError>(())
    /// ```
    pub fn into_events(self) -> Result<Vec<RecordedEvent>, super::StoreError> {
        self.entries
            .into_iter()
            .map(|e| e.map_err(|u| super::StoreError::Unreadable(Box::new(u))))
            .collect()
    }
}

/// Wakes live readers when the log may have grown.
///
/// A backend hands one out from [`Backend::watch_log`](super::Backend::watch_log); every
/// append bumps it (on PostgreSQL, through `LISTEN`/`NOTIFY`). Wake-ups may be spurious or,
/// on PostgreSQL, late or lost (a dropped connection): readers poll as well, and never rely
/// on a wake-up for correctness.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// use eventcore::backend::LogWatch;
/// let (bell, mut watch) = LogWatch::channel();
/// bell.ring();
/// watch.changed(std::time::Duration::from_secs(1)).await;
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct LogWatch(watch::Receiver<u64>);

/// What a [`LogBell`] shares.
pub(crate) type LogBellInner = watch::Sender<u64>;

/// The sending side of a [`LogWatch`]: rings every watch made from it.
///
/// ```
/// let (bell, _watch) = eventcore::backend::LogWatch::channel();
/// bell.ring();
/// ```
#[derive(Debug, Clone)]
pub struct LogBell(Arc<watch::Sender<u64>>);

impl LogWatch {
    /// A bell and a watch that it rings.
    ///
    /// ```
    /// let (_bell, _watch) = eventcore::backend::LogWatch::channel();
    /// ```
    #[must_use]
    pub fn channel() -> (LogBell, Self) {
        let (tx, rx) = watch::channel(0);
        (LogBell(Arc::new(tx)), Self(rx))
    }

    /// Waits until the bell rang since this watch last returned, or `at_most` passed,
    /// whichever comes first. A watch whose bell is gone waits the full time.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// let (_bell, mut watch) = eventcore::backend::LogWatch::channel();
    /// watch.changed(std::time::Duration::from_millis(1)).await; // times out: nothing rang
    /// # });
    /// ```
    pub async fn changed(&mut self, at_most: std::time::Duration) {
        let rang = async {
            if self.0.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        let _ = tokio::time::timeout(at_most, rang).await;
    }
}

impl LogBell {
    /// Wakes every watch of this bell.
    ///
    /// ```
    /// let (bell, _watch) = eventcore::backend::LogWatch::channel();
    /// bell.ring();
    /// ```
    pub fn ring(&self) {
        // Nobody watches: nothing to wake, and a watch made later waits for the next ring
        // anyway. (Spares a lock and eight notifications per append.)
        if self.0.receiver_count() == 0 {
            return;
        }
        self.0.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A weak handle, for a task that should stop once the bell's owners are gone.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn downgrade(&self) -> std::sync::Weak<LogBellInner> {
        Arc::downgrade(&self.0)
    }

    /// The bell behind a weak handle, while it has owners.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn upgrade(weak: &std::sync::Weak<LogBellInner>) -> Option<Self> {
        weak.upgrade().map(Self)
    }

    /// A new watch of this bell (it returns on the next ring, not on earlier ones).
    ///
    /// ```
    /// let (bell, _) = eventcore::backend::LogWatch::channel();
    /// let _watch = bell.watch();
    /// ```
    #[must_use]
    pub fn watch(&self) -> LogWatch {
        LogWatch(self.0.subscribe())
    }
}

impl fmt::Display for LogFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_all() {
            return f.write_str("every event");
        }
        write!(f, "categories {:?}, event types {:?}", self.categories, self.event_types)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `watch` has a ring it has not returned for, without waiting.
    fn rang(watch: &LogWatch) -> bool {
        watch.0.has_changed().unwrap_or(false)
    }

    #[test]
    fn a_bell_wakes_the_watches_made_before_it_rings_and_not_those_made_after() {
        let (bell, first) = LogWatch::channel();
        drop(first);
        // Nobody watches: nothing is kept for a later watch.
        bell.ring();
        let before = bell.watch();
        assert!(!rang(&before));
        bell.ring();
        assert!(rang(&before), "a watch made before the ring was not woken");
        let after = bell.watch();
        assert!(!rang(&after), "a watch made after the ring was woken by it");
        let clone = after.clone();
        drop(before);
        bell.ring();
        assert!(rang(&after) && rang(&clone));
    }

    #[test]
    fn the_category_is_the_text_before_the_first_dash() {
        assert_eq!(category_of("account-7-x"), "account");
        assert_eq!(category_of("ledger"), "ledger");
        assert_eq!(category_of("-7"), "");
    }

    #[test]
    fn pattern_characters_in_a_filter_mean_themselves() {
        let f = LogFilter::all().category("a%");
        assert!(f.matches_stream(&StreamId::try_new("a%-1").unwrap()));
        assert!(!f.matches_stream(&StreamId::try_new("ab-1").unwrap()));
        assert!(!LogFilter::all().event_type("_").matches_type("x"));
    }
}
