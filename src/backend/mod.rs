//! The storage contract ([`Backend`]) and the in-memory backend ([`Memory`]).
//!
//! A backend stores serialized events ([`NewEvent`] in, [`RecordedEvent`] out); typing happens in
//! the command layer. Every backend must pass the conformance suite in `tests/conformance/`.

mod error;
pub(crate) mod log;
mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
mod queue;
mod request;
pub(crate) mod snapshot;

use std::future::Future;

pub use error::{Conflict, StoreError};
pub use log::{LogBell, LogFilter, LogPage, LogWatch, UnreadableEvent};
pub use memory::{Memory, MemoryTx};
pub(crate) use queue::{Handed, Turn};
pub use queue::{StreamHold, StreamQueue};
pub use request::{
    AppendRequest, Committed, IdempotencyKey, MAX_EVENTS_PER_APPEND, MAX_JSON_DEPTH,
    RequestFingerprint, StreamEvents,
};
pub use snapshot::{SnapshotKey, StoredSnapshot};

use crate::{GlobalPosition, RecordedEvent, StreamId, StreamVersion};

#[allow(unused_imports)] // linked from docs
use crate::NewEvent;

/// An event store.
///
/// Modelled on sqlx's `Database`: one trait, one small type per store. Handles are cheap to
/// clone and share one store. All futures are `Send`.
///
/// The contract, checked by the conformance suite for every implementation:
///
/// - [`read`](Backend::read) returns, for each requested stream in request order, its current
///   version and all its events in version order, in one call (one round trip where the store is
///   remote). A stream without events is at version 0. Repeated ids are answered repeatedly.
/// - [`append`](Backend::append) is atomic: all events of the request are stored, or none. It
///   fails with [`StoreError::Conflict`] unless every stream in the request's expected set is
///   still at its expected version, whether or not the request writes to it, and, for each
///   stream the request names an event for ([`AppendRequest::expect_event`]), still holds that
///   event at its expected version (else a conflict with `expected` = `actual`). Versions of a
///   stream are 1, 2, 3... with no gap; every event gets a [`GlobalPosition`]. A request
///   carrying an [`IdempotencyKey`] that was already committed stores nothing and returns the
///   first commit's [`Committed`] with [`Committed::replayed`] set.
/// - [`read_log`](Backend::read_log) pages through the events of the global log that pass a
///   filter, in position order. A reader that resumes after a page's
///   [`checked_to`](LogPage::checked_to) never misses an event, even one whose write was still
///   in flight when the page was read (*gap-safe*). A stored event that cannot be read is one
///   [`UnreadableEvent`] in its page, never a failed page.
/// - [`watch_log`](Backend::watch_log) wakes live readers after appends.
/// - [`find_committed`](Backend::find_committed) finds the commit an idempotency key made,
///   as a replay of it.
/// - [`stream_queue`](Backend::stream_queue) is one queue per store, shared by clones; a store
///   shared between processes may also [`hold`](Backend::hold) streams across them.
///
/// ```
/// use eventcore::backend::{AppendRequest, Backend};
/// use eventcore::{CorrelationId, EventMetadata, GlobalPosition, Memory, NewEvent, Payload, StreamId, StreamVersion};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// async fn log_hello(store: &impl Backend) -> Result<(), Box<dyn std::error::Error>> {
///     let id = StreamId::try_new("greetings")?;
///     let event = NewEvent::new("Hello", 1, Payload::to_json(&"world")?, EventMetadata::new(CorrelationId::new()));
///     let request = AppendRequest::new().expect(id.clone(), StreamVersion::EMPTY).write(id, vec![event]);
///     store.append(request).await?;
///     assert_eq!(store.read_all(GlobalPosition::START, 10).await?.len(), 1);
///     Ok(())
/// }
/// log_hello(&Memory::new()).await.unwrap();
/// # });
/// ```
pub trait Backend: Clone + Send + Sync + 'static {
    /// Reads whole streams, each with its current version.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails or holds a row it cannot read.
    ///
    /// ```
    /// use eventcore::backend::{AppendRequest, Backend};
    /// use eventcore::{CorrelationId, EventMetadata, Memory, NewEvent, Payload, StreamId, StreamVersion};
    /// # fn event(text: &str) -> NewEvent {
    /// #     NewEvent::new("Noted", 1, Payload::to_json(&text).unwrap(), EventMetadata::new(CorrelationId::new()))
    /// # }
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let store = Memory::new();
    /// let a = StreamId::try_new("a")?;
    /// store.append(AppendRequest::new().expect(a.clone(), StreamVersion::EMPTY).write(a.clone(), vec![event("one"), event("two")])).await?;
    /// let never = StreamId::try_new("never-written")?;
    /// let read = store.read(&[never, a]).await?;
    /// assert_eq!(read[0].version, StreamVersion::EMPTY); // no events: version 0
    /// assert_eq!(read[1].version, StreamVersion::new(2));
    /// assert_eq!(read[1].events.iter().map(|e| e.version.get()).collect::<Vec<_>>(), [1, 2]);
    /// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
    /// ```
    fn read(
        &self,
        streams: &[StreamId],
    ) -> impl Future<Output = Result<Vec<StreamEvents>, StoreError>> + Send;

    /// Appends events to several streams at once, checking the expected version of every stream
    /// the writer read.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when a stream moved, or holds another event at its expected
    /// version than the request names; [`StoreError::InvalidAppend`] for a request that writes
    /// a stream it has no expected version for (see [`AppendRequest::validate`]); other
    /// variants when the store fails. A store that cannot check a named event must refuse the
    /// request rather than ignore it: the executor names the events of streams its cache served,
    /// and relies on the check.
    ///
    /// With an [`idempotency_key`](AppendRequest::idempotency_key) a committed append already
    /// carried, the store writes nothing and returns that append's result, marked
    /// [`replayed`](Committed::replayed), with the [`fingerprint`](Committed::fingerprint)
    /// stored with the key; the store keeps a request's
    /// [`fingerprint`](AppendRequest::fingerprint) with its key for this, and for
    /// [`find_committed`](Self::find_committed). (A store that keeps none answers `None`, and
    /// the executor cannot then refuse a key sent with another request.)
    ///
    /// ```
    /// use eventcore::backend::{AppendRequest, Backend};
    /// use eventcore::{CorrelationId, EventMetadata, Memory, NewEvent, Payload, StreamId, StreamVersion};
    /// # fn event(text: &str) -> NewEvent {
    /// #     NewEvent::new("Noted", 1, Payload::to_json(&text).unwrap(), EventMetadata::new(CorrelationId::new()))
    /// # }
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let store = Memory::new();
    /// use eventcore::backend::StoreError;
    /// let (a, b) = (StreamId::try_new("a")?, StreamId::try_new("b")?);
    /// // Read `a` and `b` at version 0; someone else writes `b` meanwhile.
    /// store.append(AppendRequest::new().expect(b.clone(), StreamVersion::EMPTY).write(b.clone(), vec![event("elsewhere")])).await?;
    /// // Writing only `a`, but having read `b` too: refused, and nothing is stored.
    /// let stale = AppendRequest::new()
    ///     .expect(a.clone(), StreamVersion::EMPTY)
    ///     .expect(b, StreamVersion::EMPTY)
    ///     .write(a.clone(), vec![event("decided on a stale b")]);
    /// assert!(matches!(store.append(stale).await, Err(StoreError::Conflict(_))));
    /// assert_eq!(store.read(&[a]).await?[0].version, StreamVersion::EMPTY);
    /// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
    /// ```
    fn append(
        &self,
        request: AppendRequest,
    ) -> impl Future<Output = Result<Committed, StoreError>> + Send;

    /// Reads up to `limit` events after position `after` that pass `filter`, in position
    /// order, and how far it looked ([`LogPage::checked_to`]).
    ///
    /// Gap-safe: an event that commits after this call with a position at or below
    /// `checked_to` cannot exist. A page may hold fewer than `limit` events while more are
    /// stored (a write still in flight before them, or a filter that skipped many); a reader
    /// just asks again after `checked_to`. `checked_to` is never below `after`, and never past
    /// the last event stored (unless `after` already is): positions beyond it belong to events
    /// still to come, and a checkpoint there would skip them (on PostgreSQL, the first events
    /// after the database is moved to another cluster land just above the last stored one).
    /// A `limit` of 0 reads nothing: an empty page at `after`, not caught up.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails; on PostgreSQL, [`StoreError::LogMoved`] when the
    /// database was moved to another cluster and not re-based yet;
    /// [`StoreError::InvalidFilter`] when a category of `filter` cannot be one, or one of its
    /// event types no event can have (see [`LogFilter::check`]). An event that cannot be read
    /// is an entry of the page, not an error.
    ///
    /// ```
    /// use eventcore::backend::{AppendRequest, Backend};
    /// use eventcore::{CorrelationId, EventMetadata, Memory, NewEvent, Payload, StreamId, StreamVersion};
    /// # fn event(text: &str) -> NewEvent {
    /// #     NewEvent::new("Noted", 1, Payload::to_json(&text).unwrap(), EventMetadata::new(CorrelationId::new()))
    /// # }
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let store = Memory::new();
    /// use eventcore::backend::LogFilter;
    /// use eventcore::GlobalPosition;
    /// for id in ["order-1", "invoice-1", "order-2"] {
    ///     let id = StreamId::try_new(id)?;
    ///     store.append(AppendRequest::new().expect(id.clone(), StreamVersion::EMPTY).write(id, vec![event("x")])).await?;
    /// }
    /// let orders = LogFilter::all().category("order");
    /// let page = store.read_log(GlobalPosition::START, &orders, 100).await?;
    /// assert_eq!(page.checked_to, GlobalPosition::new(3)); // looked at all three
    /// let streams: Vec<String> = page.into_events()?.iter().map(|e| e.stream_id.to_string()).collect();
    /// assert_eq!(streams, ["order-1", "order-2"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
    /// ```
    fn read_log(
        &self,
        after: GlobalPosition,
        filter: &LogFilter,
        limit: usize,
    ) -> impl Future<Output = Result<LogPage, StoreError>> + Send;

    /// A watch that wakes after appends, for live readers (see [`LogWatch`]).
    ///
    /// ```
    /// use eventcore::backend::{AppendRequest, Backend};
    /// use eventcore::{CorrelationId, EventMetadata, Memory, NewEvent, Payload, StreamId, StreamVersion};
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// let store = Memory::new();
    /// let mut watch = store.watch_log();
    /// let writer = store.clone();
    /// tokio::spawn(async move {
    ///     let a = StreamId::try_new("a")?;
    ///     let event = NewEvent::new("Noted", 1, Payload::to_json(&1)?, EventMetadata::new(CorrelationId::new()));
    ///     writer.append(AppendRequest::new().expect(a.clone(), StreamVersion::EMPTY).write(a, vec![event])).await?;
    ///     Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
    /// });
    /// // Returns when the append rang (or after a minute, as a live reader's fallback poll).
    /// watch.changed(std::time::Duration::from_secs(60)).await;
    /// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
    /// ```
    fn watch_log(&self) -> LogWatch;

    /// The result of the committed append that carried `key`, with
    /// [`Committed::replayed`] set and the [`fingerprint`](Committed::fingerprint) stored with
    /// the key, or `None` when no append with that key committed.
    ///
    /// The executor asks only when a keyed command is rejected or decides to write nothing:
    /// that is what a command sent again after its reply was lost sees, once its first run
    /// changed the state it decides on.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    ///
    /// ```
    /// use eventcore::backend::{AppendRequest, Backend};
    /// use eventcore::{CorrelationId, EventMetadata, Memory, NewEvent, Payload, StreamId, StreamVersion};
    /// # fn event(text: &str) -> NewEvent {
    /// #     NewEvent::new("Noted", 1, Payload::to_json(&text).unwrap(), EventMetadata::new(CorrelationId::new()))
    /// # }
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let store = Memory::new();
    /// use eventcore::backend::IdempotencyKey;
    /// let key = IdempotencyKey::try_new("request-7f3a")?;
    /// assert!(store.find_committed(&key).await?.is_none());
    /// let a = StreamId::try_new("a")?;
    /// let request = AppendRequest::new().expect(a.clone(), StreamVersion::EMPTY).write(a.clone(), vec![event("once")]);
    /// let first = store.append(request.idempotent(key.clone())).await?;
    /// let found = store.find_committed(&key).await?.expect("the key's commit");
    /// assert!(found.replayed && !first.replayed);
    /// assert_eq!(found.version_of(&a), Some(StreamVersion::new(1)));
    /// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
    /// ```
    fn find_committed(
        &self,
        key: &IdempotencyKey,
    ) -> impl Future<Output = Result<Option<Committed>, StoreError>> + Send;

    /// The queue on which commands over the same streams take turns in this process (see
    /// [`StreamQueue`]). One per store, shared by clones, and **never shared by two stores**:
    /// the queue hands streams over from one command to the next, keyed by stream id, so two
    /// stores holding a stream of the same id (two tenants' schemas, say) must each have their
    /// own. (The next command reads the store from the handed-over version on, which only
    /// finds what is new when it is the same store.) A wrapper around one store forwards it.
    ///
    /// ```
    /// use eventcore::{Backend, Memory};
    /// let store = Memory::new();
    /// let clone = store.clone();
    /// assert!(std::ptr::eq(store.stream_queue(), clone.stream_queue())); // one queue per store
    /// assert!(!std::ptr::eq(store.stream_queue(), Memory::new().stream_queue()));
    /// ```
    fn stream_queue(&self) -> &StreamQueue;

    /// Holds those of `streams` that must be held across processes while a command reads,
    /// decides and appends (see [`StreamHold`]); `None` when there are none. The executor asks
    /// after its turn in the [`StreamQueue`] and before reading.
    ///
    /// The default holds nothing, which is right for a store used by one process (the queue
    /// orders its commands). A wrapper around another backend forwards it.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails while taking the hold.
    ///
    /// ```
    /// use eventcore::backend::{AppendRequest, Backend};
    /// use eventcore::{CorrelationId, EventMetadata, Memory, NewEvent, Payload, StreamId, StreamVersion};
    /// # fn event(text: &str) -> NewEvent {
    /// #     NewEvent::new("Noted", 1, Payload::to_json(&text).unwrap(), EventMetadata::new(CorrelationId::new()))
    /// # }
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let store = Memory::new();
    /// // One process orders its own commands in the queue: the memory store holds nothing.
    /// assert!(store.hold(&[StreamId::try_new("a")?]).await?.is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
    /// ```
    fn hold(
        &self,
        streams: &[StreamId],
    ) -> impl Future<Output = Result<Option<StreamHold>, StoreError>> + Send {
        let _ = streams;
        std::future::ready(Ok(None))
    }

    /// Reads the events of each stream after the version given with it, and its current
    /// version: for each `(stream, after)` in request order, a [`StreamEvents`] whose `version`
    /// is the stream's current version and whose `events` are those with versions above
    /// `after`, in version order. A stream behind `after` (a store restored from an older
    /// backup, say) comes back at its own, lower, version, without events: the caller sees it
    /// and must not trust what it believed the stream held.
    ///
    /// The default reads whole streams with [`read`](Self::read) and drops the events up to
    /// `after`; both built-in stores read only the later events (on PostgreSQL, one range
    /// scan of the `(stream_id, version)` index per stream, in one statement).
    ///
    /// # Errors
    /// As [`read`](Self::read).
    ///
    /// ```
    /// use eventcore::{Backend, Memory, StreamId, StreamVersion};
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let store = Memory::new();
    /// let id = StreamId::try_new("empty")?;
    /// let read = store.read_after(&[(id, StreamVersion::new(5))]).await?;
    /// assert_eq!(read[0].version, StreamVersion::EMPTY); // behind the version asked after
    /// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
    /// ```
    fn read_after(
        &self,
        streams: &[(StreamId, StreamVersion)],
    ) -> impl Future<Output = Result<Vec<StreamEvents>, StoreError>> + Send {
        let ids: Vec<StreamId> = streams.iter().map(|(id, _)| id.clone()).collect();
        let after: Vec<StreamVersion> = streams.iter().map(|(_, v)| *v).collect();
        async move {
            let mut reads = self.read(&ids).await?;
            for (read, after) in reads.iter_mut().zip(after) {
                read.events.retain(|event| event.version > after);
            }
            Ok(reads)
        }
    }

    /// The snapshot stored under `key`, if any, and `streams` read on top of it: when the
    /// snapshot's streams are exactly `streams` (same ids, same order), each stream's events
    /// after the version the snapshot gives it, as [`read_after`](Self::read_after) answers;
    /// otherwise (no snapshot, or one of other streams) whole streams, as
    /// [`read`](Self::read) answers. What a command with snapshots reads first.
    ///
    /// A snapshot of `streams` is answered only while the store still holds the events it
    /// covers: the event at each stream's covered version must be the one whose id the
    /// snapshot recorded ([`StoredSnapshot::last_event_ids`]). A store restored from an older
    /// backup (shorter streams) and grown again by later appends holds other events at those
    /// versions; such a snapshot is answered as none (`None`, whole streams), and logged.
    ///
    /// The default calls [`load_snapshot`](Self::load_snapshot), then `read_after` from each
    /// covered event on (and checks and drops it), or `read`; a snapshot that no longer fits
    /// costs one more `read`. PostgreSQL does it all in one statement (one round trip).
    ///
    /// # Errors
    /// As [`read`](Self::read) and [`load_snapshot`](Self::load_snapshot).
    ///
    /// ```
    /// use eventcore::{Backend, Memory, StreamId, backend::SnapshotKey};
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let store = Memory::new();
    /// let (snapshot, reads) = store.read_with_snapshot(&SnapshotKey::new("k"), &[StreamId::try_new("s")?]).await?;
    /// assert!(snapshot.is_none());
    /// assert!(reads[0].events.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
    /// ```
    fn read_with_snapshot(
        &self,
        key: &SnapshotKey,
        streams: &[StreamId],
    ) -> impl Future<Output = Result<(Option<StoredSnapshot>, Vec<StreamEvents>), StoreError>> + Send
    {
        async move {
            let snapshot = match self.load_snapshot(key).await? {
                Some(s) if s.covers(streams) => {
                    let mut reads = self.read_after(&s.reread_from()).await?;
                    if s.still_covered(&mut reads) {
                        return Ok((Some(s), reads));
                    }
                    snapshot::restored_under(&s);
                    None
                }
                other => other,
            };
            Ok((snapshot, self.read(streams).await?))
        }
    }

    /// The snapshot stored under `key`, if any.
    ///
    /// The default stores no snapshots: it always answers `None`.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails (the executor then folds the full history).
    ///
    /// ```
    /// use eventcore::{Backend, Memory, backend::SnapshotKey};
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// assert!(Memory::new().load_snapshot(&SnapshotKey::new("k")).await?.is_none());
    /// # Ok::<(), eventcore::backend::StoreError>(()) }).unwrap();
    /// ```
    fn load_snapshot(
        &self,
        key: &SnapshotKey,
    ) -> impl Future<Output = Result<Option<StoredSnapshot>, StoreError>> + Send {
        let _ = key;
        std::future::ready(Ok(None))
    }

    /// Stores `snapshot` under its key, replacing the one stored there. The last one saved
    /// wins: of two executions that race, the slower may store a snapshot older than the
    /// other's, which is still right (it covers committed events), only a little less useful;
    /// and a snapshot the executor discarded is always replaced by the next one it takes.
    ///
    /// The default stores nothing.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails (the executor logs it and goes on: a snapshot is
    /// never worth failing a command for).
    ///
    /// ```
    /// use eventcore::backend::{SnapshotKey, StoredSnapshot};
    /// use eventcore::{Backend, Memory, Payload, StreamId, StreamVersion};
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let store = Memory::new();
    /// let snapshot = StoredSnapshot {
    ///     key: SnapshotKey::new("k"),
    ///     state_type: "S".into(),
    ///     state_version: 1,
    ///     streams: vec![(StreamId::try_new("s")?, StreamVersion::new(0))],
    ///     last_event_ids: vec![None],
    ///     state: Payload::to_json(&0)?,
    /// };
    /// store.save_snapshot(snapshot.clone()).await?;
    /// assert_eq!(store.load_snapshot(&snapshot.key).await?, Some(snapshot));
    /// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
    /// ```
    fn save_snapshot(
        &self,
        snapshot: StoredSnapshot,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let _ = snapshot;
        std::future::ready(Ok(()))
    }

    /// Deletes the snapshots saved (or last replaced) `older_than` ago or earlier, and answers
    /// how many it deleted: `Duration::ZERO` deletes every snapshot stored before the call.
    ///
    /// A snapshot is a cache of folded state, so deleting one never loses anything: the next
    /// command over its streams folds them in full, and saves a new one when its
    /// [`SnapshotPolicy`](crate::SnapshotPolicy) says to. The executor replaces a snapshot
    /// under the same key as it goes, but a key it no longer builds keeps its row for good: a
    /// key names the slots and event types of the command (with each event type's
    /// fingerprint), so a changed event type, a renamed slot or a command no longer run leaves
    /// its snapshots behind. Pruning what no command has saved for a while removes those,
    /// and costs a full fold for a snapshot still in use but not saved in that time.
    ///
    /// The default deletes nothing (it stores no snapshots, see
    /// [`save_snapshot`](Self::save_snapshot)); a backend that stores them overrides it.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails; then none or some of them were deleted.
    ///
    /// ```
    /// use std::time::Duration;
    /// use eventcore::backend::{SnapshotKey, StoredSnapshot};
    /// use eventcore::{Backend, Memory, Payload, StreamId, StreamVersion};
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let store = Memory::new();
    /// # let snapshot = StoredSnapshot {
    /// #     key: SnapshotKey::new("k"),
    /// #     state_type: "S".into(),
    /// #     state_version: 1,
    /// #     streams: vec![(StreamId::try_new("s")?, StreamVersion::new(0))],
    /// #     last_event_ids: vec![None],
    /// #     state: Payload::to_json(&0)?,
    /// # };
    /// store.save_snapshot(snapshot).await?;
    /// // Saved just now: not a day old.
    /// assert_eq!(store.prune_snapshots(Duration::from_secs(86_400)).await?, 0);
    /// assert_eq!(store.prune_snapshots(Duration::ZERO).await?, 1);
    /// assert!(store.load_snapshot(&SnapshotKey::new("k")).await?.is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
    /// ```
    fn prune_snapshots(
        &self,
        older_than: std::time::Duration,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        let _ = older_than;
        std::future::ready(Ok(0))
    }

    /// Reads up to `limit` events with positions after `after`, in global order: the strict
    /// form of [`read_log`](Self::read_log), for tools and tests.
    ///
    /// # Errors
    /// [`StoreError::Unreadable`] naming the first event in the page that cannot be read
    /// (readers that must get past it use [`read_log`](Self::read_log) or a
    /// [`Subscription`](crate::subscription::Subscription)); other variants when the store
    /// fails.
    ///
    /// ```
    /// use eventcore::backend::{AppendRequest, Backend};
    /// use eventcore::{CorrelationId, EventMetadata, Memory, NewEvent, Payload, StreamId, StreamVersion};
    /// # fn event(text: &str) -> NewEvent {
    /// #     NewEvent::new("Noted", 1, Payload::to_json(&text).unwrap(), EventMetadata::new(CorrelationId::new()))
    /// # }
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let store = Memory::new();
    /// use eventcore::GlobalPosition;
    /// let a = StreamId::try_new("a")?;
    /// store.append(AppendRequest::new().expect(a.clone(), StreamVersion::EMPTY).write(a, vec![event("one"), event("two")])).await?;
    /// let all = store.read_all(GlobalPosition::START, 10).await?;
    /// assert_eq!(all.len(), 2);
    /// let rest = store.read_all(all[0].position, 10).await?; // after the first
    /// assert_eq!(rest[0].position, all[1].position);
    /// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
    /// ```
    fn read_all(
        &self,
        after: GlobalPosition,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send {
        async move { self.read_log(after, &LogFilter::all(), limit).await?.into_events() }
    }
}
