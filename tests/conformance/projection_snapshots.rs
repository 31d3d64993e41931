//! Snapshots of a projection's state, on every backend: taken with the checkpoint as the
//! policy says, a restarted (or standby) runner resumes from the snapshot and applies only the
//! events after it, every event exactly once to one state, and a snapshot that cannot be
//! trusted (another state type or version, an undecodable state, a log that no longer holds
//! its last event) is discarded: the log is applied from its start to the default state.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicUsize, Ordering},
};
use std::time::Duration;

use eventcore::backend::LogFilter;
use eventcore::subscription::{
    OnFailure, ParkedEvent, Projection, ProjectionRunner, ProjectionSnapshot, ProjectionStore,
    RunnerState, SnapshotProjection,
};
use eventcore::{EventId, GlobalPosition, Payload, RecordedEvent, Snapshot, SnapshotPolicy};
use serde::{Deserialize, Serialize};

use super::projection::append_n;

const PATIENCE: Duration = Duration::from_secs(60);

/// The state: every number applied, in order (a number applied twice or skipped shows).
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Numbers {
    pub seen: Vec<u64>,
}

impl Snapshot for Numbers {
    const NAME: &'static str = "numbers";
    const VERSION: u32 = 3;
}

/// Keeps its state in itself, publishes a copy after every change (what readers see), and
/// counts the events it applied.
struct Collector {
    name: String,
    state: Numbers,
    view: Arc<Mutex<Numbers>>,
    applied: Arc<AtomicUsize>,
    gate: Option<(u64, Arc<tokio::sync::Notify>)>,
    /// Fails once on the event numbered so (then the flag is cleared).
    fail_once: Option<(u64, Arc<std::sync::atomic::AtomicBool>)>,
    filter: LogFilter,
}

#[derive(Debug, thiserror::Error)]
#[error("refusing event {0} once")]
pub struct Refused(u64);

impl Collector {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            state: Numbers::default(),
            view: Arc::default(),
            applied: Arc::default(),
            gate: None,
            fail_once: None,
            filter: LogFilter::all(),
        }
    }

    /// Stops for good at the event numbered `at` (its task never ends), and says so.
    fn stuck_at(self, at: u64, reached: Arc<tokio::sync::Notify>) -> Self {
        Self { gate: Some((at, reached)), ..self }
    }
}

/// A handle on what a collector, once moved into its runner, did.
struct Watch {
    view: Arc<Mutex<Numbers>>,
    applied: Arc<AtomicUsize>,
}

impl Watch {
    fn of(collector: &Collector) -> Self {
        Self { view: Arc::clone(&collector.view), applied: Arc::clone(&collector.applied) }
    }

    fn seen(&self) -> Vec<u64> {
        self.view.lock().unwrap().seen.clone()
    }

    fn applied(&self) -> usize {
        self.applied.load(Ordering::SeqCst)
    }
}

impl<S: ProjectionStore> Projection<S> for Collector {
    type Error = Refused;

    fn name(&self) -> &str {
        &self.name
    }

    fn filter(&self) -> LogFilter {
        self.filter.clone()
    }

