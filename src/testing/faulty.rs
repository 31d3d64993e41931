//! A backend wrapper that injects faults.

use std::sync::{
    Arc, Mutex, PoisonError,
    atomic::{AtomicU64, AtomicUsize, Ordering},
};
use std::time::Duration;

use tokio::sync::Barrier;

use crate::{
    Backend, GlobalPosition, StreamId, StreamVersion,
    backend::{
        AppendRequest, Committed, IdempotencyKey, LogFilter, LogPage, LogWatch, SnapshotKey,
        StoreError, StoredSnapshot, StreamEvents, StreamHold, StreamQueue,
    },
    subscription::{
        Lease, LogStats, ParkedEvent, ProjectionRecord, ProjectionSnapshot, ProjectionStore,
    },
};

/// Wraps a backend and injects faults on request; it also counts the streams read and the
/// appends made through it. Clones share the fault plan and the counts.
///
/// ```
/// use eventcore::{testing::Faulty, Memory};
///
/// let store = Faulty::new(Memory::new());
/// store.lose_next_append_replies(1); // the next append commits, then reports a dropped connection
/// store.fail_next_reads(2);          // the next two reads fail as if the store were down
/// store.fail_next_appends(1);        // the next append fails and writes nothing
/// store.fail_next_snapshot_saves(1); // the next snapshot is not stored
/// store.lose_next_commit_replies(1);  // the next projection commit lands, then reports a dropped connection
/// store.fail_next_claims(1);         // the next claim of a runner's lease fails
/// store.fail_next_renewals(1);       // the next renewal of a runner's lease fails
/// ```
#[derive(Debug, Clone)]
pub struct Faulty<B> {
    inner: B,
    plan: Arc<Plan>,
    /// A queue of its own, when this wrapper stands for another process.
    queue: Option<Arc<StreamQueue>>,
}

#[derive(Debug, Default)]
struct Plan {
    lost_replies: AtomicUsize,
    lost_commit_replies: AtomicUsize,
    /// Begins to let through before one fails, plus one (0: none planned).
    failing_begin: AtomicUsize,
    failed_reads: AtomicUsize,
    failed_log_reads: AtomicUsize,
    failed_appends: AtomicUsize,
    failed_snapshot_saves: AtomicUsize,
    failed_claims: AtomicUsize,
    failed_renewals: AtomicUsize,
    gate: Mutex<Option<(Arc<Barrier>, usize)>>,
    /// Microseconds every read of the log waits first.
    log_read_delay: AtomicU64,
    /// Microseconds every read of streams waits first.
    read_delay: AtomicU64,
    /// Microseconds every snapshot save waits first.
    snapshot_save_delay: AtomicU64,
    streams_read: AtomicUsize,
    events_read: AtomicUsize,
    log_entries_read: AtomicUsize,
    appends: AtomicUsize,
    begins: AtomicUsize,
    events_counted: AtomicU64,
}

fn take_one(counter: &AtomicUsize) -> bool {
    counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
}

/// Sets a planned delay (in microseconds, up to the longest one it holds).
fn plan_delay(delay: &AtomicU64, by: Duration) {
    delay.store(u64::try_from(by.as_micros()).unwrap_or(u64::MAX), Ordering::SeqCst);
}

/// Waits the planned delay, if any.
async fn wait_planned(delay: &AtomicU64) {
    let micros = delay.load(Ordering::SeqCst);
    if micros > 0 {
        tokio::time::sleep(Duration::from_micros(micros)).await;
    }
}

impl<B: Backend> Faulty<B> {
    /// Wraps `inner` with no faults planned.
    ///
    /// ```
    /// let _ = eventcore::testing::Faulty::new(eventcore::Memory::new());
    /// ```
    pub fn new(inner: B) -> Self {
        Self { inner, plan: Arc::default(), queue: None }
    }

