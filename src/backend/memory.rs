//! The in-memory backend.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, Mutex, PoisonError, RwLock},
    time::{Duration, Instant},
};

use super::{
    AppendRequest, Backend, Committed, Conflict, IdempotencyKey, LogBell, LogFilter, LogPage,
    LogWatch, SnapshotKey, StoreError, StoredSnapshot, StreamEvents, StreamQueue,
};
use crate::{
    GlobalPosition, RecordedEvent, StreamId, StreamVersion, Timestamp,
    subscription::{
        Lease, LogStats, ParkedEvent, ProjectionRecord, ProjectionSnapshot, ProjectionStore,
        store::{check_lease, storable_reason},
    },
};

/// The embedded event store: everything in process memory, nothing on disk.
///
/// Meant for examples, tests and prototypes. Clones share one store. Appends are atomic: the
/// whole request is checked before anything is written, and the write itself cannot fail
/// half-way. A panic in another thread holding the lock cannot poison the store: the lock is
/// recovered, and since writes are all-or-nothing the data behind it is consistent.
///
/// Reads of the log filtered by category go through an index of each category's events, and
/// reads filtered by event types alone through an index of each event type's events. The
/// reads build them and keep them up to date (appends pay nothing for them): the first ones
/// index the log (at most 65,536 events each), the next ones what was appended since. An index
/// holds one `usize` per event, and is built only once a read needs it.
///
/// ```
/// use eventcore::Memory;
/// let store = Memory::new();
/// let same_store = store.clone();
/// # let _ = same_store;
/// ```
#[derive(Clone, Debug)]
pub struct Memory {
    inner: Arc<RwLock<Store>>,
    max_payload: Option<usize>,
    /// Set by [`Memory::with_max_request`].
    max_request: Option<usize>,
    /// Rung after every append that stored events: live readers wait on it.
    bell: LogBell,
    /// Checkpoints, leases and parked events of projections, by name.
    projections: Arc<Mutex<HashMap<String, ProjectionRow>>>,
    /// Where commands over the same streams take turns.
    queue: Arc<StreamQueue>,
    /// Snapshots of folded states, by key, each with when it was saved.
    snapshots: Arc<Mutex<Map<SnapshotKey, (StoredSnapshot, Instant)>>>,
    /// Where each category's events, and each event type's, are in the log, for reads that
    /// filter by them.
    indexes: Arc<Mutex<Indexes>>,
}

impl Default for Memory {
    fn default() -> Self {
        Self {
            inner: Arc::default(),
            max_payload: None,
            max_request: None,
            bell: LogWatch::channel().0,
            projections: Arc::default(),
            queue: Arc::default(),
            snapshots: Arc::default(),
            indexes: Arc::default(),
        }
    }
}

/// What the in-memory store keeps for one projection.
#[derive(Debug, Default)]
struct ProjectionRow {
    position: GlobalPosition,
    owner: Option<uuid::Uuid>,
    token: u64,
    until: Option<Instant>,
    /// One per position, in position order. A map, not a sorted list: retrying or discarding
    /// parked events oldest first (as the runner does) takes each from the front, which costs
    /// a shift of every later one in a list, quadratic over a long list.
    parked: BTreeMap<GlobalPosition, ParkedEvent>,
    /// Parked events discarded ([`ProjectionStore::discard_parked`]), in position order: never
    /// applied, as PostgreSQL keeps them.
    discarded: BTreeSet<GlobalPosition>,
    snapshot: Option<ProjectionSnapshot>,
}

impl ProjectionRow {
    /// Whether `lease` is the last one claimed. Not whether it ran out: nobody claimed it
    /// since, so its holder may still commit. In memory, what the handler did cannot be undone
    /// with a refused commit (the read model is the projection's value), so refusing would
    /// only make the runner claim its lease again, restart from the checkpoint before the
    /// event, and apply it to its value a second time.
    fn held_by(&self, lease: &Lease) -> bool {
        self.owner == Some(lease.owner) && self.token == lease.token
    }
}

/// What a projection's handler writes through on the in-memory store: nothing. Keep the read
/// model in the projection value itself; its checkpoint is kept in the store under the
/// projection's name (so a fresh projection value needs a fresh store or a new name).
///
/// ```
/// let _tx = eventcore::backend::MemoryTx;
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct MemoryTx;

/// How many events one [`Backend::read_log`] call looks at, at most, per event it may return
/// (so a filter that matches little cannot hold the store's lock for long).
const SCAN_PER_EVENT: usize = 16;

/// How many events one read filtered by category (or event type) indexes, at most: the first
/// such read of a long log indexes it over several reads (a reader past what is indexed looks
/// at the events themselves meanwhile), so that no read holds the store's lock for long.
#[cfg(not(test))]
const INDEX_PER_READ: usize = 1 << 16;
/// A few, in unit tests: the proptest of pages through the index then crosses its edge.
#[cfg(test)]
const INDEX_PER_READ: usize = 7;

/// Maps keyed by names users choose: foldhash, seeded per process (fast on short strings,
/// and not open to keys crafted to collide, as a fixed-seed hash would be).
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

