//! The rules of the example domains' commands, given/when/then (`eventcore::testing::Scenario`),
//! one test per rule: what each command emits, per slot and stream, when it accepts, the exact
//! error when it refuses, and nothing at all where it is idempotent. No backend: the backends'
//! own behaviour under these commands is the conformance tests' business.
//!
//! Rules covered in `tests/testing_harness.rs` (beside the harness's own tests) are not repeated
//! here: a transfer's three events, a transfer without the funds, from an account never opened,
//! and repeated as it was (nothing emitted); a cancellation's three rounds (revoking at most the points the
//! customer holds), and cancelling twice.

#[path = "../examples/banking/domain.rs"]
mod banking;
#[path = "../examples/ecommerce/domain.rs"]
mod ecommerce;
#[path = "../examples/saga/domain.rs"]
mod saga;

/// Accounts: opening, deposits, withdrawals, and what the harness's tests leave of transfers.
mod bank {
    use super::banking::{
        Account, AccountEvent, AccountId, Balances, BankError, Deposit, FromAccount, Ledger, Money,
        OpenAccount, ToAccount, Transfer, TransferEvent, TransferId, Withdraw,
    };
    use eventcore::testing::{Emitted, Scenario};

    fn alice() -> AccountId {
        AccountId::try_new("alice").unwrap()
    }

    fn bob() -> AccountId {
        AccountId::try_new("bob").unwrap()
    }

    fn cents(n: u64) -> Money {
        Money::from_cents(n)
    }

    /// Alice's account, opened, then `events`.
    fn alice_with(events: impl IntoIterator<Item = AccountEvent>) -> Scenario {
        let opened = AccountEvent::Opened { owner: "Alice".into() };
        Scenario::new().given(Account, alice().stream_id(), std::iter::once(opened).chain(events))
    }

    /// Alice's account holds $1.00.
    fn alice_with_a_dollar() -> Scenario {
        alice_with([AccountEvent::Deposited { amount: cents(100) }])
    }

    /// `event`, and nothing else, in Alice's account.
    fn alice_gets(event: AccountEvent) -> Emitted {
        Emitted::new().to(Account, alice().stream_id(), [event])
    }

    fn open() -> OpenAccount {
        OpenAccount { account: alice(), owner: "Alice".into() }
    }

    fn deposit(amount: u64) -> Deposit {
        Deposit { account: alice(), amount: cents(amount) }
    }

    fn withdraw(amount: u64) -> Withdraw {
        Withdraw { account: alice(), amount: cents(amount) }
    }

    #[test]
    fn opening_an_account_records_its_owner() {
        Scenario::new()
            .when(&open())
            .then_emits(alice_gets(AccountEvent::Opened { owner: "Alice".into() }));
    }

    #[test]
    fn opening_an_open_account_is_rejected() {
        alice_with([]).when(&open()).then_rejects(BankError::AlreadyOpen);
    }

    #[test]
    fn a_deposit_into_an_open_account_is_recorded() {
        alice_with([])
            .when(&deposit(250))
            .then_emits(alice_gets(AccountEvent::Deposited { amount: cents(250) }));
    }

    #[test]
    fn a_deposit_into_an_account_never_opened_is_rejected() {
        Scenario::new().when(&deposit(250)).then_rejects(BankError::NotOpen);
    }

    #[test]
    fn a_deposit_of_nothing_is_rejected() {
        alice_with([]).when(&deposit(0)).then_rejects(BankError::ZeroAmount);
    }

    #[test]
    fn a_deposit_may_fill_the_balance_up_to_its_maximum_but_not_past_it() {
        let nearly_full = alice_with([AccountEvent::Deposited { amount: cents(u64::MAX - 1) }]);
        nearly_full
            .when(&deposit(1))
            .then_emits(alice_gets(AccountEvent::Deposited { amount: cents(1) }));
        nearly_full.when(&deposit(2)).then_rejects(BankError::Overflow);
    }

    #[test]
    fn a_withdrawal_may_take_the_whole_balance() {
        alice_with_a_dollar()
            .when(&withdraw(100))
            .then_emits(alice_gets(AccountEvent::Withdrawn { amount: cents(100) }));
    }

    #[test]
    fn a_withdrawal_of_more_than_the_balance_is_rejected_with_both_amounts() {
        // The balance counts every movement: 100 + 50 - 30 - 20 = 100.
        let moved = alice_with([
            AccountEvent::Deposited { amount: cents(100) },
            AccountEvent::TransferredIn {
                transfer: TransferId::try_new("t-0").unwrap(),
                from: bob(),
                amount: cents(50),
            },
            AccountEvent::Withdrawn { amount: cents(30) },
            AccountEvent::TransferredOut {
                transfer: TransferId::try_new("t-00").unwrap(),
                to: bob(),
                amount: cents(20),
            },
        ]);
        moved.when(&withdraw(101)).then_rejects(BankError::InsufficientFunds {
            balance: cents(100),
            requested: cents(101),
        });
    }

