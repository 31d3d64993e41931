//! The given/when/then harness (`eventcore::testing::Scenario`) on the example domains: a
//! transfer over three slots, rejections, a command that emits nothing, a cancellation that
//! discovers streams in two rounds; the failure messages and where they point; and the same
//! scenarios through an executor on a real backend.

#[path = "../examples/banking/domain.rs"]
mod banking;
#[path = "../examples/ecommerce/domain.rs"]
mod ecommerce;
#[cfg(feature = "postgres")]
#[path = "support/postgres.rs"]
mod postgres_support;

#[path = "support/panics.rs"]
mod panics;

use panics::{failure, points_at};

use banking::{
    Account, AccountEvent, AccountId, AccountState, BankError, FromAccount, Ledger, Money,
    ToAccount, Transfer, TransferEvent, TransferId,
};
use ecommerce::{
    CancelOrder, CommerceError, Customer, CustomerEvent, CustomerId, Order, OrderEvent, OrderId,
    OrderLine, Price, ProductEvent, ProductId, Products, Quantity,
};
use eventcore::{
    Backend, ExecuteError, Executor, Memory, StreamId,
    backend::StoreError,
    prelude::*,
    testing::{Emitted, Scenario},
};

fn account(name: &str) -> AccountId {
    AccountId::try_new(name).unwrap()
}

fn transfer_id(name: &str) -> TransferId {
    TransferId::try_new(name).unwrap()
}

fn cents(n: u64) -> Money {
    Money::from_cents(n)
}

/// Alice holds $1.00, Bob has an account.
fn alice_and_bob() -> Scenario {
    Scenario::new()
        .given(
            FromAccount,
            &account("alice").stream_id().clone(),
            [
                AccountEvent::Opened { owner: "Alice".into() },
                AccountEvent::Deposited { amount: cents(100) },
            ],
        )
        .given(
            ToAccount,
            &account("bob").stream_id().clone(),
            [AccountEvent::Opened { owner: "Bob".into() }],
        )
}

fn transfer(amount: u64) -> Transfer {
    Transfer::new(transfer_id("t-1"), account("alice"), account("bob"), cents(amount)).unwrap()
}

/// What `transfer(amount)` must emit to the accounts: out of Alice, into Bob.
fn accounts_moved(amount: u64) -> Emitted {
    let t = transfer_id("t-1");
    Emitted::new()
        .to(
            FromAccount,
            &account("alice").stream_id().clone(),
            [AccountEvent::TransferredOut {
                transfer: t.clone(),
                to: account("bob"),
                amount: cents(amount),
            }],
        )
        .to(
            ToAccount,
            &account("bob").stream_id().clone(),
            [AccountEvent::TransferredIn {
                transfer: t,
                from: account("alice"),
                amount: cents(amount),
            }],
        )
}

/// What `transfer(amount)` must emit: [`accounts_moved`], and the ledger entry.
fn transferred(amount: u64) -> Emitted {
    accounts_moved(amount).to(
        Ledger,
        &transfer_id("t-1").stream_id().clone(),
        [TransferEvent::Completed {
            from: account("alice"),
            to: account("bob"),
            amount: cents(amount),
        }],
    )
}

#[test]
fn a_transfer_emits_to_each_of_its_three_slots() {
    alice_and_bob().when(&transfer(30)).then_emits(transferred(30));
}

#[test]
fn a_transfer_without_the_funds_is_rejected_with_the_balance() {
    alice_and_bob()
        .when(&transfer(150))
        .then_rejects(BankError::InsufficientFunds { balance: cents(100), requested: cents(150) });
}

#[test]
fn a_transfer_from_an_account_never_opened_is_rejected_by_pattern() {
    let only_bob = Scenario::new().given(
        ToAccount,
        &account("bob").stream_id().clone(),
        [AccountEvent::Opened { owner: "Bob".into() }],
    );
    only_bob.when(&transfer(30)).then_rejects_with(|e| matches!(e, BankError::NotOpen));
}

#[test]
fn a_transfer_already_in_the_ledger_emits_nothing() {
    alice_and_bob()
        .given(
            Ledger,
            &transfer_id("t-1").stream_id().clone(),
            [TransferEvent::Completed {
                from: account("alice"),
                to: account("bob"),
                amount: cents(30),
            }],
        )
        .when(&transfer(30))
        .then_emits_nothing();
}

// The e-commerce domain: cancelling order o-1 (2 of product a, 1 of product b) reads the order,
// discovers both products, then the customer, and releases the stock and revokes the points.

fn product(name: &str) -> StreamId {
    ProductId::try_new(name).unwrap().stream_id().clone()
}

fn order_id() -> OrderId {
    OrderId::try_new("o-1").unwrap()
}

fn customer_id() -> CustomerId {
    CustomerId::try_new("c-1").unwrap()
}

