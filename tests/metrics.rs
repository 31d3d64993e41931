//! What the `metrics` feature records, read back from a debugging recorder installed for the
//! whole test binary. Tests run in parallel against that one recorder, so each uses labels
//! (command or runner names) that no other test here uses.
#![cfg(feature = "metrics")]

#[path = "../examples/banking/domain.rs"]
mod banking;
#[path = "support/quiet_manager.rs"]
mod quiet_manager;

use std::sync::{OnceLock, atomic::Ordering};
use std::time::Duration;

use banking::*;
use eventcore::backend::{AppendRequest, LogFilter, MemoryTx};
use eventcore::metrics;
use eventcore::prelude::*;
use eventcore::subscription::{
    OnFailure, Projection, ProjectionRunner, ProjectionStore, RunnerState,
};
use eventcore::testing::Faulty;
use eventcore::{CorrelationId, EventMetadata, NewEvent, Payload, RecordedEvent, StreamVersion};
use metrics_util::registry::{AtomicStorage, Registry};
use quiet_manager::QuietManager;

/// Every wait here is bounded by this.
const PATIENCE: Duration = Duration::from_secs(30);

/// A recorder that keeps every value where the tests can read it without resetting it.
struct Kept(Registry<::metrics::Key, AtomicStorage>);

impl ::metrics::Recorder for Kept {
    fn describe_counter(
        &self,
        _: ::metrics::KeyName,
        _: Option<::metrics::Unit>,
        _: ::metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: ::metrics::KeyName,
        _: Option<::metrics::Unit>,
        _: ::metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: ::metrics::KeyName,
        _: Option<::metrics::Unit>,
        _: ::metrics::SharedString,
    ) {
    }

    fn register_counter(
        &self,
        key: &::metrics::Key,
        _: &::metrics::Metadata<'_>,
    ) -> ::metrics::Counter {
        self.0.get_or_create_counter(key, |c| ::metrics::Counter::from_arc(c.clone()))
    }

    fn register_gauge(
        &self,
        key: &::metrics::Key,
        _: &::metrics::Metadata<'_>,
    ) -> ::metrics::Gauge {
        self.0.get_or_create_gauge(key, |g| ::metrics::Gauge::from_arc(g.clone()))
    }

    fn register_histogram(
        &self,
        key: &::metrics::Key,
        _: &::metrics::Metadata<'_>,
    ) -> ::metrics::Histogram {
        self.0.get_or_create_histogram(key, |h| ::metrics::Histogram::from_arc(h.clone()))
    }
}

/// The recorder of this binary, installed by the first test that asks.
fn recorded() -> &'static Registry<::metrics::Key, AtomicStorage> {
    static REGISTRY: OnceLock<&'static Kept> = OnceLock::new();
    let kept = REGISTRY.get_or_init(|| {
        let kept: &'static Kept = Box::leak(Box::new(Kept(Registry::atomic())));
        ::metrics::set_global_recorder(kept).expect("no other recorder is installed here");
        metrics::describe();
        kept
    });
    &kept.0
}

/// Whether `key` is the metric `name` with exactly `labels`.
fn is(key: &::metrics::Key, name: &str, labels: &[(&str, &str)]) -> bool {
    let mut got: Vec<(&str, &str)> = key.labels().map(|l| (l.key(), l.value())).collect();
    let mut want = labels.to_vec();
    got.sort_unstable();
    want.sort_unstable();
    key.name() == name && got == want
}

fn counter(name: &str, labels: &[(&str, &str)]) -> u64 {
    let handles = recorded().get_counter_handles();
    handles.iter().find(|(k, _)| is(k, name, labels)).map_or(0, |(_, c)| c.load(Ordering::SeqCst))
}

fn gauge(name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let handles = recorded().get_gauge_handles();
    let (_, g) = handles.iter().find(|(k, _)| is(k, name, labels))?;
    Some(f64::from_bits(g.load(Ordering::SeqCst)))
}

fn samples(name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
    let handles = recorded().get_histogram_handles();
    handles.iter().find(|(k, _)| is(k, name, labels)).map_or_else(Vec::new, |(_, h)| h.data())
}

