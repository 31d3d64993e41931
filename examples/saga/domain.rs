//! Order fulfilment as a saga: placing an order reserves stock, then takes payment, then ships;
//! a declined payment cancels the order; an order not paid in time is cancelled; an order for
//! stock that is not there is cancelled; a cancelled order's reserved stock is released.
//!
//! `ReserveStock`, `ReleaseStock` and `TakePayment` are deliberately *not* idempotent by
//! themselves (running `TakePayment` twice charges twice): the process manager's exactly-once
//! bookkeeping is what keeps each from running twice. `ShipOrder` and `CancelOrder` refuse a
//! closed order, so that an order ends in exactly one final state even when a timeout and a
//! payment race. Shared by the `saga` example and the conformance tests (with `#[path]`).
#![allow(dead_code)]

use std::time::Duration;

use eventcore::RecordedEvent;
use eventcore::backend::LogFilter;
use eventcore::prelude::*;
use eventcore::subscription::{Happened, ProcessManager, Reaction};
use serde::{Deserialize, Serialize};

/// How long an order may stay unpaid.
pub const PAYMENT_WINDOW: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderEvent {
    Placed {
        product: String,
        quantity: u32,
        amount: u64,
        card: String,
    },
    StockReserved,
    PaymentTaken {
        amount: u64,
    },
    /// The card's bank has not answered yet.
    PaymentPending,
    Shipped,
    Cancelled {
        reason: String,
    },
}

impl Event for OrderEvent {
    const EVENT_TYPE: &'static str = "SagaOrderEvent";
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StockEvent {
    Added { quantity: u32 },
    Reserved { order: String, quantity: u32 },
    Released { order: String, quantity: u32 },
}

impl Event for StockEvent {
    const EVENT_TYPE: &'static str = "SagaStockEvent";
}

slot!(
    /// The order.
    pub Order: OrderEvent
);
slot!(
    /// The product's stock.
    pub Stock: StockEvent
);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FulfilmentError {
    #[error("order {0} exists already")]
    OrderExists(String),
    #[error("order {0} is not open")]
    NotOpen(String),
    #[error("only {available} units of {product} are left, {requested} requested")]
    OutOfStock { product: String, available: u32, requested: u32 },
    #[error("the card was declined")]
    Declined,
}

pub fn order_stream(order: &str) -> StreamId {
    StreamId::with_category("order", order).expect("order ids are valid stream ids")
}

pub fn stock_stream(product: &str) -> StreamId {
    StreamId::with_category("stock", product).expect("product ids are valid stream ids")
}

/// What the commands know of an order and a product.
#[derive(Debug, Default)]
pub struct Fulfilment {
    pub placed: bool,
    pub closed: bool,
    pub available: u32,
}

impl Fold<Order> for Fulfilment {
    fn fold(&mut self, _: &StreamId, event: &OrderEvent) {
        match event {
            OrderEvent::Placed { .. } => self.placed = true,
            OrderEvent::Shipped | OrderEvent::Cancelled { .. } => self.closed = true,
            _ => {}
        }
    }
}

impl Fold<Stock> for Fulfilment {
    fn fold(&mut self, _: &StreamId, event: &StockEvent) {
        match event {
            StockEvent::Added { quantity } | StockEvent::Released { quantity, .. } => {
                self.available = self.available.saturating_add(*quantity);
            }
            StockEvent::Reserved { quantity, .. } => {
                self.available = self.available.saturating_sub(*quantity);
            }
        }
    }
}

pub struct AddStock {
    pub product: String,
    pub quantity: u32,
}

impl Command for AddStock {
    type Streams = Streams![Stock];
    type State = Fulfilment;
    type Error = FulfilmentError;
    type Continuation = NoDiscovery;

    fn streams(&self) -> Bindings<Self::Streams> {
        hlist![Stock::bind(stock_stream(&self.product))]
    }
}

impl Handle for AddStock {
    fn handle(&self, _: &Fulfilment, mut decision: Decision<Self::Streams>) -> Handled<Self> {
        decision.emit(Stock, StockEvent::Added { quantity: self.quantity });
        Ok(decision)
    }
}

pub struct PlaceOrder {
    pub order: String,
    pub product: String,
    pub quantity: u32,
    pub amount: u64,
    pub card: String,
}

impl Command for PlaceOrder {
    type Streams = Streams![Order];
    type State = Fulfilment;
    type Error = FulfilmentError;
    type Continuation = NoDiscovery;

    fn streams(&self) -> Bindings<Self::Streams> {
        hlist![Order::bind(order_stream(&self.order))]
    }
}

impl Handle for PlaceOrder {
    fn handle(&self, state: &Fulfilment, mut decision: Decision<Self::Streams>) -> Handled<Self> {
        require!(!state.placed, FulfilmentError::OrderExists(self.order.clone()));
        decision.emit(
            Order,
            OrderEvent::Placed {
                product: self.product.clone(),
                quantity: self.quantity,
                amount: self.amount,
                card: self.card.clone(),
            },
        );
        Ok(decision)
    }
}

/// Reserves stock for an order. Not idempotent: run twice, it reserves twice.
pub struct ReserveStock {
    pub order: String,
    pub product: String,
    pub quantity: u32,
}

impl Command for ReserveStock {
    type Streams = Streams![Order, Stock];
    type State = Fulfilment;
    type Error = FulfilmentError;
    type Continuation = NoDiscovery;