#[derive(Debug, Default)]
struct Store {
    log: Vec<RecordedEvent>,
    /// Each stream's events, as indices into `log`: the first two inline, so that a new
    /// stream (most hold a few events) costs no allocation of its own.
    streams: Map<StreamId, smallvec::SmallVec<[usize; 2]>>,
    keys: Map<IdempotencyKey, Committed>,
    /// Every stored event's id: an id is stored once (PostgreSQL's unique index says the same).
    ids: EventIds,
}

/// Where each category's events are in the log, and each event type's (their indices, in
/// order), each index up to its own `upto`.
///
/// Brought up to the end of the log by the reads that filter by category (or, without
/// categories, by event type), not by appends, which pay nothing for it: a read indexes the
/// events appended since the last one did (up to [`INDEX_PER_READ`] of them), then finds its
/// page through the index rather than by looking at every event of the log (a projection of a
/// rare category, or a typed subscription to a rare event, used to look at the whole log to
/// find a few events). An index no read has needed is never built.
#[derive(Debug, Default)]
struct Indexes {
    categories: Index,
    event_types: Index,
}

/// The events of each key (a category, or an event type) up to `upto`, as indices into the log.
#[derive(Debug, Default)]
struct Index {
    upto: usize,
    at: Map<Box<str>, Vec<usize>>,
}

impl Indexes {
    /// The index a read with `filter` goes through, brought up to date as far as one read
    /// brings it, and the keys to look up in it (the filter's categories, or without them its
    /// event types); `None` when the filter has neither.
    fn for_filter<'f>(
        &mut self,
        filter: &'f LogFilter,
        log: &[RecordedEvent],
    ) -> Option<(&Index, &'f [Arc<str>])> {
        fn category(event: &RecordedEvent) -> &str {
            super::log::category_of(event.stream_id.as_str())
        }
        fn event_type(event: &RecordedEvent) -> &str {
            &event.event_type
        }
        match (filter.categories(), filter.event_types()) {
            ([], []) => None,
            ([], types) => {
                Some((self.event_types.catch_up(log, INDEX_PER_READ, event_type), types))
            }
            (categories, _) => {
                Some((self.categories.catch_up(log, INDEX_PER_READ, category), categories))
            }
        }
    }
}

impl Index {
    /// Indexes the events of `log` not indexed yet, at most `most` of them, under `key`.
    fn catch_up(
        &mut self,
        log: &[RecordedEvent],
        most: usize,
        key: impl Fn(&RecordedEvent) -> &str,
    ) -> &Self {
        let end = log.len().min(self.upto.saturating_add(most));
        for (i, event) in log.iter().enumerate().take(end).skip(self.upto) {
            let key = key(event);
            match self.at.get_mut(key) {
                Some(at) => at.push(i),
                None => {
                    self.at.insert(key.into(), vec![i]);
                }
            }
        }
        self.upto = self.upto.max(end);
        self
    }

    /// The indices from `start` on of the events of `keys` (each once), in order, at most
    /// `most`; and whether there may be more.
    fn from(&self, start: usize, keys: &[Arc<str>], most: usize) -> (Vec<usize>, bool) {
        let mut wanted: Vec<&str> = keys.iter().map(|c| &**c).collect();
        wanted.sort_unstable();
        wanted.dedup();
        let mut found = Vec::new();
        let mut more = false;
        for key in wanted {
            if let Some(at) = self.at.get(key) {
                let first = at.partition_point(|&i| i < start);
                more |= at.len() - first > most;
                found.extend(at[first..].iter().take(most));
            }
        }
        found.sort_unstable();
        more |= found.len() > most;
        found.truncate(most);
        (found, more)
    }
}

/// The ids of the stored events, as numbers.
///
/// Sorted, not hashed: ids made by this process are UUIDv7, in increasing order, so nearly
/// every new id goes at the end of `sorted` (one comparison and a push, where a hash set cost
/// about 200 instructions an event), and one made a little earlier by another command goes near
/// it. Ids that would go far from the end (written by the caller: events imported from another
/// store, UUIDv4) go to `scattered`, a tree: inserting them into the vector would move its
/// tail each time, which made an import of n such events take time in n squared.
#[derive(Debug, Default)]
struct EventIds {
    sorted: Vec<u128>,
    scattered: std::collections::BTreeSet<u128>,
    /// The greatest id in `scattered`, kept beside it so that the common case (an id above
    /// every other) costs two comparisons.
    scattered_top: Option<u128>,
}

impl EventIds {
    /// How far from the end of `sorted` an id may go: an insertion there moves at most this
    /// many ids.
    const NEAR_END: usize = 64;

    /// Records `id`; false (and nothing recorded) when it is recorded already.
    fn insert(&mut self, id: u128) -> bool {
        let above_all = self.sorted.last().is_none_or(|&last| id > last)
            && self.scattered_top.is_none_or(|top| id > top);
        if above_all {
            self.sorted.push(id);
            return true;
        }
        match self.sorted.binary_search(&id) {
            Ok(_) => false,
            Err(at) if self.sorted.len() - at <= Self::NEAR_END => {
                let new = !self.scattered.contains(&id);
                if new {
                    self.sorted.insert(at, id);
                }
                new
            }
            Err(_) => {
                let new = self.scattered.insert(id);
                self.scattered_top = self.scattered_top.max(Some(id));
                new
            }
        }
    }