/// Every execution is counted once under its command and how it ended, timed, and every
/// attempt made again is counted with its cause. (The banking commands are used by this test
/// only, in this binary.)
#[tokio::test]
async fn executions_are_counted_by_command_and_outcome() {
    recorded();
    let store = Faulty::new(Memory::new());
    let executor = Executor::new(store.clone()).with_retry(
        RetryPolicy::builder()
            .base_delay(Duration::from_micros(10))
            .max_delay(Duration::from_micros(50))
            .build()
            .unwrap(),
    );
    let alice = AccountId::try_new("alice").unwrap();
    executor.execute(&OpenAccount { account: alice.clone(), owner: "a".into() }).await.unwrap();
    let zero = Deposit { account: alice.clone(), amount: Money::ZERO };
    assert!(matches!(executor.execute(&zero).await, Err(ExecuteError::Rejected(_))));
    // A read that fails is tried again.
    store.fail_next_reads(1);
    let five = Deposit { account: alice.clone(), amount: Money::from_cents(5) };
    assert_eq!(executor.execute(&five).await.unwrap().attempts, 2);
    // An append that never ends.
    store.gate_next_appends(2);
    let slow = executor.clone().with_timeout(Duration::from_millis(20));
    assert!(matches!(slow.execute(&five).await, Err(ExecuteError::Timeout(_))));

    // The command label is `Command::name`: the type's path.
    let (open, deposit) = (std::any::type_name::<OpenAccount>(), std::any::type_name::<Deposit>());
    let of = |command, outcome| {
        counter(metrics::COMMANDS, &[("command", command), ("outcome", outcome)])
    };
    assert_eq!(of(open, "committed"), 1);
    assert_eq!(of(deposit, "rejected"), 1);
    assert_eq!(of(deposit, "committed"), 1);
    assert_eq!(of(deposit, "timeout"), 1);
    assert_eq!(of(deposit, "conflict"), 0);
    let retries =
        |cause| counter(metrics::COMMAND_RETRIES, &[("command", deposit), ("cause", cause)]);
    assert_eq!((retries("store"), retries("conflict")), (1, 0));
    let durations = samples(metrics::COMMAND_DURATION, &[("command", deposit)]);
    assert_eq!(durations.len(), 3, "one duration per execution");
    assert!(
        durations.iter().any(|&d| d >= 0.02),
        "the timed-out one took its 20 ms: {durations:?}"
    );
}

/// Fails on the event whose payload is 2, parks it, and applies the rest.
/// Fails on event 2 until fixed.
struct ParksTwo {
    fixed: bool,
}

impl Projection<Memory> for ParksTwo {
    type Error = std::io::Error;

    fn name(&self) -> &str {
        "metrics-parks-two"
    }

    fn filter(&self) -> LogFilter {
        LogFilter::all()
    }

    async fn apply(&mut self, _: &mut MemoryTx, e: &RecordedEvent) -> Result<(), Self::Error> {
        let n: u64 = serde_json::from_str(e.payload.as_str()).map_err(std::io::Error::other)?;
        if n == 2 && !self.fixed { Err(std::io::Error::other("two")) } else { Ok(()) }
    }
}

fn event(n: u64) -> NewEvent {
    NewEvent::new("N", 1, Payload::to_json(&n).unwrap(), EventMetadata::new(CorrelationId::new()))
}

