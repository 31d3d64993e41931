//! The derives (`eventcore-macros`, re-exported by `eventcore`), used as the book teaches
//! them: every form of each derive runs here (the macro crate's own doc examples cannot), and
//! each test asserts what the generated code does (events written, states folded, keys
//! honoured), not only that it builds.

use std::collections::BTreeMap;
use std::marker::PhantomData;

use eventcore::prelude::*;
use eventcore::{RequestFields, ValidationError};
use serde::{Deserialize, Serialize};

// ---- ids ------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Hash, StreamKey)]
#[stream_key(category = "account")]
pub struct AccountId(StreamId);

#[derive(Debug, Clone, PartialEq, Eq, Hash, StreamKey)]
#[stream_key(category = "transfer")]
pub struct TransferId(StreamId);

#[derive(Debug, Clone, PartialEq, Eq, Hash, StreamKey)]
#[stream_key(category = "order")]
pub struct OrderId(StreamId);

#[derive(Debug, Clone, PartialEq, Eq, Hash, StreamKey)]
#[stream_key(category = "product")]
pub struct ProductId(StreamId);

// ---- events ---------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
pub enum AccountEvent {
    Opened,
    Deposited { cents: u64 },
    Withdrawn { cents: u64 },
}

/// Renamed twice and reshaped once: its stored name, version and former names are set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "ledger.transfer", version = 2, former = ["TransferRecorded", "LedgerEntry"])]
pub struct TransferRecorded {
    cents: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "order")]
pub enum OrderEvent {
    Placed { products: Vec<String>, units: u32 },
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(version = 1)]
pub enum ProductEvent {
    Reserved { units: u32 },
    Released { units: u32 },
}

slot!(pub Account: AccountEvent, key = AccountId);
slot!(pub FromAccount: AccountEvent, key = AccountId);
slot!(pub ToAccount: AccountEvent, key = AccountId);
slot!(pub Ledger: TransferRecorded, key = TransferId);
slot!(pub Order: OrderEvent, key = OrderId);
slot!(pub Products: [ProductEvent], key = ProductId);

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum BankError {
    #[error("account is not open")]
    NotOpen,
    #[error("insufficient funds: {balance} < {requested}")]
    InsufficientFunds { balance: u64, requested: u64 },
    #[error("transfer already recorded")]
    AlreadyRecorded,
    #[error("{0}")]
    Unexpected(String),
}

// ---- states ---------------------------------------------------------------------------------

/// One account: folds the three account slots through one shared `Apply` (container level).
#[derive(Debug, Default, Fold)]
#[fold(Account, FromAccount, ToAccount)]
pub struct Balance {
    open: bool,
    cents: u64,
    events: u32,
}

impl Apply<AccountEvent> for Balance {
    fn apply(&mut self, event: &AccountEvent) {
        self.events += 1;
        match event {
            AccountEvent::Opened => self.open = true,
            AccountEvent::Deposited { cents } => self.cents += cents,
            AccountEvent::Withdrawn { cents } => self.cents -= cents,
        }
    }
}

#[derive(Debug, Default)]
pub struct Recorded(bool);

impl Apply<TransferRecorded> for Recorded {
    fn apply(&mut self, _: &TransferRecorded) {
        self.0 = true;
    }
}

/// A transfer's state: each slot folds into its own field (field level).
#[derive(Debug, Default, Fold)]
pub struct TransferState {
    #[fold(FromAccount)]
    from: Balance,
    #[fold(ToAccount)]
    to: Balance,
    #[fold(Ledger)]
    recorded: Recorded,
}

// ---- commands -------------------------------------------------------------------------------

#[derive(Command)]
#[command(state = Balance, error = BankError)]
pub struct Open {
    #[slot(Account)]
    account: AccountId,
}

impl Handle for Open {
    fn handle(&self, state: &Balance, mut decision: Decision<Self::Streams>) -> Handled<Self> {
        if !state.open {
            decision.emit(Account, AccountEvent::Opened);
        }
        Ok(decision)
    }
}

/// Keyed by an optional key.
#[derive(Command)]
#[command(state = Balance, error = BankError)]
pub struct Deposit {
    #[slot(Account)]
    account: AccountId,
    cents: u64,
    #[key]
    key: Option<IdempotencyKey>,
}

impl Handle for Deposit {
    fn handle(&self, state: &Balance, mut decision: Decision<Self::Streams>) -> Handled<Self> {
        require!(state.open, BankError::NotOpen);
        decision.emit(Account, AccountEvent::Deposited { cents: self.cents });
        Ok(decision)
    }
}

/// Three slots, two of them of one event type, all keyed, and an idempotency key.
#[derive(Command)]
#[command(state = TransferState, error = BankError)]
pub struct Transfer {
    #[slot(FromAccount)]
    #[fingerprint]
    from: AccountId,
    #[slot(ToAccount)]
    to: AccountId,
    #[slot(Ledger)]
    id: TransferId,
    #[fingerprint]
    cents: u64,
    #[key]
    key: IdempotencyKey,
}

