//! Executor behaviour that is backend-independent: retry policy limits, timeouts, tracing.

#[path = "../examples/banking/domain.rs"]
mod banking;
#[path = "support/wait.rs"]
mod wait;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use banking::*;
use eventcore::backend::{
    AppendRequest, Committed, Conflict, IdempotencyKey, LogFilter, LogPage, LogWatch, StoreError,
    StreamEvents, StreamHold, StreamQueue,
};
use eventcore::prelude::*;
use eventcore::testing::Faulty;
use eventcore::{GlobalPosition, StreamCache, StreamVersion};

/// A backend that loses races on purpose: every append reports a conflict (on the first
/// expected stream), or, after [`Conflicting::once_on`], only the next one does (on the given
/// stream) and later appends go through.
#[derive(Clone)]
struct Conflicting {
    inner: Memory,
    plan: Arc<Mutex<Plan>>,
    appends: Arc<Mutex<u32>>,
}

enum Plan {
    /// Every append conflicts, on its first expected stream.
    Always,
    /// The next append conflicts on this stream; later ones go through.
    Once(StreamId),
    /// Appends go through.
    Pass,
}

impl Conflicting {
    fn always() -> Self {
        Self {
            inner: Memory::new(),
            plan: Arc::new(Mutex::new(Plan::Always)),
            appends: Arc::default(),
        }
    }

    /// Lets appends through until [`once_on`](Self::once_on).
    fn passing() -> Self {
        Self { plan: Arc::new(Mutex::new(Plan::Pass)), ..Self::always() }
    }

    fn once_on(&self, stream: StreamId) {
        *self.plan.lock().unwrap() = Plan::Once(stream);
    }
}

impl Backend for Conflicting {
    async fn read(&self, streams: &[StreamId]) -> Result<Vec<StreamEvents>, StoreError> {
        self.inner.read(streams).await
    }

    async fn append(&self, request: AppendRequest) -> Result<Committed, StoreError> {
        *self.appends.lock().unwrap() += 1;
        let conflict_on = {
            let mut plan = self.plan.lock().unwrap();
            match std::mem::replace(&mut *plan, Plan::Pass) {
                Plan::Always => {
                    *plan = Plan::Always;
                    Some(request.expected[0].0.clone())
                }
                Plan::Once(stream) => Some(stream),
                Plan::Pass => None,
            }
        };
        let Some(stream) = conflict_on else { return self.inner.append(request).await };
        let expected = request.expected.iter().find(|(s, _)| *s == stream).unwrap().1;
        Err(StoreError::Conflict(Conflict {
            stream,
            expected,
            actual: StreamVersion::new(expected.get() + 1),
        }))
    }

    async fn read_log(
        &self,
        after: GlobalPosition,
        filter: &LogFilter,
        limit: usize,
    ) -> Result<LogPage, StoreError> {
        self.inner.read_log(after, filter, limit).await
    }

    fn watch_log(&self) -> LogWatch {
        self.inner.watch_log()
    }

    async fn find_committed(&self, key: &IdempotencyKey) -> Result<Option<Committed>, StoreError> {
        self.inner.find_committed(key).await
    }

    fn stream_queue(&self) -> &StreamQueue {
        self.inner.stream_queue()
    }

    async fn hold(&self, streams: &[StreamId]) -> Result<Option<StreamHold>, StoreError> {
        self.inner.hold(streams).await
    }
}

fn alice() -> AccountId {
    AccountId::try_new("alice").unwrap()
}