    /// Forgets `id` (recorded by the request being refused).
    fn remove(&mut self, id: u128) {
        match self.sorted.binary_search(&id) {
            Ok(at) => {
                self.sorted.remove(at);
            }
            Err(_) => {
                if self.scattered.remove(&id) {
                    self.scattered_top = self.scattered.last().copied();
                }
            }
        }
    }
}

impl Memory {
    /// The limit on an event's size unless [`Memory::with_max_payload`] sets another: 1 MiB.
    pub const DEFAULT_MAX_PAYLOAD: usize = 1 << 20;
    /// The limit on a whole append's size unless [`Memory::with_max_request`] sets another:
    /// 64 MiB, as on PostgreSQL (or the limit on one event, when that is set higher: an event
    /// the store takes alone fits in an append).
    pub const DEFAULT_MAX_REQUEST: usize = super::request::DEFAULT_MAX_REQUEST;

    /// An empty store.
    ///
    /// ```
    /// let _store = eventcore::Memory::new();
    /// ```
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the largest accepted event, in bytes: its payload, event type and custom metadata
    /// (as JSON text) together. Larger events fail with
    /// [`StoreError::PayloadTooLarge`](crate::backend::StoreError::PayloadTooLarge).
    ///
    /// ```
    /// let _store = eventcore::Memory::new().with_max_payload(4096);
    /// ```
    #[must_use]
    pub fn with_max_payload(mut self, bytes: usize) -> Self {
        self.max_payload = Some(bytes);
        self
    }

    /// Sets the largest accepted append, in bytes: the payloads, event types and custom
    /// metadata (as JSON text) of all its events together. Larger requests fail whole with
    /// [`StoreError::RequestTooLarge`](crate::backend::StoreError::RequestTooLarge), a final
    /// error: a command that decides that much is refused rather than filling memory.
    ///
    /// ```
    /// let _store = eventcore::Memory::new().with_max_payload(4096).with_max_request(64 * 1024);
    /// ```
    #[must_use]
    pub fn with_max_request(mut self, bytes: usize) -> Self {
        self.max_request = Some(bytes);
        self
    }

    /// The number of events stored.
    ///
    /// ```
    /// assert_eq!(eventcore::Memory::new().len(), 0);
    /// ```
    #[must_use]
    pub fn len(&self) -> usize {
        self.read_lock().log.len()
    }

    /// Whether no event is stored.
    ///
    /// ```
    /// assert!(eventcore::Memory::new().is_empty());
    /// ```
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read_lock(&self) -> std::sync::RwLockReadGuard<'_, Store> {
        // Writes are all-or-nothing (checked before any mutation), so a poisoned lock still
        // guards consistent data.
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_lock(&self) -> std::sync::RwLockWriteGuard<'_, Store> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(test)]
    fn poison(&self) {
        let inner = Arc::clone(&self.inner);
        let _ = std::thread::spawn(move || {
            let _guard = inner.write().unwrap_or_else(PoisonError::into_inner);
            panic!("deliberate panic while holding the store lock");
        })
        .join();
    }
}

impl Store {
    /// The events of stream `id` after version `after` (all of them after
    /// [`StreamVersion::EMPTY`]), with the stream's current version.
    fn stream_after(&self, id: &StreamId, after: StreamVersion) -> StreamEvents {
        let indices = self.streams.get(id).map_or(&[][..], |v| v.as_slice());
        // Version v is at index v - 1.
        let from = usize::try_from(after.get()).unwrap_or(usize::MAX).min(indices.len());
        let events = indices[from..].iter().map(|&i| self.log[i].clone()).collect();
        StreamEvents::new(id.clone(), StreamVersion::new(indices.len() as u64), events)
    }

    fn version_of(&self, stream: &StreamId) -> StreamVersion {
        StreamVersion::new(self.streams.get(stream).map_or(0, |v| v.len() as u64))
    }