impl Handle for Transfer {
    fn handle(
        &self,
        state: &TransferState,
        mut decision: Decision<Self::Streams>,
    ) -> Handled<Self> {
        require!(state.from.open && state.to.open, BankError::NotOpen);
        require!(!state.recorded.0, BankError::AlreadyRecorded);
        require!(
            state.from.cents >= self.cents,
            BankError::InsufficientFunds { balance: state.from.cents, requested: self.cents }
        );
        decision.emit(FromAccount, AccountEvent::Withdrawn { cents: self.cents });
        decision.emit(ToAccount, AccountEvent::Deposited { cents: self.cents });
        decision.emit(Ledger, TransferRecorded { cents: self.cents });
        Ok(decision)
    }
}

/// No slot at all: the empty stream set.
#[derive(Command)]
#[command(state = (), error = BankError)]
pub struct Nothing {}

impl Handle for Nothing {
    fn handle(&self, _: &(), decision: Decision<Self::Streams>) -> Handled<Self> {
        Ok(decision)
    }
}

fn account(id: &str) -> AccountId {
    AccountId::try_new(id).unwrap()
}

fn key(k: &str) -> IdempotencyKey {
    IdempotencyKey::try_new(k).unwrap()
}

async fn events<E: Event>(executor: &Executor<Memory>, stream: &StreamId) -> Vec<E> {
    let read = executor.backend().read(std::slice::from_ref(stream)).await.unwrap();
    read[0].events.iter().map(|e| e.decode::<E>().unwrap()).collect()
}

async fn balance(executor: &Executor<Memory>, id: &AccountId) -> u64 {
    let events = events::<AccountEvent>(executor, id.stream_id()).await;
    let mut balance = Balance::default();
    events.iter().for_each(|e| balance.apply(e));
    balance.cents
}

#[tokio::test]
async fn a_derived_command_binds_its_slots_folds_its_state_and_honours_its_key() {
    let executor = Executor::new(Memory::new());
    let (alice, bob) = (account("alice"), account("bob"));
    for id in [&alice, &bob] {
        executor.execute(&Open { account: id.clone() }).await.unwrap();
    }
    executor.execute(&Deposit { account: alice.clone(), cents: 100, key: None }).await.unwrap();

    let transfer = Transfer {
        from: alice.clone(),
        to: bob.clone(),
        id: TransferId::try_new("t-1").unwrap(),
        cents: 30,
        key: key("transfer:t-1"),
    };
    let first = executor.execute(&transfer).await.unwrap();
    assert!(!first.committed.replayed);
    let streams: Vec<&str> = first.committed.streams.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(streams.len(), 3);
    for stream in ["account-alice", "account-bob", "transfer-t-1"] {
        assert!(streams.contains(&stream), "{stream} was written: {streams:?}");
    }

    // The same key again: the first commit answers, nothing is written twice.
    let again = executor.execute(&transfer).await.unwrap();
    assert!(again.committed.replayed);
    assert_eq!(again.committed.positions, first.committed.positions);
    assert_eq!(balance(&executor, &alice).await, 70);
    assert_eq!(balance(&executor, &bob).await, 30);
    let ledger = events::<TransferRecorded>(&executor, transfer.id.stream_id()).await;
    assert_eq!(ledger, [TransferRecorded { cents: 30 }]);

    // The same key with another amount (`#[fingerprint]`): refused, not answered with the
    // transfer of 30, and nothing written.
    let changed = Transfer {
        from: alice.clone(),
        to: bob.clone(),
        id: transfer.id.clone(),
        cents: 31,
        key: key("transfer:t-1"),
    };
    match executor.execute(&changed).await {
        Err(ExecuteError::KeyReused { first, this, .. }) => assert_ne!(first, this),
        other => panic!("another amount under the key was not refused: {other:?}"),
    }
    assert_eq!(balance(&executor, &alice).await, 70);
    // The same streams in the other roles (`from` is marked `#[fingerprint]`): refused.
    let reversed = Transfer {
        from: bob.clone(),
        to: alice.clone(),
        id: transfer.id.clone(),
        cents: 30,
        key: key("transfer:t-1"),
    };
    match executor.execute(&reversed).await {
        Err(ExecuteError::KeyReused { first, this, .. }) => assert_ne!(first, this),
        other => panic!("the reversed transfer under the key was not refused: {other:?}"),
    }
    assert_eq!(balance(&executor, &bob).await, 30);

    // Under another key the state, folded field by field, rejects the recorded transfer.
    let other = Transfer { key: key("transfer:t-1:again"), ..transfer };
    let rejected = executor.execute(&other).await;
    assert!(matches!(rejected, Err(ExecuteError::Rejected(BankError::AlreadyRecorded))));

    // And the balances it folded decide too.
    let too_much = Transfer {
        id: TransferId::try_new("t-2").unwrap(),
        cents: 500,
        key: key("transfer:t-2"),
        ..other
    };
    let rejected = executor.execute(&too_much).await;
    assert!(matches!(
        rejected,
        Err(ExecuteError::Rejected(BankError::InsufficientFunds { balance: 70, requested: 500 }))
    ));
}

