//! Projections: read models fed from the log by a runner that stores their checkpoint.

use std::{collections::HashSet, future::Future, time::Duration};

use super::{
    ProjectionError, ProjectionHandle, RunnerState,
    seat::{Renewal, Seat},
    snapshot::{Mark, ProjectionSnapshot, Replay, SnapshotProjection, Snapshots},
    store::{Lease, ParkedEvent, ProjectionStore},
};
use crate::{
    DecodeError, EventId, GlobalPosition, RecordedEvent, SnapshotPolicy,
    backend::{LogFilter, StoreError, UnreadableEvent},
};

/// A read model, kept up to date from the log by a [`ProjectionRunner`].
///
/// The runner feeds [`apply`](Self::apply) every event that passes [`filter`](Self::filter),
/// in position order, in batches; after each batch it stores the checkpoint through the
/// store's [`ProjectionStore::commit`]:
///
/// - **On PostgreSQL** `tx` is the open transaction in which the checkpoint commits: write the
///   read model through it (`&mut **tx` is a `PgConnection`) and each event is applied
///   **exactly once**, also across crashes, restarts, hand-overs between runners and commits
///   whose reply was lost (the runner then claims its lease again and reads on from the
///   checkpoint as stored, never applying the batch again on a guess). A batch whose handler
///   fails is rolled back whole and tried again.
/// - **Elsewhere**, and for effects outside that transaction (another database, an e-mail),
///   delivery is **at least once**: after a crash the events since the last checkpoint come
///   again. Make such a handler idempotent, for example by storing the position of the last
///   event it applied next to the read model and skipping events at or before it.
/// - **In memory** the read model lives in the projection value itself (`tx` is
///   [`MemoryTx`](crate::backend::MemoryTx)); the runner moves the checkpoint after every event,
///   so a failed event is retried alone, and a runner that claims its lease back never
///   applies to its value again an event it applied before (its lease lost before the commit).
///   Another runner value, though, starts from the checkpoint.
/// - **A read model in the projection value over PostgreSQL** (a cache fed from the log):
///   implement [`SnapshotProjection`] and run it
///   [`with_snapshots`](ProjectionRunner::with_snapshots). The runner then undoes a rolled-back
///   batch in the value, and rebuilds the value on every start: from the start of the log with
///   [`SnapshotPolicy::load_only`] (no snapshot is stored), from the last snapshot with
///   [`SnapshotPolicy::every`]. Without it, a batch tried again applies its first events to the
///   value twice, and a restarted runner starts from the checkpoint with an empty value.
///
/// A handler must not depend on anything but the events (it may run again for the same
/// events after a rollback).
///
/// ```
/// use eventcore::{backend::{LogFilter, MemoryTx}, subscription::Projection, Memory, RecordedEvent};
///
/// #[derive(Default)]
/// struct EventCount(u64);
///
/// impl Projection<Memory> for EventCount {
///     type Error = std::convert::Infallible;
///     fn name(&self) -> &str { "event-count" }
///     async fn apply(&mut self, _: &mut MemoryTx, _: &RecordedEvent) -> Result<(), Self::Error> {
///         self.0 += 1;
///         Ok(())
///     }
/// }
/// ```
pub trait Projection<S: ProjectionStore>: Send + 'static {
    /// Why the handler failed.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The name its checkpoint and lease are stored under. Give a new version a new name
    /// (`balances-v2`) to rebuild it beside the old one (see [`ProjectionRunner::catch_up`]).
    ///
    /// Names starting with `process:` are taken: process managers keep their lease and
    /// checkpoint under `process:<name>` in the same place. A name holding U+0000 (NUL), or
    /// longer than 255 bytes, cannot be stored on PostgreSQL, and is refused on every backend.
    /// A runner of a projection named so stops at once with [`ProjectionError::Invalid`].
    fn name(&self) -> &str;

    /// Which events it wants; every event by default.
    fn filter(&self) -> LogFilter {
        LogFilter::all()
    }

    /// Applies one event.
    ///
    /// # Errors
    /// Any: the runner retries the batch with backoff, then stops or parks the event as
    /// configured (see [`OnFailure`]).
    fn apply(
        &mut self,
        tx: &mut S::Tx,
        event: &RecordedEvent,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// What a runner does with an event whose handler kept failing, or that cannot be read, once
/// its retries are spent.
///
/// ```
/// assert_eq!(eventcore::subscription::OnFailure::default(), eventcore::subscription::OnFailure::Stop);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnFailure {
    /// Stop the projection; the error shows in its status and [`ProjectionRunner::run`]
    /// returns it. Nothing is skipped.
    #[default]
    Stop,
    /// Record the event as parked ([`ProjectionStore::parked`]) with the checkpoint past it,
    /// in one commit, and go on. An event of a schema version newer than the code, or of a
    /// type the handler does not know, is never parked (it would be lost for good during a
    /// rolling deploy): it stops the projection whatever this says.
    Park,
}

/// Runs a [`Projection`]: claims its lease (one active runner per projection name, across
/// processes), reads the log from its checkpoint through a
/// [`Subscription`](super::Subscription), applies batches,
/// and commits the checkpoint with them. A second runner of the same projection waits as a
/// standby and takes over when the first stops renewing its lease.
///
/// A failing batch is rolled back and tried again with backoff
/// ([`retries`](Self::retries)); then the event it failed on is handled as
/// [`on_failure`](Self::on_failure) says. An event that cannot be read at all is handled as
/// [`on_unreadable`](Self::on_unreadable) says (default: stop).
///
/// ```
/// use eventcore::{backend::MemoryTx, subscription::{Projection, ProjectionRunner}, Memory, RecordedEvent};
/// # #[derive(Default)] struct Count(u64);
/// # impl Projection<Memory> for Count {
/// #     type Error = std::convert::Infallible;
/// #     fn name(&self) -> &str { "count" }
/// #     async fn apply(&mut self, _: &mut MemoryTx, _: &RecordedEvent) -> Result<(), Self::Error> { self.0 += 1; Ok(()) }
/// # }
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let runner = ProjectionRunner::new(Memory::new(), Count::default());
/// let handle = runner.handle();
/// let task = tokio::spawn(runner.run());
/// handle.wait_for(eventcore::GlobalPosition::START, std::time::Duration::from_secs(5)).await?;
/// task.abort();
/// # Ok::<(), eventcore::subscription::ProjectionError>(())
/// # }).unwrap();
/// ```
#[derive(Debug)]
pub struct ProjectionRunner<S: ProjectionStore, P> {
    store: S,
    projection: P,
    seat: Seat,
    on_failure: OnFailure,
    on_unreadable: OnFailure,
    /// Set by [`with_snapshots`](Self::with_snapshots).
    snapshots: Option<Snapshots<S, P>>,
    /// Terms ended in a row by a commit whose outcome is unknown: the backoff before the next.
    unknown_commits: u32,
    /// Set by [`retry_parked`](Self::retry_parked).
    retry_parked: bool,
    /// The batch of the last commit whose outcome was unknown: the next term counts those of
    /// its events the stored checkpoint shows committed. Kept for the metrics only.
    #[cfg(feature = "metrics")]
    unknown_batch: Option<Vec<Result<RecordedEvent, UnreadableEvent>>>,
    /// The event that commit parked, if it parked one: the next term counts it as parked if
    /// the stored checkpoint shows the commit went through.
    unknown_park: Option<GlobalPosition>,
    /// The parked event applied again by the last [`ProjectionStore::retried`] whose outcome
    /// was unknown: the next pass counts it as unparked if it is no longer parked.
    unknown_unpark: Option<GlobalPosition>,
    /// On a store whose transactions do not roll back (memory), the position of the last event
    /// the handler applied to the projection value, committed or not: a later term starts
    /// after it, not from a stored checkpoint below it (the lease was lost between applying an
    /// event and committing it, and the runner that claimed it died before committing it), so
    /// that the value never gets an event twice.
    applied_to: GlobalPosition,
    /// The same for parked events applied again (below the checkpoint, so `applied_to` does
    /// not cover them): on a store whose transactions do not roll back, the parked events the
    /// handler applied to the value whose [`ProjectionStore::retried`] did not take them off
    /// the list (the lease was lost first), and the events it applied whose commit was refused
    /// or lost (another runner that fails on one parks it below `applied_to`). A later pass
    /// takes them off the list without applying them again.
    unparked_in_value: std::collections::BTreeSet<GlobalPosition>,
    /// The lease of the last term, for [`run_until`](Self::run_until) to give up when it
    /// ends the runner (a stale one is refused by the store: the token fences it).
    held: Option<Lease>,
}

