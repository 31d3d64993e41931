//! What the projection runner and the process runner share: who they are, how they hold
//! their lease, how they back off, how big their batches are, and where they report.

use std::{future::Future, sync::Arc, time::Duration};

use futures_util::future::{Either, select};
use tokio::sync::watch;

use super::{Lease, ProjectionError, ProjectionStatus, ProjectionStore, RunnerState, Subscription};
use crate::{
    GlobalPosition,
    backend::{LogFilter, StoreError},
};

/// How renewing a lease went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Renewal {
    /// Still held.
    Held,
    /// Another runner took it: stand by.
    Lost,
    /// The store failed: try again.
    Retry,
}

/// One runner's place: its identity, settings and status.
#[derive(Debug)]
pub(crate) struct Seat {
    /// The name reported in the status (the projection's or process manager's).
    pub(crate) name: Arc<str>,
    /// The runner's id, as lease holder.
    pub(crate) owner: uuid::Uuid,
    pub(crate) lease: Duration,
    pub(crate) retries: u32,
    /// Backoff between tries: doubling from the first up to the second.
    pub(crate) backoff: (Duration, Duration),
    pub(crate) page_size: usize,
    pub(crate) poll_interval: Duration,
    pub(crate) status: watch::Sender<ProjectionStatus>,
}

/// The longest a standby waits before it looks for the lease again.
const LEASE_LOOK: Duration = Duration::from_secs(1);

/// The reason a runner dropped while it ran reports.
pub(crate) const DROPPED: &str = "the runner ended without stopping: its task was aborted or \
    panicked, or its future was dropped; nothing reads the log for it any more";

impl Drop for Seat {
    /// A runner dropped while it ran (its task aborted, or panicked in a handler) reports
    /// itself stopped (and logs it, at `info`), so that its handle and its metrics no longer
    /// say it is live (a readiness check would go on passing, and the state gauge would never
    /// leave `live`).
    /// One that never started, or that stopped or finished, reports nothing more.
    fn drop(&mut self) {
        let state = self.status.borrow().state.clone();
        if matches!(state, RunnerState::Starting | RunnerState::Stopped | RunnerState::Finished) {
            return;
        }
        // Not a warning: ending a runner by aborting its task is how a service shuts down (a
        // panic, tokio reports itself).
        tracing::info!(runner = &*self.name, was = ?state, "{DROPPED}");
        self.report(|s| {
            s.state = RunnerState::Stopped;
            s.last_error = Some(DROPPED.to_owned());
        });
    }
}

impl Seat {
    pub(crate) fn new(name: &str) -> Self {
        let name: Arc<str> = Arc::from(name);
        let (status, _) = watch::channel(ProjectionStatus::new(&name));
        Self {
            name,
            owner: crate::types::clock::v7_now(),
            lease: Duration::from_secs(30),
            retries: 5,
            backoff: (Duration::from_millis(100), Duration::from_secs(5)),
            page_size: 500,
            poll_interval: Duration::from_millis(500),
            status,
        }
    }

    /// The lease's length: one shorter than [`MIN_LEASE`](super::MIN_LEASE) or longer than
    /// [`MAX_LEASE`](super::MAX_LEASE) is kept, and refused by [`check`](Self::check).
    pub(crate) fn set_lease(&mut self, lease: Duration) {
        self.lease = lease;
    }

    /// Retries of a failure, and the backoff between them (doubling from `first` to `max`;
    /// a `max` below `first` is kept, and refused by [`check`](Self::check)).
    pub(crate) fn set_retries(&mut self, retries: u32, first: Duration, max: Duration) {
        self.retries = retries;
        self.backoff = (first, max);
    }

    /// Events per batch and the subscription's poll interval (zero of either is kept, and
    /// refused by [`check`](Self::check)).
    pub(crate) fn set_batches(&mut self, page_size: usize, poll_interval: Duration) {
        self.page_size = page_size;
        self.poll_interval = poll_interval;
    }

