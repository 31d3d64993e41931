//! Running commands: read, fold, decide, discover, append, retry.

mod cache;
mod context;
mod error;
mod names;
mod retry;

use std::{sync::Arc, time::Duration};

use tracing::Instrument;

use cache::Entry;
pub use cache::StreamCache;
pub use context::RequestContext;
pub use error::ExecuteError;
#[doc(hidden)]
pub use names::EventName;
pub use names::EventTypeClash;
pub use retry::{RetryPolicy, RetryPolicyBuilder};

use crate::{
    Backend, StreamId, StreamVersion,
    backend::{AppendRequest, Committed, Conflict, IdempotencyKey, StoreError, StreamEvents},
    command::{
        __private::{RoundError, RoundOutcome},
        Bindings, Decision, DecodedEvents, FoldAll, Handle, Next, Resume, StreamRead, StreamSet,
        Writes,
    },
};

/// Runs commands against a backend.
///
/// One execution reads every stream of the command in one backend call, folds them into the
/// command's state, calls `handle`, reads and folds discovered streams round by round, and
/// appends all emitted events in one atomic write that checks the version of every stream read.
/// When another writer got there first, the whole command runs again from the start, with fresh
/// state, under the [`RetryPolicy`].
///
/// Cheap to clone when the backend is. Each execution runs in a `tracing` span named
/// `eventcore.execute` with the command's name, its streams and the attempts made.
///
/// ```
/// use std::time::Duration;
/// use eventcore::{Executor, Memory, RetryPolicy};
///
/// let executor = Executor::new(Memory::new())
///     .with_retry(RetryPolicy::builder().max_attempts(20).build()?)
///     .with_timeout(Duration::from_secs(5));
/// # let _ = executor;
/// # Ok::<(), eventcore::ValidationError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Executor<B> {
    backend: B,
    retry: RetryPolicy,
    timeout: Option<Duration>,
    cache: Option<StreamCache>,
}

/// A successful execution.
///
/// ```
/// # use eventcore::Executed;
/// fn attempts(e: &Executed) -> u32 { e.attempts }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Executed {
    /// What the store committed (empty when the command emitted nothing).
    pub committed: Committed,
    /// Attempts made under the [`RetryPolicy`]; above 1 when the command was retried after a
    /// conflict or a transient failure. A second pass on fresh reads after a [`StreamCache`]
    /// turned out stale is part of the same attempt.
    pub attempts: u32,
}

enum Failure<E> {
    /// A rejection, or a decision to write nothing, made on cached streams: decide again on
    /// fresh reads before answering.
    Unverified,
    Conflict(Conflict),
    Store {
        error: StoreError,
        retryable: bool,
    },
    Fatal(ExecuteError<E>),
    /// A keyed command rejected, or writing nothing, because an earlier run with its key
    /// committed: that run's result answers it.
    Replayed(Committed),
}

impl<E> From<StoreError> for Failure<E> {
    /// Classifies an append failure. Whether a transient one may be retried depends on the
    /// command's idempotency key, which the retry loop checks.
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Conflict(c) => Failure::Conflict(c),
            error => Failure::Store { retryable: false, error },
        }
    }
}

impl<B: Backend> Executor<B> {
    /// An executor with the default retry policy and no timeout.
    ///
    /// ```
    /// let _ = eventcore::Executor::new(eventcore::Memory::new());
    /// ```
    #[must_use]
    pub fn new(backend: B) -> Self {
        Self { backend, retry: RetryPolicy::default(), timeout: None, cache: None }
    }