    fn append(&mut self, request: AppendRequest) -> Result<Committed, StoreError> {
        if let Some(key) = &request.idempotency_key {
            if let Some(done) = self.keys.get(key) {
                let mut done = done.clone();
                done.replayed = true;
                return Ok(done);
            }
        }
        // Each expected stream in request order, its version and then the event named there if
        // any: the first that fails is the conflict reported, as on PostgreSQL. The named events
        // are looked up by stream, hashed past a handful.
        let named: Option<Map<&StreamId, (&StreamVersion, &crate::EventId)>> =
            (request.expected_events.len() > 16)
                .then(|| request.expected_events.iter().map(|(s, v, id)| (s, (v, id))).collect());
        for (stream, expected) in &request.expected {
            let actual = self.version_of(stream);
            if actual != *expected {
                return Err(Conflict { stream: stream.clone(), expected: *expected, actual }.into());
            }
            let found = match &named {
                Some(named) => named.get(stream).copied(),
                None => request
                    .expected_events
                    .iter()
                    .find(|(s, ..)| s == stream)
                    .map(|(_, v, id)| (v, id)),
            };
            let Some((version, id)) = found else { continue };
            // `validate` made sure the stream is expected at `version`, above 0, which it is
            // now: version v is at index v - 1.
            let held = (version.get().checked_sub(1))
                .and_then(|at| usize::try_from(at).ok())
                .and_then(|at| self.streams.get(stream)?.get(at).copied())
                .map(|i| self.log[i].event_id());
            if held != Some(*id) {
                let version = *version;
                return Err(Conflict {
                    stream: stream.clone(),
                    expected: version,
                    actual: version,
                }
                .into());
            }
        }
        self.take_ids(&request)?;
        let count = request.event_count() as u64;
        let first = self.log.len() as u64 + 1;
        // Positions and versions are bounded by the log length, far below u64::MAX.
        let mut position = first;
        let mut new_versions = Vec::with_capacity(request.writes.len());
        let key = request.idempotency_key;
        for (stream, events) in request.writes {
            // `write(stream, vec![])` writes nothing: the stream was only read.
            if events.is_empty() {
                continue;
            }
            let indices = self.streams.entry(stream.clone()).or_default();
            for event in events {
                let version = StreamVersion::new(indices.len() as u64 + 1);
                indices.push(self.log.len());
                self.log.push(RecordedEvent::from_new(
                    stream.clone(),
                    version,
                    GlobalPosition::new(position),
                    event,
                ));
                position += 1;
            }
            let reached = StreamVersion::new(indices.len() as u64);
            match new_versions.iter_mut().find(|(s, _)| *s == stream) {
                Some((_, v)) => *v = reached,
                None => new_versions.push((stream, reached)),
            }
        }
        let positions = (count > 0)
            .then(|| (GlobalPosition::new(first), GlobalPosition::new(first + count - 1)));
        let committed = Committed::new(new_versions, positions);
        // An append without events records no key: it applied nothing (see
        // `AppendRequest::idempotency_key`).
        if let Some(key) = key.filter(|_| count > 0) {
            // Kept with the fingerprint, which a replay gives back.
            let stored = Committed { fingerprint: request.fingerprint, ..committed.clone() };
            self.keys.insert(key, stored);
        }
        Ok(committed)
    }

    /// Records the ids of the request's events, or none of them when one is stored already (or
    /// comes twice in the request).
    fn take_ids(&mut self, request: &AppendRequest) -> Result<(), StoreError> {
        let events = || request.writes.iter().flat_map(|(_, events)| events);
        for (taken, event) in events().enumerate() {
            if !self.ids.insert(number(event)) {
                for event in events().take(taken) {
                    self.ids.remove(number(event));
                }
                return Err(StoreError::InvalidAppend(format!(
                    "an event id of the request is already stored: {}",
                    event.metadata.event_id
                )));
            }
        }
        Ok(())
    }
}

/// An event's id as the number `Store::ids` keeps.
fn number(event: &crate::NewEvent) -> u128 {
    event.metadata.event_id.as_uuid().as_u128()
}

impl Backend for Memory {
    async fn read(&self, streams: &[StreamId]) -> Result<Vec<StreamEvents>, StoreError> {
        let store = self.read_lock();
        Ok(streams.iter().map(|id| store.stream_after(id, StreamVersion::EMPTY)).collect())
    }

    async fn read_after(
        &self,
        streams: &[(StreamId, StreamVersion)],
    ) -> Result<Vec<StreamEvents>, StoreError> {
        let store = self.read_lock();
        Ok(streams.iter().map(|(id, after)| store.stream_after(id, *after)).collect())
    }

    async fn load_snapshot(&self, key: &SnapshotKey) -> Result<Option<StoredSnapshot>, StoreError> {
        Ok(self.snapshot_map().get(key).map(|(snapshot, _)| snapshot.clone()))
    }

    async fn save_snapshot(&self, snapshot: StoredSnapshot) -> Result<(), StoreError> {
        self.snapshot_map().insert(snapshot.key.clone(), (snapshot, Instant::now()));
        Ok(())
    }

    async fn prune_snapshots(&self, older_than: Duration) -> Result<u64, StoreError> {
        // Nothing was saved before the clock's start.
        let Some(cutoff) = Instant::now().checked_sub(older_than) else { return Ok(0) };
        let mut map = self.snapshot_map();
        let before = map.len();
        map.retain(|_, (_, saved)| *saved > cutoff);
        Ok(u64::try_from(before - map.len()).unwrap_or(u64::MAX))
    }

    async fn append(&self, request: AppendRequest) -> Result<Committed, StoreError> {
        let max_payload = self.max_payload.unwrap_or(Self::DEFAULT_MAX_PAYLOAD);
        let max_request = super::request::max_request(self.max_request, max_payload);
        request.validate(max_payload, max_request)?;
        let committed = self.write_lock().append(request)?;
        if committed.positions.is_some() && !committed.replayed {
            self.bell.ring();
        }
        Ok(committed)
    }

