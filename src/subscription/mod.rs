//! Reacting to events: subscriptions to the global log (catch-up, then live).
//!
//! A [`Subscription`] pulls the log from a position, one page at a time: first the history,
//! then, once caught up, whatever is appended, waking on the backend's [`LogWatch`] (on
//! PostgreSQL, `LISTEN`/`NOTIFY`) and polling as a fallback. Each [`Batch`] carries the
//! position it reaches, past events the filter skipped, so a checkpoint stored after a batch
//! moves forward even when nothing matched.
//!
//! Guarantees, on every backend (the conformance suite checks them):
//!
//! - **Order and completeness**: every committed event that passes the filter is delivered
//!   once, in position order, including one whose transaction commits late with a lower
//!   position (the backend's gap-safe [`read_log`](Backend::read_log) never returns past
//!   it).
//! - **Backpressure**: nothing is read ahead. A slow consumer holds one page at most
//!   ([`page_size`](Subscription::page_size)), however far behind it is, and is never dropped.
//! - **Bad rows**: a stored event that cannot be read (or, for a [`Typed`] subscription, does
//!   not decode as its type) is one `Err` entry of its batch with its position and id; the
//!   events around it are delivered as usual, and the consumer decides what to do.
//!
//! ```
//! use eventcore::{backend::LogFilter, subscription::Subscription, GlobalPosition, Memory};
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let store = Memory::new();
//! let mut orders = Subscription::new(store.clone())
//!     .filter(LogFilter::all().category("order"))
//!     .after(GlobalPosition::START);
//! // Nothing yet: `next_batch` would wait for an append (or the poll interval).
//! assert_eq!(orders.position(), GlobalPosition::START);
//! # });
//! ```

pub(crate) mod process;
mod projection;
mod seat;
mod snapshot;
mod status;
pub(crate) mod store;
mod typed;

use std::{num::NonZeroUsize, time::Duration};

use futures_core::Stream;

#[cfg(feature = "testing")]
pub(crate) use process::is_instance_record;
pub use process::{
    Clock, Happened, ManualClock, ProcessManager, ProcessRunner, Reaction, SystemClock,
};
pub use projection::{OnFailure, Projection, ProjectionRunner};
pub use snapshot::{ProjectionSnapshot, SnapshotProjection};
pub use status::{Lag, ProjectionError, ProjectionHandle, ProjectionStatus, RunnerState};
pub use store::{
    Lease, LogStats, MAX_LEASE, MIN_LEASE, ParkedEvent, ProjectionRecord, ProjectionStore,
};
pub use typed::{Decoded, Typed, TypedBatch};

use crate::{
    GlobalPosition, RecordedEvent,
    backend::{Backend, LogFilter, LogWatch, StoreError, UnreadableEvent},
};

/// The entry of `store`'s log at `position`, readable or not, if the log holds one there.
pub(crate) async fn entry_at<B: Backend>(
    store: &B,
    position: GlobalPosition,
) -> Result<Option<Result<RecordedEvent, UnreadableEvent>>, StoreError> {
    let before = GlobalPosition::new(position.get().saturating_sub(1));
    let page = store.read_log(before, &LogFilter::all(), 1).await?;
    Ok(page.entries.into_iter().next().filter(|entry| entry_position(entry) == position))
}

/// The position of an entry of the log, readable or not.
pub(crate) fn entry_position(entry: &Result<RecordedEvent, UnreadableEvent>) -> GlobalPosition {
    entry.as_ref().map_or_else(|u| u.position, |e| e.position)
}