    fn streams(&self) -> Bindings<Self::Streams> {
        hlist![Order::bind(order_stream(&self.order)), Stock::bind(stock_stream(&self.product))]
    }
}

impl Handle for ReserveStock {
    fn handle(&self, state: &Fulfilment, mut decision: Decision<Self::Streams>) -> Handled<Self> {
        require!(
            state.available >= self.quantity,
            FulfilmentError::OutOfStock {
                product: self.product.clone(),
                available: state.available,
                requested: self.quantity,
            }
        );
        decision.emit(
            Stock,
            StockEvent::Reserved { order: self.order.clone(), quantity: self.quantity },
        );
        decision.emit(Order, OrderEvent::StockReserved);
        Ok(decision)
    }
}

/// Releases an order's stock. Not idempotent.
pub struct ReleaseStock {
    pub order: String,
    pub product: String,
    pub quantity: u32,
}

impl Command for ReleaseStock {
    type Streams = Streams![Stock];
    type State = Fulfilment;
    type Error = FulfilmentError;
    type Continuation = NoDiscovery;

    fn streams(&self) -> Bindings<Self::Streams> {
        hlist![Stock::bind(stock_stream(&self.product))]
    }
}

impl Handle for ReleaseStock {
    fn handle(&self, _: &Fulfilment, mut decision: Decision<Self::Streams>) -> Handled<Self> {
        decision.emit(
            Stock,
            StockEvent::Released { order: self.order.clone(), quantity: self.quantity },
        );
        Ok(decision)
    }
}

/// Charges the order's card. Not idempotent: run twice, it charges twice. The card
/// `"declined"` is declined; `"slow"` leaves the payment pending (its bank never answers).
pub struct TakePayment {
    pub order: String,
    pub amount: u64,
    pub card: String,
}

impl Command for TakePayment {
    type Streams = Streams![Order];
    type State = Fulfilment;
    type Error = FulfilmentError;
    type Continuation = NoDiscovery;

    fn streams(&self) -> Bindings<Self::Streams> {
        hlist![Order::bind(order_stream(&self.order))]
    }
}

impl Handle for TakePayment {
    fn handle(&self, state: &Fulfilment, mut decision: Decision<Self::Streams>) -> Handled<Self> {
        require!(!state.closed, FulfilmentError::NotOpen(self.order.clone()));
        require!(self.card != "declined", FulfilmentError::Declined);
        if self.card == "slow" {
            decision.emit(Order, OrderEvent::PaymentPending);
        } else {
            decision.emit(Order, OrderEvent::PaymentTaken { amount: self.amount });
        }
        Ok(decision)
    }
}

/// Ships the order, unless it is closed (shipped or cancelled) already.
pub struct ShipOrder {
    pub order: String,
}

impl Command for ShipOrder {
    type Streams = Streams![Order];
    type State = Fulfilment;
    type Error = FulfilmentError;
    type Continuation = NoDiscovery;

    fn streams(&self) -> Bindings<Self::Streams> {
        hlist![Order::bind(order_stream(&self.order))]
    }
}

impl Handle for ShipOrder {
    fn handle(&self, state: &Fulfilment, mut decision: Decision<Self::Streams>) -> Handled<Self> {
        require!(!state.closed, FulfilmentError::NotOpen(self.order.clone()));
        decision.emit(Order, OrderEvent::Shipped);
        Ok(decision)
    }
}

/// Cancels the order, unless it is closed (shipped or cancelled) already.
pub struct CancelOrder {
    pub order: String,
    pub reason: String,
}

impl Command for CancelOrder {
    type Streams = Streams![Order];
    type State = Fulfilment;
    type Error = FulfilmentError;
    type Continuation = NoDiscovery;

    fn streams(&self) -> Bindings<Self::Streams> {
        hlist![Order::bind(order_stream(&self.order))]
    }
}

impl Handle for CancelOrder {
    fn handle(&self, state: &Fulfilment, mut decision: Decision<Self::Streams>) -> Handled<Self> {
        require!(!state.closed, FulfilmentError::NotOpen(self.order.clone()));
        decision.emit(Order, OrderEvent::Cancelled { reason: self.reason.clone() });
        Ok(decision)
    }
}

/// The saga: one instance per order.
#[derive(Debug, Default, Clone, Copy)]
pub struct FulfilmentSaga;

/// What the saga knows of one order.
#[derive(Debug, Default, Clone)]
pub struct SagaState {
    pub order: String,
    pub product: String,
    pub quantity: u32,
    pub amount: u64,
    pub card: String,
    pub reserved: bool,
    pub paid: bool,
    pub closed: bool,
}

impl SagaState {
    /// Cancel the order for `reason`, unless it is closed already. Its stock is released when
    /// the cancellation is seen (see `react`): the saga's view of the order may lag behind the
    /// order itself (a timer can fire before the saga has seen the stock reserved), so it acts
    /// on the order's own events, which it sees in order.
    fn cancel<B: Backend>(&self, reason: &str) -> Vec<Reaction<B>> {
        if self.closed {
            return vec![];
        }
        vec![Reaction::command(CancelOrder {
            order: self.order.clone(),
            reason: reason.to_owned(),
        })]
    }
}

impl<B: Backend> ProcessManager<B> for FulfilmentSaga {
    type State = SagaState;