    #[test]
    fn a_withdrawal_from_an_account_never_opened_is_rejected() {
        Scenario::new().when(&withdraw(1)).then_rejects(BankError::NotOpen);
    }

    #[test]
    fn a_withdrawal_of_nothing_is_rejected() {
        alice_with_a_dollar().when(&withdraw(0)).then_rejects(BankError::ZeroAmount);
    }

    // Transfers from Alice to Bob, under the id t-1.

    fn transfer_id() -> TransferId {
        TransferId::try_new("t-1").unwrap()
    }

    fn transfer(to: AccountId, amount: u64) -> Transfer {
        Transfer::new(transfer_id(), alice(), to, cents(amount)).unwrap()
    }

    /// Alice holds `alice_cents`, Bob `bob_cents`; both accounts are open.
    fn accounts(alice_cents: u64, bob_cents: u64) -> Scenario {
        let holding = |owner: &str, amount| {
            [
                AccountEvent::Opened { owner: owner.into() },
                AccountEvent::Deposited { amount: cents(amount) },
            ]
        };
        Scenario::new()
            .given(FromAccount, alice().stream_id(), holding("Alice", alice_cents))
            .given(ToAccount, bob().stream_id(), holding("Bob", bob_cents))
    }

    /// The ledger of t-1 says it moved `amount` cents from Alice to `to`.
    fn completed(scenario: Scenario, to: AccountId, amount: u64) -> Scenario {
        scenario.given(
            Ledger,
            transfer_id().stream_id(),
            [TransferEvent::Completed { from: alice(), to, amount: cents(amount) }],
        )
    }

    #[test]
    fn a_transfer_to_an_account_never_opened_is_rejected() {
        let only_alice = Scenario::new().given(
            FromAccount,
            alice().stream_id(),
            [
                AccountEvent::Opened { owner: "Alice".into() },
                AccountEvent::Deposited { amount: cents(100) },
            ],
        );
        only_alice.when(&transfer(bob(), 30)).then_rejects(BankError::NotOpen);
    }

    #[test]
    fn a_transfer_that_would_overflow_the_payees_balance_is_rejected() {
        accounts(100, u64::MAX).when(&transfer(bob(), 30)).then_rejects(BankError::Overflow);
    }

    #[test]
    fn a_transfer_id_reused_for_another_amount_or_payee_is_rejected() {
        let done = completed(accounts(100, 0), bob(), 30);
        done.when(&transfer(bob(), 31)).then_rejects(BankError::TransferIdReused(transfer_id()));
        let carol = AccountId::try_new("carol").unwrap();
        done.given(ToAccount, carol.stream_id(), [AccountEvent::Opened { owner: "Carol".into() }])
            .when(&transfer(carol, 30))
            .then_rejects(BankError::TransferIdReused(transfer_id()));
    }

    #[test]
    fn a_repeated_transfer_moves_nothing_even_when_the_payer_could_not_pay_again() {
        // Alice's dollar left with the first run: the repeat is answered before the funds are
        // checked.
        let spent = completed(accounts(100, 0), bob(), 100).given(
            FromAccount,
            alice().stream_id(),
            [AccountEvent::TransferredOut {
                transfer: transfer_id(),
                to: bob(),
                amount: cents(100),
            }],
        );
        spent.when(&transfer(bob(), 100)).then_emits_nothing();
    }

    #[test]
    fn a_transfer_cannot_be_built_within_one_account_or_for_nothing() {
        let new = |to, amount| Transfer::new(transfer_id(), alice(), to, cents(amount)).err();
        assert_eq!(new(alice(), 1), Some(BankError::SameAccount));
        assert_eq!(new(bob(), 0), Some(BankError::ZeroAmount));
    }

    /// The balances read model counts an event once, also when a projection runner hands it
    /// over again (a batch applied, then its checkpoint's commit failed).
    #[tokio::test]
    async fn the_balances_read_model_counts_an_event_handed_over_again_once() {
        use eventcore::Backend;
        let store = eventcore::Memory::new();
        let bank = eventcore::Executor::new(store.clone());
        bank.execute(&OpenAccount { account: alice(), owner: "Alice".into() }).await.unwrap();
        for amount in [100, 20] {
            bank.execute(&Deposit { account: alice(), amount: cents(amount) }).await.unwrap();
        }
        let events = store.read(&[alice().stream_id().clone()]).await.unwrap().remove(0).events;
        let balances = Balances::default();
        for event in events.iter().chain(&events[1..]).chain(&events) {
            balances.apply_event(event).unwrap();
        }
        assert_eq!(balances.of(&alice()), cents(120));
    }
}

