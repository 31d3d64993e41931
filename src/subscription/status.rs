//! A runner's progress, as its handle shows it: state, checkpoint, last error, lag, and
//! waiting for a position.

use std::{sync::Arc, time::Duration};

use tokio::sync::watch;

use super::Clock;
use super::store::{LogStats, ProjectionStore};
use crate::{
    GlobalPosition, Timestamp,
    backend::{LogFilter, StoreError},
};

/// What a runner is doing.
///
/// ```
/// use eventcore::subscription::RunnerState;
/// assert_ne!(RunnerState::Standby, RunnerState::Live);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RunnerState {
    /// Not started yet.
    Starting,
    /// Another runner holds the projection's lease: waiting to take over.
    Standby,
    /// Applying the history.
    CatchingUp,
    /// Caught up: applying events as they are appended.
    Live,
    /// Retrying a failed batch, or the store after a claim of the lease, a read of the log,
    /// a renewal of the lease or another question to it failed (the store is away), also
    /// before the runner first took the lease.
    Retrying,
    /// Stopped on an error (see [`ProjectionStatus::last_error`]), or ended without stopping:
    /// its task was aborted, or panicked in a handler (the last error says so).
    Stopped,
    /// Ended as asked: it applied the log as it stood when
    /// [`catch_up`](super::ProjectionRunner::catch_up) started, or the `stop` of a
    /// [`run_until`](super::ProjectionRunner::run_until) came. Nothing reads the log for it
    /// any more.
    Finished,
}

/// A projection's progress, as its runner last reported it.
///
/// ```
/// use eventcore::subscription::{ProjectionStatus, RunnerState};
/// use eventcore::GlobalPosition;
/// let s = ProjectionStatus::new("balances");
/// assert_eq!((s.state, s.position), (RunnerState::Starting, GlobalPosition::START));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProjectionStatus {
    /// The projection's name.
    pub name: Arc<str>,
    /// What its runner is doing.
    pub state: RunnerState,
    /// Its checkpoint: every event up to here that passes its filter is applied.
    pub position: GlobalPosition,
    /// The last error (a failed batch, a store failure), cleared by the next committed batch.
    pub last_error: Option<String>,
    /// How many events this runner parked.
    pub parked: u64,
    /// How many parked events this runner applied again, and so took off the parked list
    /// (see [`ProjectionRunner::retry_parked`](super::ProjectionRunner::retry_parked)).
    pub unparked: u64,
    /// The position of the event the runner stopped on, once it stopped on one (the
    /// `position` of [`ProjectionError::Stopped`]); the checkpoint is before it.
    pub stopped_at: Option<GlobalPosition>,
    /// For a [`ProcessRunner`](super::ProcessRunner): when its next timer is due, as the
    /// inputs up to [`position`](Self::position) and the timers fired since left its timers
    /// (`None`: no timer is set). Always `None` for a projection.
    pub next_timer: Option<Timestamp>,
}

impl ProjectionStatus {
    /// The status of a runner that has not started.
    ///
    /// ```
    /// assert!(eventcore::subscription::ProjectionStatus::new("p").last_error.is_none());
    /// ```
    #[must_use]
    pub fn new(name: &str) -> Self {
        Self {
            name: Arc::from(name),
            state: RunnerState::Starting,
            position: GlobalPosition::START,
            last_error: None,
            parked: 0,
            unparked: 0,
            stopped_at: None,
            next_timer: None,
        }
    }
}

/// How far behind the log a projection is (see [`ProjectionHandle::lag`]).
///
/// ```
/// use eventcore::subscription::Lag;
/// let l = Lag {
///     events: 1_000_000,
///     more: true,
///     behind: std::time::Duration::from_secs(3600),
///     head: eventcore::GlobalPosition::new(5_000_000),
/// };
/// assert_eq!(l.to_string(), "more than 1000000 events behind, the oldest waiting 3600.0 s");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lag {
    /// Events of the log after the checkpoint (of any kind: the filter is not applied),
    /// counted up to the limit asked for ([`ProjectionHandle::lag`] counts up to
    /// [`Lag::LIMIT`]).
    pub events: u64,
    /// Whether more than [`events`](Self::events) events are behind: the count stopped at
    /// its limit.
    pub more: bool,
    /// How long the oldest of those events has been waiting (the filter is not applied
    /// either: the checkpoint passes every event, and a look for the first one the filter
    /// passes could have to read the whole log).
    pub behind: Duration,
    /// The last position of the log.
    pub head: GlobalPosition,
}