#[tokio::test]
async fn conflicts_that_outlast_the_policy_are_reported_with_the_attempt_count() {
    let backend = Conflicting::always();
    let policy = RetryPolicy::builder()
        .max_attempts(4)
        .base_delay(Duration::from_micros(10))
        .max_delay(Duration::from_micros(50))
        .build()
        .unwrap();
    let executor = Executor::new(backend.clone()).with_retry(policy);
    let err =
        executor.execute(&OpenAccount { account: alice(), owner: "a".into() }).await.unwrap_err();
    match err {
        ExecuteError::Conflict { attempts, last } => {
            assert_eq!(attempts, 4);
            assert_eq!(last.stream, alice().stream_id().clone());
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(*backend.appends.lock().unwrap(), 4);
}

#[tokio::test]
async fn no_retry_policy_means_one_attempt() {
    let backend = Conflicting::always();
    let executor = Executor::new(backend.clone()).with_retry(RetryPolicy::none());
    let err =
        executor.execute(&OpenAccount { account: alice(), owner: "a".into() }).await.unwrap_err();
    assert!(matches!(err, ExecuteError::Conflict { attempts: 1, .. }));
    assert_eq!(*backend.appends.lock().unwrap(), 1);
}

#[tokio::test]
async fn an_execution_that_outlasts_the_timeout_fails_with_a_typed_error() {
    let store = Faulty::new(Memory::new());
    // Two parties are expected at the append gate but only one arrives: the append never ends.
    store.gate_next_appends(2);
    let executor = Executor::new(store.clone()).with_timeout(Duration::from_millis(50));
    let err =
        executor.execute(&OpenAccount { account: alice(), owner: "a".into() }).await.unwrap_err();
    assert!(matches!(err, ExecuteError::Timeout(d) if d == Duration::from_millis(50)), "{err:?}");
    assert!(store.inner().is_empty());
}

/// An append that never answered (the timeout dropped it) may have committed: the cache
/// forgets its streams, as after an append that failed.
#[tokio::test]
async fn a_cache_forgets_the_streams_of_an_append_the_timeout_cut_short() {
    let store = Faulty::new(Memory::new());
    let cache = StreamCache::new(1_000);
    let executor = Executor::new(store.clone())
        .with_cache(cache.clone())
        .with_timeout(Duration::from_millis(50));
    executor.execute(&OpenAccount { account: alice(), owner: "a".into() }).await.unwrap();
    assert!(cache.get(alice().stream_id()).is_some());
    // Two parties are expected at the append gate but only one arrives: the append never ends.
    store.gate_next_appends(2);
    let deposit = Deposit { account: alice(), amount: Money::from_cents(5) };
    let err = executor.execute(&deposit).await.unwrap_err();
    assert!(matches!(err, ExecuteError::Timeout(_)), "{err:?}");
    assert!(cache.get(alice().stream_id()).is_none(), "the cache kept a stream of the append");
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `body` on a current-thread runtime under a subscriber that writes events at DEBUG and
/// above, and the span events `spans`, into a buffer; answers what was written. `body` gets
/// the buffer (to clear what came before the part a test looks at).
fn logged<F: std::future::Future<Output = ()>>(
    spans: tracing_subscriber::fmt::format::FmtSpan,
    body: impl FnOnce(Captured) -> F,
) -> String {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_span_events(spans)
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        rt.block_on(body(captured.clone()));
    });
    String::from_utf8(captured.0.lock().unwrap().clone()).unwrap()
}

#[test]
fn each_execution_is_traced_with_command_streams_and_attempts() {
    let log = logged(tracing_subscriber::fmt::format::FmtSpan::CLOSE, |captured| async move {
        let store = Faulty::new(Memory::new());
        let executor = Executor::new(store.clone());
        // tracing caches each callsite's interest for the whole process, computed on the
        // thread that reaches it first: a test running beside this one with no subscriber
        // may have cached "never" for the executor's span. So reach the callsites from
        // here once (a retried execution, as below), ask every callsite again under this
        // subscriber, and keep only what comes after.
        let warm = AccountId::try_new("warm-up").unwrap();
        store.fail_next_reads(1);
        executor.execute(&OpenAccount { account: warm, owner: "w".into() }).await.unwrap();
        tracing::callsite::rebuild_interest_cache();
        captured.0.lock().unwrap().clear();
        executor.execute(&OpenAccount { account: alice(), owner: "a".into() }).await.unwrap();
        store.fail_next_reads(1);
        executor
            .execute(&Deposit { account: alice(), amount: Money::from_cents(5) })
            .await
            .unwrap();
    });
    let closes: Vec<&str> =
        log.lines().filter(|l| l.contains("eventcore.execute") && l.contains("close")).collect();
    assert_eq!(closes.len(), 2, "{log}");
    assert!(closes[0].contains("command=") && closes[0].contains("OpenAccount"), "{log}");
    assert!(closes[0].contains("account-alice"), "streams are recorded: {log}");
    assert!(closes[0].contains("attempts=1"), "{log}");
    assert!(closes[1].contains("Deposit") && closes[1].contains("attempts=2"), "{log}");
    assert!(log.contains("transient store failure; retrying"), "{log}");
}

/// With a stream cache, a conflict on a stream the cache served means the cache was behind:
/// the executor decides again at once on fresh reads, within the same attempt. A conflict on a
/// stream that was read fresh is contention, and goes to the retry policy like any other.
#[tokio::test]
async fn with_a_cache_only_conflicts_on_cached_streams_skip_the_retry_policy() {
    for (conflict_on_cached, attempts) in [(true, 1), (false, 2)] {
        let backend = Conflicting::passing();
        let bank = Executor::new(backend.clone()).with_cache(StreamCache::new(1_000)).with_retry(
            RetryPolicy::builder().base_delay(Duration::from_micros(10)).build().unwrap(),
        );
        let bob = AccountId::try_new("bob").unwrap();
        for account in [alice(), bob.clone()] {
            bank.execute(&OpenAccount { account: account.clone(), owner: "o".into() })
                .await
                .unwrap();
            bank.execute(&Deposit { account, amount: Money::from_cents(100) }).await.unwrap();
        }
        // Alice's account comes from the cache; the transfer's own stream is read fresh.
        let id = TransferId::try_new("t").unwrap();
        let on =
            if conflict_on_cached { alice().stream_id().clone() } else { id.stream_id().clone() };
        backend.once_on(on);
        let before = *backend.appends.lock().unwrap();
        let t = Transfer::new(id, alice(), bob, Money::from_cents(10)).unwrap();
        let done = bank.execute(&t).await.unwrap();
        assert_eq!(done.attempts, attempts, "conflict on the cached stream: {conflict_on_cached}");
        assert_eq!(*backend.appends.lock().unwrap() - before, 2);
        let balance = balance(&backend.inner, &alice()).await.unwrap().balance;
        assert_eq!(balance, Money::from_cents(90));
    }
}

/// Two event types stored under one name, as two crates might declare them.
mod shop {
    use eventcore::prelude::*;
    #[derive(Debug, serde::Serialize, serde::Deserialize, Event)]
    #[event(name = "ClashingEvent")]
    pub enum ClashingEvent {
        Placed,
    }
    slot!(pub Orders: ClashingEvent);
}

mod billing {
    use eventcore::prelude::*;
    #[derive(Debug, serde::Serialize, serde::Deserialize, Event)]
    #[event(name = "ClashingEvent")]
    pub enum ClashingEvent {
        Billed { cents: u64 },
    }
    slot!(pub Invoices: ClashingEvent);
}

#[derive(Default)]
struct Ignored;

impl Fold<shop::Orders> for Ignored {
    fn fold(&mut self, _: &StreamId, _: &shop::ClashingEvent) {}
}

impl Fold<billing::Invoices> for Ignored {
    fn fold(&mut self, _: &StreamId, _: &billing::ClashingEvent) {}
}

#[derive(Command)]
#[command(state = Ignored, error = BankError)]
struct PlaceOrder {
    #[slot(shop::Orders)]
    order: StreamId,
}

impl Handle for PlaceOrder {
    fn handle(&self, _: &Ignored, mut decision: Decision<Self::Streams>) -> Handled<Self> {
        decision.emit(shop::Orders, shop::ClashingEvent::Placed);
        Ok(decision)
    }
}

#[derive(Command)]
#[command(state = Ignored, error = BankError)]
struct Bill {
    #[slot(billing::Invoices)]
    invoice: StreamId,
}

impl Handle for Bill {
    fn handle(&self, _: &Ignored, mut decision: Decision<Self::Streams>) -> Handled<Self> {
        decision.emit(billing::Invoices, billing::ClashingEvent::Billed { cents: 5 });
        Ok(decision)
    }
}

/// A command refused for an event-type name clash shows in its trace as any other execution
/// does: its span, with the refusal logged at `error` inside it (it ran none before).
#[test]
fn a_command_refused_for_a_name_clash_is_traced() {
    let log = logged(tracing_subscriber::fmt::format::FmtSpan::CLOSE, |captured| async move {
        let executor = Executor::new(Memory::new());
        executor
            .execute(&PlaceOrder { order: StreamId::try_new("order-traced").unwrap() })
            .await
            .unwrap();
        let invoice = StreamId::try_new("invoice-traced").unwrap();
        // As above: reach the callsites once, then ask them again under this subscriber.
        let _ = executor.execute(&Bill { invoice: invoice.clone() }).await;
        tracing::callsite::rebuild_interest_cache();
        captured.0.lock().unwrap().clear();
        let err = executor.execute(&Bill { invoice }).await.unwrap_err();
        assert!(matches!(err, ExecuteError::EventTypeClash(_)), "{err:?}");
    });
    let refusal =
        log.lines().find(|l| l.contains("command refused")).unwrap_or_else(|| panic!("{log}"));
    assert!(refusal.contains("ERROR") && refusal.contains("eventcore.execute"), "{log}");
    assert!(refusal.contains("billing::ClashingEvent"), "{log}");
    let closes = log.lines().filter(|l| l.contains("eventcore.execute") && l.contains("close"));
    assert!(closes.into_iter().any(|l| l.contains("Bill")), "{log}");
}

/// The second of two event types stored under one name is refused, naming both Rust types,
/// the first time a command using it runs; nothing is written for it, and the first type's
/// commands keep working.
#[tokio::test]
async fn two_event_types_stored_under_one_name_are_refused_naming_both() {
    let store = Memory::new();
    let executor = Executor::new(store.clone());
    let order = StreamId::try_new("order-1").unwrap();
    executor.execute(&PlaceOrder { order: order.clone() }).await.unwrap();
    let invoice = StreamId::try_new("invoice-1").unwrap();
    let err = executor.execute(&Bill { invoice: invoice.clone() }).await.unwrap_err();
    let ExecuteError::EventTypeClash(clash) = &err else { panic!("expected a clash, got {err:?}") };
    assert_eq!(clash.name, "ClashingEvent");
    assert_eq!(clash.first, "executor::shop::ClashingEvent");
    assert_eq!(clash.second, "executor::billing::ClashingEvent");
    assert!(err.to_string().contains("executor::billing::ClashingEvent"), "{err}");
    // Refused every time, not only the first.
    assert!(matches!(
        executor.execute(&Bill { invoice: invoice.clone() }).await,
        Err(ExecuteError::EventTypeClash(_))
    ));
    let read = store.read(&[invoice, order.clone()]).await.unwrap();
    assert!(read[0].events.is_empty(), "nothing was written for the refused command");
    executor.execute(&PlaceOrder { order }).await.unwrap();
}

/// An event type renamed from `LedgerLine` (its former name), and later, elsewhere, a new
/// event type given the freed name: the renamed type reads every event stored as `LedgerLine`
/// (through its upcaster), the new type's events included.
mod renamed {
    use eventcore::prelude::*;
    #[derive(Debug, serde::Serialize, serde::Deserialize, Event)]
    #[event(name = "RenamedLine", former = ["LedgerLine"])]
    pub enum RenamedLine {
        Posted { cents: u64 },
    }
    slot!(pub Lines: RenamedLine);

    /// A second type split off the same old one: sharing a former name is no clash (each
    /// reads its part of the old events and drops the rest).
    #[derive(Debug, serde::Serialize, serde::Deserialize, Event)]
    #[event(name = "SplitLine", former = ["LedgerLine"])]
    pub enum SplitLine {
        Posted { cents: u64 },
    }
    slot!(pub Splits: SplitLine);
}

mod reused {
    use eventcore::prelude::*;
    #[derive(Debug, serde::Serialize, serde::Deserialize, Event)]
    #[event(name = "LedgerLine")]
    pub enum LedgerLine {
        Posted { cents: u64 },
    }
    slot!(pub Ledger: LedgerLine);

    /// Registered before the type that lists its name as a former one (the other order).
    #[derive(Debug, serde::Serialize, serde::Deserialize, Event)]
    #[event(name = "TakenFirst")]
    pub enum TakenFirst {
        Posted { cents: u64 },
    }
    slot!(pub Taken: TakenFirst);

    #[derive(Debug, serde::Serialize, serde::Deserialize, Event)]
    #[event(name = "TakenSecond", former = ["TakenFirst"])]
    pub enum TakenSecond {
        Posted { cents: u64 },
    }
    slot!(pub Second: TakenSecond);
}

impl Fold<renamed::Lines> for Ignored {
    fn fold(&mut self, _: &StreamId, _: &renamed::RenamedLine) {}
}
impl Fold<renamed::Splits> for Ignored {
    fn fold(&mut self, _: &StreamId, _: &renamed::SplitLine) {}
}
impl Fold<reused::Ledger> for Ignored {
    fn fold(&mut self, _: &StreamId, _: &reused::LedgerLine) {}
}
impl Fold<reused::Taken> for Ignored {
    fn fold(&mut self, _: &StreamId, _: &reused::TakenFirst) {}
}
impl Fold<reused::Second> for Ignored {
    fn fold(&mut self, _: &StreamId, _: &reused::TakenSecond) {}
}

/// A command that only reads one slot's stream (the type check is all it is for).
macro_rules! reads {
    ($name:ident, $slot:path) => {
        #[derive(Command)]
        #[command(state = Ignored, error = BankError)]
        struct $name {
            #[slot($slot)]
            stream: StreamId,
        }
        impl Handle for $name {
            fn handle(&self, _: &Ignored, decision: Decision<Self::Streams>) -> Handled<Self> {
                Ok(decision)
            }
        }
    };
}
reads!(ReadRenamed, renamed::Lines);
reads!(ReadSplit, renamed::Splits);
reads!(ReadReused, reused::Ledger);
reads!(ReadTakenFirst, reused::Taken);
reads!(ReadTakenSecond, reused::Second);

/// A type whose former name is another type's stored name reads that type's events as its
/// own old ones (a typed subscription to it delivers them, upcast from a shape they never
/// had): refused like two types of one name, in either order. Two types sharing a former name
/// (a split of one old type) are not refused.
#[tokio::test]
async fn a_former_name_that_another_event_type_is_stored_under_is_refused() {
    let executor = Executor::new(Memory::new());
    let stream = || StreamId::try_new("line-1").unwrap();
    executor.execute(&ReadRenamed { stream: stream() }).await.unwrap();
    executor.execute(&ReadSplit { stream: stream() }).await.unwrap();
    let err = executor.execute(&ReadReused { stream: stream() }).await.unwrap_err();
    let ExecuteError::EventTypeClash(clash) = &err else { panic!("expected a clash, got {err:?}") };
    assert_eq!(clash.name, "LedgerLine");
    assert_eq!(clash.first, "executor::renamed::RenamedLine");
    assert_eq!(clash.second, "executor::reused::LedgerLine");

    executor.execute(&ReadTakenFirst { stream: stream() }).await.unwrap();
    let err = executor.execute(&ReadTakenSecond { stream: stream() }).await.unwrap_err();
    let ExecuteError::EventTypeClash(clash) = &err else { panic!("expected a clash, got {err:?}") };
    assert_eq!(clash.name, "TakenFirst");
    assert_eq!(clash.first, "executor::reused::TakenFirst");
    assert_eq!(clash.second, "executor::reused::TakenSecond");
}

/// A store restored underneath a process that holds handed-over streams.
mod restored_store {
    use std::convert::Infallible;
    use std::sync::{Arc, Mutex, RwLock};

    use eventcore::backend::{
        AppendRequest, Committed, IdempotencyKey, LogFilter, LogPage, LogWatch, StoreError,
        StreamEvents, StreamQueue,
    };
    use eventcore::prelude::*;
    use eventcore::{CorrelationId, EventMetadata, GlobalPosition, NewEvent, StreamVersion};
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Serialize, Deserialize)]
    pub struct Entry {
        pub value: i64,
        pub seen: i64,
    }

    impl Event for Entry {
        const EVENT_TYPE: &'static str = "RestoredEntry";
    }

    slot!(pub Ledger: Entry);

    #[derive(Default)]
    pub struct Sum(i64);

    impl Fold<Ledger> for Sum {
        fn fold(&mut self, _: &StreamId, e: &Entry) {
            self.0 += e.value;
        }
    }

    pub struct Add(pub StreamId);

    impl Command for Add {
        type Streams = Streams![Ledger];
        type State = Sum;
        type Error = Infallible;
        type Continuation = NoDiscovery;
        fn streams(&self) -> Bindings<Self::Streams> {
            hlist![Ledger::bind(self.0.clone())]
        }
    }

    impl Handle for Add {
        fn handle(&self, sum: &Sum, mut d: Decision<Self::Streams>) -> Handled<Self> {
            d.emit(Ledger, Entry { value: 1, seen: sum.0 });
            Ok(d)
        }
    }

    /// One store whose data can be replaced ("restored"), with one queue throughout, and a gate
    /// that holds the next append until opened.
    #[derive(Clone)]
    struct Restorable {
        inner: Arc<RwLock<Memory>>,
        queue: Arc<StreamQueue>,
        gate: Arc<Mutex<Option<tokio::sync::oneshot::Receiver<()>>>>,
    }

    impl Restorable {
        fn mem(&self) -> Memory {
            self.inner.read().unwrap().clone()
        }
    }

    impl Backend for Restorable {
        async fn read(&self, streams: &[StreamId]) -> Result<Vec<StreamEvents>, StoreError> {
            self.mem().read(streams).await
        }
        async fn read_after(
            &self,
            streams: &[(StreamId, StreamVersion)],
        ) -> Result<Vec<StreamEvents>, StoreError> {
            self.mem().read_after(streams).await
        }
        async fn append(&self, request: AppendRequest) -> Result<Committed, StoreError> {
            let gate = self.gate.lock().unwrap().take();
            if let Some(gate) = gate {
                let _ = gate.await;
            }
            self.mem().append(request).await
        }
        async fn read_log(
            &self,
            after: GlobalPosition,
            filter: &LogFilter,
            limit: usize,
        ) -> Result<LogPage, StoreError> {
            self.mem().read_log(after, filter, limit).await
        }
        fn watch_log(&self) -> LogWatch {
            self.mem().watch_log()
        }
        async fn find_committed(
            &self,
            key: &IdempotencyKey,
        ) -> Result<Option<Committed>, StoreError> {
            self.mem().find_committed(key).await
        }
        fn stream_queue(&self) -> &StreamQueue {
            &self.queue
        }
    }

    fn raw(value: i64) -> NewEvent {
        NewEvent::from_event(&Entry { value, seen: -1 }, EventMetadata::new(CorrelationId::new()))
            .unwrap()
    }

    /// A stream handed over with a turn, and left in its lane, is checked before it is trusted:
    /// the store, restored underneath (a failover to a replica that lost the last commits, a
    /// backup) and grown again by other writers to the same version, holds other events there.
    /// The next command decides on what the store holds, not on the vanished events (its append
    /// would pass the version check all the same).
    #[tokio::test]
    async fn a_handed_over_stream_is_not_trusted_after_the_store_was_restored_and_regrown() {
        let store = Restorable {
            inner: Arc::new(RwLock::new(Memory::new())),
            queue: Arc::default(),
            gate: Arc::default(),
        };
        let executor = Executor::new(store.clone());
        let id = StreamId::try_new("restored-ledger").unwrap();
        for _ in 0..3 {
            executor.execute(&Add(id.clone())).await.unwrap();
        }

        // A holds its turn at the append; B waits for it; A hands the stream over to B, and B
        // (which took it over) leaves it in its lane at version 5.
        let (open, gate) = tokio::sync::oneshot::channel();
        *store.gate.lock().unwrap() = Some(gate);
        let run = |id: StreamId| {
            let executor = executor.clone();
            tokio::spawn(async move { executor.execute(&Add(id)).await.unwrap() })
        };
        let a = run(id.clone());
        crate::wait::until("A at the append", || store.gate.lock().unwrap().is_none()).await;
        let b = run(id.clone());
        crate::wait::until("B waiting", || store.stream_queue().waiting(&id) >= 1).await;
        open.send(()).unwrap();
        a.await.unwrap();
        b.await.unwrap();
        let before = store.read(std::slice::from_ref(&id)).await.unwrap().remove(0);
        assert_eq!(before.version, StreamVersion::new(5));

        // The store is restored from a backup without this stream (say), and other writers grow it
        // again to version 5 with entries worth 100 each.
        *store.inner.write().unwrap() = Memory::new();
        for v in 0..5u64 {
            let request = AppendRequest::new()
                .expect(id.clone(), StreamVersion::new(v))
                .write(id.clone(), vec![raw(100)]);
            store.append(request).await.unwrap();
        }

        // The next command here must decide on the store's stream: 5 entries worth 100.
        executor.execute(&Add(id.clone())).await.unwrap();
        let after = store.read(std::slice::from_ref(&id)).await.unwrap().remove(0);
        let last: Entry = after.events.last().unwrap().decode().unwrap();
        assert_eq!(after.version, StreamVersion::new(6), "the append went through");
        assert_eq!(last.seen, 500, "decided on events the store no longer holds");
    }
}