#[tokio::test]
async fn an_optional_key_applies_when_it_is_some() {
    let executor = Executor::new(Memory::new());
    let carol = account("carol");
    executor.execute(&Open { account: carol.clone() }).await.unwrap();
    let keyed = Deposit { account: carol.clone(), cents: 5, key: Some(key("deposit-1")) };
    assert!(!executor.execute(&keyed).await.unwrap().committed.replayed);
    assert!(executor.execute(&keyed).await.unwrap().committed.replayed);
    assert_eq!(balance(&executor, &carol).await, 5);

    let unkeyed = Deposit { account: carol.clone(), cents: 5, key: None };
    assert_eq!(unkeyed.idempotency_key(), None);
    executor.execute(&unkeyed).await.unwrap();
    executor.execute(&unkeyed).await.unwrap();
    assert_eq!(balance(&executor, &carol).await, 15);
    assert_eq!(keyed.idempotency_key(), Some(key("deposit-1")));
}

/// A command a `macro_rules!` writes, its field's attributes passed on as fragments: the
/// compiler hands them to the derive in invisible groups, which the derive must read too.
macro_rules! command_with_attributes {
    ($name:ident { $(#[$attr:meta])* $field:ident: $ty:ty }) => {
        #[derive(Command)]
        #[command(state = Balance, error = BankError)]
        pub struct $name {
            $(#[$attr])*
            $field: $ty,
        }

        impl Handle for $name {
            fn handle(&self, _: &Balance, mut decision: Decision<Self::Streams>) -> Handled<Self> {
                decision.emit(Account, AccountEvent::Opened);
                Ok(decision)
            }
        }
    };
}

command_with_attributes!(OpenFromMacro {
    #[slot(Account)]
    account: AccountId
});

#[tokio::test]
async fn a_slot_attribute_passed_on_by_a_macro_binds_its_slot() {
    assert_eq!(<<OpenFromMacro as Command>::Streams as eventcore::command::StreamSet>::LEN, 1);
    let executor = Executor::new(Memory::new());
    let dave = account("dave");
    executor.execute(&OpenFromMacro { account: dave.clone() }).await.unwrap();
    let opened: Vec<AccountEvent> = events(&executor, dave.stream_id()).await;
    assert_eq!(opened, vec![AccountEvent::Opened]);
}

#[tokio::test]
async fn a_command_without_slots_has_the_empty_stream_set() {
    assert_eq!(<<Nothing as Command>::Streams as eventcore::command::StreamSet>::LEN, 0);
    let executed = Executor::new(Memory::new()).execute(&Nothing {}).await.unwrap();
    assert!(executed.committed.streams.is_empty());
    assert_eq!(Nothing {}.idempotency_key(), None);
}

// ---- many slots -----------------------------------------------------------------------------

// Seventeen slots, for commands of 16 and 17 slots.
slot!(pub W0: AccountEvent);
slot!(pub W1: AccountEvent);
slot!(pub W2: AccountEvent);
slot!(pub W3: AccountEvent);
slot!(pub W4: AccountEvent);
slot!(pub W5: AccountEvent);
slot!(pub W6: AccountEvent);
slot!(pub W7: AccountEvent);
slot!(pub W8: AccountEvent);
slot!(pub W9: AccountEvent);
slot!(pub W10: AccountEvent);
slot!(pub W11: AccountEvent);
slot!(pub W12: AccountEvent);
slot!(pub W13: AccountEvent);
slot!(pub W14: AccountEvent);
slot!(pub W15: AccountEvent);
slot!(pub W16: AccountEvent);

/// How many account events the streams of a wide command hold together.
#[derive(Debug, Default, Fold)]
#[fold(W0, W1, W2, W3, W4, W5, W6, W7, W8, W9, W10, W11, W12, W13, W14, W15, W16)]
pub struct SeenAll(u64);

impl Apply<AccountEvent> for SeenAll {
    fn apply(&mut self, _: &AccountEvent) {
        self.0 += 1;
    }
}

/// Declares command `$name`, binding each `$field` to `$slot`: it deposits one cent into each
/// of its streams if they hold `expect` events together. `$name::new(prefix, expect)` binds
/// field `i` (in order) to stream `<prefix>-<i>`.
macro_rules! wide_command {
    ($name:ident { $($field:ident: $slot:ident = $i:literal),+ }) => {
        #[derive(Command)]
        #[command(state = SeenAll, error = BankError)]
        pub struct $name {
            $(#[slot($slot)] $field: StreamId,)+
            expect: u64,
        }

        impl Handle for $name {
            fn handle(&self, seen: &SeenAll, mut decision: Decision<Self::Streams>) -> Handled<Self> {
                require!(seen.0 == self.expect, BankError::Unexpected(format!("saw {}", seen.0)));
                $(decision.emit($slot, AccountEvent::Deposited { cents: 1 });)+
                Ok(decision)
            }
        }

        impl $name {
            fn new(prefix: &str, expect: u64) -> Self {
                let id = |i: u32| StreamId::try_new(format!("{prefix}-{i}")).unwrap();
                Self { $($field: id($i),)+ expect }
            }
        }
    };
}

// The most slots whose bindings the derive writes as a tuple (frunk's `From`), and one more:
// nested `HCons` cells.
#[rustfmt::skip]
wide_command!(Sixteen { s0: W0 = 0, s1: W1 = 1, s2: W2 = 2, s3: W3 = 3, s4: W4 = 4, s5: W5 = 5, s6: W6 = 6, s7: W7 = 7, s8: W8 = 8, s9: W9 = 9, s10: W10 = 10, s11: W11 = 11, s12: W12 = 12, s13: W13 = 13, s14: W14 = 14, s15: W15 = 15 });
#[rustfmt::skip]
wide_command!(Seventeen { s0: W0 = 0, s1: W1 = 1, s2: W2 = 2, s3: W3 = 3, s4: W4 = 4, s5: W5 = 5, s6: W6 = 6, s7: W7 = 7, s8: W8 = 8, s9: W9 = 9, s10: W10 = 10, s11: W11 = 11, s12: W12 = 12, s13: W13 = 13, s14: W14 = 14, s15: W15 = 15, s16: W16 = 16 });

/// Runs a command of `n` slots made by `make(expect)`, over streams `<prefix>-0..n`: it binds
/// each field to its stream in order, folds every stream, and writes one event to each.
async fn binds_folds_and_writes_each<C: Handle<Error = BankError>>(
    n: u64,
    prefix: &str,
    make: impl Fn(u64) -> C,
) {
    assert_eq!(<C::Streams as eventcore::command::StreamSet>::LEN as u64, n);
    let mut bound = Vec::new();
    <C::Streams as eventcore::command::StreamSet>::for_each_id(&make(0).streams(), &mut |id| {
        bound.push(id.as_str().to_owned())
    });
    assert_eq!(bound, (0..n).map(|i| format!("{prefix}-{i}")).collect::<Vec<_>>());

    let executor = Executor::new(Memory::new());
    executor.execute(&make(0)).await.unwrap();
    // The second run folds one event from each of the streams.
    executor.execute(&make(n)).await.unwrap();
    let err = executor.execute(&make(n)).await.unwrap_err();
    assert!(err.to_string().contains(&format!("saw {}", 2 * n)), "{err}");
    for i in 0..n {
        let stream = StreamId::try_new(format!("{prefix}-{i}")).unwrap();
        assert_eq!(events::<AccountEvent>(&executor, &stream).await.len(), 2, "{prefix}-{i}");
    }
}

#[tokio::test]
async fn a_command_of_sixteen_slots_binds_folds_and_writes_each_in_order() {
    binds_folds_and_writes_each(16, "sixteen", |expect| Sixteen::new("sixteen", expect)).await;
}

#[tokio::test]
async fn a_command_of_seventeen_slots_binds_folds_and_writes_each_in_order() {
    binds_folds_and_writes_each(17, "seventeen", |expect| Seventeen::new("seventeen", expect))
        .await;
}

// ---- generics -------------------------------------------------------------------------------

/// Every account event seen, converted to `T`: a generic state, folded at container level.
#[derive(Debug, Fold)]
#[fold(Account)]
pub struct History<T>
where
    T: From<AccountEvent>,
{
    seen: Vec<T>,
}

impl<T: From<AccountEvent>> Default for History<T> {
    fn default() -> Self {
        Self { seen: Vec::new() }
    }
}

impl<T: From<AccountEvent>> Apply<AccountEvent> for History<T> {
    fn apply(&mut self, event: &AccountEvent) {
        self.seen.push(T::from(event.clone()));
    }
}

/// Deposits one cent per event it has seen: a generic command whose state is generic too.
#[derive(Command)]
#[command(state = History<T>, error = BankError)]
pub struct Tally<T>
where
    T: From<AccountEvent> + Send + 'static,
{
    #[slot(Account)]
    account: AccountId,
    seen_as: PhantomData<fn() -> T>,
}

impl<T> Handle for Tally<T>
where
    T: From<AccountEvent> + Send + 'static,
{
    fn handle(&self, state: &History<T>, mut decision: Decision<Self::Streams>) -> Handled<Self> {
        let cents = state.seen.len() as u64;
        decision.emit(Account, AccountEvent::Deposited { cents });
        Ok(decision)
    }
}

/// What `Tally` converts events to.
pub struct Seen;
impl From<AccountEvent> for Seen {
    fn from(_: AccountEvent) -> Self {
        Seen
    }
}

#[tokio::test]
async fn a_generic_command_with_a_generic_state_runs() {
    let executor = Executor::new(Memory::new());
    let dave = account("dave");
    executor.execute(&Open { account: dave.clone() }).await.unwrap();
    let tally = Tally::<Seen> { account: dave.clone(), seen_as: PhantomData };
    executor.execute(&tally).await.unwrap(); // saw Opened: deposits 1
    executor.execute(&tally).await.unwrap(); // saw Opened, Deposited: deposits 2
    assert_eq!(balance(&executor, &dave).await, 3);
}

// ---- discovery and by_stream folds ----------------------------------------------------------

#[derive(Debug, Default)]
pub struct OrderState {
    products: Vec<String>,
    units: u32,
    cancelled: bool,
}

impl Apply<OrderEvent> for OrderState {
    fn apply(&mut self, event: &OrderEvent) {
        match event {
            OrderEvent::Placed { products, units } => {
                self.products.clone_from(products);
                self.units = *units;
            }
            OrderEvent::Cancelled => self.cancelled = true,
        }
    }
}

/// Units reserved in one product's stream.
#[derive(Debug, Default)]
pub struct Stock {
    reserved: u32,
}

impl Apply<ProductEvent> for Stock {
    fn apply(&mut self, event: &ProductEvent) {
        match event {
            ProductEvent::Reserved { units } => self.reserved += units,
            ProductEvent::Released { units } => self.reserved -= units,
        }
    }
}

/// An order and, once discovered, each of its products' stock, stream by stream.
#[derive(Debug, Default, Fold)]
pub struct OrderWithStock {
    #[fold(Order)]
    order: OrderState,
    #[fold(Products, by_stream)]
    stock: BTreeMap<StreamId, Stock>,
}

#[derive(Command)]
#[command(state = OrderWithStock, error = BankError)]
pub struct PlaceOrder {
    #[slot(Order)]
    order: OrderId,
    #[slot(Products)]
    products: Vec<ProductId>,
    units: u32,
}

impl Handle for PlaceOrder {
    fn handle(&self, _: &OrderWithStock, mut decision: Decision<Self::Streams>) -> Handled<Self> {
        let products = self.products.iter().map(|p| p.id().to_owned()).collect();
        decision.emit(Order, OrderEvent::Placed { products, units: self.units });
        for product in decision.targets(Products) {
            let event = ProductEvent::Reserved { units: self.units };
            decision.emit_to(Products, &product, event);
        }
        Ok(decision)
    }
}

/// Cancels an order: reads it, discovers its products, releases what each one reserved.
#[derive(Command)]
#[command(state = OrderWithStock, error = BankError, continuation = Release)]
pub struct CancelOrder {
    #[slot(Order)]
    order: OrderId,
}

impl Handle for CancelOrder {
    fn handle(&self, state: &OrderWithStock, decision: Decision<Self::Streams>) -> Handled<Self> {
        let products = state
            .order
            .products
            .iter()
            .map(|p| ProductId::try_new(p))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| BankError::Unexpected(e.to_string()))?;
        Ok(decision.discover(products, Release))
    }
}

/// The rest of `CancelOrder`, once the products are read.
pub struct Release;

impl Continuation for Release {
    type Prior = Streams![Order];
    type Slot = Products;
    type State = OrderWithStock;
    type Error = BankError;
    type Next = NoDiscovery;

    fn resume(self, state: &OrderWithStock, mut decision: Resuming<Self>) -> Resumed<Self> {
        for product in decision.targets(Products) {
            let reserved = state.stock.get(product.id()).map_or(0, |stock| stock.reserved);
            decision.emit_to(Products, &product, ProductEvent::Released { units: reserved });
        }
        decision.emit(Order, OrderEvent::Cancelled);
        Ok(decision)
    }
}

#[tokio::test]
async fn a_derived_command_discovers_through_its_named_continuation() {
    let executor = Executor::new(Memory::new());
    let order = OrderId::try_new("o-1").unwrap();
    let (apple, pear) = (ProductId::try_new("apple").unwrap(), ProductId::try_new("pear").unwrap());
    let place =
        PlaceOrder { order: order.clone(), products: vec![apple.clone(), pear.clone()], units: 3 };
    executor.execute(&place).await.unwrap();
    // Another order reserves more apples: the apple stream's fold adds both up.
    let other = PlaceOrder {
        order: OrderId::try_new("o-2").unwrap(),
        products: vec![apple.clone()],
        units: 4,
    };
    executor.execute(&other).await.unwrap();

    executor.execute(&CancelOrder { order: order.clone() }).await.unwrap();

    let released = |events: Vec<ProductEvent>| events.last().cloned();
    assert_eq!(
        released(events(&executor, apple.stream_id()).await),
        Some(ProductEvent::Released { units: 7 }),
        "the apple stream's own entry folded both reservations"
    );
    assert_eq!(
        released(events(&executor, pear.stream_id()).await),
        Some(ProductEvent::Released { units: 3 })
    );
    let order_events = events::<OrderEvent>(&executor, order.stream_id()).await;
    assert_eq!(order_events.last(), Some(&OrderEvent::Cancelled));
}

/// Reserves units line by line; a product may appear on several lines.
#[derive(Command)]
#[command(state = OrderWithStock, error = BankError)]
pub struct ReserveLines {
    #[slot(Products)]
    products: Vec<ProductId>,
    /// Units per line, one per entry of `products`.
    units: Vec<u32>,
}

impl Handle for ReserveLines {
    fn handle(&self, _: &OrderWithStock, mut decision: Decision<Self::Streams>) -> Handled<Self> {
        for (units, product) in self.units.iter().zip(decision.targets(Products)) {
            decision.emit_to(Products, &product, ProductEvent::Reserved { units: *units });
        }
        Ok(decision)
    }
}

#[tokio::test]
async fn targets_follow_the_binding_one_to_one_when_a_stream_is_named_twice() {
    let executor = Executor::new(Memory::new());
    let (apple, pear) = (ProductId::try_new("apple").unwrap(), ProductId::try_new("pear").unwrap());
    let command = ReserveLines {
        products: vec![apple.clone(), pear.clone(), apple.clone()],
        units: vec![1, 2, 3],
    };
    executor.execute(&command).await.unwrap();
    let reserved = |units| ProductEvent::Reserved { units };
    assert_eq!(
        events::<ProductEvent>(&executor, apple.stream_id()).await,
        [reserved(1), reserved(3)]
    );
    assert_eq!(events::<ProductEvent>(&executor, pear.stream_id()).await, [reserved(2)]);
}

#[test]
fn by_stream_folds_each_stream_into_its_own_entry() {
    let (a, b) = (StreamId::try_new("product-a").unwrap(), StreamId::try_new("product-b").unwrap());
    let mut state = OrderWithStock::default();
    Fold::<Products>::fold(&mut state, &a, &ProductEvent::Reserved { units: 2 });
    Fold::<Products>::fold(&mut state, &b, &ProductEvent::Reserved { units: 5 });
    Fold::<Products>::fold(&mut state, &a, &ProductEvent::Released { units: 1 });
    Fold::<Order>::fold(&mut state, &a, &OrderEvent::Cancelled);
    assert_eq!(state.stock[&a].reserved, 1);
    assert_eq!(state.stock[&b].reserved, 5);
    assert!(state.order.cancelled);
}

// ---- events ---------------------------------------------------------------------------------

#[tokio::test]
async fn derived_events_are_stored_under_their_name_and_version() {
    assert_eq!(AccountEvent::EVENT_TYPE, "AccountEvent");
    assert_eq!(AccountEvent::SCHEMA_VERSION, 1);
    assert!(AccountEvent::FORMER_TYPES.is_empty());
    assert_eq!(TransferRecorded::EVENT_TYPE, "ledger.transfer");
    assert_eq!(TransferRecorded::SCHEMA_VERSION, 2);
    assert_eq!(TransferRecorded::FORMER_TYPES, ["TransferRecorded", "LedgerEntry"]);
    assert_eq!(OrderEvent::EVENT_TYPE, "order");
    assert_eq!(ProductEvent::SCHEMA_VERSION, 1);

    let executor = Executor::new(Memory::new());
    let (erin, frank) = (account("erin"), account("frank"));
    for id in [&erin, &frank] {
        executor.execute(&Open { account: id.clone() }).await.unwrap();
    }
    executor.execute(&Deposit { account: erin.clone(), cents: 9, key: None }).await.unwrap();
    let id = TransferId::try_new("t-9").unwrap();
    let transfer =
        Transfer { from: erin, to: frank, id: id.clone(), cents: 9, key: key("transfer:t-9") };
    executor.execute(&transfer).await.unwrap();
    let read = executor.backend().read(std::slice::from_ref(id.stream_id())).await.unwrap();
    let stored = &read[0].events[0];
    assert_eq!(&*stored.event_type, "ledger.transfer");
    assert_eq!(stored.schema_version, 2);
}

// ---- stream keys ----------------------------------------------------------------------------

#[test]
fn a_stream_key_names_its_category_stream() {
    let id = AccountId::try_new("42").unwrap();
    assert_eq!(AccountId::CATEGORY, "account");
    assert_eq!(id.id(), "42");
    assert_eq!(id.stream_id().as_str(), "account-42");
    assert_eq!(id.to_string(), "42");
    assert_eq!(format!("[{id:>4}]"), "[  42]");
    assert_eq!("42".parse::<AccountId>().unwrap(), id);
    assert_eq!(Account::bind(id.clone()).ids()[0].as_str(), "account-42");
    assert_eq!(id.into_stream_id().as_str(), "account-42");
    // An id with the separator in it keeps it.
    assert_eq!(AccountId::try_new("a-b").unwrap().id(), "a-b");
}

#[test]
fn a_stream_key_refuses_invalid_ids_with_a_typed_error() {
    for bad in ["", " 42", "42 ", "4\n2", &"x".repeat(300)] {
        let err: ValidationError = AccountId::try_new(bad).unwrap_err();
        assert_eq!(err.type_name(), "AccountId", "{bad:?}");
        assert!(bad.parse::<AccountId>().is_err());
    }
    // Too long only once the category is added: still refused, never cut.
    let just_fits = "x".repeat(StreamId::MAX_LEN);
    assert!(StreamId::try_new(&just_fits).is_ok());
    assert_eq!(AccountId::try_new(&just_fits).unwrap_err().type_name(), "AccountId");
}

#[test]
fn a_stream_key_comes_back_from_its_stream_id_and_only_from_one_of_its_category() {
    for id in ["42", "a-b", "account-7"] {
        let key = AccountId::try_new(id).unwrap();
        assert_eq!(AccountId::from_stream_id(key.stream_id()).unwrap(), key);
    }
    let stream = |s: &str| StreamId::try_new(s).unwrap();
    // Another category, a category that merely starts the same, no id, an id try_new refuses.
    for bad in ["order-42", "accounts-42", "account", "account-", "account- 42"] {
        let err: ValidationError = AccountId::from_stream_id(&stream(bad)).unwrap_err();
        assert_eq!(err.type_name(), "AccountId", "{bad:?}");
    }
    let err = AccountId::from_stream_id(&stream("order-42")).unwrap_err();
    assert!(err.to_string().contains("not a stream of category `account`"), "{err}");
}

#[test]
fn a_stream_key_serializes_as_its_id_and_validates_on_deserialize() {
    let id = AccountId::try_new("42").unwrap();
    assert_eq!(serde_json::to_string(&id).unwrap(), r#""42""#);
    let back: AccountId = serde_json::from_str(r#""42""#).unwrap();
    assert_eq!(back, id);
    assert_eq!(back.stream_id().as_str(), "account-42");

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Request {
        from: AccountId,
        transfer: TransferId,
    }
    let request = Request { from: id, transfer: TransferId::try_new("t-1").unwrap() };
    let json = serde_json::to_string(&request).unwrap();
    assert_eq!(json, r#"{"from":"42","transfer":"t-1"}"#);
    assert_eq!(serde_json::from_str::<Request>(&json).unwrap(), request);

    let err = serde_json::from_str::<AccountId>(r#"" 42""#).unwrap_err();
    assert!(err.to_string().contains("AccountId"), "{err}");
    assert!(serde_json::from_str::<AccountId>(r#""""#).is_err());
    assert!(serde_json::from_str::<AccountId>("42").is_err());

    // Built around a stream of another category (by its tuple constructor, not `try_new`), it
    // would come back as `account-acct-1`, another stream: it does not serialize.
    let stray = AccountId(StreamId::try_new("acct-1").unwrap());
    let err = serde_json::to_string(&stray).unwrap_err();
    assert!(err.to_string().contains("not a stream of category `account`"), "{err}");
}

// ---- hygiene --------------------------------------------------------------------------------

/// The derives name everything by absolute path: they need no import, and names of the user's
/// that shadow the standard ones do not change them.
mod hygiene {
    #![allow(dead_code)]
    struct Option;
    struct Result;
    struct Clone;
    struct Default;

    /// A trait of the user's with a method named like one the derives call: a method call
    /// `.clone()` in their output would be ambiguous (E0034) here.
    trait Duplicate {
        fn clone(&self) -> u8 {
            0
        }
    }
    impl<T> Duplicate for T {}

    // `Clone` the derive (a macro) is not `Clone` the struct above (a type).
    #[derive(Clone, eventcore::StreamKey)]
    #[stream_key(category = "gauge")]
    pub struct GaugeId(eventcore::StreamId);

    #[derive(serde::Serialize, serde::Deserialize, eventcore::Event)]
    pub enum GaugeEvent {
        Moved,
    }

    eventcore::slot!(pub Gauge: GaugeEvent, key = GaugeId);

    #[derive(Default, eventcore::Fold)]
    #[fold(Gauge)]
    pub struct Moves(pub u32);

    impl eventcore::Apply<GaugeEvent> for Moves {
        fn apply(&mut self, _: &GaugeEvent) {
            self.0 += 1;
        }
    }

    #[derive(eventcore::Command)]
    #[command(state = Moves, error = super::BankError)]
    pub struct Move {
        #[slot(Gauge)]
        pub gauge: GaugeId,
        #[key]
        pub key: eventcore::IdempotencyKey,
    }
}

#[test]
fn the_derives_need_no_imports_and_ignore_shadowing_names() {
    let gauge = hygiene::GaugeId::try_new("g1").unwrap();
    let command = hygiene::Move { gauge, key: key("move-1") };
    let bound = Command::streams(&command);
    assert_eq!(bound.head.ids()[0].as_str(), "gauge-g1");
    assert_eq!(command.idempotency_key(), Some(key("move-1")));
    let mut moves = hygiene::Moves::default();
    Fold::<hygiene::Gauge>::fold(
        &mut moves,
        bound.head.ids().first().unwrap(),
        &hygiene::GaugeEvent::Moved,
    );
    assert_eq!(moves.0, 1);
    assert_eq!(<hygiene::GaugeEvent as Event>::EVENT_TYPE, "GaugeEvent");
}

/// A `#[derive(StreamKey)]` id is a field a fingerprint can hold: its stream id's text.
#[test]
fn a_derived_id_is_a_request_field_as_its_stream_id() {
    let (mut by_id, mut by_stream) = (RequestFields::new(), RequestFields::new());
    by_id.add("account", &account("alice"));
    by_stream.add("account", account("alice").stream_id());
    assert_eq!(by_id, by_stream);
    let mut other = RequestFields::new();
    other.add("account", &account("bob"));
    assert_ne!(by_id, other);
}

/// Helper attributes written as raw identifiers (`#[r#fingerprint]`, `#[r#key]`) are the same
/// attributes to the compiler, and to the derive: none is dropped without a word (a dropped
/// `#[r#fingerprint]` would leave the amount out of the fingerprint, a dropped `#[r#key]` the
/// key out of the command).
#[derive(Command)]
#[command(state = Balance, error = BankError)]
pub struct RawAttributes {
    #[r#slot(Account)]
    account: AccountId,
    #[r#fingerprint]
    cents: u64,
    #[r#key]
    key: IdempotencyKey,
}

#[test]
fn helper_attributes_written_raw_are_honoured() {
    let command = RawAttributes { account: account("erin"), cents: 5, key: key("raw-1") };
    assert_eq!(command.idempotency_key(), Some(key("raw-1")));
    let (mut fields, mut want) = (RequestFields::new(), RequestFields::new());
    command.request_fields(&mut fields);
    want.add("cents", &5u64);
    assert_eq!(fields, want);
}

/// `#[r#event(..)]`, `#[r#fold(..)]` and `#[r#stream_key(..)]` are the derives' attributes too.
#[derive(Debug, Serialize, Deserialize, Event)]
#[r#event(name = "RawNamed", version = 2)]
pub struct RawEvent;

#[derive(Debug, Clone, StreamKey)]
#[r#stream_key(category = "rawcat")]
pub struct RawId(StreamId);

slot!(pub RawSlot: RawEvent, key = RawId);

#[derive(Default, Fold)]
#[r#fold(RawSlot)]
pub struct RawFolded(u32);

impl Apply<RawEvent> for RawFolded {
    fn apply(&mut self, _: &RawEvent) {
        self.0 += 1;
    }
}

#[test]
fn the_other_derives_honour_their_attributes_written_raw() {
    assert_eq!(<RawEvent as Event>::EVENT_TYPE, "RawNamed");
    assert_eq!(<RawEvent as Event>::SCHEMA_VERSION, 2);
    assert_eq!(RawId::try_new("1").unwrap().stream_id().as_str(), "rawcat-1");
    let mut state = RawFolded::default();
    Fold::<RawSlot>::fold(&mut state, &StreamId::try_new("rawcat-1").unwrap(), &RawEvent);
    assert_eq!(state.0, 1);
}

// ---- derives written by a macro_rules! ------------------------------------------------------

/// A command whose derive is written in a `macro_rules!` body and whose field types come from
/// the macro's caller: the `self` of the generated `streams` must be the method's own, however
/// the field's type is spanned.
macro_rules! account_command {
    ($name:ident, $id:tt, $key:tt, $amount:tt) => {
        #[derive(Command)]
        #[command(state = Balance, error = BankError)]
        pub struct $name {
            #[slot(Account)]
            account: $id,
            #[fingerprint]
            cents: $amount,
            #[key]
            key: $key,
        }
    };
}

account_command!(MacroDeposit, AccountId, IdempotencyKey, u64);

/// The same without a `#[fingerprint]`: the plain form, which the fast path expands.
macro_rules! plain_account_command {
    ($name:ident, $id:tt, $key:tt) => {
        #[derive(Command)]
        #[command(state = Balance, error = BankError)]
        pub struct $name {
            #[slot(Account)]
            account: $id,
            #[key]
            key: $key,
        }
    };
}

plain_account_command!(MacroOpen, AccountId, IdempotencyKey);

/// A state whose field types come from a `macro_rules!`'s caller, folded per field and by
/// stream.
macro_rules! folded_state {
    ($name:ident, $balance:tt, $map:ty) => {
        #[derive(Default, Fold)]
        pub struct $name {
            #[fold(Account)]
            balance: $balance,
            #[fold(FromAccount, by_stream)]
            each: $map,
        }
    };
}

folded_state!(MacroState, Balance, BTreeMap<StreamId, Balance>);

#[test]
fn derives_written_by_a_macro_take_field_types_from_its_caller() {
    let command = MacroDeposit { account: account("mac"), cents: 7, key: key("mac-1") };
    assert_eq!(command.streams().head.ids()[0].as_str(), "account-mac");
    assert_eq!(command.idempotency_key(), Some(key("mac-1")));
    let (mut fields, mut want) = (RequestFields::new(), RequestFields::new());
    command.request_fields(&mut fields);
    want.add("cents", &7u64);
    assert_eq!(fields, want);
    let open = MacroOpen { account: account("mac"), key: key("mac-2") };
    assert_eq!(open.streams().head.ids()[0].as_str(), "account-mac");
    assert_eq!(open.idempotency_key(), Some(key("mac-2")));

    let mut state = MacroState::default();
    let stream = StreamId::try_new("account-mac").unwrap();
    Fold::<Account>::fold(&mut state, &stream, &AccountEvent::Deposited { cents: 3 });
    Fold::<FromAccount>::fold(&mut state, &stream, &AccountEvent::Deposited { cents: 4 });
    assert_eq!(state.balance.cents, 3);
    assert_eq!(state.each[&stream].cents, 4);
}

// ---- continuation attribute -----------------------------------------------------------------

/// `CancelOrder`'s continuation written again through `#[continuation(..)]`, its impl opening
/// with an inner attribute (which must stay first in the block).
pub struct ReleaseAttributed;

#[continuation(command = CancelOrder, slot = Products)]
impl Continuation for ReleaseAttributed {
    #![allow(clippy::needless_pass_by_value)]

    fn resume(self, _: &OrderWithStock, decision: Resuming<Self>) -> Resumed<Self> {
        Ok(decision)
    }
}

#[test]
fn a_continuation_impl_may_open_with_an_inner_attribute() {
    use std::any::TypeId;
    type Of<K> = (
        <K as Continuation>::Prior,
        <K as Continuation>::Slot,
        <K as Continuation>::State,
        <K as Continuation>::Error,
        <K as Continuation>::Next,
    );
    assert_eq!(TypeId::of::<Of<ReleaseAttributed>>(), TypeId::of::<Of<Release>>());
}