/// The catalog, placing orders, and what the harness's tests leave of cancellations.
mod shop {
    use super::ecommerce::{
        AddProduct, CancelOrder, CommerceError, Customer, CustomerEvent, CustomerId, Order,
        OrderEvent, OrderId, OrderLine, PlaceOrder, Price, Product, ProductEvent, ProductId,
        Products, Quantity, Restock,
    };
    use eventcore::testing::{Emitted, Scenario};

    fn product(name: &str) -> ProductId {
        ProductId::try_new(name).unwrap()
    }

    fn lamp() -> ProductId {
        product("lamp")
    }

    fn desk() -> ProductId {
        product("desk")
    }

    fn order() -> OrderId {
        OrderId::try_new("o-1").unwrap()
    }

    fn other_order() -> OrderId {
        OrderId::try_new("o-0").unwrap()
    }

    fn customer() -> CustomerId {
        CustomerId::try_new("c-1").unwrap()
    }

    fn units(n: u32) -> Quantity {
        Quantity::new(n)
    }

    /// A product in the catalog at `price` cents, restocked with `stock` units.
    fn stocked(price: u64, stock: u32) -> [ProductEvent; 2] {
        [
            ProductEvent::Added { name: "thing".into(), price: Price::from_cents(price) },
            ProductEvent::Restocked { quantity: units(stock) },
        ]
    }

    // The catalog: one product at a time, in the `Product` slot.

    fn add_lamp(name: &str) -> AddProduct {
        AddProduct { product: lamp(), name: name.into(), price: Price::from_cents(400) }
    }

    fn restock_lamp(n: u32) -> Restock {
        Restock { product: lamp(), quantity: units(n) }
    }

    /// The lamp is in the catalog with `stock` units.
    fn lamp_in_catalog(stock: u32) -> Scenario {
        Scenario::new().given(Product, lamp().stream_id(), stocked(400, stock))
    }

    #[test]
    fn adding_a_product_records_its_name_exactly_and_its_price() {
        // What a user passes in is stored exactly or refused, never silently changed.
        Scenario::new().when(&add_lamp("  Lamp \n")).then_emits(Emitted::new().to(
            Product,
            lamp().stream_id(),
            [ProductEvent::Added { name: "  Lamp \n".into(), price: Price::from_cents(400) }],
        ));
    }

    #[test]
    fn adding_a_product_already_in_the_catalog_is_rejected() {
        lamp_in_catalog(0)
            .when(&add_lamp("Lamp"))
            .then_rejects(CommerceError::ProductExists(lamp()));
    }

    #[test]
    fn adding_a_product_with_a_blank_name_is_rejected() {
        Scenario::new().when(&add_lamp(" \t ")).then_rejects(CommerceError::NoName);
    }

    #[test]
    fn restocking_adds_units() {
        lamp_in_catalog(2).when(&restock_lamp(3)).then_emits(Emitted::new().to(
            Product,
            lamp().stream_id(),
            [ProductEvent::Restocked { quantity: units(3) }],
        ));
    }

    #[test]
    fn restocking_a_product_not_in_the_catalog_is_rejected() {
        Scenario::new().when(&restock_lamp(3)).then_rejects(CommerceError::UnknownProduct(lamp()));
    }

    #[test]
    fn restocking_nothing_is_rejected() {
        lamp_in_catalog(2).when(&restock_lamp(0)).then_rejects(CommerceError::ZeroQuantity);
    }

    #[test]
    fn restocking_may_fill_the_stock_up_to_its_maximum_but_not_past_it() {
        let nearly_full = lamp_in_catalog(u32::MAX - 1);
        nearly_full.when(&restock_lamp(1)).then_emits(Emitted::new().to(
            Product,
            lamp().stream_id(),
            [ProductEvent::Restocked { quantity: units(1) }],
        ));
        nearly_full.when(&restock_lamp(2)).then_rejects(CommerceError::StockOverflow(lamp()));
    }

    // Orders: o-1 of customer c-1, over the `Products` slot.

    fn place(lines: &[(ProductId, u32)]) -> PlaceOrder {
        let lines = lines.iter().map(|(product, n)| (product.clone(), units(*n)));
        PlaceOrder::new(order(), customer(), lines).unwrap()
    }

    /// Lamps at $4.00, 5 in stock; desks at $12.99, 1 in stock.
    fn shop() -> Scenario {
        Scenario::new().given(Products, lamp().stream_id(), stocked(400, 5)).given(
            Products,
            desk().stream_id(),
            stocked(1299, 1),
        )
    }