    fn name(&self) -> &str {
        "fulfilment"
    }

    fn filter(&self) -> LogFilter {
        LogFilter::all().category("order")
    }

    fn instance(&self, event: &RecordedEvent) -> Option<String> {
        event.stream_id.as_str().strip_prefix("order-").map(str::to_owned)
    }

    fn apply(&self, state: &mut SagaState, happened: &Happened) {
        let Happened::Event(event) = happened else { return };
        let Ok(event_body) = event.decode::<OrderEvent>() else { return };
        match event_body {
            OrderEvent::Placed { product, quantity, amount, card } => {
                state.order = event.stream_id.as_str().trim_start_matches("order-").to_owned();
                (state.product, state.quantity, state.amount, state.card) =
                    (product, quantity, amount, card);
            }
            OrderEvent::StockReserved => state.reserved = true,
            OrderEvent::PaymentTaken { .. } => state.paid = true,
            OrderEvent::PaymentPending => {}
            OrderEvent::Shipped | OrderEvent::Cancelled { .. } => state.closed = true,
        }
    }

    fn react(&self, state: &SagaState, happened: &Happened) -> Vec<Reaction<B>> {
        match happened {
            Happened::Event(event) => match event.decode::<OrderEvent>() {
                Ok(OrderEvent::Placed { .. }) => vec![
                    Reaction::schedule("unpaid", PAYMENT_WINDOW),
                    Reaction::command(ReserveStock {
                        order: state.order.clone(),
                        product: state.product.clone(),
                        quantity: state.quantity,
                    }),
                ],
                Ok(OrderEvent::StockReserved) => vec![Reaction::command(TakePayment {
                    order: state.order.clone(),
                    amount: state.amount,
                    card: state.card.clone(),
                })],
                Ok(OrderEvent::PaymentTaken { .. }) => vec![
                    Reaction::cancel("unpaid"),
                    Reaction::command(ShipOrder { order: state.order.clone() }),
                ],
                Ok(OrderEvent::Cancelled { .. }) => {
                    let mut out = vec![Reaction::cancel("unpaid")];
                    if state.reserved {
                        out.push(Reaction::command(ReleaseStock {
                            order: state.order.clone(),
                            product: state.product.clone(),
                            quantity: state.quantity,
                        }));
                    }
                    out
                }
                _ => vec![],
            },
            // A cancellation or a shipment that found the order closed has nothing left to do.
            Happened::Rejected { command, .. }
                if command.ends_with("CancelOrder") || command.ends_with("ShipOrder") =>
            {
                vec![]
            }
            Happened::Rejected { reason, .. } => state.cancel(reason),
            Happened::TimedOut { .. } if !state.paid => state.cancel("not paid in time"),
            _ => vec![],
        }
    }
}

/// Where a set of orders stands, from the order and stock events seen so far: which are still
/// open, and which cancelled ones still hold reserved stock. The example and the tests follow
/// the log with it until the saga has finished.
#[derive(Debug, Default)]
pub struct Settling {
    open: Vec<String>,
    holding: Vec<String>,
    cancelled: Vec<String>,
}

impl Settling {
    /// Follows `orders`, all open.
    pub fn new<'a>(orders: impl IntoIterator<Item = &'a str>) -> Self {
        Self { open: orders.into_iter().map(str::to_owned).collect(), ..Self::default() }
    }

    /// Takes an event of the log into account (events of other streams are ignored).
    pub fn observe(&mut self, event: &RecordedEvent) {
        let order = event.stream_id.as_str().trim_start_matches("order-").to_owned();
        match event.decode::<OrderEvent>() {
            Ok(OrderEvent::Shipped) => self.open.retain(|o| *o != order),
            Ok(OrderEvent::Cancelled { .. }) => {
                self.open.retain(|o| *o != order);
                self.cancelled.push(order);
            }
            _ => {}
        }
        match event.decode::<StockEvent>() {
            Ok(StockEvent::Reserved { order, .. }) => self.holding.push(order),
            Ok(StockEvent::Released { order, .. }) => self.holding.retain(|o| *o != order),
            _ => {}
        }
    }

    /// Every order shipped or cancelled, and no cancelled order holding stock.
    pub fn settled(&self) -> bool {
        self.open.is_empty() && !self.holding.iter().any(|o| self.cancelled.contains(o))
    }

    /// The orders still open.
    pub fn open(&self) -> &[String] {
        &self.open
    }
}