/// A runner reports its checkpoint, its state (1 for the current one, 0 for the others), the
/// events it committed, the events it parked and how far behind it is (0 once caught up).
#[tokio::test]
async fn a_runner_reports_its_position_state_events_and_parked_events() {
    recorded();
    let store = Memory::new();
    let s = StreamId::try_new("metrics-1").unwrap();
    let request = AppendRequest::new()
        .expect(s.clone(), StreamVersion::new(0))
        .write(s, vec![event(1), event(2), event(3), event(4)]);
    let last = store.append(request).await.unwrap().positions.unwrap().1;
    // A short poll interval: a read that finds nothing comes soon after the last batch.
    let runner = ProjectionRunner::new(store.clone(), ParksTwo { fixed: false })
        // Short, so that the fixed runner below takes over soon after this one is aborted.
        .lease(Duration::from_millis(300))
        .batches(100, Duration::from_millis(20))
        .retries(0, Duration::from_millis(1), Duration::from_millis(1))
        .on_failure(OnFailure::Park);
    let handle = runner.handle();
    let task = tokio::spawn(runner.run());
    handle.wait_for(last, PATIENCE).await.unwrap();
    handle.wait_until(|s| s.state == RunnerState::Live, PATIENCE).await.unwrap();

    let runner = [("runner", "metrics-parks-two")];
    #[allow(clippy::cast_precision_loss)]
    let at = last.get() as f64;
    assert_eq!(gauge(metrics::RUNNER_POSITION, &runner), Some(at));
    assert_eq!(counter(metrics::RUNNER_EVENTS, &runner), 4, "parked or applied, each counted once");
    assert_eq!(counter(metrics::RUNNER_PARKED, &runner), 1);
    // How old the last batch's newest event was at its commit, then 0 once a read finds
    // nothing new. The runner sets the gauge before it reports that read in its status, so
    // each status report is the moment to look again.
    let behind = gauge(metrics::RUNNER_BEHIND, &runner).expect("the batch set how far behind");
    assert!((0.0..PATIENCE.as_secs_f64()).contains(&behind), "{behind}");
    let caught_up = |_: &_| gauge(metrics::RUNNER_BEHIND, &runner) == Some(0.0);
    handle.wait_until(caught_up, PATIENCE).await.expect("a caught-up runner is still behind");
    for state in metrics::STATES {
        let want = if state == "live" { 1.0 } else { 0.0 };
        let labels = [runner[0], ("state", state)];
        assert_eq!(gauge(metrics::RUNNER_STATE, &labels), Some(want), "state {state}");
    }
    // Aborted, it says so: its state gauge does not stay `live`.
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    for state in metrics::STATES {
        let want = if state == "stopped" { 1.0 } else { 0.0 };
        let labels = [runner[0], ("state", state)];
        assert_eq!(gauge(metrics::RUNNER_STATE, &labels), Some(want), "aborted: state {state}");
    }

    // The handler is fixed: a runner that applies parked events again counts the one it took
    // off the list.
    assert_eq!(counter(metrics::RUNNER_UNPARKED, &runner), 0);
    let fixed = ProjectionRunner::new(store.clone(), ParksTwo { fixed: true })
        .lease(Duration::from_millis(300))
        .retry_parked();
    tokio::time::timeout(PATIENCE, fixed.catch_up()).await.unwrap().unwrap();
    assert_eq!(counter(metrics::RUNNER_UNPARKED, &runner), 1);
    // A catch-up that returned is `finished`, not `live` with nothing running.
    for state in metrics::STATES {
        let want = if state == "finished" { 1.0 } else { 0.0 };
        let labels = [runner[0], ("state", state)];
        assert_eq!(gauge(metrics::RUNNER_STATE, &labels), Some(want), "caught up: state {state}");
    }
    assert!(store.parked("metrics-parks-two").await.unwrap().is_empty());
}

mod first {
    use eventcore::prelude::*;
    #[derive(Debug, serde::Serialize, serde::Deserialize, Event)]
    #[event(name = "MetricsClashing")]
    pub enum Clashing {
        Happened,
    }
    slot!(pub Firsts: Clashing);
}

mod second {
    use eventcore::prelude::*;
    #[derive(Debug, serde::Serialize, serde::Deserialize, Event)]
    #[event(name = "MetricsClashing")]
    pub enum Clashing {
        Happened,
    }
    slot!(pub Seconds: Clashing);
}

#[derive(Default)]
struct Ignored;

impl Fold<first::Firsts> for Ignored {
    fn fold(&mut self, _: &StreamId, _: &first::Clashing) {}
}

impl Fold<second::Seconds> for Ignored {
    fn fold(&mut self, _: &StreamId, _: &second::Clashing) {}
}

