//! The executor's optional in-process stream cache.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex, MutexGuard},
};

use lru::LruCache;

use crate::{
    GlobalPosition, RecordedEvent, StreamId, StreamVersion,
    backend::{AppendRequest, Committed, StreamEvents},
    command::DecodedEvents,
};

/// Streams kept in memory between executions, so that a command over streams the process has
/// seen skips the read and costs one round trip (the append) instead of two.
///
/// Give one to [`Executor::with_cache`](crate::Executor::with_cache). The executor then
///
/// - serves each stream it needs from the cache when it is there, and reads only the others;
/// - stores what it reads, and, after an append commits, adds the new events to the cached
///   streams they were written to;
/// - forgets every stream of an append that fails (a conflict, or a store error after which
///   nobody knows what was written). An execution cut short by its timeout forgets nothing; its
///   entries are then merely stale, which is caught as below.
///
/// **Why this is safe.** A cached stream may be behind the store: another process, or an executor
/// without this cache, may have appended to it since. The append checks the version of every stream
/// the command read, cached or not, and for each stream the cache served, that the store still
/// holds the cached copy's last event at that version
/// ([`AppendRequest::expect_event`](crate::backend::AppendRequest::expect_event)), so a decision
/// made on a stale stream never commits: it fails with a conflict, the executor forgets the streams
/// and, when the conflict is on a stream the cache served, decides again at once on fresh reads
/// (not a retry under the policy: the cache was behind, nothing contended; a conflict on a stream
/// read fresh is contention, and goes to the retry policy as usual). A decision that writes
/// nothing, or a rejection, is never checked by an append, so when either was made with a cached
/// stream the executor reads every stream fresh and decides again before answering: a stale cache
/// never makes a command fail or do nothing when the store would have let it succeed.
///
/// **Size.** The cache holds at most `max_events` events (a stream weighs its event count plus
/// one) and evicts the least recently used streams to stay under it; a stream heavier than the
/// whole cache is not kept. Events are shared with the executions that use them, not copied.
///
/// **Decoded events.** Each cached stream also keeps its events decoded, as the event type of
/// the slot that last folded it, and lends them to [`Fold`](crate::Fold), which borrows its
/// event: a command over a cached stream decodes only the events added since the stream was
/// last folded. Events are immutable and a stream only grows, so the decoded copy stays valid
/// while the stream is extended by appends or replaced by a newer read; each decoded event is
/// lent only for the stored event it was decoded from (same event id). The copy holds one
/// entry per stored event, upcast ([`Upcast`](crate::Upcast)): nothing for a dropped event, the
/// parts of a split one together, so it lines up with the stream's versions. It costs memory
/// besides the stored events (the limit counts events, not bytes).
///
/// Clones of a `StreamCache` share one cache, so several executors can use the same one, as
/// long as they all use **the same store**: entries are keyed by stream id alone, and two
/// stores (two tenants' schemas, say) holding a stream at the same version would pass each
/// other's version checks. Use one cache per store.
///
/// **Restores and failovers.** If the store loses events underneath the cache (restored from a
/// backup, or failed over to an asynchronous replica that never received the last commits) and
/// other writers then bring a stream back to the version the cache holds, the cached copy's last
/// event is not the one the store holds at that version: the append names it, the store refuses it
/// as a conflict, and the executor decides again on a fresh read, which replaces the entry. Any
/// fresh read replaces a cached copy that holds another event at the read's last version (a
/// decision on cached streams that is a rejection, or writes nothing, is checked on fresh reads
/// too, before it counts). So the cache needs nothing for correctness after such an event;
/// [`clear`](Self::clear)ing it saves one wasted append per stale stream. (A store that lost events
/// and was not written to since holds the stream at a lower version: an ordinary conflict.) The
/// stream queue's hand-over and snapshots check event ids too.
///
/// ```
/// use eventcore::{Executor, Memory, StreamCache};
///
/// let cache = StreamCache::new(100_000);
/// let executor = Executor::new(Memory::new()).with_cache(cache.clone());
/// assert!(cache.is_empty());
/// # let _ = executor;
/// ```
#[derive(Clone)]
pub struct StreamCache {
    inner: Arc<Mutex<Inner>>,
    assume_new: bool,
}