    /// Waits until this runner holds lease `key`, as a standby meanwhile.
    pub(crate) async fn claim<S: ProjectionStore>(&self, store: &S, key: &str) -> Lease {
        let mut never = std::pin::pin!(std::future::pending::<()>());
        loop {
            // `None` only when the stop comes, which this one never does.
            if let Some(lease) = self.claim_unless(store, key, never.as_mut()).await {
                return lease;
            }
        }
    }

    /// As [`claim`](Self::claim), until `stop` comes (`None`). `stop` is only waited for
    /// between looks, never during one: a look dropped once sent may take the lease in the
    /// store all the same (on PostgreSQL its statement runs on, and the claim ends with another
    /// statement), and nothing would give that lease up.
    pub(crate) async fn claim_unless<S: ProjectionStore>(
        &self,
        store: &S,
        key: &str,
        mut stop: std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> Option<Lease> {
        let mut attempt = 0;
        loop {
            match store.claim(key, self.owner, self.lease).await {
                Ok(Some(lease)) => return Some(lease),
                Ok(None) => {
                    self.report(|s| s.state = RunnerState::Standby);
                    // Another runner is active; look again well within its lease, and at least
                    // every second, so that a lease given up (a runner ended by `run_until`,
                    // a catch-up that finished) is taken over at once, not after a quarter of
                    // a lease of many seconds. A look costs a statement or two.
                    let wait = std::pin::pin!(tokio::time::sleep((self.lease / 4).min(LEASE_LOOK)));
                    if let Either::Left(_) = select(stop.as_mut(), wait).await {
                        return None;
                    }
                }
                Err(e) => {
                    self.failed_store(&e);
                    let wait = std::pin::pin!(self.back_off(&mut attempt));
                    if let Either::Left(_) = select(stop.as_mut(), wait).await {
                        return None;
                    }
                }
            }
        }
    }

    /// Renews `lease` for another term when a third of it has passed since `renewed` (and
    /// then resets `renewed`). On a lost lease it reports the runner a standby; on a store
    /// failure it reports the error and backs off.
    pub(crate) async fn renew<S: ProjectionStore>(
        &self,
        store: &S,
        lease: &Lease,
        renewed: &mut std::time::Instant,
    ) -> Renewal {
        if !self.renewal_due(renewed) {
            return Renewal::Held;
        }
        match store.renew(lease, self.lease).await {
            Ok(held) => self.renewed(held, renewed),
            Err(e) => {
                self.failed_store(&e);
                self.pause(0).await;
                Renewal::Retry
            }
        }
    }

    /// Renews the lease before an event of a batch (and before its commit) once a third of it
    /// has passed since the last renewal; `false` when it was lost (the batch cannot commit:
    /// stop it; the runner is reported a standby). A renewal that fails (reported as the
    /// status's `last_error`, until the batch commits), or that would have to wait for a
    /// connection (the batch's transaction may hold the only one), is tried again before the
    /// next event, and left to the batch's commit, which the lease fences.
    ///
    /// So a batch that takes longer than the lease, event after event, keeps it and commits,
    /// where its commit used to be refused for a lease that ran out with nobody else wanting
    /// it (on PostgreSQL, where a batch commits whole, the same batch then failed the same way
    /// term after term, and the projection never moved). A handler that hangs reaches no next
    /// event, so its lease runs out and a standby takes over, as from a runner that died.
    pub(crate) async fn renew_in_batch<S: ProjectionStore>(
        &self,
        store: &S,
        lease: &Lease,
        renewed: &mut std::time::Instant,
    ) -> bool {
        if !self.renewal_due(renewed) {
            return true;
        }
        match store.try_renew(lease, self.lease).await {
            Ok(Some(held)) => self.renewed(held, renewed) == Renewal::Held,
            Ok(None) => true,
            Err(e) => {
                // The batch goes on (its commit is fenced by the lease), but the failure is
                // reported: a store that keeps failing here will fail that commit too.
                tracing::warn!(
                    runner = &*self.name,
                    error = %e,
                    "eventcore runner could not renew its lease within a batch; it tries again \
                     before the next event"
                );
                self.report(|s| s.last_error = Some(format!("renewing the lease in a batch: {e}")));
                true
            }
        }
    }

    /// Whether a third of the lease has passed since it was last renewed (at `renewed`).
    fn renewal_due(&self, renewed: &std::time::Instant) -> bool {
        renewed.elapsed() >= self.lease / 3
    }

    /// What a renewal the store answered means: `held`, the lease was renewed just now;
    /// otherwise another runner took it, and this one is reported a standby.
    fn renewed(&self, held: bool, renewed: &mut std::time::Instant) -> Renewal {
        if held {
            *renewed = std::time::Instant::now();
            Renewal::Held
        } else {
            self.report(|s| s.state = RunnerState::Standby);
            Renewal::Lost
        }
    }

    /// How long a caught-up runner waits for news before it reads the log again and looks at
    /// the lease (the read itself is never cut short: see `Subscription::poll`). A read that
    /// finds nothing new means the runner is caught up (see [`Seat::idle`]).
    pub(crate) fn patience(&self) -> Duration {
        self.poll_interval.min(self.lease / 3)
    }

    /// Reports a runner that found nothing new for a while as live (also after failed reads
    /// or renewals: it read again, and is caught up).
    pub(crate) fn idle(&self) {
        crate::metrics::caught_up(&self.name);
        self.report(|s| {
            if matches!(s.state, RunnerState::CatchingUp | RunnerState::Retrying) {
                s.state = RunnerState::Live;
            }
        });
    }

    /// Reports that the store failed (a claim or renewal of the lease, a read, a commit): the
    /// runner is retrying (the store is away) until it reports its state again.
    pub(crate) fn failed_store(&self, e: &StoreError) {
        self.report(|s| {
            s.last_error = Some(e.to_string());
            s.state = RunnerState::Retrying;
        });
    }

    /// A subscription for this runner's batches, after `after`. Its poll interval stays well
    /// within the lease, so that a quiet log does not keep the runner from renewing it.
    pub(crate) fn subscription<S: ProjectionStore>(
        &self,
        store: S,
        filter: LogFilter,
        after: GlobalPosition,
    ) -> Subscription<S> {
        Subscription::new(store)
            .filter(filter)
            .after(after)
            .paced(self.page_size, self.poll_interval.min(self.lease / 3))
    }

    /// What `ask` answers, asking again (with backoff, each failure in the status) until the
    /// store answers.
    pub(crate) async fn answered<T, F>(&self, ask: impl Fn() -> F) -> T
    where
        F: Future<Output = Result<T, StoreError>>,
    {
        let mut attempt = 0;
        loop {
            match ask().await {
                Ok(answer) => return answer,
                Err(e) => {
                    self.failed_store(&e);
                    self.back_off(&mut attempt).await;
                }
            }
        }
    }

    /// The backoff after `*failures` failures in a row and one more: waits, then counts that
    /// one (every caller counts the failure it waited for, so the wait grows with each).
    pub(crate) async fn back_off(&self, failures: &mut u32) {
        self.pause(*failures).await;
        *failures = failures.saturating_add(1);
    }

    /// The backoff before try `attempt + 1`.
    async fn pause(&self, attempt: u32) {
        let (first, max) = self.backoff;
        tokio::time::sleep(first.saturating_mul(1u32 << attempt.min(16)).min(max)).await;
    }

    /// Changes the status and wakes whoever waits on it. The metrics are set first, in the
    /// change (the waiters are woken once it returns): a caller woken by a status change reads
    /// gauges that already show it.
    pub(crate) fn report(&self, change: impl FnOnce(&mut ProjectionStatus)) {
        self.status.send_modify(|s| {
            #[cfg(feature = "metrics")]
            let (was, was_at, counts) = (s.state.clone(), s.position, (s.parked, s.unparked));
            change(s);
            #[cfg(feature = "metrics")]
            crate::metrics::status((&was, was_at), counts, s);
        });
    }

    /// Counts `events`, which the runner committed, in its metrics (nothing without the
    /// `metrics` feature).
    pub(crate) fn committed(
        &self,
        events: &[Result<crate::RecordedEvent, crate::backend::UnreadableEvent>],
    ) {
        crate::metrics::committed(&self.name, crate::metrics::BatchSummary::of(events));
    }

    /// Gives `lease` up as the runner ends its term (stopping, finished, ended by
    /// `run_until`), so that a standby takes over at once. A release that fails is only
    /// logged: the lease then runs out, and a standby takes over when it does.
    pub(crate) async fn give_up<S: ProjectionStore>(&self, store: &S, lease: &Lease) {
        if let Err(error) = store.release(lease).await {
            tracing::warn!(
                runner = &*self.name,
                %error,
                "the lease was not given up; a standby takes over when it runs out"
            );
        }
    }

    /// Reports the runner stopped on `reason`, and the error to return.
    pub(crate) fn stop(&self, position: GlobalPosition, reason: String) -> ProjectionError {
        tracing::error!(runner = &*self.name, %position, %reason, "eventcore runner stopped");
        self.report(|s| {
            s.state = RunnerState::Stopped;
            s.last_error = Some(reason.clone());
            s.stopped_at = Some(position);
        });
        ProjectionError::Stopped { name: Arc::clone(&self.name), position, reason }
    }

    /// Checks what the runner was configured with before it reads anything: its filter (one
    /// no stream can pass would fail every read, and the runner would retry it for ever) and
    /// its lease (from [`MIN_LEASE`](super::MIN_LEASE) to [`MAX_LEASE`](super::MAX_LEASE)),
    /// its batches (at least one event, a poll interval above zero) and its backoff (the
    /// longest not below the first). Reports the runner stopped when it cannot run.
    pub(crate) fn check(&self, filter: &LogFilter) -> Result<(), ProjectionError> {
        let refused =
            |setting, why: String| Err(self.refuse(crate::ValidationError::new(setting, why)));
        if self.page_size == 0 {
            return refused("batches", "a batch holds at least one event, not 0".to_owned());
        }
        if self.poll_interval.is_zero() {
            return refused(
                "batches",
                "the poll interval must be above zero (zero would query the store without pause)"
                    .to_owned(),
            );
        }
        if self.backoff.0.is_zero() {
            return refused(
                "retries",
                "the first backoff must be above zero (zero would retry a failing store \
                 without pause)"
                    .to_owned(),
            );
        }
        if self.backoff.1 < self.backoff.0 {
            return refused(
                "retries",
                format!(
                    "the longest backoff, {:?}, is shorter than the first, {:?}",
                    self.backoff.1, self.backoff.0
                ),
            );
        }
        if self.lease < super::MIN_LEASE {
            return refused(
                "lease",
                format!(
                    "{:?} is shorter than the shortest lease a runner takes, {:?}",
                    self.lease,
                    super::MIN_LEASE
                ),
            );
        }
        super::store::check_lease(self.lease).map_err(|e| self.refuse(e))?;
        filter.check().map_err(|e| self.refuse(e))
    }

    /// Reports the runner stopped because what it was configured with is invalid (`e`), and
    /// the error to return.
    pub(crate) fn refuse(&self, e: crate::ValidationError) -> ProjectionError {
        tracing::error!(runner = &*self.name, error = %e, "eventcore runner refused to start");
        self.report(|s| {
            s.state = RunnerState::Stopped;
            s.last_error = Some(e.to_string());
        });
        ProjectionError::Invalid(e)
    }
}