    /// Sets the retry policy.
    ///
    /// ```
    /// let _ = eventcore::Executor::new(eventcore::Memory::new()).with_retry(eventcore::RetryPolicy::none());
    /// ```
    #[must_use]
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Bounds each execution, retries and backoff included.
    ///
    /// ```
    /// let _ = eventcore::Executor::new(eventcore::Memory::new()).with_timeout(std::time::Duration::from_secs(1));
    /// ```
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Keeps the streams this executor reads and writes in `cache`, so that a command over
    /// streams it has seen reads only what is not cached; see [`StreamCache`] for how stale
    /// entries are caught.
    ///
    /// ```
    /// use eventcore::{Executor, Memory, StreamCache};
    /// let _ = Executor::new(Memory::new()).with_cache(StreamCache::new(100_000));
    /// ```
    #[must_use]
    pub fn with_cache(mut self, cache: StreamCache) -> Self {
        self.cache = Some(cache);
        self
    }

    /// The stream cache, if the executor has one.
    ///
    /// ```
    /// let ex = eventcore::Executor::new(eventcore::Memory::new());
    /// assert!(ex.cache().is_none());
    /// ```
    #[must_use]
    pub fn cache(&self) -> Option<&StreamCache> {
        self.cache.as_ref()
    }

    /// The backend.
    ///
    /// ```
    /// let ex = eventcore::Executor::new(eventcore::Memory::new());
    /// assert!(ex.backend().is_empty());
    /// ```
    #[must_use]
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Executes a command in a fresh [`RequestContext`].
    ///
    /// # Errors
    /// See [`ExecuteError`].
    ///
    /// ```no_run
    /// # async fn run<C: eventcore::Handle>(command: C) -> Result<(), eventcore::ExecuteError<C::Error>> {
    /// let executor = eventcore::Executor::new(eventcore::Memory::new());
    /// let done = executor.execute(&command).await?;
    /// println!("committed after {} attempt(s)", done.attempts);
    /// # Ok(()) }
    /// ```
    pub async fn execute<C: Handle>(
        &self,
        command: &C,
    ) -> Result<Executed, ExecuteError<C::Error>> {
        self.execute_in(command, &RequestContext::new()).await
    }

    /// Executes a command whose events carry `context`'s correlation, causation and custom
    /// metadata.
    ///
    /// # Errors
    /// See [`ExecuteError`].
    ///
    /// ```no_run
    /// # async fn run<C: eventcore::Handle>(command: C) -> Result<(), eventcore::ExecuteError<C::Error>> {
    /// use eventcore::{Executor, Memory, RequestContext};
    /// let ctx = RequestContext::new().with_custom("user", "alice");
    /// Executor::new(Memory::new()).execute_in(&command, &ctx).await?;
    /// # Ok(()) }
    /// ```
    pub async fn execute_in<C: Handle>(
        &self,
        command: &C,
        context: &RequestContext,
    ) -> Result<Executed, ExecuteError<C::Error>> {
        self.execute_with(command, context, None).await
    }

    /// [`execute_in`](Self::execute_in), appending `companion`'s events in the same atomic
    /// write as the command's, with its stream's version checked like the command's streams.
    /// The companion is appended even when the command emits nothing (never when it is
    /// rejected). Process managers record their progress this way.
    pub(crate) async fn execute_with<C: Handle>(
        &self,
        command: &C,
        context: &RequestContext,
        companion: Option<&Companion>,
    ) -> Result<Executed, ExecuteError<C::Error>> {
        let span = tracing::info_span!(
            "eventcore.execute",
            command = command.name(),
            streams = tracing::field::Empty,
            attempts = tracing::field::Empty,
        );
        names::check::<C::Streams, C::Continuation>()?;
        let run = self.run(command, context, companion, &span).instrument(span.clone());
        match self.timeout {
            Some(limit) => {
                tokio::time::timeout(limit, run).await.map_err(|_| ExecuteError::Timeout(limit))?
            }
            None => run.await,
        }
    }