/// Two slots of one name declared in two modules are two slots (see `Slot::PATH`), folded by
/// a state through two `Fold` impls: a snapshot taken by a command over one of them is not a
/// state of the other.
mod slots_of_one_name {
    use eventcore::prelude::*;
    use eventcore::{Snapshot, SnapshotPolicy, executor::snapshot_key};
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Clone, Serialize, Deserialize, Event)]
    pub enum Entry {
        Booked { cents: u64 },
    }

    mod billed {
        eventcore::slot!(pub Ledger: super::Entry);
    }
    mod paid {
        eventcore::slot!(pub Ledger: super::Entry);
    }

    /// What a ledger's entries add up to, as bills (in the `billed` role) and as payments (in
    /// the `paid` role).
    #[derive(Debug, Default, Serialize, Deserialize)]
    pub struct Dues {
        billed: u64,
        paid: u64,
    }

    impl Fold<billed::Ledger> for Dues {
        fn fold(&mut self, _: &StreamId, Entry::Booked { cents }: &Entry) {
            self.billed += cents;
        }
    }

    impl Fold<paid::Ledger> for Dues {
        fn fold(&mut self, _: &StreamId, Entry::Booked { cents }: &Entry) {
            self.paid += cents;
        }
    }

    impl Snapshot for Dues {
        const NAME: &'static str = "dues";
        const VERSION: u32 = 1;
    }

    #[derive(Debug, thiserror::Error)]
    #[error("nothing due: billed {billed}, paid {paid}")]
    pub struct NothingDue {
        billed: u64,
        paid: u64,
    }

    #[derive(Command)]
    #[command(state = Dues, error = NothingDue)]
    pub struct Bill {
        #[slot(billed::Ledger)]
        ledger: StreamId,
    }

    impl Handle for Bill {
        fn handle(&self, _: &Dues, mut decision: Decision<Self::Streams>) -> Handled<Self> {
            decision.emit(billed::Ledger, Entry::Booked { cents: 10 });
            Ok(decision)
        }
    }

    /// Pays 10 when more was billed than paid, reading the ledger in the `paid` role.
    #[derive(Command)]
    #[command(state = Dues, error = NothingDue)]
    pub struct Pay {
        #[slot(paid::Ledger)]
        ledger: StreamId,
    }

    impl Handle for Pay {
        fn handle(&self, dues: &Dues, mut decision: Decision<Self::Streams>) -> Handled<Self> {
            let (billed, paid) = (dues.billed, dues.paid);
            require!(billed > paid, NothingDue { billed, paid });
            decision.emit(paid::Ledger, Entry::Booked { cents: 10 });
            Ok(decision)
        }
    }

    /// The timeout bounds the whole execution, the snapshot it saves included: a command that
    /// decided after 9 s of its 10 does not wait another 10 for the save.
    #[tokio::test(start_paused = true)]
    async fn the_timeout_bounds_the_snapshot_save_too() {
        use std::time::Duration;
        let limit = Duration::from_secs(10);
        // Reads that take 9 s, and snapshot saves that take an hour.
        let store = eventcore::testing::Faulty::new(Memory::new());
        store.delay_reads(Duration::from_secs(9));
        store.delay_snapshot_saves(Duration::from_secs(3600));
        let snapshots =
            Executor::new(store).with_snapshots(SnapshotPolicy::every(1)).with_timeout(limit);
        let bill = Bill { ledger: StreamId::try_new("dues-slow").unwrap() };
        snapshots.execute_snapshotted(&bill).await.unwrap();
        // The second bill reads for 9 s, folds one event and takes a snapshot.
        let started = tokio::time::Instant::now();
        snapshots.execute_snapshotted(&bill).await.unwrap();
        let took = started.elapsed();
        assert!(took <= limit, "the execution took {took:?}, beyond its timeout of {limit:?}");
    }

    #[tokio::test]
    async fn slots_of_one_name_in_two_modules_never_share_a_snapshot() {
        let store = Memory::new();
        let snapshots = Executor::new(store.clone()).with_snapshots(SnapshotPolicy::every(1));
        let ledger = StreamId::try_new("dues-ledger").unwrap();
        let (bill, pay) = (Bill { ledger: ledger.clone() }, Pay { ledger: ledger.clone() });
        // The third bill snapshots the two before it: 20 billed.
        for _ in 0..3 {
            snapshots.execute_snapshotted(&bill).await.unwrap();
        }
        // Read in the `paid` role, the ledger holds 30 paid and nothing billed: nothing is due,
        // with snapshots as without.
        let plain = Executor::new(store.clone()).execute(&pay).await;
        assert!(
            matches!(plain, Err(ExecuteError::Rejected(NothingDue { billed: 0, paid: 30 }))),
            "{plain:?}"
        );
        let snapshotted = snapshots.execute_snapshotted(&pay).await;
        assert!(
            matches!(snapshotted, Err(ExecuteError::Rejected(NothingDue { billed: 0, paid: 30 }))),
            "decided on the other slot's snapshot: {snapshotted:?}"
        );
        assert_eq!(store.len(), 3, "a payment was written");
        assert_ne!(snapshot_key(&bill), snapshot_key(&pay), "two slots, one key");
    }
}

