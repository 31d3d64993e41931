//! Projections on every backend: history then live, read-your-writes with `wait_for`, poison
//! events under each outcome, events of unknown kinds, and hand-over to a standby.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventcore::backend::{AppendRequest, Backend, LogFilter};
use eventcore::subscription::{
    OnFailure, Projection, ProjectionError, ProjectionHandle, ProjectionRunner, ProjectionStore,
    RunnerState,
};
use eventcore::testing::Faulty;
use eventcore::{
    CorrelationId, DecodeError, Event, EventId, EventMetadata, GlobalPosition, NewEvent, Payload,
    RecordedEvent, StreamId, StreamVersion,
};

const PATIENCE: Duration = Duration::from_secs(60);

fn id(s: &str) -> StreamId {
    StreamId::try_new(s).unwrap()
}

fn event(n: u64) -> NewEvent {
    NewEvent::new("N", 1, Payload::to_json(&n).unwrap(), EventMetadata::new(CorrelationId::new()))
}

/// Appends `count` events numbered from `first` to `stream`, one append each; returns the
/// last position.
pub async fn append_n<B: Backend>(
    store: &B,
    stream: &str,
    first: u64,
    count: u64,
) -> GlobalPosition {
    let s = id(stream);
    let mut last = GlobalPosition::START;
    for n in first..first + count {
        let done = store
            .append(
                AppendRequest::new()
                    .expect(s.clone(), StreamVersion::new(n))
                    .write(s.clone(), vec![event(n)]),
            )
            .await
            .unwrap();
        last = done.positions.unwrap().1;
    }
    last
}

/// Appends `count` events of type `O` (not `N`, the type the test projections read) to
/// `stream`, empty before, in one append; returns the last position.
pub async fn append_of_another_type<B: Backend>(
    store: &B,
    stream: &str,
    count: u64,
) -> GlobalPosition {
    let s = id(stream);
    let events = (0..count)
        .map(|n| {
            let mut e = event(n);
            e.event_type = "O".into();
            e
        })
        .collect();
    let request = AppendRequest::new().expect(s.clone(), StreamVersion::EMPTY).write(s, events);
    store.append(request).await.unwrap().positions.unwrap().1
}

/// What a test projection saw, by position (so a batch applied again after a rollback
/// counts once).
type Seen = Arc<Mutex<BTreeMap<GlobalPosition, (EventId, u64)>>>;

/// Records every event; fails on events whose payload is `poison` (always, or `fail_times`
/// times).
struct Recorder {
    name: String,
    seen: Seen,
    poison: Option<u64>,
    fail_times: Arc<Mutex<u32>>,
    filter: LogFilter,
}

#[derive(Debug, thiserror::Error)]
#[error("refusing event {0}")]
struct Refused(u64);

impl Recorder {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            seen: Seen::default(),
            poison: None,
            fail_times: Arc::new(Mutex::new(u32::MAX)),
            filter: LogFilter::all(),
        }
    }
}

impl<S: ProjectionStore> Projection<S> for Recorder {
    type Error = Refused;

    fn name(&self) -> &str {
        &self.name
    }

    fn filter(&self) -> LogFilter {
        self.filter.clone()
    }

    async fn apply(&mut self, _tx: &mut S::Tx, e: &RecordedEvent) -> Result<(), Refused> {
        let n: u64 = serde_json::from_str(e.payload.as_str()).unwrap_or(u64::MAX);
        if Some(n) == self.poison {
            let mut left = self.fail_times.lock().unwrap();
            if *left > 0 {
                *left -= 1;
                return Err(Refused(n));
            }
        }
        self.seen.lock().unwrap().insert(e.position, (e.event_id(), n));
        Ok(())
    }
}

fn numbers(seen: &Seen) -> Vec<u64> {
    seen.lock().unwrap().values().map(|(_, n)| *n).collect()
}

pub async fn a_projection_applies_history_then_live_and_callers_read_their_writes<
    S: ProjectionStore,
>(
    store: S,
) {
    append_n(&store, "p-1", 0, 20).await;
    let recorder = Recorder::new("history-then-live");
    let seen = Arc::clone(&recorder.seen);
    let runner = ProjectionRunner::new(store.clone(), recorder)
        .batches(7, Duration::from_millis(20))
        .lease(Duration::from_secs(5));
    let handle = runner.handle();
    let task = tokio::spawn(runner.run());

    let last = append_n(&store, "p-1", 20, 10).await;
    handle.wait_for(last, PATIENCE).await.unwrap();
    assert_eq!(numbers(&seen), (0..30).collect::<Vec<_>>());
    let status = handle.status();
    assert!(status.position >= last && status.last_error.is_none(), "{status:?}");
    assert!(store.checkpoint("history-then-live").await.unwrap().unwrap() >= last);
    let lag = handle.lag().await.unwrap();
    assert_eq!(lag.events, 0, "{lag:?}");
    task.abort();
}

pub async fn a_failing_handler_is_retried_then_stops_with_the_error_visible<S: ProjectionStore>(
    store: S,
) {
    append_n(&store, "p-1", 0, 20).await;
    // Fails twice, then succeeds: retried, nothing lost or doubled.
    let mut flaky = Recorder::new("flaky");
    flaky.poison = Some(5);
    flaky.fail_times = Arc::new(Mutex::new(2));
    let seen = Arc::clone(&flaky.seen);
    let r = ProjectionRunner::new(store.clone(), flaky).retries(
        3,
        Duration::from_millis(1),
        Duration::from_millis(5),
    );
    let reached = tokio::time::timeout(PATIENCE, r.catch_up()).await.unwrap().unwrap();
    assert_eq!(numbers(&seen), (0..20).collect::<Vec<_>>());
    assert!(reached > GlobalPosition::START);

    // Always fails on 13: after its retries the runner stops there, with the error visible.
    let mut broken = Recorder::new("broken");
    broken.poison = Some(13);
    let seen = Arc::clone(&broken.seen);
    let runner = ProjectionRunner::new(store.clone(), broken).retries(
        2,
        Duration::from_millis(1),
        Duration::from_millis(5),
    );
    let handle = runner.handle();
    let err = tokio::time::timeout(PATIENCE, runner.run()).await.unwrap().unwrap_err();
    let ProjectionError::Stopped { position, reason, .. } = &err else { panic!("{err:?}") };
    assert!(reason.contains("refusing event 13"), "{reason}");
    let status = handle.status();
    assert_eq!(status.state, RunnerState::Stopped);
    assert!(status.last_error.as_deref().unwrap_or("").contains("refusing event 13"));
    assert!(status.position < *position, "the checkpoint passed the poison event");
    assert_eq!(numbers(&seen), (0..13).collect::<Vec<_>>(), "something after it was applied");
    assert!(store.checkpoint("broken").await.unwrap().unwrap() < *position);
    let waited = handle.wait_for(*position, PATIENCE).await;
    assert!(matches!(waited, Err(ProjectionError::Stopped { .. }) | Err(ProjectionError::Gone)));
}

pub async fn a_poison_event_is_parked_and_the_projection_goes_on<S: ProjectionStore>(store: S) {
    append_n(&store, "p-1", 0, 20).await;
    let mut parking = Recorder::new("parking");
    parking.poison = Some(13);
    let seen = Arc::clone(&parking.seen);
    let runner = ProjectionRunner::new(store.clone(), parking)
        .retries(1, Duration::from_millis(1), Duration::from_millis(5))
        .on_failure(OnFailure::Park)
        .batches(6, Duration::from_millis(20));
    let handle = runner.handle();
    let reached = tokio::time::timeout(PATIENCE, runner.catch_up()).await.unwrap().unwrap();
    // It says it is done, not `Live` with nothing reading the log for it.
    assert_eq!(handle.status().state, RunnerState::Finished);
    let expected: Vec<u64> = (0..20).filter(|n| *n != 13).collect();
    assert_eq!(numbers(&seen), expected);
    let parked = store.parked("parking").await.unwrap();
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert!(parked[0].error.contains("refusing event 13"));
    assert!(parked[0].event_id.is_some() && parked[0].parked_at.is_some());
    assert!(parked[0].position < reached);
    assert_eq!(handle.status().parked, 1);
}

#[derive(serde::Serialize, serde::Deserialize, Debug)]
pub struct Tick(pub u64);

impl Event for Tick {
    const EVENT_TYPE: &'static str = "Tick";
}

/// Decodes every event as `Tick` and propagates the decode error.
struct Ticks(Seen);