/// Order o-1 is placed for 12 points; the customer since spent 8 of them on another order.
fn placed_order() -> Scenario {
    let line = |name: &str, units| OrderLine {
        product: ProductId::try_new(name).unwrap(),
        quantity: Quantity::new(units),
    };
    let stocked = |units| {
        [
            ProductEvent::Added { name: "thing".into(), price: Price::from_cents(400) },
            ProductEvent::Restocked { quantity: Quantity::new(10) },
            ProductEvent::Reserved { order: order_id(), quantity: Quantity::new(units) },
        ]
    };
    let other = OrderId::try_new("o-0").unwrap();
    Scenario::new()
        .given(
            Order,
            order_id().stream_id(),
            [OrderEvent::Placed {
                customer: customer_id(),
                lines: vec![line("a", 2), line("b", 1)],
                total: Price::from_cents(1200),
                points: 12,
            }],
        )
        .given(Products, &product("a"), stocked(2))
        .given(Products, &product("b"), stocked(1))
        .given(
            Customer,
            customer_id().stream_id(),
            [
                CustomerEvent::PointsEarned { order: order_id(), points: 12 },
                CustomerEvent::PointsRevoked { order: other, points: 8 },
            ],
        )
}

/// Stock back on both products, the 4 points left revoked (which only the customer's given
/// events, read in the second discovery round, can tell), the order cancelled.
fn cancelled() -> Emitted {
    let released =
        |units| ProductEvent::Released { order: order_id(), quantity: Quantity::new(units) };
    Emitted::new()
        .to(Products, &product("a"), [released(2)])
        .to(Products, &product("b"), [released(1)])
        .to(
            Customer,
            customer_id().stream_id(),
            [CustomerEvent::PointsRevoked { order: order_id(), points: 4 }],
        )
        .to(Order, order_id().stream_id(), [OrderEvent::Cancelled])
}

#[test]
fn a_cancellation_follows_both_discovery_rounds() {
    placed_order().when(&CancelOrder { order: order_id() }).then_emits(cancelled());
}

#[test]
fn cancelling_twice_is_rejected() {
    placed_order()
        .given(Order, order_id().stream_id(), [OrderEvent::Cancelled])
        .when(&CancelOrder { order: order_id() })
        .then_rejects(CommerceError::AlreadyCancelled(order_id()));
}

// Failures: what the message says, and where it points.

#[test]
fn a_wrong_event_fails_with_a_diff_pointing_at_the_test() {
    let outcome = alice_and_bob().when(&transfer(30));
    let line = line!() + 1;
    let message = failure(|| outcome.then_emits(transferred(40)));
    points_at(&message, line);
    for shown in [
        "emitted other events than expected",
        "stream `account-alice` (slot FromAccount): differs",
        "#1 - TransferredOut { transfer: TransferId(StreamId(\"transfer-t-1\")), to: AccountId(StreamId(\"account-bob\")), amount: Money(40) }",
        "#1 + TransferredOut { transfer: TransferId(StreamId(\"transfer-t-1\")), to: AccountId(StreamId(\"account-bob\")), amount: Money(30) }",
        "stream `transfer-t-1` (slot Ledger): differs",
    ] {
        assert!(message.contains(shown), "the message should show {shown:?}\n{message}");
    }
}

#[test]
fn streams_that_agree_are_shown_as_such_beside_those_that_do_not() {
    let outcome = alice_and_bob().when(&transfer(30));
    let expected = transferred(30).to(
        Ledger,
        &transfer_id("t-1").stream_id().clone(),
        [TransferEvent::Completed {
            from: account("alice"),
            to: account("bob"),
            amount: cents(30),
        }],
    );
    let message = failure(|| outcome.then_emits(expected));
    assert!(message.contains("stream `account-bob` (slot ToAccount): as expected"), "{message}");
    assert!(message.contains("stream `transfer-t-1` (slot Ledger): differs"), "{message}");
    assert!(
        message.contains("#2 - Completed"),
        "a missing event is shown as expected only\n{message}"
    );
    assert!(!message.contains("#2 +"), "{message}");
}

