//! Discovery: commands that learn while deciding which streams they need (typed continuations),
//! on any backend. Uses the e-commerce domain, whose `CancelOrder` takes three rounds.

use std::sync::{
    Arc, Mutex, PoisonError,
    atomic::{AtomicBool, AtomicUsize, Ordering},
};

use super::ecommerce::*;
use super::patient;
use eventcore::backend::{
    AppendRequest, Committed, IdempotencyKey, LogFilter, LogPage, LogWatch, StoreError,
    StreamEvents, StreamHold, StreamQueue,
};
use eventcore::prelude::*;
use eventcore::testing::Faulty;
use eventcore::{
    CorrelationId, EventMetadata, GlobalPosition, NewEvent, RecordedEvent, StreamVersion, Target,
    UndeclaredStream,
};
use serde::{Deserialize, Serialize};

fn product_id(name: &str) -> ProductId {
    ProductId::try_new(name).unwrap()
}

fn order_id(name: &str) -> OrderId {
    OrderId::try_new(name).unwrap()
}

fn customer_id(name: &str) -> CustomerId {
    CustomerId::try_new(name).unwrap()
}

/// Adds a product priced $1.00 with `units` in stock.
async fn stocked<B: Backend>(shop: &Executor<B>, name: &str, units: u32) -> ProductId {
    let id = product_id(name);
    shop.execute(&AddProduct {
        product: id.clone(),
        name: name.into(),
        price: Price::from_cents(1_00),
    })
    .await
    .unwrap();
    if units > 0 {
        shop.execute(&Restock { product: id.clone(), quantity: Quantity::new(units) })
            .await
            .unwrap();
    }
    id
}

async fn stock<B: Backend>(store: &B, id: &ProductId) -> u32 {
    product(store, id).await.unwrap().stock.units()
}

async fn events_of<B: Backend>(store: &B, stream: StreamId) -> Vec<RecordedEvent> {
    store.read(&[stream]).await.unwrap().remove(0).events
}

/// A backend wrapper that records every read and, once armed, plays a concurrent writer: right
/// after the first read that includes `target`, it appends one event to `target` and returns
/// the (now stale) read. Clones share the record.
#[derive(Clone)]
pub struct Meddler<B> {
    inner: B,
    reads: Arc<Mutex<Vec<Vec<StreamId>>>>,
    plan: Arc<Mutex<Option<(StreamId, NewEvent, usize)>>>,
    fired: Arc<AtomicBool>,
    appends: Arc<AtomicUsize>,
}

impl<B: Backend> Meddler<B> {
    fn new(inner: B) -> Self {
        Self {
            inner,
            reads: Arc::default(),
            plan: Arc::default(),
            fired: Arc::default(),
            appends: Arc::default(),
        }
    }

    /// After the next read of `target`, append `event` to it, once.
    fn meddle<E: Event>(&self, target: StreamId, event: &E) {
        self.meddle_after(0, target, event);
    }

    /// After the next read of `target` but `skip`, append `event` to it, once.
    fn meddle_after<E: Event>(&self, skip: usize, target: StreamId, event: &E) {
        let new = NewEvent::from_event(event, EventMetadata::new(CorrelationId::new())).unwrap();
        *self.plan.lock().unwrap_or_else(PoisonError::into_inner) = Some((target, new, skip));
    }

    fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }

    /// Appends made through this wrapper (its own meddling not counted).
    fn appends(&self) -> usize {
        self.appends.load(Ordering::SeqCst)
    }

    /// Every read so far, as the list of streams asked for.
    fn reads(&self) -> Vec<Vec<StreamId>> {
        self.reads.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl<B: Backend> Backend for Meddler<B> {
    async fn read(&self, streams: &[StreamId]) -> Result<Vec<StreamEvents>, StoreError> {
        self.reads.lock().unwrap_or_else(PoisonError::into_inner).push(streams.to_vec());
        let reads = self.inner.read(streams).await?;
        let planned = {
            let mut plan = self.plan.lock().unwrap_or_else(PoisonError::into_inner);
            match plan.as_mut() {
                Some((target, _, skip)) if streams.contains(target) && *skip > 0 => {
                    *skip -= 1;
                    None
                }
                Some((target, ..)) if streams.contains(target) => plan.take(),
                _ => None,
            }
        };
        if let Some((target, event, _)) = planned {
            let version = reads.iter().find(|r| r.stream_id == target).map(|r| r.version);
            let request = AppendRequest::new()
                .expect(target.clone(), version.unwrap_or(StreamVersion::EMPTY))
                .write(target, vec![event]);
            self.inner.append(request).await?;
            self.fired.store(true, Ordering::SeqCst);
        }
        Ok(reads)
    }

    async fn append(&self, request: AppendRequest) -> Result<Committed, StoreError> {
        self.appends.fetch_add(1, Ordering::SeqCst);
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

/// The e-commerce story end to end: an order reserves stock on all its products, cancelling it
/// discovers them and the customer, and everything is restored in one append.
pub async fn ecommerce_scenario<B: Backend>(store: B) {
    let spy = Meddler::new(store.clone());
    let shop = Executor::new(spy.clone());
    let a = stocked(&shop, "scn-a", 5).await;
    let b = stocked(&shop, "scn-b", 3).await;
    let c = stocked(&shop, "scn-c", 1).await;
    let ada = customer_id("scn-ada");
    let order = order_id("scn-1");
    let place = PlaceOrder::new(
        order.clone(),
        ada.clone(),
        [
            (a.clone(), Quantity::new(2)),
            (b.clone(), Quantity::new(3)),
            (c.clone(), Quantity::new(1)),
        ],
    )
    .unwrap();
    let done = shop.execute(&place).await.unwrap();
    assert_eq!(done.committed.streams.len(), 5, "order, three products, customer: {done:?}");
    assert_eq!(
        [stock(&store, &a).await, stock(&store, &b).await, stock(&store, &c).await],
        [3, 0, 0]
    );
    assert_eq!(loyalty_points(&store, &ada).await.unwrap(), 6);

    let before = spy.reads().len();
    let done = shop.execute(&CancelOrder { order: order.clone() }).await.unwrap();
    assert_eq!(done.attempts, 1);
    assert_eq!(done.committed.streams.len(), 5, "order, three products, customer: {done:?}");
    // One read per round, each in one backend call: the order, its products, its customer.
    let rounds = spy.reads()[before..].to_vec();
    assert_eq!(
        rounds,
        vec![
            vec![order.stream_id().clone()],
            vec![a.stream_id().clone(), b.stream_id().clone(), c.stream_id().clone()],
            vec![ada.stream_id().clone()]
        ]
    );
    assert_eq!(
        [stock(&store, &a).await, stock(&store, &b).await, stock(&store, &c).await],
        [5, 3, 1]
    );
    assert_eq!(loyalty_points(&store, &ada).await.unwrap(), 0);
    assert_eq!(order_status(&store, &order).await.unwrap(), OrderStatus::Cancelled);
}

/// Cancelling twice in a row: the second is rejected and stock is restored once; cancelling an
/// unknown order is rejected without discovering anything.
pub async fn cancelling_twice_restores_stock_once<B: Backend>(store: B) {
    let shop = Executor::new(store.clone());
    let p = stocked(&shop, "twice", 4).await;
    let order = order_id("twice-1");
    let place =
        PlaceOrder::new(order.clone(), customer_id("twice"), [(p.clone(), Quantity::new(3))])
            .unwrap();
    shop.execute(&place).await.unwrap();
    shop.execute(&CancelOrder { order: order.clone() }).await.unwrap();
    let again = shop.execute(&CancelOrder { order: order.clone() }).await;
    assert!(
        matches!(&again, Err(ExecuteError::Rejected(CommerceError::AlreadyCancelled(o))) if *o == order),
        "{again:?}"
    );
    assert_eq!(stock(&store, &p).await, 4);
    let unknown = shop.execute(&CancelOrder { order: order_id("never-placed") }).await;
    assert!(matches!(unknown, Err(ExecuteError::Rejected(CommerceError::UnknownOrder(_)))));
    // Placing the same order id again is rejected too: an order is placed once.
    assert!(matches!(
        shop.execute(&place).await,
        Err(ExecuteError::Rejected(CommerceError::OrderExists(_)))
    ));
}

/// Two cancellations of one order race, 200 times. Their appends are gated so both have read
/// all three rounds and decided before either writes: exactly one wins, the other retries from
/// round 0, sees the cancellation and is rejected; stock and points are restored once.
pub async fn concurrent_cancellations_restore_stock_once<B: Backend>(store: B) {
    let faulty = Faulty::new(store.clone());
    let shop = Executor::new(faulty.clone()).with_retry(patient());
    for round in 0..200 {
        let x = stocked(&shop, &format!("cc-{round}-x"), 10).await;
        let y = stocked(&shop, &format!("cc-{round}-y"), 7).await;
        let customer = customer_id(&format!("cc-{round}"));
        let order = order_id(&format!("cc-{round}"));
        let place = PlaceOrder::new(
            order.clone(),
            customer.clone(),
            [(x.clone(), Quantity::new(4)), (y.clone(), Quantity::new(7))],
        )
        .unwrap();
        shop.execute(&place).await.unwrap();

        faulty.gate_next_appends(2);
        // Each from a process of its own: in one, commands over the same streams take turns.
        let spawn = || {
            let shop = Executor::new(faulty.as_another_process()).with_retry(patient());
            let order = order.clone();
            tokio::spawn(async move { shop.execute(&CancelOrder { order }).await })
        };
        let (first, second) = (spawn(), spawn());
        let results = [first.await.unwrap(), second.await.unwrap()];
        let won: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(won.len(), 1, "round {round}: exactly one cancellation wins: {results:?}");
        assert_eq!(won[0].attempts, 1, "round {round}: the winner needed no retry");
        assert!(
            results.iter().any(|r| matches!(
                r,
                Err(ExecuteError::Rejected(CommerceError::AlreadyCancelled(_)))
            )),
            "round {round}: the loser must see the cancellation: {results:?}"
        );
        assert_eq!((stock(&store, &x).await, stock(&store, &y).await), (10, 7), "round {round}");
        assert_eq!(loyalty_points(&store, &customer).await.unwrap(), 0, "round {round}");
        let released = events_of(&store, x.stream_id().clone())
            .await
            .iter()
            .filter(|e| e.payload.as_str().contains("Released"))
            .count();
        assert_eq!(released, 1, "round {round}: stock released once");
        assert_eq!(events_of(&store, order.stream_id().clone()).await.len(), 2, "round {round}");
    }
}

/// Many customers race for the last units of one product, ten times over. Each order also takes
/// one unit of a plentiful product, so every append spans several streams. The first appends
/// are gated so all orders decide on the same stock: never oversold, and the stock left is the
/// initial stock minus what the successful orders took.
pub async fn concurrent_orders_never_oversell<B: Backend>(store: B) {
    const TASKS: u64 = 12;
    const SCARCE: u32 = 10;
    let faulty = Faulty::new(store.clone());
    let shop = Executor::new(faulty.clone()).with_retry(patient());
    for round in 0..10 {
        let scarce = stocked(&shop, &format!("last-{round}"), SCARCE).await;
        let plenty = stocked(&shop, &format!("plenty-{round}"), 1_000).await;
        // Every first attempt fits in the stock (at most 3 of 10), so all of them reach the gate.
        faulty.gate_next_appends(TASKS as usize);
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| {
                // Each from a process of its own: in one, orders of one product take turns.
                let shop = Executor::new(faulty.as_another_process()).with_retry(patient());
                let (scarce, plenty) = (scarce.clone(), plenty.clone());
                tokio::spawn(async move {
                    let wanted = fastrand::Rng::with_seed(round * 100 + task).u32(1..=3);
                    let order = PlaceOrder::new(
                        order_id(&format!("last-{round}-{task}")),
                        customer_id(&format!("buyer-{task}")),
                        [(scarce, Quantity::new(wanted)), (plenty, Quantity::new(1))],
                    )
                    .unwrap();
                    match shop.execute(&order).await {
                        Ok(_) => Some(wanted),
                        Err(ExecuteError::Rejected(CommerceError::OutOfStock { .. })) => None,
                        Err(other) => panic!("unexpected failure: {other:?}"),
                    }
                })
            })
            .collect();
        let mut sold = 0;
        let mut successes = 0;
        for task in tasks {
            if let Some(units) = task.await.unwrap() {
                sold += units;
                successes += 1;
            }
        }
        assert!(sold <= SCARCE, "round {round}: oversold: {sold} of {SCARCE}");
        assert!(successes < TASKS as u32, "round {round}: demand exceeded stock, yet all won");
        assert_eq!(stock(&store, &scarce).await, SCARCE - sold, "round {round}");
        assert_eq!(stock(&store, &plenty).await, 1_000 - successes, "round {round}");
        let reserved = events_of(&store, scarce.stream_id().clone()).await.len() - 2;
        assert_eq!(reserved as u32, successes, "round {round}: one reservation per order");
    }
}

/// A product stream changes after the cancellation read it (round 1) and before its append: the
/// append conflicts, the command runs again from round 0 on fresh reads, and the result counts
/// both the concurrent restock and the released units.
pub async fn product_changed_after_discovery_is_retried<B: Backend>(store: B) {
    let shop = Executor::new(store.clone());
    let p = stocked(&shop, "moved", 10).await;
    let q = stocked(&shop, "still", 10).await;
    let order = order_id("moved-1");
    let place = PlaceOrder::new(
        order.clone(),
        customer_id("moved"),
        [(p.clone(), Quantity::new(3)), (q.clone(), Quantity::new(1))],
    )
    .unwrap();
    shop.execute(&place).await.unwrap();

    let meddler = Meddler::new(store.clone());
    meddler.meddle(p.stream_id().clone(), &ProductEvent::Restocked { quantity: Quantity::new(5) });
    let done = Executor::new(meddler.clone())
        .execute(&CancelOrder { order: order.clone() })
        .await
        .unwrap();
    assert!(meddler.fired());
    assert_eq!(done.attempts, 2, "the stale product read must cost one retry");
    // The retry starts from round 0: the order is read again, then the products, then the
    // customer: six reads over two attempts.
    let rounds: Vec<usize> = meddler.reads().iter().map(Vec::len).collect();
    assert_eq!(rounds, vec![1, 2, 1, 1, 2, 1]);
    assert_eq!(stock(&store, &p).await, 10 - 3 + 5 + 3);
    assert_eq!(stock(&store, &q).await, 10);
    let kinds: Vec<String> = events_of(&store, p.stream_id().clone())
        .await
        .iter()
        .map(|e| e.payload.as_str().split('"').nth(1).unwrap_or_default().to_owned())
        .collect();
    assert_eq!(kinds, ["Added", "Restocked", "Reserved", "Restocked", "Released"]);
}

// A three-round command whose first two rounds only read, to show that every stream read in any
// round is validated by the final append (not only the streams it writes).

#[derive(Debug, Serialize, Deserialize)]
pub enum NoteEvent {
    /// Names the stream the next round reads.
    Refers(String),
    /// Something to count.
    Item,
    /// The count, written by the last round.
    Counted(usize),
}

impl Event for NoteEvent {
    const EVENT_TYPE: &'static str = "NoteEvent";
}

slot!(pub Index: NoteEvent);
slot!(pub Shelves: [NoteEvent]);
slot!(pub Tally: NoteEvent);

#[derive(Default)]
pub struct NoteState {
    refers: Vec<String>,
    items: usize,
}

impl NoteState {
    fn apply(&mut self, event: &NoteEvent) {
        match event {
            NoteEvent::Refers(to) => self.refers.push(to.clone()),
            NoteEvent::Item => self.items += 1,
            NoteEvent::Counted(_) => {}
        }
    }
}

impl Fold<Index> for NoteState {
    fn fold(&mut self, _: &StreamId, e: &NoteEvent) {
        self.apply(e);
    }
}
impl Fold<Shelves> for NoteState {
    fn fold(&mut self, _: &StreamId, e: &NoteEvent) {
        self.apply(e);
    }
}
impl Fold<Tally> for NoteState {
    fn fold(&mut self, _: &StreamId, e: &NoteEvent) {
        self.apply(e);
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the index names no shelf, or the shelves name no tally")]
pub struct Dangling;

/// Round 0 reads the index; round 1 the shelves it names; round 2 the tally the shelves name,
/// and writes there the number of items seen in all rounds. Counts how often each round ran.
pub struct CountItems {
    index: StreamId,
    runs: Arc<[AtomicUsize; 3]>,
}

type ShelvesRead = Extended<Streams![Index], Shelves>;
type TallyRead = Extended<ShelvesRead, Tally>;

pub struct ReadShelves {
    runs: Arc<[AtomicUsize; 3]>,
    /// How many references the index held: the shelves' come after them.
    from_index: usize,
}

pub struct WriteTally {
    runs: Arc<[AtomicUsize; 3]>,
}

impl Command for CountItems {
    type Streams = Streams![Index];
    type State = NoteState;
    type Error = Dangling;
    type Continuation = ReadShelves;

    fn streams(&self) -> Bindings<Self::Streams> {
        hlist![Index::bind(self.index.clone())]
    }
}

impl Handle for CountItems {
    fn handle(&self, state: &NoteState, decision: Decision<Self::Streams>) -> Handled<Self> {
        self.runs[0].fetch_add(1, Ordering::SeqCst);
        let shelves: Vec<StreamId> =
            state.refers.iter().map(|s| StreamId::try_new(s).unwrap()).collect();
        require!(!shelves.is_empty(), Dangling);
        let next = ReadShelves { runs: Arc::clone(&self.runs), from_index: shelves.len() };
        Ok(decision.discover(shelves, next))
    }
}

impl Continuation for ReadShelves {
    type Prior = Streams![Index];
    type Slot = Shelves;
    type State = NoteState;
    type Error = Dangling;
    type Next = WriteTally;

    fn resume(self, state: &NoteState, decision: Resuming<Self>) -> Resumed<Self> {
        self.runs[1].fetch_add(1, Ordering::SeqCst);
        // The state's `refers` now holds the index's references, then the shelves'.
        let [tally] = &state.refers[self.from_index..] else { return Err(Dangling) };
        let tally = StreamId::try_new(tally).unwrap();
        Ok(decision.discover(tally, WriteTally { runs: self.runs }))
    }
}

impl Continuation for WriteTally {
    type Prior = ShelvesRead;
    type Slot = Tally;
    type State = NoteState;
    type Error = Dangling;
    type Next = NoDiscovery;

    fn resume(self, state: &NoteState, mut decision: Resuming<Self>) -> Resumed<Self> {
        self.runs[2].fetch_add(1, Ordering::SeqCst);
        decision.emit(Tally, NoteEvent::Counted(state.items));
        Ok(decision)
    }
}

async fn note<B: Backend>(store: &B, stream: &StreamId, events: &[NoteEvent]) {
    let version = store.read(std::slice::from_ref(stream)).await.unwrap()[0].version;
    let new = events
        .iter()
        .map(|e| NewEvent::from_event(e, EventMetadata::new(CorrelationId::new())).unwrap())
        .collect();
    let request = AppendRequest::new().expect(stream.clone(), version).write(stream.clone(), new);
    store.append(request).await.unwrap();
}

/// Every stream read in any round is in the final append's read set: a concurrent write to the
/// round-0 stream or to a round-1 stream (both only read, never written) makes the append
/// conflict, and the command runs again from round 0 with fresh state and counts the new item.
pub async fn streams_read_in_every_round_are_validated<B: Backend>(store: B) {
    for (case, meddled_round) in [("control", None), ("round0", Some(0)), ("round1", Some(1))] {
        let index = StreamId::try_new(format!("index-{case}")).unwrap();
        let shelf = StreamId::try_new(format!("shelf-{case}")).unwrap();
        let tally = StreamId::try_new(format!("tally-{case}")).unwrap();
        note(&store, &index, &[NoteEvent::Refers(shelf.as_str().into()), NoteEvent::Item]).await;
        note(
            &store,
            &shelf,
            &[NoteEvent::Item, NoteEvent::Item, NoteEvent::Refers(tally.as_str().into())],
        )
        .await;

        let meddler = Meddler::new(store.clone());
        match meddled_round {
            Some(0) => meddler.meddle(index.clone(), &NoteEvent::Item),
            Some(_) => meddler.meddle(shelf.clone(), &NoteEvent::Item),
            None => {}
        }
        let runs = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0)]);
        let command = CountItems { index: index.clone(), runs: Arc::clone(&runs) };
        let done = Executor::new(meddler.clone()).execute(&command).await.unwrap();

        let ran: Vec<usize> = runs.iter().map(|r| r.load(Ordering::SeqCst)).collect();
        let tallied = events_of(&store, tally.clone()).await;
        let counted = match tallied.last().unwrap().decode::<NoteEvent>().unwrap() {
            NoteEvent::Counted(n) => n,
            other => panic!("{case}: unexpected {other:?}"),
        };
        assert_eq!(tallied.len(), 1, "{case}: one tally, whatever the retries");
        if meddled_round.is_some() {
            assert!(meddler.fired(), "{case}");
            assert_eq!(
                done.attempts, 2,
                "{case}: a read-only stream moved, so the append must conflict"
            );
            assert_eq!(ran, [2, 2, 2], "{case}: the retry starts from round 0");
            assert_eq!(counted, 4, "{case}: the retry sees the concurrent item");
        } else {
            assert_eq!(done.attempts, 1, "{case}");
            assert_eq!(ran, [1, 1, 1], "{case}");
            assert_eq!(counted, 3, "{case}");
        }
    }
}

/// Reads the index in round 0, then again as its own shelf in round 1, and writes there the
/// number of items folded (each slot folds the stream, so every item counts twice).
pub struct RecountIndex {
    index: StreamId,
    runs: Arc<[AtomicUsize; 2]>,
    key: Option<IdempotencyKey>,
}

pub struct Recount {
    runs: Arc<[AtomicUsize; 2]>,
}

impl Command for RecountIndex {
    type Streams = Streams![Index];
    type State = NoteState;
    type Error = Dangling;
    type Continuation = Recount;

    fn streams(&self) -> Bindings<Self::Streams> {
        hlist![Index::bind(self.index.clone())]
    }

    fn idempotency_key(&self) -> Option<IdempotencyKey> {
        self.key.clone()
    }
}

impl Handle for RecountIndex {
    fn handle(&self, _: &NoteState, decision: Decision<Self::Streams>) -> Handled<Self> {
        self.runs[0].fetch_add(1, Ordering::SeqCst);
        let next = Recount { runs: Arc::clone(&self.runs) };
        Ok(decision.discover(vec![self.index.clone()], next))
    }
}

impl Continuation for Recount {
    type Prior = Streams![Index];
    type Slot = Shelves;
    type State = NoteState;
    type Error = Dangling;
    type Next = NoDiscovery;

    fn resume(self, state: &NoteState, mut decision: Resuming<Self>) -> Resumed<Self> {
        self.runs[1].fetch_add(1, Ordering::SeqCst);
        for shelf in decision.targets(Shelves) {
            decision.emit_to(Shelves, &shelf, NoteEvent::Counted(state.items));
        }
        Ok(decision)
    }
}

/// A stream read again in a later round must be at the version it had when first read: the
/// index moves between round 0 and round 1 (where it is read again as a shelf), so the attempt
/// ends with a conflict before appending anything, and the retry starts over from round 0.
pub async fn a_stream_read_again_in_a_later_round_must_not_move<B: Backend>(store: B) {
    let index = StreamId::try_new("index-reread").unwrap();
    note(&store, &index, &[NoteEvent::Item]).await;
    let meddler = Meddler::new(store.clone());
    meddler.meddle(index.clone(), &NoteEvent::Item);
    let runs = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let command = RecountIndex { index: index.clone(), runs: Arc::clone(&runs), key: None };
    let done = Executor::new(meddler.clone()).execute(&command).await.unwrap();
    assert!(meddler.fired());
    assert_eq!(done.attempts, 2);
    assert_eq!(meddler.appends(), 1, "the first attempt must stop before its append");
    let ran: Vec<usize> = runs.iter().map(|r| r.load(Ordering::SeqCst)).collect();
    assert_eq!(ran, [2, 1], "round 1 of the first attempt never ran: its read conflicted");
    let last = events_of(&store, index).await.pop().unwrap();
    assert!(matches!(last.decode::<NoteEvent>().unwrap(), NoteEvent::Counted(4)));
}

/// A keyed command whose append committed but whose reply was lost runs again under its key;
/// on that last attempt a stream it reads in two rounds moves between them, so the attempt
/// conflicts before it reaches an append (which would have found the key). The command did
/// commit, under its key, in the first attempt: the answer is that commit, as a replay, never
/// a conflict that tells its caller nothing was written.
pub async fn a_keyed_command_whose_last_attempt_conflicts_answers_with_its_lost_commit<
    B: Backend,
>(
    store: B,
) {
    let index = StreamId::try_new("index-lost-reply").unwrap();
    note(&store, &index, &[NoteEvent::Item]).await;
    let meddler = Meddler::new(store.clone());
    // The first attempt reads the index twice; the second's first read lets another writer in.
    meddler.meddle_after(2, index.clone(), &NoteEvent::Item);
    let faulty = Faulty::new(meddler.clone());
    faulty.lose_next_append_replies(1);
    let two = RetryPolicy::builder()
        .max_attempts(2)
        .base_delay(std::time::Duration::from_micros(100))
        .max_delay(std::time::Duration::from_millis(1))
        .build()
        .unwrap();
    let runs = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let key = IdempotencyKey::try_new("recount-lost-reply").unwrap();
    let command = RecountIndex { index: index.clone(), runs: Arc::clone(&runs), key: Some(key) };
    let done = Executor::new(faulty).with_retry(two).execute(&command).await;
    assert!(meddler.fired());
    let ran: Vec<usize> = runs.iter().map(|r| r.load(Ordering::SeqCst)).collect();
    assert_eq!(ran, [2, 1], "the second attempt stopped at its second read");
    let events = events_of(&store, index).await;
    let counted: Vec<&RecordedEvent> = events
        .iter()
        .filter(|e| matches!(e.decode::<NoteEvent>(), Ok(NoteEvent::Counted(_))))
        .collect();
    assert_eq!(counted.len(), 1, "the first attempt's tally, once");
    let done = done.unwrap_or_else(|e| panic!("the command committed, yet it failed: {e:?}"));
    assert!(done.committed.replayed, "{done:?}");
    assert_eq!(done.committed.positions, Some((counted[0].position, counted[0].position)));
}

/// A continuation emitting through a target smuggled out of another decision, naming a product
/// its slot was not bound to, gets a typed [`UndeclaredStream`] error from the executor (not
/// through the command's error type), and nothing is written: not even the event it emitted
/// before to a stream it did declare.
pub async fn emitting_to_an_undiscovered_product_is_a_typed_error<B: Backend>(store: B) {
    let shop = Executor::new(store.clone());
    let bound = stocked(&shop, "bound", 2).await;
    let stranger = stocked(&shop, "stranger", 2).await;
    let before = store.read_all(GlobalPosition::START, 1000).await.unwrap().len();
    // The only way to hold a target of a stream the command did not bind: take it from a
    // decision over another binding of the same slot.
    let elsewhere: Decision<Streams![Products]> =
        eventcore::testing::decision(hlist![Products::bind(vec![stranger.clone()])]);
    let smuggled = elsewhere.targets(Products).next().unwrap();
    let command = MisdirectedRelease { bound: bound.clone(), smuggled };
    match shop.execute(&command).await {
        Err(ExecuteError::UndeclaredStream(UndeclaredStream { slot, stream })) => {
            assert_eq!((slot, stream), ("Products", stranger.stream_id().clone()));
        }
        other => panic!("expected UndeclaredStream, got {other:?}"),
    }
    assert_eq!(store.read_all(GlobalPosition::START, 1000).await.unwrap().len(), before);
}

/// Discovers one product, then (wrongly) releases stock on another.
pub struct MisdirectedRelease {
    bound: ProductId,
    smuggled: Target<Products>,
}

pub struct ReleaseTheWrongOne {
    smuggled: Target<Products>,
}

impl Command for MisdirectedRelease {
    type Streams = Streams![Order];
    type State = OrderState;
    type Error = CommerceError;
    type Continuation = ReleaseTheWrongOne;

    fn streams(&self) -> Bindings<Self::Streams> {
        hlist![Order::bind(order_id("misdirected"))]
    }
}

impl Handle for MisdirectedRelease {
    fn handle(&self, _: &OrderState, decision: Decision<Self::Streams>) -> Handled<Self> {
        let next = ReleaseTheWrongOne { smuggled: self.smuggled.clone() };
        Ok(decision.discover(vec![self.bound.clone()], next))
    }
}

impl Continuation for ReleaseTheWrongOne {
    type Prior = Streams![Order];
    type Slot = Products;
    type State = OrderState;
    type Error = CommerceError;
    type Next = NoDiscovery;

    fn resume(self, _: &OrderState, mut decision: Resuming<Self>) -> Resumed<Self> {
        decision.emit(Order, OrderEvent::Cancelled);
        decision.emit_to(
            Products,
            &self.smuggled,
            ProductEvent::Released { order: order_id("misdirected"), quantity: Quantity::new(1) },
        );
        Ok(decision)
    }
}