/// Where a batch stopped when its handler failed.
struct Failure {
    /// The index of the event in the batch.
    index: usize,
    /// What went wrong.
    reason: String,
    /// Whether the event may be parked (it was read, and is not of an unknown kind).
    parkable: bool,
    /// The configured outcome for this kind of failure.
    outcome: OnFailure,
}

/// How a batch went.
enum Applied {
    /// Committed with the checkpoint.
    Committed,
    /// The lease was lost: nothing was committed.
    LeaseLost,
    /// The commit failed, and whether it committed is unknown: the store may have committed it
    /// and lost the reply (a connection dropped after `COMMIT`).
    Unknown(StoreError),
    /// The handler failed (nothing was committed).
    Failed(Failure),
}

impl<S: ProjectionStore, P: Projection<S>> ProjectionRunner<S, P> {
    /// A runner for `projection` on `store`, with a fresh runner id.
    ///
    /// ```
    /// # use eventcore::{backend::MemoryTx, subscription::{Projection, ProjectionRunner}, Memory, RecordedEvent};
    /// # struct P;
    /// # impl Projection<Memory> for P {
    /// #     type Error = std::convert::Infallible;
    /// #     fn name(&self) -> &str { "p" }
    /// #     async fn apply(&mut self, _: &mut MemoryTx, _: &RecordedEvent) -> Result<(), Self::Error> { Ok(()) }
    /// # }
    /// let runner = ProjectionRunner::new(Memory::new(), P);
    /// # let _ = runner;
    /// ```
    pub fn new(store: S, projection: P) -> Self {
        let seat = Seat::new(projection.name());
        Self {
            store,
            projection,
            seat,
            on_failure: OnFailure::Stop,
            on_unreadable: OnFailure::Stop,
            snapshots: None,
            unknown_commits: 0,
            retry_parked: false,
            #[cfg(feature = "metrics")]
            unknown_batch: None,
            unknown_park: None,
            unknown_unpark: None,
            applied_to: GlobalPosition::START,
            unparked_in_value: std::collections::BTreeSet::new(),
            held: None,
        }
    }

    /// Sets how long a lease lasts without renewal (default 30 s): how long a standby waits
    /// after the active runner died. The runner renews it once a third of it has passed since
    /// the last renewal, before a batch and between two events of a batch (not before every
    /// batch: a live runner's batches are small and many). So a batch may take longer than
    /// the lease, but one event must take less than two thirds of it: a handler that hangs
    /// lets the lease run out, and a standby takes over, as from a runner that died. (On
    /// PostgreSQL a renewal within a batch takes a second connection from the pool when one is
    /// idle, or opens one in a moment while the pool may grow; with none to be had, a pool of
    /// one say, the batch must take less than two thirds of the lease: the renewal before it
    /// is made only when due, and may be a third of the lease old. And a hung handler's
    /// transaction stays open, holding the locks its writes took, which a standby writing the
    /// same rows waits for: bound it with the server's `idle_in_transaction_session_timeout`.)
    /// At least [`MIN_LEASE`](super::MIN_LEASE), 10 ms, and at most
    /// [`MAX_LEASE`](super::MAX_LEASE), one day: with a shorter or a longer one
    /// [`run`](Self::run) and [`catch_up`](Self::catch_up) return
    /// [`ProjectionError::Invalid`] at once.
    ///
    /// ```
    /// # use eventcore::{backend::MemoryTx, subscription::{Projection, ProjectionRunner}, Memory, RecordedEvent};
    /// # struct P;
    /// # impl Projection<Memory> for P { type Error = std::convert::Infallible; fn name(&self) -> &str { "p" }
    /// #     async fn apply(&mut self, _: &mut MemoryTx, _: &RecordedEvent) -> Result<(), Self::Error> { Ok(()) } }
    /// let r = ProjectionRunner::new(Memory::new(), P).lease(std::time::Duration::from_secs(5));
    /// # let _ = r;
    /// ```
    #[must_use]
    pub fn lease(mut self, lease: Duration) -> Self {
        self.seat.set_lease(lease);
        self
    }

    /// Sets how often a failed batch is tried again before [`on_failure`](Self::on_failure)
    /// applies (default 5), and the backoff between tries (doubling from `first` up to
    /// `max`; default 100 ms to 5 s). With a zero `first` or a `max` below it, [`run`](Self::run) and
    /// [`catch_up`](Self::catch_up) return [`ProjectionError::Invalid`] at once.
    ///
    /// ```
    /// # use eventcore::{backend::MemoryTx, subscription::{Projection, ProjectionRunner}, Memory, RecordedEvent};
    /// # struct P;
    /// # impl Projection<Memory> for P { type Error = std::convert::Infallible; fn name(&self) -> &str { "p" }
    /// #     async fn apply(&mut self, _: &mut MemoryTx, _: &RecordedEvent) -> Result<(), Self::Error> { Ok(()) } }
    /// use std::time::Duration;
    /// let r = ProjectionRunner::new(Memory::new(), P).retries(3, Duration::from_millis(10), Duration::from_secs(1));
    /// # let _ = r;
    /// ```
    #[must_use]
    pub fn retries(mut self, retries: u32, first: Duration, max: Duration) -> Self {
        self.seat.set_retries(retries, first, max);
        self
    }

    /// Sets what happens to an event whose handler keeps failing (default [`OnFailure::Stop`]).
    ///
    /// ```
    /// # use eventcore::{backend::MemoryTx, subscription::{Projection, ProjectionRunner, OnFailure}, Memory, RecordedEvent};
    /// # struct P;
    /// # impl Projection<Memory> for P { type Error = std::convert::Infallible; fn name(&self) -> &str { "p" }
    /// #     async fn apply(&mut self, _: &mut MemoryTx, _: &RecordedEvent) -> Result<(), Self::Error> { Ok(()) } }
    /// let r = ProjectionRunner::new(Memory::new(), P).on_failure(OnFailure::Park);
    /// # let _ = r;
    /// ```
    #[must_use]
    pub fn on_failure(mut self, outcome: OnFailure) -> Self {
        self.on_failure = outcome;
        self
    }

    /// Sets what happens to a stored event that cannot be read at all (a broken row; default
    /// [`OnFailure::Stop`]).
    ///
    /// ```
    /// # use eventcore::{backend::MemoryTx, subscription::{Projection, ProjectionRunner, OnFailure}, Memory, RecordedEvent};
    /// # struct P;
    /// # impl Projection<Memory> for P { type Error = std::convert::Infallible; fn name(&self) -> &str { "p" }
    /// #     async fn apply(&mut self, _: &mut MemoryTx, _: &RecordedEvent) -> Result<(), Self::Error> { Ok(()) } }
    /// let r = ProjectionRunner::new(Memory::new(), P).on_unreadable(OnFailure::Park);
    /// # let _ = r;
    /// ```
    #[must_use]
    pub fn on_unreadable(mut self, outcome: OnFailure) -> Self {
        self.on_unreadable = outcome;
        self
    }

