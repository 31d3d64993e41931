//! Process managers on every backend: the fulfilment saga of `examples/saga` runs each order to
//! exactly one final state, with its causation chain, its timeouts on a clock the test moves,
//! and no command run twice, also while its runner is aborted and restarted.

use std::collections::{BTreeMap, HashMap};
use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};
use std::time::Duration;

use eventcore::backend::LogFilter;
use eventcore::subscription::{
    ManualClock, ProcessRunner, ProjectionError, ProjectionStatus, ProjectionStore, RunnerState,
    Subscription,
};
use eventcore::{Executor, GlobalPosition, RecordedEvent};

use super::saga::*;

const PATIENCE: Duration = Duration::from_secs(60);

/// The orders of a scenario: (order, quantity, card).
type Orders = Vec<(String, u32, String)>;

fn lamp() -> ProductId {
    ProductId::try_new("lamp").unwrap()
}

/// Stocks a thousand lamps, then places `count` orders of one lamp each, named
/// `<prefix>-<n>`, their cards cycling through `visa`, `declined`, `slow` and `visa`: `chunk`
/// at a time, on a task of their own that yields between chunks, so that runners started
/// beside it meet the orders while they arrive. Returns the orders and that task.
async fn orders_flowing<S: ProjectionStore>(
    store: &S,
    prefix: &str,
    count: usize,
    chunk: usize,
) -> (Orders, tokio::task::JoinHandle<()>) {
    let shop = Executor::new(store.clone());
    shop.execute(&AddStock { product: lamp(), quantity: 1_000 }).await.unwrap();
    let cards = ["visa", "declined", "slow", "visa"];
    let orders: Orders =
        (0..count).map(|n| (format!("{prefix}-{n}"), 1, cards[n % 4].to_owned())).collect();
    let placing = {
        let orders = orders.clone();
        tokio::spawn(async move {
            for chunk in orders.chunks(chunk) {
                place(&shop, &chunk.to_vec()).await;
                tokio::task::yield_now().await;
            }
        })
    };
    (orders, placing)
}

async fn place<S: ProjectionStore>(shop: &Executor<S>, orders: &Orders) {
    for (order, quantity, card) in orders {
        shop.execute(&PlaceOrder {
            order: OrderId::try_new(order).unwrap(),
            product: lamp(),
            quantity: *quantity,
            amount: 1_000,
            card: card.clone(),
        })
        .await
        .unwrap();
    }
}

/// Follows the orders until each is shipped or cancelled, and each cancelled order that had
/// stock reserved has it released; moves the clock past the payment window whenever only
/// orders paid with a slow card are open. Bounded by [`PATIENCE`].
async fn settle<S: ProjectionStore>(store: &S, clock: &ManualClock, orders: &Orders) {
    let slow: Vec<&str> =
        orders.iter().filter(|(.., card)| card == "slow").map(|(o, ..)| o.as_str()).collect();
    let mut progress = Settling::new(orders.iter().map(|(o, ..)| o.as_str()));
    let mut follow = Subscription::new(store.clone())
        .filter(LogFilter::all().category("order").category("stock"))
        .poll_interval(Duration::from_millis(20))
        .unwrap();
    tokio::time::timeout(PATIENCE, async {
        while !progress.settled() {
            let open = progress.open();
            if !open.is_empty() && open.iter().all(|o| slow.contains(&o.as_str())) {
                clock.advance(PAYMENT_WINDOW + Duration::from_secs(1));
            }
            let batch =
                match tokio::time::timeout(Duration::from_millis(200), follow.next_batch()).await {
                    Ok(batch) => batch.unwrap(),
                    Err(_) => continue,
                };
            for event in batch.events {
                progress.observe(&event.unwrap());
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("orders never settled: {progress:?}"));
}

/// Every event of the log.
async fn log<S: ProjectionStore>(store: &S) -> Vec<RecordedEvent> {
    store.read_all(GlobalPosition::START, 100_000).await.unwrap()
}

/// Per order, how often each kind of order event happened; and the lamps left.
fn outcome(log: &[RecordedEvent]) -> (BTreeMap<String, Vec<String>>, u32) {
    let mut orders: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut available = 0u32;
    for event in log {
        if let Ok(e) = event.decode::<OrderEvent>() {
            let id = event.stream_id.as_str();
            let order = id.strip_prefix("order-").unwrap_or(id).to_owned();
            let kind = match e {
                OrderEvent::Placed { .. } => "placed".to_owned(),
                OrderEvent::StockReserved => "reserved".to_owned(),
                OrderEvent::PaymentTaken { .. } => "paid".to_owned(),
                OrderEvent::PaymentPending => "pending".to_owned(),
                OrderEvent::Shipped => "shipped".to_owned(),
                OrderEvent::Cancelled { reason } => format!("cancelled: {reason}"),
            };
            orders.entry(order).or_default().push(kind);
        }
        if let Ok(e) = event.decode::<StockEvent>() {
            match e {
                StockEvent::Added { quantity } | StockEvent::Released { quantity, .. } => {
                    available += quantity;
                }
                StockEvent::Reserved { quantity, .. } => available -= quantity,
            }
        }
    }
    (orders, available)
}

/// No command ran twice: within each order, each kind of event at most once, stock reserved
/// and released at most once per order, and exactly one final state.
fn assert_exactly_once(log: &[RecordedEvent]) {
    let (orders, _) = outcome(log);
    for (order, kinds) in &orders {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for k in kinds {
            *counts.entry(k.split(':').next().unwrap()).or_default() += 1;
        }
        assert!(counts.values().all(|n| *n == 1), "order {order} has events twice: {kinds:?}");
        let finals = counts.get("shipped").copied().unwrap_or(0)
            + counts.get("cancelled").copied().unwrap_or(0);
        assert_eq!(finals, 1, "order {order} does not end in exactly one final state: {kinds:?}");
    }
    let mut stock: HashMap<(OrderId, &str), usize> = HashMap::new();
    for event in log {
        match event.decode::<StockEvent>() {
            Ok(StockEvent::Reserved { order, .. }) => *stock.entry((order, "r")).or_default() += 1,
            Ok(StockEvent::Released { order, .. }) => *stock.entry((order, "x")).or_default() += 1,
            _ => {}
        }
    }
    assert!(stock.values().all(|n| *n == 1), "stock moved twice for an order: {stock:?}");
}

/// Every command ran once, and every order ended in the final state its card leads to: shipped
/// (`visa`), cancelled as declined (`declined`), or cancelled as unpaid (any other card).
async fn assert_every_order_ended<S: ProjectionStore>(store: &S, orders: &Orders) {
    let log = log(store).await;
    assert_exactly_once(&log);
    let (outcome, _) = outcome(&log);
    assert_eq!(outcome.len(), orders.len());
    for (order, _, card) in orders {
        let last = outcome[order].last().unwrap();
        let expected = match card.as_str() {
            "visa" => "shipped",
            "declined" => "cancelled: the card was declined",
            _ => "cancelled: not paid in time",
        };
        assert_eq!(last, expected, "order {order}: {:?}", outcome[order]);
    }
}

fn scenario() -> Orders {
    [("o-1", 1, "visa"), ("o-2", 1, "declined"), ("o-3", 1, "slow"), ("o-4", 5, "visa")]
        .into_iter()
        .map(|(o, q, c)| (o.to_owned(), q, c.to_owned()))
        .collect()
}

pub async fn a_saga_runs_each_order_to_exactly_one_final_state<S: ProjectionStore>(store: S) {
    let shop = Executor::new(store.clone());
    shop.execute(&AddStock { product: lamp(), quantity: 3 }).await.unwrap();
    let clock = ManualClock::new();
    let runner = ProcessRunner::new(Executor::new(store.clone()), FulfilmentSaga)
        .clock(clock.clone())
        .batches(50, Duration::from_millis(20));
    let task = tokio::spawn(runner.run());
    let orders = scenario();
    place(&shop, &orders).await;
    settle(&store, &clock, &orders).await;
    task.abort();

    let log = log(&store).await;
    assert_exactly_once(&log);
    let (outcome, available) = outcome(&log);
    let last = |o: &str| outcome[o].last().unwrap().clone();
    assert_eq!(outcome["o-1"], ["placed", "reserved", "paid", "shipped"]);
    assert_eq!(last("o-2"), "cancelled: the card was declined");
    assert_eq!(last("o-3"), "cancelled: not paid in time");
    // Out of stock: how many were left depends on when the other orders released theirs.
    assert!(
        last("o-4").starts_with("cancelled: only ") && last("o-4").ends_with("5 requested"),
        "{outcome:?}"
    );
    assert_eq!(outcome["o-4"].len(), 2, "placed, then cancelled: {outcome:?}");
    assert_eq!(available, 2, "the declined and the unpaid order's lamps were released");

    // The paid order's timer was cancelled when the payment came, and never fired, although
    // the clock passed it; the unpaid order's fired.
    let records = |order: &str| -> Vec<String> {
        log.iter()
            .filter(|e| e.stream_id.as_str() == format!("pm_fulfilment-{order}"))
            .filter_map(|e| {
                let value: serde_json::Value = serde_json::from_str(e.payload.as_str()).ok()?;
                value.as_object()?.keys().next().cloned()
            })
            .collect()
    };
    let paid = records("o-1");
    assert!(
        paid.contains(&"Cancelled".to_owned()) && !paid.contains(&"Fired".to_owned()),
        "{paid:?}"
    );
    assert!(records("o-3").contains(&"Fired".to_owned()));
}

pub async fn the_causation_chain_of_a_saga_is_recorded<S: ProjectionStore>(store: S) {
    let shop = Executor::new(store.clone());
    shop.execute(&AddStock { product: lamp(), quantity: 1 }).await.unwrap();
    let clock = ManualClock::new();
    let runner = ProcessRunner::new(Executor::new(store.clone()), FulfilmentSaga)
        .clock(clock.clone())
        .batches(50, Duration::from_millis(20));
    let task = tokio::spawn(runner.run());
    let orders: Orders = vec![("o-1".into(), 1, "visa".into())];
    place(&shop, &orders).await;
    settle(&store, &clock, &orders).await;
    task.abort();

    let log = log(&store).await;
    let order: Vec<&RecordedEvent> =
        log.iter().filter(|e| e.stream_id.as_str() == "order-o-1").collect();
    assert_eq!(order.len(), 4, "placed, reserved, paid, shipped");
    let placed = order[0];
    assert!(placed.metadata.causation_id.is_none(), "the user placed it");
    for pair in order.windows(2) {
        let (cause, effect) = (pair[0], pair[1]);
        assert_eq!(
            effect.metadata.causation_id.map(|c| c.as_uuid()),
            Some(cause.event_id().as_uuid()),
            "{} was not caused by {}",
            effect.payload.as_str(),
            cause.payload.as_str()
        );
        assert_eq!(effect.metadata.correlation_id, placed.metadata.correlation_id);
    }
    // The stock reservation went with the order's `StockReserved`, in the same append.
    let reserved = log
        .iter()
        .find(|e| matches!(e.decode::<StockEvent>(), Ok(StockEvent::Reserved { .. })))
        .unwrap();
    assert_eq!(
        reserved.metadata.causation_id.map(|c| c.as_uuid()),
        Some(placed.event_id().as_uuid())
    );
}

pub async fn a_saga_aborted_and_restarted_runs_every_command_once<S: ProjectionStore>(store: S) {
    let (orders, placing) = orders_flowing(&store, "r", 24, 3).await;
    let clock = ManualClock::new();
    // Twenty runners, each aborted after it made some progress (or at once).
    for round in 0..20u64 {
        let runner = ProcessRunner::new(Executor::new(store.clone()), FulfilmentSaga)
            .clock(clock.clone())
            .lease(Duration::from_millis(150))
            .batches(3, Duration::from_millis(10));
        let handle = runner.handle();
        let task = tokio::spawn(runner.run());
        if round % 3 != 0 {
            let before = handle.status().position;
            let _ = handle.wait_until(|s| s.position > before, Duration::from_millis(500)).await;
        }
        task.abort();
        let _ = task.await;
    }
    placing.await.unwrap();
    // A last runner finishes the work, with the unpaid orders timing out.
    let runner = ProcessRunner::new(Executor::new(store.clone()), FulfilmentSaga)
        .clock(clock.clone())
        .lease(Duration::from_millis(150))
        .batches(50, Duration::from_millis(10));
    let task = tokio::spawn(runner.run());
    settle(&store, &clock, &orders).await;
    task.abort();

    assert_every_order_ended(&store, &orders).await;
}

/// An event that cannot be written: its serialisation always fails.
#[derive(Debug, serde::Deserialize)]
pub struct Unwritable;

impl serde::Serialize for Unwritable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("this event cannot be written"))
    }
}

impl eventcore::Event for Unwritable {
    const EVENT_TYPE: &'static str = "Unwritable";
}

eventcore::slot!(pub Sink: Unwritable);

/// The one stream of the sink slot.
fn the_sink() -> eventcore::Bindings<eventcore::Streams![Sink]> {
    eventcore::hlist![<Sink as eventcore::Slot>::bind(
        eventcore::StreamId::try_new("sink").unwrap()
    )]
}

/// Fails technically every time (its event does not encode): not a rejection.
#[derive(Debug)]
struct WriteUnwritable;

impl eventcore::Command for WriteUnwritable {
    type Streams = eventcore::Streams![Sink];
    type State = Sunk;
    type Error = std::convert::Infallible;
    type Continuation = eventcore::NoDiscovery;

    fn streams(&self) -> eventcore::Bindings<Self::Streams> {
        the_sink()
    }
}