#[derive(Debug, thiserror::Error)]
#[error("cannot read a tick")]
struct Unreadable(#[source] DecodeError);

impl<S: ProjectionStore> Projection<S> for Ticks {
    type Error = Unreadable;
    fn name(&self) -> &str {
        "ticks"
    }
    async fn apply(&mut self, _tx: &mut S::Tx, e: &RecordedEvent) -> Result<(), Unreadable> {
        let Tick(n) = e.decode::<Tick>().map_err(Unreadable)?;
        self.0.lock().unwrap().insert(e.position, (e.event_id(), n));
        Ok(())
    }
}

pub async fn an_event_of_a_newer_schema_version_stops_even_a_parking_projection<
    S: ProjectionStore,
>(
    store: S,
) {
    let seen = Seen::default();
    a_future_tick_stops_a_parking_projection(store, Ticks(Arc::clone(&seen)), &seen).await;
}

/// Appends a `Tick`, a `Tick` of schema version 9 and an event of another type, runs
/// `projection` (over `seen`) with `OnFailure::Park`: it must stop at the second event, having
/// applied the first and parked nothing.
async fn a_future_tick_stops_a_parking_projection<S: ProjectionStore, P: Projection<S>>(
    store: S,
    projection: P,
    seen: &Seen,
) {
    let name = projection.name().to_owned();
    let s = id("tick-1");
    let meta = || EventMetadata::new(CorrelationId::new());
    let future = NewEvent::new("Tick", 9, Payload::to_json(&7).unwrap(), meta());
    let other = NewEvent::new("Tock", 1, Payload::to_json(&8).unwrap(), meta());
    let events = vec![NewEvent::from_event(&Tick(1), meta()).unwrap(), future, other];
    store
        .append(AppendRequest::new().expect(s.clone(), StreamVersion::EMPTY).write(s, events))
        .await
        .unwrap();
    let runner = ProjectionRunner::new(store.clone(), projection)
        .retries(0, Duration::from_millis(1), Duration::from_millis(1))
        .on_failure(OnFailure::Park);
    let err = tokio::time::timeout(PATIENCE, runner.run()).await.unwrap().unwrap_err();
    assert!(
        matches!(&err, ProjectionError::Stopped { reason, .. } if reason.contains("schema version 9")),
        "{err:?}"
    );
    assert!(store.parked(&name).await.unwrap().is_empty(), "a future event was parked");
    assert_eq!(seen.lock().unwrap().len(), 1);
}

/// Decodes every event as `Tick` behind the wrapper most error types use for a decode error,
/// `#[error(transparent)]`, which forwards `source()` past the `DecodeError` it holds.
struct WrappedTicks(Seen);

#[derive(Debug, thiserror::Error)]
enum TickError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

impl<S: ProjectionStore> Projection<S> for WrappedTicks {
    type Error = TickError;
    fn name(&self) -> &str {
        "wrapped-ticks"
    }
    async fn apply(&mut self, _tx: &mut S::Tx, e: &RecordedEvent) -> Result<(), TickError> {
        let Tick(n) = e.decode::<Tick>()?;
        self.0.lock().unwrap().insert(e.position, (e.event_id(), n));
        Ok(())
    }
}

/// As above, with the decode error behind `#[error(transparent)]`: still never parked.
pub async fn an_event_of_a_newer_schema_version_behind_a_transparent_error_is_not_parked<
    S: ProjectionStore,
>(
    store: S,
) {
    let seen = Seen::default();
    a_future_tick_stops_a_parking_projection(store, WrappedTicks(Arc::clone(&seen)), &seen).await;
}

pub async fn a_standby_takes_over_without_losing_or_repeating_events<S: ProjectionStore>(store: S) {
    append_n(&store, "p-1", 0, 10).await;
    // Seconds, not 300 ms: an active runner slower than its lease when the second makes its
    // first claim (a loaded machine) loses the lease to it, and the second never stands by.
    // The takeover after the abort waits for the lease to run out.
    let lease = Duration::from_secs(3);
    let first = Recorder::new("handed-over");
    let first_seen = Arc::clone(&first.seen);
    let active = ProjectionRunner::new(store.clone(), first)
        .lease(lease)
        .batches(3, Duration::from_millis(30));
    let active_handle = active.handle();
    let active_task = tokio::spawn(active.run());
    active_handle.wait_for(GlobalPosition::new(1), PATIENCE).await.unwrap();

    let second = Recorder::new("handed-over");
    let second_seen = Arc::clone(&second.seen);
    let standby = ProjectionRunner::new(store.clone(), second)
        .lease(lease)
        .batches(3, Duration::from_millis(30));
    let standby_handle = standby.handle();
    let standby_task = tokio::spawn(standby.run());
    standby_handle
        .wait_until(|s| s.state == RunnerState::Standby, PATIENCE)
        .await
        .expect("the second runner never became a standby");

    // The active runner dies; more events come; the standby takes over.
    active_task.abort();
    let _ = active_task.await;
    let last = append_n(&store, "p-1", 10, 10).await;
    standby_handle.wait_for(last, PATIENCE).await.unwrap();
    standby_task.abort();

    let (a, b) = (first_seen.lock().unwrap().clone(), second_seen.lock().unwrap().clone());
    let mut all: Vec<u64> = a.values().chain(b.values()).map(|(_, n)| *n).collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all, (0..20).collect::<Vec<_>>(), "an event was lost");
    if !S::TX_ROLLS_BACK {
        // The read model lives in the projection value: nothing may be applied twice.
        assert!(a.keys().all(|p| !b.contains_key(p)), "an event was applied by both runners");
    }
}

/// Rebuilding: a new version (a new name) catches up beside the running old one, which keeps
/// serving; it stops at the log's head as of the call, and a later `run` resumes from there.
pub async fn a_new_version_catches_up_beside_the_old_one<S: ProjectionStore>(store: S) {
    append_n(&store, "p-1", 0, 30).await;
    let old = Recorder::new("model-v1");
    let old_seen = Arc::clone(&old.seen);
    let old_runner =
        ProjectionRunner::new(store.clone(), old).batches(5, Duration::from_millis(20));
    let old_handle = old_runner.handle();
    let old_task = tokio::spawn(old_runner.run());

    let new = Recorder::new("model-v2");
    let new_seen = Arc::clone(&new.seen);
    let rebuild = ProjectionRunner::new(store.clone(), new).batches(4, Duration::from_millis(20));
    let progress = rebuild.handle();
    assert_eq!(progress.lag().await.unwrap().events, 30, "nothing applied yet: all 30 to go");
    let reached = tokio::time::timeout(PATIENCE, rebuild.catch_up()).await.unwrap().unwrap();
    assert_eq!(numbers(&new_seen), (0..30).collect::<Vec<_>>());
    assert_eq!(store.checkpoint("model-v2").await.unwrap(), Some(reached));

    // The old version kept going meanwhile; the new one resumes from its checkpoint.
    let last = append_n(&store, "p-1", 30, 5).await;
    old_handle.wait_for(last, PATIENCE).await.unwrap();
    let again = Recorder { seen: Arc::clone(&new_seen), ..Recorder::new("model-v2") };
    let runner = ProjectionRunner::new(store.clone(), again).batches(4, Duration::from_millis(20));
    let handle = runner.handle();
    let task = tokio::spawn(runner.run());
    handle.wait_for(last, PATIENCE).await.unwrap();
    assert_eq!(numbers(&new_seen), numbers(&old_seen));
    assert_eq!(numbers(&new_seen), (0..35).collect::<Vec<_>>());
    task.abort();
    old_task.abort();
}

/// Counts the events it applies in a `Cell`, which is not `Sync`, and shows the count in
/// `seen`.
struct CellCount {
    count: std::cell::Cell<u64>,
    seen: Arc<std::sync::atomic::AtomicU64>,
}

impl<S: ProjectionStore> Projection<S> for CellCount {
    type Error = std::convert::Infallible;

    fn name(&self) -> &str {
        "cell-count"
    }