    /// A clone that stands for another process on the same store: same data, same fault plan
    /// and counts, but a [`StreamQueue`] of its own. Commands over the same streams then race
    /// instead of taking turns, as they do between processes, so that a test can make them
    /// collide at the append (with [`gate_next_appends`](Self::gate_next_appends)) and see
    /// read-set validation settle it.
    ///
    /// ```
    /// use eventcore::{Backend, Memory, testing::Faulty};
    /// let here = Faulty::new(Memory::new());
    /// let there = here.as_another_process();
    /// assert!(!std::ptr::eq(here.stream_queue(), there.stream_queue()));
    /// ```
    #[must_use]
    pub fn as_another_process(&self) -> Self {
        Self { queue: Some(Arc::default()), ..self.clone() }
    }

    /// The wrapped backend.
    ///
    /// ```
    /// let f = eventcore::testing::Faulty::new(eventcore::Memory::new());
    /// assert!(f.inner().is_empty());
    /// ```
    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// The next `n` appends that commit report [`StoreError::Unavailable`] instead of their result.
    ///
    /// ```
    /// eventcore::testing::Faulty::new(eventcore::Memory::new()).lose_next_append_replies(1);
    /// ```
    pub fn lose_next_append_replies(&self, n: usize) {
        self.plan.lost_replies.store(n, Ordering::SeqCst);
    }

    /// The next `n` projection commits ([`ProjectionStore::commit`], and
    /// [`ProjectionStore::retried`] for parked events applied again) that commit report
    /// [`StoreError::Unavailable`] instead of `true`: a connection lost between `COMMIT` and
    /// its reply. A runner must not apply such a batch, or such an event, again.
    ///
    /// ```
    /// eventcore::testing::Faulty::new(eventcore::Memory::new()).lose_next_commit_replies(1);
    /// ```
    pub fn lose_next_commit_replies(&self, n: usize) {
        self.plan.lost_commit_replies.store(n, Ordering::SeqCst);
    }

    /// The `nth` projection transaction begun from now on ([`ProjectionStore::begin`], counting
    /// from 1) fails with [`StoreError::Unavailable`]; the ones before it and after it begin.
    /// On a store that commits after every event (memory), `nth` above 1 fails a begin in the
    /// middle of a batch, after the events before it committed: a runner must not apply those
    /// again. `0` plans no failure.
    ///
    /// ```
    /// // The third begin fails: on memory, after a batch's first two events committed.
    /// eventcore::testing::Faulty::new(eventcore::Memory::new()).fail_nth_begin(3);
    /// ```
    pub fn fail_nth_begin(&self, nth: usize) {
        self.plan.failing_begin.store(nth, Ordering::SeqCst);
    }

    /// The next `n` claims of a projection's or process manager's lease
    /// ([`ProjectionStore::claim`]) fail with [`StoreError::Unavailable`]: a runner starting
    /// while the store is away. `0` lets every claim through again.
    ///
    /// ```
    /// eventcore::testing::Faulty::new(eventcore::Memory::new()).fail_next_claims(2);
    /// ```
    pub fn fail_next_claims(&self, n: usize) {
        self.plan.failed_claims.store(n, Ordering::SeqCst);
    }

    /// The next `n` renewals of a projection's or process manager's lease
    /// ([`ProjectionStore::renew`], and [`ProjectionStore::try_renew`] within a batch) fail
    /// with [`StoreError::Unavailable`]: the store away for a moment while a runner holds its
    /// lease. `0` lets every renewal through again.
    ///
    /// ```
    /// eventcore::testing::Faulty::new(eventcore::Memory::new()).fail_next_renewals(1);
    /// ```
    pub fn fail_next_renewals(&self, n: usize) {
        self.plan.failed_renewals.store(n, Ordering::SeqCst);
    }

    /// The next `n` appends fail with [`StoreError::Unavailable`] before they reach the store:
    /// nothing of them is written (a connection lost on the way, a server that refused them).
    ///
    /// ```
    /// eventcore::testing::Faulty::new(eventcore::Memory::new()).fail_next_appends(1);
    /// ```
    pub fn fail_next_appends(&self, n: usize) {
        self.plan.failed_appends.store(n, Ordering::SeqCst);
    }