impl eventcore::Handle for WriteUnwritable {
    fn handle(
        &self,
        _: &Sunk,
        mut decision: eventcore::Decision<Self::Streams>,
    ) -> eventcore::Handled<Self> {
        decision.emit(Sink, Unwritable);
        Ok(decision)
    }
}

#[derive(Default)]
pub struct Sunk;

impl eventcore::Fold<Sink> for Sunk {
    fn fold(&mut self, _: &eventcore::StreamId, _: &Unwritable) {}
}

/// Answers every order event with the command that cannot succeed.
struct Doomed;

impl<B: eventcore::Backend> eventcore::subscription::ProcessManager<B> for Doomed {
    type State = ();
    fn name(&self) -> &str {
        "doomed"
    }
    fn filter(&self) -> LogFilter {
        LogFilter::all().category("order")
    }
    fn instance(&self, event: &RecordedEvent) -> Option<String> {
        Some(event.stream_id.as_str().to_owned())
    }
    fn apply(&self, _: &mut (), _: &eventcore::subscription::Happened) {}
    fn react(
        &self,
        _: &(),
        _: &eventcore::subscription::Happened,
    ) -> Vec<eventcore::subscription::Reaction<B>> {
        vec![eventcore::subscription::Reaction::command(WriteUnwritable)]
    }
}

/// A technical failure (a command whose event cannot be encoded) is retried with backoff,
/// then stops the runner with the error in its status; nothing of the step is recorded.
pub async fn a_technical_failure_is_retried_then_stops_the_saga<S: ProjectionStore>(store: S) {
    let shop = Executor::new(store.clone());
    place(&shop, &vec![("t-1".to_owned(), 1, "visa".to_owned())]).await;
    let runner = ProcessRunner::new(Executor::new(store.clone()), Doomed)
        .retries(2, Duration::from_millis(1), Duration::from_millis(2))
        .batches(50, Duration::from_millis(20));
    let handle = runner.handle();
    let err = tokio::time::timeout(PATIENCE, runner.run()).await.unwrap().unwrap_err();
    let reason = err.to_string();
    assert!(reason.contains("WriteUnwritable") && reason.contains("cannot be written"), "{reason}");
    let status = handle.status();
    assert_eq!(status.state, eventcore::subscription::RunnerState::Stopped);
    assert!(status.last_error.unwrap_or_default().contains("cannot be written"));
    // It gave its lease up: a fixed runner need not wait for it to run out.
    let leases = store.projections().await.unwrap();
    let doomed = leases.iter().find(|r| r.name == "process:doomed").expect("it ran");
    assert_eq!(doomed.holder, None, "{doomed:?}");
    let log = log(&store).await;
    assert!(
        log.iter().all(|e| !e.stream_id.as_str().starts_with("pm_doomed")),
        "a step was recorded"
    );
}

pub use super::quiet_manager::QuietManager;

/// Routes every event of the category `gain` to one instance, `one`, and reacts to none: each
/// input only adds its `Observed` record to the instance's stream. Counts the inputs it folds
/// into a state.
struct Gatherer(Arc<std::sync::atomic::AtomicU64>);

impl<B: eventcore::Backend> eventcore::subscription::ProcessManager<B> for Gatherer {
    type State = ();
    fn name(&self) -> &str {
        "gatherer"
    }
    fn filter(&self) -> LogFilter {
        LogFilter::all().category("gain")
    }
    fn instance(&self, _: &RecordedEvent) -> Option<String> {
        Some("one".to_owned())
    }
    fn apply(&self, _: &mut (), _: &eventcore::subscription::Happened) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    fn react(
        &self,
        _: &(),
        _: &eventcore::subscription::Happened,
    ) -> Vec<eventcore::subscription::Reaction<B>> {
        vec![]
    }
}

/// An input reads only what its instance's stream gained since the instance's last input,
/// not the whole stream again: 60 inputs of one instance read about two records each (the
/// last one kept, to check it is still there, and the new one), where reading the stream
/// whole each time reads 0 + 1 + .. + 59 = 1,770. And it folds only the inputs recorded
/// since: 60 inputs fold 60, where folding the state from the first input each time folds
/// 1 + 2 + .. + 60 = 1,830. A runner started again reads the stream whole once, and folds it
/// once, then goes on the same way.
pub async fn an_input_reads_and_folds_only_what_its_instance_gained<S: ProjectionStore>(store: S) {
    use super::projection::append_n;
    let counted = eventcore::testing::Faulty::new(store.clone());
    let last = append_n(&store, "gain-1", 0, 60).await;
    let folded = Arc::new(std::sync::atomic::AtomicU64::new(0));
    // A short lease: the second runner takes over from the first, whose task is aborted.
    let runner = ProcessRunner::new(Executor::new(counted.clone()), Gatherer(folded.clone()))
        .lease(Duration::from_millis(300))
        .batches(7, Duration::from_millis(20));
    let handle = runner.handle();
    let task = tokio::spawn(runner.run());
    handle.wait_for(last, PATIENCE).await.unwrap();
    task.abort();
    let _ = task.await;
    let read = counted.events_read();
    assert!((59..=2 * 60).contains(&read), "60 inputs read {read} records");
    assert_eq!(folded.swap(0, Ordering::SeqCst), 60, "60 inputs folded again and again");
    let stream = eventcore::StreamId::try_new("pm_gatherer-one").unwrap();
    let records = store.read(std::slice::from_ref(&stream)).await.unwrap().remove(0).events;
    assert_eq!(records.len(), 60, "one record per input");

    let more = append_n(&store, "gain-1", 60, 10).await;
    let again = eventcore::testing::Faulty::new(store.clone());
    let runner = ProcessRunner::new(Executor::new(again.clone()), Gatherer(folded.clone()))
        .lease(Duration::from_millis(300))
        .batches(7, Duration::from_millis(20));
    let handle = runner.handle();
    let task = tokio::spawn(runner.run());
    handle.wait_for(more, PATIENCE).await.unwrap();
    task.abort();
    let _ = task.await;
    let read = again.events_read();
    assert!((60..=60 + 2 * 10).contains(&read), "10 inputs after a restart read {read} records");
    // The first folds the 60 recorded before it, then itself; each of the 9 others, itself.
    assert_eq!(folded.load(Ordering::SeqCst), 70, "10 inputs after a restart");
    let records = store.read(std::slice::from_ref(&stream)).await.unwrap().remove(0).events;
    assert_eq!(records.len(), 70);
}

/// A batch of inputs that takes longer than the lease, input after input (here a store whose
/// reads take 50 ms: 12 inputs of the batch take twice the 300 ms lease), keeps the lease and
/// commits its checkpoint. (Its commit used to be refused for a lease that ran out with
/// nobody else wanting it: on PostgreSQL the next term read the same batch, as slowly, and
/// the checkpoint never moved.)
pub async fn a_process_batch_longer_than_the_lease_commits<S: ProjectionStore>(store: S) {
    use super::projection::append_n;
    let slow = eventcore::testing::Faulty::new(store.clone());
    let last = append_n(&store, "gain-1", 0, 12).await;
    slow.delay_reads(Duration::from_millis(50));
    let folded = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let runner = ProcessRunner::new(Executor::new(slow.clone()), Gatherer(folded.clone()))
        .lease(Duration::from_millis(300))
        .batches(12, Duration::from_millis(20));
    let handle = runner.handle();
    let task = tokio::spawn(runner.run());
    let reached = handle.wait_for(last, Duration::from_secs(20)).await;
    task.abort();
    let _ = task.await;
    assert!(reached.is_ok(), "the checkpoint never moved: {reached:?}");
    let stream = eventcore::StreamId::try_new("pm_gatherer-one").unwrap();
    let records = store.read(std::slice::from_ref(&stream)).await.unwrap().remove(0).events;
    assert_eq!(records.len(), 12, "one record per input");
}

/// A process runner far behind, on a filter that skips most of the log, is not reported
/// `Live`: a filtered read looks at many pages' worth of the log and returns only what passes,
/// so a batch with fewer events than a page may still end far from the head.
pub async fn a_process_runner_far_behind_is_not_reported_live<S: ProjectionStore>(store: S) {
    use super::projection::{append_n, append_of_another_type};
    append_n(&store, "other-1", 0, 60).await;
    append_of_another_type(&store, "mine-0", 60).await;
    let last = append_n(&store, "mine-1", 0, 1).await;
    let slow = eventcore::testing::Faulty::new(store.clone());
    slow.delay_log_reads(Duration::from_millis(300));
    // A category and an event type, which most of the category's events are not of: both
    // stores read categories through an index, straight to their events, then look at a
    // bounded number of them for the event type, which skips most of them here.
    let manager =
        QuietManager("followingmine", || LogFilter::all().category("mine").event_type("N"));
    let runner =
        ProcessRunner::new(Executor::new(slow), manager).batches(1, Duration::from_millis(20));
    let handle = runner.handle();
    let task = tokio::spawn(runner.run());
    super::projection::first_batch_is_not_live(&handle, last).await;
    task.abort();
}

/// A process manager whose name cannot name its streams (`pm_<name>-<instance>`: a `-` would
/// put them in the category of another manager, which would then recover them as its own) is
/// refused when it starts, with a typed error naming it and its status stopped, before it
/// reads or writes anything.
pub async fn a_process_manager_named_with_a_dash_is_refused<S: ProjectionStore>(store: S) {
    for name in ["order-saga", "", "a b"] {
        let runner =
            ProcessRunner::new(Executor::new(store.clone()), QuietManager(name, LogFilter::all));
        let handle = runner.handle();
        let outcome = tokio::time::timeout(PATIENCE, runner.run()).await.expect("it ran on");
        match outcome {
            Err(eventcore::subscription::ProjectionError::Invalid(e)) => {
                assert_eq!(e.type_name(), "process manager name", "{e}");
            }
            other => panic!("{name:?} was not refused: {other:?}"),
        }
        // Its status says so, as for any runner that stopped.
        let status = handle.status();
        assert_eq!(status.state, RunnerState::Stopped, "{name:?}");
        assert!(status.last_error.is_some_and(|e| e.contains("process manager name")), "{name:?}");
    }
    assert!(store.checkpoint("process:order-saga").await.unwrap().is_none());
    // A filter no stream can pass, too (every read would fail).
    let bad = Compensating { on_timeout: false, fail: Arc::default(), filter: "order-line" };
    let runner = ProcessRunner::new(Executor::new(store.clone()), bad);
    match tokio::time::timeout(PATIENCE, runner.run()).await.expect("it ran on") {
        Err(eventcore::subscription::ProjectionError::Invalid(e)) => {
            assert_eq!(e.type_name(), "stream category", "{e}");
        }
        other => panic!("a filter on `order-line` was not refused: {other:?}"),
    }
}

/// The compensation: its event fails to encode while `fail` is set, and clears it, so the
/// command fails technically once (not a rejection), then succeeds.
#[derive(Debug)]
pub struct Compensated {
    fail: Arc<AtomicBool>,
}

impl<'de> serde::Deserialize<'de> for Compensated {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d)?;
        Ok(Self { fail: Arc::default() })
    }
}

impl serde::Serialize for Compensated {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.fail.swap(false, Ordering::SeqCst) {
            return Err(serde::ser::Error::custom("a transient failure"));
        }
        s.serialize_unit_struct("Compensated")
    }
}

impl eventcore::Event for Compensated {
    const EVENT_TYPE: &'static str = "Compensated";
}

eventcore::slot!(pub Compensation: Compensated);

#[derive(Debug)]
struct Compensate {
    instance: String,
    fail: Arc<AtomicBool>,
}

impl eventcore::Command for Compensate {
    type Streams = eventcore::Streams![Compensation];
    type State = Compensations;
    type Error = std::convert::Infallible;
    type Continuation = eventcore::NoDiscovery;

    fn streams(&self) -> eventcore::Bindings<Self::Streams> {
        let stream = eventcore::StreamId::with_category("comp", &self.instance).unwrap();
        eventcore::hlist![<Compensation as eventcore::Slot>::bind(stream)]
    }
}

impl eventcore::Handle for Compensate {
    fn handle(
        &self,
        _: &Compensations,
        mut decision: eventcore::Decision<Self::Streams>,
    ) -> eventcore::Handled<Self> {
        decision.emit(Compensation, Compensated { fail: Arc::clone(&self.fail) });
        Ok(decision)
    }
}

#[derive(Default)]
pub struct Compensations;

impl eventcore::Fold<Compensation> for Compensations {
    fn fold(&mut self, _: &eventcore::StreamId, _: &Compensated) {}
}

#[derive(Debug, thiserror::Error)]
#[error("refused")]
pub struct Refused;

/// Always rejected.
#[derive(Debug)]
struct Refuse;

impl eventcore::Command for Refuse {
    type Streams = eventcore::Streams![Sink];
    type State = Sunk;
    type Error = Refused;
    type Continuation = eventcore::NoDiscovery;

    fn streams(&self) -> eventcore::Bindings<Self::Streams> {
        the_sink()
    }
}

impl eventcore::Handle for Refuse {
    fn handle(&self, _: &Sunk, _: eventcore::Decision<Self::Streams>) -> eventcore::Handled<Self> {
        Err(Refused)
    }
}

/// Answers an order event with a command that is refused, or with a timer; answers the
/// rejection, or the timeout, with a compensation that fails technically the first time.
struct Compensating {
    on_timeout: bool,
    fail: Arc<AtomicBool>,
    /// The category it follows.
    filter: &'static str,
}