    async fn apply(&mut self, _tx: &mut S::Tx, _e: &RecordedEvent) -> Result<(), Self::Error> {
        self.count.set(self.count.get() + 1);
        self.seen.store(self.count.get(), std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

/// A projection need only be `Send`: one holding a `Cell` runs on a spawned task (this does
/// not compile if the runner's future needs the projection to be `Sync`) and applies the log.
pub async fn a_projection_need_not_be_sync<S: ProjectionStore>(store: S) {
    let last = append_n(&store, "cell-count-1", 0, 5).await;
    let seen = Arc::default();
    let projection = CellCount { count: std::cell::Cell::new(0), seen: Arc::clone(&seen) };
    let runner = ProjectionRunner::new(store.clone(), projection);
    let handle = runner.handle();
    let task = tokio::spawn(runner.run());
    handle.wait_for(last, PATIENCE).await.unwrap();
    task.abort();
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 5);
}

/// A caught-up runner whose log reads take longer than its poll interval (a slow query, a
/// read that waits for an append in flight) still finds new events: the wait for news never
/// cuts a read short. (With the wait as a timeout around the whole read, each such read was
/// cancelled, and the runner applied nothing more.)
pub async fn a_runner_whose_log_reads_outlast_its_poll_interval_keeps_up<S: ProjectionStore>(
    store: S,
) {
    let poll = Duration::from_millis(20);
    let slow = Faulty::new(store.clone());
    let seen = Arc::default();
    let projection = CellCount { count: std::cell::Cell::new(0), seen: Arc::clone(&seen) };
    let runner = ProjectionRunner::new(slow.clone(), projection).batches(100, poll);
    let handle = runner.handle();
    let task = tokio::spawn(runner.run());
    let first = append_n(&store, "slow-1", 0, 3).await;
    handle.wait_for(first, PATIENCE).await.unwrap();
    slow.delay_log_reads(poll * 5);
    let last = append_n(&store, "slow-1", 3, 3).await;
    let reached = handle.wait_for(last, PATIENCE).await;
    task.abort();
    reached.unwrap();
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 6);
}

/// A runner whose filter names a category no stream can be in (every read would fail) stops
/// before reading anything, with a typed error and its status saying so, instead of retrying
/// the read for ever.
pub async fn a_runner_with_a_filter_no_stream_can_pass_is_refused<S: ProjectionStore>(store: S) {
    append_n(&store, "order-1", 0, 1).await;
    for catch_up in [false, true] {
        let mut projection = Recorder::new("bad-filter");
        projection.filter = LogFilter::all().category("order-line");
        let runner = ProjectionRunner::new(store.clone(), projection);
        let handle = runner.handle();
        let outcome = if catch_up {
            tokio::time::timeout(PATIENCE, runner.catch_up()).await.map(|r| r.map(|_| ()))
        } else {
            tokio::time::timeout(PATIENCE, runner.run()).await.map(|r| r.map(|_| ()))
        };
        match outcome.expect("it ran on") {
            Err(ProjectionError::Invalid(e)) => {
                assert_eq!(e.type_name(), "stream category", "{e}");
            }
            other => panic!("catch_up: {catch_up}: not refused: {other:?}"),
        }
        let status = handle.status();
        assert_eq!(status.state, RunnerState::Stopped);
        assert!(status.last_error.unwrap_or_default().contains("order-line"));
    }
    assert!(store.checkpoint("bad-filter").await.unwrap().is_none());
}

/// The store commits a batch and its reply is lost (a connection dropped after `COMMIT`): the
/// runner must not apply the batch again, on a store that commits per event (memory) as on one
/// that commits per batch (PostgreSQL, where the handler's writes would commit twice).
pub async fn a_batch_whose_commit_reply_is_lost_is_applied_once<S: ProjectionStore>(store: S) {
    let store = Faulty::new(store);
    let last = append_n(&store, "lost-reply-1", 0, 5).await;
    store.lose_next_commit_replies(1);
    counts_each_event_once(&store, "lost-commit-reply", last, "after a lost reply").await;
}

/// A projection transaction fails to begin in the middle of a batch, after the events before
/// it committed (memory commits after every event; on PostgreSQL, which commits per batch, the
/// first begin fails): the runner retries from the event it stopped at, and applies every
/// event once.
pub async fn a_begin_that_fails_mid_batch_applies_nothing_twice<S: ProjectionStore>(store: S) {
    let store = Faulty::new(store);
    let last = append_n(&store, "failed-begin-1", 0, 5).await;
    let nth = if S::TX_ROLLS_BACK { 1 } else { 3 };
    store.fail_nth_begin(nth);
    counts_each_event_once(&store, "failed-begin", last, "after the failed begin").await;
    // Planned before the runner started: the nth of these failed.
    assert!(store.begins() >= nth, "the injected failure was not met");
}

/// Runs a `Counter` named `name` over `store`'s five events up to `last` (a batch of five,
/// quick retries): each is applied once (`when` says when one would have been applied again)
/// and the checkpoint is `last`.
async fn counts_each_event_once<S: ProjectionStore>(
    store: &Faulty<S>,
    name: &str,
    last: GlobalPosition,
    when: &str,
) {
    let counter = Counter::new(name);
    let applied = Arc::clone(&counter.applied);
    let runner = ProjectionRunner::new(store.clone(), counter)
        .retries(5, Duration::from_millis(1), Duration::from_millis(5))
        .batches(5, Duration::from_millis(20));
    let handle = runner.handle();
    let task = tokio::spawn(runner.run());
    handle.wait_for(last, PATIENCE).await.unwrap();
    task.abort();
    assert_eq!(*applied.lock().unwrap(), 5, "an event was applied again {when}");
    assert_eq!(store.checkpoint(name).await.unwrap(), Some(last));
}

/// Counts the events it applies, each time it applies one.
pub struct Counter {
    name: String,
    applied: Arc<Mutex<u64>>,
}

impl Counter {
    pub fn new(name: &str) -> Self {
        Self { name: name.to_owned(), applied: Arc::default() }
    }
}

impl<S: ProjectionStore> Projection<S> for Counter {
    type Error = std::convert::Infallible;

    fn name(&self) -> &str {
        &self.name
    }