/// Commands that leave the queue part-way, holding some of their turns.
mod leaving_waiters {
    use std::collections::HashSet;
    use std::convert::Infallible;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use eventcore::backend::{
        AppendRequest, Committed, IdempotencyKey, LogFilter, LogPage, LogWatch, StoreError,
        StreamEvents, StreamHold, StreamQueue,
    };
    use eventcore::prelude::*;
    use eventcore::{CorrelationId, EventMetadata, GlobalPosition, NewEvent, StreamVersion};
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Serialize, Deserialize)]
    pub struct Tick;

    impl Event for Tick {
        const EVENT_TYPE: &'static str = "LeavingTick";
    }

    slot!(pub First: Tick);
    slot!(pub Second: Tick);

    #[derive(Default)]
    pub struct Nothing;

    impl Fold<First> for Nothing {
        fn fold(&mut self, _: &StreamId, _: &Tick) {}
    }

    impl Fold<Second> for Nothing {
        fn fold(&mut self, _: &StreamId, _: &Tick) {}
    }

    /// Writes one tick to a stream.
    pub struct One(pub StreamId);

    impl Command for One {
        type Streams = Streams![First];
        type State = Nothing;
        type Error = Infallible;
        type Continuation = NoDiscovery;
        fn streams(&self) -> Bindings<Self::Streams> {
            hlist![First::bind(self.0.clone())]
        }
    }

    impl Handle for One {
        fn handle(&self, _: &Nothing, mut d: Decision<Self::Streams>) -> Handled<Self> {
            d.emit(First, Tick);
            Ok(d)
        }
    }

    /// Writes one tick to each of two streams.
    pub struct Two(pub StreamId, pub StreamId);

    impl Command for Two {
        type Streams = Streams![First, Second];
        type State = Nothing;
        type Error = Infallible;
        type Continuation = NoDiscovery;
        fn streams(&self) -> Bindings<Self::Streams> {
            hlist![First::bind(self.0.clone()), Second::bind(self.1.clone())]
        }
    }

    impl Handle for Two {
        fn handle(&self, _: &Nothing, mut d: Decision<Self::Streams>) -> Handled<Self> {
            d.emit(First, Tick);
            d.emit(Second, Tick);
            Ok(d)
        }
    }

    /// A store whose holds on some streams wait until those streams are let go, and that
    /// counts the events its reads return.
    #[derive(Clone)]
    struct Gated {
        inner: Memory,
        blocked: Arc<tokio::sync::watch::Sender<HashSet<StreamId>>>,
        /// Holds waiting for a blocked stream, now.
        waiting_holds: Arc<AtomicUsize>,
        events_read: Arc<AtomicUsize>,
    }

    impl Gated {
        fn new() -> Self {
            Self {
                inner: Memory::new(),
                blocked: Arc::new(tokio::sync::watch::channel(HashSet::new()).0),
                waiting_holds: Arc::default(),
                events_read: Arc::default(),
            }
        }

        fn block(&self, streams: &[&StreamId]) {
            self.blocked.send_modify(|b| b.extend(streams.iter().map(|&s| s.clone())));
        }

        fn let_go(&self, stream: &StreamId) {
            self.blocked.send_modify(|b| {
                b.remove(stream);
            });
        }

        async fn until(&self, what: &str, check: impl Fn(&Self) -> bool) {
            crate::wait::until(what, || check(self)).await;
        }

        fn counted(&self, reads: Vec<StreamEvents>) -> Vec<StreamEvents> {
            let n = reads.iter().map(|r| r.events.len()).sum();
            self.events_read.fetch_add(n, Ordering::SeqCst);
            reads
        }
    }

    impl Backend for Gated {
        async fn read(&self, streams: &[StreamId]) -> Result<Vec<StreamEvents>, StoreError> {
            Ok(self.counted(self.inner.read(streams).await?))
        }
        async fn read_after(
            &self,
            streams: &[(StreamId, StreamVersion)],
        ) -> Result<Vec<StreamEvents>, StoreError> {
            Ok(self.counted(self.inner.read_after(streams).await?))
        }
        async fn append(&self, request: AppendRequest) -> Result<Committed, StoreError> {
            self.inner.append(request).await
        }
        async fn read_log(
            &self,
            after: GlobalPosition,
            filter: &LogFilter,
            limit: usize,
        ) -> Result<LogPage, StoreError> {
            self.inner.read_log(after, filter, limit).await
        }
        fn watch_log(&self) -> LogWatch {
            self.inner.watch_log()
        }
        async fn find_committed(
            &self,
            key: &IdempotencyKey,
        ) -> Result<Option<Committed>, StoreError> {
            self.inner.find_committed(key).await
        }
        fn stream_queue(&self) -> &StreamQueue {
            self.inner.stream_queue()
        }
        async fn hold(&self, streams: &[StreamId]) -> Result<Option<StreamHold>, StoreError> {
            let mut blocked = self.blocked.subscribe();
            let free = |b: &HashSet<StreamId>| streams.iter().all(|s| !b.contains(s));
            if !free(&blocked.borrow()) {
                self.waiting_holds.fetch_add(1, Ordering::SeqCst);
                let _ = blocked.wait_for(|b| free(b)).await;
                self.waiting_holds.fetch_sub(1, Ordering::SeqCst);
            }
            Ok(None)
        }
    }

    /// A waker that notes, each time it is cloned, how many commands the store's queue counts
    /// as waiting on `stream` at that moment. A wait clones its waker as it puts the command in
    /// line.
    struct Probe {
        store: Gated,
        stream: StreamId,
        seen: std::sync::Mutex<Vec<usize>>,
    }

    fn probe_waker(probe: &Arc<Probe>) -> std::task::Waker {
        use std::task::{RawWaker, RawWakerVTable};
        unsafe fn clone(data: *const ()) -> RawWaker {
            // SAFETY: `data` is an `Arc<Probe>` leaked by `probe_waker` or by this function;
            // the count is raised for the clone this returns.
            let probe = unsafe { &*data.cast::<Probe>() };
            probe.seen.lock().unwrap().push(probe.store.stream_queue().waiting(&probe.stream));
            unsafe { Arc::increment_strong_count(data.cast::<Probe>()) };
            RawWaker::new(data, &VTABLE)
        }
        unsafe fn wake_by_ref(_: *const ()) {}
        unsafe fn release(data: *const ()) {
            // SAFETY: every waker made here holds one count of the `Arc`.
            unsafe { Arc::decrement_strong_count(data.cast::<Probe>()) };
        }
        static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, release, wake_by_ref, release);
        let data = Arc::into_raw(Arc::clone(probe)).cast::<()>();
        // SAFETY: the vtable's functions keep to the contract above.
        unsafe { std::task::Waker::from_raw(RawWaker::new(data, &VTABLE)) }
    }

    /// A command is counted as waiting for its turn only once it is in line (its wait holds
    /// the waker it will be woken by), so a command seen waiting is ahead of every command
    /// that starts waiting after. The tests that poll a command by hand once another is seen
    /// waiting rely on it: counted before it was in line, the other could be overtaken by the
    /// one polled by hand, which then held the turn it was never polled again to use.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_command_is_counted_as_waiting_only_once_it_is_in_line() {
        let store = Gated::new();
        let executor = Executor::new(store.clone());
        let id = StreamId::try_new("in-line").unwrap();
        store.block(&[&id]);
        let holder = {
            let (executor, id) = (executor.clone(), id.clone());
            tokio::spawn(async move { executor.execute(&One(id)).await.unwrap() })
        };
        store.until("the holder's hold", |s| s.waiting_holds.load(Ordering::SeqCst) == 1).await;
        let probe = Arc::new(Probe {
            store: store.clone(),
            stream: id.clone(),
            seen: std::sync::Mutex::default(),
        });
        let waker = probe_waker(&probe);
        let command = One(id.clone());
        let mut waiter = Box::pin(executor.execute(&command));
        assert!(waiter.as_mut().poll(&mut std::task::Context::from_waker(&waker)).is_pending());
        let seen = probe.seen.lock().unwrap().clone();
        assert!(!seen.is_empty(), "the wait did not keep the waker");
        assert!(seen.iter().all(|&n| n == 0), "counted before it was in line: {seen:?}");
        assert_eq!(store.stream_queue().waiting(&id), 1);
        store.let_go(&id);
        holder.await.unwrap();
        waiter.await.unwrap();
        assert_eq!(store.stream_queue().waiting(&id), 0);
    }

    /// A command that got its turn on one stream, a stream handed over to it there, and left
    /// while it waited for its turn on another stream, gives up what was left for it: the
    /// queue keeps it within its allowance of 16,384 events, as any stream left for nobody.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_command_that_leaves_part_way_does_not_keep_streams_past_the_allowance() {
        const BIG: usize = 8_192;
        let store = Gated::new();
        let executor = Executor::new(store.clone());
        let queue = store.stream_queue();
        // Streams whose turns come before the blocker's in the queue's order (checked below).
        let bigs: Vec<StreamId> =
            ["cancel-big-0", "cancel-big-1"].map(|n| StreamId::try_new(n).unwrap()).to_vec();
        let blocker = StreamId::try_new("cancel-blocker-1").unwrap();
        for big in &bigs {
            let events = (0..BIG)
                .map(|_| {
                    NewEvent::from_event(&Tick, EventMetadata::new(CorrelationId::new())).unwrap()
                })
                .collect();
            let fill = AppendRequest::new()
                .expect(big.clone(), StreamVersion::EMPTY)
                .write(big.clone(), events);
            store.append(fill).await.unwrap();
        }
        let run = |command: One| {
            let executor = executor.clone();
            tokio::spawn(async move { executor.execute(&command).await.unwrap() })
        };
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        for big in &bigs {
            // A command over `big` and one over the blocker hold their turns, waiting for their
            // holds; another over `big` waits for its turn, and a pair over both after it.
            store.block(&[big, &blocker]);
            let first = run(One(big.clone()));
            store.until("the first hold", |s| s.waiting_holds.load(Ordering::SeqCst) == 1).await;
            let blocking = run(One(blocker.clone()));
            store
                .until("the blocker's hold", |s| s.waiting_holds.load(Ordering::SeqCst) == 2)
                .await;
            let second = run(One(big.clone()));
            store.until("the second command", |_| queue.waiting(big) == 1).await;
            let pair = Two(big.clone(), blocker.clone());
            let mut pair = Box::pin(executor.execute(&pair));
            assert!(pair.as_mut().poll(&mut cx).is_pending());
            assert_eq!(queue.waiting(big), 2, "the pair waits for the blocker's turn first");
            // The first writes and hands the stream over to the second, which waited, and
            // which hands it over to the pair, waiting for it.
            store.let_go(big);
            first.await.unwrap();
            second.await.unwrap();
            // The pair takes its turn on `big`, then waits for the blocker's, and leaves.
            assert!(pair.as_mut().poll(&mut cx).is_pending());
            assert_eq!((queue.waiting(big), queue.waiting(&blocker)), (0, 1));
            drop(pair);
            store.let_go(&blocker);
            blocking.await.unwrap();
        }
        // A stream the queue kept is read from its last event on; one it dropped, whole.
        let mut kept = 0;
        for big in &bigs {
            let before = store.events_read.load(Ordering::SeqCst);
            executor.execute(&One(big.clone())).await.unwrap();
            if store.events_read.load(Ordering::SeqCst) - before < 10 {
                kept += 1;
            }
        }
        // Each weighs its 8,194 events plus one: the two together are past the allowance.
        assert!(kept <= 1, "the queue kept {kept} streams of {} events nobody waits for", BIG + 2);
    }
}

