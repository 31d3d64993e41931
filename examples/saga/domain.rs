//! Order fulfilment as a saga: placing an order reserves stock, then takes payment, then ships;
//! a declined payment cancels the order; an order not paid in time is cancelled; an order for
//! stock that is not there is cancelled; a cancelled order's reserved stock is released.
//!
//! `ReserveStock`, `ReleaseStock` and `TakePayment` are deliberately *not* idempotent by
//! themselves (running `TakePayment` twice charges twice): the process manager's exactly-once
//! bookkeeping is what keeps each from running twice. `ShipOrder` and `CancelOrder` refuse a
//! closed order, so that an order ends in exactly one final state even when a timeout and a
//! payment race; `CancelOrder` refuses a paid order too (it ships), and `TakePayment` a
//! cancelled one, so that no order is both charged and cancelled. Those guards are in the
//! commands, against the order's own stream, and not in the saga: the saga's view of an order
//! lags behind the order (its payment timer can come due after the card was charged but before
//! the saga has read the payment). `ReserveStock` refuses a closed order too, so that an order
//! cancelled before its stock was reserved never holds any. Shared by the `saga` example and the conformance tests (with `#[path]`).
#![allow(dead_code)]

use std::any::type_name;
use std::time::Duration;

use eventcore::backend::LogFilter;
use eventcore::prelude::*;
use eventcore::subscription::{Happened, ProcessManager, Reaction};
use eventcore::{DecodeError, RecordedEvent};
use serde::{Deserialize, Serialize};

/// How long an order may stay unpaid.
pub const PAYMENT_WINDOW: Duration = Duration::from_secs(15 * 60);

/// An order; its stream is `order-{id}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, StreamKey)]
#[stream_key(category = "order")]
pub struct OrderId(StreamId);

/// A product; its stock is the stream `stock-{id}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, StreamKey)]
#[stream_key(category = "stock")]
pub struct ProductId(StreamId);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Event)]
#[event(name = "SagaOrderEvent")]
pub enum OrderEvent {
    Placed {
        product: ProductId,
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Event)]
#[event(name = "SagaStockEvent")]
pub enum StockEvent {
    Added { quantity: u32 },
    Reserved { order: OrderId, quantity: u32 },
    Released { order: OrderId, quantity: u32 },
}

slot!(
    /// The order.
    pub Order: OrderEvent, key = OrderId
);
slot!(
    /// The product's stock.
    pub Stock: StockEvent, key = ProductId
);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FulfilmentError {
    #[error("order {0} exists already")]
    OrderExists(OrderId),
    #[error("order {0} is not open")]
    NotOpen(OrderId),
    #[error("order {0} is paid: it ships")]
    Paid(OrderId),
    #[error("only {available} units of {product} are left, {requested} requested")]
    OutOfStock { product: ProductId, available: u32, requested: u32 },
    #[error("the card was declined")]
    Declined,
    #[error("a quantity of 0 is not an order or a delivery")]
    ZeroQuantity,
    #[error("{product} cannot hold {adding} more units: it has {available}")]
    StockOverflow { product: ProductId, available: u32, adding: u32 },
}

/// What the commands know of an order and a product.
#[derive(Debug, Default, Fold)]
#[fold(Order, Stock)]
pub struct Fulfilment {
    pub placed: bool,
    pub paid: bool,
    pub closed: bool,
    pub available: u32,
    /// Units orders hold reserved: a release gives them back to `available`.
    pub reserved: u32,
}

impl Fulfilment {
    /// Placed, and neither shipped nor cancelled.
    pub fn is_open(&self) -> bool {
        self.placed && !self.closed
    }
}

impl Apply<OrderEvent> for Fulfilment {
    fn apply(&mut self, event: &OrderEvent) {
        match event {
            OrderEvent::Placed { .. } => self.placed = true,
            OrderEvent::PaymentTaken { .. } => self.paid = true,
            OrderEvent::Shipped | OrderEvent::Cancelled { .. } => self.closed = true,
            _ => {}
        }
    }
}

impl Apply<StockEvent> for Fulfilment {
    fn apply(&mut self, event: &StockEvent) {
        match event {
            StockEvent::Added { quantity } => {
                self.available = self.available.saturating_add(*quantity);
            }
            StockEvent::Released { quantity, .. } => {
                self.available = self.available.saturating_add(*quantity);
                self.reserved = self.reserved.saturating_sub(*quantity);
            }
            StockEvent::Reserved { quantity, .. } => {
                self.available = self.available.saturating_sub(*quantity);
                self.reserved = self.reserved.saturating_add(*quantity);
            }
        }
    }
}

#[derive(Command)]
#[command(state = Fulfilment, error = FulfilmentError)]
pub struct AddStock {
    #[slot(Stock)]
    pub product: ProductId,
    pub quantity: u32,
}