    async fn run<C: Handle>(
        &self,
        command: &C,
        context: &RequestContext,
        companion: Option<&Companion>,
        span: &tracing::Span,
    ) -> Result<Executed, ExecuteError<C::Error>> {
        let key = command.idempotency_key();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome =
                self.attempt(command, context, companion, key.as_ref(), span, attempt).await;
            if !span.is_disabled() {
                span.record("attempts", attempt);
            }
            let failure = match outcome {
                Ok(committed) => return Ok(Executed { committed, attempts: attempt }),
                Err(failure) => failure,
            };
            let last = attempt >= self.retry.max_attempts();
            match failure {
                Failure::Fatal(e) => return Err(e),
                Failure::Replayed(committed) => {
                    return Ok(Executed { committed, attempts: attempt });
                }
                // `attempt` decides again on fresh reads, which are never unverified.
                Failure::Unverified => {
                    return Err(ExecuteError::Store(StoreError::Other(
                        "unverified outcome on fresh reads".into(),
                    )));
                }
                Failure::Conflict(conflict) if last => {
                    return Err(ExecuteError::Conflict { attempts: attempt, last: conflict });
                }
                Failure::Conflict(conflict) => {
                    tracing::debug!(%conflict, attempt, "conflict; retrying");
                }
                // Reads are always safe to retry after a transient failure. A transient failure
                // during the append may have committed: only an idempotency key makes running
                // the command again safe.
                Failure::Store { error, retryable }
                    if last || !(retryable || (error.is_transient() && key.is_some())) =>
                {
                    return Err(ExecuteError::Store(error));
                }
                Failure::Store { error, .. } => {
                    tracing::debug!(%error, attempt, "transient store failure; retrying");
                }
            }
            tokio::time::sleep(self.retry.delay_after(attempt)).await;
        }
    }

    async fn attempt<C: Handle>(
        &self,
        command: &C,
        context: &RequestContext,
        companion: Option<&Companion>,
        key: Option<&IdempotencyKey>,
        span: &tracing::Span,
        attempt: u32,
    ) -> Result<Committed, Failure<C::Error>> {
        let pass = Pass { context, companion, key };
        let bound = command.streams();
        let mut ids = Vec::with_capacity(C::Streams::LEN);
        C::Streams::for_each_id(&bound, &mut |id| ids.push(id.clone()));
        // Once per execution.
        if attempt == 1 && !span.is_disabled() {
            span.record("streams", tracing::field::debug(&ids));
        }
        // Commands over the same streams take turns rather than race: wait for this command's
        // turn on its declared streams in this process, then for a hold across processes on
        // those the store asks to hold. Both are kept until the append has answered, the
        // second pass below included, and let go before any backoff. They only order
        // commands: the append checks every stream read all the same.
        let _turn = self.backend.stream_queue().enter(&ids).await;
        let _hold = self
            .backend
            .hold(&ids)
            .await
            .map_err(|error| Failure::Store { retryable: error.is_transient(), error })?;
        match self.decide_and_append(command, bound, &ids, &pass, true).await {
            // Decided on cached streams without an append to check them, or the append found a
            // cached stream out of date: decide again at once on fresh reads, which answer for
            // themselves. This is not a retry under the policy: the cache was behind, nothing
            // contended.
            Err(Failure::Unverified) => {
                tracing::debug!("decided on cached streams; deciding again on fresh reads");
                // Nothing comes from the cache on this pass, so it is never `Unverified` (`run`
                // turns one into an error).
                self.decide_and_append(command, command.streams(), &ids, &pass, false).await
            }
            outcome => outcome,
        }
    }

    /// One pass: read, fold, decide (discovering as asked), append. With `use_cache`, streams
    /// come from the cache where it has them; then an outcome that no append checks, or a
    /// conflict on a stream the cache served, is [`Failure::Unverified`]. Without, every stream
    /// is read from the backend.
    async fn decide_and_append<C: Handle>(
        &self,
        command: &C,
        bound: Bindings<C::Streams>,
        ids: &[StreamId],
        pass: &Pass<'_>,
        use_cache: bool,
    ) -> Result<Committed, Failure<C::Error>> {
        let Pass { context, companion, key, .. } = *pass;
        // The streams the cache served (or took to be empty): decisions on them need checking.
        let mut served: Vec<StreamId> = Vec::new();
        let reads = self.read(ids, use_cache, &mut served).await?;
        let unverified = |failure, served: &[StreamId]| match failure {
            Failure::Conflict(_) if !served.is_empty() => Failure::Unverified,
            failure => failure,
        };
        let mut read_set = ReadSet::default();
        read_set.record(reads.streams()).map_err(|f| unverified(f, &served))?;

        let mut state = C::State::default();
        state
            .fold_all(&bound, &mut reads.iter())
            .map_err(|e| Failure::Fatal(ExecuteError::Fold(e)))?;
        drop(reads);

        let stamp = || context.stamp();
        let rejected = |e, cached: bool| {
            if cached { Failure::Unverified } else { Failure::Fatal(ExecuteError::Rejected(e)) }
        };
        let decided = command
            .handle(&state, Decision::new(bound))
            .map(Into::<Next<C::Streams, C::Continuation>>::into)
            .map_err(|e| rejected(e, !served.is_empty()));
        let decided = match decided {
            Err(rejection) => return Err(self.replay_or(key, rejection).await),
            Ok(decided) => decided,
        };
        let mut writes: Writes = match decided {
            Next::Decided(decision) => {
                decision.into_writes(&stamp).map_err(|e| Failure::Fatal(e.into()))?
            }
            Next::Discover(discovery) => {
                let mut round = C::Continuation::into_round(discovery);
                loop {
                    let new_ids = round.ids().to_vec();
                    let reads = self.read(&new_ids, use_cache, &mut served).await?;
                    read_set.record(reads.streams()).map_err(|f| unverified(f, &served))?;
                    let resumed = match round.resume(&mut state, &mut reads.iter()) {
                        Ok(resumed) => resumed,
                        Err(RoundError::Rejected(e)) => {
                            let rejection = rejected(e, !served.is_empty());
                            return Err(self.replay_or(key, rejection).await);
                        }
                        Err(RoundError::Fold(e)) => {
                            return Err(Failure::Fatal(ExecuteError::Fold(e)));
                        }
                    };
                    match resumed {
                        RoundOutcome::Decided(decision) => {
                            break decision
                                .into_writes(&stamp)
                                .map_err(|e| Failure::Fatal(e.into()))?;
                        }
                        RoundOutcome::Again(next) => round = next,
                    }
                }
            }
        };
        if let Some(companion) = companion {
            read_set.versions.push((companion.stream.clone(), companion.expected));
            writes.push((companion.stream.clone(), companion.events.clone()));
        }
        if writes.is_empty() {
            if !served.is_empty() {
                return Err(Failure::Unverified);
            }
            // A keyed command that now decides to write nothing may be one sent again after
            // its first run committed (and changed what it decides on): answer with that run.
            return match key {
                Some(key) => Ok(self.find_committed(key).await?.unwrap_or_default()),
                None => Ok(Committed::default()),
            };
        }
        let request =
            AppendRequest { expected: read_set.versions, writes, idempotency_key: key.cloned() };
        let Some(cache) = &self.cache else {
            return Ok(self.backend.append(request).await?);
        };
        // The cache needs the request after the backend took it.
        match self.backend.append(request.clone()).await {
            Ok(committed) => {
                cache.committed(&request, &committed);
                Ok(committed)
            }
            Err(error) => {
                cache.forget_request(&request);
                match error {
                    // The cache was behind on this stream: not contention.
                    StoreError::Conflict(c) if served.contains(&c.stream) => {
                        Err(Failure::Unverified)
                    }
                    error => Err(error.into()),
                }
            }
        }
    }

    /// What a rejection of a keyed command answers: the first run's result when an append
    /// with its key committed (the command was sent again, and the first run's events are why
    /// it is rejected now), otherwise the rejection. An unverified rejection (made on cached
    /// streams) is decided again on fresh reads first, and looked up then.
    async fn replay_or<E>(
        &self,
        key: Option<&IdempotencyKey>,
        rejection: Failure<E>,
    ) -> Failure<E> {
        let (Some(key), Failure::Fatal(ExecuteError::Rejected(_))) = (key, &rejection) else {
            return rejection;
        };
        match self.find_committed(key).await {
            Ok(Some(committed)) => Failure::Replayed(committed),
            Ok(None) => rejection,
            Err(failure) => failure,
        }
    }

    /// The committed append that carried `key`, marked replayed.
    async fn find_committed<E>(
        &self,
        key: &IdempotencyKey,
    ) -> Result<Option<Committed>, Failure<E>> {
        self.backend.find_committed(key).await.map_err(|error| Failure::Store {
            // Nothing is written by a look-up: safe to retry.
            retryable: error.is_transient(),
            error,
        })
    }

    /// Reads `ids`, from the cache where it has them when `use_cache` is set; adds the streams
    /// the cache served (or took to be empty) to `served`.
    async fn read<E>(
        &self,
        ids: &[StreamId],
        use_cache: bool,
        served: &mut Vec<StreamId>,
    ) -> Result<Reads, Failure<E>> {
        let Some(cache) = &self.cache else {
            return Ok(Reads::Read(self.read_backend(ids).await?));
        };
        if !use_cache {
            let reads: Vec<_> = self.read_backend(ids).await?.into_iter().map(Arc::new).collect();
            let decoded = cache.store(&reads);
            return Ok(Reads::Shared(reads.into_iter().zip(decoded).collect()));
        }
        let found = cache.lookup(ids);
        let missing: Vec<StreamId> = ids
            .iter()
            .zip(&found)
            .filter(|(_, hit)| hit.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        served.extend(
            ids.iter().zip(&found).filter(|(_, hit)| hit.is_some()).map(|(id, _)| id.clone()),
        );
        let shared = |entry: Entry| (entry.stream, Some(entry.decoded));
        if missing.is_empty() {
            return Ok(Reads::Shared(found.into_iter().flatten().map(shared).collect()));
        }
        if cache.assumes_unknown_streams_empty() {
            // A guess, checked like a cached stream; not stored until an append confirms it.
            served.extend(missing);
            let reads = ids
                .iter()
                .zip(found)
                .map(|(id, hit)| match hit {
                    Some(entry) => shared(entry),
                    None => (
                        Arc::new(StreamEvents::new(id.clone(), StreamVersion::EMPTY, Vec::new())),
                        None,
                    ),
                })
                .collect();
            return Ok(Reads::Shared(reads));
        }
        let fresh: Vec<_> = self.read_backend(&missing).await?.into_iter().map(Arc::new).collect();
        let decoded = cache.store(&fresh);
        let mut fresh = fresh.into_iter().zip(decoded);
        let mut reads = Vec::with_capacity(ids.len());
        for hit in found {
            match hit {
                Some(entry) => reads.push(shared(entry)),
                // A backend that returned fewer streams than asked leaves a hole, which folding
                // reports as a missing stream.
                None => reads.extend(fresh.next()),
            }
        }
        Ok(Reads::Shared(reads))
    }

    async fn read_backend<E>(&self, ids: &[StreamId]) -> Result<Vec<StreamEvents>, Failure<E>> {
        self.backend.read(ids).await.map_err(|error| match error {
            StoreError::Conflict(c) => Failure::Conflict(c),
            // Nothing was written yet, so a read can always be retried after a transient error.
            error => Failure::Store { retryable: error.is_transient(), error },
        })
    }
}