    /// The next `n` reads of streams fail with [`StoreError::Unavailable`].
    ///
    /// ```
    /// eventcore::testing::Faulty::new(eventcore::Memory::new()).fail_next_reads(1);
    /// ```
    pub fn fail_next_reads(&self, n: usize) {
        self.plan.failed_reads.store(n, Ordering::SeqCst);
    }

    /// The next `n` reads of the global log ([`Backend::read_log`]) fail with
    /// [`StoreError::Unavailable`], as if the store were down: what subscriptions, projection
    /// runners and process managers read through.
    ///
    /// ```
    /// eventcore::testing::Faulty::new(eventcore::Memory::new()).fail_next_log_reads(3);
    /// ```
    pub fn fail_next_log_reads(&self, n: usize) {
        self.plan.failed_log_reads.store(n, Ordering::SeqCst);
    }

    /// The next `n` snapshot saves fail as if the store were down, and store nothing.
    ///
    /// ```
    /// eventcore::testing::Faulty::new(eventcore::Memory::new()).fail_next_snapshot_saves(1);
    /// ```
    pub fn fail_next_snapshot_saves(&self, n: usize) {
        self.plan.failed_snapshot_saves.store(n, Ordering::SeqCst);
    }

    /// The next `parties` appends each wait until all of them have arrived, then proceed
    /// together: concurrent commands are forced to read and decide before any of them writes.
    /// Commands over the same streams through one store take turns (see [`StreamQueue`]), so
    /// only one of them could reach the gate: make them collide from
    /// [`as_another_process`](Self::as_another_process) clones.
    ///
    /// ```
    /// eventcore::testing::Faulty::new(eventcore::Memory::new()).gate_next_appends(2);
    /// ```
    pub fn gate_next_appends(&self, parties: usize) {
        let mut gate = self.plan.gate.lock().unwrap_or_else(PoisonError::into_inner);
        *gate = Some((Arc::new(Barrier::new(parties)), parties));
    }

    /// Every read of the log from now on waits `by` before it reads: a slow query, or a store
    /// waiting for an append still in flight. For a runner whose reads outlast its poll
    /// interval. `Duration::ZERO` ends it.
    ///
    /// ```
    /// use std::time::Duration;
    /// eventcore::testing::Faulty::new(eventcore::Memory::new())
    ///     .delay_log_reads(Duration::from_millis(300));
    /// ```
    pub fn delay_log_reads(&self, by: Duration) {
        plan_delay(&self.plan.log_read_delay, by);
    }

    /// Makes every read of streams (`read`, `read_after`, `read_with_snapshot`) wait `by`
    /// before it goes to the wrapped store, as a slow store would; `Duration::ZERO` ends it.
    ///
    /// ```
    /// use std::time::Duration;
    /// eventcore::testing::Faulty::new(eventcore::Memory::new())
    ///     .delay_reads(Duration::from_millis(300));
    /// ```
    pub fn delay_reads(&self, by: Duration) {
        plan_delay(&self.plan.read_delay, by);
    }

    /// Makes every snapshot save wait `by` before it goes to the wrapped store, as a slow
    /// store would; `Duration::ZERO` ends it.
    ///
    /// ```
    /// use std::time::Duration;
    /// eventcore::testing::Faulty::new(eventcore::Memory::new())
    ///     .delay_snapshot_saves(Duration::from_secs(1));
    /// ```
    pub fn delay_snapshot_saves(&self, by: Duration) {
        plan_delay(&self.plan.snapshot_save_delay, by);
    }