    /// Applies the projection's parked events again at the start of every term (when the
    /// runner has taken the lease, before it reads on from the checkpoint): after a fix to the
    /// handler is deployed, the events it parked reach the fixed handler when the runners
    /// restart. Each event, in position order, is tried once; one that the handler now applies
    /// is removed from [`ProjectionStore::parked`] in the same commit as what the handler
    /// wrote through `tx`, and one that still fails stays parked with its new reason (see
    /// [`ProjectionStore::retried`]). The checkpoint does not move.
    ///
    /// These events reach the handler **after** later events of their streams: a handler that
    /// is retried must not rely on the order of the events it gets. An event that the
    /// projection's [`filter`](Projection::filter) no longer passes stays parked, untouched;
    /// [`ProjectionStore::discard_parked`] drops one for good.
    ///
    /// Not with [`with_snapshots`](ProjectionRunner::with_snapshots): a stored snapshot
    /// covers the events around a parked one without it, so [`run`](Self::run) and
    /// [`catch_up`](Self::catch_up) return [`ProjectionError::Invalid`] at once. Rebuild such
    /// a projection under a new name instead (see [`catch_up`](Self::catch_up)).
    ///
    /// ```
    /// # use eventcore::{backend::MemoryTx, subscription::{Projection, ProjectionRunner, OnFailure}, Memory, RecordedEvent};
    /// # struct P;
    /// # impl Projection<Memory> for P { type Error = std::convert::Infallible; fn name(&self) -> &str { "p" }
    /// #     async fn apply(&mut self, _: &mut MemoryTx, _: &RecordedEvent) -> Result<(), Self::Error> { Ok(()) } }
    /// let r = ProjectionRunner::new(Memory::new(), P).on_failure(OnFailure::Park).retry_parked();
    /// # let _ = r;
    /// ```
    #[must_use]
    pub fn retry_parked(mut self) -> Self {
        self.retry_parked = true;
        self
    }

    /// Sets the most events per batch (default 500) and how long a caught-up runner waits for a
    /// wake-up before it looks again (default 500 ms). With a batch of 0 events or an interval
    /// of zero, [`run`](Self::run) and [`catch_up`](Self::catch_up) return
    /// [`ProjectionError::Invalid`] at once.
    ///
    /// ```
    /// # use eventcore::{backend::MemoryTx, subscription::{Projection, ProjectionRunner}, Memory, RecordedEvent};
    /// # struct P;
    /// # impl Projection<Memory> for P { type Error = std::convert::Infallible; fn name(&self) -> &str { "p" }
    /// #     async fn apply(&mut self, _: &mut MemoryTx, _: &RecordedEvent) -> Result<(), Self::Error> { Ok(()) } }
    /// let r = ProjectionRunner::new(Memory::new(), P).batches(100, std::time::Duration::from_millis(50));
    /// # let _ = r;
    /// ```
    #[must_use]
    pub fn batches(mut self, page_size: usize, poll_interval: Duration) -> Self {
        self.seat.set_batches(page_size, poll_interval);
        self
    }

    /// A handle on this runner's progress.
    ///
    /// ```
    /// # use eventcore::{backend::MemoryTx, subscription::{Projection, ProjectionRunner}, Memory, RecordedEvent};
    /// # struct P;
    /// # impl Projection<Memory> for P { type Error = std::convert::Infallible; fn name(&self) -> &str { "p" }
    /// #     async fn apply(&mut self, _: &mut MemoryTx, _: &RecordedEvent) -> Result<(), Self::Error> { Ok(()) } }
    /// let h = ProjectionRunner::new(Memory::new(), P).handle();
    /// # let _ = h;
    /// ```
    pub fn handle(&self) -> ProjectionHandle<S> {
        ProjectionHandle::new(self.store.clone(), self.seat.status.subscribe(), &self.seat.name)
    }

    /// Runs the projection until it stops on an error (it never stops otherwise: abort its
    /// task to end it, and its lease runs out before a standby takes over; or run it with
    /// [`run_until`](Self::run_until), which gives the lease up when it ends).
    ///
    /// # Errors
    /// [`ProjectionError::Stopped`] when an event failed and the outcome was to stop;
    /// [`ProjectionError::Invalid`], before anything is read, when the projection's filter
    /// names a category no stream can be in (see [`LogFilter::check`]), its name starts with
    /// `process:` (see [`Projection::name`]), its lease is shorter than
    /// [`MIN_LEASE`](super::MIN_LEASE) or longer than [`MAX_LEASE`](super::MAX_LEASE), its
    /// [`batches`](Self::batches) or [`retries`](Self::retries) settings are out of range
    /// (see there), or it was asked to [`retry_parked`](Self::retry_parked) events with
    /// snapshots. Store failures are retried, never returned.
    ///
    /// ```no_run
    /// # use eventcore::{backend::MemoryTx, subscription::{Projection, ProjectionRunner}, Memory, RecordedEvent};
    /// # struct P;
    /// # impl Projection<Memory> for P { type Error = std::convert::Infallible; fn name(&self) -> &str { "p" }
    /// #     async fn apply(&mut self, _: &mut MemoryTx, _: &RecordedEvent) -> Result<(), Self::Error> { Ok(()) } }
    /// # async fn demo() {
    /// tokio::spawn(ProjectionRunner::new(Memory::new(), P).run());
    /// # }
    /// ```
    pub async fn run(mut self) -> Result<std::convert::Infallible, ProjectionError> {
        self.check()?;
        loop {
            let lease = self.seat.claim(&self.store, &self.seat.name).await;
            self.run_once(false, lease).await?;
        }
    }

    /// Runs the projection as [`run`](Self::run) does until `stop` completes, then ends it and
    /// gives its lease up, so that a standby takes over at once rather than when the lease
    /// runs out: a replica shutting down in a rolling deploy passes its shutdown signal, and
    /// the projection's read model stops moving for a moment, not for a whole lease.
    ///
    /// What the runner was applying when `stop` came is left as an aborted task leaves it: a
    /// commit already sent may land (with its checkpoint, so nothing is applied twice);
    /// anything else is not committed (on PostgreSQL its transaction is rolled back), and is
    /// applied by whichever runner goes on. A look for the lease already sent is waited for,
    /// never dropped (one dropped could take the lease with nobody to give it up), so a stop
    /// that comes during one waits as long as it does. Its status then says
    /// [`Finished`](RunnerState::Finished).
    ///
    /// # Errors
    /// As [`run`](Self::run), when the runner stopped before `stop` came.
    ///
    /// ```
    /// # use eventcore::{backend::MemoryTx, subscription::{Projection, ProjectionRunner, RunnerState}, Memory, RecordedEvent};
    /// # struct P;
    /// # impl Projection<Memory> for P { type Error = std::convert::Infallible; fn name(&self) -> &str { "p" }
    /// #     async fn apply(&mut self, _: &mut MemoryTx, _: &RecordedEvent) -> Result<(), Self::Error> { Ok(()) } }
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// let (shut_down, shutdown) = tokio::sync::oneshot::channel::<()>();
    /// let runner = ProjectionRunner::new(Memory::new(), P);
    /// let handle = runner.handle();
    /// let task = tokio::spawn(runner.run_until(async { let _ = shutdown.await; }));
    /// // ... the service runs; at shutdown:
    /// let _ = shut_down.send(());
    /// task.await.unwrap()?;
    /// assert_eq!(handle.status().state, RunnerState::Finished);
    /// # Ok::<(), eventcore::subscription::ProjectionError>(())
    /// # }).unwrap();
    /// ```
    pub async fn run_until(
        mut self,
        stop: impl Future<Output = ()> + Send,
    ) -> Result<(), ProjectionError> {
        self.check()?;
        let mut stop = std::pin::pin!(stop);
        loop {
            // Not dropped in the middle of a claim: one that took the lease would keep it.
            let claimed = self.seat.claim_unless(&self.store, &self.seat.name, stop.as_mut());
            let Some(lease) = claimed.await else { break };
            self.held = Some(lease.clone());
            let term = std::pin::pin!(self.run_once(false, lease));
            match futures_util::future::select(stop.as_mut(), term).await {
                futures_util::future::Either::Right((ended, _)) => {
                    ended?;
                }
                futures_util::future::Either::Left(((), _)) => break,
            }
        }
        // Finished before the lease is given up: a standby of this process that takes it
        // over at once reports its own state after this one, not before.
        self.seat.report(|s| s.state = RunnerState::Finished);
        if let Some(lease) = self.held.take() {
            self.seat.give_up(&self.store, &lease).await;
        }
        Ok(())
    }

