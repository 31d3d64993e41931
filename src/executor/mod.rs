//! Running commands: read, fold, decide, discover, append, retry.

mod attempt;
mod cache;
mod context;
mod error;
mod names;
mod read;
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

use attempt::Failure;
use read::ReadSet;

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