#[derive(Command)]
#[command(state = Ignored, error = BankError)]
struct WriteFirst {
    #[slot(first::Firsts)]
    stream: StreamId,
}

impl Handle for WriteFirst {
    fn handle(&self, _: &Ignored, mut decision: Decision<Self::Streams>) -> Handled<Self> {
        decision.emit(first::Firsts, first::Clashing::Happened);
        Ok(decision)
    }
}

#[derive(Command)]
#[command(state = Ignored, error = BankError)]
struct WriteSecond {
    #[slot(second::Seconds)]
    stream: StreamId,
}

impl Handle for WriteSecond {
    fn handle(&self, _: &Ignored, mut decision: Decision<Self::Streams>) -> Handled<Self> {
        decision.emit(second::Seconds, second::Clashing::Happened);
        Ok(decision)
    }
}

/// A command refused because two event types share a stored name is counted under
/// `event_type_clash` (one of the documented outcomes) and timed, like every other execution.
#[tokio::test]
async fn a_command_refused_for_an_event_type_clash_is_counted() {
    recorded();
    let executor = Executor::new(Memory::new());
    let stream = || StreamId::try_new("metrics-clash-1").unwrap();
    executor.execute(&WriteFirst { stream: stream() }).await.unwrap();
    for _ in 0..2 {
        let refused = executor.execute(&WriteSecond { stream: stream() }).await;
        assert!(matches!(refused, Err(ExecuteError::EventTypeClash(_))), "{refused:?}");
    }
    let second = std::any::type_name::<WriteSecond>();
    let clashes =
        counter(metrics::COMMANDS, &[("command", second), ("outcome", "event_type_clash")]);
    assert_eq!(clashes, 2, "each refused execution is counted");
    assert_eq!(samples(metrics::COMMAND_DURATION, &[("command", second)]).len(), 2);
}

#[derive(Command)]
#[command(state = Ignored, error = BankError)]
struct WriteDropped {
    #[slot(first::Firsts)]
    stream: StreamId,
}

impl Handle for WriteDropped {
    fn handle(&self, _: &Ignored, mut decision: Decision<Self::Streams>) -> Handled<Self> {
        decision.emit(first::Firsts, first::Clashing::Happened);
        Ok(decision)
    }
}

/// An execution whose future the caller drops before it ends (a request timeout above the
/// executor, a client gone) is counted under `cancelled` and timed: it is not missing from the
/// counter and the duration histogram.
#[tokio::test]
async fn an_execution_dropped_by_its_caller_is_counted_as_cancelled() {
    recorded();
    let store = Faulty::new(Memory::new());
    let executor = Executor::new(store.clone());
    // The append waits for a second party that never comes.
    store.gate_next_appends(2);
    let stream = StreamId::try_new("metrics-cancelled-1").unwrap();
    let dropped = tokio::time::timeout(
        Duration::from_millis(20),
        executor.execute(&WriteDropped { stream: stream.clone() }),
    )
    .await;
    assert!(dropped.is_err(), "the append never ends: {dropped:?}");
    let name = std::any::type_name::<WriteDropped>();
    let of = |outcome| counter(metrics::COMMANDS, &[("command", name), ("outcome", outcome)]);
    assert_eq!(of("cancelled"), 1);
    assert!(metrics::OUTCOMES.contains(&"cancelled"));
    let durations = samples(metrics::COMMAND_DURATION, &[("command", name)]);
    assert!(durations.iter().any(|&d| d >= 0.02), "timed until dropped: {durations:?}");
}