#[test]
fn events_in_a_stream_nobody_expected_fail_and_are_shown_decoded() {
    let outcome = alice_and_bob().when(&transfer(30));
    let only_the_accounts = accounts_moved(30);
    let line = line!() + 1;
    let message = failure(|| outcome.then_emits(only_the_accounts));
    points_at(&message, line);
    assert!(message.contains("stream `transfer-t-1`: not expected"), "{message}");
    // The harness knows no type for this stream, so it shows the event as stored.
    assert!(message.contains(r#"#1 + TransferEvent v1 {"Completed""#), "{message}");
}

/// A stream expected to receive nothing, listed through its slot, has a type to show what it
/// received as: the slot's, as for a stream expected to receive events.
#[test]
fn events_in_a_stream_expected_empty_are_shown_as_its_slots_type() {
    let outcome = alice_and_bob().when(&transfer(30));
    let t = transfer_id("t-1");
    let no_ledger_entry = accounts_moved(30).nothing_to(Ledger, &t.stream_id().clone());
    let message = failure(|| outcome.then_emits(no_ledger_entry));
    assert!(
        message.contains("stream `transfer-t-1` (slot Ledger): differs\n    #1 + Completed {"),
        "{message}"
    );
}

/// Expecting nothing in a stream already expected to receive events contradicts itself: the
/// builder says so, rather than keep the events and drop the "nothing".
#[test]
fn expecting_nothing_in_a_stream_expected_to_receive_events_is_refused() {
    let ledger = transfer_id("t-1").stream_id().clone();
    let message = failure(|| {
        let _ = transferred(30).nothing_to(Ledger, &ledger);
    });
    assert!(
        message.contains("1 event(s) are already expected in stream `transfer-t-1`"),
        "{message}"
    );
}

#[test]
fn events_expected_in_the_wrong_streams_fail() {
    let outcome = placed_order().when(&CancelOrder { order: order_id() });
    let released =
        |units| ProductEvent::Released { order: order_id(), quantity: Quantity::new(units) };
    // The units of product a expected in b's stream and the other way round.
    let swapped = Emitted::new()
        .to(Products, &product("a"), [released(1)])
        .to(Products, &product("b"), [released(2)])
        .to(
            Customer,
            customer_id().stream_id(),
            [CustomerEvent::PointsRevoked { order: order_id(), points: 4 }],
        )
        .to(Order, order_id().stream_id(), [OrderEvent::Cancelled]);
    let message = failure(|| outcome.then_emits(swapped));
    assert!(message.contains("stream `product-a` (slot Products): differs"), "{message}");
    assert!(message.contains("stream `customer-c-1` (slot Customer): as expected"), "{message}");
}

/// Opens an account and deposits into it in one decision: two events in one stream, in order.
struct OpenWithDeposit {
    account: AccountId,
    amount: Money,
}

impl Command for OpenWithDeposit {
    type Streams = Streams![Account];
    type State = AccountState;
    type Error = BankError;
    type Continuation = NoDiscovery;

    fn streams(&self) -> Bindings<Self::Streams> {
        hlist![Account::bind(self.account.clone())]
    }
}

impl Handle for OpenWithDeposit {
    fn handle(&self, state: &AccountState, mut decision: Decision<Self::Streams>) -> Handled<Self> {
        require!(!state.open, BankError::AlreadyOpen);
        decision
            .emit(Account, AccountEvent::Opened { owner: "Carol".into() })
            .emit(Account, AccountEvent::Deposited { amount: self.amount });
        Ok(decision)
    }
}

#[test]
fn events_of_one_stream_in_the_wrong_order_fail() {
    let carol = account("carol");
    let outcome =
        Scenario::new().when(&OpenWithDeposit { account: carol.clone(), amount: cents(5) });
    let opened = || AccountEvent::Opened { owner: "Carol".into() };
    let deposited = || AccountEvent::Deposited { amount: cents(5) };
    outcome.then_emits(Emitted::new().to(
        Account,
        &carol.stream_id().clone(),
        [opened(), deposited()],
    ));

    let message = failure(|| {
        outcome.then_emits(Emitted::new().to(
            Account,
            &carol.stream_id().clone(),
            [deposited(), opened()],
        ));
    });
    assert!(message.contains("stream `account-carol` (slot Account): differs"), "{message}");
    assert!(message.contains("#1 - Deposited { amount: Money(5) }\n    #1 + Opened"), "{message}");
    assert!(message.contains("#2 - Opened { owner: \"Carol\" }\n    #2 + Deposited"), "{message}");
}

#[test]
fn expecting_nothing_fails_when_events_were_emitted() {
    let outcome = alice_and_bob().when(&transfer(30));
    let line = line!() + 1;
    let message = failure(|| outcome.then_emits_nothing());
    points_at(&message, line);
    assert!(message.contains("to emit nothing, but it emitted"), "{message}");
    // Given through a slot, Alice's stream is shown as its slot's type.
    assert!(
        message.contains("stream `account-alice`: not expected\n    #1 + TransferredOut {"),
        "{message}"
    );
}

#[test]
fn expecting_a_rejection_fails_when_the_command_emitted_or_was_rejected_otherwise() {
    let emitted = alice_and_bob().when(&transfer(30));
    let line = line!() + 1;
    let message = failure(|| emitted.then_rejects(BankError::NotOpen));
    points_at(&message, line);
    assert!(message.contains("to be rejected with NotOpen, but it emitted"), "{message}");

    let rejected = alice_and_bob().when(&transfer(150));
    let line = line!() + 1;
    let message = failure(|| rejected.then_rejects(BankError::NotOpen));
    points_at(&message, line);
    assert!(message.contains("- NotOpen\n  + InsufficientFunds"), "{message}");

    let line = line!() + 1;
    let message = failure(|| rejected.then_rejects_with(|e| matches!(e, BankError::Overflow)));
    points_at(&message, line);
    assert!(message.contains("the predicate does not hold for InsufficientFunds"), "{message}");
}

#[test]
fn expecting_events_fails_when_the_command_was_rejected() {
    let rejected = alice_and_bob().when(&transfer(150));
    let line = line!() + 1;
    let message = failure(|| rejected.then_emits(transferred(150)));
    points_at(&message, line);
    assert!(message.contains("but it was rejected: InsufficientFunds"), "{message}");
}

#[test]
fn events_given_to_a_stream_of_another_type_fail_the_fold() {
    // Bob's stream given as a ledger: the command reads it as an account and cannot.
    let outcome = Scenario::new()
        .given(
            FromAccount,
            &account("alice").stream_id().clone(),
            [AccountEvent::Opened { owner: "Alice".into() }],
        )
        .given(
            Ledger,
            &account("bob").stream_id().clone(),
            [TransferEvent::Completed { from: account("x"), to: account("y"), amount: cents(1) }],
        )
        .when(&transfer(30));
    assert!(matches!(outcome.error(), Some(ExecuteError::Fold(_))), "{outcome:?}");
    let message = failure(|| outcome.then_rejects(BankError::NotOpen));
    assert!(message.contains("but it failed: event"), "{message}");
}

/// Two event types stored under one name, as two crates might declare them, in one command.
mod clashing {
    use eventcore::prelude::*;

    pub mod books {
        use eventcore::prelude::*;
        #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize, Event)]
        #[event(name = "HarnessClashingEntry")]
        pub enum Entry {
            Booked { cents: u64 },
        }
        slot!(pub Books: Entry);
    }

    pub mod audit {
        use eventcore::prelude::*;
        #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize, Event)]
        #[event(name = "HarnessClashingEntry")]
        pub enum Entry {
            Booked { cents: u64 },
        }
        slot!(pub Audit: Entry);
    }

    #[derive(Default)]
    pub struct Ignored;

    impl Fold<books::Books> for Ignored {
        fn fold(&mut self, _: &StreamId, _: &books::Entry) {}
    }

    impl Fold<audit::Audit> for Ignored {
        fn fold(&mut self, _: &StreamId, _: &audit::Entry) {}
    }

    #[derive(Debug, PartialEq, thiserror::Error)]
    #[error("never")]
    pub struct Never;

    #[derive(Command)]
    #[command(state = Ignored, error = Never)]
    pub struct Book {
        #[slot(books::Books)]
        pub books: StreamId,
        #[slot(audit::Audit)]
        pub audit: StreamId,
    }

    impl Handle for Book {
        fn handle(&self, _: &Ignored, mut decision: Decision<Self::Streams>) -> Handled<Self> {
            decision.emit(books::Books, books::Entry::Booked { cents: 5 });
            decision.emit(audit::Audit, audit::Entry::Booked { cents: 5 });
            Ok(decision)
        }
    }
}

#[tokio::test]
async fn a_command_whose_event_types_clash_fails_as_through_the_executor() {
    use clashing::{Book, audit, books};
    let (ledger, trail) =
        (StreamId::try_new("books-1").unwrap(), StreamId::try_new("audit-1").unwrap());
    let command = Book { books: ledger.clone(), audit: trail.clone() };
    // The executor refuses the command before reading anything: each type would read the
    // other's events.
    let executor = Executor::new(Memory::new());
    let through = Scenario::new().when_on(&executor, &command).await;
    assert!(matches!(through.error(), Some(ExecuteError::EventTypeClash(_))), "{through:?}");
    // Deciding alone says the same, rather than passing what no execution can run.
    let outcome = Scenario::new().when(&command);
    assert!(matches!(outcome.error(), Some(ExecuteError::EventTypeClash(_))), "{outcome:?}");
    let message = failure(|| {
        outcome.then_emits(
            Emitted::new().to(books::Books, &ledger, [books::Entry::Booked { cents: 5 }]).to(
                audit::Audit,
                &trail,
                [audit::Entry::Booked { cents: 5 }],
            ),
        );
    });
    assert!(message.contains("HarnessClashingEntry"), "{message}");
}

// The second mode: the same scenarios through an executor on a real backend.

/// A keyed command sent again through `when_on` is answered with its first commit (replayed):
/// its outcome holds that commit's events, not the history of its streams before it.
#[tokio::test]
async fn a_replayed_command_through_when_on_emits_its_first_commit_only() {
    let executor = Executor::new(Memory::new());
    alice_and_bob().when_on(&executor, &transfer(30)).await.then_emits(transferred(30));
    let again = Scenario::new().when_on(&executor, &transfer(30)).await;
    again.then_emits(transferred(30));
}

async fn transfer_on<B: Backend>(backend: B) {
    let executor = Executor::new(backend);
    let outcome = alice_and_bob().when_on(&executor, &transfer(30)).await;
    outcome.then_emits(transferred(30));
    // The given events were appended, then the command's: versions follow them.
    let versions: Vec<_> =
        outcome.recorded().iter().map(|e| (e.stream_id.to_string(), e.version.get())).collect();
    assert_eq!(
        versions,
        [
            ("account-alice".to_owned(), 3),
            ("account-bob".to_owned(), 2),
            ("transfer-t-1".to_owned(), 1)
        ]
    );
    let again =
        alice_and_bob().when_on(&Executor::new(executor.backend().clone()), &transfer(30)).await;
    let message = failure(|| again.then_emits_nothing());
    assert!(message.contains("could not be appended to the backend"), "{message}");
}

async fn rejection_on<B: Backend>(backend: B) {
    alice_and_bob()
        .when_on(&Executor::new(backend), &transfer(150))
        .await
        .then_rejects(BankError::InsufficientFunds { balance: cents(100), requested: cents(150) });
}

async fn nothing_on<B: Backend>(backend: B) {
    let done = alice_and_bob().given(
        Ledger,
        &transfer_id("t-1").stream_id().clone(),
        [TransferEvent::Completed {
            from: account("alice"),
            to: account("bob"),
            amount: cents(30),
        }],
    );
    done.when_on(&Executor::new(backend), &transfer(30)).await.then_emits_nothing();
}

async fn cancellation_on<B: Backend>(backend: B) {
    placed_order()
        .when_on(&Executor::new(backend), &CancelOrder { order: order_id() })
        .await
        .then_emits(cancelled());
}

#[tokio::test]
async fn a_transfer_through_the_executor_on_memory() {
    transfer_on(Memory::new()).await;
}

#[tokio::test]
async fn a_rejection_through_the_executor_on_memory() {
    rejection_on(Memory::new()).await;
}

#[tokio::test]
async fn nothing_emitted_through_the_executor_on_memory() {
    nothing_on(Memory::new()).await;
}

#[tokio::test]
async fn a_cancellation_through_the_executor_on_memory() {
    cancellation_on(Memory::new()).await;
}

#[tokio::test]
async fn the_append_checks_what_deciding_alone_does_not() {
    // The given events take under 40 bytes each, the transfer's more: they pass the decision,
    // but not this store's append.
    let command = transfer(30);
    alice_and_bob().when(&command).then_emits(transferred(30));
    let executor = Executor::new(Memory::new().with_max_payload(40));
    let outcome = alice_and_bob().when_on(&executor, &command).await;
    assert!(
        matches!(outcome.error(), Some(ExecuteError::Store(StoreError::PayloadTooLarge { .. }))),
        "{outcome:?}"
    );
    let message = failure(|| outcome.then_emits(transferred(30)));
    assert!(message.contains("but it failed: "), "{message}");
}

#[cfg(feature = "postgres")]
mod on_postgres {
    use super::postgres_support::fresh_postgres;

    #[tokio::test]
    async fn a_transfer_through_the_executor() {
        super::transfer_on(fresh_postgres().await).await;
    }

    #[tokio::test]
    async fn a_rejection_through_the_executor() {
        super::rejection_on(fresh_postgres().await).await;
    }

    #[tokio::test]
    async fn nothing_emitted_through_the_executor() {
        super::nothing_on(fresh_postgres().await).await;
    }

    #[tokio::test]
    async fn a_cancellation_through_the_executor() {
        super::cancellation_on(fresh_postgres().await).await;
    }
}

/// `Scenario::when_snapshotted`: a state that goes wrong only when restored from a snapshot is
/// caught, at the first point of the history where a snapshot would change the decision.
mod snapshotted {
    use super::{failure, points_at};
    use eventcore::{
        Snapshot, StreamId,
        prelude::*,
        testing::{Emitted, Scenario},
    };
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize, Event)]
    #[event(name = "HarnessSnapshotPosting")]
    pub enum Posting {
        Posted { cents: u64 },
    }
    slot!(pub Books: Posting);
    slot!(pub Audit: Posting);

    #[derive(Debug, PartialEq, thiserror::Error)]
    pub enum Refused {
        #[error("three postings already")]
        Full,
        #[error("the audit posted last")]
        AuditLast,
    }

    /// Totals that survive a snapshot: a sum per slot.
    #[derive(Default, Serialize, Deserialize)]
    pub struct Sums {
        books: u64,
        audit: u64,
    }
    impl Snapshot for Sums {
        const NAME: &'static str = "harness-sums";
        const VERSION: u32 = 1;
    }
    impl Fold<Books> for Sums {
        fn fold(&mut self, _: &StreamId, Posting::Posted { cents }: &Posting) {
            self.books += cents;
        }
    }
    impl Fold<Audit> for Sums {
        fn fold(&mut self, _: &StreamId, Posting::Posted { cents }: &Posting) {
            self.audit += cents;
        }
    }

    #[derive(Command)]
    #[command(state = Sums, error = Refused)]
    pub struct Balance {
        #[slot(Books)]
        books: StreamId,
        #[slot(Audit)]
        audit: StreamId,
    }
    impl Handle for Balance {
        fn handle(&self, sums: &Sums, mut decision: Decision<Self::Streams>) -> Handled<Self> {
            let cents = sums.books.abs_diff(sums.audit);
            decision.emit(Audit, Posting::Posted { cents });
            Ok(decision)
        }
    }

    /// Declares the books and discovers the audit: a snapshot covers the books alone, the
    /// audit is read in full after it.
    #[derive(Command)]
    #[command(state = Sums, error = Refused, continuation = PostDifference)]
    pub struct Reconcile {
        #[slot(Books)]
        books: StreamId,
        audit: StreamId,
    }
    impl Handle for Reconcile {
        fn handle(&self, _: &Sums, decision: Decision<Self::Streams>) -> Handled<Self> {
            Ok(decision.discover(self.audit.clone(), PostDifference))
        }
    }

    pub struct PostDifference;

    #[continuation(command = Reconcile, slot = Audit)]
    impl Continuation for PostDifference {
        fn resume(self, sums: &Sums, mut decision: Resuming<Self>) -> Resumed<Self> {
            decision.emit(Audit, Posting::Posted { cents: sums.books.abs_diff(sums.audit) });
            Ok(decision)
        }
    }

    /// Counts postings in a field the snapshot leaves out: restored, it starts again at 0.
    #[derive(Default, Serialize, Deserialize, Fold)]
    #[fold(Books)]
    pub struct Counted {
        #[serde(skip)]
        postings: u32,
    }
    impl Snapshot for Counted {
        const NAME: &'static str = "harness-counted";
        const VERSION: u32 = 1;
    }
    impl Apply<Posting> for Counted {
        fn apply(&mut self, _: &Posting) {
            self.postings += 1;
        }
    }

    #[derive(Command)]
    #[command(state = Counted, error = Refused)]
    pub struct PostOnce {
        #[slot(Books)]
        books: StreamId,
    }
    impl Handle for PostOnce {
        fn handle(
            &self,
            counted: &Counted,
            mut decision: Decision<Self::Streams>,
        ) -> Handled<Self> {
            require!(counted.postings < 3, Refused::Full);
            decision.emit(Books, Posting::Posted { cents: 1 });
            Ok(decision)
        }
    }

    /// Remembers which slot's event it folded last: the full fold folds stream after stream,
    /// a snapshot's state then the rest of each stream, so the two disagree.
    #[derive(Default, Serialize, Deserialize)]
    pub struct LastSeen {
        audit_last: bool,
    }
    impl Snapshot for LastSeen {
        const NAME: &'static str = "harness-last-seen";
        const VERSION: u32 = 1;
    }
    impl Fold<Books> for LastSeen {
        fn fold(&mut self, _: &StreamId, _: &Posting) {
            self.audit_last = false;
        }
    }
    impl Fold<Audit> for LastSeen {
        fn fold(&mut self, _: &StreamId, _: &Posting) {
            self.audit_last = true;
        }
    }

    #[derive(Command)]
    #[command(state = LastSeen, error = Refused)]
    pub struct PostAfterBooks {
        #[slot(Books)]
        books: StreamId,
        #[slot(Audit)]
        audit: StreamId,
    }
    impl Handle for PostAfterBooks {
        fn handle(&self, seen: &LastSeen, mut decision: Decision<Self::Streams>) -> Handled<Self> {
            require!(!seen.audit_last, Refused::AuditLast);
            decision.emit(Books, Posting::Posted { cents: 1 });
            Ok(decision)
        }
    }

    /// A state whose JSON never deserializes.
    #[derive(Default, Serialize, Deserialize, Fold)]
    #[fold(Books)]
    pub struct OneWay {
        #[serde(deserialize_with = "refuse")]
        postings: u32,
    }
    fn refuse<'de, D: serde::Deserializer<'de>>(_: D) -> Result<u32, D::Error> {
        Err(serde::de::Error::custom("refused on purpose"))
    }
    impl Snapshot for OneWay {
        const NAME: &'static str = "harness-one-way";
        const VERSION: u32 = 1;
    }
    impl Apply<Posting> for OneWay {
        fn apply(&mut self, _: &Posting) {
            self.postings += 1;
        }
    }

    #[derive(Command)]
    #[command(state = OneWay, error = Refused)]
    pub struct PostOneWay {
        #[slot(Books)]
        books: StreamId,
    }
    impl Handle for PostOneWay {
        fn handle(&self, _: &OneWay, mut decision: Decision<Self::Streams>) -> Handled<Self> {
            decision.emit(Books, Posting::Posted { cents: 1 });
            Ok(decision)
        }
    }

    /// Refuses with how much is left, which its message does not show.
    #[derive(Debug, PartialEq, thiserror::Error)]
    #[error("over the limit")]
    pub struct OverLimit {
        pub left: u32,
    }

    /// Refuses every posting with what its state counted, in a field the snapshot leaves out
    /// (`Counted`): restored, the count starts again at 0.
    #[derive(Command)]
    #[command(state = Counted, error = OverLimit)]
    pub struct PostWithinQuota {
        #[slot(Books)]
        books: StreamId,
    }
    impl Handle for PostWithinQuota {
        fn handle(&self, counted: &Counted, _: Decision<Self::Streams>) -> Handled<Self> {
            Err(OverLimit { left: 10 - counted.postings })
        }
    }

    /// Posts, in one event, the cents of every posting folded, keyed by their amount, in a
    /// `HashMap`: its JSON lists the keys in an order of the map's own.
    #[derive(Debug, PartialEq, Serialize, Deserialize, Event)]
    #[event(name = "HarnessSnapshotSummary")]
    pub enum Summary {
        Summed { by_amount: std::collections::HashMap<String, u64> },
    }
    slot!(pub Summaries: Summary);

    #[derive(Default, Serialize, Deserialize)]
    pub struct ByAmount {
        by_amount: std::collections::HashMap<String, u64>,
    }
    impl Snapshot for ByAmount {
        const NAME: &'static str = "harness-by-amount";
        const VERSION: u32 = 1;
    }
    impl Fold<Books> for ByAmount {
        fn fold(&mut self, _: &StreamId, Posting::Posted { cents }: &Posting) {
            *self.by_amount.entry(cents.to_string()).or_default() += cents;
        }
    }
    impl Fold<Summaries> for ByAmount {
        fn fold(&mut self, _: &StreamId, _: &Summary) {}
    }

    #[derive(Command)]
    #[command(state = ByAmount, error = Refused)]
    pub struct Summarize {
        #[slot(Books)]
        books: StreamId,
        #[slot(Summaries)]
        summaries: StreamId,
    }
    impl Handle for Summarize {
        fn handle(&self, state: &ByAmount, mut decision: Decision<Self::Streams>) -> Handled<Self> {
            decision.emit(Summaries, Summary::Summed { by_amount: state.by_amount.clone() });
            Ok(decision)
        }
    }

    /// The lowest posting so far, from infinity: a state that JSON holds only once a posting
    /// was folded (the executor takes no snapshot before).
    #[derive(Serialize, Deserialize, Fold)]
    #[fold(Books)]
    pub struct Lowest {
        lowest: f64,
    }
    impl Default for Lowest {
        fn default() -> Self {
            Lowest { lowest: f64::INFINITY }
        }
    }
    impl Snapshot for Lowest {
        const NAME: &'static str = "harness-lowest";
        const VERSION: u32 = 1;
    }
    impl Apply<Posting> for Lowest {
        fn apply(&mut self, Posting::Posted { cents }: &Posting) {
            self.lowest = self.lowest.min(*cents as f64);
        }
    }

    #[derive(Command)]
    #[command(state = Lowest, error = Refused)]
    pub struct PostLowest {
        #[slot(Books)]
        books: StreamId,
    }
    impl Handle for PostLowest {
        fn handle(&self, state: &Lowest, mut decision: Decision<Self::Streams>) -> Handled<Self> {
            if state.lowest.is_finite() {
                decision.emit(Books, Posting::Posted { cents: state.lowest as u64 });
            }
            Ok(decision)
        }
    }

    /// The share of the last posting in the total: NaN while the total is 0 (a first posting
    /// of 0 cents). The executor refuses to store a NaN (JSON has none); serde_json alone
    /// writes it as null.
    #[derive(Default, Serialize, Deserialize, Fold)]
    #[fold(Books)]
    pub struct Ratio {
        total: u64,
        ratio: Option<f64>,
    }
    impl Snapshot for Ratio {
        const NAME: &'static str = "harness-ratio";
        const VERSION: u32 = 1;
    }
    impl Apply<Posting> for Ratio {
        fn apply(&mut self, Posting::Posted { cents }: &Posting) {
            self.total += cents;
            self.ratio = Some(*cents as f64 / self.total as f64);
        }
    }

    #[derive(Command)]
    #[command(state = Ratio, error = Refused)]
    pub struct PostRatio {
        #[slot(Books)]
        books: StreamId,
    }
    impl Handle for PostRatio {
        fn handle(&self, _: &Ratio, mut decision: Decision<Self::Streams>) -> Handled<Self> {
            decision.emit(Books, Posting::Posted { cents: 1 });
            Ok(decision)
        }
    }

    /// Counts how often the folded events switch between the books and the audit: a fold
    /// that depends on how the streams interleave, enough to show only when a snapshot was
    /// taken and restored at several points.
    #[derive(Default, Serialize, Deserialize)]
    pub struct Alternations {
        last_audit: Option<bool>,
        switches: u32,
    }
    impl Alternations {
        fn saw(&mut self, audit: bool) {
            if self.last_audit.is_some_and(|last| last != audit) {
                self.switches += 1;
            }
            self.last_audit = Some(audit);
        }
    }
    impl Snapshot for Alternations {
        const NAME: &'static str = "harness-alternations";
        const VERSION: u32 = 1;
    }
    impl Fold<Books> for Alternations {
        fn fold(&mut self, _: &StreamId, _: &Posting) {
            self.saw(false);
        }
    }
    impl Fold<Audit> for Alternations {
        fn fold(&mut self, _: &StreamId, _: &Posting) {
            self.saw(true);
        }
    }

    #[derive(Command)]
    #[command(state = Alternations, error = Refused)]
    pub struct PostUnlessAlternating {
        #[slot(Books)]
        books: StreamId,
        #[slot(Audit)]
        audit: StreamId,
    }
    impl Handle for PostUnlessAlternating {
        fn handle(
            &self,
            seen: &Alternations,
            mut decision: Decision<Self::Streams>,
        ) -> Handled<Self> {
            require!(seen.switches < 4, Refused::AuditLast);
            decision.emit(Books, Posting::Posted { cents: 1 });
            Ok(decision)
        }
    }

    fn id(name: &str) -> StreamId {
        StreamId::try_new(name).unwrap()
    }

    fn posted(cents: u64) -> Posting {
        Posting::Posted { cents }
    }

    #[test]
    fn a_state_that_survives_every_snapshot_decides_as_the_full_fold() {
        let (books, audit) = (id("books-1"), id("audit-1"));
        Scenario::new()
            .given(Books, &books, [posted(5)])
            .given(Audit, &audit, [posted(2)])
            .given(Books, &books, [posted(4)])
            .when_snapshotted(&Balance { books, audit: audit.clone() })
            .then_emits(Emitted::new().to(Audit, &audit, [posted(7)]));
    }

    #[test]
    fn a_discovered_stream_is_read_in_full_after_a_snapshot_of_the_declared_ones() {
        let (books, audit) = (id("books-5"), id("audit-5"));
        Scenario::new()
            .given(Books, &books, [posted(5)])
            .given(Audit, &audit, [posted(2)])
            .given(Books, &books, [posted(4)])
            .given(Audit, &audit, [posted(1)])
            .when_snapshotted(&Reconcile { books, audit: audit.clone() })
            .then_emits(Emitted::new().to(Audit, &audit, [posted(6)]));
    }

    #[test]
    fn a_field_the_snapshot_leaves_out_is_caught_where_it_first_changes_the_decision() {
        let books = id("books-2");
        let scenario = Scenario::new().given(Books, &books, [posted(1), posted(1), posted(1)]);
        // Without snapshots the command is refused, as it should be.
        let command = PostOnce { books: books.clone() };
        scenario.when(&command).then_rejects(Refused::Full);
        let line = line!() + 1;
        let message = failure(|| drop(scenario.when_snapshotted(&command)));
        assert!(
            message.contains(
                "::PostOnce` decides differently from a snapshot of its state taken after given \
                 event 1 of 3 (stream `books-2`, version 1)"
            ),
            "{message}"
        );
        assert!(
            message
                .contains("from the full history: fails: command rejected: three postings already"),
            "{message}"
        );
        assert!(
            message.contains(
                r#"from the snapshot: emits HarnessSnapshotPosting v1 {"Posted":{"cents":1}} to `books-2`"#
            ),
            "{message}"
        );
        assert!(message.contains("`#[serde(skip)]`"), "{message}");
        points_at(&message, line);
    }

    #[test]
    fn a_fold_that_depends_on_how_streams_interleave_is_caught() {
        let (books, audit) = (id("books-3"), id("audit-3"));
        let scenario =
            Scenario::new().given(Audit, &audit, [posted(1)]).given(Books, &books, [posted(1)]);
        let command = PostAfterBooks { books: books.clone(), audit: audit.clone() };
        // The full fold folds the books, then the audit: the audit comes last.
        scenario.when(&command).then_rejects(Refused::AuditLast);
        let message = failure(|| drop(scenario.when_snapshotted(&command)));
        assert!(
            message.contains("taken after given event 1 of 2 (stream `audit-3`, version 1)"),
            "{message}"
        );
        assert!(
            message
                .contains("from the full history: fails: command rejected: the audit posted last"),
            "{message}"
        );
        assert!(
            message.contains("fold each stream without depending on how the events"),
            "{message}"
        );
    }

    #[test]
    fn a_rejection_that_differs_only_in_fields_its_message_leaves_out_is_caught() {
        let books = id("books-6");
        let scenario = Scenario::new().given(Books, &books, [posted(1), posted(1)]);
        let command = PostWithinQuota { books: books.clone() };
        scenario.when(&command).then_rejects(OverLimit { left: 8 });
        // From a snapshot the count restarts, and the rejection says 9 or 10 are left: what
        // the executor answers from such a snapshot, though the message reads the same.
        let message = failure(|| drop(scenario.when_snapshotted(&command)));
        assert!(message.contains("decides differently from a snapshot"), "{message}");
    }

    #[test]
    fn events_are_compared_by_their_json_value_not_the_order_a_map_lists_its_keys_in() {
        let (books, summaries) = (id("books-7"), id("summaries-7"));
        let postings: Vec<Posting> = (1..=24).map(posted).collect();
        let by_amount = (1..=24u64).map(|c| (c.to_string(), c)).collect();
        Scenario::new()
            .given(Books, &books, postings)
            .when_snapshotted(&Summarize { books, summaries: summaries.clone() })
            .then_emits(Emitted::new().to(Summaries, &summaries, [Summary::Summed { by_amount }]));
    }

    #[test]
    fn a_state_is_not_snapshotted_before_its_streams_hold_an_event() {
        // The executor takes no snapshot of a state that folded nothing: the default's
        // infinity, which JSON cannot hold, is never stored.
        let (books, other) = (id("books-8"), id("other-8"));
        Scenario::new()
            .given(Audit, &other, [posted(9)])
            .given(Books, &books, [posted(3), posted(2)])
            .when_snapshotted(&PostLowest { books: books.clone() })
            .then_emits(Emitted::new().to(Books, &books, [posted(2)]));
    }

    #[test]
    fn a_state_the_executor_cannot_store_is_reported_as_not_serializing() {
        let books = id("books-9");
        let message = failure(|| {
            drop(
                Scenario::new()
                    .given(Books, &books, [posted(0)])
                    .when_snapshotted(&PostRatio { books: books.clone() }),
            )
        });
        // The executor's snapshot of it fails to serialize (a NaN), and none is stored:
        // serde_json alone writes `null`, which reads back as `None`.
        assert!(
            message.contains(
                "::PostRatio`: its state does not serialize after given event 1 of 1 (stream \
                 `books-9`, version 1), so no snapshot of it is ever stored"
            ),
            "{message}"
        );
    }

    #[test]
    fn a_fold_order_dependence_that_shows_only_after_several_snapshots_is_caught() {
        // Books, audit, books, audit, books, audit. The full fold folds the books, then the
        // audit: one switch. A snapshot at one point folds at most two runs of each: three.
        // Snapshots after every event, each restored by the next command (an executor with
        // `SnapshotPolicy::every(1)` and a command after each event): five, and a refusal.
        let (books, audit) = (id("books-10"), id("audit-10"));
        let mut scenario = Scenario::new();
        for _ in 0..3 {
            scenario = scenario.given(Books, &books, [posted(1)]).given(Audit, &audit, [posted(1)]);
        }
        let command = PostUnlessAlternating { books: books.clone(), audit: audit.clone() };
        scenario.when(&command).then_emits(Emitted::new().to(Books, &books, [posted(1)]));
        let message = failure(|| drop(scenario.when_snapshotted(&command)));
        assert!(message.contains("decides differently from a snapshot"), "{message}");
        assert!(message.contains("after every given event in turn"), "{message}");
    }

    #[test]
    fn a_state_whose_json_does_not_deserialize_is_caught() {
        let books = id("books-4");
        let message = failure(|| {
            drop(
                Scenario::new()
                    .given(Books, &books, [posted(1)])
                    .when_snapshotted(&PostOneWay { books: books.clone() }),
            )
        });
        assert!(
            message.contains(
                "::PostOneWay`: its state, serialized after given event 1 of 1 (stream \
                 `books-4`, version 1), does not deserialize, so no snapshot of it is ever \
                 restored: refused on purpose"
            ),
            "{message}"
        );
        assert!(message.contains(r#"the state's JSON: {"postings":1}"#), "{message}");
    }
}