    /// Order o-1, placed for one lamp.
    fn placed() -> OrderEvent {
        OrderEvent::Placed {
            customer: customer(),
            lines: vec![OrderLine { product: lamp(), quantity: units(1) }],
            total: Price::from_cents(400),
            points: 4,
        }
    }

    #[test]
    fn an_order_reserves_each_product_and_earns_a_point_per_whole_dollar() {
        // 2 x $4.00 + 1 x $12.99 = $20.99: 20 points; the last desk may go.
        let reserved = |n| ProductEvent::Reserved { order: order(), quantity: units(n) };
        shop().when(&place(&[(lamp(), 2), (desk(), 1)])).then_emits(
            Emitted::new()
                .to(Products, lamp().stream_id(), [reserved(2)])
                .to(Products, desk().stream_id(), [reserved(1)])
                .to(
                    Order,
                    order().stream_id(),
                    [OrderEvent::Placed {
                        customer: customer(),
                        lines: vec![
                            OrderLine { product: lamp(), quantity: units(2) },
                            OrderLine { product: desk(), quantity: units(1) },
                        ],
                        total: Price::from_cents(2099),
                        points: 20,
                    }],
                )
                .to(
                    Customer,
                    customer().stream_id(),
                    [CustomerEvent::PointsEarned { order: order(), points: 20 }],
                ),
        );
    }

    #[test]
    fn an_order_id_is_placed_once_even_after_a_cancellation() {
        let once = shop().given(Order, order().stream_id(), [placed()]);
        once.when(&place(&[(lamp(), 1)])).then_rejects(CommerceError::OrderExists(order()));
        let cancelled = once.given(Order, order().stream_id(), [OrderEvent::Cancelled]);
        cancelled.when(&place(&[(lamp(), 1)])).then_rejects(CommerceError::OrderExists(order()));
    }

    #[test]
    fn an_order_of_a_product_not_in_the_catalog_is_rejected() {
        let chair = product("chair");
        shop()
            .when(&place(&[(lamp(), 1), (chair.clone(), 1)]))
            .then_rejects(CommerceError::UnknownProduct(chair));
    }

    #[test]
    fn an_order_of_more_than_the_stock_is_rejected_with_both_quantities() {
        // 5 restocked, 3 reserved by another order, 1 of them released: 3 left.
        let lamps = Scenario::new().given(Products, lamp().stream_id(), stocked(400, 5)).given(
            Products,
            lamp().stream_id(),
            [
                ProductEvent::Reserved { order: other_order(), quantity: units(3) },
                ProductEvent::Released { order: other_order(), quantity: units(1) },
            ],
        );
        lamps.when(&place(&[(lamp(), 4)])).then_rejects(CommerceError::OutOfStock {
            product: lamp(),
            available: units(3),
            requested: units(4),
        });
    }

    #[test]
    fn an_order_whose_total_would_overflow_is_rejected() {
        let gold = product("gold");
        Scenario::new()
            .given(Products, gold.stream_id(), stocked(u64::MAX / 2 + 1, 2))
            .when(&place(&[(gold, 2)]))
            .then_rejects(CommerceError::TotalOverflow);
    }

    #[test]
    fn an_order_whose_points_would_overflow_the_customers_is_rejected() {
        shop()
            .given(
                Customer,
                customer().stream_id(),
                [CustomerEvent::PointsEarned { order: other_order(), points: u64::MAX - 3 }],
            )
            .when(&place(&[(lamp(), 1)]))
            .then_rejects(CommerceError::PointsOverflow);
    }

    #[test]
    fn an_order_merges_lines_of_one_product_and_refuses_empty_ones() {
        let new = |lines: Vec<(ProductId, u32)>| {
            PlaceOrder::new(order(), customer(), lines.into_iter().map(|(p, n)| (p, units(n))))
        };
        let merged = new(vec![(lamp(), 1), (desk(), 1), (lamp(), 2)]).unwrap();
        assert_eq!(
            merged.lines(),
            [
                OrderLine { product: lamp(), quantity: units(3) },
                OrderLine { product: desk(), quantity: units(1) },
            ]
        );
        assert_eq!(new(vec![]).err(), Some(CommerceError::EmptyOrder));
        assert_eq!(new(vec![(lamp(), 1), (desk(), 0)]).err(), Some(CommerceError::ZeroQuantity));
        assert_eq!(
            new(vec![(lamp(), u32::MAX), (lamp(), 1)]).err(),
            Some(CommerceError::QuantityOverflow(lamp()))
        );
    }

    // Cancellations.

    fn cancel() -> CancelOrder {
        CancelOrder { order: order() }
    }