/// A process runner whose checkpoint commit fails reads on, and its next commit covers the
/// events of the batch that failed: they are counted then, each once.
#[tokio::test]
async fn a_process_runner_counts_the_events_of_a_batch_whose_commit_failed() {
    recorded();
    let store = Faulty::new(Memory::new());
    let s = StreamId::try_new("metrics-manager-1").unwrap();
    let append = |from: u64, events: Vec<NewEvent>| {
        let request = AppendRequest::new()
            .expect(s.clone(), StreamVersion::new(from))
            .write(s.clone(), events);
        store.append(request)
    };
    append(0, vec![event(1), event(2)]).await.unwrap();
    store.lose_next_commit_replies(1);
    let runner = eventcore::subscription::ProcessRunner::new(
        Executor::new(store.clone()),
        QuietManager("metrics_quiet_manager", LogFilter::all),
    )
    .batches(100, Duration::from_millis(20));
    let handle = runner.handle();
    let task = tokio::spawn(runner.run());
    handle.wait_until(|s| s.last_error.is_some(), PATIENCE).await.expect("the commit failed");
    let last = append(2, vec![event(3), event(4)]).await.unwrap().positions.unwrap().1;
    handle.wait_for(last, PATIENCE).await.unwrap();

    let runner = [("runner", "metrics_quiet_manager")];
    assert_eq!(counter(metrics::RUNNER_EVENTS, &runner), 4, "every event committed, once");
    task.abort();
}