/// A command state with a snapshot, for the log test below.
mod tallied {
    use eventcore::prelude::*;
    use eventcore::{Apply, Snapshot};
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Clone, Serialize, Deserialize, Event)]
    #[event(name = "TalliedNote")]
    pub enum Note {
        Taken,
    }
    slot!(pub Notes: Note);

    #[derive(Debug, Default, Clone, Serialize, Deserialize, Fold)]
    #[fold(Notes)]
    pub struct Tally {
        pub count: u64,
    }

    impl Apply<Note> for Tally {
        fn apply(&mut self, _: &Note) {
            self.count += 1;
        }
    }

    impl Snapshot for Tally {
        const NAME: &'static str = "tally";
        const VERSION: u32 = 1;
    }

    #[derive(Command)]
    #[command(state = Tally, error = super::BankError)]
    pub struct TakeNote {
        #[slot(Notes)]
        pub notes: StreamId,
    }

    impl Handle for TakeNote {
        fn handle(&self, _: &Tally, mut decision: Decision<Self::Streams>) -> Handled<Self> {
            decision.emit(Notes, Note::Taken);
            Ok(decision)
        }
    }
}

/// A snapshot whose state does not decode is discarded with a warning that says so, and
/// where the state stops decoding, without copying the state's values into the log (a
/// `serde_json` error quotes the value it could not take: here the stored text).
#[test]
fn an_undecodable_snapshot_is_logged_without_its_state() {
    use eventcore::backend::StoredSnapshot;
    use eventcore::{Payload, RecordedEvent, SnapshotPolicy, executor::snapshot_key};
    use tallied::{TakeNote, Tally};

    let log = logged(tracing_subscriber::fmt::format::FmtSpan::NONE, |_| async {
        let store = Memory::new();
        let notes = StreamId::try_new("notes-1").unwrap();
        let command = TakeNote { notes: notes.clone() };
        Executor::new(store.clone()).execute(&command).await.unwrap();
        let read = store.read(std::slice::from_ref(&notes)).await.unwrap().remove(0);
        let planted = StoredSnapshot {
            key: snapshot_key(&command),
            state_type: std::any::type_name::<Tally>().to_owned(),
            state_version: 1,
            streams: vec![(notes.clone(), StreamVersion::new(1))],
            last_event_ids: vec![read.events.first().map(RecordedEvent::event_id)],
            state: Payload::from_json_str(r#"{"count":"a-private-value"}"#).unwrap(),
        };
        store.save_snapshot(planted).await.unwrap();
        // See `each_execution_is_traced_with_command_streams_and_attempts`: the callsites'
        // interest is asked again under this subscriber.
        tracing::callsite::rebuild_interest_cache();
        let snapshots = Executor::new(store.clone()).with_snapshots(SnapshotPolicy::every(100));
        snapshots.execute_snapshotted(&command).await.unwrap();
    });
    assert!(log.contains("snapshot discarded: its state does not decode"), "{log}");
    assert!(!log.contains("a-private-value"), "the state's value is in the log: {log}");
}

/// Counts events by a pair of numbers: a map with tuple keys, which JSON cannot hold, so its
/// snapshots never serialize.
#[derive(Default)]
struct Pairs(PairCounts);

#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
struct PairCounts(std::collections::BTreeMap<(u8, u8), u64>);

impl eventcore::Snapshot for PairCounts {
    const NAME: &'static str = "pair-counts";
    const VERSION: u32 = 1;
}

impl eventcore::subscription::Projection<Memory> for Pairs {
    type Error = std::convert::Infallible;

    fn name(&self) -> &str {
        "logged-snapshots"
    }

    async fn apply(
        &mut self,
        _: &mut eventcore::backend::MemoryTx,
        _: &eventcore::RecordedEvent,
    ) -> Result<(), Self::Error> {
        *self.0.0.entry((0, 0)).or_default() += 1;
        Ok(())
    }
}

impl eventcore::subscription::SnapshotProjection<Memory> for Pairs {
    type State = PairCounts;

    fn state(&self) -> &PairCounts {
        &self.0
    }

    fn restore(&mut self, state: PairCounts) {
        self.0 = state;
    }
}

/// The log lines about a projection's snapshots name the projection: one discarded at start,
/// one whose state does not serialize.
#[test]
fn a_projections_snapshot_log_lines_name_the_projection() {
    use eventcore::subscription::{ProjectionRunner, ProjectionSnapshot, ProjectionStore};
    use eventcore::{Payload, SnapshotPolicy};

    let log = logged(tracing_subscriber::fmt::format::FmtSpan::NONE, |_| async {
        let store = Memory::new();
        let account = AccountId::try_new("logged-1").unwrap();
        let executor = Executor::new(store.clone());
        executor.execute(&OpenAccount { account, owner: "o".into() }).await.unwrap();
        // A snapshot of another state type, which the runner discards when it starts.
        let name = "logged-snapshots";
        let lease = store.claim(name, uuid::Uuid::now_v7(), Duration::from_secs(5)).await;
        let lease = lease.unwrap().unwrap();
        let planted = ProjectionSnapshot {
            state_type: "another::State".into(),
            state_version: 1,
            position: GlobalPosition::START,
            last_event: None,
            state: Payload::from_json_str("{}").unwrap(),
        };
        let tx = store.begin(&lease).await.unwrap();
        let committed = store.commit(tx, &lease, GlobalPosition::START, None, Some(planted));
        assert!(committed.await.unwrap());
        store.release(&lease).await.unwrap();
        tracing::callsite::rebuild_interest_cache();
        let runner = ProjectionRunner::new(store.clone(), Pairs::default())
            .with_snapshots(SnapshotPolicy::every(1));
        runner.catch_up().await.unwrap();
    });
    let line = |text: &str| log.lines().find(|l| l.contains(text)).unwrap_or_default().to_owned();
    let discarded = line("projection snapshot discarded");
    assert!(discarded.contains("logged-snapshots"), "{log}");
    let unserializable = line("does not serialize");
    assert!(unserializable.contains("logged-snapshots"), "{log}");
}

/// Fails on every event.
struct Poisoned;

impl eventcore::subscription::Projection<Memory> for Poisoned {
    type Error = std::io::Error;

    fn name(&self) -> &str {
        "traced-poisoned"
    }

    async fn apply(
        &mut self,
        _: &mut eventcore::backend::MemoryTx,
        _: &eventcore::RecordedEvent,
    ) -> Result<(), Self::Error> {
        Err(std::io::Error::other("the handler cannot apply it"))
    }
}

/// A runner that stops on an event says so in the log, at error level, with its name and why:
/// a service that watches its logs learns that a read model stopped.
#[test]
fn a_runner_that_stops_logs_an_error() {
    use eventcore::subscription::{ProjectionError, ProjectionRunner};

    let log = logged(tracing_subscriber::fmt::format::FmtSpan::NONE, |_| async {
        tracing::callsite::rebuild_interest_cache();
        let store = Memory::new();
        let s = StreamId::try_new("traced-1").unwrap();
        let event = eventcore::NewEvent::new(
            "N",
            1,
            eventcore::Payload::to_json(&1).unwrap(),
            eventcore::EventMetadata::new(eventcore::CorrelationId::new()),
        );
        let request =
            AppendRequest::new().expect(s.clone(), StreamVersion::new(0)).write(s, vec![event]);
        store.append(request).await.unwrap();
        let runner = ProjectionRunner::new(store, Poisoned).retries(
            0,
            Duration::from_millis(1),
            Duration::from_millis(1),
        );
        let stopped = tokio::time::timeout(Duration::from_secs(30), runner.run()).await;
        assert!(matches!(stopped, Ok(Err(ProjectionError::Stopped { .. }))), "{stopped:?}");
    });
    let line = log.lines().find(|l| l.contains("ERROR")).unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains("traced-poisoned"), "{line}");
    assert!(line.contains("the handler cannot apply it"), "{line}");
}

/// A command over a cached stream adds its events to the cached copy in place: the commit does
/// not copy the stream's events (which made every command over a long cached stream cost a copy
/// of all of them, on top of the fold the cache is there to make cheap).
#[tokio::test]
async fn a_commit_extends_a_cached_stream_in_place() {
    let cache = StreamCache::new(10_000);
    let bank = Executor::new(Memory::new()).with_cache(cache.clone());
    let account = AccountId::try_new("acc-in-place").unwrap();
    bank.execute(&OpenAccount { account: account.clone(), owner: "o".into() }).await.unwrap();
    let deposit = Deposit { account: account.clone(), amount: Money::from_cents(1) };
    // Until the cached copy has room for one more event without growing.
    let (before, len) = loop {
        bank.execute(&deposit).await.unwrap();
        let cached = cache.get(account.stream_id()).expect("the stream is cached");
        if cached.events.capacity() > cached.events.len() {
            break (cached.events.as_ptr(), cached.events.len());
        }
    };
    bank.execute(&deposit).await.unwrap();
    let cached = cache.get(account.stream_id()).expect("the stream is still cached");
    assert_eq!(cached.events.len(), len + 1);
    assert_eq!(cached.events.as_ptr(), before, "the cached events were copied, not extended");
}