    /// Runs the projection until it has applied the whole log as it was when this was
    /// called, then returns its checkpoint (and releases its lease). For rebuilding a read
    /// model beside the old one: give the new version a new [`name`](Projection::name) and
    /// its own tables, catch it up (watching [`ProjectionHandle::lag`] for progress), switch
    /// the readers over, then start its [`run`](Self::run) for good.
    ///
    /// # Errors
    /// As [`run`](Self::run).
    ///
    /// ```
    /// # use eventcore::{backend::MemoryTx, subscription::{Projection, ProjectionRunner}, Memory, RecordedEvent};
    /// # struct P;
    /// # impl Projection<Memory> for P { type Error = std::convert::Infallible; fn name(&self) -> &str { "p" }
    /// #     async fn apply(&mut self, _: &mut MemoryTx, _: &RecordedEvent) -> Result<(), Self::Error> { Ok(()) } }
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// let reached = ProjectionRunner::new(Memory::new(), P).catch_up().await?;
    /// assert_eq!(reached, eventcore::GlobalPosition::START);
    /// # Ok::<(), eventcore::subscription::ProjectionError>(())
    /// # }).unwrap();
    /// ```
    pub async fn catch_up(mut self) -> Result<GlobalPosition, ProjectionError> {
        self.check()?;
        loop {
            let lease = self.seat.claim(&self.store, &self.seat.name).await;
            if let Some(reached) = self.run_once(true, lease).await? {
                self.seat.report(|s| s.state = RunnerState::Finished);
                return Ok(reached);
            }
        }
    }

    /// Checks the projection's name, filter and lease before anything is read.
    fn check(&self) -> Result<(), ProjectionError> {
        check_name(&self.seat.name).map_err(|e| self.seat.refuse(e))?;
        if self.retry_parked && self.snapshots.is_some() {
            return Err(self.seat.refuse(crate::ValidationError::new(
                "retry_parked",
                "a projection run with snapshots cannot apply parked events again: its stored \
                 snapshots cover the events around them without them; rebuild it under a new \
                 name instead",
            )));
        }
        self.seat.check(&self.projection.filter())
    }

    /// One term as the active runner, under `lease` (claimed by the caller): apply batches until the lease
    /// is lost (`Ok(None)`), the log as of the start is applied when `catching_up`
    /// (`Ok(Some(position))`), or the projection stops (`Err`).
    async fn run_once(
        &mut self,
        catching_up: bool,
        lease: Lease,
    ) -> Result<Option<GlobalPosition>, ProjectionError> {
        #[cfg(feature = "metrics")]
        if let Some(events) = self.unknown_batch.take() {
            // The commit whose reply was lost did commit as far as the checkpoint shows: the
            // term reads on after those events, so they are counted now.
            let committed: Vec<_> = (events.into_iter())
                .filter(|e| super::entry_position(e) <= lease.position)
                .collect();
            self.seat.committed(&committed);
        }
        if self.unknown_park.take().is_some_and(|at| at <= lease.position) {
            self.seat.report(|s| s.parked += 1);
        }
        // Claiming took the lease for a whole term.
        let mut renewed = std::time::Instant::now();
        // Reads of the log failed in a row: each waits longer, up to the longest backoff.
        let mut failed_reads = 0;
        let target = if catching_up { Some(self.head().await) } else { None };
        let start = self.start_from(&lease).await;
        if start > lease.position && self.snapshots.is_none() {
            // The value holds events the checkpoint is behind (see `applied_to`): store where
            // it is, or a quiet log would leave it behind for good.
            match self.commit_alone(&lease, start).await {
                Ok(Applied::Committed | Applied::Failed(_)) => {}
                Ok(Applied::LeaseLost) => {
                    self.seat.report(|s| s.state = RunnerState::Standby);
                    return Ok(None);
                }
                Ok(Applied::Unknown(e)) => {
                    self.commit_unknown(e).await;
                    return Ok(None);
                }
                Err(e) => self.seat.failed_store(&e),
            }
        }
        self.seat.report(|s| {
            s.position = start;
            s.state = RunnerState::CatchingUp;
        });
        let Some(start) = self.replay(&lease, start, &mut renewed).await? else {
            self.seat.report(|s| s.state = RunnerState::Standby);
            return Ok(None);
        };
        if self.retry_parked {
            match self.retry_parked_events(&lease, &mut renewed).await {
                BatchEnd::LeaseLost => {
                    self.seat.report(|s| s.state = RunnerState::Standby);
                    return Ok(None);
                }
                BatchEnd::Unknown(e) => {
                    self.commit_unknown(e).await;
                    return Ok(None);
                }
                BatchEnd::Done | BatchEnd::Resume(_) => {}
            }
        }
        let mut sub = self.seat.subscription(self.store.clone(), self.projection.filter(), start);
        loop {
            if let Some(target) = target {
                if sub.position() >= target {
                    // Finished before the lease is given up, as in `run_until`.
                    self.seat.report(|s| s.state = RunnerState::Finished);
                    self.seat.give_up(&self.store, &lease).await;
                    return Ok(Some(sub.position()));
                }
            }
            match self.seat.renew(&self.store, &lease, &mut renewed).await {
                Renewal::Held => {}
                Renewal::Lost => return Ok(None),
                Renewal::Retry => continue,
            }
            // Wake up in time to renew the lease, and to report the runner live when nothing
            // new comes.
            let batch = match sub.poll(self.seat.patience()).await {
                Ok(None) => {
                    failed_reads = 0;
                    self.seat.idle();
                    continue;
                }
                Err(e) => {
                    self.seat.failed_store(&e);
                    self.seat.back_off(&mut failed_reads).await;
                    continue;
                }
                Ok(Some(batch)) => {
                    failed_reads = 0;
                    batch
                }
            };
            let live = sub.caught_up();
            match self.apply_batch(&lease, &batch.events, batch.position, &mut renewed).await? {
                BatchEnd::Done => {
                    self.unknown_commits = 0;
                    self.seat.report(|s| {
                        s.position = batch.position;
                        s.state = if live { RunnerState::Live } else { RunnerState::CatchingUp };
                        s.last_error = None;
                    });
                }
                BatchEnd::LeaseLost => {
                    self.seat.report(|s| s.state = RunnerState::Standby);
                    return Ok(None);
                }
                BatchEnd::Unknown(e) => {
                    #[cfg(feature = "metrics")]
                    {
                        self.unknown_batch = Some(batch.events);
                    }
                    self.commit_unknown(e).await;
                    return Ok(None);
                }
                BatchEnd::Resume(at) => {
                    // Parked an event: read on after it.
                    sub = self.seat.subscription(self.store.clone(), self.projection.filter(), at);
                    self.seat.report(|s| s.position = at);
                }
            }
        }
    }

    /// Reports a commit whose outcome is unknown, and waits before the term ends (longer after
    /// each such term in a row). Applying the batch (or the parked event) again could apply it
    /// twice, and even a fresh look at the checkpoint could miss a commit still under way.
    /// Claiming the lease again waits for that commit (on PostgreSQL it holds the checkpoint's
    /// row) and finds the checkpoint as it left it; the new term reads on from there.
    async fn commit_unknown(&mut self, e: StoreError) {
        self.seat.report(|s| {
            s.last_error = Some(format!("commit outcome unknown: {e}"));
            s.state = RunnerState::Retrying;
        });
        self.seat.back_off(&mut self.unknown_commits).await;
    }