/// A reader of the global log from a position on: history first, then live.
///
/// Build one with [`Subscription::new`], set where it starts ([`after`](Self::after)) and what
/// it wants ([`filter`](Self::filter)), then call [`next_batch`](Self::next_batch) in a loop
/// (or use it as a [`Stream`] with [`into_stream`](Self::into_stream)). Store
/// [`Batch::position`] as your checkpoint once you have handled a batch, and start again
/// after it.
///
/// ```
/// use eventcore::{backend::{AppendRequest, Backend}, subscription::Subscription};
/// use eventcore::{CorrelationId, EventMetadata, GlobalPosition, Memory, NewEvent, Payload, StreamId, StreamVersion};
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let store = Memory::new();
/// let id = StreamId::try_new("order-1")?;
/// let e = NewEvent::new("Placed", 1, Payload::to_json(&1)?, EventMetadata::new(CorrelationId::new()));
/// store.append(AppendRequest::new().expect(id.clone(), StreamVersion::EMPTY).write(id, vec![e])).await?;
///
/// let mut sub = Subscription::new(store).after(GlobalPosition::START);
/// let batch = sub.next_batch().await?;
/// assert_eq!(batch.events.len(), 1);
/// assert_eq!(batch.position, GlobalPosition::new(1)); // the checkpoint to store
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Debug)]
pub struct Subscription<B: Backend> {
    store: B,
    filter: LogFilter,
    position: GlobalPosition,
    page_size: usize,
    poll_interval: Duration,
    watch: LogWatch,
    /// The last page reached the end of what could be read: wait before reading again.
    caught_up: bool,
}

/// What one call of [`Subscription::next_batch`] delivers.
///
/// `events` are in position order; `position` is how far the subscription has read the log,
/// at or after the last event's position (further when the filter skipped events after it).
/// A batch may hold no event and still move `position` forward.
///
/// ```
/// use eventcore::{subscription::Batch, GlobalPosition};
/// let b = Batch { events: vec![], position: GlobalPosition::new(9) };
/// assert!(b.events.is_empty());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// The events, in position order; an unreadable one is an `Err` at its place.
    pub events: Vec<Result<RecordedEvent, UnreadableEvent>>,
    /// The checkpoint after this batch: resume after it.
    pub position: GlobalPosition,
}

impl<B: Backend> Subscription<B> {
    /// How many events a batch holds at most, unless [`page_size`](Self::page_size) says
    /// otherwise.
    pub const DEFAULT_PAGE_SIZE: usize = 500;
    /// How long a caught-up subscription waits for a wake-up before it looks again anyway,
    /// unless [`poll_interval`](Self::poll_interval) says otherwise.
    pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(500);

    /// A subscription to every event of `store`, from the start of the log.
    ///
    /// ```
    /// let sub = eventcore::subscription::Subscription::new(eventcore::Memory::new());
    /// assert_eq!(sub.position(), eventcore::GlobalPosition::START);
    /// ```
    pub fn new(store: B) -> Self {
        // Watched from now on, before the first read: an append after it always wakes us.
        let watch = store.watch_log();
        Self {
            store,
            filter: LogFilter::all(),
            position: GlobalPosition::START,
            page_size: Self::DEFAULT_PAGE_SIZE,
            poll_interval: Self::DEFAULT_POLL_INTERVAL,
            watch,
            caught_up: false,
        }
    }

    /// Starts after `position`: a stored checkpoint, or [`GlobalPosition::START`] for the whole
    /// history.
    ///
    /// ```
    /// # use eventcore::{subscription::Subscription, GlobalPosition, Memory};
    /// let sub = Subscription::new(Memory::new()).after(GlobalPosition::new(41));
    /// assert_eq!(sub.position(), GlobalPosition::new(41));
    /// ```
    #[must_use]
    pub fn after(mut self, position: GlobalPosition) -> Self {
        self.position = position;
        self.caught_up = false;
        self
    }

    /// Delivers only the events `filter` accepts (by category, by event type).
    ///
    /// ```
    /// # use eventcore::{backend::LogFilter, subscription::Subscription, Memory};
    /// let sub = Subscription::new(Memory::new()).filter(LogFilter::all().event_type("Paid"));
    /// # let _ = sub;
    /// ```
    #[must_use]
    pub fn filter(mut self, filter: LogFilter) -> Self {
        self.filter = filter;
        self
    }