    /// How many streams reads through this wrapper have asked for, failed reads included.
    ///
    /// ```
    /// # async fn demo() -> Result<(), eventcore::backend::StoreError> {
    /// use eventcore::{Backend, StreamId, testing::Faulty, Memory};
    /// let store = Faulty::new(Memory::new());
    /// store.read(&[StreamId::try_new("a").unwrap(), StreamId::try_new("b").unwrap()]).await?;
    /// assert_eq!(store.streams_read(), 2);
    /// # Ok(()) }
    /// ```
    pub fn streams_read(&self) -> usize {
        self.plan.streams_read.load(Ordering::SeqCst)
    }

    /// How many events reads through this wrapper have returned (whole streams, streams read
    /// after a version, streams read on top of a snapshot): what the executor had to fetch.
    ///
    /// ```
    /// # async fn demo() -> Result<(), eventcore::backend::StoreError> {
    /// use eventcore::{Backend, StreamId, testing::Faulty, Memory};
    /// let store = Faulty::new(Memory::new());
    /// store.read(&[StreamId::try_new("a").unwrap()]).await?;
    /// assert_eq!(store.events_read(), 0);
    /// # Ok(()) }
    /// ```
    pub fn events_read(&self) -> usize {
        self.plan.events_read.load(Ordering::SeqCst)
    }

    /// How many entries of the log reads of it ([`Backend::read_log`]) through this wrapper
    /// have returned, unreadable ones included: what subscriptions and takeovers had to fetch.
    ///
    /// ```
    /// # async fn demo() -> Result<(), eventcore::backend::StoreError> {
    /// use eventcore::{backend::LogFilter, Backend, GlobalPosition, testing::Faulty, Memory};
    /// let store = Faulty::new(Memory::new());
    /// store.read_log(GlobalPosition::START, &LogFilter::all(), 100).await?;
    /// assert_eq!(store.log_entries_read(), 0);
    /// # Ok(()) }
    /// ```
    pub fn log_entries_read(&self) -> usize {
        self.plan.log_entries_read.load(Ordering::SeqCst)
    }

    /// What every read of streams does first: counts the `streams` asked for, waits the
    /// planned delay, then fails if a failure is planned.
    async fn before_read(&self, streams: usize) -> Result<(), StoreError> {
        self.plan.streams_read.fetch_add(streams, Ordering::SeqCst);
        wait_planned(&self.plan.read_delay).await;
        if take_one(&self.plan.failed_reads) {
            return Err(injected("read failed"));
        }
        Ok(())
    }

    /// Counts the events of `reads`.
    fn counted(&self, reads: Vec<StreamEvents>) -> Vec<StreamEvents> {
        let events = reads.iter().map(|r| r.events.len()).sum();
        self.plan.events_read.fetch_add(events, Ordering::SeqCst);
        reads
    }

    /// How many appends reached this wrapper, whatever became of them.
    ///
    /// ```
    /// assert_eq!(eventcore::testing::Faulty::new(eventcore::Memory::new()).appends(), 0);
    /// ```
    pub fn appends(&self) -> usize {
        self.plan.appends.load(Ordering::SeqCst)
    }

    /// How many events [`ProjectionStore::log_stats`] counted through this wrapper, over all
    /// its calls: what a backend that counts them (PostgreSQL) had to scan.
    ///
    /// ```
    /// assert_eq!(eventcore::testing::Faulty::new(eventcore::Memory::new()).events_counted(), 0);
    /// ```
    pub fn events_counted(&self) -> u64 {
        self.plan.events_counted.load(Ordering::SeqCst)
    }

    /// How many projection transactions were begun through this wrapper
    /// ([`ProjectionStore::begin`]), failed ones included.
    ///
    /// ```
    /// assert_eq!(eventcore::testing::Faulty::new(eventcore::Memory::new()).begins(), 0);
    /// ```
    pub fn begins(&self) -> usize {
        self.plan.begins.load(Ordering::SeqCst)
    }

    fn gate_ticket(&self) -> Option<Arc<Barrier>> {
        let mut gate = self.plan.gate.lock().unwrap_or_else(PoisonError::into_inner);
        let (barrier, left) = gate.as_mut()?;
        let barrier = Arc::clone(barrier);
        *left -= 1;
        if *left == 0 {
            *gate = None;
        }
        Some(barrier)
    }
}