    /// Brings a state restored from a snapshot (or reset to the default) up to the checkpoint
    /// the lease found, when that is ahead: replays the events between the two
    /// ([`SnapshotProjection::replay`]), each batch in a transaction that is dropped, never
    /// committed. What the handler wrote through `tx` for those events was committed with the
    /// checkpoint the first time: on a store whose transactions roll back (PostgreSQL) it is
    /// not written twice, and on every store nothing (checkpoint, snapshot) is committed until
    /// the state has caught up. Parked events are skipped, as they were the first time. A
    /// handler failing on one of these events is retried as configured, then the runner stops
    /// (the event is in the read model already: parking it would be wrong). Answers where to
    /// read on; `Ok(None)` when the lease was lost. Without snapshots the term starts at the
    /// checkpoint, and there is nothing to replay.
    async fn replay(
        &mut self,
        lease: &Lease,
        from: GlobalPosition,
        renewed: &mut std::time::Instant,
    ) -> Result<Option<GlobalPosition>, ProjectionError> {
        let until = lease.position;
        let Some(replay) = self.snapshots.as_ref().map(|s| s.replay).filter(|_| from < until)
        else {
            return Ok(Some(from));
        };
        let (store, name) = (&self.store, &self.seat.name);
        // Parked events, and those discarded since: the handler applied neither.
        let parked = self.seat.answered(|| set_aside(store, name)).await;
        let mut sub = self.seat.subscription(self.store.clone(), self.projection.filter(), from);
        let mut attempt = 0u32;
        while sub.position() < until {
            match self.seat.renew(&self.store, lease, renewed).await {
                Renewal::Held => {}
                Renewal::Lost => return Ok(None),
                Renewal::Retry => continue,
            }
            let batch = match sub.poll(self.seat.patience()).await {
                Ok(Some(batch)) => batch,
                Err(e) => {
                    self.seat.report(|s| s.last_error = Some(e.to_string()));
                    self.seat.back_off(&mut attempt).await;
                    continue;
                }
                // Nothing new: the log holds events up to the checkpoint, unless it was cut
                // back (a store restored from a backup). Then read on from what it holds.
                Ok(None) if self.head().await < until => break,
                Ok(None) => continue,
            };
            let events: Vec<_> = (batch.events.iter())
                .filter(|e| {
                    let at = super::entry_position(e);
                    at <= until && !parked.contains(&at)
                })
                .collect();
            let mut tries = 0u32;
            loop {
                match self.replay_batch(lease, replay, &events).await {
                    Ok(Ok(())) => break,
                    Ok(Err((at, reason))) => {
                        let reason = format!(
                            "at position {at}, applying again the events between the snapshot and the checkpoint: {reason}"
                        );
                        self.seat.report(|s| {
                            s.last_error = Some(reason.clone());
                            s.state = RunnerState::Retrying;
                        });
                        if tries >= self.seat.retries {
                            self.seat.give_up(&self.store, lease).await;
                            return Err(self.seat.stop(at, reason));
                        }
                    }
                    Err(e) => self.seat.failed_store(&e),
                }
                if let Ok(false) = self.store.renew(lease, self.seat.lease).await {
                    return Ok(None);
                }
                self.seat.back_off(&mut tries).await;
            }
            attempt = 0;
            let reached = batch.position.min(until);
            self.seat.report(|s| {
                s.position = reached;
                s.state = RunnerState::CatchingUp;
                s.last_error = None;
            });
        }
        let reached = sub.position().min(until);
        if reached == until && !self.keep_replayed(lease, until).await {
            return Ok(None);
        }
        Ok(Some(reached))
    }

    /// Once a replay reached the checkpoint `until`, stores the snapshot the policy asks for,
    /// with the checkpoint where it is, in a transaction of its own (its handler wrote nothing
    /// there: what it wrote while replaying was dropped). Else a projection whose snapshot was
    /// discarded (another state type or version), or that had none yet, would apply the same
    /// events again at every start until its next event commits: a quiet one, for good.
    /// `false` when the lease was lost. A failure to store it is reported, and the term goes
    /// on: the next commit takes the snapshot.
    async fn keep_replayed(&mut self, lease: &Lease, until: GlobalPosition) -> bool {
        if !self.snapshots.as_ref().is_some_and(Snapshots::is_due) {
            return true;
        }
        match self.commit_alone(lease, until).await {
            Ok(Applied::LeaseLost) => false,
            Ok(Applied::Unknown(e)) | Err(e) => {
                self.seat.failed_store(&e);
                true
            }
            // `commit` answers nothing but these and `Committed`.
            Ok(Applied::Committed | Applied::Failed(_)) => true,
        }
    }

    /// Commits the checkpoint at `at` (and the snapshot the policy asks for) in a transaction
    /// of its own, which the handler wrote nothing in. `Err` when the transaction could not be
    /// begun: nothing was committed.
    async fn commit_alone(
        &mut self,
        lease: &Lease,
        at: GlobalPosition,
    ) -> Result<Applied, StoreError> {
        let tx = self.store.begin(lease).await?;
        Ok(self.commit(tx, lease, at, None).await)
    }

    /// Applies the projection's parked events again, each once, in position order (see
    /// [`retry_parked`](Self::retry_parked)). Store failures before a commit are retried with
    /// backoff; a failed commit ends the pass as [`BatchEnd::Unknown`] (it may have committed:
    /// the next term reads the parked events anew rather than apply one twice).
    async fn retry_parked_events(
        &mut self,
        lease: &Lease,
        renewed: &mut std::time::Instant,
    ) -> BatchEnd {
        let (store, name) = (&self.store, &self.seat.name);
        let parked = self.seat.answered(|| store.parked(name)).await;
        if let Some(at) = self.unknown_unpark.take() {
            // The commit whose reply was lost took it off the list: it was applied.
            if !parked.iter().any(|p| p.position == at) {
                self.seat.report(|s| s.unparked += 1);
            }
        }
        let filter = self.projection.filter();
        for parked in parked {
            let mut failures = 0u32;
            loop {
                match self.seat.renew(&self.store, lease, renewed).await {
                    Renewal::Held => {}
                    Renewal::Lost => return BatchEnd::LeaseLost,
                    Renewal::Retry => continue,
                }
                match self.retry_one(lease, &filter, parked.position).await {
                    Ok(Retried::Applied) => {
                        tracing::info!(
                            projection = &*self.seat.name,
                            position = parked.position.get(),
                            "parked event applied"
                        );
                        self.seat.report(|s| s.unparked += 1);
                        break;
                    }
                    Ok(Retried::StillFails(reason)) => {
                        tracing::warn!(
                            projection = &*self.seat.name,
                            position = parked.position.get(),
                            reason,
                            "parked event still fails; it stays parked"
                        );
                        break;
                    }
                    Ok(Retried::Skipped) => break,
                    Ok(Retried::LeaseLost) => return BatchEnd::LeaseLost,
                    Ok(Retried::Unknown(e)) => return BatchEnd::Unknown(e),
                    Err(e) => {
                        self.seat.failed_store(&e);
                        self.seat.back_off(&mut failures).await;
                    }
                }
            }
        }
        BatchEnd::Done
    }

