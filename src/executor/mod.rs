//! Running commands: read, fold, decide, discover, append, retry.

mod attempt;
mod cache;
mod context;
mod drive;
mod error;
mod names;
mod read;
mod retry;
mod snapshot;

use std::{sync::Arc, time::Duration};

use tracing::Instrument;

use cache::Entry;
pub use cache::StreamCache;
pub use context::RequestContext;
pub use error::ExecuteError;
#[doc(hidden)]
pub use names::EventName;
pub use names::EventTypeClash;
#[cfg(feature = "testing")]
pub(crate) use names::check as check_event_names;
pub(crate) use names::check_event as check_event_name;
pub use retry::{RetryPolicy, RetryPolicyBuilder};
pub(crate) use snapshot::StateFingerprint;
pub use snapshot::{SlotStreams, Snapshot, SnapshotPolicy, snapshot_key};

use attempt::{Failure, Pass};
use read::{ReadSet, Reads};
use snapshot::{SnapshotMeta, Snapshotting};

use crate::{
    Backend, RequestFields, StreamId, StreamVersion,
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
/// `eventcore.execute` with the command's name, the streams it declares (not those it
/// discovers) and the attempts made.
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
    snapshots: Option<SnapshotPolicy>,
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

impl<B: Backend> Executor<B> {
    /// An executor with the default retry policy and no timeout.
    ///
    /// ```
    /// let _ = eventcore::Executor::new(eventcore::Memory::new());
    /// ```
    #[must_use]
    pub fn new(backend: B) -> Self {
        Self { backend, retry: RetryPolicy::default(), timeout: None, cache: None, snapshots: None }
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

    /// Lets [`execute_snapshotted`](Self::execute_snapshotted) start from stored snapshots of
    /// command states and take new ones as `policy` says; without it, `execute_snapshotted`
    /// folds every event, as [`execute`](Self::execute) does. See [`Snapshot`].
    ///
    /// ```
    /// use eventcore::{Executor, Memory, SnapshotPolicy};
    /// let executor = Executor::new(Memory::new()).with_snapshots(SnapshotPolicy::every(1_000));
    /// assert_eq!(executor.snapshots(), Some(SnapshotPolicy::every(1_000)));
    /// ```
    #[must_use]
    pub fn with_snapshots(mut self, policy: SnapshotPolicy) -> Self {
        self.snapshots = Some(policy);
        self
    }

    /// The snapshot policy, if the executor has one.
    ///
    /// ```
    /// assert!(eventcore::Executor::new(eventcore::Memory::new()).snapshots().is_none());
    /// ```
    #[must_use]
    pub fn snapshots(&self) -> Option<SnapshotPolicy> {
        self.snapshots
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
    ///
    /// A plain `fn` returning the future (rather than an `async fn` awaiting another): one
    /// state machine per command instead of two, which the compile-time bench counts.
    pub fn execute<'a, C: Handle>(
        &'a self,
        command: &'a C,
    ) -> impl Future<Output = Result<Executed, ExecuteError<C::Error>>> {
        self.execute_inner(command, None, None, None)
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
    pub fn execute_in<'a, C: Handle>(
        &'a self,
        command: &'a C,
        context: &'a RequestContext,
    ) -> impl Future<Output = Result<Executed, ExecuteError<C::Error>>> {
        self.execute_inner(command, Some(context), None, None)
    }

    /// [`execute`](Self::execute) for a command whose state is a [`Snapshot`]: the first round
    /// (the command's declared streams) starts from the snapshot stored for the state and
    /// those streams, when it can be trusted, and reads and folds only the events after it,
    /// in the same single read; a new snapshot is taken as the executor's [`SnapshotPolicy`]
    /// says (see [`with_snapshots`](Self::with_snapshots); without a policy this is
    /// `execute`).
    /// Discovered streams are read and folded in full, as always.
    ///
    /// The outcome is the one `execute` would give: the append checks the version of every
    /// stream read, snapshot or not, and a snapshot that cannot be trusted is discarded (see
    /// [`Snapshot`]). A snapshot is stored after the command has run, whatever its outcome
    /// (it covers only events that were committed when they were read), within the
    /// executor's timeout: an execution that times out stores none. Failing to store one is
    /// logged and changes nothing. Streams a [`StreamCache`] holds in full are folded from
    /// the cache instead; the events read after a snapshot are not cached (the cache keeps
    /// whole streams).
    ///
    /// # Errors
    /// See [`ExecuteError`].
    ///
    /// ```no_run
    /// # async fn run<C>(command: C) -> Result<(), eventcore::ExecuteError<C::Error>>
    /// # where C: eventcore::Handle, C::State: eventcore::Snapshot, C::Streams: eventcore::executor::SlotStreams {
    /// use eventcore::{Executor, Memory, SnapshotPolicy};
    /// let executor = Executor::new(Memory::new()).with_snapshots(SnapshotPolicy::every(1_000));
    /// executor.execute_snapshotted(&command).await?;
    /// # Ok(()) }
    /// ```
    pub async fn execute_snapshotted<C>(
        &self,
        command: &C,
    ) -> Result<Executed, ExecuteError<C::Error>>
    where
        C: Handle,
        C::State: Snapshot,
        C::Streams: SlotStreams,
    {
        self.execute_snapshotted_in(command, &RequestContext::new()).await
    }

    /// [`execute_snapshotted`](Self::execute_snapshotted) in `context`, as
    /// [`execute_in`](Self::execute_in).
    ///
    /// # Errors
    /// See [`ExecuteError`].
    ///
    /// ```no_run
    /// # async fn run<C>(command: C) -> Result<(), eventcore::ExecuteError<C::Error>>
    /// # where C: eventcore::Handle, C::State: eventcore::Snapshot, C::Streams: eventcore::executor::SlotStreams {
    /// use eventcore::{Executor, Memory, RequestContext, SnapshotPolicy};
    /// let executor = Executor::new(Memory::new()).with_snapshots(SnapshotPolicy::every(1_000));
    /// executor.execute_snapshotted_in(&command, &RequestContext::new()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn execute_snapshotted_in<C>(
        &self,
        command: &C,
        context: &RequestContext,
    ) -> Result<Executed, ExecuteError<C::Error>>
    where
        C: Handle,
        C::State: Snapshot,
        C::Streams: SlotStreams,
    {
        let Some(policy) = self.snapshots else {
            return self.execute_inner(command, Some(context), None, None).await;
        };
        let snap = Snapshotting::<C::State>::new::<C::Streams>(&command.streams(), policy);
        self.execute_inner(command, Some(context), None, Some(&snap)).await
    }

    /// [`execute_in`](Self::execute_in), appending `companion`'s events in the same atomic
    /// write as the command's, with its stream's version checked like the command's streams.
    /// The companion is appended even when the command emits nothing (never when it is
    /// rejected); then the append stores no idempotency key, as a command that emits nothing
    /// stores none, and a key that committed before answers instead. Process managers record
    /// their progress this way.
    pub(crate) async fn execute_with<C: Handle>(
        &self,
        command: &C,
        context: &RequestContext,
        companion: Option<&Companion>,
    ) -> Result<Executed, ExecuteError<C::Error>> {
        self.execute_inner(command, Some(context), companion, None).await
    }

    /// Runs a command under the timeout, with snapshots when `snap` is given, then stores the
    /// snapshot it took, if any, until the timeout's end (a save cut short is only logged: a
    /// command that committed is answered).
    /// `context: None` is a fresh [`RequestContext`].
    async fn execute_inner<'a, C: Handle>(
        &'a self,
        command: &'a C,
        context: Option<&'a RequestContext>,
        companion: Option<&'a Companion>,
        snap: Option<&'a Snapshotting<C::State>>,
    ) -> Result<Executed, ExecuteError<C::Error>> {
        let key = command.idempotency_key();
        // A match, not `Option::map`: a closure is one more function compiled per command.
        #[allow(clippy::manual_map)]
        let meta = match snap {
            Some(snap) => Some(&snap.meta),
            None => None,
        };
        // With the key, what else its fingerprint covers: asked of a keyed command only.
        let mut fields = RequestFields::new();
        let keyed = match &key {
            Some(key) => {
                command.request_fields(&mut fields);
                Some((key, &fields))
            }
            None => None,
        };
        let mut driver = drive::Driver::new(command, snap);
        // The event names are checked inside, so that a refused command is counted and
        // timed like any other execution.
        let check = names::check::<C::Streams, C::Continuation>;
        let outcome = self.execute_erased(
            &mut driver,
            check,
            command.name(),
            context,
            companion,
            keyed,
            meta,
        );
        match outcome.await {
            Ok(executed) => Ok(executed),
            Err(error) => Err(driver.restore(error)),
        }
    }

    /// Everything of an execution that does not depend on the command's types: compiled once
    /// per backend, whatever the number of commands.
    /// `context: None` is a fresh [`RequestContext`], made here rather than per command.
    #[allow(clippy::too_many_arguments)]
    async fn execute_erased(
        &self,
        drive: &mut dyn drive::Drive,
        check: fn() -> Result<(), EventTypeClash>,
        name: &'static str,
        context: Option<&RequestContext>,
        companion: Option<&Companion>,
        keyed: Option<(&IdempotencyKey, &RequestFields)>,
        snap: Option<&SnapshotMeta>,
    ) -> Result<Executed, ExecuteError<drive::Rejection>> {
        let (key, fields) = match keyed {
            Some((key, fields)) => (Some(key), fields),
            None => (None, &attempt::NO_FIELDS),
        };
        let fresh;
        let context = match context {
            Some(context) => context,
            None => {
                fresh = RequestContext::new();
                &fresh
            }
        };
        // Recorded when it ends, or as cancelled if this future is dropped first.
        let execution = crate::metrics::Execution::start(name);
        let span = tracing::info_span!(
            "eventcore.execute",
            command = name,
            streams = tracing::field::Empty,
            attempts = tracing::field::Empty,
        );
        if let Err(clash) = check() {
            // A bug in the code, not a failure of the store: logged at `error`, in the
            // execution's span like any other outcome, so a trace shows which command met it.
            span.in_scope(|| tracing::error!(error = %clash, "command refused"));
            let refused = Err(ExecuteError::EventTypeClash(clash));
            execution.ended(&refused);
            return refused;
        }
        let pass = Pass { context, companion, key, snap, name, fields, fingerprint: None };
        let mut taken = None;
        // The save of the last snapshot below has what is left of the timeout (a timeout too
        // long to have an instant saves without one, as the run does).
        let deadline =
            self.timeout.and_then(|limit| tokio::time::Instant::now().checked_add(limit));
        // Pinned where it is made: the instrumenting and the timeout then wrap a pointer
        // instead of moving the whole engine's future (kilobytes) into each wrapper.
        let outcome = {
            let run = std::pin::pin!(self.run(drive, pass, &mut taken, &span));
            let run = run.instrument(span.clone());
            match self.timeout {
                Some(limit) => tokio::time::timeout(limit, run)
                    .await
                    .unwrap_or_else(|_| Err(ExecuteError::Timeout(limit))),
                None => run.await,
            }
        };
        // A run that timed out has no time left to save in.
        let timed_out = matches!(outcome, Err(ExecuteError::Timeout(_)));
        if let Some(snapshot) = taken.filter(|_| !timed_out) {
            self.save_snapshot(snapshot, deadline).instrument(span).await;
        }
        execution.ended(&outcome);
        outcome
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Companion {
    /// The stream they go to; the command must not read it.
    pub(crate) stream: StreamId,
    /// The version that stream must be at.
    pub(crate) expected: StreamVersion,
    /// The events.
    pub(crate) events: Vec<crate::NewEvent>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::AppendRequest;
    use crate::{Bindings, Command, Decision, Fold, Handle, Handled, Memory, NoDiscovery, Payload};

    #[derive(Debug, serde::Serialize, serde::Deserialize)]
    struct Noted;

    impl crate::Event for Noted {
        const EVENT_TYPE: &'static str = "Noted";
    }

    crate::slot!(NotedIn: Noted);

    #[derive(Default)]
    struct Notes;

    impl Fold<NotedIn> for Notes {
        fn fold(&mut self, _: &StreamId, _: &Noted) {}
    }

    /// Notes one event in `note-1`.
    struct Note;

    impl Command for Note {
        type Streams = crate::Streams![NotedIn];
        type State = Notes;
        type Error = std::fmt::Error;
        type Continuation = NoDiscovery;

        fn streams(&self) -> Bindings<Self::Streams> {
            crate::hlist![<NotedIn as crate::Slot>::bind(StreamId::try_new("note-1").unwrap())]
        }
    }

    impl Handle for Note {
        fn handle(&self, _: &Notes, mut decision: Decision<Self::Streams>) -> Handled<Self> {
            decision.emit(NotedIn, Noted);
            Ok(decision)
        }
    }

    /// A companion's stream is not read by the command, and the version it expects is the
    /// caller's: an attempt that conflicts on it conflicts again however often it is made.
    /// The executor answers at once, naming the stream, rather than spend the retry policy's
    /// attempts and backoff on it (a process runner then loads its instance again).
    #[tokio::test]
    async fn a_conflict_on_the_companion_stream_is_answered_without_retrying() {
        let store = Memory::new();
        let instance = StreamId::try_new("pm_p-1").unwrap();
        let event = || {
            let payload = Payload::to_json(&1).unwrap();
            crate::NewEvent::new("Moved", 1, payload, RequestContext::new().stamp())
        };
        let moved = AppendRequest::new()
            .expect(instance.clone(), StreamVersion::EMPTY)
            .write(instance.clone(), vec![event()]);
        store.append(moved).await.unwrap();
        let retry = RetryPolicy::builder().max_attempts(5).build().unwrap();
        let executor = Executor::new(store.clone()).with_retry(retry);
        let companion = Companion {
            stream: instance.clone(),
            expected: StreamVersion::EMPTY,
            events: vec![event()],
        };
        let context = RequestContext::new();
        match executor.execute_with(&Note, &context, Some(&companion)).await {
            Err(ExecuteError::Conflict { attempts, last }) => {
                assert_eq!(last.stream, instance);
                assert_eq!(attempts, 1, "retried a conflict no retry can clear");
            }
            other => panic!("not a conflict: {other:?}"),
        }
        // Nothing of the command was written.
        let note = StreamId::try_new("note-1").unwrap();
        assert!(store.read(&[note]).await.unwrap()[0].events.is_empty());
    }
}