fn injected(what: &str) -> StoreError {
    StoreError::Unavailable(format!("injected fault: {what}").into())
}

impl<B: Backend> Backend for Faulty<B> {
    async fn read(&self, streams: &[StreamId]) -> Result<Vec<StreamEvents>, StoreError> {
        self.before_read(streams.len()).await?;
        self.inner.read(streams).await.map(|reads| self.counted(reads))
    }

    /// Counted and failed like [`read`](Backend::read).
    async fn read_after(
        &self,
        streams: &[(StreamId, StreamVersion)],
    ) -> Result<Vec<StreamEvents>, StoreError> {
        self.before_read(streams.len()).await?;
        self.inner.read_after(streams).await.map(|reads| self.counted(reads))
    }

    /// Counted and failed like [`read`](Backend::read).
    async fn read_with_snapshot(
        &self,
        key: &SnapshotKey,
        streams: &[StreamId],
    ) -> Result<(Option<StoredSnapshot>, Vec<StreamEvents>), StoreError> {
        self.before_read(streams.len()).await?;
        let (snapshot, reads) = self.inner.read_with_snapshot(key, streams).await?;
        Ok((snapshot, self.counted(reads)))
    }

    async fn load_snapshot(&self, key: &SnapshotKey) -> Result<Option<StoredSnapshot>, StoreError> {
        self.inner.load_snapshot(key).await
    }

    /// Delayed and failed as planned ([`delay_snapshot_saves`](Faulty::delay_snapshot_saves),
    /// [`fail_next_snapshot_saves`](Faulty::fail_next_snapshot_saves)).
    async fn save_snapshot(&self, snapshot: StoredSnapshot) -> Result<(), StoreError> {
        wait_planned(&self.plan.snapshot_save_delay).await;
        if take_one(&self.plan.failed_snapshot_saves) {
            return Err(injected("snapshot not stored"));
        }
        self.inner.save_snapshot(snapshot).await
    }

    async fn prune_snapshots(&self, older_than: Duration) -> Result<u64, StoreError> {
        self.inner.prune_snapshots(older_than).await
    }

    async fn append(&self, request: AppendRequest) -> Result<Committed, StoreError> {
        self.plan.appends.fetch_add(1, Ordering::SeqCst);
        if let Some(barrier) = self.gate_ticket() {
            barrier.wait().await;
        }
        if take_one(&self.plan.failed_appends) {
            return Err(injected("append failed before reaching the store"));
        }
        let committed = self.inner.append(request).await?;
        if take_one(&self.plan.lost_replies) {
            return Err(injected("connection dropped after the append committed"));
        }
        Ok(committed)
    }

    async fn read_log(
        &self,
        after: GlobalPosition,
        filter: &LogFilter,
        limit: usize,
    ) -> Result<LogPage, StoreError> {
        wait_planned(&self.plan.log_read_delay).await;
        if take_one(&self.plan.failed_log_reads) {
            return Err(injected("the log could not be read"));
        }
        let page = self.inner.read_log(after, filter, limit).await?;
        self.plan.log_entries_read.fetch_add(page.entries.len(), Ordering::SeqCst);
        Ok(page)
    }

    fn watch_log(&self) -> LogWatch {
        self.inner.watch_log()
    }

    async fn find_committed(&self, key: &IdempotencyKey) -> Result<Option<Committed>, StoreError> {
        self.inner.find_committed(key).await
    }

    fn stream_queue(&self) -> &StreamQueue {
        match &self.queue {
            Some(own) => own,
            None => self.inner.stream_queue(),
        }
    }

    async fn hold(&self, streams: &[StreamId]) -> Result<Option<StreamHold>, StoreError> {
        self.inner.hold(streams).await
    }
}