    /// Sets the most events one batch holds: also the most a slow consumer holds in memory.
    /// A batch of no events could never move on, so the type says "at least one".
    ///
    /// ```
    /// # use eventcore::{subscription::Subscription, Memory};
    /// use std::num::NonZeroUsize;
    /// let sub = Subscription::new(Memory::new()).page_size(NonZeroUsize::new(100).unwrap());
    /// # let _ = sub;
    /// ```
    #[must_use]
    pub fn page_size(mut self, events: NonZeroUsize) -> Self {
        self.page_size = events.get();
        self
    }

    /// Sets how long a caught-up subscription waits for a wake-up before it looks again
    /// anyway: the longest delay when a wake-up is lost (a dropped `LISTEN` connection).
    ///
    /// # Errors
    /// A [`ValidationError`](crate::ValidationError) for a zero interval, which would have a
    /// caught-up subscription query the store again and again without pause; the subscription
    /// is dropped with it (build another).
    ///
    /// ```
    /// # use eventcore::{subscription::Subscription, Memory};
    /// use std::time::Duration;
    /// let sub = Subscription::new(Memory::new()).poll_interval(Duration::from_millis(100))?;
    /// # let _ = sub;
    /// let zero = Subscription::new(Memory::new()).poll_interval(Duration::ZERO);
    /// assert!(zero.unwrap_err().to_string().contains("poll interval"));
    /// # Ok::<(), eventcore::ValidationError>(())
    /// ```
    pub fn poll_interval(mut self, interval: Duration) -> Result<Self, crate::ValidationError> {
        if interval.is_zero() {
            return Err(crate::ValidationError::new(
                "Subscription",
                "the poll interval must be longer than zero: a caught-up subscription would \
                 query the store again at once, without end",
            ));
        }
        self.poll_interval = interval;
        Ok(self)
    }

    /// Sets both, for the runners, which refuse a zero of either before they build one.
    pub(crate) fn paced(mut self, page_size: usize, poll_interval: Duration) -> Self {
        debug_assert!(page_size > 0 && !poll_interval.is_zero());
        self.page_size = page_size;
        self.poll_interval = poll_interval;
        self
    }

    /// How far the subscription has read: every event up to here that passes the filter was
    /// delivered.
    ///
    /// ```
    /// # use eventcore::{subscription::Subscription, GlobalPosition, Memory};
    /// assert_eq!(Subscription::new(Memory::new()).position(), GlobalPosition::START);
    /// ```
    #[must_use]
    pub fn position(&self) -> GlobalPosition {
        self.position
    }

    /// The filter in force.
    ///
    /// ```
    /// # use eventcore::{subscription::Subscription, Memory};
    /// assert!(Subscription::new(Memory::new()).filter_in_force().is_all());
    /// ```
    #[must_use]
    pub fn filter_in_force(&self) -> &LogFilter {
        &self.filter
    }

    /// The store read from.
    ///
    /// ```
    /// # use eventcore::{subscription::Subscription, Memory};
    /// let sub = Subscription::new(Memory::new());
    /// assert!(sub.store().is_empty());
    /// ```
    #[must_use]
    pub fn store(&self) -> &B {
        &self.store
    }

    /// The next batch: events after [`position`](Self::position) that pass the filter, at most
    /// [`page_size`](Self::page_size) of them. While catching up it returns at once; once
    /// caught up it waits until an append wakes it (or the poll interval passes) and more of
    /// the log can be read. A batch without events is returned when the position moved past
    /// events the filter skipped, so that a checkpoint can follow.
    ///
    /// Cancel-safe: dropping the future loses nothing (the position moves only when a batch
    /// is returned).
    ///
    /// # Errors
    /// [`StoreError`] when the store fails; the subscription stays where it was, and calling
    /// again retries at once (a loop that goes on after an error should wait between tries,
    /// as the runners do, longer after each failure in a row).
    ///
    /// ```
    /// # use eventcore::{subscription::Subscription, Memory};
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// let mut sub = Subscription::new(Memory::new()).poll_interval(std::time::Duration::from_millis(1)).unwrap();
    /// let waited = tokio::time::timeout(std::time::Duration::from_millis(20), sub.next_batch()).await;
    /// assert!(waited.is_err()); // nothing was appended: still waiting
    /// # });
    /// ```
    pub async fn next_batch(&mut self) -> Result<Batch, StoreError> {
        loop {
            if let Some(batch) = self.poll(self.poll_interval).await? {
                return Ok(batch);
            }
        }
    }