    #[test]
    fn cancelling_an_order_never_placed_is_rejected() {
        Scenario::new().when(&cancel()).then_rejects(CommerceError::UnknownOrder(order()));
    }

    #[test]
    fn cancelling_an_order_whose_stock_would_overflow_is_rejected() {
        // The lamp's stock is full again (restocked since it was reserved): no room for it.
        Scenario::new()
            .given(Order, order().stream_id(), [placed()])
            .given(Products, lamp().stream_id(), stocked(400, u32::MAX))
            .when(&cancel())
            .then_rejects(CommerceError::StockOverflow(lamp()));
    }

    #[test]
    fn cancelling_revokes_no_points_from_a_customer_who_holds_none() {
        // The customer spent the order's points elsewhere: nothing is revoked, and no
        // revocation of 0 is recorded.
        Scenario::new()
            .given(Order, order().stream_id(), [placed()])
            .given(Products, lamp().stream_id(), stocked(400, 0))
            .when(&cancel())
            .then_emits(
                Emitted::new()
                    .to(
                        Products,
                        lamp().stream_id(),
                        [ProductEvent::Released { order: order(), quantity: units(1) }],
                    )
                    .to(Order, order().stream_id(), [OrderEvent::Cancelled]),
            );
    }
}

/// The saga's commands. Reserving, releasing and paying are not idempotent by design (the saga
/// runs each once), so running one again emits again; shipping and cancelling refuse an order
/// that is closed.
mod fulfilment {
    use super::saga::{
        AddStock, CancelOrder, FulfilmentError, Order, OrderEvent, OrderId, PlaceOrder, ProductId,
        ReleaseStock, ReserveStock, ShipOrder, Stock, StockEvent, TakePayment,
    };
    use eventcore::testing::{Emitted, Scenario};

    fn order() -> OrderId {
        OrderId::try_new("o-1").unwrap()
    }

    fn other_order() -> OrderId {
        OrderId::try_new("o-0").unwrap()
    }

    fn lamp() -> ProductId {
        ProductId::try_new("lamp").unwrap()
    }

    /// Order o-1 of 2 lamps for $15.00, paid by `card`.
    fn placed(card: &str) -> OrderEvent {
        OrderEvent::Placed { product: lamp(), quantity: 2, amount: 1500, card: card.into() }
    }

    /// Order o-1 is placed, then `events` happened to it.
    fn order_with(events: impl IntoIterator<Item = OrderEvent>) -> Scenario {
        Scenario::new().given(
            Order,
            order().stream_id(),
            std::iter::once(placed("visa")).chain(events),
        )
    }

    /// The order o-1 received `event`, and nothing else did.
    fn order_gets(event: OrderEvent) -> Emitted {
        Emitted::new().to(Order, order().stream_id(), [event])
    }

    /// The lamp's stock received `event`, and nothing else did.
    fn stock_gets(event: StockEvent) -> Emitted {
        Emitted::new().to(Stock, lamp().stream_id(), [event])
    }

    fn not_open() -> FulfilmentError {
        FulfilmentError::NotOpen(order())
    }

    fn shipped() -> Scenario {
        order_with([OrderEvent::PaymentTaken { amount: 1500 }, OrderEvent::Shipped])
    }

    fn cancelled() -> Scenario {
        order_with([OrderEvent::Cancelled { reason: "changed my mind".into() }])
    }

    #[test]
    fn adding_stock_records_the_units() {
        Scenario::new()
            .when(&AddStock { product: lamp(), quantity: 7 })
            .then_emits(stock_gets(StockEvent::Added { quantity: 7 }));
    }

    #[test]
    fn adding_no_stock_is_rejected() {
        Scenario::new()
            .when(&AddStock { product: lamp(), quantity: 0 })
            .then_rejects(FulfilmentError::ZeroQuantity);
    }

    #[test]
    fn adding_stock_past_what_a_product_can_hold_is_rejected() {
        Scenario::new()
            .given(Stock, lamp().stream_id(), [StockEvent::Added { quantity: u32::MAX - 1 }])
            .when(&AddStock { product: lamp(), quantity: 2 })
            .then_rejects(FulfilmentError::StockOverflow {
                product: lamp(),
                available: u32::MAX - 1,
                adding: 2,
            });
    }

    #[test]
    fn placing_an_order_of_nothing_is_rejected() {
        Scenario::new()
            .when(&PlaceOrder { quantity: 0, ..place() })
            .then_rejects(FulfilmentError::ZeroQuantity);
    }