/// Whether `cached` and `read` are copies of one stream, the longer extending the shorter: the
/// shorter's last event is the longer's event at that version. (Events are immutable and a
/// stream only grows, so two copies that agree there agree on everything before.)
fn extends(cached: &StreamEvents, read: &StreamEvents) -> bool {
    let (short, long) =
        if cached.version <= read.version { (cached, read) } else { (read, cached) };
    let Some(last) = short.events.last() else {
        return true;
    };
    let at = usize::try_from(last.version.get().saturating_sub(1)).ok();
    at.and_then(|i| long.events.get(i))
        .is_some_and(|e| e.version == last.version && e.event_id() == last.event_id())
}

/// A cached stream: its events, and their decoded copy (see [`DecodedEvents`]), which stays
/// with the stream id while the events are extended or replaced by a newer read.
#[derive(Clone)]
pub(crate) struct Entry {
    pub(crate) stream: Arc<StreamEvents>,
    pub(crate) decoded: Arc<DecodedEvents>,
}

struct Inner {
    streams: LruCache<StreamId, Entry>,
    /// Sum of the weights of `streams`.
    weight: usize,
    max_weight: usize,
}

/// What a cached stream counts against the limit.
fn weight(stream: &StreamEvents) -> usize {
    stream.events.len() + 1
}

impl Inner {
    fn remove(&mut self, id: &StreamId) -> Option<Entry> {
        let old = self.streams.pop(id)?;
        self.weight -= weight(&old.stream);
        Some(old)
    }

    /// Caches `stream` with `decoded`, its decoded copy, replacing any entry of the same
    /// stream; answers the entry, or `None` when the stream is heavier than the whole cache.
    fn put(&mut self, stream: Arc<StreamEvents>, decoded: Arc<DecodedEvents>) -> Option<Entry> {
        self.remove(&stream.stream_id);
        let w = weight(&stream);
        if w > self.max_weight {
            return None;
        }
        while self.weight + w > self.max_weight {
            match self.streams.pop_lru() {
                Some((_, old)) => self.weight -= weight(&old.stream),
                None => break,
            }
        }
        self.weight += w;
        let entry = Entry { stream, decoded };
        self.streams.put(entry.stream.stream_id.clone(), entry.clone());
        Some(entry)
    }
}

impl StreamCache {
    /// A cache holding at most `max_events` events.
    ///
    /// ```
    /// let cache = eventcore::StreamCache::new(10_000);
    /// assert_eq!(cache.events(), 0);
    /// ```
    #[must_use]
    pub fn new(max_events: usize) -> Self {
        let inner = Inner { streams: LruCache::unbounded(), weight: 0, max_weight: max_events };
        Self { inner: Arc::new(Mutex::new(inner)), assume_new: false }
    }

    /// Takes streams the cache does not hold to be empty, instead of reading them.
    ///
    /// For commands that create streams (a transfer's own record, a new order), this saves the
    /// read that would only find nothing, so such a command costs one round trip too. The
    /// guess is checked like any cached stream: the append expects the stream empty and fails
    /// with a conflict if it is not, and a rejection or a decision to write nothing is made
    /// again on fresh reads. The price is one wasted append for every stream that exists but
    /// is not cached (after a restart, or an eviction), the first time a command touches it.
    /// Off by default.
    ///
    /// ```
    /// let cache = eventcore::StreamCache::new(100_000).assume_unknown_streams_empty(true);
    /// assert!(cache.assumes_unknown_streams_empty());
    /// ```
    #[must_use]
    pub fn assume_unknown_streams_empty(mut self, yes: bool) -> Self {
        self.assume_new = yes;
        self
    }