    /// One try of parked event `at`: reads it, applies it in a transaction and records the
    /// outcome with [`ProjectionStore::retried`]. `Err` is a store failure before the commit:
    /// nothing was committed.
    async fn retry_one(
        &mut self,
        lease: &Lease,
        filter: &LogFilter,
        at: GlobalPosition,
    ) -> Result<Retried, StoreError> {
        let event = match super::entry_at(&self.store, at).await? {
            Some(Ok(event)) => Ok(event),
            Some(Err(unreadable)) => Err(unreadable.to_string()),
            None => Err(format!("the log holds no event at position {at} any more")),
        };
        if event.as_ref().is_ok_and(|event| !filter.matches(event)) {
            return Ok(Retried::Skipped);
        }
        let mut tx = self.store.begin(lease).await?;
        let outcome = match event {
            // The value holds it already (see `unparked_in_value`): only the list is behind.
            Ok(_) if !S::TX_ROLLS_BACK && self.unparked_in_value.contains(&at) => Ok(()),
            Ok(event) => match self.apply(&mut tx, &event).await {
                Ok(()) => {
                    if !S::TX_ROLLS_BACK {
                        self.unparked_in_value.insert(at);
                    }
                    Ok(())
                }
                Err(e) => {
                    // What the handler wrote goes with its transaction.
                    drop(tx);
                    tx = self.store.begin(lease).await?;
                    Err(error_chain(&e))
                }
            },
            Err(reason) => Err(reason),
        };
        let reason = outcome.as_ref().err().cloned();
        Ok(match self.store.retried(tx, lease, at, outcome).await {
            Ok(true) => match reason {
                None => {
                    self.unparked_in_value.remove(&at);
                    Retried::Applied
                }
                Some(reason) => {
                    let error = format!("parked event at position {at} still fails: {reason}");
                    self.seat.report(|s| s.last_error = Some(error));
                    Retried::StillFails(reason)
                }
            },
            Ok(false) => Retried::LeaseLost,
            Err(e) => {
                if reason.is_none() {
                    self.unknown_unpark = Some(at);
                }
                Retried::Unknown(e)
            }
        })
    }

    /// One try of a batch of [`replay`](Self::replay): replays the events with `replay`
    /// ([`SnapshotProjection::replay`]) in a transaction it drops. On a failure the projection
    /// value goes back to where it was before the batch, and the answer is the failing event's
    /// position and what went wrong.
    async fn replay_batch(
        &mut self,
        lease: &Lease,
        replay: Replay<S, P>,
        events: &[&Result<RecordedEvent, UnreadableEvent>],
    ) -> Result<Result<(), (GlobalPosition, String)>, StoreError> {
        let mark = self.snapshots.as_ref().map(|s| s.mark(&self.projection));
        let outcome = async {
            let mut tx = self.store.begin(lease).await?;
            for entry in events {
                let event = match entry {
                    Ok(event) => event,
                    Err(u) => return Ok(Err((u.position, u.to_string()))),
                };
                if let Err(reason) = replay(&mut self.projection, &mut tx, event).await {
                    return Ok(Err((event.position, reason)));
                }
                if let Some(snapshots) = &mut self.snapshots {
                    snapshots.applied(event);
                }
            }
            // Not committed: the first time these events were applied, what the handler wrote
            // through `tx` was committed with the checkpoint.
            drop(tx);
            Ok(Ok(()))
        }
        .await;
        if !matches!(outcome, Ok(Ok(()))) {
            self.rewind(mark.as_ref());
        }
        outcome
    }

    /// Applies one batch, retrying with backoff, then as configured.
    async fn apply_batch(
        &mut self,
        lease: &Lease,
        events: &[Result<RecordedEvent, UnreadableEvent>],
        position: GlobalPosition,
        renewed: &mut std::time::Instant,
    ) -> Result<BatchEnd, ProjectionError> {
        // Events before `start` are applied and committed (stores whose transactions do not
        // roll back commit after every event).
        let mut start = 0;
        let end = self.try_batch(lease, events, position, &mut start, renewed).await;
        if let Ok(BatchEnd::LeaseLost) = end {
            // Those committed one by one before the lease was lost: the runner that holds it
            // now reads on after them.
            self.seat.committed(&events[..start]);
        }
        end
    }

    /// [`apply_batch`](Self::apply_batch), moving `start` past each event committed alone.
    async fn try_batch(
        &mut self,
        lease: &Lease,
        events: &[Result<RecordedEvent, UnreadableEvent>],
        position: GlobalPosition,
        start: &mut usize,
        renewed: &mut std::time::Instant,
    ) -> Result<BatchEnd, ProjectionError> {
        let mut attempt = 0u32;
        // A state in the projection value outlives a rolled-back batch: go back to this.
        let mark = self.mark();
        loop {
            let outcome = self.attempt(lease, events, start, position, renewed).await;
            if !matches!(outcome, Ok(Applied::Committed)) {
                self.rewind(mark.as_ref());
            }
            let failure = match outcome {
                Ok(Applied::Committed) => {
                    self.seat.committed(events);
                    return Ok(BatchEnd::Done);
                }
                Ok(Applied::LeaseLost) => return Ok(BatchEnd::LeaseLost),
                Ok(Applied::Unknown(e)) => return Ok(BatchEnd::Unknown(e)),
                Ok(Applied::Failed(f)) => f,
                Err(e) => {
                    // The store failed: the batch is not the event's fault; retry for ever.
                    self.seat.failed_store(&e);
                    self.seat.back_off(&mut attempt).await;
                    continue;
                }
            };
            // A failure may come from having lost the lease (another runner applied these
            // events meanwhile): then stand by instead of retrying or giving up.
            if let Ok(false) = self.store.renew(lease, self.seat.lease).await {
                return Ok(BatchEnd::LeaseLost);
            }
            let at = match &events[failure.index] {
                Ok(e) => (e.position, Some(e.event_id()), e.stream_id.to_string()),
                Err(u) => (u.position, u.event_id, u.stream.clone()),
            };
            self.seat.report(|s| {
                s.last_error = Some(format!("at position {}: {}", at.0, failure.reason));
                s.state = RunnerState::Retrying;
            });
            if attempt < self.seat.retries {
                self.seat.back_off(&mut attempt).await;
                continue;
            }
            let before = &events[*start..failure.index];
            if failure.outcome == OnFailure::Park && failure.parkable {
                let parked = ParkedEvent::new(at.0, at.1, at.2, failure.reason);
                let settled = self.settle(
                    lease,
                    before,
                    parked.position,
                    Some(parked),
                    mark.as_ref(),
                    renewed,
                );
                return Ok(match settled.await {
                    Applied::Committed => {
                        // Those before it were committed with it (or one by one before).
                        self.seat.committed(&events[..=failure.index]);
                        self.seat.report(|s| s.parked += 1);
                        BatchEnd::Resume(at.0)
                    }
                    Applied::Unknown(e) => {
                        self.unknown_park = Some(at.0);
                        BatchEnd::Unknown(e)
                    }
                    Applied::LeaseLost | Applied::Failed(_) => BatchEnd::LeaseLost,
                });
            }
            // Stop right before the event: what came before it in the batch is kept.
            let last_good = before.iter().rev().find_map(|e| e.as_ref().ok().map(|e| e.position));
            if let Some(good) = last_good {
                match self.settle(lease, before, good, None, mark.as_ref(), renewed).await {
                    Applied::Committed => {}
                    Applied::Unknown(e) => return Ok(BatchEnd::Unknown(e)),
                    Applied::LeaseLost | Applied::Failed(_) => return Ok(BatchEnd::LeaseLost),
                }
                self.seat.report(|s| s.position = s.position.max(good));
            }
            // Every event before it is committed, now or one by one before.
            self.seat.committed(&events[..failure.index]);
            self.seat.give_up(&self.store, lease).await;
            return Err(self.seat.stop(at.0, failure.reason));
        }
    }