/// Events appended with a command's own in one atomic write (see [`Executor::execute_with`]).
#[derive(Debug, Clone)]
pub(crate) struct Companion {
    /// The stream they go to; the command must not read it.
    pub(crate) stream: StreamId,
    /// The version that stream must be at.
    pub(crate) expected: StreamVersion,
    /// The events.
    pub(crate) events: Vec<crate::NewEvent>,
}

/// What one pass of an execution runs with.
#[derive(Clone, Copy)]
struct Pass<'a> {
    context: &'a RequestContext,
    companion: Option<&'a Companion>,
    key: Option<&'a IdempotencyKey>,
}

/// Streams read for one pass: straight from the backend, or shared with the cache, with the
/// cache's decoded copy of each stream it keeps.
enum Reads {
    Read(Vec<StreamEvents>),
    Shared(Vec<(Arc<StreamEvents>, Option<Arc<DecodedEvents>>)>),
}

impl Reads {
    /// The reads, as folding takes them.
    fn iter(&self) -> ReadsIter<'_> {
        match self {
            Reads::Read(reads) => ReadsIter::Read(reads.iter()),
            Reads::Shared(reads) => ReadsIter::Shared(reads.iter()),
        }
    }

    /// The streams' events.
    fn streams(&self) -> impl Iterator<Item = &StreamEvents> {
        self.iter().map(|read| read.events)
    }
}