impl Lag {
    /// How many events [`ProjectionHandle::lag`] counts at most: about a tenth of a second
    /// of reading on PostgreSQL.
    pub const LIMIT: u64 = 1_000_000;
}

/// `N events behind`, or `more than N events behind` (`events behind` when none were
/// counted), and how long the oldest has waited.
impl std::fmt::Display for Lag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let waited = self.behind.as_secs_f64();
        match (self.more, self.events) {
            (true, 0) => write!(f, "events behind"),
            (true, n) => write!(f, "more than {n} events behind"),
            (false, n) => write!(f, "{n} events behind"),
        }?;
        write!(f, ", the oldest waiting {waited:.1} s")
    }
}

/// Why a projection stopped, or a wait on it failed.
///
/// ```
/// use eventcore::subscription::ProjectionError;
/// let e = ProjectionError::Timeout { reached: eventcore::GlobalPosition::START };
/// assert!(e.to_string().contains("time"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectionError {
    /// The handler kept failing on an event (or it could not be read), and the runner stopped.
    #[error("projection `{name}` stopped at position {position}: {reason}")]
    Stopped {
        /// The projection.
        name: Arc<str>,
        /// The position of the event it stopped on (from
        /// [`ProjectionHandle::wait_for`] on a runner whose task ended without stopping on
        /// an event, aborted or panicked, its checkpoint).
        position: GlobalPosition,
        /// What went wrong.
        reason: String,
    },
    /// The store failed (not retried further by [`ProjectionHandle::wait_for`]).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// [`ProjectionHandle::wait_for`] ran out of time.
    #[error("the projection did not reach the position in time (it is at {reached})")]
    Timeout {
        /// Where the projection was when the time ran out.
        reached: GlobalPosition,
    },
    /// The runner is gone, and its last status does not answer the wait: it never started,
    /// or it [`Finished`](RunnerState::Finished): a catch-up returned, or the stop of a
    /// `run_until` came. (A runner whose task ended while it ran, aborted or
    /// panicked, reports itself [`Stopped`](RunnerState::Stopped) first.)
    #[error("the projection's runner is gone")]
    Gone,
    /// The runner cannot run as configured (a process manager's name that cannot name its
    /// streams, say); it stopped before reading anything.
    #[error("{0}")]
    Invalid(crate::ValidationError),
}

/// Watches a runner's progress: its [`status`](Self::status), its [`lag`](Self::lag), and
/// [`wait_for`](Self::wait_for) a position (read your own writes). Cheap to clone.
///
/// ```
/// # use eventcore::{backend::MemoryTx, subscription::{Projection, ProjectionRunner}, Memory, RecordedEvent};
/// # struct P;
/// # impl Projection<Memory> for P {
/// #     type Error = std::convert::Infallible;
/// #     fn name(&self) -> &str { "p" }
/// #     async fn apply(&mut self, _: &mut MemoryTx, _: &RecordedEvent) -> Result<(), Self::Error> { Ok(()) }
/// # }
/// let handle = ProjectionRunner::new(Memory::new(), P).handle();
/// assert_eq!(&*handle.status().name, "p");
/// ```
#[derive(Debug, Clone)]
pub struct ProjectionHandle<S> {
    store: S,
    status: watch::Receiver<ProjectionStatus>,
    /// The key of the runner's checkpoint in `store`: the projection's name, or
    /// `process:<name>` for a process manager.
    key: Arc<str>,
}

impl<S: ProjectionStore> ProjectionHandle<S> {
    /// A handle on a runner's status channel, whose checkpoint `store` keeps under `key` (for
    /// the runners of this crate).
    pub(crate) fn new(store: S, status: watch::Receiver<ProjectionStatus>, key: &str) -> Self {
        Self { store, status, key: Arc::from(key) }
    }

    /// The runner's last report.
    ///
    /// ```
    /// # use eventcore::{backend::MemoryTx, subscription::{Projection, ProjectionRunner, RunnerState}, Memory, RecordedEvent};
    /// # struct P;
    /// # impl Projection<Memory> for P { type Error = std::convert::Infallible; fn name(&self) -> &str { "p" }
    /// #     async fn apply(&mut self, _: &mut MemoryTx, _: &RecordedEvent) -> Result<(), Self::Error> { Ok(()) } }
    /// let h = ProjectionRunner::new(Memory::new(), P).handle();
    /// assert_eq!(h.status().state, RunnerState::Starting);
    /// ```
    #[must_use]
    pub fn status(&self) -> ProjectionStatus {
        self.status.borrow().clone()
    }