    async fn find_committed(&self, key: &IdempotencyKey) -> Result<Option<Committed>, StoreError> {
        Ok(self.read_lock().keys.get(key).map(|done| Committed { replayed: true, ..done.clone() }))
    }

    fn stream_queue(&self) -> &StreamQueue {
        &self.queue
    }

    async fn read_log(
        &self,
        after: GlobalPosition,
        filter: &LogFilter,
        limit: usize,
    ) -> Result<LogPage, StoreError> {
        filter.check().map_err(StoreError::InvalidFilter)?;
        let store = self.read_lock();
        // Position p is stored at index p - 1, and positions have no gaps in this store; an
        // append is stored whole under the lock, so nothing is ever in flight.
        let start = usize::try_from(after.get()).unwrap_or(usize::MAX).min(store.log.len());
        let scan = if filter.is_all() { limit } else { limit.saturating_mul(SCAN_PER_EVENT) };
        let mut entries = Vec::with_capacity(limit.min(store.log.len() - start));
        let mut checked_to = store.log.len();
        // Through the category index when the filter names categories, else through the
        // event-type index when it names event types, if the index reaches where the read
        // starts (it is brought up to date a bounded stretch per read): only the events of
        // those categories, or of those types, are looked at.
        let indexed = (!filter.is_all())
            .then(|| {
                let mut indexes = self.indexes.lock().unwrap_or_else(PoisonError::into_inner);
                let (index, keys) = indexes.for_filter(filter, &store.log)?;
                (index.upto > start || index.upto == store.log.len())
                    .then(|| (index.from(start, keys, scan), index.upto))
            })
            .flatten();
        if let Some(((candidates, more), upto)) = indexed {
            // What is not indexed yet is for the next read.
            checked_to = upto;
            let mut looked_at = candidates.len();
            for (n, &i) in candidates.iter().enumerate() {
                if entries.len() == limit {
                    checked_to = i;
                    looked_at = n;
                    break;
                }
                let event = &store.log[i];
                if filter.matches(event) {
                    entries.push(Ok(event.clone()));
                }
            }
            if more && looked_at == candidates.len() {
                // Every candidate looked at, and there may be others after the last.
                checked_to = candidates.last().map_or(start, |&i| i + 1);
            }
        } else {
            for (i, event) in store.log[start..].iter().enumerate().take(scan) {
                if entries.len() == limit {
                    checked_to = start + i;
                    break;
                }
                if filter.matches(event) {
                    entries.push(Ok(event.clone()));
                }
                checked_to = start + i + 1;
            }
        }
        // A page of no events looks at nothing: not caught up, as on every backend.
        if limit == 0 {
            checked_to = start;
        }
        let caught_up = limit > 0 && checked_to == store.log.len();
        Ok(LogPage::new(entries, GlobalPosition::new(checked_to as u64).max(after), caught_up))
    }

    fn watch_log(&self) -> LogWatch {
        self.bell.watch()
    }
}