enum ReadsIter<'a> {
    Read(std::slice::Iter<'a, StreamEvents>),
    Shared(std::slice::Iter<'a, (Arc<StreamEvents>, Option<Arc<DecodedEvents>>)>),
}

impl<'a> Iterator for ReadsIter<'a> {
    type Item = StreamRead<'a>;

    fn next(&mut self) -> Option<StreamRead<'a>> {
        match self {
            ReadsIter::Read(reads) => reads.next().map(StreamRead::plain),
            ReadsIter::Shared(reads) => reads
                .next()
                .map(|(events, decoded)| StreamRead { events, decoded: decoded.as_deref() }),
        }
    }
}

/// Every stream a command read, with the version it saw, in first-read order.
///
/// Small sets (the common case: a handful of streams) are scanned linearly, which beats
/// hashing; past [`ReadSet::INDEX_FROM`] streams a hash index keeps recording linear in the
/// number of streams, for commands that discover hundreds of them.
#[derive(Default)]
struct ReadSet {
    versions: Vec<(StreamId, StreamVersion)>,
    index: std::collections::HashMap<StreamId, usize>,
}

impl ReadSet {
    const INDEX_FROM: usize = 16;

    fn seen(&self, stream: &StreamId) -> Option<StreamVersion> {
        if self.versions.len() < Self::INDEX_FROM {
            self.versions.iter().find(|(id, _)| id == stream).map(|(_, v)| *v)
        } else {
            self.index.get(stream).map(|&i| self.versions[i].1)
        }
    }

    /// Adds each read stream's version. A stream read twice (in two slots, or again in a
    /// discovery round) must be at the same version both times; otherwise another writer moved
    /// it in between, which is a conflict.
    fn record<'r, E>(
        &mut self,
        reads: impl Iterator<Item = &'r StreamEvents>,
    ) -> Result<(), Failure<E>> {
        for read in reads {
            match self.seen(&read.stream_id) {
                Some(seen) if seen != read.version => {
                    return Err(Failure::Conflict(Conflict {
                        stream: read.stream_id.clone(),
                        expected: seen,
                        actual: read.version,
                    }));
                }
                Some(_) => {}
                None => {
                    self.versions.push((read.stream_id.clone(), read.version));
                    if self.versions.len() == Self::INDEX_FROM {
                        self.index = self
                            .versions
                            .iter()
                            .enumerate()
                            .map(|(i, (id, _))| (id.clone(), i))
                            .collect();
                    } else if self.versions.len() > Self::INDEX_FROM {
                        self.index.insert(read.stream_id.clone(), self.versions.len() - 1);
                    }
                }
            }
        }
        Ok(())
    }
}