    /// An order never placed is not open: nothing is reserved, charged, shipped or cancelled
    /// for it.
    #[test]
    fn an_order_never_placed_is_not_open() {
        let stocked = || {
            Scenario::new().given(Stock, lamp().stream_id(), [StockEvent::Added { quantity: 5 }])
        };
        stocked().when(&reserve(2)).then_rejects(not_open());
        Scenario::new()
            .when(&TakePayment { order: order(), amount: 1500, card: "visa".into() })
            .then_rejects(not_open());
        Scenario::new().when(&ShipOrder { order: order() }).then_rejects(not_open());
        Scenario::new()
            .when(&CancelOrder { order: order(), reason: "never mind".into() })
            .then_rejects(not_open());
    }

    fn place() -> PlaceOrder {
        PlaceOrder {
            order: order(),
            product: lamp(),
            quantity: 2,
            amount: 1500,
            card: "visa".into(),
        }
    }

    #[test]
    fn placing_an_order_records_what_it_is_for() {
        Scenario::new().when(&place()).then_emits(order_gets(placed("visa")));
    }

    #[test]
    fn placing_an_order_twice_is_rejected() {
        order_with([]).when(&place()).then_rejects(FulfilmentError::OrderExists(order()));
    }

    fn reserve(quantity: u32) -> ReserveStock {
        ReserveStock { order: order(), product: lamp(), quantity }
    }

    /// 5 lamps added, 4 reserved by another order, 1 of them released: 2 left.
    fn two_lamps_left() -> Scenario {
        order_with([]).given(
            Stock,
            lamp().stream_id(),
            [
                StockEvent::Added { quantity: 5 },
                StockEvent::Reserved { order: other_order(), quantity: 4 },
                StockEvent::Released { order: other_order(), quantity: 1 },
            ],
        )
    }

    /// What reserving 2 lamps for o-1 emits: to the stock and to the order.
    fn reserved_two() -> Emitted {
        Emitted::new()
            .to(Stock, lamp().stream_id(), [StockEvent::Reserved { order: order(), quantity: 2 }])
            .to(Order, order().stream_id(), [OrderEvent::StockReserved])
    }

    #[test]
    fn reserving_stock_may_take_all_that_is_left() {
        two_lamps_left().when(&reserve(2)).then_emits(reserved_two());
    }

    #[test]
    fn reserving_more_than_is_left_is_rejected_with_both_quantities() {
        two_lamps_left().when(&reserve(3)).then_rejects(FulfilmentError::OutOfStock {
            product: lamp(),
            available: 2,
            requested: 3,
        });
    }

    /// An order cancelled before the saga reserved its stock keeps nothing reserved: a
    /// reservation after the cancellation would never be released.
    #[test]
    fn reserving_stock_for_a_closed_order_is_rejected() {
        let stocked = |scenario: Scenario| {
            scenario.given(Stock, lamp().stream_id(), [StockEvent::Added { quantity: 5 }])
        };
        stocked(cancelled()).when(&reserve(2)).then_rejects(not_open());
        stocked(shipped()).when(&reserve(2)).then_rejects(not_open());
    }

    #[test]
    fn reserving_again_reserves_again() {
        Scenario::new()
            .given(
                Stock,
                lamp().stream_id(),
                [
                    StockEvent::Added { quantity: 5 },
                    StockEvent::Reserved { order: order(), quantity: 2 },
                ],
            )
            .given(Order, order().stream_id(), [placed("visa"), OrderEvent::StockReserved])
            .when(&reserve(2))
            .then_emits(reserved_two());
    }

    fn release() -> ReleaseStock {
        ReleaseStock { order: order(), product: lamp(), quantity: 2 }
    }

    #[test]
    fn releasing_stock_gives_the_units_back_to_the_product_only() {
        Scenario::new()
            .given(
                Stock,
                lamp().stream_id(),
                [
                    StockEvent::Added { quantity: 5 },
                    StockEvent::Reserved { order: order(), quantity: 2 },
                ],
            )
            .when(&release())
            .then_emits(stock_gets(StockEvent::Released { order: order(), quantity: 2 }));
    }

    #[test]
    fn releasing_again_releases_again() {
        Scenario::new()
            .given(
                Stock,
                lamp().stream_id(),
                [
                    StockEvent::Added { quantity: 5 },
                    StockEvent::Reserved { order: order(), quantity: 2 },
                    StockEvent::Released { order: order(), quantity: 2 },
                ],
            )
            .when(&release())
            .then_emits(stock_gets(StockEvent::Released { order: order(), quantity: 2 }));
    }

    fn pay(card: &str) -> TakePayment {
        TakePayment { order: order(), amount: 1500, card: card.into() }
    }

    #[test]
    fn taking_payment_records_the_amount() {
        order_with([OrderEvent::StockReserved])
            .when(&pay("visa"))
            .then_emits(order_gets(OrderEvent::PaymentTaken { amount: 1500 }));
    }