/// Counts every event it is given.
struct Quiet(&'static str);

impl Projection<Faulty<Memory>> for Quiet {
    type Error = std::io::Error;

    fn name(&self) -> &str {
        self.0
    }

    async fn apply(&mut self, _: &mut MemoryTx, _: &RecordedEvent) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// A projection commit that committed but whose reply was lost ends the runner's term; the
/// next term finds the checkpoint past those events and reads on after them: they are
/// counted then, each once.
#[tokio::test]
async fn a_projection_counts_the_events_of_a_commit_whose_reply_was_lost() {
    recorded();
    let store = Faulty::new(Memory::new());
    let s = StreamId::try_new("metrics-lost-reply-1").unwrap();
    let request = AppendRequest::new()
        .expect(s.clone(), StreamVersion::new(0))
        .write(s, vec![event(1), event(2), event(3), event(4)]);
    let last = store.append(request).await.unwrap().positions.unwrap().1;
    store.lose_next_commit_replies(1);
    let runner = ProjectionRunner::new(store.clone(), Quiet("metrics-lost-reply"))
        .batches(100, Duration::from_millis(20))
        .retries(0, Duration::from_millis(1), Duration::from_millis(1));
    let handle = runner.handle();
    let task = tokio::spawn(runner.run());
    handle.wait_for(last, PATIENCE).await.unwrap();

    let runner = [("runner", "metrics-lost-reply")];
    assert_eq!(counter(metrics::RUNNER_EVENTS, &runner), 4, "every event committed, once");
    task.abort();
}

/// Parks the event whose payload is 2 (after no retries), applies the rest.
struct ParksTwoOnFaulty;

impl Projection<Faulty<Memory>> for ParksTwoOnFaulty {
    type Error = std::io::Error;

    fn name(&self) -> &str {
        "metrics-parked-lost-reply"
    }

    async fn apply(&mut self, _: &mut MemoryTx, e: &RecordedEvent) -> Result<(), Self::Error> {
        let n: u64 = serde_json::from_str(e.payload.as_str()).map_err(std::io::Error::other)?;
        if n == 2 { Err(std::io::Error::other("two")) } else { Ok(()) }
    }
}

/// The commit that parks an event committed, but its reply was lost: the next term finds the
/// checkpoint past the event, which is parked; it is counted as parked (in the metric and in
/// the status), not only as committed.
#[tokio::test]
async fn an_event_parked_by_a_commit_whose_reply_was_lost_is_counted_as_parked() {
    recorded();
    let store = Faulty::new(Memory::new());
    let s = StreamId::try_new("metrics-parked-lost-reply-1").unwrap();
    let request = AppendRequest::new()
        .expect(s.clone(), StreamVersion::new(0))
        .write(s, vec![event(2), event(3)]);
    let last = store.append(request).await.unwrap().positions.unwrap().1;
    // The first commit is the one that parks the first event.
    store.lose_next_commit_replies(1);
    let runner = ProjectionRunner::new(store.clone(), ParksTwoOnFaulty)
        .batches(100, Duration::from_millis(20))
        .retries(0, Duration::from_millis(1), Duration::from_millis(1))
        .on_failure(OnFailure::Park);
    let handle = runner.handle();
    let task = tokio::spawn(runner.run());
    handle.wait_for(last, PATIENCE).await.unwrap();

    assert_eq!(store.parked("metrics-parked-lost-reply").await.unwrap().len(), 1);
    let runner = [("runner", "metrics-parked-lost-reply")];
    assert_eq!(counter(metrics::RUNNER_PARKED, &runner), 1, "the parked event is counted");
    assert_eq!(handle.status().parked, 1, "and in the status");
    assert_eq!(counter(metrics::RUNNER_EVENTS, &runner), 2, "parked or applied, each once");
    task.abort();
}

/// A live runner whose reads of the log fail (the store is away) reports `retrying`, as the
/// book's alert on lasting `retrying` expects, and `live` again once a read finds nothing new.
#[tokio::test]
async fn a_runner_whose_reads_fail_reports_retrying_then_live_again() {
    recorded();
    let store = Faulty::new(Memory::new());
    for process in [false, true] {
        let name = if process { "metrics_reads_fail_manager" } else { "metrics-reads-fail" };
        let (handle, task) = if process {
            let runner = eventcore::subscription::ProcessRunner::new(
                Executor::new(store.clone()),
                QuietManager(name, LogFilter::all),
            )
            .batches(100, Duration::from_millis(20))
            .retries(0, Duration::from_millis(1), Duration::from_millis(1));
            let handle = runner.handle();
            (handle, tokio::spawn(runner.run()).abort_handle())
        } else {
            let runner = ProjectionRunner::new(store.clone(), Quiet(name))
                .batches(100, Duration::from_millis(20))
                .retries(0, Duration::from_millis(1), Duration::from_millis(1));
            let handle = runner.handle();
            (handle, tokio::spawn(runner.run()).abort_handle())
        };
        handle.wait_until(|s| s.state == RunnerState::Live, PATIENCE).await.unwrap();
        store.fail_next_log_reads(3);
        let failed = handle.wait_until(|s| s.last_error.is_some(), PATIENCE).await.unwrap();
        assert_eq!(failed.state, RunnerState::Retrying, "process: {process}: {failed:?}");
        let retrying = [("runner", name), ("state", "retrying")];
        assert_eq!(gauge(metrics::RUNNER_STATE, &retrying), Some(1.0), "process: {process}");
        handle.wait_until(|s| s.state == RunnerState::Live, PATIENCE).await.unwrap();
        task.abort();
    }
}

/// Waits on `gate` before applying the event whose payload is 2, when it has one.
struct Gated(Option<std::sync::Arc<tokio::sync::Notify>>);

impl Projection<Memory> for Gated {
    type Error = std::io::Error;

    fn name(&self) -> &str {
        "metrics-lease-lost"
    }

    async fn apply(&mut self, _: &mut MemoryTx, e: &RecordedEvent) -> Result<(), Self::Error> {
        let n: u64 = serde_json::from_str(e.payload.as_str()).map_err(std::io::Error::other)?;
        if let (2, Some(gate)) = (n, &self.0) {
            gate.notified().await;
        }
        Ok(())
    }
}

/// On memory a runner commits a batch event by event; when it loses its lease in the middle of
/// one, the events it committed before are counted: another runner reads on after them.
#[tokio::test]
async fn a_runner_that_loses_its_lease_mid_batch_counts_what_it_committed() {
    recorded();
    let store = Memory::new();
    let s = StreamId::try_new("metrics-lease-lost-1").unwrap();
    let request = AppendRequest::new()
        .expect(s.clone(), StreamVersion::new(0))
        .write(s, vec![event(1), event(2), event(3), event(4)]);
    let (first, last) = store.append(request).await.unwrap().positions.unwrap();
    let gate = std::sync::Arc::new(tokio::sync::Notify::new());
    let lease = Duration::from_millis(10);
    let a = ProjectionRunner::new(store.clone(), Gated(Some(gate.clone()))).lease(lease);
    let a_handle = a.handle();
    let a_task = tokio::spawn(a.run());
    // A committed the first event, and waits in the second.
    a_handle.wait_for(first, PATIENCE).await.unwrap();
    // B takes the lease once A's ran out, and applies the rest.
    let b = ProjectionRunner::new(store.clone(), Gated(None)).lease(lease);
    let b_handle = b.handle();
    let b_task = tokio::spawn(b.run());
    b_handle.wait_for(last, PATIENCE).await.unwrap();
    gate.notify_one();
    a_handle.wait_until(|s| s.state == RunnerState::Standby, PATIENCE).await.unwrap();

    let runner = [("runner", "metrics-lease-lost")];
    assert_eq!(counter(metrics::RUNNER_EVENTS, &runner), 4, "A's first event, B's three");
    a_task.abort();
    b_task.abort();
}

#[derive(Command)]
#[command(state = Ignored, error = BankError)]
struct WriteSlowly {
    #[slot(first::Firsts)]
    stream: StreamId,
}

impl Handle for WriteSlowly {
    fn handle(&self, _: &Ignored, mut decision: Decision<Self::Streams>) -> Handled<Self> {
        decision.emit(first::Firsts, first::Clashing::Happened);
        Ok(decision)
    }
}

/// A retry counts an attempt made again: one the timeout cuts off during the backoff before it
/// is not made, and not counted.
#[tokio::test]
async fn a_retry_cut_off_by_the_timeout_during_its_backoff_is_not_counted() {
    recorded();
    let store = Faulty::new(Memory::new());
    let executor = Executor::new(store.clone())
        .with_retry(
            RetryPolicy::builder()
                .base_delay(Duration::from_secs(3600))
                .max_delay(Duration::from_secs(3600))
                .build()
                .unwrap(),
        )
        .with_timeout(Duration::from_millis(20));
    store.fail_next_reads(1);
    let command = WriteSlowly { stream: StreamId::try_new("metrics-slowly-1").unwrap() };
    let timed_out = executor.execute(&command).await;
    assert!(matches!(timed_out, Err(ExecuteError::Timeout(_))), "{timed_out:?}");
    let name = std::any::type_name::<WriteSlowly>();
    assert_eq!(counter(metrics::COMMAND_RETRIES, &[("command", name), ("cause", "store")]), 0);
}

/// A standby does not hold the lease and has not read the checkpoint: it leaves the position
/// gauge to the active runner rather than report 0 (the position of a runner that never held
/// the lease), also when it is aborted.
#[tokio::test]
async fn a_standby_does_not_report_a_position() {
    recorded();
    let store = Faulty::new(Memory::new());
    let s = StreamId::try_new("metrics-standby-1").unwrap();
    let request = AppendRequest::new()
        .expect(s.clone(), StreamVersion::new(0))
        .write(s, vec![event(1), event(2)]);
    let last = store.append(request).await.unwrap().positions.unwrap().1;
    let active = ProjectionRunner::new(store.clone(), Quiet("metrics-standby"))
        .lease(Duration::from_secs(60));
    let active_handle = active.handle();
    let active = tokio::spawn(active.run());
    active_handle.wait_for(last, PATIENCE).await.unwrap();
    let runner = [("runner", "metrics-standby")];
    #[allow(clippy::cast_precision_loss)]
    let at = last.get() as f64;
    assert_eq!(gauge(metrics::RUNNER_POSITION, &runner), Some(at));

    let standby = ProjectionRunner::new(store.clone(), Quiet("metrics-standby"))
        .lease(Duration::from_secs(60));
    let standby_handle = standby.handle();
    let standby = tokio::spawn(standby.run());
    standby_handle.wait_until(|s| s.state == RunnerState::Standby, PATIENCE).await.unwrap();
    assert_eq!(gauge(metrics::RUNNER_POSITION, &runner), Some(at), "a standby reported");
    standby.abort();
    assert!(standby.await.unwrap_err().is_cancelled());
    assert_eq!(gauge(metrics::RUNNER_POSITION, &runner), Some(at), "an aborted standby reported");
    active.abort();
}