    /// How far behind the log the projection is: events after its checkpoint, counted up to
    /// [`Lag::LIMIT`] (a million), and how long the oldest of them has waited (whether its
    /// filter passes them or not). On a runner that stands by, the checkpoint is the stored
    /// one, which the active runner (in another process, as a rule) moves.
    ///
    /// The count reads every event it counts (on PostgreSQL, every index entry after the
    /// checkpoint: positions have gaps, so nothing shorter gives it), about a tenth of a
    /// second per million events; past the limit it stops, and [`Lag::more`] says so, so a
    /// projection rebuilding a log of a hundred million events is not asked to count them
    /// all at every look. [`lag_within`](Self::lag_within) sets another limit;
    /// [`status`](Self::status) costs nothing.
    ///
    /// # Errors
    /// When the store fails.
    ///
    /// ```
    /// # use eventcore::{backend::MemoryTx, subscription::{Projection, ProjectionRunner}, Memory, RecordedEvent};
    /// # struct P;
    /// # impl Projection<Memory> for P { type Error = std::convert::Infallible; fn name(&self) -> &str { "p" }
    /// #     async fn apply(&mut self, _: &mut MemoryTx, _: &RecordedEvent) -> Result<(), Self::Error> { Ok(()) } }
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// let h = ProjectionRunner::new(Memory::new(), P).handle();
    /// assert_eq!(h.lag().await?.events, 0);
    /// # Ok::<(), eventcore::backend::StoreError>(())
    /// # }).unwrap();
    /// ```
    pub async fn lag(&self) -> Result<Lag, StoreError> {
        self.lag_within(Lag::LIMIT).await
    }

    /// [`lag`](Self::lag), counting the events behind up to `limit` (`u64::MAX`: all of
    /// them; `0`: none, the head and the wait alone).
    ///
    /// # Errors
    /// When the store fails.
    ///
    /// ```
    /// # use eventcore::{backend::MemoryTx, subscription::{Projection, ProjectionRunner}, Memory, RecordedEvent};
    /// # struct P;
    /// # impl Projection<Memory> for P { type Error = std::convert::Infallible; fn name(&self) -> &str { "p" }
    /// #     async fn apply(&mut self, _: &mut MemoryTx, _: &RecordedEvent) -> Result<(), Self::Error> { Ok(()) } }
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// let h = ProjectionRunner::new(Memory::new(), P).handle();
    /// let lag = h.lag_within(10).await?;
    /// assert_eq!((lag.events, lag.more), (0, false));
    /// # Ok::<(), eventcore::backend::StoreError>(())
    /// # }).unwrap();
    /// ```
    pub async fn lag_within(&self, limit: u64) -> Result<Lag, StoreError> {
        let (position, standing_by) = {
            let s = self.status.borrow();
            (s.position, s.state == RunnerState::Standby)
        };
        // A standby's own position does not move: the active runner's is the stored one.
        let position = if standing_by {
            self.store.checkpoint(&self.key).await?.unwrap_or(position).max(position)
        } else {
            position
        };
        let stats: LogStats = self.store.log_stats(position, limit).await?;
        let oldest = self.store.read_log(position, &LogFilter::all(), 1).await?;
        let behind = match oldest.entries.first() {
            Some(Ok(event)) => (chrono::Utc::now() - event.metadata.timestamp.as_datetime())
                .to_std()
                .unwrap_or(Duration::ZERO),
            _ => Duration::ZERO,
        };
        Ok(Lag { events: stats.events_after, more: stats.more, behind, head: stats.head })
    }