    /// Whether streams the cache does not hold are taken to be empty; see
    /// [`assume_unknown_streams_empty`](Self::assume_unknown_streams_empty).
    ///
    /// ```
    /// assert!(!eventcore::StreamCache::new(10).assumes_unknown_streams_empty());
    /// ```
    #[must_use]
    pub fn assumes_unknown_streams_empty(&self) -> bool {
        self.assume_new
    }

    /// The cache, locked. A panic elsewhere while it was held cannot leave it inconsistent
    /// (every change completes under the lock), so a poisoned lock is used as is.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many streams are cached.
    ///
    /// ```
    /// assert_eq!(eventcore::StreamCache::new(10).len(), 0);
    /// ```
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().streams.len()
    }

    /// Whether no stream is cached.
    ///
    /// ```
    /// assert!(eventcore::StreamCache::new(10).is_empty());
    /// ```
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.lock().streams.is_empty()
    }

    /// How many events the cached streams hold together.
    ///
    /// ```
    /// assert_eq!(eventcore::StreamCache::new(10).events(), 0);
    /// ```
    #[must_use]
    pub fn events(&self) -> usize {
        let inner = self.lock();
        inner.weight - inner.streams.len()
    }

    /// The cached copy of a stream, if any (without marking it as recently used).
    ///
    /// ```
    /// let cache = eventcore::StreamCache::new(10);
    /// assert!(cache.get(&eventcore::StreamId::try_new("s")?).is_none());
    /// # Ok::<(), eventcore::ValidationError>(())
    /// ```
    #[must_use]
    pub fn get(&self, stream: &StreamId) -> Option<Arc<StreamEvents>> {
        self.lock().streams.peek(stream).map(|entry| Arc::clone(&entry.stream))
    }

    /// Drops one stream, for code that knows it changed behind the cache's back. Never needed
    /// for correctness (see the type's docs); it saves the conflict that would discover it.
    ///
    /// ```
    /// let cache = eventcore::StreamCache::new(10);
    /// cache.forget(&eventcore::StreamId::try_new("s")?);
    /// # Ok::<(), eventcore::ValidationError>(())
    /// ```
    pub fn forget(&self, stream: &StreamId) {
        self.lock().remove(stream);
    }

    /// Drops every stream.
    ///
    /// ```
    /// let cache = eventcore::StreamCache::new(10);
    /// cache.clear();
    /// assert!(cache.is_empty());
    /// ```
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.streams.clear();
        inner.weight = 0;
    }

    /// Looks up `ids`: the cached streams, in order, `None` where a stream is not cached.
    pub(crate) fn lookup(&self, ids: &[StreamId]) -> Vec<Option<Entry>> {
        let mut inner = self.lock();
        ids.iter().map(|id| inner.streams.get(id).cloned()).collect()
    }

    /// Whether every stream of `ids` is cached (without marking them as recently used).
    pub(crate) fn holds_all(&self, ids: &[StreamId]) -> bool {
        let inner = self.lock();
        ids.iter().all(|id| inner.streams.contains(id))
    }

    /// Keeps freshly read streams, unless the cache already holds a newer copy of one that
    /// extends the read (a slower read must not replace what a later append put there).
    /// Answers, for each read, the decoded copy to fold it with: the cached stream's (a newer
    /// copy's prefix is this read's), or `None` for a stream too heavy to keep.
    ///
    /// A cached copy at the read's version or beyond that holds another event at the read's
    /// last version is not the store's stream (the store lost events underneath the cache and
    /// was written again): the read replaces it, decoded copy included.
    pub(crate) fn store(&self, reads: &[Arc<StreamEvents>]) -> Vec<Option<Arc<DecodedEvents>>> {
        let mut inner = self.lock();
        reads
            .iter()
            .map(|read| {
                let decoded = match inner.streams.get(&read.stream_id) {
                    Some(cached) if !extends(&cached.stream, read) => Arc::default(),
                    Some(cached) if cached.stream.version >= read.version => {
                        return Some(Arc::clone(&cached.decoded));
                    }
                    Some(cached) => Arc::clone(&cached.decoded),
                    None => Arc::default(),
                };
                inner.put(Arc::clone(read), decoded).map(|entry| entry.decoded)
            })
            .collect()
    }

    /// Forgets every stream the request read or wrote.
    pub(crate) fn forget_request(&self, request: &AppendRequest) {
        let mut inner = self.lock();
        for (id, _) in &request.expected {
            inner.remove(id);
        }
    }

    /// Adds the events of a committed append to the cached streams they were written to.
    ///
    /// A written stream is extended only when its cached copy is at exactly the version the
    /// append expected (or it is new and was expected empty); otherwise it is dropped. Events
    /// are rebuilt as the store recorded them, which needs the append's positions to be
    /// consecutive in request order, as both built-in backends make them; when they are not
    /// (or the append was a replay), the written streams are dropped instead.
    pub(crate) fn committed(&self, request: &AppendRequest, committed: &Committed) {
        let mut inner = self.lock();
        let extended = extend_written(request, committed, |id, want| match inner.remove(id) {
            Some(cached) if cached.stream.version == want => {
                Some((Arc::unwrap_or_clone(cached.stream), cached.decoded))
            }
            None if want == StreamVersion::EMPTY => Some((
                StreamEvents::new(id.clone(), StreamVersion::EMPTY, Vec::new()),
                Arc::default(),
            )),
            _ => None,
        });
        match extended {
            Some(streams) => {
                for (stream, decoded) in streams {
                    inner.put(Arc::new(stream), decoded);
                }
            }
            None => {
                for (id, _) in &request.writes {
                    inner.remove(id);
                }
            }
        }
    }
}