impl Handle for AddStock {
    fn handle(&self, state: &Fulfilment, mut decision: Decision<Self::Streams>) -> Handled<Self> {
        require!(self.quantity > 0, FulfilmentError::ZeroQuantity);
        // Reserved units count: every one of them can come back with a release.
        let held = state.available.checked_add(state.reserved);
        require!(
            held.and_then(|held| held.checked_add(self.quantity)).is_some(),
            FulfilmentError::StockOverflow {
                product: self.product.clone(),
                available: state.available,
                adding: self.quantity,
            }
        );
        decision.emit(Stock, StockEvent::Added { quantity: self.quantity });
        Ok(decision)
    }
}

#[derive(Command)]
#[command(state = Fulfilment, error = FulfilmentError)]
pub struct PlaceOrder {
    #[slot(Order)]
    pub order: OrderId,
    pub product: ProductId,
    pub quantity: u32,
    pub amount: u64,
    pub card: String,
}

impl Handle for PlaceOrder {
    fn handle(&self, state: &Fulfilment, mut decision: Decision<Self::Streams>) -> Handled<Self> {
        require!(!state.placed, FulfilmentError::OrderExists(self.order.clone()));
        require!(self.quantity > 0, FulfilmentError::ZeroQuantity);
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

/// Reserves stock for an order, unless the order is closed. Not idempotent: run twice, it
/// reserves twice.
///
/// A closed order is refused: the saga reacts to `Placed` with this command, and an order
/// cancelled in between must not reserve stock that no cancellation would ever release.
#[derive(Debug, Command)]
#[command(state = Fulfilment, error = FulfilmentError)]
pub struct ReserveStock {
    #[slot(Order)]
    pub order: OrderId,
    #[slot(Stock)]
    pub product: ProductId,
    pub quantity: u32,
}

impl Handle for ReserveStock {
    fn handle(&self, state: &Fulfilment, mut decision: Decision<Self::Streams>) -> Handled<Self> {
        require!(state.is_open(), FulfilmentError::NotOpen(self.order.clone()));
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
#[derive(Debug, Command)]
#[command(state = Fulfilment, error = FulfilmentError)]
pub struct ReleaseStock {
    pub order: OrderId,
    #[slot(Stock)]
    pub product: ProductId,
    pub quantity: u32,
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
#[derive(Debug, Command)]
#[command(state = Fulfilment, error = FulfilmentError)]
pub struct TakePayment {
    #[slot(Order)]
    pub order: OrderId,
    pub amount: u64,
    pub card: String,
}

impl Handle for TakePayment {
    fn handle(&self, state: &Fulfilment, mut decision: Decision<Self::Streams>) -> Handled<Self> {
        require!(state.is_open(), FulfilmentError::NotOpen(self.order.clone()));
        require!(self.card != "declined", FulfilmentError::Declined);
        if self.card == "slow" {
            decision.emit(Order, OrderEvent::PaymentPending);
        } else {
            decision.emit(Order, OrderEvent::PaymentTaken { amount: self.amount });
        }
        Ok(decision)
    }
}

/// Ships the order, unless it is not placed, or closed (shipped or cancelled) already.
#[derive(Debug, Command)]
#[command(state = Fulfilment, error = FulfilmentError)]
pub struct ShipOrder {
    #[slot(Order)]
    pub order: OrderId,
}

impl Handle for ShipOrder {
    fn handle(&self, state: &Fulfilment, mut decision: Decision<Self::Streams>) -> Handled<Self> {
        require!(state.is_open(), FulfilmentError::NotOpen(self.order.clone()));
        decision.emit(Order, OrderEvent::Shipped);
        Ok(decision)
    }
}

/// Cancels the order, unless it is not placed, closed (shipped or cancelled) already, or paid
/// (a paid order ships: the check is here, on the order's stream, because whoever sends this
/// may not have seen the payment yet).
#[derive(Debug, Command)]
#[command(state = Fulfilment, error = FulfilmentError)]
pub struct CancelOrder {
    #[slot(Order)]
    pub order: OrderId,
    pub reason: String,
}

impl Handle for CancelOrder {
    fn handle(&self, state: &Fulfilment, mut decision: Decision<Self::Streams>) -> Handled<Self> {
        require!(state.is_open(), FulfilmentError::NotOpen(self.order.clone()));
        require!(!state.paid, FulfilmentError::Paid(self.order.clone()));
        decision.emit(Order, OrderEvent::Cancelled { reason: self.reason.clone() });
        Ok(decision)
    }
}

/// The saga: one instance per order.
#[derive(Debug, Default, Clone, Copy)]
pub struct FulfilmentSaga;

/// An order as placed: what the saga's commands need to know of it.
#[derive(Debug, Clone)]
pub struct PlacedOrder {
    pub order: OrderId,
    pub product: ProductId,
    pub quantity: u32,
    pub amount: u64,
    pub card: String,
}

/// What the saga knows of one order.
#[derive(Debug, Default, Clone)]
pub struct SagaState {
    /// The order, once its `Placed` is seen (the saga acts only after it).
    pub placed: Option<PlacedOrder>,
    pub reserved: bool,
    pub paid: bool,
    pub closed: bool,
}

impl SagaState {
    /// Cancel `order` for `reason`, unless it is closed already. Its stock is released when
    /// the cancellation is seen (see `react`): the saga's view of the order may lag behind the
    /// order itself (a timer can fire before the saga has seen the stock reserved), so it acts
    /// on the order's own events, which it sees in order.
    fn cancel<B: Backend>(&self, order: &PlacedOrder, reason: &str) -> Vec<Reaction<B>> {
        if self.closed {
            return vec![];
        }
        vec![Reaction::command(CancelOrder {
            order: order.order.clone(),
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

    /// Every order event must be one this code knows: an order event of a newer version (a
    /// rolling deploy) stops the saga before it, where passing it by would lose its step.
    fn readable(&self, event: &RecordedEvent) -> Result<(), DecodeError> {
        event.decode_all::<OrderEvent>().map(drop)
    }

    fn instance(&self, event: &RecordedEvent) -> Option<String> {
        event.stream_id.as_str().strip_prefix("order-").map(str::to_owned)
    }

    fn apply(&self, state: &mut SagaState, happened: &Happened) {
        let Happened::Event(event) = happened else { return };
        let Ok(event_body) = event.decode::<OrderEvent>() else { return };
        match event_body {
            OrderEvent::Placed { product, quantity, amount, card } => {
                // The saga follows order streams only: the stream names the order. Strip the
                // prefix once: the id of `order-order-7` is `order-7`.
                let Some(id) = event.stream_id.as_str().strip_prefix("order-") else { return };
                let Ok(order) = OrderId::try_new(id) else { return };
                state.placed = Some(PlacedOrder { order, product, quantity, amount, card });
            }
            OrderEvent::StockReserved => state.reserved = true,
            OrderEvent::PaymentTaken { .. } => state.paid = true,
            OrderEvent::PaymentPending => {}
            OrderEvent::Shipped | OrderEvent::Cancelled { .. } => state.closed = true,
        }
    }

    fn react(&self, state: &SagaState, happened: &Happened) -> Vec<Reaction<B>> {
        let Some(placed) = &state.placed else { return vec![] };
        let order = || placed.order.clone();
        match happened {
            Happened::Event(event) => match event.decode::<OrderEvent>() {
                Ok(OrderEvent::Placed { .. }) => vec![
                    Reaction::schedule("unpaid", PAYMENT_WINDOW),
                    Reaction::command(ReserveStock {
                        order: order(),
                        product: placed.product.clone(),
                        quantity: placed.quantity,
                    }),
                ],
                Ok(OrderEvent::StockReserved) => vec![Reaction::command(TakePayment {
                    order: order(),
                    amount: placed.amount,
                    card: placed.card.clone(),
                })],
                Ok(OrderEvent::PaymentTaken { .. }) => vec![
                    Reaction::cancel("unpaid"),
                    Reaction::command(ShipOrder { order: order() }),
                ],
                Ok(OrderEvent::Cancelled { .. }) => {
                    let mut out = vec![Reaction::cancel("unpaid")];
                    if state.reserved {
                        out.push(Reaction::command(ReleaseStock {
                            order: order(),
                            product: placed.product.clone(),
                            quantity: placed.quantity,
                        }));
                    }
                    out
                }
                _ => vec![],
            },
            // A cancellation or a shipment that found the order closed (or, cancelling, paid:
            // it ships once the saga sees the payment) has nothing left to do.
            // (A command's name is its type's path; compared whole, `ForceCancelOrder` or a
            // `CancelOrder` of another module is not taken for ours.)
            Happened::Rejected { command, .. }
                if *command == type_name::<CancelOrder>()
                    || *command == type_name::<ShipOrder>() =>
            {
                vec![]
            }
            Happened::Rejected { reason, .. } => state.cancel(placed, reason),
            // `state.paid` may lag behind the order: `CancelOrder` checks the order itself.
            Happened::TimedOut { .. } if !state.paid => state.cancel(placed, "not paid in time"),
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
        let order = event.stream_id.as_str().strip_prefix("order-").unwrap_or_default().to_owned();
        match event.decode::<OrderEvent>() {
            Ok(OrderEvent::Shipped) => self.open.retain(|o| *o != order),
            Ok(OrderEvent::Cancelled { .. }) => {
                self.open.retain(|o| *o != order);
                self.cancelled.push(order);
            }
            _ => {}
        }
        match event.decode::<StockEvent>() {
            Ok(StockEvent::Reserved { order, .. }) => self.holding.push(order.to_string()),
            Ok(StockEvent::Released { order, .. }) => self.holding.retain(|o| *o != order.id()),
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