    /// Waits until the runner's status satisfies `condition` (it is checked at once, then on
    /// every change), and returns that status.
    ///
    /// # Errors
    /// [`ProjectionError::Timeout`] when `timeout` passed, [`ProjectionError::Gone`] when the
    /// runner was dropped and its last status does not satisfy `condition` (a runner dropped
    /// while it ran reports [`RunnerState::Stopped`] first).
    ///
    /// ```
    /// # use eventcore::{backend::MemoryTx, subscription::{Projection, ProjectionRunner, RunnerState}, Memory, RecordedEvent};
    /// # struct P;
    /// # impl Projection<Memory> for P { type Error = std::convert::Infallible; fn name(&self) -> &str { "p" }
    /// #     async fn apply(&mut self, _: &mut MemoryTx, _: &RecordedEvent) -> Result<(), Self::Error> { Ok(()) } }
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// let runner = ProjectionRunner::new(Memory::new(), P);
    /// let h = runner.handle();
    /// tokio::spawn(runner.run());
    /// let live = h.wait_until(|s| s.state == RunnerState::Live, std::time::Duration::from_secs(5)).await?;
    /// assert_eq!(&*live.name, "p");
    /// # Ok::<(), eventcore::subscription::ProjectionError>(())
    /// # }).unwrap();
    /// ```
    pub async fn wait_until(
        &self,
        condition: impl FnMut(&ProjectionStatus) -> bool,
        timeout: Duration,
    ) -> Result<ProjectionStatus, ProjectionError> {
        let mut status = self.status.clone();
        match tokio::time::timeout(timeout, status.wait_for(condition)).await {
            Err(_) => Err(ProjectionError::Timeout { reached: self.status.borrow().position }),
            Ok(Err(_)) => Err(ProjectionError::Gone),
            Ok(Ok(s)) => Ok(s.clone()),
        }
    }

    /// Waits until the projection's checkpoint reaches `position` (for example the last
    /// position of a command's [`Executed`](crate::Executed)), so a caller can read its own
    /// writes from the read model.
    ///
    /// While the runner stands by ([`RunnerState::Standby`]: another runner, in another
    /// process as a rule, holds the lease), its own position does not move: `wait_for` then
    /// also looks at the stored checkpoint, every 50 ms, and returns once the active runner
    /// committed past `position`. That is the read model in the store's database, written in
    /// the checkpoint's transaction; a read model kept in the active runner's own process is
    /// not in this one.
    ///
    /// # Errors
    /// [`ProjectionError::Stopped`] when the projection stopped before reaching it (also when
    /// its runner's task ended without stopping: aborted, or panicked in a handler),
    /// [`ProjectionError::Timeout`] when `timeout` passed, [`ProjectionError::Gone`] when the
    /// runner was dropped without running, or after it finished a catch-up.
    ///
    /// ```
    /// # use eventcore::{backend::MemoryTx, subscription::{Projection, ProjectionRunner, ProjectionError}, GlobalPosition, Memory, RecordedEvent};
    /// # struct P;
    /// # impl Projection<Memory> for P { type Error = std::convert::Infallible; fn name(&self) -> &str { "p" }
    /// #     async fn apply(&mut self, _: &mut MemoryTx, _: &RecordedEvent) -> Result<(), Self::Error> { Ok(()) } }
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// let runner = ProjectionRunner::new(Memory::new(), P);
    /// let h = runner.handle();
    /// let far = h.wait_for(GlobalPosition::new(99), std::time::Duration::from_millis(10)).await;
    /// assert!(matches!(far, Err(ProjectionError::Timeout { .. })));
    /// # });
    /// ```
    pub async fn wait_for(
        &self,
        position: GlobalPosition,
        timeout: Duration,
    ) -> Result<(), ProjectionError> {
        let local =
            self.wait_until(|s| s.position >= position || s.state == RunnerState::Stopped, timeout);
        let stored = self.stored_reaches(position);
        let s = match futures_util::future::select(std::pin::pin!(local), std::pin::pin!(stored))
            .await
        {
            futures_util::future::Either::Left((s, _)) => s?,
            futures_util::future::Either::Right(((), _)) => return Ok(()),
        };
        if s.position >= position {
            return Ok(());
        }
        Err(ProjectionError::Stopped {
            name: Arc::clone(&s.name),
            position: s.stopped_at.unwrap_or(s.position),
            reason: s.last_error.clone().unwrap_or_default(),
        })
    }