    #[test]
    fn a_payment_whose_bank_does_not_answer_is_pending() {
        order_with([OrderEvent::StockReserved])
            .when(&pay("slow"))
            .then_emits(order_gets(OrderEvent::PaymentPending));
    }

    #[test]
    fn a_declined_card_is_rejected() {
        order_with([OrderEvent::StockReserved])
            .when(&pay("declined"))
            .then_rejects(FulfilmentError::Declined);
    }

    #[test]
    fn taking_payment_again_charges_again() {
        order_with([OrderEvent::StockReserved, OrderEvent::PaymentTaken { amount: 1500 }])
            .when(&pay("visa"))
            .then_emits(order_gets(OrderEvent::PaymentTaken { amount: 1500 }));
    }

    #[test]
    fn taking_payment_for_a_closed_order_is_rejected_whatever_the_card() {
        shipped().when(&pay("visa")).then_rejects(not_open());
        cancelled().when(&pay("visa")).then_rejects(not_open());
        cancelled().when(&pay("declined")).then_rejects(not_open());
    }

    fn ship() -> ShipOrder {
        ShipOrder { order: order() }
    }

    #[test]
    fn shipping_an_open_order_closes_it() {
        order_with([OrderEvent::StockReserved, OrderEvent::PaymentTaken { amount: 1500 }])
            .when(&ship())
            .then_emits(order_gets(OrderEvent::Shipped));
    }

    #[test]
    fn shipping_a_closed_order_is_rejected() {
        shipped().when(&ship()).then_rejects(not_open());
        cancelled().when(&ship()).then_rejects(not_open());
    }

    fn cancel() -> CancelOrder {
        CancelOrder { order: order(), reason: "not paid in time".into() }
    }

    #[test]
    fn cancelling_an_open_order_records_why() {
        order_with([OrderEvent::StockReserved, OrderEvent::PaymentPending])
            .when(&cancel())
            .then_emits(order_gets(OrderEvent::Cancelled { reason: "not paid in time".into() }));
    }

    #[test]
    fn cancelling_a_closed_order_is_rejected() {
        shipped().when(&cancel()).then_rejects(not_open());
        cancelled().when(&cancel()).then_rejects(not_open());
    }
}

/// What users copy from the examples holds where money and orders are at stake.
mod copied {
    use super::banking as bank;
    use super::ecommerce as shop;
    use super::saga as fulfil;
    use eventcore::prelude::*;

    /// Two different transfers never share an idempotency key, even with ids that hold the
    /// characters a key made by joining the fields would separate them with: the second
    /// moves its money, it is not answered with the first's commit.
    #[tokio::test]
    async fn two_different_transfers_never_share_a_key() {
        let store = Memory::new();
        let exec = Executor::new(store.clone());
        let id = |s: &str| bank::AccountId::try_new(s).unwrap();
        for a in ["a:b", "b", "c"] {
            exec.execute(&bank::OpenAccount { account: id(a), owner: a.into() }).await.unwrap();
            let deposit = bank::Deposit { account: id(a), amount: bank::Money::from_cents(100) };
            exec.execute(&deposit).await.unwrap();
        }
        let transfer = |t: &str, from: &str| {
            let t = bank::TransferId::try_new(t).unwrap();
            bank::Transfer::new(t, id(from), id("c"), bank::Money::from_cents(5)).unwrap()
        };
        exec.execute(&transfer("t", "a:b")).await.unwrap();
        let done = exec.execute(&transfer("t:a", "b")).await.unwrap();
        assert!(!done.committed.replayed, "answered with another transfer's commit");
        let b = bank::balance(&store, &id("b")).await.unwrap().balance;
        assert_eq!(b, bank::Money::from_cents(95));
    }

    /// A transfer between valid accounts can be built whatever the lengths of their ids (the
    /// key is a digest, not the ids joined).
    #[test]
    fn a_transfer_between_long_ids_can_be_built() {
        let a = bank::AccountId::try_new(&"a".repeat(100)).unwrap();
        let b = bank::AccountId::try_new(&"b".repeat(100)).unwrap();
        let t = bank::TransferId::try_new(&"t".repeat(60)).unwrap();
        assert!(bank::Transfer::new(t, a, b, bank::Money::from_cents(1)).is_ok());
    }