impl<B: eventcore::Backend> eventcore::subscription::ProcessManager<B> for Compensating {
    type State = ();
    fn name(&self) -> &str {
        if self.on_timeout { "compensating_timeouts" } else { "compensating_rejections" }
    }
    fn filter(&self) -> LogFilter {
        LogFilter::all().category(self.filter)
    }
    fn instance(&self, event: &RecordedEvent) -> Option<String> {
        Some(event.stream_id.as_str().to_owned())
    }
    fn apply(&self, _: &mut (), _: &eventcore::subscription::Happened) {}
    fn react(
        &self,
        _: &(),
        happened: &eventcore::subscription::Happened,
    ) -> Vec<eventcore::subscription::Reaction<B>> {
        use eventcore::subscription::{Happened, Reaction};
        match happened {
            Happened::Event(_) if self.on_timeout => {
                vec![Reaction::schedule("late", Duration::from_secs(60))]
            }
            Happened::Event(_) => vec![Reaction::command(Refuse)],
            Happened::Rejected { .. } | Happened::TimedOut { .. } => {
                vec![Reaction::command(Compensate {
                    instance: "c-1".to_owned(),
                    fail: Arc::clone(&self.fail),
                })]
            }
            _ => vec![],
        }
    }
}

/// A reaction to a rejection, or to a timeout, that fails once is retried, and runs once: a
/// retry resumes at the input that failed (the rejection, the fired timer), not at the event
/// that caused it, whose reactions are all recorded as done by then.
pub async fn a_reaction_to_a_rejection_or_a_timeout_that_fails_once_is_retried<
    S: ProjectionStore,