/// Projections run on the wrapped store; the faults that apply are those of the log reads
/// ([`delay_log_reads`](Faulty::delay_log_reads)), the failed claims
/// ([`fail_next_claims`](Faulty::fail_next_claims)), the failed renewals
/// ([`fail_next_renewals`](Faulty::fail_next_renewals)), the failed begins
/// ([`fail_nth_begin`](Faulty::fail_nth_begin)) and the lost commit replies
/// ([`lose_next_commit_replies`](Faulty::lose_next_commit_replies)).
impl<B: ProjectionStore> ProjectionStore for Faulty<B> {
    type Tx = B::Tx;
    const TX_ROLLS_BACK: bool = B::TX_ROLLS_BACK;

    async fn claim(
        &self,
        name: &str,
        owner: uuid::Uuid,
        lease: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        if take_one(&self.plan.failed_claims) {
            return Err(injected("the lease could not be claimed"));
        }
        self.inner.claim(name, owner, lease).await
    }

    async fn renew(&self, lease: &Lease, duration: Duration) -> Result<bool, StoreError> {
        if take_one(&self.plan.failed_renewals) {
            return Err(injected("the lease could not be renewed"));
        }
        self.inner.renew(lease, duration).await
    }

    async fn try_renew(
        &self,
        lease: &Lease,
        duration: Duration,
    ) -> Result<Option<bool>, StoreError> {
        if take_one(&self.plan.failed_renewals) {
            return Err(injected("the lease could not be renewed"));
        }
        self.inner.try_renew(lease, duration).await
    }

    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        self.inner.release(lease).await
    }

    async fn begin(&self, lease: &Lease) -> Result<Self::Tx, StoreError> {
        self.plan.begins.fetch_add(1, Ordering::SeqCst);
        if let Ok(1) =
            self.plan
                .failing_begin
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        {
            return Err(injected("the projection transaction could not begin"));
        }
        self.inner.begin(lease).await
    }

    async fn commit(
        &self,
        tx: Self::Tx,
        lease: &Lease,
        position: GlobalPosition,
        parked: Option<ParkedEvent>,
        snapshot: Option<ProjectionSnapshot>,
    ) -> Result<bool, StoreError> {
        let done = self.inner.commit(tx, lease, position, parked, snapshot).await?;
        if done && take_one(&self.plan.lost_commit_replies) {
            return Err(injected("connection dropped after the projection's commit committed"));
        }
        Ok(done)
    }

    async fn retried(
        &self,
        tx: Self::Tx,
        lease: &Lease,
        position: GlobalPosition,
        outcome: Result<(), String>,
    ) -> Result<bool, StoreError> {
        let done = self.inner.retried(tx, lease, position, outcome).await?;
        if done && take_one(&self.plan.lost_commit_replies) {
            return Err(injected("connection dropped after the projection's commit committed"));
        }
        Ok(done)
    }

    async fn discard_parked(
        &self,
        name: &str,
        position: GlobalPosition,
    ) -> Result<bool, StoreError> {
        self.inner.discard_parked(name, position).await
    }

    async fn discarded(&self, name: &str) -> Result<Vec<GlobalPosition>, StoreError> {
        self.inner.discarded(name).await
    }

    async fn snapshot(&self, name: &str) -> Result<Option<ProjectionSnapshot>, StoreError> {
        self.inner.snapshot(name).await
    }

    async fn checkpoint(&self, name: &str) -> Result<Option<GlobalPosition>, StoreError> {
        self.inner.checkpoint(name).await
    }

    async fn parked(&self, name: &str) -> Result<Vec<ParkedEvent>, StoreError> {
        self.inner.parked(name).await
    }

    async fn projections(&self) -> Result<Vec<ProjectionRecord>, StoreError> {
        self.inner.projections().await
    }

    async fn log_stats(&self, after: GlobalPosition, limit: u64) -> Result<LogStats, StoreError> {
        let stats = self.inner.log_stats(after, limit).await?;
        self.plan.events_counted.fetch_add(stats.events_after, Ordering::SeqCst);
        Ok(stats)
    }
}