    /// An order can always be cancelled: a restock counts the units orders hold reserved,
    /// which a cancellation gives back, so the stock can always take them.
    #[tokio::test]
    async fn an_order_can_always_be_cancelled() {
        let exec = Executor::new(Memory::new());
        let p = shop::ProductId::try_new("p").unwrap();
        let add = shop::AddProduct {
            product: p.clone(),
            name: "P".into(),
            price: shop::Price::from_cents(1),
        };
        exec.execute(&add).await.unwrap();
        let restock = |n| shop::Restock { product: p.clone(), quantity: shop::Quantity::new(n) };
        exec.execute(&restock(10)).await.unwrap();
        let o = shop::OrderId::try_new("o").unwrap();
        let c = shop::CustomerId::try_new("c").unwrap();
        let lines = [(p.clone(), shop::Quantity::new(10))];
        exec.execute(&shop::PlaceOrder::new(o.clone(), c, lines).unwrap()).await.unwrap();
        // 10 units are reserved: at most u32::MAX - 10 more fit.
        let refused = exec.execute(&restock(u32::MAX)).await;
        assert!(
            matches!(&refused, Err(ExecuteError::Rejected(shop::CommerceError::StockOverflow(_)))),
            "{refused:?}"
        );
        exec.execute(&restock(u32::MAX - 10)).await.unwrap();
        exec.execute(&shop::CancelOrder { order: o }).await.unwrap();
    }

    /// The saga acts on the order it follows whatever its id, also an id that itself starts
    /// with the category's prefix (`order-7`, stream `order-order-7`): the order is shipped,
    /// not left open while the saga works on another order (`7`).
    #[tokio::test]
    async fn the_saga_fulfils_an_order_whose_id_starts_like_its_stream() {
        use eventcore::backend::LogFilter;
        use eventcore::subscription::{ProcessRunner, Subscription};
        use std::time::Duration;

        let store = Memory::new();
        let shop = Executor::new(store.clone());
        let saga = tokio::spawn(ProcessRunner::new(shop.clone(), fulfil::FulfilmentSaga).run());
        let lamp = fulfil::ProductId::try_new("lamp").unwrap();
        shop.execute(&fulfil::AddStock { product: lamp.clone(), quantity: 1 }).await.unwrap();
        let order = fulfil::OrderId::try_new("order-7").unwrap();
        let place = fulfil::PlaceOrder {
            order: order.clone(),
            product: lamp,
            quantity: 1,
            amount: 100,
            card: "visa".into(),
        };
        shop.execute(&place).await.unwrap();
        let mut follow = Subscription::new(store.clone())
            .filter(LogFilter::all().category("order"))
            .poll_interval(Duration::from_millis(20))
            .unwrap();
        let mut seen = Vec::new();
        let shipped = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                for event in follow.next_batch().await.unwrap().events {
                    let event = event.unwrap();
                    let body = event.decode::<fulfil::OrderEvent>().unwrap();
                    seen.push(format!("{}: {body:?}", event.stream_id.as_str()));
                    if event.stream_id == *order.stream_id() && body == fulfil::OrderEvent::Shipped
                    {
                        return;
                    }
                }
            }
        })
        .await;
        saga.abort();
        assert!(shipped.is_ok(), "order-7 was never shipped; the order log: {seen:#?}");
    }

    /// Stock the saga reserved and then released comes back whole: adding stock leaves room
    /// for the units orders hold, so releasing them never overflows and drops units.
    #[tokio::test]
    async fn released_stock_is_never_lost() {
        use eventcore::Apply;

        let store = Memory::new();
        let exec = Executor::new(store.clone());
        let lamp = fulfil::ProductId::try_new("lamp").unwrap();
        let order = fulfil::OrderId::try_new("o").unwrap();
        let add = |quantity| fulfil::AddStock { product: lamp.clone(), quantity };
        exec.execute(&add(u32::MAX)).await.unwrap();
        let place = fulfil::PlaceOrder {
            order: order.clone(),
            product: lamp.clone(),
            quantity: 10,
            amount: 100,
            card: "visa".into(),
        };
        exec.execute(&place).await.unwrap();
        let reserve =
            fulfil::ReserveStock { order: order.clone(), product: lamp.clone(), quantity: 10 };
        exec.execute(&reserve).await.unwrap();
        // Accepted or refused, this must not make the release below lose units.
        let _ = exec.execute(&add(10)).await;
        let release = fulfil::ReleaseStock { order, product: lamp.clone(), quantity: 10 };
        exec.execute(&release).await.unwrap();

        let (mut folded, mut counted) = (fulfil::Fulfilment::default(), 0_i64);
        for stream in store.read(&[lamp.stream_id().clone()]).await.unwrap() {
            for event in stream.events {
                let event = event.decode::<fulfil::StockEvent>().unwrap();
                counted += match &event {
                    fulfil::StockEvent::Added { quantity }
                    | fulfil::StockEvent::Released { quantity, .. } => i64::from(*quantity),
                    fulfil::StockEvent::Reserved { quantity, .. } => -i64::from(*quantity),
                };
                folded.apply(&event);
            }
        }
        assert_eq!(i64::from(folded.available), counted, "units added and released were lost");
    }
}