/// The streams a committed append wrote, each extended by its new events as the store recorded
/// them: `base(id, expected)` gives the copy of a written stream to extend (with its decoded
/// copy), or `None` when there is none at the version the append expected.
///
/// Answers the streams it could extend (those whose base was missing, or that end at another
/// version than the store gave them, are left out), or `None` when the events cannot be rebuilt
/// at all: their positions must be consecutive in request order, as both built-in backends make
/// them, and a replayed append wrote nothing now.
pub(crate) fn extend_written(
    request: &AppendRequest,
    committed: &Committed,
    mut base: impl FnMut(&StreamId, StreamVersion) -> Option<(StreamEvents, Arc<DecodedEvents>)>,
) -> Option<Vec<(StreamEvents, Arc<DecodedEvents>)>> {
    let count = request.event_count() as u64;
    let first = match committed.positions {
        Some((first, last))
            if !committed.replayed
                && last.get().checked_sub(first.get()).map(|d| d + 1) == Some(count) =>
        {
            first.get()
        }
        _ => return None,
    };
    let expected: HashMap<&StreamId, StreamVersion> =
        request.expected.iter().map(|(id, v)| (id, *v)).collect();
    // The written streams while events are added to them; `None` when a stream's copy cannot
    // be extended.
    let mut working: HashMap<&StreamId, Option<(StreamEvents, Arc<DecodedEvents>)>> =
        HashMap::new();
    let mut position = first;
    for (id, events) in &request.writes {
        let entry = working.entry(id).or_insert_with(|| base(id, expected.get(id).copied()?));
        for event in events {
            let next = entry.as_ref().and_then(|(stream, _)| stream.version.next());
            match (entry.as_mut(), next) {
                (Some((stream, _)), Some(version)) => {
                    stream.version = version;
                    stream.events.push(RecordedEvent::from_new(
                        id.clone(),
                        version,
                        GlobalPosition::new(position),
                        event.clone(),
                    ));
                }
                _ => *entry = None,
            }
            position += 1;
        }
    }
    Some(
        working
            .into_iter()
            .filter_map(|(id, stream)| {
                stream.filter(|(stream, _)| committed.version_of(id) == Some(stream.version))
            })
            .collect(),
    )
}

impl fmt::Debug for StreamCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        f.debug_struct("StreamCache")
            .field("streams", &inner.streams.len())
            .field("weight", &inner.weight)
            .field("max_weight", &inner.max_weight)
            .field("assume_unknown_streams_empty", &self.assume_new)
            .finish()
    }
}