>(
    store: S,
) {
    let shop = Executor::new(store.clone());
    place(&shop, &vec![("c-1".to_owned(), 1, "visa".to_owned())]).await;
    for on_timeout in [false, true] {
        let fail = Arc::new(AtomicBool::new(true));
        let clock = ManualClock::new();
        let runner = ProcessRunner::new(
            Executor::new(store.clone()),
            Compensating { on_timeout, fail: Arc::clone(&fail), filter: "order" },
        )
        .clock(clock.clone())
        .retries(5, Duration::from_millis(1), Duration::from_millis(2))
        .batches(50, Duration::from_millis(20));
        let handle = runner.handle();
        let task = tokio::spawn(runner.run());
        let stream = eventcore::StreamId::with_category("comp", "c-1").unwrap();
        let want = 1 + usize::from(on_timeout);
        let mut follow = Subscription::new(store.clone())
            .filter(LogFilter::all().category("comp"))
            .poll_interval(Duration::from_millis(20))
            .unwrap();
        let mut seen = 0;
        tokio::time::timeout(PATIENCE, async {
            while seen < want {
                if on_timeout {
                    clock.advance(Duration::from_secs(61));
                }
                let status = handle.status();
                assert!(status.state != RunnerState::Stopped, "{status:?}");
                if let Ok(batch) =
                    tokio::time::timeout(Duration::from_millis(200), follow.next_batch()).await
                {
                    seen += batch.unwrap().events.len();
                }
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!("never compensated (timeout: {on_timeout}): {:?}", handle.status())
        });
        assert!(!fail.load(Ordering::SeqCst), "the compensation never failed");
        task.abort();
        let read = store.read(std::slice::from_ref(&stream)).await.unwrap();
        assert_eq!(read[0].events.len(), want, "compensated twice");
    }
}

/// The saga's view of an order lags behind the order. Here its reads of the log are slow, and
/// its payment timer comes due after the card was charged but before the saga has read the
/// payment: the cancellation it then sends is refused by the order itself (it is paid), and
/// the order ships. Never charged and cancelled.
pub async fn a_paid_order_is_never_cancelled_by_a_late_payment_timer<S: ProjectionStore>(store: S) {
    let shop = Executor::new(store.clone());
    shop.execute(&AddStock { product: lamp(), quantity: 5 }).await.unwrap();
    let slow = eventcore::testing::Faulty::new(store.clone());
    slow.delay_log_reads(Duration::from_secs(2));
    let clock = ManualClock::new();
    let runner = ProcessRunner::new(Executor::new(slow), FulfilmentSaga)
        .clock(clock.clone())
        .batches(50, Duration::from_millis(20));
    let task = tokio::spawn(runner.run());
    place(&shop, &vec![("late-1".to_owned(), 1, "visa".to_owned())]).await;
    let mut follow = Subscription::new(store.clone())
        .filter(LogFilter::all().category("order"))
        .poll_interval(Duration::from_millis(20))
        .unwrap();
    let mut order = Vec::new();
    let mut advanced = false;
    tokio::time::timeout(PATIENCE, async {
        while !matches!(order.last(), Some(OrderEvent::Shipped | OrderEvent::Cancelled { .. })) {
            for event in follow.next_batch().await.unwrap().events {
                order.push(event.unwrap().decode::<OrderEvent>().unwrap());
            }
            // The payment window ends right after the payment, before the saga reads it.
            if !advanced && order.iter().any(|e| matches!(e, OrderEvent::PaymentTaken { .. })) {
                clock.advance(PAYMENT_WINDOW + Duration::from_secs(1));
                advanced = true;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the order never closed: {order:?}"));
    task.abort();
    assert!(advanced, "{order:?}");
    assert!(matches!(order.last(), Some(OrderEvent::Shipped)), "a paid order ended: {order:?}");
    assert!(!order.iter().any(|e| matches!(e, OrderEvent::Cancelled { .. })), "{order:?}");
}

/// What `Measuring` writes: the payload size it remembered.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Measured(u64);

impl eventcore::Event for Measured {
    const EVENT_TYPE: &'static str = "Measured";
}

eventcore::slot!(pub Measurements: Measured);

#[derive(Default)]
pub struct Measures;

impl eventcore::Fold<Measurements> for Measures {
    fn fold(&mut self, _: &eventcore::StreamId, _: &Measured) {}
}

#[derive(Debug)]
struct Measure {
    instance: String,
    size: u64,
}

impl eventcore::Command for Measure {
    type Streams = eventcore::Streams![Measurements];
    type State = Measures;
    type Error = std::convert::Infallible;
    type Continuation = eventcore::NoDiscovery;

    fn streams(&self) -> eventcore::Bindings<Self::Streams> {
        let stream = eventcore::StreamId::with_category("measured", &self.instance).unwrap();
        eventcore::hlist![<Measurements as eventcore::Slot>::bind(stream)]
    }
}

impl eventcore::Handle for Measure {
    fn handle(
        &self,
        _: &Measures,
        mut decision: eventcore::Decision<Self::Streams>,
    ) -> eventcore::Handled<Self> {
        decision.emit(Measurements, Measured(self.size));
        Ok(decision)
    }
}

/// The size `Measuring` takes down: an event's payload and its custom metadata's `note`.
fn measure(event: &RecordedEvent) -> usize {
    let note = event.metadata.custom.get("note").and_then(|n| n.as_str()).map_or(0, str::len);
    event.payload.len() + note
}

/// Remembers the size (see [`measure`]) of its instance's first event; answers a later event with a
/// command that writes it down (so the size must come from the instance's state, rebuilt
/// from its stream).
struct Measuring;

impl<B: eventcore::Backend> eventcore::subscription::ProcessManager<B> for Measuring {
    type State = Option<usize>;
    fn name(&self) -> &str {
        "measuring"
    }
    fn filter(&self) -> LogFilter {
        LogFilter::all().category("big")
    }
    fn instance(&self, event: &RecordedEvent) -> Option<String> {
        Some(event.stream_id.as_str().to_owned())
    }
    fn apply(&self, state: &mut Option<usize>, happened: &eventcore::subscription::Happened) {
        if let eventcore::subscription::Happened::Event(e) = happened {
            state.get_or_insert(measure(e));
        }
    }
    fn react(
        &self,
        state: &Option<usize>,
        happened: &eventcore::subscription::Happened,
    ) -> Vec<eventcore::subscription::Reaction<B>> {
        match (happened, state) {
            (eventcore::subscription::Happened::Event(e), Some(size))
                if &*e.event_type == "Small" =>
            {
                let instance = e.stream_id.as_str().to_owned();
                vec![eventcore::subscription::Reaction::command(Measure {
                    instance,
                    size: *size as u64,
                })]
            }
            _ => vec![],
        }
    }
}

/// A process manager observes an event as large as the store takes (a payload of about
/// 1 MB of quotes, which a copy escapes again into about 2 MB) without copying its payload:
/// the copy would be too large to store, and the runner would stop on that event every time.
/// The payload is read back from the log when the instance is loaded, and its state is whole.
pub async fn a_process_manager_observes_an_event_too_large_to_copy<S: ProjectionStore>(store: S) {
    let big = eventcore::Payload::to_json(&"\"".repeat(500_000)).unwrap();
    measures_an_observed_event(store.clone(), store, big, 0, "big-1").await;
}

/// A process manager whose instance, routed from a stream id, is too long to name a stream
/// under its category (`pm_measuring-` and 244 characters: over 255) still runs it, under a
/// stream named by a digest of the instance, instead of stopping on a valid event.
pub async fn a_process_instance_too_long_for_a_stream_name_still_runs<S: ProjectionStore>(
    store: S,
) {
    let stream = format!("big-{}", "x".repeat(240));
    let payload = eventcore::Payload::to_json(&"abc").unwrap();
    measures_an_observed_event(store.clone(), store.clone(), payload, 0, &stream).await;
    let log = log(&store).await;
    let instances: std::collections::BTreeSet<&str> = log
        .iter()
        .map(|e| e.stream_id.as_str())
        .filter(|s| s.starts_with("pm_measuring"))
        .collect();
    assert_eq!(instances.len(), 1, "{instances:?}");
    let only = instances.first().unwrap();
    assert!(only.starts_with("pm_measuring-~") && only.len() == 14 + 32, "{only}");
}

/// A process manager observes an event that its store took, on a store whose payload limit
/// (64 KiB here, as `with_max_payload` shows) is below what the runner copies into its
/// `Observed` record: the copy, with the record around it, is larger than the event and is
/// refused, so the runner must observe the event without its payload (read back from the
/// log) rather than stop on it every time. Run on stores made with that limit (see
/// `tests/memory.rs` and `tests/postgres_conformance.rs`).
pub async fn a_process_manager_observes_an_event_its_store_took_under_a_small_limit<
    S: ProjectionStore,
>(
    store: S,
) {
    // About 50 KB of short strings, whose quotes the copy escapes: about 70 KB copied.
    let big = eventcore::Payload::to_json(&vec!["ab"; 10_000]).unwrap();
    assert!(big.len() <= 64 * 1024);
    measures_an_observed_event(store.clone(), store, big, 0, "big-1").await;
}

/// The store is away (every append fails as unavailable, ten times in a row) while a process
/// manager runs a command and records its progress: the runner waits, longer each time, and
/// goes on when the store is back, rather than counting the failures as retries and stopping
/// (one retry here) on an outage that is not the input's fault.
pub async fn a_process_manager_outlasts_a_store_outage<S: ProjectionStore>(store: S) {
    let faulty = eventcore::testing::Faulty::new(store.clone());
    faulty.fail_next_appends(10);
    let payload = eventcore::Payload::to_json(&"abc").unwrap();
    measures_an_observed_event(store, faulty.clone(), payload, 0, "big-outage").await;
    assert!(faulty.appends() >= 10, "the outage was not met");
}

/// The store answers more slowly than the runner's executor waits (its timeout, 100 ms, is
/// shorter than every read, 300 ms, as during a failover) while a process manager runs a
/// command: each try ends in `ExecuteError::Timeout`, which is the store not answering, not a
/// fault of the input. The runner waits for the store as for any outage, longer each time,
/// and goes on when it answers in time again (here once the runner met the slow store for
/// longer than its one retry would allow), rather than stopping.
pub async fn a_process_manager_outlasts_a_store_slower_than_its_executor_timeout<
    S: ProjectionStore,
>(
    store: S,
) {
    let faulty = eventcore::testing::Faulty::new(store.clone());
    faulty.delay_reads(Duration::from_millis(300));
    let executor = Executor::new(faulty.clone()).with_timeout(Duration::from_millis(100));
    let payload = eventcore::Payload::to_json(&"abc").unwrap();
    let slow = faulty.clone();
    // Each try reads two streams (the instance's, then the command's): eight reads are more
    // tries than one retry allows.
    let meanwhile = move || {
        if slow.streams_read() >= 8 {
            slow.delay_reads(Duration::ZERO);
        }
    };
    measures_with(store, executor, payload, 0, "big-slow", meanwhile).await;
    assert!(faulty.streams_read() >= 8, "the slow store was not met");
}

/// A process manager observes an event whose custom metadata takes all but a few bytes of
/// what its store takes in an event (64 KiB, payload, event type and metadata together): the
/// `Observed` record copies an event's metadata beside its own fields, so the runner must
/// leave it out with the payload, and read both back from the log, rather than stop on an
/// event the store took. Run on stores made with that limit.
pub async fn a_process_manager_observes_an_event_with_metadata_larger_than_a_payload<
    S: ProjectionStore,
>(
    store: S,
) {
    let payload = eventcore::Payload::to_json(&"abc").unwrap();
    // 5 bytes of payload, 3 of event type, `{"note":"..."}` is the note and 11 more.
    let note = 64 * 1024 - 5 - 3 - 11;
    measures_an_observed_event(store.clone(), store, payload, note, "big-meta").await;
}

/// Appends an event with payload `big` (and a custom metadata `note` of `note` bytes, when
/// not 0) and a small one to `stream`; `Measuring`, run on `runner_store` (`store`, or a
/// wrapper of it), must write down the size of the first, from the instance's state rebuilt
/// from its stream, and never stop (one retry).
async fn measures_an_observed_event<S: ProjectionStore, R: ProjectionStore>(
    store: S,
    runner_store: R,
    big: eventcore::Payload,
    note: usize,
    stream: &str,
) {
    measures_with(store, Executor::new(runner_store), big, note, stream, || {}).await;
}

/// [`measures_an_observed_event`] with the runner's executor given, calling `meanwhile` each
/// time it looks for the measure (every 200 ms at most).
async fn measures_with<S: ProjectionStore, R: ProjectionStore>(
    store: S,
    executor: Executor<R>,
    big: eventcore::Payload,
    note: usize,
    stream: &str,
    mut meanwhile: impl FnMut(),
) {
    use eventcore::{CorrelationId, EventMetadata, NewEvent, Payload, StreamVersion};
    let size = big.len() + note;
    let stream = eventcore::StreamId::try_new(stream).unwrap();
    let meta = || EventMetadata::new(CorrelationId::new());
    let mut first = meta();
    if note > 0 {
        first.custom.insert("note".into(), "n".repeat(note).into());
    }
    let events = vec![NewEvent::new("Big", 1, big, first)];
    let small = vec![NewEvent::new("Small", 1, Payload::to_json(&1).unwrap(), meta())];
    for (version, events) in [(0, events), (1, small)] {
        let request = eventcore::backend::AppendRequest::new()
            .expect(stream.clone(), StreamVersion::new(version))
            .write(stream.clone(), events);
        store.append(request).await.unwrap();
    }
    let runner = ProcessRunner::new(executor, Measuring)
        .retries(1, Duration::from_millis(1), Duration::from_millis(2))
        .batches(50, Duration::from_millis(20));
    let handle = runner.handle();
    let task = tokio::spawn(runner.run());
    let mut follow = Subscription::new(store.clone())
        .filter(LogFilter::all().category("measured"))
        .poll_interval(Duration::from_millis(20))
        .unwrap();
    let measured = tokio::time::timeout(PATIENCE, async {
        loop {
            let status = handle.status();
            assert!(status.state != RunnerState::Stopped, "{status:?}");
            meanwhile();
            if let Ok(batch) =
                tokio::time::timeout(Duration::from_millis(200), follow.next_batch()).await
            {
                if let Some(event) = batch.unwrap().events.into_iter().next() {
                    return event.unwrap().decode::<Measured>().unwrap();
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("never measured: {:?}", handle.status()));
    task.abort();
    assert_eq!(measured.0, size as u64);
}

/// Which of a process instance's records is appended with its reply lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LostReply {
    /// The rejection of a command (`Compensating` on a rejection).
    Rejected,
    /// The timer set (`Compensating` on a timeout).
    Scheduled,
    /// The timer fired (`Compensating` on a timeout).
    Fired,
}

/// Runs `Compensating` through a store that commits the append of the `lost` record and then
/// reports a dropped connection; the compensation must still run, once, and the runner must
/// not stop. The retry of the append finds the record stored and the reaction done: it must
/// not take that for "nothing left to do".
async fn a_record_whose_reply_was_lost<S: ProjectionStore>(store: S, lost: LostReply) {
    let faulty = eventcore::testing::Faulty::new(store.clone());
    place(&Executor::new(store.clone()), &vec![("c-1".to_owned(), 1, "visa".to_owned())]).await;
    let placed = store.log_stats(GlobalPosition::START, 0).await.unwrap().head;
    if lost != LostReply::Fired {
        faulty.lose_next_append_replies(1);
    }
    let on_timeout = lost != LostReply::Rejected;
    let clock = ManualClock::new();
    let manager = Compensating { on_timeout, fail: Arc::default(), filter: "order" };
    let runner = ProcessRunner::new(Executor::new(faulty.clone()), manager)
        .clock(clock.clone())
        .retries(5, Duration::from_millis(1), Duration::from_millis(2))
        .batches(50, Duration::from_millis(20));
    let handle = runner.handle();
    let task = tokio::spawn(runner.run());
    if on_timeout {
        // The order is handled, so the timer is set: the next append is the one that fires it.
        handle.wait_for(placed, PATIENCE).await.unwrap();
        if lost == LostReply::Fired {
            faulty.lose_next_append_replies(1);
        }
        clock.advance(Duration::from_secs(61));
    }
    let mut follow = Subscription::new(store.clone())
        .filter(LogFilter::all().category("comp"))
        .poll_interval(Duration::from_millis(20))
        .unwrap();
    let compensated = tokio::time::timeout(PATIENCE, async {
        while follow.next_batch().await.unwrap().events.is_empty() {}
    })
    .await;
    let status = handle.status();
    task.abort();
    assert!(compensated.is_ok(), "never compensated ({lost:?} reply lost): {status:?}");
    assert_ne!(status.state, RunnerState::Stopped, "{status:?}");
    let stream = eventcore::StreamId::with_category("comp", "c-1").unwrap();
    let read = store.read(std::slice::from_ref(&stream)).await.unwrap();
    assert_eq!(read[0].events.len(), 1, "compensated twice ({lost:?} reply lost)");
}

/// A rejection recorded by an append whose reply was lost is still compensated.
pub async fn a_rejection_whose_record_reply_was_lost_is_still_compensated<S: ProjectionStore>(
    store: S,
) {
    a_record_whose_reply_was_lost(store, LostReply::Rejected).await;
}

/// A timer set by an append whose reply was lost still fires in the same term.
pub async fn a_timer_whose_record_reply_was_lost_still_fires<S: ProjectionStore>(store: S) {
    a_record_whose_reply_was_lost(store, LostReply::Scheduled).await;
}

/// A timeout recorded by an append whose reply was lost is still handled.
pub async fn a_timeout_whose_record_reply_was_lost_is_still_handled<S: ProjectionStore>(store: S) {
    a_record_whose_reply_was_lost(store, LostReply::Fired).await;
}

/// Sets a timer "until cancelled" (`Duration::MAX`) on each event of category `forever`.
struct UntilCancelled;

impl<B: eventcore::Backend> eventcore::subscription::ProcessManager<B> for UntilCancelled {
    type State = ();
    fn name(&self) -> &str {
        "until_cancelled"
    }
    fn filter(&self) -> LogFilter {
        LogFilter::all().category("forever")
    }
    fn instance(&self, event: &RecordedEvent) -> Option<String> {
        Some(event.stream_id.as_str().to_owned())
    }
    fn apply(&self, _: &mut (), _: &eventcore::subscription::Happened) {}
    fn react(
        &self,
        _: &(),
        happened: &eventcore::subscription::Happened,
    ) -> Vec<eventcore::subscription::Reaction<B>> {
        use eventcore::subscription::{Happened, Reaction};
        match happened {
            Happened::Event(_) => vec![Reaction::schedule("never", Duration::MAX)],
            _ => vec![],
        }
    }
}

/// A timer set for `Duration::MAX` is due at the latest instant a timestamp is stored for,
/// 9999-12-31T23:59:59.999999Z, as `Reaction::schedule` documents (the runner used to panic
/// adding it to the clock's time); the instance's stream still loads with it (a second event
/// sets it again), and the runner goes on.
pub async fn a_timer_set_for_duration_max_is_due_at_the_latest_time<S: ProjectionStore>(store: S) {
    use eventcore::backend::AppendRequest;
    use eventcore::{CorrelationId, EventMetadata, NewEvent, Payload, StreamId, StreamVersion};
    let runner = ProcessRunner::new(Executor::new(store.clone()), UntilCancelled)
        .clock(ManualClock::new())
        .batches(50, Duration::from_millis(20));
    let handle = runner.handle();
    let mut task = tokio::spawn(runner.run());
    let stream = StreamId::try_new("forever-1").unwrap();
    for version in 0..2 {
        let event = NewEvent::new(
            "Began",
            1,
            Payload::to_json(&version).unwrap(),
            EventMetadata::new(CorrelationId::new()),
        );
        let request = AppendRequest::new()
            .expect(stream.clone(), StreamVersion::new(version))
            .write(stream.clone(), vec![event]);
        let at = store.append(request).await.unwrap().positions.unwrap().1;
        tokio::select! {
            ended = &mut task => panic!("the runner ended: {ended:?}"),
            reached = handle.wait_for(at, PATIENCE) => reached.unwrap(),
        }
    }
    let status = handle.status();
    task.abort();
    assert_eq!(status.last_error, None, "{status:?}");
    let instance = StreamId::with_category("pm_until_cancelled", "forever-1").unwrap();
    let read = store.read(std::slice::from_ref(&instance)).await.unwrap();
    let dues: Vec<String> = (read[0].events.iter())
        .filter_map(|e| {
            let record: serde_json::Value = serde_json::from_str(e.payload.as_str()).ok()?;
            Some(record.get("Scheduled")?.get("due")?.as_str()?.to_owned())
        })
        .collect();
    assert_eq!(dues, ["9999-12-31T23:59:59.999999Z"; 2], "{:?}", read[0].events);
}

/// A process runner with a lease longer than `MAX_LEASE`, or shorter than `MIN_LEASE`, is
/// refused before it claims anything.
pub async fn a_process_runner_with_a_lease_longer_than_the_longest_is_refused<
    S: ProjectionStore,
>(
    store: S,
) {
    let ms = Duration::from_millis;
    let runner = || ProcessRunner::new(Executor::new(store.clone()), UntilCancelled);
    // And settings that were quietly raised: a batch of no events, a longest backoff below
    // the first.
    for (expected, runner) in [
        ("lease", runner().lease(Duration::MAX)),
        ("lease", runner().lease(Duration::ZERO)),
        ("batches", runner().batches(0, ms(20))),
        ("retries", runner().retries(1, ms(9), ms(1))),
    ] {
        match tokio::time::timeout(PATIENCE, runner.run()).await.expect("it ran on") {
            Err(eventcore::subscription::ProjectionError::Invalid(e)) => {
                assert_eq!(e.type_name(), expected, "{e}");
            }
            other => panic!("{expected}: not refused: {other:?}"),
        }
    }
    assert!(store.checkpoint("process:until_cancelled").await.unwrap().is_none());
}

/// A mark: written by [`Mark`].
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Marked;

impl eventcore::Event for Marked {
    const EVENT_TYPE: &'static str = "Marked";
}

eventcore::slot!(pub MarkSlot: Marked);

/// Writes one [`Marked`] to `mark-<instance>`, under `key` if it has one.
#[derive(Debug, Clone)]
struct Mark {
    instance: &'static str,
    key: Option<&'static str>,
}

impl eventcore::Command for Mark {
    type Streams = eventcore::Streams![MarkSlot];
    type State = Marks;
    type Error = std::convert::Infallible;
    type Continuation = eventcore::NoDiscovery;

    fn streams(&self) -> eventcore::Bindings<Self::Streams> {
        let stream = eventcore::StreamId::with_category("mark", self.instance).unwrap();
        eventcore::hlist![<MarkSlot as eventcore::Slot>::bind(stream)]
    }

    fn idempotency_key(&self) -> Option<eventcore::IdempotencyKey> {
        self.key.map(|k| eventcore::IdempotencyKey::try_new(k).unwrap())
    }
}

impl eventcore::Handle for Mark {
    fn handle(
        &self,
        _: &Marks,
        mut decision: eventcore::Decision<Self::Streams>,
    ) -> eventcore::Handled<Self> {
        decision.emit(MarkSlot, Marked);
        Ok(decision)
    }
}

#[derive(Default)]
pub struct Marks;

impl eventcore::Fold<MarkSlot> for Marks {
    fn fold(&mut self, _: &eventcore::StreamId, _: &Marked) {}
}

/// Answers an order event with `command`, and the rejection that brings with a keyless mark
/// of `mark-answered`, sending the rejection's reason on `reasons`.
struct AnswersRejections<C> {
    name: &'static str,
    command: C,
    reasons: tokio::sync::mpsc::UnboundedSender<String>,
}

impl<B, C> eventcore::subscription::ProcessManager<B> for AnswersRejections<C>
where
    B: eventcore::Backend,
    C: eventcore::Handle + std::fmt::Debug + Clone + Send + Sync + 'static,
{
    type State = ();
    fn name(&self) -> &str {
        self.name
    }
    fn filter(&self) -> LogFilter {
        LogFilter::all().category("order")
    }
    fn instance(&self, event: &RecordedEvent) -> Option<String> {
        Some(event.stream_id.as_str().to_owned())
    }
    fn apply(&self, _: &mut (), _: &eventcore::subscription::Happened) {}
    fn react(
        &self,
        _: &(),
        happened: &eventcore::subscription::Happened,
    ) -> Vec<eventcore::subscription::Reaction<B>> {
        use eventcore::subscription::{Happened, Reaction};
        match happened {
            Happened::Event(_) => vec![Reaction::command(self.command.clone())],
            Happened::Rejected { reason, .. } => {
                let _ = self.reasons.send(reason.clone());
                vec![Reaction::command(Mark { instance: "answered", key: None })]
            }
            _ => vec![],
        }
    }
}

/// A command a process runs under an idempotency key that another request used first is
/// refused by the executor (`KeyReused`) every time it is sent: the runner records that as
/// the command's rejection, which the instance handles, and goes on, rather than retrying a
/// refusal that cannot change and then stopping. Nothing is written for the refused command.
pub async fn a_command_refused_for_a_reused_key_is_handed_to_the_process_as_a_rejection<
    S: ProjectionStore,
>(
    store: S,
) {
    let shop = Executor::new(store.clone());
    // The key's first request: a mark of another stream.
    shop.execute(&Mark { instance: "first", key: Some("taken") }).await.unwrap();
    place(&shop, &vec![("k-1".to_owned(), 1, "visa".to_owned())]).await;
    let (sender, mut received) = tokio::sync::mpsc::unbounded_channel();
    // A mark of `mark-reused` under the key `taken`, which another request used first.
    let reusing = Mark { instance: "reused", key: Some("taken") };
    let manager = AnswersRejections { name: "reusing_a_key", command: reusing, reasons: sender };
    let runner = ProcessRunner::new(Executor::new(store.clone()), manager)
        .retries(2, Duration::from_millis(1), Duration::from_millis(2))
        .batches(50, Duration::from_millis(20));
    let handle = runner.handle();
    let task = tokio::spawn(runner.run());
    let mut follow = Subscription::new(store.clone())
        .filter(LogFilter::all().category("mark"))
        .poll_interval(Duration::from_millis(20))
        .unwrap();
    let mut marks = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        while !marks.iter().any(|s: &String| s == "mark-answered") {
            let status = handle.status();
            assert!(status.state != RunnerState::Stopped, "the runner stopped: {status:?}");
            if let Ok(batch) =
                tokio::time::timeout(Duration::from_millis(200), follow.next_batch()).await
            {
                for event in batch.unwrap().events {
                    marks.push(event.unwrap().stream_id.as_str().to_owned());
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the rejection was never handled: {:?}", handle.status()));
    task.abort();
    assert_eq!(marks, ["mark-first", "mark-answered"], "the refused mark was written");
    let mut reasons = Vec::new();
    while let Ok(reason) = received.try_recv() {
        reasons.push(reason);
    }
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(
        reasons[0].contains("`taken`") && reasons[0].contains("another request"),
        "{reasons:?}"
    );
}

/// Refuses every time, with a reason `len` bytes long.
#[derive(Debug, Clone)]
struct RefuseAtLength {
    len: usize,
}

/// The reason [`RefuseAtLength`] gives: its text, `len` bytes of it.
#[derive(Debug)]
struct LongReason(String);

impl std::fmt::Display for LongReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LongReason {}

impl eventcore::Command for RefuseAtLength {
    type Streams = eventcore::Streams![MarkSlot];
    type State = Marks;
    type Error = LongReason;
    type Continuation = eventcore::NoDiscovery;

    fn streams(&self) -> eventcore::Bindings<Self::Streams> {
        let stream = eventcore::StreamId::with_category("mark", "refused").unwrap();
        eventcore::hlist![<MarkSlot as eventcore::Slot>::bind(stream)]
    }
}

impl eventcore::Handle for RefuseAtLength {
    fn handle(&self, _: &Marks, _: eventcore::Decision<Self::Streams>) -> eventcore::Handled<Self> {
        // Two-byte characters, so that a cut in the middle of one would show.
        let mut reason = "é".repeat(self.len / 2);
        reason.push_str(&"x".repeat(self.len % 2));
        Err(LongReason(reason))
    }
}

/// A command that a process runs is rejected with a reason longer than the store takes in an
/// event (2 MB, over the default limit of 1 MiB): the runner records the rejection with its
/// reason cut to [`Happened::MAX_REASON`](eventcore::subscription::Happened::MAX_REASON)
/// bytes, marked as cut, and the instance compensates, rather than the runner stopping on a
/// record it can never store. A reason within the limit is kept whole.
pub async fn a_rejection_with_a_reason_longer_than_the_store_takes_is_still_handled<
    S: ProjectionStore,
>(
    store: S,
) {
    use eventcore::subscription::Happened;
    for (name, len, cut) in
        [("refused_long", 2_000_001, true), ("refused", Happened::MAX_REASON, false)]
    {
        let store = store.clone();
        let shop = Executor::new(store.clone());
        let order = format!("r-{len}");
        place(&shop, &vec![(order, 1, "visa".to_owned())]).await;
        let (sender, mut reasons) = tokio::sync::mpsc::unbounded_channel();
        let manager = AnswersRejections { name, command: RefuseAtLength { len }, reasons: sender };
        let runner = ProcessRunner::new(Executor::new(store.clone()), manager)
            .retries(2, Duration::from_millis(1), Duration::from_millis(2))
            .batches(50, Duration::from_millis(20));
        let handle = runner.handle();
        let task = tokio::spawn(runner.run());
        let reason = tokio::time::timeout(PATIENCE, async {
            loop {
                let status = handle.status();
                assert!(status.state != RunnerState::Stopped, "the runner stopped: {status:?}");
                if let Ok(reason) =
                    tokio::time::timeout(Duration::from_millis(200), reasons.recv()).await
                {
                    return reason.expect("the manager is alive");
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the rejection was never handled: {:?}", handle.status()));
        task.abort();
        assert!(reason.len() <= Happened::MAX_REASON, "{} bytes", reason.len());
        if cut {
            let tail: String =
                reason.chars().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
            assert!(reason.starts_with("éé"), "{tail}");
            assert!(reason.ends_with(&format!("(cut from {len} bytes)")), "{tail}");
        } else {
            assert_eq!(reason.len(), len);
            assert!(!reason.contains("cut from"));
        }
    }
}

eventcore::slot!(pub ReadySlot: Marked);

/// Whether `ready-1` holds an event.
#[derive(Default)]
pub struct Readiness(bool);

impl eventcore::Fold<ReadySlot> for Readiness {
    fn fold(&mut self, _: &eventcore::StreamId, _: &Marked) {
        self.0 = true;
    }
}

impl eventcore::Fold<MarkSlot> for Readiness {
    fn fold(&mut self, _: &eventcore::StreamId, _: &Marked) {}
}

/// Writes one [`Marked`] to `mark-ready` under the key `mark-when-ready`, once `ready-1`
/// holds an event; until then it decides to write nothing.
#[derive(Debug)]
struct MarkWhenReady;

impl eventcore::Command for MarkWhenReady {
    type Streams = eventcore::Streams![ReadySlot, MarkSlot];
    type State = Readiness;
    type Error = std::convert::Infallible;
    type Continuation = eventcore::NoDiscovery;

    fn streams(&self) -> eventcore::Bindings<Self::Streams> {
        let ready = eventcore::StreamId::try_new("ready-1").unwrap();
        let mark = eventcore::StreamId::try_new("mark-ready").unwrap();
        eventcore::hlist![
            <ReadySlot as eventcore::Slot>::bind(ready),
            <MarkSlot as eventcore::Slot>::bind(mark)
        ]
    }

    fn idempotency_key(&self) -> Option<eventcore::IdempotencyKey> {
        Some(eventcore::IdempotencyKey::try_new("mark-when-ready").unwrap())
    }
}

impl eventcore::Handle for MarkWhenReady {
    fn handle(
        &self,
        state: &Readiness,
        mut decision: eventcore::Decision<Self::Streams>,
    ) -> eventcore::Handled<Self> {
        if state.0 {
            decision.emit(MarkSlot, Marked);
        }
        Ok(decision)
    }
}

/// Answers every event of category `poke` with [`MarkWhenReady`].
struct Poked;

impl<B: eventcore::Backend> eventcore::subscription::ProcessManager<B> for Poked {
    type State = ();
    fn name(&self) -> &str {
        "poked"
    }
    fn filter(&self) -> LogFilter {
        LogFilter::all().category("poke")
    }
    fn instance(&self, event: &RecordedEvent) -> Option<String> {
        Some(event.stream_id.as_str().to_owned())
    }
    fn apply(&self, _: &mut (), _: &eventcore::subscription::Happened) {}
    fn react(
        &self,
        _: &(),
        happened: &eventcore::subscription::Happened,
    ) -> Vec<eventcore::subscription::Reaction<B>> {
        match happened {
            eventcore::subscription::Happened::Event(_) => {
                vec![eventcore::subscription::Reaction::command(MarkWhenReady)]
            }
            _ => vec![],
        }
    }
}

/// A keyed command that a process runs and that decides to write nothing stores no key, as
/// `Command::idempotency_key` documents for any command: run again once it has something to
/// write, it writes it. The process's records, appended with the command, are not the
/// command's commit (they stored its key, and the second run was answered with the first,
/// which wrote nothing).
pub async fn a_keyed_command_that_wrote_nothing_for_a_process_runs_again<S: ProjectionStore>(
    store: S,
) {
    use eventcore::backend::AppendRequest;
    use eventcore::{CorrelationId, EventMetadata, NewEvent, Payload, StreamId, StreamVersion};
    // A `Marked` (`null`): what `ready-1` holds, and as good as any event for a poke.
    let append = |stream: &str, version: u64| {
        let meta = EventMetadata::new(CorrelationId::new());
        let event = NewEvent::new("Marked", 1, Payload::to_json(&Marked).unwrap(), meta);
        let stream = StreamId::try_new(stream).unwrap();
        AppendRequest::new()
            .expect(stream.clone(), StreamVersion::new(version))
            .write(stream, vec![event])
    };
    let runner = ProcessRunner::new(Executor::new(store.clone()), Poked)
        .retries(2, Duration::from_millis(1), Duration::from_millis(2))
        .batches(50, Duration::from_millis(20));
    let handle = runner.handle();
    let task = tokio::spawn(runner.run());
    // Not ready yet: the mark writes nothing.
    let first = store.append(append("poke-1", 0)).await.unwrap().positions.unwrap().1;
    handle.wait_for(first, PATIENCE).await.unwrap();
    // Ready: the same mark, sent again, writes.
    store.append(append("ready-1", 0)).await.unwrap();
    let second = store.append(append("poke-1", 1)).await.unwrap().positions.unwrap().1;
    handle.wait_for(second, PATIENCE).await.unwrap();
    let status = handle.status();
    task.abort();
    assert_eq!(status.last_error, None, "{status:?}");
    let mark = StreamId::try_new("mark-ready").unwrap();
    let read = store.read(std::slice::from_ref(&mark)).await.unwrap();
    assert_eq!(read[0].events.len(), 1, "the mark was never written once ready");
}

/// Routes each event to the instance its payload (a JSON string) names, and reacts to nothing:
/// every routed event is only observed, in its instance's stream.
pub struct ByPayload(pub String);

impl<B: eventcore::Backend> eventcore::subscription::ProcessManager<B> for ByPayload {
    type State = ();
    fn name(&self) -> &str {
        &self.0
    }
    fn filter(&self) -> LogFilter {
        LogFilter::all().category("route")
    }
    fn instance(&self, event: &RecordedEvent) -> Option<String> {
        serde_json::from_str::<String>(event.payload.as_str()).ok()
    }
    fn apply(&self, _: &mut (), _: &eventcore::subscription::Happened) {}
    fn react(
        &self,
        _: &(),
        _: &eventcore::subscription::Happened,
    ) -> Vec<eventcore::subscription::Reaction<B>> {
        vec![]
    }
}

/// Appends an event to `route-1` whose payload names `instance`; its position.
async fn route<S: ProjectionStore>(store: &S, instance: &str) -> GlobalPosition {
    use eventcore::backend::AppendRequest;
    let stream = eventcore::StreamId::try_new("route-1").unwrap();
    let at = store.read(std::slice::from_ref(&stream)).await.unwrap().remove(0).version;
    let event = eventcore::NewEvent::new(
        "Routed",
        1,
        eventcore::Payload::to_json(&instance).unwrap(),
        eventcore::EventMetadata::new(eventcore::CorrelationId::new()),
    );
    let done = store
        .append(AppendRequest::new().expect(stream.clone(), at).write(stream, vec![event]))
        .await
        .unwrap();
    done.positions.unwrap().1
}

/// Two instances are two streams, whatever their names: one whose name a stream id refuses
/// (it holds a line feed) is kept under `pm_<name>-~<digest>`, and another instance whose name
/// is that very text, `~` and the 32 hex digits, must not share its stream (and its state).
pub async fn an_instance_named_like_the_digest_of_another_has_a_stream_of_its_own<
    S: ProjectionStore,
>(
    store: S,
) {
    let runner = ProcessRunner::new(Executor::new(store.clone()), ByPayload("routing".into()))
        .batches(10, Duration::from_millis(20));
    let handle = runner.handle();
    let task = tokio::spawn(runner.run());
    let first = route(&store, "line\nfeed").await;
    handle.wait_for(first, PATIENCE).await.unwrap();
    let streams = |log: Vec<RecordedEvent>| {
        log.into_iter()
            .map(|e| e.stream_id.as_str().to_owned())
            .filter(|s| s.starts_with("pm_routing-"))
            .collect::<std::collections::BTreeSet<_>>()
    };
    let hashed = streams(log(&store).await);
    assert_eq!(hashed.len(), 1, "{hashed:?}");
    let digest = hashed.first().unwrap().strip_prefix("pm_routing-").unwrap().to_owned();
    assert!(digest.starts_with('~') && digest.len() == 33, "{digest}");
    // Another instance, named as the first one's stream is.
    let second = route(&store, &digest).await;
    handle.wait_for(second, PATIENCE).await.unwrap();
    task.abort();
    let all = streams(log(&store).await);
    assert_eq!(all.len(), 2, "two instances share a stream: {all:?}");
}

/// A process manager whose name is too long for its instances' streams (`pm_<name>-~<digest>`
/// over [`StreamId::MAX_LEN`](eventcore::StreamId::MAX_LEN) bytes: any name over 218 bytes) is
/// refused when it starts, as one with a `-` is, rather than running until an event comes and
/// then failing on every one; a name of 218 bytes runs.
pub async fn a_process_manager_named_too_long_for_its_streams_is_refused<S: ProjectionStore>(
    store: S,
) {
    let runner = ProcessRunner::new(Executor::new(store.clone()), ByPayload("n".repeat(219)));
    let handle = runner.handle();
    let outcome = tokio::time::timeout(PATIENCE, runner.run()).await.expect("it ran on");
    match outcome {
        Err(eventcore::subscription::ProjectionError::Invalid(e)) => {
            assert_eq!(e.type_name(), "process manager name", "{e}");
        }
        other => panic!("a name of 219 bytes was not refused: {other:?}"),
    }
    assert_eq!(handle.status().state, RunnerState::Stopped);
    // The longest name that fits runs an instance whose name needs its digest.
    let runner = ProcessRunner::new(Executor::new(store.clone()), ByPayload("n".repeat(218)))
        .batches(10, Duration::from_millis(20));
    let handle = runner.handle();
    let task = tokio::spawn(runner.run());
    let at = route(&store, &"i".repeat(300)).await;
    let reached = handle.wait_for(at, PATIENCE).await;
    task.abort();
    reached.unwrap();
}

/// Follows every event of the log, one instance per stream.
struct Everything(&'static str);

impl<B: eventcore::Backend> eventcore::subscription::ProcessManager<B> for Everything {
    type State = ();
    fn name(&self) -> &str {
        self.0
    }
    fn filter(&self) -> LogFilter {
        LogFilter::all()
    }
    fn instance(&self, event: &RecordedEvent) -> Option<String> {
        Some(event.stream_id.to_string())
    }
    fn apply(&self, _: &mut (), _: &eventcore::subscription::Happened) {}
    fn react(
        &self,
        _: &(),
        _: &eventcore::subscription::Happened,
    ) -> Vec<eventcore::subscription::Reaction<B>> {
        vec![]
    }
}

/// A process manager whose filter passes the records of process instances (its own, or
/// another manager's) does not take them for events of the log: routed, each record it
/// observed would be observed again in a record of its own, and so on without end (one event
/// became hundreds of records in a tenth of a second), and two such managers would feed each
/// other. Each business event is observed once per manager, and nothing else.
pub async fn a_process_manager_following_every_event_does_not_feed_on_process_records<
    S: ProjectionStore,
>(
    store: S,
) {
    let start = |name| {
        let runner = ProcessRunner::new(Executor::new(store.clone()), Everything(name));
        let handle = runner.handle();
        (handle, tokio::spawn(runner.run()))
    };
    let (a, task_a) = start("audit_a");
    let (b, task_b) = start("audit_b");
    route(&store, "one").await;
    // Every record written for the first event comes before this one, and is read first.
    let marker = route(&store, "two").await;
    let reached_a = a.wait_for(marker, PATIENCE).await;
    let reached_b = b.wait_for(marker, PATIENCE).await;
    let log = store.read_all(GlobalPosition::START, 100_000).await.unwrap();
    task_a.abort();
    task_b.abort();
    reached_a.unwrap();
    reached_b.unwrap();
    let mut streams: Vec<String> = log
        .iter()
        .filter(|e| e.stream_id.as_str().starts_with("pm_"))
        .map(|e| e.stream_id.to_string())
        .collect();
    streams.sort();
    streams.dedup();
    for stream in &streams {
        assert!(
            stream == "pm_audit_a-route-1" || stream == "pm_audit_b-route-1",
            "a process record was routed as an event, into {stream}: {streams:?}"
        );
    }
}

/// A record of a process instance's stream that the runner cannot read (here a record of a
/// newer schema version, as a newer release would write during a rolling deploy) is not
/// skipped when the runner takes over and looks for pending timers and inputs: skipped, the
/// timer or the rejection it records would be lost without a word, and the runner reported
/// live. The runner stops with an error naming the record (as it does when it loads that
/// instance, and on an event of the log it cannot read).
pub async fn a_process_record_the_runner_cannot_read_stops_it_at_takeover<S: ProjectionStore>(
    store: S,
) {
    use eventcore::backend::AppendRequest;
    let stream = eventcore::StreamId::try_new("pm_recovering-a").unwrap();
    let record = eventcore::NewEvent::new(
        "eventcore.ProcessRecord",
        2,
        eventcore::Payload::to_json(&serde_json::json!({ "Fired": { "timer": "t" } })).unwrap(),
        eventcore::EventMetadata::new(eventcore::CorrelationId::new()),
    );
    store
        .append(
            AppendRequest::new()
                .expect(stream.clone(), eventcore::StreamVersion::EMPTY)
                .write(stream, vec![record]),
        )
        .await
        .unwrap();
    let runner = ProcessRunner::new(Executor::new(store.clone()), ByPayload("recovering".into()))
        .retries(0, Duration::from_millis(1), Duration::from_millis(1));
    let handle = runner.handle();
    let outcome = tokio::time::timeout(PATIENCE, runner.run())
        .await
        .unwrap_or_else(|_| panic!("it ran on: {:?}", handle.status()));
    match outcome {
        Err(eventcore::subscription::ProjectionError::Stopped { reason, .. }) => {
            assert!(reason.contains("pm_recovering-a"), "{reason}");
        }
        other => panic!("not stopped: {other:?}"),
    }
}

/// Follows the `tick` category and reads only ticks it knows (`Tick`, schema version 1).
struct TickReader;

impl<B: eventcore::Backend> eventcore::subscription::ProcessManager<B> for TickReader {
    type State = ();
    fn name(&self) -> &str {
        "ticking"
    }
    fn filter(&self) -> LogFilter {
        LogFilter::all().category("tick")
    }
    fn readable(&self, event: &RecordedEvent) -> Result<(), eventcore::DecodeError> {
        event.decode::<super::projection::Tick>().map(drop)
    }
    fn instance(&self, _: &RecordedEvent) -> Option<String> {
        None
    }
    fn apply(&self, _: &mut (), _: &eventcore::subscription::Happened) {}
    fn react(
        &self,
        _: &(),
        _: &eventcore::subscription::Happened,
    ) -> Vec<eventcore::subscription::Reaction<B>> {
        vec![]
    }
}

/// A process manager meets an event its code cannot read (a `Tick` of schema version 9, as
/// newer code writes during a rolling deploy): its runner stops right before it, saying why,
/// and gives its lease up, rather than pass it by and lose its reactions for good. A runner of
/// code that reads it (here: reads everything) takes over and goes past it.
pub async fn a_process_manager_stops_before_an_event_it_cannot_read<S: ProjectionStore>(store: S) {
    let s = eventcore::StreamId::try_new("tick-1").unwrap();
    let meta = || eventcore::EventMetadata::new(eventcore::CorrelationId::new());
    let tick = eventcore::NewEvent::from_event(&super::projection::Tick(1), meta()).unwrap();
    let payload = eventcore::Payload::to_json(&7).unwrap();
    let future = eventcore::NewEvent::new("Tick", 9, payload, meta());
    let request = eventcore::backend::AppendRequest::new()
        .expect(s.clone(), eventcore::StreamVersion::EMPTY)
        .write(s, vec![tick, future]);
    let (_, last) = store.append(request).await.unwrap().positions.unwrap();

    let old =
        ProcessRunner::new(Executor::new(store.clone()), TickReader).lease(Duration::from_secs(60));
    let handle = old.handle();
    let stopped = tokio::time::timeout(PATIENCE, old.run()).await.expect("it stopped");
    match stopped {
        Err(eventcore::subscription::ProjectionError::Stopped { position, reason, .. }) => {
            assert_eq!(position, last, "{reason}");
            assert!(reason.contains("schema version 9"), "{reason}");
        }
        other => panic!("ran past an event it cannot read: {other:?}"),
    }
    assert_eq!(handle.status().state, RunnerState::Stopped);
    let checkpoint = store.checkpoint("process:ticking").await.unwrap().unwrap_or_default();
    assert!(checkpoint < last, "the checkpoint passed the unread event");

    // The new code: its runner takes the lease at once (given up, not run out) and goes on.
    let new = ProcessRunner::new(
        Executor::new(store.clone()),
        QuietManager("ticking", || LogFilter::all().category("tick")),
    )
    .lease(Duration::from_secs(60));
    let handle = new.handle();
    let task = tokio::spawn(new.run());
    handle.wait_for(last, PATIENCE).await.unwrap();
    task.abort();
}

/// Follows `mark-fin1` and `mark-probe`. An order-like event of `mark-fin1` is answered with a
/// command that is refused and a timer; `mark-probe` with a mark of `probed` (seen, the runner
/// has taken over and handled what it found). The older code answers the rejection with
/// nothing and the timeout with a compensation; the newer code adds a mark to each.
struct Finishing {
    newer: bool,
    fail: Arc<AtomicBool>,
}

impl<B: eventcore::Backend> eventcore::subscription::ProcessManager<B> for Finishing {
    type State = ();
    fn name(&self) -> &str {
        "finishing"
    }
    fn filter(&self) -> LogFilter {
        LogFilter::all().category("mark")
    }
    fn instance(&self, event: &RecordedEvent) -> Option<String> {
        let stream = event.stream_id.as_str();
        ["mark-fin1", "mark-probe"].contains(&stream).then(|| stream.to_owned())
    }
    fn apply(&self, _: &mut (), _: &eventcore::subscription::Happened) {}
    fn react(
        &self,
        _: &(),
        happened: &eventcore::subscription::Happened,
    ) -> Vec<eventcore::subscription::Reaction<B>> {
        use eventcore::subscription::{Happened, Reaction};
        let mark = |instance| Reaction::command(Mark { instance, key: None });
        match happened {
            Happened::Event(e) if e.stream_id.as_str() == "mark-probe" => vec![mark("probed")],
            Happened::Event(_) => {
                vec![Reaction::command(Refuse), Reaction::schedule("t", Duration::from_secs(60))]
            }
            Happened::Rejected { .. } if self.newer => vec![mark("late-rejected")],
            Happened::Rejected { .. } => vec![],
            Happened::TimedOut { .. } => {
                let compensate = Reaction::command(Compensate {
                    instance: "fin".to_owned(),
                    fail: Arc::clone(&self.fail),
                });
                if self.newer { vec![compensate, mark("late-timeout")] } else { vec![compensate] }
            }
            _ => vec![],
        }
    }
}

/// How many events `stream` holds.
async fn count<S: ProjectionStore>(store: &S, stream: &str) -> usize {
    let stream = eventcore::StreamId::try_new(stream).unwrap();
    store.read(std::slice::from_ref(&stream)).await.unwrap()[0].events.len()
}

/// Waits until `stream` holds an event.
async fn until_written<S: ProjectionStore>(store: &S, stream: &str, status: impl Fn() -> String) {
    let category = stream.split('-').next().unwrap().to_owned();
    let mut follow = Subscription::new(store.clone())
        .filter(LogFilter::all().category(category))
        .poll_interval(Duration::from_millis(20))
        .unwrap();
    let found = tokio::time::timeout(PATIENCE, async {
        loop {
            let batch = follow.next_batch().await.unwrap();
            if batch.events.iter().flatten().any(|e| e.stream_id.as_str() == stream) {
                return;
            }
        }
    })
    .await;
    assert!(found.is_ok(), "`{stream}` was never written: {}", status());
}

/// Runs `Finishing` (older code) over `mark-fin1` until its rejection (no reaction) and its
/// timeout (a compensation) are handled, or, with `stop_on_failure`, until the runner stops
/// on the compensation, which then fails technically once (it has no retries); then a runner
/// of the newer code takes over, and is seen to have recovered.
async fn finish_then_take_over<S: ProjectionStore>(store: &S, stop_on_failure: bool) {
    let shop = Executor::new(store.clone());
    shop.execute(&Mark { instance: "fin1", key: None }).await.unwrap();
    let placed = store.log_stats(GlobalPosition::START, 0).await.unwrap().head;
    let clock = ManualClock::new();
    let fail = Arc::new(AtomicBool::new(stop_on_failure));
    let older = Finishing { newer: false, fail: Arc::clone(&fail) };
    let runner = ProcessRunner::new(Executor::new(store.clone()), older)
        .clock(clock.clone())
        .lease(Duration::from_millis(300))
        .retries(0, Duration::from_millis(1), Duration::from_millis(2))
        .batches(50, Duration::from_millis(20));
    let handle = runner.handle();
    let task = tokio::spawn(runner.run());
    // Past the event: the rejection is handled and the timer set.
    handle.wait_for(placed, PATIENCE).await.unwrap();
    clock.advance(Duration::from_secs(61));
    if stop_on_failure {
        // The compensation fails, and with no retries the runner stops, its lease given up.
        let stopped = tokio::time::timeout(PATIENCE, task).await.expect("never stopped");
        assert!(stopped.unwrap().is_err(), "{:?}", handle.status());
        assert_eq!(count(store, "comp-fin").await, 0);
    } else {
        until_written(store, "comp-fin", || format!("{:?}", handle.status())).await;
        task.abort();
    }
    let newer = Finishing { newer: true, fail };
    let runner = ProcessRunner::new(Executor::new(store.clone()), newer)
        .clock(clock.clone())
        .lease(Duration::from_millis(300))
        .batches(50, Duration::from_millis(20));
    let handle = runner.handle();
    let task = tokio::spawn(runner.run());
    // What it found as it took over is handled before any event it reads.
    shop.execute(&Mark { instance: "probe", key: None }).await.unwrap();
    until_written(store, "mark-probed", || format!("{:?}", handle.status())).await;
    task.abort();
}

/// A runner taking over does not handle again an input (a rejection, a fired timer) whose
/// reactions all ran: newer code that answers it with more reactions does not run them for
/// an input the older code finished with (they used to run at every takeover, for every
/// rejection and timeout in the manager's history).
pub async fn a_takeover_leaves_alone_the_inputs_whose_reactions_all_ran<S: ProjectionStore>(
    store: S,
) {
    finish_then_take_over(&store, false).await;
    assert_eq!(count(&store, "comp-fin").await, 1, "compensated again");
    assert_eq!(count(&store, "mark-late-rejected").await, 0, "a finished rejection answered");
    assert_eq!(count(&store, "mark-late-timeout").await, 0, "a finished timeout answered");
}

/// A runner taking over still handles an input whose reactions did not all run (the runner
/// before it stopped on the timeout's compensation), with the reactions of its own code.
pub async fn a_takeover_handles_the_inputs_whose_reactions_did_not_all_run<S: ProjectionStore>(
    store: S,
) {
    finish_then_take_over(&store, true).await;
    assert_eq!(count(&store, "comp-fin").await, 1, "the timeout was not handled once");
    assert_eq!(count(&store, "mark-late-timeout").await, 1, "the newer reaction did not run");
    assert_eq!(count(&store, "mark-late-rejected").await, 0, "a finished rejection answered");
}

/// Sets a timer on `mark-lm1`; answers the timeout with a command that is refused (arming
/// `on_refusing` once, as it does), and the rejection with a mark of `mark-lm-compensated`.
struct RefusingOnTimeout {
    on_refusing: Arc<dyn Fn() + Send + Sync>,
}

impl<B: eventcore::Backend> eventcore::subscription::ProcessManager<B> for RefusingOnTimeout {
    type State = ();
    fn name(&self) -> &str {
        "refusing_on_timeout"
    }
    fn filter(&self) -> LogFilter {
        LogFilter::all().category("mark")
    }
    fn instance(&self, event: &RecordedEvent) -> Option<String> {
        (event.stream_id.as_str() == "mark-lm1").then(|| "lm1".to_owned())
    }
    fn apply(&self, _: &mut (), _: &eventcore::subscription::Happened) {}
    fn react(
        &self,
        _: &(),
        happened: &eventcore::subscription::Happened,
    ) -> Vec<eventcore::subscription::Reaction<B>> {
        use eventcore::subscription::{Happened, Reaction};
        match happened {
            Happened::Event(_) => vec![Reaction::schedule("t", Duration::from_secs(60))],
            Happened::TimedOut { .. } => {
                (self.on_refusing)();
                vec![Reaction::command(Refuse)]
            }
            Happened::Rejected { .. } => {
                vec![Reaction::command(Mark { instance: "lm-compensated", key: None })]
            }
            _ => vec![],
        }
    }
}

/// A fired timer's last reaction is rejected, and the append of that rejection, which also
/// marks the timeout handled, commits with its reply lost. The retry finds the timeout marked
/// handled: the rejection it recorded must still be handed to the instance (and compensated
/// once), not dropped with the input that caused it.
pub async fn a_rejection_recorded_with_a_mark_whose_reply_was_lost_is_still_compensated<
    S: ProjectionStore,
>(
    store: S,
) {
    let faulty = eventcore::testing::Faulty::new(store.clone());
    Executor::new(store.clone()).execute(&Mark { instance: "lm1", key: None }).await.unwrap();
    let placed = store.log_stats(GlobalPosition::START, 0).await.unwrap().head;
    let armed = Arc::new(AtomicBool::new(true));
    let on_refusing: Arc<dyn Fn() + Send + Sync> = {
        let (faulty, armed) = (faulty.clone(), Arc::clone(&armed));
        // The refused command appends nothing: the next append is the rejection's (and mark's).
        Arc::new(move || {
            if armed.swap(false, Ordering::SeqCst) {
                faulty.lose_next_append_replies(1);
            }
        })
    };
    let clock = ManualClock::new();
    let runner =
        ProcessRunner::new(Executor::new(faulty.clone()), RefusingOnTimeout { on_refusing })
            .clock(clock.clone())
            .retries(5, Duration::from_millis(1), Duration::from_millis(2))
            .batches(50, Duration::from_millis(20));
    let handle = runner.handle();
    let task = tokio::spawn(runner.run());
    handle.wait_for(placed, PATIENCE).await.unwrap();
    clock.advance(Duration::from_secs(61));
    until_written(&store, "mark-lm-compensated", || format!("{:?}", handle.status())).await;
    let status = handle.status();
    task.abort();
    assert!(!armed.load(Ordering::SeqCst), "the timeout was never answered");
    assert_ne!(status.state, RunnerState::Stopped, "{status:?}");
    assert_eq!(count(&store, "mark-lm-compensated").await, 1, "compensated twice");
}

/// Follows `mark-soon-*` and `mark-late-*` (an instance each), which set a timer due in a
/// minute and in an hour, and `mark-probe-*`, which set none. A timeout is answered with a
/// mark of `mark-reminded`.
struct Reminding;

impl<B: eventcore::Backend> eventcore::subscription::ProcessManager<B> for Reminding {
    type State = ();
    fn name(&self) -> &str {
        "reminding"
    }
    fn filter(&self) -> LogFilter {
        LogFilter::all().category("mark")
    }
    fn instance(&self, event: &RecordedEvent) -> Option<String> {
        let stream = event.stream_id.as_str().strip_prefix("mark-")?;
        ["soon-", "late-", "probe-"]
            .iter()
            .any(|p| stream.starts_with(p))
            .then(|| stream.to_owned())
    }
    fn apply(&self, _: &mut (), _: &eventcore::subscription::Happened) {}
    fn react(
        &self,
        _: &(),
        happened: &eventcore::subscription::Happened,
    ) -> Vec<eventcore::subscription::Reaction<B>> {
        use eventcore::subscription::{Happened, Reaction};
        match happened {
            Happened::Event(e) if e.stream_id.as_str().starts_with("mark-soon-") => {
                vec![Reaction::schedule("t", Duration::from_secs(60))]
            }
            Happened::Event(e) if e.stream_id.as_str().starts_with("mark-late-") => {
                vec![Reaction::schedule("t", Duration::from_secs(3_600))]
            }
            Happened::TimedOut { .. } => {
                vec![Reaction::command(Mark { instance: "reminded", key: None })]
            }
            _ => vec![],
        }
    }
}

/// Aborts a runner's task and waits until it is gone: an aborted task stops only where it
/// next waits, and on the in-memory store a runner may handle more before it does.
async fn stop(task: tokio::task::JoinHandle<Result<std::convert::Infallible, ProjectionError>>) {
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
}

/// A runner of `Reminding` over `executor`'s store, on `clock`, with a short lease (an
/// aborted one's successor waits it out).
fn reminding<B: ProjectionStore>(
    executor: Executor<B>,
    clock: &ManualClock,
) -> ProcessRunner<B, Reminding> {
    ProcessRunner::new(executor, Reminding)
        .clock(clock.clone())
        .lease(Duration::from_millis(300))
        .batches(50, Duration::from_millis(20))
}

/// Marks `mark-<instance>` and returns the log's head after it.
async fn mark<S: ProjectionStore>(store: &S, instance: String) -> GlobalPosition {
    let instance: &'static str = Box::leak(instance.into_boxed_str());
    Executor::new(store.clone()).execute(&Mark { instance, key: None }).await.unwrap();
    store.log_stats(GlobalPosition::START, 0).await.unwrap().head
}

/// Waits until `stream` holds `n` events.
async fn until_holds<S: ProjectionStore>(
    store: &S,
    stream: &str,
    n: usize,
    status: impl Fn() -> String,
) {
    let mut follow = Subscription::new(store.clone())
        .filter(LogFilter::all().category("mark"))
        .poll_interval(Duration::from_millis(20))
        .unwrap();
    let mut seen = 0;
    let reached = tokio::time::timeout(PATIENCE, async {
        while seen < n {
            let batch = follow.next_batch().await.unwrap();
            seen +=
                batch.events.iter().flatten().filter(|e| e.stream_id.as_str() == stream).count();
        }
    })
    .await;
    assert!(reached.is_ok(), "`{stream}` holds {seen} events, never {n}: {}", status());
    assert_eq!(count(store, stream).await, n, "`{stream}`: {}", status());
}

/// Sets 20 timers due in a minute and 20 due in an hour, lets the first 20 fire, then has a
/// second runner take over (which reads every record, and keeps what it found). Returns the
/// clock, at a minute past the start.
async fn twenty_fired_twenty_set<S: ProjectionStore>(store: &S) -> ManualClock {
    let clock = ManualClock::new();
    for i in 0..20 {
        mark(store, format!("soon-{i}")).await;
    }
    let mut placed = GlobalPosition::START;
    for i in 0..20 {
        placed = mark(store, format!("late-{i}")).await;
    }
    let first = reminding(Executor::new(store.clone()), &clock);
    let handle = first.handle();
    let task = tokio::spawn(first.run());
    handle.wait_for(placed, PATIENCE).await.unwrap();
    clock.advance(Duration::from_secs(61));
    until_holds(store, "mark-reminded", 20, || format!("{:?}", handle.status())).await;
    // Gone before the probe: only the next runner handles it, after it took over.
    stop(task).await;
    let second = reminding(Executor::new(store.clone()), &clock);
    let handle = second.handle();
    let task = tokio::spawn(second.run());
    // Past what it found, and kept, as it took over.
    let probed = mark(store, "probe-a".to_owned()).await;
    handle.wait_for(probed, PATIENCE).await.unwrap();
    let kept = store.snapshot("process:reminding").await.unwrap();
    assert!(kept.is_some(), "the takeover kept nothing: {:?}", handle.status());
    stop(task).await;
    clock
}

/// A runner taking over reads the records of the manager's instances written since the last
/// takeover, not every record in the manager's history (40 instances, 120 records here; the
/// takeover used to read them all, every time), and still fires the timers set before it:
/// the last takeover kept them.
pub async fn a_takeover_reads_only_the_records_written_since_the_last_one<S: ProjectionStore>(
    store: S,
) {
    let clock = twenty_fired_twenty_set(&store).await;
    takes_over_reading_little(&store, &clock, "probe-b").await;
}

/// A runner of `Reminding` takes over, with 20 of its timers due in an hour set before the
/// last takeover snapshot: it reads a few entries of the log (the records written after the
/// snapshot, the event the snapshot names as the last one it read, and the probe `probe`),
/// and still fires those 20 timers, which only the snapshot told it about.
async fn takes_over_reading_little<S: ProjectionStore>(
    store: &S,
    clock: &ManualClock,
    probe: &str,
) {
    let faulty = eventcore::testing::Faulty::new(store.clone());
    let runner = reminding(Executor::new(faulty.clone()), clock);
    let handle = runner.handle();
    let task = tokio::spawn(runner.run());
    let probed = mark(store, probe.to_owned()).await;
    handle.wait_for(probed, PATIENCE).await.unwrap();
    let read = faulty.log_entries_read();
    assert!(read <= 10, "a takeover read {read} entries of the log");
    clock.advance(Duration::from_secs(3_600));
    until_holds(store, "mark-reminded", 40, || format!("{:?}", handle.status())).await;
    task.abort();
}

/// A takeover does not trust what the last one kept when the log no longer holds the record
/// it names as the last one read (a store restored from another copy): it reads every record,
/// and finds the timers the kept one does not list.
pub async fn a_takeover_reads_everything_when_the_log_is_not_the_one_kept<S: ProjectionStore>(
    store: S,
) {
    let clock = twenty_fired_twenty_set(&store).await;
    let name = "process:reminding";
    let mut kept = store.snapshot(name).await.unwrap().expect("the takeover kept nothing");
    // No timer set, and a last record the log does not hold.
    kept.state =
        eventcore::Payload::to_json(&serde_json::json!({"timers": [], "unhandled": []})).unwrap();
    kept.last_event = kept.last_event.map(|(at, _)| (at, eventcore::EventId::new()));
    let checkpoint = store.checkpoint(name).await.unwrap().unwrap();
    let lease = loop {
        // The aborted runner's lease runs out within 300 ms.
        if let Some(lease) = store.claim(name, uuid::Uuid::now_v7(), PATIENCE).await.unwrap() {
            break lease;
        }
        tokio::task::yield_now().await;
    };
    let tx = store.begin(&lease).await.unwrap();
    assert!(store.commit(tx, &lease, checkpoint, None, Some(kept)).await.unwrap());
    store.release(&lease).await.unwrap();
    let third = reminding(Executor::new(store.clone()), &clock);
    let handle = third.handle();
    let task = tokio::spawn(third.run());
    let probed = mark(&store, "probe-b".to_owned()).await;
    handle.wait_for(probed, PATIENCE).await.unwrap();
    clock.advance(Duration::from_secs(3_600));
    until_holds(&store, "mark-reminded", 40, || format!("{:?}", handle.status())).await;
    task.abort();
}

/// An input a takeover found unhandled, and kept as such, then failed to handle, is handled
/// by the next takeover, which reads only what was written after the kept one: the kept
/// recovery carries it.
pub async fn an_input_a_takeover_left_unhandled_is_handled_by_the_next<S: ProjectionStore>(
    store: S,
) {
    // The first runner stops on the compensation; the second (newer) takes over.
    let shop = Executor::new(store.clone());
    shop.execute(&Mark { instance: "fin1", key: None }).await.unwrap();
    let placed = store.log_stats(GlobalPosition::START, 0).await.unwrap().head;
    let clock = ManualClock::new();
    let fail = Arc::new(AtomicBool::new(true));
    let runner = |newer: bool| {
        ProcessRunner::new(
            Executor::new(store.clone()),
            Finishing { newer, fail: Arc::clone(&fail) },
        )
        .clock(clock.clone())
        .lease(Duration::from_millis(300))
        .retries(0, Duration::from_millis(1), Duration::from_millis(2))
        .batches(50, Duration::from_millis(20))
    };
    let first = runner(false);
    let handle = first.handle();
    let task = tokio::spawn(first.run());
    handle.wait_for(placed, PATIENCE).await.unwrap();
    clock.advance(Duration::from_secs(61));
    let stopped = tokio::time::timeout(PATIENCE, task).await.expect("never stopped");
    assert!(stopped.unwrap().is_err(), "{:?}", handle.status());
    // The second takes over, keeps the timeout as unhandled, fails on it again and stops.
    fail.store(true, Ordering::SeqCst);
    let second = runner(false);
    let handle = second.handle();
    let stopped = tokio::time::timeout(PATIENCE, second.run()).await.expect("never stopped");
    assert!(stopped.is_err(), "{:?}", handle.status());
    let kept = store.snapshot("process:finishing").await.unwrap().expect("nothing kept");
    assert!(kept.state.as_str().contains("fin1"), "kept: {}", kept.state.as_str());
    assert_eq!(count(&store, "comp-fin").await, 0);
    // The third handles it, with its own reactions (the compensation fails once only).
    assert!(!fail.load(Ordering::SeqCst), "the second runner did not try the compensation");
    let third = runner(true);
    let handle = third.handle();
    let task = tokio::spawn(third.run());
    until_written(&store, "mark-late-timeout", || format!("{:?}", handle.status())).await;
    task.abort();
    assert_eq!(count(&store, "comp-fin").await, 1, "the timeout was not handled once");
}

/// A runner that stores its takeover snapshot as it runs (here at every step) leaves the next
/// takeover only what was written since the last one: 40 instances set timers and 20 fire
/// under a runner that took over an empty log, and its successor reads a few entries, not
/// every record, and still fires the other 20.
pub async fn a_running_runner_keeps_the_takeover_snapshot_up_to_date<S: ProjectionStore>(store: S) {
    let clock = ManualClock::new();
    let first =
        reminding(Executor::new(store.clone()), &clock).takeover_snapshot_every(Duration::ZERO);
    let handle = first.handle();
    let task = tokio::spawn(first.run());
    let mut placed = GlobalPosition::START;
    for i in 0..20 {
        mark(&store, format!("soon-{i}")).await;
        placed = mark(&store, format!("late-{i}")).await;
    }
    handle.wait_for(placed, PATIENCE).await.unwrap();
    clock.advance(Duration::from_secs(61));
    until_holds(&store, "mark-reminded", 20, || format!("{:?}", handle.status())).await;
    // The step that handles the second probe comes after one that stored a snapshot covering
    // what the runner wrote for the first.
    for probe in ["probe-a", "probe-b"] {
        let probed = mark(&store, probe.to_owned()).await;
        handle.wait_for(probed, PATIENCE).await.unwrap();
    }
    stop(task).await;
    takes_over_reading_little(&store, &clock, "probe-c").await;
}

/// A takeover whose reads outlast its lease (a long history of records to read, a slow store)
/// renews the lease between pages: a standby does not take over from a runner still reading,
/// nor is what it read refused as it keeps it. The active runner's refresh of the takeover
/// snapshot reads the same way.
pub async fn a_takeover_reading_for_longer_than_its_lease_keeps_it<S: ProjectionStore>(store: S) {
    use eventcore::backend::AppendRequest;
    use eventcore::{CorrelationId, EventMetadata, NewEvent, Payload, StreamId, StreamVersion};
    // 2,500 events of one instance, and as many records of it: three pages of reads.
    let stream = StreamId::try_new("mark-probe-bulk").unwrap();
    let mut head = GlobalPosition::START;
    for i in 0..25u64 {
        let events = (0..100)
            .map(|_| {
                let meta = EventMetadata::new(CorrelationId::new());
                NewEvent::new("Marked", 1, Payload::to_json(&Marked).unwrap(), meta)
            })
            .collect();
        let request = AppendRequest::new()
            .expect(stream.clone(), StreamVersion::new(i * 100))
            .write(stream.clone(), events);
        head = store.append(request).await.unwrap().positions.unwrap().1;
    }
    let clock = ManualClock::new();
    // A lease its batches do not outlast (a checkpoint refused would end the term, and the
    // next term's takeover would keep what it read).
    let first = reminding(Executor::new(store.clone()), &clock)
        .lease(Duration::from_secs(2))
        .batches(100, Duration::from_millis(20));
    let handle = first.handle();
    let task = tokio::spawn(first.run());
    handle.wait_for(head, PATIENCE).await.unwrap();
    stop(task).await;
    let name = "process:reminding";
    // The first found no record as it took over: the next takeover reads them all.
    assert!(store.snapshot(name).await.unwrap().is_none());
    // Handled by the next runner once it has read them, and kept what it read.
    let probe = mark(&store, "probe-after".to_owned()).await;
    let lease = Duration::from_secs(1);
    let faulty = eventcore::testing::Faulty::new(store.clone());
    // Each page 500 ms: the three outlast the lease, one does not.
    faulty.delay_log_reads(Duration::from_millis(500));
    let second = ProcessRunner::new(Executor::new(faulty.clone()), Reminding)
        .clock(clock.clone())
        .lease(lease);
    let reader = second.handle();
    let task = tokio::spawn(second.run());
    // It waits as a standby until the aborted runner's lease runs out (within 2 s), then
    // takes over; only then a standby of its own starts, trying for the lease every 250 ms.
    let holds =
        |s: &ProjectionStatus| matches!(s.state, RunnerState::CatchingUp | RunnerState::Live);
    reader.wait_until(holds, PATIENCE).await.unwrap();
    let third = ProcessRunner::new(Executor::new(store.clone()), Reminding)
        .clock(clock.clone())
        .lease(lease);
    let standby = third.handle();
    let standing = tokio::spawn(third.run());
    let took_over = tokio::select! {
        read = reader.wait_for(probe, PATIENCE) => {
            read.unwrap();
            false
        }
        taken = standby.wait_until(holds, PATIENCE) => {
            taken.unwrap();
            true
        }
    };
    task.abort();
    standing.abort();
    assert!(!took_over, "the lease ran out under a takeover still reading");
    assert!(store.snapshot(name).await.unwrap().is_some(), "the takeover kept nothing");
}

/// `wait_for` on the handle of a process runner that stands by follows the checkpoint the
/// active runner stores (under `process:<name>`): its own position never moves.
pub async fn wait_for_on_a_standby_process_runner_follows_the_active_one<S: ProjectionStore>(
    store: S,
) {
    let first = super::projection::append_n(&store, "quiet-1", 0, 1).await;
    let quiet = || QuietManager("quiet", || LogFilter::all().category("quiet"));
    let active = ProcessRunner::new(Executor::new(store.clone()), quiet());
    let active_handle = active.handle();
    let active = tokio::spawn(active.run());
    active_handle.wait_for(first, PATIENCE).await.unwrap();
    let standby = ProcessRunner::new(Executor::new(store.clone()), quiet());
    let standby_handle = standby.handle();
    let standby = tokio::spawn(standby.run());
    standby_handle.wait_until(|s| s.state == RunnerState::Standby, PATIENCE).await.unwrap();

    let last = super::projection::append_n(&store, "quiet-1", 1, 1).await;
    let waited = standby_handle.wait_for(last, Duration::from_secs(10)).await;
    active.abort();
    standby.abort();
    assert!(waited.is_ok(), "{waited:?}");
}

/// A process runner ended by `run_until`'s stop gives its lease up: a standby takes over at
/// once, not after the 30 s lease runs out. The ended runner says `Finished`.
pub async fn a_process_runner_run_until_stopped_hands_over_at_once<S: ProjectionStore>(store: S) {
    let quiet = || QuietManager("quietuntil", || LogFilter::all().category("quietuntil"));
    super::projection::hands_over_when_stopped(&store, "quietuntil-1", 1, |stop| {
        let runner = ProcessRunner::new(Executor::new(store.clone()), quiet());
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

/// A takeover finds ten fired timers whose reactions did not run, and handles them on a slow
/// store (each read of an instance takes half the lease): five leases in all. It renews its
/// lease between two of them, as between two events of a batch, so the standby never takes
/// over meanwhile (it did: the lease ran out under the runner still at work, the standby took
/// it, and both handled the same inputs at once, until the first found its lease gone).
pub async fn a_takeover_handling_inputs_for_longer_than_its_lease_keeps_it<S: ProjectionStore>(
    store: S,
) {
    use eventcore::backend::AppendRequest;
    use eventcore::testing::Faulty;
    // Follows nothing and answers every input with nothing: the takeover only marks the
    // inputs it finds handled.
    let marking = || QuietManager("marking", || LogFilter::all().category("nothing"));
    for n in 0..10 {
        let stream = eventcore::StreamId::try_new(format!("pm_marking-i{n}")).unwrap();
        let fired = eventcore::NewEvent::new(
            "eventcore.ProcessRecord",
            1,
            eventcore::Payload::to_json(&serde_json::json!({ "Fired": { "timer": "t" } })).unwrap(),
            eventcore::EventMetadata::new(eventcore::CorrelationId::new()),
        );
        let request = AppendRequest::new()
            .expect(stream.clone(), eventcore::StreamVersion::EMPTY)
            .write(stream, vec![fired]);
        store.append(request).await.unwrap();
    }
    let lease = Duration::from_millis(300);
    let slow = Faulty::new(store.clone());
    slow.delay_reads(lease / 2);
    let first = ProcessRunner::new(Executor::new(slow), marking())
        .lease(lease)
        .batches(50, Duration::from_millis(20));
    let first_handle = first.handle();
    let first = tokio::spawn(first.run());
    first_handle.wait_until(|s| s.state == RunnerState::CatchingUp, PATIENCE).await.unwrap();
    let standby = ProcessRunner::new(Executor::new(store.clone()), marking())
        .lease(lease)
        .batches(50, Duration::from_millis(20));
    let standby_handle = standby.handle();
    let standby = tokio::spawn(standby.run());
    let took_over = {
        let handle = standby_handle.clone();
        tokio::spawn(async move {
            let active = |s: &ProjectionStatus| {
                matches!(s.state, RunnerState::CatchingUp | RunnerState::Live)
            };
            handle.wait_until(active, PATIENCE).await.is_ok()
        })
    };
    // Live once it handled what it found; a standby had it lost its lease meanwhile.
    let done = |s: &ProjectionStatus| matches!(s.state, RunnerState::Live | RunnerState::Standby);
    let status = first_handle.wait_until(done, PATIENCE).await;
    let took = took_over.is_finished();
    let standby_status = standby_handle.status();
    first.abort();
    standby.abort();
    took_over.abort();
    let status = status.unwrap();
    assert!(!took, "the standby took over: {standby_status:?}, the first: {status:?}");
    assert_eq!(status.state, RunnerState::Live, "{status:?}");
    for n in 0..10 {
        assert_eq!(count(&store, &format!("pm_marking-i{n}")).await, 2, "i{n} not marked");
    }
}

/// Three runners of the saga at once, each on a lease of the shortest length (10 ms, which
/// runs out in the middle of nearly every input), each on a store of its own fault plan that
/// loses the reply of some of its appends, each aborted and started again round after round
/// while orders flow: runners that each believe they hold the lease race on the same inputs,
/// timers and rejections. Every command still runs once and every order ends in its one
/// final state (the instances' stream versions decide every race).
pub async fn overlapping_runners_on_short_leases_run_every_command_once<S: ProjectionStore>(
    store: S,
) {
    use eventcore::testing::Faulty;
    let (orders, placing) = orders_flowing(&store, "c", 16, 2).await;
    let clock = ManualClock::new();
    let racing = |seat: u64| {
        let (store, clock) = (store.clone(), clock.clone());
        tokio::spawn(async move {
            for round in 0..8u64 {
                let faulty = Faulty::new(store.clone());
                faulty.lose_next_append_replies(usize::try_from((round + seat) % 3).unwrap());
                let runner = ProcessRunner::new(Executor::new(faulty), FulfilmentSaga)
                    .clock(clock.clone())
                    .lease(eventcore::subscription::MIN_LEASE)
                    .retries(50, Duration::from_millis(1), Duration::from_millis(20))
                    .batches(2, Duration::from_millis(5));
                let handle = runner.handle();
                let task = tokio::spawn(runner.run());
                let before = handle.status().position;
                let _ =
                    handle.wait_until(|s| s.position > before, Duration::from_millis(300)).await;
                task.abort();
                if let Ok(Ok(Err(e))) = tokio::time::timeout(PATIENCE, task).await {
                    panic!("runner {seat} stopped: {e:?}");
                }
            }
        })
    };
    let seats: Vec<_> = (0..3).map(racing).collect();
    for seat in seats {
        seat.await.unwrap();
    }
    placing.await.unwrap();
    // A last runner finishes the work, with the unpaid orders timing out.
    let runner = ProcessRunner::new(Executor::new(store.clone()), FulfilmentSaga)
        .clock(clock.clone())
        .batches(50, Duration::from_millis(10));
    let task = tokio::spawn(runner.run());
    settle(&store, &clock, &orders).await;
    task.abort();

    assert_every_order_ended(&store, &orders).await;
}