    async fn apply(&mut self, _tx: &mut S::Tx, _e: &RecordedEvent) -> Result<(), Self::Error> {
        *self.applied.lock().unwrap() += 1;
        Ok(())
    }
}

/// How `runner` ends (`run` or `catch_up`), within [`PATIENCE`].
async fn refusal<S: ProjectionStore, P: Projection<S>>(
    runner: ProjectionRunner<S, P>,
    catch_up: bool,
) -> Result<(), ProjectionError> {
    let outcome = if catch_up {
        tokio::time::timeout(PATIENCE, runner.catch_up()).await.map(|r| r.map(|_| ()))
    } else {
        tokio::time::timeout(PATIENCE, runner.run()).await.map(|r| r.map(|_| ()))
    };
    outcome.expect("it ran on")
}

/// A lease longer than `MAX_LEASE` (here `Duration::MAX`, which overflowed the memory store's
/// clock and PostgreSQL's interval) is refused with a typed error, by the runner before it
/// claims anything and by the store itself; `MAX_LEASE` itself is taken. So is one shorter than
/// `MIN_LEASE` by the runner (it was lengthened to 10 ms without a word).
pub async fn a_lease_longer_than_the_longest_is_refused<S: ProjectionStore>(store: S) {
    use eventcore::{
        backend::StoreError,
        subscription::{MAX_LEASE, MIN_LEASE},
    };
    let leases = [MAX_LEASE + Duration::from_millis(1), MIN_LEASE - Duration::from_nanos(1)];
    for (lease, catch_up) in leases.into_iter().flat_map(|l| [(l, false), (l, true)]) {
        let runner = ProjectionRunner::new(store.clone(), Recorder::new("endless")).lease(lease);
        let handle = runner.handle();
        match refusal(runner, catch_up).await {
            Err(ProjectionError::Invalid(e)) => assert_eq!(e.type_name(), "lease", "{e}"),
            other => panic!("{lease:?}, catch_up: {catch_up}: not refused: {other:?}"),
        }
        assert_eq!(handle.status().state, RunnerState::Stopped);
    }
    // So are settings that were quietly raised: a batch of no events, a poll interval of
    // zero, a longest backoff below the first.
    let ms = Duration::from_millis;
    let runner = || ProjectionRunner::new(store.clone(), Recorder::new("endless"));
    for (setting, runner) in [
        ("batches", runner().batches(0, ms(20))),
        ("batches", runner().batches(10, Duration::ZERO)),
        ("retries", runner().retries(3, ms(50), ms(10))),
        ("retries", runner().retries(3, Duration::ZERO, ms(10))),
    ] {
        match refusal(runner, false).await {
            Err(ProjectionError::Invalid(e)) => assert_eq!(e.type_name(), setting, "{e}"),
            other => panic!("{setting}: not refused: {other:?}"),
        }
    }
    assert!(store.checkpoint("endless").await.unwrap().is_none());
    let owner = uuid::Uuid::now_v7();
    let claimed = store.claim("endless", owner, Duration::MAX).await;
    assert!(matches!(claimed, Err(StoreError::InvalidLease(_))), "{claimed:?}");
    let lease = store.claim("endless", owner, MAX_LEASE).await.unwrap().expect("not taken");
    let renewed = store.renew(&lease, Duration::MAX).await;
    assert!(matches!(renewed, Err(StoreError::InvalidLease(_))), "{renewed:?}");
    assert!(store.renew(&lease, MAX_LEASE).await.unwrap());
}

/// Process managers keep their lease and checkpoint under `process:<name>`: a projection named
/// `process:orders` would share them with the process manager `orders` (each would skip the
/// events the other committed past, and they would take turns as each other's standby). Such a
/// name is refused with a typed error.
pub async fn a_projection_named_like_a_process_manager_is_refused<S: ProjectionStore>(store: S) {
    append_n(&store, "order-1", 0, 1).await;
    for catch_up in [false, true] {
        let runner = ProjectionRunner::new(store.clone(), Recorder::new("process:orders"));
        match refusal(runner, catch_up).await {
            Err(ProjectionError::Invalid(e)) => assert_eq!(e.type_name(), "projection name"),
            other => panic!("catch_up: {catch_up}: not refused: {other:?}"),
        }
    }
    assert!(store.checkpoint("process:orders").await.unwrap().is_none());
    // Other names with a colon are a projection's own.
    let runner = ProjectionRunner::new(store.clone(), Recorder::new("processed:orders"));
    assert!(refusal(runner, true).await.is_ok());
}

/// A runner whose filter skips most of the log reads it in batches that hold few of its events
/// or none: such a batch does not mean it reached the end of the log. While the log holds more
/// than it has read, its status says `CatchingUp`, never `Live` (what a readiness check waits
/// for). Its reads are slowed so that the test sees the status of its first batch.
pub async fn a_runner_far_behind_is_not_reported_live<S: ProjectionStore>(store: S) {
    append_n(&store, "other-1", 0, 60).await;
    append_of_another_type(&store, "mine-0", 60).await;
    let last = append_n(&store, "mine-1", 0, 1).await;
    let slow = Faulty::new(store.clone());
    slow.delay_log_reads(Duration::from_millis(300));
    let mut projection = Recorder::new("far-behind");
    // A category and an event type, which most of the category's events are not of: both
    // stores read categories through an index, straight to their events (a filter of
    // categories alone would reach the end in its first batch), then look at a bounded
    // number of them for the event type.
    projection.filter = LogFilter::all().category("mine").event_type("N");
    let seen = Arc::clone(&projection.seen);
    let runner = ProjectionRunner::new(slow, projection).batches(1, Duration::from_millis(20));
    let handle = runner.handle();
    let task = tokio::spawn(runner.run());
    first_batch_is_not_live(&handle, last).await;
    task.abort();
    assert_eq!(numbers(&seen), [0]);
}

/// The first batch a runner behind `handle` reports ends before `last` (or the test proves
/// nothing), and is not reported `Live`; then the runner reaches `last`.
pub async fn first_batch_is_not_live<S: ProjectionStore>(
    handle: &ProjectionHandle<S>,
    last: GlobalPosition,
) {
    let first = handle.wait_until(|s| s.position > GlobalPosition::START, PATIENCE).await.unwrap();
    assert!(
        first.position < last,
        "the first batch reached the end of the log: the test proves nothing ({first:?})"
    );
    assert_ne!(
        first.state,
        RunnerState::Live,
        "reported live at {}, the log at {last}",
        first.position
    );
    handle.wait_for(last, PATIENCE).await.unwrap();
}

/// A runner that stops on a poison event has committed the events before it: its status shows
/// that checkpoint (so that `wait_for` one of those events succeeds), on a store that commits
/// per event (memory) as on one that commits the events before it with the checkpoint
/// (PostgreSQL).
pub async fn a_stopped_runner_reports_the_checkpoint_it_committed<S: ProjectionStore>(store: S) {
    append_n(&store, "p-1", 0, 20).await;
    let events = store.read_all(GlobalPosition::START, 100).await.unwrap();
    let mut broken = Recorder::new("stopped-at-13");
    broken.poison = Some(13);
    let runner = ProjectionRunner::new(store.clone(), broken)
        .retries(0, Duration::from_millis(1), Duration::from_millis(1))
        .batches(20, Duration::from_millis(20));
    let handle = runner.handle();
    let err = tokio::time::timeout(PATIENCE, runner.run()).await.unwrap().unwrap_err();
    assert!(matches!(err, ProjectionError::Stopped { .. }), "{err:?}");
    let committed = store.checkpoint("stopped-at-13").await.unwrap();
    assert_eq!(committed, Some(events[12].position), "the events before 13 were not committed");
    assert_eq!(handle.status().position, events[12].position, "{:?}", handle.status());
}

/// `lag().behind` is how long the oldest event the projection has not passed yet has waited:
/// also when a stretch of events its filter skips lies before the next one it wants (it must
/// not read as zero for a projection that has not started on events appended an hour ago).
pub async fn the_lag_counts_old_events_behind_a_quiet_stretch<S: ProjectionStore>(store: S) {
    let an_hour_ago = eventcore::Timestamp::from_datetime(
        chrono::Utc::now() - chrono::TimeDelta::try_hours(1).unwrap(),
    );
    let mut last = GlobalPosition::START;
    for (stream, n) in (0..60).map(|n| ("other-1", n)).chain([("mine-1", 0)]) {
        let mut meta = EventMetadata::new(CorrelationId::new());
        meta.timestamp = an_hour_ago;
        let old = NewEvent::new("N", 1, Payload::to_json(&n).unwrap(), meta);
        let s = id(stream);
        let request =
            AppendRequest::new().expect(s.clone(), StreamVersion::new(n)).write(s, vec![old]);
        last = store.append(request).await.unwrap().positions.unwrap().1;
    }
    let mut projection = Recorder::new("quiet-stretch");
    projection.filter = LogFilter::all().category("mine");
    let runner = ProjectionRunner::new(store.clone(), projection);
    let lag = runner.handle().lag().await.unwrap();
    assert_eq!((lag.head, lag.events, lag.more), (last, 61, false));
    assert!(lag.behind >= Duration::from_secs(59 * 60), "{lag:?}");
}

/// A lag, and the log's stats, count the events behind up to the limit asked for, and say
/// when more lie behind it: exactly the limit is counted whole, one more is `more`. The wait
/// and the head do not depend on the limit.
pub async fn the_lag_counts_up_to_its_limit<S: ProjectionStore>(store: S) {
    let last = append_n(&store, "p-1", 0, 30).await;
    let handle = ProjectionRunner::new(store.clone(), Recorder::new("limited")).handle();
    let exact = handle.lag().await.unwrap();
    assert_eq!((exact.head, exact.events, exact.more), (last, 30, false));
    for (limit, events, more) in
        [(u64::MAX, 30, false), (31, 30, false), (30, 30, false), (29, 29, true), (1, 1, true)]
    {
        let lag = handle.lag_within(limit).await.unwrap();
        assert_eq!((lag.head, lag.events, lag.more), (last, events, more), "limit {limit}");
        let stats = store.log_stats(GlobalPosition::START, limit).await.unwrap();
        assert_eq!((stats.head, stats.events_after, stats.more), (last, events, more));
    }
    let none = handle.lag_within(0).await.unwrap();
    assert_eq!((none.head, none.events, none.more), (last, 0, true));
    assert_eq!(none.to_string().split(',').next(), Some("events behind"));
    assert_eq!(exact.to_string().split(',').next(), Some("30 events behind"));
    // Past the head: nothing behind, whatever the limit.
    for limit in [0, 1, u64::MAX] {
        let stats = store.log_stats(last, limit).await.unwrap();
        assert_eq!((stats.head, stats.events_after, stats.more), (last, 0, false));
    }
}

#[derive(serde::Serialize, serde::Deserialize, Debug)]
pub enum Light {
    On,
    Off,
}

impl Event for Light {
    const EVENT_TYPE: &'static str = "Light";
}

/// Decodes `Light` events, and records the numbers of the others.
struct Lights(Seen);

#[derive(Debug, thiserror::Error)]
#[error("cannot read a light: {0}")]
struct BadLight(DecodeError);

impl<S: ProjectionStore> Projection<S> for Lights {
    type Error = BadLight;
    fn name(&self) -> &str {
        "lights"
    }
    async fn apply(&mut self, _tx: &mut S::Tx, e: &RecordedEvent) -> Result<(), BadLight> {
        if &*e.event_type == "Light" {
            e.decode::<Light>().map_err(BadLight)?;
        }
        let n: u64 = serde_json::from_str(e.payload.as_str()).unwrap_or(u64::MAX);
        self.0.lock().unwrap().insert(e.position, (e.event_id(), n));
        Ok(())
    }
}

/// A payload may hold U+0000 (as the escape `\u0000`), and the reason an event cannot be
/// handled may quote it: `serde_json` names an unknown variant as it read it, NUL included.
/// Parking such an event parks it, with a reason every store can keep, and the projection
/// goes on (PostgreSQL refused the NUL in the reason's `text` column, every commit of the
/// parked event failed, and the projection never got past it).
pub async fn an_event_whose_failure_quotes_a_nul_is_parked<S: ProjectionStore>(store: S) {
    append_n(&store, "lamp-1", 0, 3).await;
    let lamp = id("lamp-1");
    let payload = Payload::from_json_str(r#""O\u0000n""#).unwrap();
    let odd = NewEvent::new("Light", 1, payload, EventMetadata::new(CorrelationId::new()));
    let request = AppendRequest::new().expect(lamp.clone(), StreamVersion::new(3));
    store.append(request.write(lamp.clone(), vec![odd])).await.unwrap();
    append_n(&store, "lamp-1", 4, 2).await;
    let seen = Seen::default();
    let runner = ProjectionRunner::new(store.clone(), Lights(Arc::clone(&seen)))
        .retries(1, Duration::from_millis(1), Duration::from_millis(5))
        .on_failure(OnFailure::Park)
        .batches(10, Duration::from_millis(20));
    let handle = runner.handle();
    let outcome = tokio::time::timeout(Duration::from_secs(20), runner.catch_up()).await;
    let last_error = handle.status().last_error;
    let reached = outcome
        .unwrap_or_else(|_| panic!("the projection never got past the event: {last_error:?}"))
        .unwrap();
    assert_eq!(numbers(&seen), vec![0, 1, 2, 4, 5]);
    let parked = store.parked("lights").await.unwrap();
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert!(parked[0].error.contains("unknown variant"), "{:?}", parked[0].error);
    assert!(!parked[0].error.contains('\0'), "{:?}", parked[0].error);
    assert!(parked[0].position < reached);
}

/// PostgreSQL cannot keep U+0000 in the name under which a projection's lease and checkpoint
/// are stored: such a name is refused on every backend with a typed error, before anything is
/// claimed (PostgreSQL failed every claim, and the runner retried for ever).
pub async fn a_projection_named_with_a_nul_is_refused<S: ProjectionStore>(store: S) {
    append_n(&store, "order-1", 0, 1).await;
    for catch_up in [false, true] {
        let runner = ProjectionRunner::new(store.clone(), Recorder::new("orders\0v2"));
        let handle = runner.handle();
        let refused = tokio::time::timeout(Duration::from_secs(20), refusal(runner, catch_up));
        let refused = refused.await;
        match refused.unwrap_or_else(|_| panic!("still running: {:?}", handle.status().last_error))
        {
            Err(ProjectionError::Invalid(e)) => assert_eq!(e.type_name(), "projection name"),
            other => panic!("catch_up: {catch_up}: not refused: {other:?}"),
        }
        assert_eq!(handle.status().state, RunnerState::Stopped);
    }
}

/// `ProjectionStore::parked` answers a projection's parked events in position order, each
/// once, however they were committed: an event parked again (a commit sent again after its
/// reply was lost) is kept once, with the reason it was first parked with, and one parked
/// below an earlier one comes first. (The memory store answered them in commit order, and
/// twice; PostgreSQL keys them by position.)
pub async fn parked_events_are_answered_once_in_position_order<S: ProjectionStore>(store: S) {
    let last = append_n(&store, "parked-order-1", 0, 3).await;
    let lease = store.claim("parked-order", uuid::Uuid::now_v7(), PATIENCE).await.unwrap();
    let lease = lease.expect("nobody holds it");
    let log = store.read_log(GlobalPosition::START, &LogFilter::all(), 10).await.unwrap();
    let at: Vec<GlobalPosition> = log.into_events().unwrap().iter().map(|e| e.position).collect();
    for (position, why) in [(at[2], "third"), (at[0], "first"), (at[2], "third again")] {
        let parked =
            eventcore::subscription::ParkedEvent::new(position, None, "parked-order-1", why);
        let tx = store.begin(&lease).await.unwrap();
        assert!(store.commit(tx, &lease, last, Some(parked), None).await.unwrap());
    }
    let parked = store.parked("parked-order").await.unwrap();
    let got: Vec<_> = parked.iter().map(|p| (p.position, p.error.as_str())).collect();
    assert_eq!(got, [(at[0], "first"), (at[2], "third")]);
}

/// A projection's name keys its lease, checkpoint and parked events; PostgreSQL indexes it,
/// and cannot index a long one (a few kilobytes): every claim failed, and the runner retried
/// for ever, where memory ran it. A name longer than `StreamId::MAX_LEN` bytes is refused on
/// every backend with a typed error; one of that length runs.
pub async fn a_projection_name_too_long_to_store_is_refused<S: ProjectionStore>(store: S) {
    append_n(&store, "order-1", 0, 1).await;
    // Random text, which PostgreSQL cannot compress below its index's limit.
    let long: String = (0..100).map(|_| uuid::Uuid::new_v4().simple().to_string()).collect();
    for catch_up in [false, true] {
        let runner = ProjectionRunner::new(store.clone(), Recorder::new(&long));
        let handle = runner.handle();
        let refused = tokio::time::timeout(Duration::from_secs(20), refusal(runner, catch_up));
        let refused = refused.await;
        match refused.unwrap_or_else(|_| panic!("still running: {:?}", handle.status().last_error))
        {
            Err(ProjectionError::Invalid(e)) => assert_eq!(e.type_name(), "projection name"),
            other => panic!("catch_up: {catch_up}: not refused: {other:?}"),
        }
    }
    let longest = &long[..StreamId::MAX_LEN];
    let runner = ProjectionRunner::new(store.clone(), Recorder::new(longest));
    assert!(refusal(runner, true).await.is_ok());
    assert!(store.checkpoint(longest).await.unwrap().is_some());
}

/// Fails on the events whose number is in `broken`, with `reason`; counts how often it
/// applied each event (by number), so that an event applied twice shows.
struct Fixable {
    name: String,
    broken: Arc<Mutex<Vec<u64>>>,
    reason: Arc<Mutex<String>>,
    applied: Arc<Mutex<BTreeMap<u64, u32>>>,
    filter: LogFilter,
}

impl Fixable {
    fn new(name: &str, broken: &[u64]) -> Self {
        Self {
            name: name.to_owned(),
            broken: Arc::new(Mutex::new(broken.to_vec())),
            reason: Arc::new(Mutex::new("broken handler".to_owned())),
            applied: Arc::default(),
            filter: LogFilter::all(),
        }
    }

    /// A second instance (another process's runner, after a deploy) sharing what it counts.
    fn again(&self, broken: &[u64], reason: &str) -> Self {
        *self.broken.lock().unwrap() = broken.to_vec();
        *self.reason.lock().unwrap() = reason.to_owned();
        Self {
            name: self.name.clone(),
            broken: Arc::clone(&self.broken),
            reason: Arc::clone(&self.reason),
            applied: Arc::clone(&self.applied),
            filter: self.filter.clone(),
        }
    }

    /// How often each event was applied since the last call. On a store whose transactions
    /// roll back, the events before a failing one are applied again with their batch; each
    /// count is exact only in a phase in which no batch fails.
    fn take(&self) -> BTreeMap<u64, u32> {
        std::mem::take(&mut *self.applied.lock().unwrap())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("event {0}: {1}")]
struct StillBroken(u64, String);

impl<S: ProjectionStore> Projection<S> for Fixable {
    type Error = StillBroken;

    fn name(&self) -> &str {
        &self.name
    }

    fn filter(&self) -> LogFilter {
        self.filter.clone()
    }

    async fn apply(&mut self, _tx: &mut S::Tx, e: &RecordedEvent) -> Result<(), StillBroken> {
        let n: u64 = serde_json::from_str(e.payload.as_str()).unwrap_or(u64::MAX);
        if self.broken.lock().unwrap().contains(&n) {
            return Err(StillBroken(n, self.reason.lock().unwrap().clone()));
        }
        *self.applied.lock().unwrap().entry(n).or_default() += 1;
        Ok(())
    }
}

/// Catches `projection` up, parking what fails (quick retries); returns its status.
async fn park_through<S: ProjectionStore>(
    store: &S,
    projection: Fixable,
    retry_parked: bool,
) -> eventcore::subscription::ProjectionStatus {
    let mut runner = ProjectionRunner::new(store.clone(), projection)
        .retries(1, Duration::from_millis(1), Duration::from_millis(5))
        .on_failure(OnFailure::Park)
        .batches(4, Duration::from_millis(20));
    if retry_parked {
        runner = runner.retry_parked();
    }
    let handle = runner.handle();
    tokio::time::timeout(PATIENCE, runner.catch_up()).await.unwrap().unwrap();
    handle.status()
}

/// The handler of a parking projection is fixed and its runner restarted with
/// `retry_parked`: the events it parked reach the fixed handler, once each, and leave the
/// parked list; the checkpoint stays where it was, and nothing else is applied again. A
/// parked event the handler still fails on stays parked, with its new reason.
pub async fn parked_events_reach_the_fixed_handler_once<S: ProjectionStore>(store: S) {
    append_n(&store, "fix-1", 0, 12).await;
    let first = Fixable::new("fixable", &[3, 7, 9]);
    let status = park_through(&store, first.again(&[3, 7, 9], "broken handler"), false).await;
    assert_eq!(status.parked, 3);
    let parked_through: Vec<u64> = first.take().into_keys().collect();
    assert_eq!(parked_through, [0, 1, 2, 4, 5, 6, 8, 10, 11]);
    let checkpoint = store.checkpoint("fixable").await.unwrap().unwrap();
    let parked = store.parked("fixable").await.unwrap();
    let positions: Vec<GlobalPosition> = parked.iter().map(|p| p.position).collect();
    assert_eq!(positions.len(), 3, "{parked:?}");
    assert!(parked.iter().all(|p| p.error.contains("broken handler")), "{parked:?}");

    // The fix for 3 and 9 is deployed; 7 still fails, for another reason.
    let status = park_through(&store, first.again(&[7], "still wrong"), true).await;
    assert_eq!((status.unparked, status.parked), (2, 0), "{status:?}");
    assert_eq!(first.take(), BTreeMap::from([(3, 1), (9, 1)]), "nothing else, once each");
    let parked = store.parked("fixable").await.unwrap();
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!(parked[0].position, positions[1]);
    assert!(parked[0].error.contains("event 7: still wrong"), "{:?}", parked[0].error);
    assert_eq!(store.checkpoint("fixable").await.unwrap(), Some(checkpoint));

    // Without `retry_parked` a restart leaves parked events alone; with it, the last one goes
    // once it is fixed.
    append_n(&store, "fix-1", 12, 2).await;
    let status = park_through(&store, first.again(&[7], "still wrong"), false).await;
    assert_eq!(status.unparked, 0);
    assert_eq!(first.take(), BTreeMap::from([(12, 1), (13, 1)]));
    assert_eq!(store.parked("fixable").await.unwrap().len(), 1);
    let status = park_through(&store, first.again(&[], ""), true).await;
    assert_eq!(status.unparked, 1);
    assert_eq!(first.take(), BTreeMap::from([(7, 1)]));
    assert!(store.parked("fixable").await.unwrap().is_empty());
}

/// A parked event is applied again and the store commits it, but the reply is lost (a
/// connection dropped after `COMMIT`): the runner must not apply it a second time. It starts
/// a new term and finds the event no longer parked.
pub async fn a_retried_parked_event_whose_commit_reply_is_lost_is_applied_once<
    S: ProjectionStore,
>(
    store: S,
) {
    let store = Faulty::new(store);
    append_n(&store, "fix-lost-1", 0, 4).await;
    let first = Fixable::new("fix-lost", &[2]);
    park_through(&store, first.again(&[2], "broken"), false).await;
    assert_eq!(store.parked("fix-lost").await.unwrap().len(), 1);
    first.take();
    store.lose_next_commit_replies(1);
    let status = park_through(&store, first.again(&[], ""), true).await;
    assert_eq!(first.take(), BTreeMap::from([(2, 1)]), "{status:?}");
    assert!(store.parked("fix-lost").await.unwrap().is_empty());
    assert_eq!(status.unparked, 1, "the event applied again was not counted: {status:?}");
}

/// An operator discards a parked event: it leaves the parked list without being applied, and
/// a runner with `retry_parked` does not see it; discarding it again, or an event never
/// parked, answers `false`. A parked event the projection's filter no longer passes stays
/// parked through a retrying runner.
pub async fn a_discarded_parked_event_is_never_applied<S: ProjectionStore>(store: S) {
    append_n(&store, "discard-1", 0, 3).await;
    append_n(&store, "other-1", 0, 2).await;
    let first = Fixable::new("discarding", &[1]);
    park_through(&store, first.again(&[1], "broken"), false).await;
    let parked = store.parked("discarding").await.unwrap();
    let (discard, other) = match &parked[..] {
        [a, b] if a.stream == "discard-1" && b.stream == "other-1" => (a.position, b.position),
        _ => panic!("{parked:?}"),
    };
    assert!(store.discard_parked("discarding", discard).await.unwrap());
    assert!(!store.discard_parked("discarding", discard).await.unwrap());
    assert!(!store.discard_parked("nobody", discard).await.unwrap());

    first.take();
    let mut fixed = first.again(&[], "");
    fixed.filter = LogFilter::all().category("discard");
    let status = park_through(&store, fixed, true).await;
    assert_eq!(status.unparked, 0, "{status:?}");
    assert_eq!(first.take(), BTreeMap::new(), "the discarded or the filtered event was applied");
    let left = store.parked("discarding").await.unwrap();
    assert_eq!(left.iter().map(|p| p.position).collect::<Vec<_>>(), [other]);
}

/// `ProjectionStore::retried` writes only under the lease it is given: with a lease taken
/// over since, it answers `false` and the event stays parked as it was; under the current
/// lease a failure replaces the reason (a NUL stored as `\0`, as when it was parked) and a
/// success removes the event. The checkpoint never moves.
pub async fn a_parked_event_is_retried_only_under_the_lease<S: ProjectionStore>(store: S) {
    let last = append_n(&store, "retried-1", 0, 2).await;
    let old = store.claim("retried", uuid::Uuid::now_v7(), PATIENCE).await.unwrap().unwrap();
    let parked = eventcore::subscription::ParkedEvent::new(last, None, "retried-1", "first");
    let tx = store.begin(&old).await.unwrap();
    assert!(store.commit(tx, &old, last, Some(parked), None).await.unwrap());
    store.release(&old).await.unwrap();
    let new = store.claim("retried", uuid::Uuid::now_v7(), PATIENCE).await.unwrap().unwrap();

    let tx = store.begin(&old).await.unwrap();
    assert!(!store.retried(tx, &old, last, Ok(())).await.unwrap(), "a stale lease was obeyed");
    let reasons = |p: Vec<eventcore::subscription::ParkedEvent>| {
        p.into_iter().map(|p| (p.position, p.error)).collect::<Vec<_>>()
    };
    assert_eq!(reasons(store.parked("retried").await.unwrap()), [(last, "first".to_owned())]);

    let tx = store.begin(&new).await.unwrap();
    let again = Err("second \0 try".to_owned());
    assert!(store.retried(tx, &new, last, again).await.unwrap());
    let expected = [(last, "second \\0 try".to_owned())];
    assert_eq!(reasons(store.parked("retried").await.unwrap()), expected);

    let tx = store.begin(&new).await.unwrap();
    assert!(store.retried(tx, &new, last, Ok(())).await.unwrap());
    assert!(store.parked("retried").await.unwrap().is_empty());
    assert_eq!(store.checkpoint("retried").await.unwrap(), Some(last));
}

/// `ProjectionStore::projections` lists every projection the store keeps a checkpoint for, in
/// name order (bytes, so `Z` before `a`): its checkpoint, the runner holding its lease while
/// it lasts, and how many events it parked.
pub async fn the_store_lists_its_projections<S: ProjectionStore>(store: S) {
    let last = append_n(&store, "listed-1", 0, 2).await;
    let owner = uuid::Uuid::now_v7();
    let held = store.claim("b-held", owner, PATIENCE).await.unwrap().unwrap();
    let parked = eventcore::subscription::ParkedEvent::new(last, None, "listed-1", "why");
    let tx = store.begin(&held).await.unwrap();
    assert!(store.commit(tx, &held, last, Some(parked), None).await.unwrap());
    let freed = store.claim("a-freed", uuid::Uuid::now_v7(), PATIENCE).await.unwrap().unwrap();
    store.release(&freed).await.unwrap();
    store.claim("Z-upper", uuid::Uuid::now_v7(), PATIENCE).await.unwrap().unwrap();

    let all = store.projections().await.unwrap();
    let names: Vec<&str> = all.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["Z-upper", "a-freed", "b-held"]);
    let (freed, held) = (&all[1], &all[2]);
    assert_eq!(
        (freed.position, freed.holder, freed.lease_left, freed.parked),
        (GlobalPosition::START, None, None, 0)
    );
    assert_eq!((held.position, held.holder, held.parked), (last, Some(owner), 1));
    let left = held.lease_left.expect("the lease lasts");
    assert!(left <= PATIENCE && left > PATIENCE / 2, "{left:?}");
}

/// A runner that starts while the store is away (its claims of the lease fail) reports
/// `Retrying` with the store's error, as it does when its reads fail later, rather than
/// `Starting` for as long as the outage lasts; once the store answers it runs. Both runners:
/// a projection's and a process manager's.
pub async fn a_runner_starting_while_the_store_is_away_reports_retrying<S: ProjectionStore>(
    store: S,
) {
    use eventcore::{Executor, subscription::ProcessRunner};
    let store = Faulty::new(store);
    let last = append_n(&store, "away-1", 0, 2).await;
    for process in [false, true] {
        store.fail_next_claims(usize::MAX);
        let (handle, task) = if process {
            let manager = super::quiet_manager::QuietManager("awayprocess", || {
                LogFilter::all().category("away")
            });
            let runner = ProcessRunner::new(Executor::new(store.clone()), manager).retries(
                1,
                Duration::from_millis(1),
                Duration::from_millis(5),
            );
            let handle = runner.handle();
            let task = tokio::spawn(async move { runner.run().await.map(|_| ()) });
            (handle, task)
        } else {
            let runner = ProjectionRunner::new(store.clone(), Counter::new("away")).retries(
                1,
                Duration::from_millis(1),
                Duration::from_millis(5),
            );
            let handle = runner.handle();
            let task = tokio::spawn(async move { runner.run().await.map(|_| ()) });
            (handle, task)
        };
        let away = |s: &eventcore::subscription::ProjectionStatus| {
            s.state == RunnerState::Retrying
                && s.last_error.as_deref().is_some_and(|e| e.contains("could not be claimed"))
        };
        let status = handle.wait_until(away, PATIENCE).await;
        assert!(status.is_ok(), "process: {process}: {:?}", handle.status());
        store.fail_next_claims(0);
        handle.wait_for(last, PATIENCE).await.unwrap();
        handle.wait_until(|s| s.state == RunnerState::Live, PATIENCE).await.unwrap();
        task.abort();
    }
}

/// The store fails while a parked event is being applied again (its transaction cannot
/// begin): the runner reports `Retrying` with the error, as for any store failure, backs off,
/// and then applies the event once.
pub async fn a_store_failure_while_retrying_a_parked_event_reports_retrying<S: ProjectionStore>(
    store: S,
) {
    let store = Faulty::new(store);
    append_n(&store, "fix-away-1", 0, 3).await;
    let first = Fixable::new("fix-away", &[1]);
    park_through(&store, first.again(&[1], "broken"), false).await;
    first.take();
    store.fail_nth_begin(1);
    let runner = ProjectionRunner::new(store.clone(), first.again(&[], ""))
        .retries(1, Duration::from_millis(300), Duration::from_millis(300))
        .retry_parked();
    let handle = runner.handle();
    let task = tokio::spawn(runner.catch_up());
    let away = |s: &eventcore::subscription::ProjectionStatus| {
        s.state == RunnerState::Retrying
            && s.last_error.as_deref().is_some_and(|e| e.contains("could not begin"))
    };
    let seen = handle.wait_until(away, PATIENCE).await;
    assert!(seen.is_ok(), "{:?}", handle.status());
    tokio::time::timeout(PATIENCE, task).await.unwrap().unwrap().unwrap();
    assert_eq!(first.take(), BTreeMap::from([(1, 1)]));
    assert!(store.parked("fix-away").await.unwrap().is_empty());
}

/// Applies events until the one numbered `panic_at`, on which it panics (a handler's bug).
struct Panicking {
    panic_at: u64,
}

impl<S: ProjectionStore> Projection<S> for Panicking {
    type Error = Refused;

    fn name(&self) -> &str {
        "panicking"
    }

    async fn apply(&mut self, _tx: &mut S::Tx, e: &RecordedEvent) -> Result<(), Refused> {
        let n: u64 = serde_json::from_str(e.payload.as_str()).unwrap_or(u64::MAX);
        assert_ne!(n, self.panic_at, "the handler's bug");
        Ok(())
    }
}

/// A runner whose task ends without the runner stopping reports itself stopped, with why:
/// one aborted while live, and one whose handler panics. Its handle no longer says it runs
/// (a readiness check on it would pass for ever, and its state gauge stay `live`), and
/// waiting on it ends at once.
pub async fn a_runner_whose_task_ends_without_stopping_reports_stopped<S: ProjectionStore>(
    store: S,
) {
    let last = append_n(&store, "ended-1", 0, 3).await;
    let runner = ProjectionRunner::new(store.clone(), Recorder::new("aborted"))
        .batches(10, Duration::from_millis(20));
    let handle = runner.handle();
    let task = tokio::spawn(runner.run());
    handle.wait_for(last, PATIENCE).await.unwrap();
    handle.wait_until(|s| s.state == RunnerState::Live, PATIENCE).await.unwrap();
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    let status = handle.status();
    assert_eq!(status.state, RunnerState::Stopped, "{status:?}");
    assert!(status.last_error.as_deref().is_some_and(|e| e.contains("aborted")), "{status:?}");
    let later = GlobalPosition::new(last.get() + 1);
    let waited = handle.wait_for(later, PATIENCE).await;
    assert!(matches!(waited, Err(ProjectionError::Stopped { .. })), "{waited:?}");

    let runner = ProjectionRunner::new(store.clone(), Panicking { panic_at: 1 })
        .batches(1, Duration::from_millis(20));
    let handle = runner.handle();
    let task = tokio::spawn(runner.run());
    assert!(task.await.unwrap_err().is_panic());
    let status = handle.status();
    assert_eq!(status.state, RunnerState::Stopped, "{status:?}");
    assert!(status.last_error.as_deref().is_some_and(|e| e.contains("panicked")), "{status:?}");
    // It applied the event before the one it panicked on.
    let events = store.read_all(GlobalPosition::START, 10).await.unwrap();
    assert!(status.position >= events[0].position, "{status:?}");
    assert!(status.position < events[1].position, "{status:?}");
}

/// Applies events slowly, `pause` each, and never finishes the event numbered `hang_on`
/// (saying so through `hanging` first); records the position of every event it applied, each
/// time it applied it.
struct Slow {
    name: String,
    pause: Duration,
    hang_on: Option<u64>,
    /// Refuses the event numbered so, every time.
    fail_on: Option<u64>,
    hanging: Arc<tokio::sync::Notify>,
    applied: Arc<Mutex<Vec<GlobalPosition>>>,
}

impl Slow {
    fn new(name: &str, pause: Duration, hang_on: Option<u64>) -> Self {
        let (hanging, applied) = (Arc::default(), Arc::default());
        Self { name: name.to_owned(), pause, hang_on, fail_on: None, hanging, applied }
    }
}

impl<S: ProjectionStore> Projection<S> for Slow {
    type Error = Refused;

    fn name(&self) -> &str {
        &self.name
    }

    async fn apply(&mut self, _tx: &mut S::Tx, e: &RecordedEvent) -> Result<(), Refused> {
        let n: u64 = serde_json::from_str(e.payload.as_str()).unwrap_or(u64::MAX);
        if Some(n) == self.hang_on {
            self.hanging.notify_one();
            std::future::pending::<()>().await;
        }
        if Some(n) == self.fail_on {
            return Err(Refused(n));
        }
        // The work the handler does (a call to another service, say): it takes time.
        tokio::time::sleep(self.pause).await;
        self.applied.lock().unwrap().push(e.position);
        Ok(())
    }
}

/// A batch that takes longer than the lease, one event after another, keeps the lease while
/// it is applied, and commits once. (Its commit used to be refused for a lease that ran out
/// with nobody else wanting it: on PostgreSQL, where a batch commits whole, the same batch then
/// failed the same way term after term, and the projection never moved.)
pub async fn a_batch_longer_than_the_lease_commits_once<S: ProjectionStore>(store: S) {
    let last = append_n(&store, "slow-1", 0, 24).await;
    // 24 events of 50 ms: twice the lease, which is renewed every 200 ms or so (a loaded
    // machine may run late by 350 ms before the lease runs out).
    let lease = Duration::from_millis(600);
    let slow = Slow::new("slow-batch", Duration::from_millis(50), None);
    let applied = Arc::clone(&slow.applied);
    let runner = ProjectionRunner::new(store.clone(), slow)
        .lease(lease)
        .batches(24, Duration::from_millis(20));
    let handle = runner.handle();
    let task = tokio::spawn(runner.run());
    let reached = handle.wait_for(last, Duration::from_secs(20)).await;
    task.abort();
    let applied = applied.lock().unwrap().clone();
    assert!(reached.is_ok(), "the batch never committed: {reached:?}; applied {applied:?}");
    assert_eq!(applied.len(), 24, "applied more than once: {applied:?}");
}

/// A renewal of the lease that fails within a batch does not stop the batch (it is tried again
/// before the next event, and the commit is fenced by the lease), but it is reported: the
/// status's `last_error` says so until the batch commits.
pub async fn a_renewal_that_fails_within_a_batch_is_reported<S: ProjectionStore>(store: S) {
    let store = Faulty::new(store);
    append_n(&store, "renewfail-1", 0, 16).await;
    // Events of 60 ms: a renewal is due before about every second one. Hangs on the last.
    let slow = Slow::new("renew-fail", Duration::from_millis(60), Some(15));
    let (applied, hanging) = (Arc::clone(&slow.applied), Arc::clone(&slow.hanging));
    let runner = ProjectionRunner::new(store.clone(), slow)
        .lease(Duration::from_millis(300))
        .batches(16, Duration::from_millis(20));
    let handle = runner.handle();
    let task = tokio::spawn(runner.run());
    // Once the batch is under way, the next renewal fails: it is one made within the batch.
    tokio::time::timeout(PATIENCE, async {
        while applied.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("no event was applied");
    store.fail_next_renewals(1);
    tokio::time::timeout(PATIENCE, hanging.notified()).await.expect("the batch did not go on");
    let status = handle.status();
    task.abort();
    let error = status.last_error.clone().unwrap_or_default();
    assert!(error.contains("renewing the lease in a batch"), "not reported: {status:?}");
    assert_eq!(applied.lock().unwrap().len(), 15, "{status:?}");
}

/// A caller reading its own writes through the handle of a runner that stands by (another
/// process's runner holds the lease, as with several replicas of one service) sees the
/// checkpoint the active runner commits: the standby's own position never moves.
pub async fn wait_for_on_a_standby_follows_the_active_runners_checkpoint<S: ProjectionStore>(
    store: S,
) {
    let first = append_n(&store, "standby-wait-1", 0, 2).await;
    let slow = |name: &str| Slow::new(name, Duration::from_millis(1), None);
    let active = ProjectionRunner::new(store.clone(), slow("standby-wait"));
    let active_handle = active.handle();
    let active = tokio::spawn(active.run());
    active_handle.wait_for(first, PATIENCE).await.unwrap();
    let standby = ProjectionRunner::new(store.clone(), slow("standby-wait"));
    let standby_handle = standby.handle();
    let standby = tokio::spawn(standby.run());
    standby_handle.wait_until(|s| s.state == RunnerState::Standby, PATIENCE).await.unwrap();

    let last = append_n(&store, "standby-wait-1", 2, 1).await;
    let waited = standby_handle.wait_for(last, Duration::from_secs(10)).await;
    let checkpoint = store.checkpoint("standby-wait").await.unwrap();
    assert!(waited.is_ok(), "{waited:?}; stored checkpoint {checkpoint:?}");
    assert!(checkpoint >= Some(last), "{checkpoint:?}");
    // Still a standby: it followed the stored checkpoint, not a lease of its own.
    assert_eq!(standby_handle.status().state, RunnerState::Standby);
    // Its lag is the active runner's: nothing behind, not the whole log.
    let lag = standby_handle.lag().await.unwrap();
    assert_eq!((lag.events, lag.more), (0, false), "{lag:?}");
    // A position nobody reaches still times out.
    let beyond = GlobalPosition::new(last.get() + 1_000_000);
    let waited = standby_handle.wait_for(beyond, Duration::from_millis(300)).await;
    assert!(matches!(waited, Err(ProjectionError::Timeout { .. })), "{waited:?}");
    active.abort();
    standby.abort();
}

/// A runner whose handler hangs makes no progress, so it does not keep its lease: a standby
/// takes over once it runs out, as from a runner that died, and applies every event.
pub async fn a_runner_whose_handler_hangs_lets_a_standby_take_over<S: ProjectionStore>(store: S) {
    let last = append_n(&store, "hung-1", 0, 6).await;
    let lease = Duration::from_millis(300);
    // Applies events 0 to 2, then hangs on event 3 for ever.
    let hung = Slow::new("hung", Duration::from_millis(1), Some(3));
    let (hung_applied, hanging) = (Arc::clone(&hung.applied), Arc::clone(&hung.hanging));
    let hung = ProjectionRunner::new(store.clone(), hung).lease(lease).batches(6, lease / 10);
    let hung_task = tokio::spawn(hung.run());
    tokio::time::timeout(PATIENCE, hanging.notified()).await.expect("the handler never hung");
    let standby = Slow::new("hung", Duration::from_millis(1), None);
    let standby_applied = Arc::clone(&standby.applied);
    let standby = ProjectionRunner::new(store.clone(), standby).lease(lease).batches(6, lease / 10);
    let standby_handle = standby.handle();
    let standby_task = tokio::spawn(standby.run());
    let reached = standby_handle.wait_for(last, Duration::from_secs(20)).await;
    hung_task.abort();
    standby_task.abort();
    assert!(reached.is_ok(), "the standby never took over from a hung runner: {reached:?}");
    let positions = store.read_all(GlobalPosition::START, 10).await.unwrap();
    let hung = hung_applied.lock().unwrap().clone();
    let positions: Vec<_> = positions.iter().map(|e| e.position).collect();
    // The hung runner applied 0 to 2 (committing them one by one where transactions do not
    // roll back: the standby then reads on after them), the standby the rest.
    assert_eq!(hung.len(), 3, "{hung:?}");
    let mut all = standby_applied.lock().unwrap().clone();
    if !S::TX_ROLLS_BACK {
        all.extend(hung.iter().copied());
    }
    all.sort_unstable();
    all.dedup();
    assert_eq!(all, positions, "hung runner applied {hung:?}");
}

/// A batch longer than the lease whose last event fails, and is parked: the events before it
/// are applied again where transactions roll back (a batch commits whole), and committed with
/// the parked event. Re-applying them takes longer than the lease too, so the lease is renewed
/// between them as well; else the commit is refused for a lease that ran out with nobody else
/// wanting it, the next term fails the same way, and the projection never moves.
pub async fn a_batch_longer_than_the_lease_parks_its_failing_event<S: ProjectionStore>(store: S) {
    let last = append_n(&store, "slowpark-1", 0, 12).await;
    let lease = Duration::from_millis(300);
    // 11 events of 50 ms, then one that always fails.
    let mut slow = Slow::new("slow-park", Duration::from_millis(50), None);
    slow.fail_on = Some(11);
    let runner = ProjectionRunner::new(store.clone(), slow)
        .lease(lease)
        .batches(12, Duration::from_millis(20))
        .retries(0, Duration::from_millis(1), Duration::from_millis(1))
        .on_failure(OnFailure::Park);
    let handle = runner.handle();
    let task = tokio::spawn(runner.run());
    let reached = handle.wait_for(last, Duration::from_secs(10)).await;
    task.abort();
    assert!(reached.is_ok(), "the batch and its parked event never committed: {reached:?}");
    assert_eq!(handle.status().parked, 1, "{:?}", handle.status());
}

/// A runner ended by `run_until`'s stop gives its lease up: a standby takes over at once, not
/// after the lease (30 s, the default) runs out, and applies what comes next. The ended runner
/// says `Finished`.
pub async fn a_runner_run_until_stopped_hands_over_at_once<S: ProjectionStore>(store: S) {
    let slow = |name: &str| Slow::new(name, Duration::from_millis(1), None);
    hands_over_when_stopped(&store, "until-1", 2, |stop| {
        let runner = ProjectionRunner::new(store.clone(), slow("until"));
        let handle = runner.handle();
        let task = match stop {
            Some(stop) => tokio::spawn(runner.run_until(async {
                let _ = stop.await;
            })),
            None => tokio::spawn(async move { runner.run().await.map(|never| match never {}) }),
        };
        (handle, task)
    })
    .await;
}

/// A runner and its standby, as `start` starts one (ended by the stop it is given, or running
/// until aborted without one), and `stream` holding `events` events of the runner's category.
/// The active runner applies them, is stopped, says `Finished`; the standby takes the lease
/// well within its 30 s (only a lease given up is taken this soon: a standby looks for it
/// every second) and applies the next event. Shared by the projection and process runners.
pub async fn hands_over_when_stopped<S: ProjectionStore>(
    store: &S,
    stream: &str,
    events: u64,
    start: impl Fn(
        Option<tokio::sync::oneshot::Receiver<()>>,
    ) -> (ProjectionHandle<S>, tokio::task::JoinHandle<Result<(), ProjectionError>>),
) {
    let first = append_n(store, stream, 0, events).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (active_handle, active) = start(Some(stopped));
    active_handle.wait_for(first, PATIENCE).await.unwrap();
    let (standby_handle, standby) = start(None);
    standby_handle.wait_until(|s| s.state == RunnerState::Standby, PATIENCE).await.unwrap();

    stop.send(()).unwrap();
    let ended = tokio::time::timeout(PATIENCE, active).await.expect("it ran on").unwrap();
    assert!(ended.is_ok(), "{ended:?}");
    assert_eq!(active_handle.status().state, RunnerState::Finished);
    let took_over = standby_handle
        .wait_until(|s| s.state != RunnerState::Standby, Duration::from_secs(10))
        .await;
    assert!(took_over.is_ok(), "the standby did not take over: {took_over:?}");
    let last = append_n(store, stream, events, 1).await;
    let reached = standby_handle.wait_for(last, PATIENCE).await;
    standby.abort();
    assert!(reached.is_ok(), "{reached:?}");
}