impl Memory {
    fn snapshot_map(
        &self,
    ) -> std::sync::MutexGuard<'_, Map<SnapshotKey, (StoredSnapshot, Instant)>> {
        // Every change is one insert, or one `retain` whose test cannot panic: none stops
        // half-way.
        self.snapshots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn projection_rows(&self) -> std::sync::MutexGuard<'_, HashMap<String, ProjectionRow>> {
        // Every change below is one assignment group that cannot panic half-way.
        self.projections.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ProjectionStore for Memory {
    type Tx = MemoryTx;
    const TX_ROLLS_BACK: bool = false;

    async fn claim(
        &self,
        name: &str,
        owner: uuid::Uuid,
        lease: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        check_lease(lease).map_err(StoreError::InvalidLease)?;
        let mut rows = self.projection_rows();
        let row = rows.entry(name.to_owned()).or_default();
        let free = row.owner.is_none()
            || row.owner == Some(owner)
            || row.until.is_none_or(|t| t <= Instant::now());
        if !free {
            return Ok(None);
        }
        row.owner = Some(owner);
        row.token += 1;
        row.until = Some(Instant::now() + lease);
        Ok(Some(Lease::new(name, owner, row.token, row.position)))
    }

    async fn renew(&self, lease: &Lease, duration: Duration) -> Result<bool, StoreError> {
        check_lease(duration).map_err(StoreError::InvalidLease)?;
        let mut rows = self.projection_rows();
        match rows.get_mut(&*lease.name) {
            Some(row) if row.owner == Some(lease.owner) && row.token == lease.token => {
                row.until = Some(Instant::now() + duration);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        let mut rows = self.projection_rows();
        if let Some(row) = rows.get_mut(&*lease.name) {
            if row.owner == Some(lease.owner) && row.token == lease.token {
                row.owner = None;
                row.until = None;
            }
        }
        Ok(())
    }

    async fn begin(&self, _lease: &Lease) -> Result<MemoryTx, StoreError> {
        Ok(MemoryTx)
    }

    async fn commit(
        &self,
        _tx: MemoryTx,
        lease: &Lease,
        position: GlobalPosition,
        parked: Option<ParkedEvent>,
        snapshot: Option<ProjectionSnapshot>,
    ) -> Result<bool, StoreError> {
        let mut rows = self.projection_rows();
        match rows.get_mut(&*lease.name) {
            Some(row) if row.held_by(lease) => {
                row.position = row.position.max(position);
                // Kept in position order, once per position (the first parked there stays), as
                // PostgreSQL keys them.
                if let Some(mut parked) = parked {
                    let discarded = row.discarded.contains(&parked.position);
                    if let (std::collections::btree_map::Entry::Vacant(at), false) =
                        (row.parked.entry(parked.position), discarded)
                    {
                        if let std::borrow::Cow::Owned(error) = parked.storable_error() {
                            parked.error = error;
                        }
                        parked.parked_at = Some(Timestamp::now());
                        at.insert(parked);
                    }
                }
                if snapshot.is_some() {
                    row.snapshot = snapshot;
                }
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn retried(
        &self,
        _tx: MemoryTx,
        lease: &Lease,
        position: GlobalPosition,
        outcome: Result<(), String>,
    ) -> Result<bool, StoreError> {
        let mut rows = self.projection_rows();
        let Some(row) = rows.get_mut(&*lease.name).filter(|row| row.held_by(lease)) else {
            return Ok(false);
        };
        if let std::collections::btree_map::Entry::Occupied(mut at) = row.parked.entry(position) {
            match outcome {
                Ok(()) => {
                    at.remove();
                }
                Err(reason) => {
                    at.get_mut().error = match storable_reason(&reason) {
                        std::borrow::Cow::Owned(escaped) => escaped,
                        std::borrow::Cow::Borrowed(_) => reason,
                    };
                }
            }
        }
        Ok(true)
    }

    async fn discard_parked(
        &self,
        name: &str,
        position: GlobalPosition,
    ) -> Result<bool, StoreError> {
        let mut rows = self.projection_rows();
        let Some(row) = rows.get_mut(name) else { return Ok(false) };
        if row.parked.remove(&position).is_none() {
            return Ok(false);
        }
        row.discarded.insert(position);
        Ok(true)
    }

    async fn discarded(&self, name: &str) -> Result<Vec<GlobalPosition>, StoreError> {
        Ok(self
            .projection_rows()
            .get(name)
            .map(|row| row.discarded.iter().copied().collect())
            .unwrap_or_default())
    }

    async fn projections(&self) -> Result<Vec<ProjectionRecord>, StoreError> {
        let now = Instant::now();
        let rows = self.projection_rows();
        let mut all: Vec<ProjectionRecord> = rows
            .iter()
            .map(|(name, row)| {
                let mut record = ProjectionRecord::new(name.as_str(), row.position);
                if let (Some(owner), Some(until)) = (row.owner, row.until.filter(|t| *t > now)) {
                    record.holder = Some(owner);
                    record.lease_left = Some(until - now);
                }
                record.parked = row.parked.len() as u64;
                record
            })
            .collect();
        all.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    async fn checkpoint(&self, name: &str) -> Result<Option<GlobalPosition>, StoreError> {
        Ok(self.projection_rows().get(name).map(|row| row.position))
    }

    async fn parked(&self, name: &str) -> Result<Vec<ParkedEvent>, StoreError> {
        Ok(self
            .projection_rows()
            .get(name)
            .map(|row| row.parked.values().cloned().collect())
            .unwrap_or_default())
    }

    async fn snapshot(&self, name: &str) -> Result<Option<ProjectionSnapshot>, StoreError> {
        Ok(self.projection_rows().get(name).and_then(|row| row.snapshot.clone()))
    }

    async fn log_stats(&self, after: GlobalPosition, limit: u64) -> Result<LogStats, StoreError> {
        let len = self.read_lock().log.len() as u64;
        Ok(LogStats::counted(GlobalPosition::new(len), len.saturating_sub(after.get()), limit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CorrelationId, EventMetadata, NewEvent, Payload};

    fn event() -> NewEvent {
        NewEvent::new(
            "T",
            1,
            Payload::to_json(&1).unwrap(),
            EventMetadata::new(CorrelationId::new()),
        )
    }

    proptest::proptest! {
        /// The id index answers as a set would, whatever order ids come in: in order, a
        /// little out of order, or anywhere (imported ids), with some forgotten again.
        #[test]
        fn the_id_index_is_a_set(
            ops in proptest::collection::vec((0u128..400, proptest::bool::weighted(0.15)), 0..600),
        ) {
            let mut ids = EventIds::default();
            let mut model = std::collections::HashSet::new();
            for (i, (offset, forget)) in ops.into_iter().enumerate() {
                // Mostly increasing (an id near the current count), some far below it.
                let id = (i as u128).saturating_sub(offset);
                if forget {
                    ids.remove(id);
                    model.remove(&id);
                } else {
                    proptest::prop_assert_eq!(ids.insert(id), model.insert(id));
                }
                proptest::prop_assert_eq!(ids.sorted.len() + ids.scattered.len(), model.len());
                proptest::prop_assert_eq!(ids.scattered_top, ids.scattered.last().copied());
            }
            for id in 0..600 {
                let held = ids.sorted.binary_search(&id).is_ok() || ids.scattered.contains(&id);
                proptest::prop_assert_eq!(held, model.contains(&id));
            }
        }
    }

    #[test]
    fn ids_far_below_the_newest_do_not_move_the_sorted_ids() {
        // Imported events, newest first: each id is below every other. Inserted into the
        // sorted vector, each would move all the ids before it (time in n squared).
        let mut ids = EventIds::default();
        for id in (0..10_000u128).rev() {
            assert!(ids.insert(id));
        }
        assert!(ids.sorted.len() <= EventIds::NEAR_END + 1, "{}", ids.sorted.len());
        assert!(!ids.insert(5) && !ids.insert(9_999) && !ids.insert(9_990));
        assert!(ids.insert(10_000));
    }

    /// Reads a page of `filter` after `at`, checks it, adds its positions to `read` and moves
    /// `at` to where it checked the log to; whether it caught up.
    async fn page(
        store: &Memory,
        filter: &LogFilter,
        limit: usize,
        at: &mut GlobalPosition,
        read: &mut Vec<u64>,
    ) -> bool {
        let from = *at;
        let page = store.read_log(from, filter, limit).await.unwrap();
        assert!(page.entries.len() <= limit);
        for entry in &page.entries {
            let position = entry.as_ref().unwrap().position;
            assert!(position > from && position <= page.checked_to);
            read.push(position.get());
        }
        assert!(page.checked_to >= from);
        *at = page.checked_to;
        page.caught_up
    }

    proptest::proptest! {
        // More cases than the default: the pages that cross a key's edge, or the edge of a
        // page's candidates, need the index ahead of the reader and a rare type with a single
        // category, about one case in a few hundred.
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2_000))]
        /// Paging through a filter of categories (read through the category index, caught up
        /// by the reads between appends), or of event types alone (through the event-type
        /// index), finds exactly the events a look at every event of the log finds, each once
        /// and in order, whatever the page size, where the reads start, which categories
        /// (some holding nothing, some given twice) and event types (one that no event has).
        #[test]
        fn pages_through_the_indexes_hold_what_a_look_at_every_event_finds(
            // Event type 1 is rare: a filter of it looks at many events of its categories
            // for each it returns. Type 2 is never appended.
            batches in proptest::collection::vec(
                proptest::collection::vec(
                    (0usize..4, proptest::prop_oneof![12 => proptest::strategy::Just(0usize), 1 => proptest::strategy::Just(1usize)]),
                    0..60,
                ),
                1..6,
            ),
            wanted in proptest::collection::vec(0usize..5, 0..4),
            types in proptest::collection::vec(0usize..3, 0..3),
            limit in 1usize..8,
            after in 0u64..40,
            // Whether other readers keep the index up to date between batches; else it lags
            // the log, a few events per read.
            ahead in proptest::bool::ANY,
        ) {
            const CATEGORIES: [&str; 5] = ["a", "ab", "b", "c", "none"];
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(async {
                let store = Memory::new();
                let mut filter = LogFilter::all();
                for c in &wanted {
                    filter = filter.category(CATEGORIES[*c]);
                }
                for t in &types {
                    filter = filter.event_type(format!("T{t}"));
                }
                let mut read = Vec::new();
                let mut at = GlobalPosition::new(after);
                for (b, batch) in batches.iter().enumerate() {
                    for (n, (c, t)) in batch.iter().enumerate() {
                        let stream = StreamId::try_new(format!("{}-{b}x{n}", CATEGORIES[*c])).unwrap();
                        let mut e = event();
                        e.event_type = format!("T{t}").into();
                        let new = AppendRequest::new().expect(stream.clone(), StreamVersion::EMPTY);
                        store.append(new.write(stream, vec![e])).await.unwrap();
                    }
                    if ahead {
                        // Reads at the end of the log index it, a stretch each.
                        let end = GlobalPosition::new(store.read_lock().log.len() as u64);
                        for _ in 0..=batch.len().div_ceil(INDEX_PER_READ) {
                            store.read_log(end, &filter, 1).await.unwrap();
                        }
                    }
                    page(&store, &filter, limit, &mut at, &mut read).await;
                }
                while !page(&store, &filter, limit, &mut at, &mut read).await {}
                let all = store.read_log(GlobalPosition::START, &LogFilter::all(), 1_000).await.unwrap();
                let expected: Vec<u64> = (all.entries.iter().map(|e| e.as_ref().unwrap()))
                    .filter(|e| e.position.get() > after && filter.matches(e))
                    .map(|e| e.position.get())
                    .collect();
                assert_eq!(read, expected);
            });
        }
    }

    /// A page filtered by event types alone reaches the next event of those types however
    /// many events of other types lie before it (through the event-type index), and so does a
    /// page of a category with event types (through the category index); a window of the log
    /// (16 events for a page of one) would stop short and leave the reader many calls from it.
    /// The indexes are up to date, as they are for readers that follow the log.
    #[tokio::test]
    async fn a_page_of_rare_events_reaches_its_next_one_past_any_number_of_others() {
        let store = Memory::new();
        let append = |stream: &str, event_type: &str| {
            let stream = StreamId::try_new(stream).unwrap();
            let mut e = event();
            e.event_type = event_type.into();
            let new = AppendRequest::new().expect(stream.clone(), StreamVersion::EMPTY);
            store.append(new.write(stream, vec![e]))
        };
        for n in 0..100 {
            append(&format!("common-{n}"), "Common").await.unwrap();
            append(&format!("another-{n}"), "Other").await.unwrap();
        }
        // Readers of both kinds, caught up (in unit tests a read indexes only a few events).
        for filter in [LogFilter::all().event_type("Other"), LogFilter::all().category("other")] {
            let mut at = GlobalPosition::START;
            while !page(&store, &filter, 1, &mut at, &mut Vec::new()).await {}
        }
        append("rare-x", "Rare").await.unwrap();
        for filter in [
            LogFilter::all().event_type("Rare"),
            LogFilter::all().category("rare").event_type("Rare"),
            LogFilter::all().event_type("Rare").event_type("Absent"),
        ] {
            let page = store.read_log(GlobalPosition::START, &filter, 1).await.unwrap();
            let found: Vec<_> =
                page.entries.iter().map(|e| e.as_ref().unwrap().stream_id.to_string()).collect();
            assert_eq!(found, ["rare-x"], "{filter:?}");
            let next = store.read_log(page.checked_to, &filter, 1).await.unwrap();
            assert!(next.entries.is_empty() && next.caught_up, "{filter:?}: {next:?}");
        }
    }

    #[tokio::test]
    async fn a_poisoned_lock_does_not_break_the_store() {
        let store = Memory::new();
        let id = StreamId::try_new("s").unwrap();
        store
            .append(
                AppendRequest::new()
                    .expect(id.clone(), StreamVersion::EMPTY)
                    .write(id.clone(), vec![event()]),
            )
            .await
            .unwrap();
        store.poison();
        assert!(store.inner.is_poisoned());
        let read = store.read(std::slice::from_ref(&id)).await.unwrap();
        assert_eq!(read[0].version, StreamVersion::new(1));
        store
            .append(
                AppendRequest::new()
                    .expect(id.clone(), StreamVersion::new(1))
                    .write(id.clone(), vec![event()]),
            )
            .await
            .unwrap();
        assert_eq!(store.len(), 2);
    }

    #[tokio::test]
    async fn a_conflict_on_a_later_stream_writes_nothing() {
        let store = Memory::new();
        let a = StreamId::try_new("a").unwrap();
        let b = StreamId::try_new("b").unwrap();
        let err = store
            .append(
                AppendRequest::new()
                    .expect(a.clone(), StreamVersion::EMPTY)
                    .expect(b.clone(), StreamVersion::new(5))
                    .write(a.clone(), vec![event()])
                    .write(b, vec![event()]),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)));
        assert!(store.is_empty());
    }

    /// Parked events retried or discarded in any order leave the others as they were, listed in
    /// position order; a discarded position is never parked again.
    #[tokio::test]
    async fn parked_events_leave_in_any_order_and_stay_in_position_order() {
        let store = Memory::new();
        let lease = store.claim("p", uuid::Uuid::now_v7(), Duration::from_secs(60)).await;
        let lease = lease.unwrap().unwrap();
        let at = GlobalPosition::new;
        for i in [5, 1, 3, 2, 4, 6, 3] {
            let parked = ParkedEvent::new(at(i), None, "s", format!("first at {i}"));
            assert!(store.commit(MemoryTx, &lease, at(i), Some(parked), None).await.unwrap());
        }
        let positions =
            |p: Vec<ParkedEvent>| p.iter().map(|p| p.position.get()).collect::<Vec<_>>();
        assert_eq!(positions(store.parked("p").await.unwrap()), [1, 2, 3, 4, 5, 6]);
        assert_eq!(store.parked("p").await.unwrap()[2].error, "first at 3");
        // Oldest first, as the runner retries them; then one from the middle.
        assert!(store.retried(MemoryTx, &lease, at(1), Ok(())).await.unwrap());
        assert!(store.retried(MemoryTx, &lease, at(4), Err("again".into())).await.unwrap());
        assert!(store.retried(MemoryTx, &lease, at(2), Ok(())).await.unwrap());
        assert!(store.discard_parked("p", at(6)).await.unwrap());
        assert!(store.discard_parked("p", at(3)).await.unwrap());
        assert!(!store.discard_parked("p", at(3)).await.unwrap());
        let left = store.parked("p").await.unwrap();
        assert_eq!(positions(left.clone()), [4, 5]);
        assert_eq!(left[0].error, "again");
        assert_eq!(store.discarded("p").await.unwrap(), [at(3), at(6)]);
        let parked = ParkedEvent::new(at(3), None, "s", "once more");
        assert!(store.commit(MemoryTx, &lease, at(3), Some(parked), None).await.unwrap());
        assert_eq!(positions(store.parked("p").await.unwrap()), [4, 5]);
        assert_eq!(store.projections().await.unwrap()[0].parked, 2);
    }
}