    /// Waits until the runner has **settled**: its checkpoint is at the head of the log, it is
    /// live there, and none of its timers is due by `clock`. Returns the head of the log then.
    ///
    /// For tests of a [`ProcessRunner`](super::ProcessRunner), given the
    /// [`ManualClock`](super::ManualClock) it runs on: after a command, it returns once the
    /// process reacted to it, and to the events its own reactions wrote, each command
    /// committed; after [`advance`](super::ManualClock::advance), once the timers that came
    /// due fired and their reactions committed too. A timer set for later than `clock`'s time
    /// is left set. The head is read again after the runner got there: while anything writes
    /// to the log (the runner included), it waits on. So it expects nothing but the test and
    /// the runner to write while it waits. A projection's runner settles once it is live at
    /// the head (it has no timers).
    ///
    /// It watches this handle's runner: one standing by (another runner holds the lease)
    /// never settles, and the wait times out.
    ///
    /// # Errors
    /// [`ProjectionError::Stopped`] when the runner stopped first,
    /// [`ProjectionError::Timeout`] when it did not settle within `timeout` (the whole wait),
    /// [`ProjectionError::Gone`] when the runner was dropped, or finished, before it settled,
    /// [`ProjectionError::Store`] when reading the head of the log failed.
    ///
    /// ```
    /// # use eventcore::subscription::{Happened, ManualClock, ProcessManager, ProcessRunner, Reaction};
    /// # use eventcore::{backend::LogFilter, Backend, Executor, GlobalPosition, Memory, RecordedEvent};
    /// # struct Quiet;
    /// # impl<B: Backend> ProcessManager<B> for Quiet {
    /// #     type State = ();
    /// #     fn name(&self) -> &str { "quiet" }
    /// #     fn filter(&self) -> LogFilter { LogFilter::all() }
    /// #     fn instance(&self, _: &RecordedEvent) -> Option<String> { None }
    /// #     fn apply(&self, _: &mut (), _: &Happened) {}
    /// #     fn react(&self, _: &(), _: &Happened) -> Vec<Reaction<B>> { vec![] }
    /// # }
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// let clock = ManualClock::new();
    /// let runner = ProcessRunner::new(Executor::new(Memory::new()), Quiet).clock(clock.clone());
    /// let handle = runner.handle();
    /// let task = tokio::spawn(runner.run());
    /// // Nothing in the log, no timer set: settled at once.
    /// let head = handle.settle(&clock, std::time::Duration::from_secs(5)).await?;
    /// assert_eq!(head, GlobalPosition::START);
    /// task.abort();
    /// # Ok::<(), eventcore::subscription::ProjectionError>(())
    /// # }).unwrap();
    /// ```
    pub async fn settle(
        &self,
        clock: &impl Clock,
        timeout: Duration,
    ) -> Result<GlobalPosition, ProjectionError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let head = self.head_by(deadline).await?;
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            // The position and the next timer come in one report: the timers as the inputs up
            // to the position left them (and the timers fired since).
            let settled = |s: &ProjectionStatus| {
                s.state == RunnerState::Live
                    && s.position >= head
                    && s.next_timer.is_none_or(|due| due > clock.now())
            };
            let s =
                self.wait_until(|s| s.state == RunnerState::Stopped || settled(s), left).await?;
            if !settled(&s) {
                return Err(ProjectionError::Stopped {
                    name: Arc::clone(&s.name),
                    position: s.stopped_at.unwrap_or(s.position),
                    reason: s.last_error.clone().unwrap_or_default(),
                });
            }
            if self.head_by(deadline).await? == head {
                return Ok(head);
            }
        }
    }

    /// The head of the log, read by `deadline`: a store that does not answer in time is
    /// [`ProjectionError::Timeout`], so that [`settle`](Self::settle) keeps to its timeout.
    async fn head_by(
        &self,
        deadline: tokio::time::Instant,
    ) -> Result<GlobalPosition, ProjectionError> {
        match tokio::time::timeout_at(deadline, self.lag_within(0)).await {
            Ok(lag) => Ok(lag?.head),
            Err(_) => Err(ProjectionError::Timeout { reached: self.status.borrow().position }),
        }
    }

    /// Ends once the stored checkpoint reaches `position`, looked at every
    /// [`STANDBY_LOOK`] while the runner stands by: another runner (in another process,
    /// usually) holds the lease and moves the checkpoint, and this one's position does not
    /// move. Never ends while the runner is active (its own status says where it is) or once
    /// it is gone. A look that fails is tried again at the next.
    async fn stored_reaches(&self, position: GlobalPosition) {
        let mut status = self.status.clone();
        loop {
            if status.wait_for(|s| s.state == RunnerState::Standby).await.is_err() {
                return std::future::pending().await;
            }
            if let Ok(Some(at)) = self.store.checkpoint(&self.key).await {
                if at >= position {
                    return;
                }
            }
            tokio::time::sleep(STANDBY_LOOK).await;
        }
    }
}

/// How often [`ProjectionHandle::wait_for`] looks at the stored checkpoint while its runner
/// stands by: one read of one row by its key.
const STANDBY_LOOK: Duration = Duration::from_millis(50);