    /// One try of a batch from its event `start` on: apply every event, then commit with the
    /// checkpoint (after every event, too, where the store's transactions do not roll back;
    /// `start` then moves past each event committed, so that a try after a failure, even one
    /// to begin the next transaction, does not apply them again).
    /// A failed commit is [`Applied::Unknown`], never retried here: it may have committed.
    /// Before the first event and after each, the lease is renewed when due (see
    /// [`Seat::renew_in_batch`]).
    async fn attempt(
        &mut self,
        lease: &Lease,
        events: &[Result<RecordedEvent, UnreadableEvent>],
        start: &mut usize,
        position: GlobalPosition,
        renewed: &mut std::time::Instant,
    ) -> Result<Applied, StoreError> {
        // The run loop's last look at the lease may be up to a third of it ago.
        if !self.seat.renew_in_batch(&self.store, lease, renewed).await {
            return Ok(Applied::LeaseLost);
        }
        let mut tx = self.store.begin(lease).await?;
        for (index, entry) in events.iter().enumerate().skip(*start) {
            let event = match entry {
                Ok(event) => event,
                Err(u) => {
                    return Ok(Applied::Failed(Failure {
                        index,
                        reason: u.to_string(),
                        parkable: !is_unknown_kind(u.decode_error.as_ref()),
                        outcome: self.on_unreadable,
                    }));
                }
            };
            if let Err(e) = self.apply(&mut tx, event).await {
                return Ok(Applied::Failed(Failure {
                    index,
                    reason: error_chain(&e),
                    parkable: !unknown_kind_in(&e),
                    outcome: self.on_failure,
                }));
            }
            if !S::TX_ROLLS_BACK {
                self.applied_to = self.applied_to.max(event.position);
                match self.commit(tx, lease, event.position, None).await {
                    Applied::Committed => {
                        *start = index + 1;
                        self.seat.report(|s| s.position = s.position.max(event.position));
                    }
                    not_committed => {
                        // Another runner may yet park it (its handler fails on it): applied
                        // again from the list, it would be in the value twice.
                        self.unparked_in_value.insert(event.position);
                        return Ok(not_committed);
                    }
                }
                tx = self.store.begin(lease).await?;
            }
            if !self.seat.renew_in_batch(&self.store, lease, renewed).await {
                return Ok(Applied::LeaseLost);
            }
        }
        Ok(self.commit(tx, lease, position, None).await)
    }

    /// Applies the events before a poisoned one (those not committed yet) and commits them with
    /// the checkpoint at `position`, parking `parked` in the same commit if given. Failures
    /// before the commit are retried; the answer is how the commit went
    /// ([`Applied::Committed`], [`Applied::LeaseLost`] or [`Applied::Unknown`]). Between two
    /// events applied again the lease is renewed when due, as in a batch: applying them again
    /// may take as long as the batch did, longer than the lease.
    async fn settle(
        &mut self,
        lease: &Lease,
        before: &[Result<RecordedEvent, UnreadableEvent>],
        position: GlobalPosition,
        parked: Option<ParkedEvent>,
        mark: Option<&Mark>,
        renewed: &mut std::time::Instant,
    ) -> Applied {
        let mut attempt = 0;
        loop {
            let result: Result<Applied, StoreError> = async {
                if !self.seat.renew_in_batch(&self.store, lease, renewed).await {
                    return Ok(Applied::LeaseLost);
                }
                let mut tx = self.store.begin(lease).await?;
                if S::TX_ROLLS_BACK {
                    for event in before.iter().flatten() {
                        if let Err(e) = self.apply(&mut tx, event).await {
                            return Err(StoreError::Other(error_chain(&e).into()));
                        }
                        if !self.seat.renew_in_batch(&self.store, lease, renewed).await {
                            return Ok(Applied::LeaseLost);
                        }
                    }
                }
                Ok(self.commit(tx, lease, position, parked.clone()).await)
            }
            .await;
            if !matches!(result, Ok(Applied::Committed)) {
                self.rewind(mark);
            }
            match result {
                Ok(done) => return done,
                Err(e) => {
                    self.seat.report(|s| s.last_error = Some(e.to_string()));
                    if let Ok(false) = self.store.renew(lease, self.seat.lease).await {
                        return Applied::LeaseLost;
                    }
                    self.seat.back_off(&mut attempt).await;
                }
            }
        }
    }

    /// The last position of the log, asking until the store answers.
    //
    // Here and below, what is awaited borrows fields (the store, the seat) rather than the
    // runner: a future holding `&self` would make `run` require a `Sync` projection.
    async fn head(&mut self) -> GlobalPosition {
        let store = &self.store;
        // Counting the events after the last possible position costs nothing (an empty range);
        // counting them from the start would count the whole log (on PostgreSQL, a scan of
        // every entry of its index) at every takeover, only to throw the count away.
        let end = GlobalPosition::new(u64::MAX);
        self.seat.answered(|| store.log_stats(end, 0)).await.head
    }

    /// Applies one event, counting it for the snapshot policy.
    async fn apply(&mut self, tx: &mut S::Tx, event: &RecordedEvent) -> Result<(), P::Error> {
        self.projection.apply(tx, event).await?;
        if let Some(snapshots) = &mut self.snapshots {
            snapshots.applied(event);
        }
        Ok(())
    }

    /// Commits the checkpoint at `position` (and `parked`), with a snapshot of the state when
    /// the runner takes them and the policy says so. A store error is [`Applied::Unknown`]: the
    /// store may have committed and lost the reply, so the batch must not be applied again
    /// before the checkpoint is read anew (see `BatchEnd::Unknown`).
    async fn commit(
        &mut self,
        tx: S::Tx,
        lease: &Lease,
        position: GlobalPosition,
        parked: Option<ParkedEvent>,
    ) -> Applied {
        let name = &*self.seat.name;
        let snapshot =
            (self.snapshots.as_ref()).and_then(|s| s.due(name, &self.projection, position));
        let taken = snapshot.is_some();
        match self.store.commit(tx, lease, position, parked, snapshot).await {
            Ok(true) => {
                if let (true, Some(snapshots)) = (taken, &mut self.snapshots) {
                    snapshots.taken();
                }
                Applied::Committed
            }
            Ok(false) => Applied::LeaseLost,
            Err(e) => Applied::Unknown(e),
        }
    }

    /// Where a term starts reading: without snapshots, the checkpoint; with them, the stored
    /// snapshot's position with its state restored, or the start of the log with the default
    /// state (see [`SnapshotProjection`]).
    async fn start_from(&mut self, lease: &Lease) -> GlobalPosition {
        if self.snapshots.is_none() {
            // What the value already holds is not applied to it again (see `applied_to`).
            return if S::TX_ROLLS_BACK {
                lease.position
            } else {
                lease.position.max(self.applied_to)
            };
        }
        let (store, name, filter) = (&self.store, &self.seat.name, self.projection.filter());
        let page = self.seat.page_size;
        let (stored, present) =
            self.seat.answered(|| stored_snapshot(store, name, &filter, page)).await;
        match &mut self.snapshots {
            Some(snapshots) => {
                snapshots.start(name, &mut self.projection, stored.as_ref(), present)
            }
            None => lease.position,
        }
    }

    /// The projection's state and tally before a batch, when a rolled-back batch must be undone
    /// in the projection value (snapshots on a store whose transactions roll back).
    fn mark(&self) -> Option<Mark> {
        let snapshots = self.snapshots.as_ref().filter(|_| S::TX_ROLLS_BACK)?;
        Some(snapshots.mark(&self.projection))
    }

    /// Goes back to `mark`, if there is one.
    fn rewind(&mut self, mark: Option<&Mark>) {
        if let (Some(snapshots), Some(mark)) = (&mut self.snapshots, mark) {
            snapshots.rewind(&mut self.projection, mark);
        }
    }
}