    async fn apply(&mut self, _tx: &mut S::Tx, e: &RecordedEvent) -> Result<(), Self::Error> {
        let n: u64 = serde_json::from_str(e.payload.as_str()).unwrap_or(u64::MAX);
        if let Some((at, reached)) = &self.gate {
            if n == *at {
                reached.notify_one();
                std::future::pending::<()>().await;
            }
        }
        // Fails before changing the state; on PostgreSQL the events before it in the batch
        // changed it, and the batch is rolled back: the runner must undo them.
        if let Some((at, armed)) = &self.fail_once {
            if n == *at && armed.swap(false, Ordering::SeqCst) {
                return Err(Refused(n));
            }
        }
        self.state.seen.push(n);
        *self.view.lock().unwrap() = self.state.clone();
        self.applied.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

impl<S: ProjectionStore> SnapshotProjection<S> for Collector {
    type State = Numbers;

    fn state(&self) -> &Numbers {
        &self.state
    }

    fn restore(&mut self, state: Numbers) {
        *self.view.lock().unwrap() = state.clone();
        self.state = state;
    }
}

fn upto(n: u64) -> Vec<u64> {
    (0..n).collect()
}

/// The stored snapshot of `name`, with its state decoded.
async fn stored<S: ProjectionStore>(
    store: &S,
    name: &str,
) -> Option<(ProjectionSnapshot, Numbers)> {
    let snapshot = store.snapshot(name).await.unwrap()?;
    let state = serde_json::from_str(snapshot.state.as_str()).unwrap();
    Some((snapshot, state))
}

/// Runs `collector` with snapshots until it has applied the log up to `last`, then stops it.
async fn run_to<S: ProjectionStore>(
    store: &S,
    collector: Collector,
    policy: SnapshotPolicy,
    page: usize,
    last: GlobalPosition,
) {
    let runner = ProjectionRunner::new(store.clone(), collector)
        .with_snapshots(policy)
        .batches(page, Duration::from_millis(20));
    let handle = runner.handle();
    let task = tokio::spawn(runner.run());
    handle.wait_for(last, PATIENCE).await.unwrap();
    task.abort();
    let _ = task.await;
}

/// A runner started again (a fresh projection value, as after a restart) restores the
/// snapshot and applies only the events after it; its state is the full history, once each.
/// The checkpoint is ahead of the snapshot: the events between are applied again to the
/// restored state, never to the state at the checkpoint.
pub async fn a_restarted_projection_resumes_from_its_snapshot<S: ProjectionStore>(store: S) {
    append_n(&store, "snap-1", 0, 40).await;
    let first = Collector::new("restarted");
    let first_watch = Watch::of(&first);
    let runner = ProjectionRunner::new(store.clone(), first)
        .with_snapshots(SnapshotPolicy::every(7))
        .batches(3, Duration::from_millis(20));
    let reached = tokio::time::timeout(PATIENCE, runner.catch_up()).await.unwrap().unwrap();
    assert_eq!(first_watch.seen(), upto(40));
    let (snapshot, state) = stored(&store, "restarted").await.expect("a snapshot was taken");
    let covered = state.seen.len() as u64;
    assert_eq!(state.seen, upto(covered), "the snapshot holds a prefix of the history");
    assert!((28..40).contains(&covered), "taken every 7 events: {covered}");
    assert_eq!(store.checkpoint("restarted").await.unwrap(), Some(reached));
    assert!(snapshot.position < reached, "the checkpoint is ahead of the snapshot");
    let last_event =
        store.read_all(GlobalPosition::START, 100).await.unwrap()[covered as usize - 1].clone();
    assert_eq!(snapshot.last_event, Some((last_event.position, last_event.event_id())));

    let last = append_n(&store, "snap-1", 40, 10).await;
    let second = Collector::new("restarted");
    let second_watch = Watch::of(&second);
    run_to(&store, second, SnapshotPolicy::every(7), 3, last).await;
    assert_eq!(second_watch.seen(), upto(50), "every event once, none skipped");
    assert_eq!(second_watch.applied() as u64, 50 - covered, "only the events after the snapshot");
}

/// `every(5)`: a snapshot is committed exactly when 5 events were applied since the last one
/// (one event per batch, so each commit is one event); `load_only()` never takes one.
pub async fn the_snapshot_policy_is_honoured<S: ProjectionStore>(store: S) {
    let collector = Collector::new("every-5");
    let runner = ProjectionRunner::new(store.clone(), collector)
        .with_snapshots(SnapshotPolicy::every(5))
        .batches(1, Duration::from_millis(20));
    let handle = runner.handle();
    let task = tokio::spawn(runner.run());
    for n in 0..12u64 {
        let at = append_n(&store, "snap-2", n, 1).await;
        handle.wait_for(at, PATIENCE).await.unwrap();
        let covered = stored(&store, "every-5").await.map(|(_, state)| state.seen);
        let want = (n + 1) / 5 * 5;
        assert_eq!(covered, (want > 0).then(|| upto(want)), "after {} events", n + 1);
    }
    task.abort();
    let _ = task.await;

    let last = append_n(&store, "snap-2", 12, 3).await;
    run_to(&store, Collector::new("never"), SnapshotPolicy::load_only(), 1, last).await;
    assert!(store.snapshot("never").await.unwrap().is_none());
}

/// A runner that dies in the middle of a batch (its task dropped while it applies event 20)
/// and a standby that takes over: the standby restores the last snapshot, whatever the
/// checkpoint, applies only the events after it, and ends with every event applied exactly
/// once.
pub async fn a_standby_resumes_from_the_snapshot_after_a_crash<S: ProjectionStore>(store: S) {
    let last = append_n(&store, "snap-3", 0, 60).await;
    // Seconds, not 300 ms: the stuck runner renews no more, so the second must make its first
    // claim within the lease to stand by; a loaded machine can take longer than 300 ms from
    // the stuck handler's notice to that claim. The takeover waits for the lease to run out.
    let lease = Duration::from_secs(3);
    let reached = Arc::new(tokio::sync::Notify::new());
    let first = Collector::new("crashing").stuck_at(20, Arc::clone(&reached));
    let runner = ProjectionRunner::new(store.clone(), first)
        .with_snapshots(SnapshotPolicy::every(4))
        .batches(3, Duration::from_millis(30))
        .lease(lease);
    let first_task = tokio::spawn(runner.run());
    tokio::time::timeout(PATIENCE, reached.notified()).await.unwrap();

    let second = Collector::new("crashing");
    let watch = Watch::of(&second);
    let standby = ProjectionRunner::new(store.clone(), second)
        .with_snapshots(SnapshotPolicy::every(4))
        .batches(3, Duration::from_millis(30))
        .lease(lease);
    let handle = standby.handle();
    let task = tokio::spawn(standby.run());
    handle.wait_until(|s| s.state == RunnerState::Standby, PATIENCE).await.unwrap();
    first_task.abort();
    let _ = first_task.await;
    let (_, state) = stored(&store, "crashing").await.expect("snapshots were taken on the way");
    let covered = state.seen.len();
    assert_eq!(state.seen, upto(covered as u64));
    assert!((16..=20).contains(&covered), "taken every 4 events before event 20: {covered}");

    handle.wait_for(last, PATIENCE).await.unwrap();
    task.abort();
    assert_eq!(watch.seen(), upto(60), "an event was applied twice or skipped");
    assert_eq!(watch.applied(), 60 - covered, "the standby did not start from the snapshot");
}

/// A batch whose handler fails part-way is tried again: what it had applied to the state
/// before failing is undone first (on PostgreSQL the batch is rolled back whole; in memory
/// each event commits alone), so no event is applied twice to the state.
pub async fn a_retried_batch_applies_nothing_twice_to_the_state<S: ProjectionStore>(store: S) {
    let last = append_n(&store, "snap-4", 0, 20).await;
    let armed = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let collector =
        Collector { fail_once: Some((12, Arc::clone(&armed))), ..Collector::new("retried") };
    let watch = Watch::of(&collector);
    let runner = ProjectionRunner::new(store.clone(), collector)
        .with_snapshots(SnapshotPolicy::every(3))
        .retries(3, Duration::from_millis(1), Duration::from_millis(5))
        .batches(8, Duration::from_millis(20));
    let handle = runner.handle();
    let task = tokio::spawn(runner.run());
    handle.wait_for(last, PATIENCE).await.unwrap();
    task.abort();
    assert!(!armed.load(Ordering::SeqCst), "the handler never failed");
    assert_eq!(watch.seen(), upto(20), "an event was applied twice to the state");
    let (_, state) = stored(&store, "retried").await.unwrap();
    assert_eq!(state.seen, upto(state.seen.len() as u64));
}

/// A runner restarted with its checkpoint ahead of its snapshot applies the events between
/// the two to the restored state again without committing anything: while it does, the
/// checkpoint stays where it was and no snapshot is taken (committing them again would, on
/// PostgreSQL, write what the handler writes through its transaction a second time).
pub async fn a_restarted_projection_catches_up_to_its_checkpoint_without_committing<
    S: ProjectionStore,
>(
    store: S,
) {
    let last = append_n(&store, "snap-5", 0, 40).await;
    let events = store.read_all(GlobalPosition::START, 100).await.unwrap();
    let planted = fitting(&events, 20, &Numbers { seen: upto(20) });
    plant(&store, "replayed", last, planted.clone()).await;
    let reached = Arc::new(tokio::sync::Notify::new());
    let collector = Collector::new("replayed").stuck_at(35, Arc::clone(&reached));
    let watch = Watch::of(&collector);
    let runner = ProjectionRunner::new(store.clone(), collector)
        .with_snapshots(SnapshotPolicy::every(4))
        .batches(3, Duration::from_millis(20));
    let task = tokio::spawn(runner.run());
    tokio::time::timeout(PATIENCE, reached.notified()).await.unwrap();
    assert_eq!(watch.seen(), upto(35), "the snapshot, then the events after it, once each");
    assert_eq!(watch.applied(), 15, "only the events after the snapshot");
    assert_eq!(store.checkpoint("replayed").await.unwrap(), Some(last), "the checkpoint moved");
    assert_eq!(store.snapshot("replayed").await.unwrap(), Some(planted), "a snapshot was taken");
    task.abort();
    let _ = task.await;
}

/// A runner that applied the log again up to its checkpoint (its snapshot discarded, or none
/// stored yet) stores the snapshot its policy asks for once it gets there, without waiting for
/// a new event to commit: a quiet projection would otherwise apply the same events again at
/// every start. The checkpoint stays where it was, and the next runner starts from the
/// snapshot, applying nothing.
pub async fn a_projection_that_applied_the_log_again_keeps_a_snapshot<S: ProjectionStore>(
    store: S,
) {
    let last = append_n(&store, "snap-again", 0, 40).await;
    let runner = |collector: Collector, policy: SnapshotPolicy| {
        let runner = ProjectionRunner::new(store.clone(), collector).with_snapshots(policy);
        tokio::time::timeout(PATIENCE, runner.batches(8, Duration::from_millis(20)).catch_up())
    };
    // The checkpoint, and no snapshot.
    let reached = runner(Collector::new("again"), SnapshotPolicy::load_only()).await.unwrap();
    assert_eq!(reached.unwrap(), last);
    assert_eq!(store.snapshot("again").await.unwrap(), None);

    let second = Collector::new("again");
    let second_watch = Watch::of(&second);
    runner(second, SnapshotPolicy::every(4)).await.unwrap().unwrap();
    assert_eq!(second_watch.seen(), upto(40));
    let (snapshot, state) = stored(&store, "again").await.expect("no snapshot was stored");
    assert_eq!((snapshot.position, state.seen), (last, upto(40)));
    assert_eq!(store.checkpoint("again").await.unwrap(), Some(last));

    let third = Collector::new("again");
    let third_watch = Watch::of(&third);
    runner(third, SnapshotPolicy::every(4)).await.unwrap().unwrap();
    assert_eq!(third_watch.seen(), upto(40));
    assert_eq!(third_watch.applied(), 0, "the next runner applied the log again");
}

/// Appends 30 events to `stream` and catches projection `name` up over them, parking the
/// event numbered 25 (its handler fails on it once, with no retries); answers the log's last
/// position, its events, and the numbers the projection applied.
async fn park_the_25th<S: ProjectionStore>(
    store: &S,
    stream: &str,
    name: &str,
) -> (GlobalPosition, Vec<RecordedEvent>, Vec<u64>) {
    let last = append_n(store, stream, 0, 30).await;
    let armed = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let first = Collector { fail_once: Some((25, Arc::clone(&armed))), ..Collector::new(name) };
    let first_watch = Watch::of(&first);
    let runner = ProjectionRunner::new(store.clone(), first)
        .with_snapshots(SnapshotPolicy::load_only())
        .on_failure(OnFailure::Park)
        .retries(0, Duration::from_millis(1), Duration::from_millis(1))
        .batches(4, Duration::from_millis(20));
    let reached = tokio::time::timeout(PATIENCE, runner.catch_up()).await.unwrap().unwrap();
    assert_eq!(reached, last);
    let mut want: Vec<u64> = upto(30);
    want.retain(|&n| n != 25);
    assert_eq!(first_watch.seen(), want, "event 25 was not parked");
    (last, store.read_all(GlobalPosition::START, 100).await.unwrap(), want)
}

/// An event parked by the first runner stays out of the state of the next one, which starts
/// from a snapshot taken before it and catches up to the checkpoint past it.
pub async fn a_parked_event_stays_out_of_the_state_after_a_restart<S: ProjectionStore>(store: S) {
    let (last, events, want) = park_the_25th(&store, "snap-6", "parks").await;
    let parked = store.parked("parks").await.unwrap();
    assert_eq!(parked.iter().map(|p| p.position).collect::<Vec<_>>(), [events[25].position]);

    plant(&store, "parks", last, fitting(&events, 20, &Numbers { seen: upto(20) })).await;
    let second = Collector::new("parks");
    let second_watch = Watch::of(&second);
    run_to(&store, second, SnapshotPolicy::every(1_000), 4, last).await;
    assert_eq!(second_watch.seen(), want, "the parked event was applied after the restart");
    assert_eq!(second_watch.applied(), 9);
}

/// An event parked, then discarded by an operator (`discard_parked`, `eventcore discard`),
/// stays out of the state of the next runner too: it catches up from a snapshot taken before
/// it to the checkpoint past it without applying it (the first runner never did).
pub async fn a_discarded_parked_event_stays_out_of_the_state_after_a_restart<S: ProjectionStore>(
    store: S,
) {
    let (last, events, want) = park_the_25th(&store, "snap-8", "discards").await;
    assert!(store.discard_parked("discards", events[25].position).await.unwrap());
    assert!(store.parked("discards").await.unwrap().is_empty());
    assert!(!store.discard_parked("discards", events[25].position).await.unwrap());

    plant(&store, "discards", last, fitting(&events, 20, &Numbers { seen: upto(20) })).await;
    let second = Collector::new("discards");
    let second_watch = Watch::of(&second);
    run_to(&store, second, SnapshotPolicy::every(1_000), 4, last).await;
    assert_eq!(second_watch.seen(), want, "the discarded event was applied after the restart");
    assert_eq!(second_watch.applied(), 9);
}

/// Commits `snapshot` for projection `name` as a runner would, with the checkpoint at `at`.
async fn plant<S: ProjectionStore>(
    store: &S,
    name: &str,
    at: GlobalPosition,
    snapshot: ProjectionSnapshot,
) {
    let lease = store.claim(name, uuid::Uuid::now_v7(), PATIENCE).await.unwrap().unwrap();
    let tx = store.begin(&lease).await.unwrap();
    assert!(store.commit(tx, &lease, at, None, Some(snapshot)).await.unwrap());
    store.release(&lease).await.unwrap();
}

/// A snapshot the runner would trust over the first `k` of `events`, holding `state`.
fn fitting(events: &[RecordedEvent], k: usize, state: &Numbers) -> ProjectionSnapshot {
    let last = &events[k - 1];
    ProjectionSnapshot {
        state_type: std::any::type_name::<Numbers>().to_owned(),
        state_version: Numbers::VERSION,
        position: last.position,
        last_event: Some((last.position, last.event_id())),
        state: Payload::to_json(state).unwrap(),
    }
}

/// Plants over 30 events a snapshot changed by `change` (covering 20 events with a marker
/// state, the checkpoint at the head), runs a fresh runner, and answers what it saw and
/// applied.
async fn run_over_planted<S: ProjectionStore>(
    store: &S,
    name: &str,
    change: impl FnOnce(ProjectionSnapshot) -> ProjectionSnapshot,
) -> (Vec<u64>, usize) {
    let last = append_n(store, &format!("{name}-stream"), 0, 30).await;
    let events = store.read_all(GlobalPosition::START, 100).await.unwrap();
    let marker = Numbers { seen: vec![1_000] };
    plant(store, name, last, change(fitting(&events, 20, &marker))).await;
    let collector = Collector::new(name);
    let watch = Watch::of(&collector);
    run_to(store, collector, SnapshotPolicy::every(1_000), 7, last).await;
    let seen = watch.seen();
    (seen, watch.applied())
}

/// The control: a snapshot that fits is trusted (its state is the marker, then the 10 later
/// events), whatever the checkpoint says.
pub async fn a_projection_snapshot_that_fits_is_trusted<S: ProjectionStore>(store: S) {
    let (seen, applied) = run_over_planted(&store, "fits", |s| s).await;
    let mut want = vec![1_000];
    want.extend(20..30);
    assert_eq!(seen, want);
    assert_eq!(applied, 10);
}

async fn discarded<S: ProjectionStore>(
    store: S,
    name: &str,
    change: impl FnOnce(ProjectionSnapshot) -> ProjectionSnapshot,
) {
    let (seen, applied) = run_over_planted(&store, name, change).await;
    assert_eq!(seen, upto(30), "the planted snapshot was trusted, or the checkpoint used");
    assert_eq!(applied, 30, "the log was not applied from its start");
}

/// Another state version (the handler changed): discarded, full replay from the default state.
pub async fn a_projection_snapshot_of_another_version_is_discarded<S: ProjectionStore>(store: S) {
    discarded(store, "stale-version", |mut s| {
        s.state_version = Numbers::VERSION - 1;
        s
    })
    .await;
}

/// Another state type (its fingerprint): discarded.
pub async fn a_projection_snapshot_of_another_type_is_discarded<S: ProjectionStore>(store: S) {
    discarded(store, "stale-type", |mut s| {
        s.state_type = "old_app::Numbers".into();
        s
    })
    .await;
}

/// A state that does not decode: discarded.
pub async fn an_undecodable_projection_snapshot_is_discarded<S: ProjectionStore>(store: S) {
    discarded(store, "undecodable", |mut s| {
        s.state = Payload::from_json_str(r#"{"seen":"many"}"#).unwrap();
        s
    })
    .await;
}

/// The log holds another event where the snapshot's last one was (a store restored from an
/// older backup and grown again): discarded.
pub async fn a_projection_snapshot_over_other_events_is_discarded<S: ProjectionStore>(store: S) {
    discarded(store, "restored", |mut s| {
        s.last_event = s.last_event.map(|(at, _)| (at, EventId::new()));
        s
    })
    .await;
}

/// A snapshot that names no last event cannot be checked against the log: discarded.
pub async fn a_projection_snapshot_without_its_last_event_is_discarded<S: ProjectionStore>(
    store: S,
) {
    discarded(store, "unchecked", |mut s| {
        s.last_event = None;
        s
    })
    .await;
}

/// A snapshot commits with its checkpoint or not at all: a commit under a lease that no longer
/// holds stores neither.
pub async fn a_projection_snapshot_is_stored_only_with_its_checkpoint<S: ProjectionStore>(
    store: S,
) {
    let last = append_n(&store, "fenced-stream", 0, 3).await;
    let events = store.read_all(GlobalPosition::START, 10).await.unwrap();
    let lease = store.claim("fenced", uuid::Uuid::now_v7(), PATIENCE).await.unwrap().unwrap();
    store.release(&lease).await.unwrap();
    let tx = store.begin(&lease).await.unwrap();
    let snapshot = fitting(&events, 3, &Numbers { seen: upto(3) });
    assert!(!store.commit(tx, &lease, last, None, Some(snapshot.clone())).await.unwrap());
    assert!(store.snapshot("fenced").await.unwrap().is_none());
    assert_eq!(store.checkpoint("fenced").await.unwrap(), Some(GlobalPosition::START));
    plant(&store, "fenced", last, snapshot.clone()).await;
    assert_eq!(store.snapshot("fenced").await.unwrap(), Some(snapshot));
    assert_eq!(store.checkpoint("fenced").await.unwrap(), Some(last));
}

/// The log holds, after the snapshot's last event and at or before its position, events the
/// projection wants that it never applied (a store restored from an older backup and grown
/// again, its last event still there): the snapshot does not cover them, so it is discarded.
/// (A snapshot's position may lie past its last event, as a checkpoint moves over events the
/// filter skips; but only over those, and over parked ones.)
pub async fn a_projection_snapshot_past_events_it_never_applied_is_discarded<S: ProjectionStore>(
    store: S,
) {
    let last = append_n(&store, "grown-again-stream", 0, 30).await;
    let events = store.read_all(GlobalPosition::START, 100).await.unwrap();
    // Covers the first 20 events, says the marker state; claims the log up to the 25th.
    let mut planted = fitting(&events, 20, &Numbers { seen: vec![1_000] });
    planted.position = events[24].position;
    plant(&store, "grown-again", last, planted).await;
    let collector = Collector::new("grown-again");
    let watch = Watch::of(&collector);
    run_to(&store, collector, SnapshotPolicy::every(1_000), 7, last).await;
    assert_eq!(watch.seen(), upto(30), "the snapshot was trusted over events it never applied");
    assert_eq!(watch.applied(), 30, "the log was not applied from its start");
}

/// The control: a snapshot whose position lies past its last event, over events the filter
/// skips and an event the projection parked, is trusted (the runner applies only what comes
/// after it).
pub async fn a_projection_snapshot_past_skipped_and_parked_events_is_trusted<S: ProjectionStore>(
    store: S,
) {
    append_n(&store, "kept-1", 0, 20).await;
    append_n(&store, "skipped-1", 0, 3).await;
    append_n(&store, "kept-1", 20, 1).await;
    let last = append_n(&store, "kept-1", 21, 5).await;
    let events = store.read_all(GlobalPosition::START, 100).await.unwrap();
    let mut planted = fitting(&events, 20, &Numbers { seen: upto(20) });
    let poison = &events[23];
    planted.position = poison.position;
    let parked = ParkedEvent::new(poison.position, Some(poison.event_id()), "kept-1", "boom");
    let lease = store.claim("past-skipped", uuid::Uuid::now_v7(), PATIENCE).await.unwrap();
    let lease = lease.unwrap();
    let tx = store.begin(&lease).await.unwrap();
    let committed = store.commit(tx, &lease, poison.position, Some(parked), Some(planted));
    assert!(committed.await.unwrap());
    store.release(&lease).await.unwrap();
    let collector =
        Collector { filter: LogFilter::all().category("kept"), ..Collector::new("past-skipped") };
    let watch = Watch::of(&collector);
    run_to(&store, collector, SnapshotPolicy::every(1_000), 4, last).await;
    let mut want = upto(20);
    want.extend(21..26);
    assert_eq!(watch.seen(), want);
    assert_eq!(watch.applied(), 5, "the snapshot was discarded");
}

/// A runner with snapshots cannot apply parked events again (a stored snapshot covers the
/// events around a parked one without it): `retry_parked` with `with_snapshots` is refused
/// with a typed error before anything is claimed, and the event stays parked.
pub async fn retrying_parked_events_with_snapshots_is_refused<S: ProjectionStore>(store: S) {
    append_n(&store, "snap-retry", 0, 3).await;
    let at = store.read_all(GlobalPosition::START, 10).await.unwrap()[1].position;
    let lease = store.claim("snap-retry", uuid::Uuid::now_v7(), PATIENCE).await.unwrap().unwrap();
    let parked = ParkedEvent::new(at, None, "snap-retry", "parked before");
    let tx = store.begin(&lease).await.unwrap();
    assert!(store.commit(tx, &lease, at, Some(parked), None).await.unwrap());
    store.release(&lease).await.unwrap();
    for catch_up in [false, true] {
        let runner = ProjectionRunner::new(store.clone(), Collector::new("snap-retry"))
            .with_snapshots(SnapshotPolicy::every(10))
            .retry_parked();
        let handle = runner.handle();
        let outcome = if catch_up {
            tokio::time::timeout(PATIENCE, runner.catch_up()).await.unwrap().map(|_| ())
        } else {
            tokio::time::timeout(PATIENCE, runner.run()).await.unwrap().map(|_| ())
        };
        match outcome {
            Err(eventcore::subscription::ProjectionError::Invalid(e)) => {
                assert_eq!(e.type_name(), "retry_parked", "{e}");
            }
            other => panic!("catch_up: {catch_up}: not refused: {other:?}"),
        }
        assert_eq!(handle.status().state, RunnerState::Stopped);
    }
    assert_eq!(store.parked("snap-retry").await.unwrap().len(), 1);
    assert_eq!(store.checkpoint("snap-retry").await.unwrap(), Some(at));
}