    /// Whether the last read reached the end of what the log held then (for the runners: a
    /// batch that holds fewer events than a page may still end far from the head, when the
    /// filter skipped the rest of what the read looked at).
    pub(crate) fn caught_up(&self) -> bool {
        self.caught_up
    }

    /// One look, for the runners: when caught up, waits for news at most `wait` (and at most
    /// the poll interval), then reads once. `None` when the read found nothing new.
    ///
    /// The runners call this rather than wrap [`next_batch`](Self::next_batch) in a timeout:
    /// a timeout as long as the poll interval ends together with the poll's wait and cancels
    /// the read that wait leads to, so that a runner no notification wakes would hardly ever
    /// read; and a read slower than the timeout (one that waits for an append in flight)
    /// would never finish.
    pub(crate) async fn poll(&mut self, wait: Duration) -> Result<Option<Batch>, StoreError> {
        if self.caught_up {
            self.watch.changed(wait.min(self.poll_interval)).await;
            // The wake-up is taken: a read that fails or is dropped from here on is made again
            // at once by the next call, not after waiting for a wake-up that already came.
            self.caught_up = false;
        }
        let page = self.store.read_log(self.position, &self.filter, self.page_size).await?;
        self.caught_up = page.caught_up;
        if !page.entries.is_empty() || page.checked_to > self.position {
            self.position = self.position.max(page.checked_to);
            return Ok(Some(Batch { events: page.entries, position: self.position }));
        }
        Ok(None)
    }

    /// The subscription as a [`Stream`] of batches (it never ends by itself).
    ///
    /// ```
    /// use futures_util::StreamExt;
    /// # use eventcore::{subscription::Subscription, Memory};
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// let stream = Subscription::new(Memory::new()).into_stream();
    /// let mut stream = std::pin::pin!(stream);
    /// let first = tokio::time::timeout(std::time::Duration::from_millis(5), stream.next()).await;
    /// assert!(first.is_err()); // the log is empty: the stream waits
    /// # });
    /// ```
    pub fn into_stream(self) -> impl Stream<Item = Result<Batch, StoreError>> + Send
    where
        B: Send,
    {
        futures_util::stream::unfold(self, |mut sub| async move {
            let batch = sub.next_batch().await;
            Some((batch, sub))
        })
    }

    /// The same subscription, delivering events decoded as `E` (and only events of that
    /// type): see [`Typed`].
    ///
    /// ```
    /// # use eventcore::{subscription::Subscription, Memory, Event};
    /// # #[derive(serde::Serialize, serde::Deserialize)] enum Paid { Yes }
    /// # impl Event for Paid { const EVENT_TYPE: &'static str = "Paid"; }
    /// let paid = Subscription::new(Memory::new()).typed::<Paid>();
    /// # let _ = paid;
    /// ```
    #[must_use]
    pub fn typed<E: crate::Event>(self) -> Typed<B, E> {
        Typed::new(self)
    }

    /// The same subscription, delivering the events of slot `S`'s type, decoded: shorthand
    /// for `typed::<S::Event>()`.
    ///
    /// ```
    /// # use eventcore::{slot, subscription::Subscription, Memory, Event};
    /// # #[derive(serde::Serialize, serde::Deserialize)] pub enum AccountEvent { Opened }
    /// # impl Event for AccountEvent { const EVENT_TYPE: &'static str = "AccountEvent"; }
    /// slot!(pub Account: AccountEvent);
    /// let accounts = Subscription::new(Memory::new()).for_slot::<Account>();
    /// # let _ = accounts;
    /// ```
    #[must_use]
    pub fn for_slot<S: crate::Slot>(self) -> Typed<B, S::Event> {
        self.typed::<S::Event>()
    }
}