impl<S: ProjectionStore, P: SnapshotProjection<S>> ProjectionRunner<S, P> {
    /// Stores snapshots of the projection's state with its checkpoint, as `policy` says
    /// ([`SnapshotPolicy::every`]`(n)`: in the first commit after `n` events were applied
    /// since the last one; [`SnapshotPolicy::load_only`]: never), and starts every term from
    /// the stored one: a restarted runner applies only the events after it. Without a
    /// trustworthy snapshot the runner applies the log from its start to the default state,
    /// never from the checkpoint (see [`SnapshotProjection`] for the rule).
    ///
    /// ```
    /// # use eventcore::{backend::MemoryTx, Memory, RecordedEvent, Snapshot, SnapshotPolicy};
    /// # use eventcore::subscription::{Projection, ProjectionRunner, SnapshotProjection};
    /// # #[derive(Default, Clone, serde::Serialize, serde::Deserialize)] struct Totals(u64);
    /// # impl Snapshot for Totals { const NAME: &'static str = "totals"; const VERSION: u32 = 1; }
    /// # #[derive(Default)] struct Count(Totals);
    /// # impl Projection<Memory> for Count {
    /// #     type Error = std::convert::Infallible;
    /// #     fn name(&self) -> &str { "count" }
    /// #     async fn apply(&mut self, _: &mut MemoryTx, _: &RecordedEvent) -> Result<(), Self::Error> { self.0.0 += 1; Ok(()) }
    /// # }
    /// # impl SnapshotProjection<Memory> for Count {
    /// #     type State = Totals;
    /// #     fn state(&self) -> &Totals { &self.0 }
    /// #     fn restore(&mut self, state: Totals) { self.0 = state; }
    /// # }
    /// let runner = ProjectionRunner::new(Memory::new(), Count::default())
    ///     .with_snapshots(SnapshotPolicy::every(1_000));
    /// # let _ = runner;
    /// ```
    #[must_use]
    pub fn with_snapshots(mut self, policy: SnapshotPolicy) -> Self {
        self.snapshots = Some(Snapshots::new(policy));
        self
    }
}

/// Projection `name`'s stored snapshot in `store`, and whether the log is still the one it
/// covers: the log holds the last event it applied, and, after that event and up to the
/// snapshot's position, nothing that passes `filter` but events the projection parked (a
/// checkpoint moves past events the filter skips; one that passes it and was not applied means
/// the log changed under the snapshot). Reads that stretch `page` events at a time.
async fn stored_snapshot<S: ProjectionStore>(
    store: &S,
    name: &str,
    filter: &LogFilter,
    page: usize,
) -> Result<(Option<ProjectionSnapshot>, bool), StoreError> {
    let stored = store.snapshot(name).await?;
    let present = match stored.as_ref().and_then(|s| Some((s.last_event?, s.position))) {
        Some((last, until)) => covers(store, Some(name), filter, page, last, until).await?,
        None => false,
    };
    Ok((stored, present))
}

/// Whether the log is still the one a snapshot covers: it holds event `last` (its position
/// and id) there, and, after it and up to `until`, nothing that passes `filter` but events
/// projection `name` parked (none when `name` is `None`). Reads that stretch `page` events at
/// a time.
pub(crate) async fn covers<S: ProjectionStore>(
    store: &S,
    name: Option<&str>,
    filter: &LogFilter,
    page: usize,
    (at, id): (GlobalPosition, EventId),
    until: GlobalPosition,
) -> Result<bool, StoreError> {
    Ok(event_id_at(store, at).await? == Some(id)
        && nothing_unapplied(store, name, filter, page, at, until).await?)
}

/// The positions of the events projection `name` never applied: those it parked, and those
/// discarded since ([`ProjectionStore::discarded`]).
async fn set_aside<S: ProjectionStore>(
    store: &S,
    name: &str,
) -> Result<HashSet<GlobalPosition>, StoreError> {
    let mut all: HashSet<GlobalPosition> =
        store.parked(name).await?.iter().map(|p| p.position).collect();
    all.extend(store.discarded(name).await?);
    Ok(all)
}

/// Whether the log holds every position up to `until`, and nothing after `after` and up to
/// `until` that passes `filter` except events projection `name` parked (or that were
/// discarded after being parked); with no `name`, nothing at all.
async fn nothing_unapplied<S: ProjectionStore>(
    store: &S,
    name: Option<&str>,
    filter: &LogFilter,
    page: usize,
    after: GlobalPosition,
    until: GlobalPosition,
) -> Result<bool, StoreError> {
    let mut parked: Option<HashSet<GlobalPosition>> = None;
    let mut read = after;
    while read < until {
        let found = store.read_log(read, filter, page).await?;
        for entry in &found.entries {
            let at = super::entry_position(entry);
            if at > until {
                return Ok(true);
            }
            if parked.is_none() {
                parked = Some(match name {
                    Some(name) => set_aside(store, name).await?,
                    None => HashSet::new(),
                });
            }
            if !parked.as_ref().is_some_and(|p| p.contains(&at)) {
                return Ok(false);
            }
        }
        if found.checked_to <= read {
            // The log ends before `until` (it was cut back): events appended there later would
            // be taken for covered.
            return Ok(false);
        }
        read = found.checked_to;
    }
    Ok(true)
}

/// The id of the event at `position` in `store`'s log, if it holds one there.
async fn event_id_at<S: ProjectionStore>(
    store: &S,
    position: GlobalPosition,
) -> Result<Option<EventId>, StoreError> {
    Ok(match super::entry_at(store, position).await? {
        Some(Ok(event)) => Some(event.event_id()),
        Some(Err(unreadable)) => unreadable.event_id,
        None => None,
    })
}

/// The longest projection name, in bytes of UTF-8: as long as a stream id. PostgreSQL keys
/// the lease, the checkpoint and the parked events by it, and cannot index much longer text.
const MAX_NAME_LEN: usize = crate::StreamId::MAX_LEN;

/// Refuses a projection name longer than [`MAX_NAME_LEN`] bytes, or that holds U+0000
/// (PostgreSQL keeps none in `text`: every claim would fail), or that starts with `process:`,
/// the prefix of process managers' leases and checkpoints (see `ProcessRunner`): the two would
/// share one lease and checkpoint.
fn check_name(name: &str) -> Result<(), crate::ValidationError> {
    if name.len() > MAX_NAME_LEN {
        return Err(crate::ValidationError::new(
            "projection name",
            format!(
                "is {} bytes long; at most {MAX_NAME_LEN} (PostgreSQL cannot index a long one)",
                name.len()
            ),
        ));
    }
    if name.contains('\0') {
        return Err(crate::ValidationError::new(
            "projection name",
            format!("{name:?} contains U+0000, which PostgreSQL cannot keep in a name"),
        ));
    }
    if name.starts_with(super::process::LEASE_PREFIX) {
        return Err(crate::ValidationError::new(
            "projection name",
            format!(
                "`{name}` starts with `{}`, which names process managers' leases and checkpoints",
                super::process::LEASE_PREFIX
            ),
        ));
    }
    Ok(())
}

/// How [`ProjectionRunner::apply_batch`] ended.
enum BatchEnd {
    Done,
    LeaseLost,
    /// A commit failed without telling whether it committed: the term ends, and the next one
    /// starts from the checkpoint as the store holds it.
    Unknown(StoreError),
    /// An event was parked at this position: read on after it.
    Resume(GlobalPosition),
}

/// How applying a parked event again went.
enum Retried {
    /// The handler applied it; it is no longer parked.
    Applied,
    /// The handler failed again (or it cannot be read): it stays parked with this reason.
    StillFails(String),
    /// The projection's filter no longer passes it: left parked as it was.
    Skipped,
    /// The lease was lost: nothing was committed.
    LeaseLost,
    /// The commit failed, and whether it committed is unknown.
    Unknown(StoreError),
}

/// Whether a decode error says the event is of a kind the code does not know (a newer schema
/// version, or another type): such an event must not be parked.
fn is_unknown_kind(error: Option<&DecodeError>) -> bool {
    error.is_some_and(DecodeError::is_unknown_kind)
}

/// Whether a handler error's chain holds the marker a [`DecodeError`] of an unknown kind gives
/// as its `source()`: found after the decode error itself, and also behind a wrapper marked
/// `#[error(transparent)]`, which forwards `source()` past the decode error it holds.
fn unknown_kind_in(error: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(error), |e| e.source()).any(|e| e.is::<crate::event::UnknownKind>())
}

/// An error and its sources, as one line.
pub(super) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(e) = next {
        text.push_str(": ");
        text.push_str(&e.to_string());
        next = e.source();
    }
    text
}
