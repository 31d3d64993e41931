//! The e-commerce domain: a catalog of products with inventory, orders that reserve stock on
//! every ordered product atomically, and cancellations that *discover* the order's products
//! (and then its customer) while deciding.
//!
//! Shared by the `ecommerce` example, the conformance, harness and differential tests (included
//! with `#[path]`), so everything here is exercised by the test suite.
//!
//! Streams: `product-{id}` (catalog entry and inventory), `order-{id}`, `customer-{id}`
//! (loyalty points). Cancelling an order takes three rounds, and its types say so:
//!
//! | round | reads                        | known from            | stream set            |
//! |-------|------------------------------|-----------------------|-----------------------|
//! | 0     | the order                    | the command           | `Streams![Order]`     |
//! | 1     | every product of the order   | the order's `Placed`  | [`WithProducts`]      |
//! | 2     | the customer's loyalty stream| the order's `Placed`  | [`WithCustomer`]      |
//!
//! A continuation discovers one slot, and products and customers carry different event types,
//! so they are two slots and two rounds.
#![allow(dead_code)]

use std::collections::HashMap;
use std::fmt;

use eventcore::prelude::*;
use serde::{Deserialize, Serialize};

/// A catalog product; its stream `product-{id}` holds its catalog entry and its inventory.
/// Kept exactly or refused, never trimmed (as every id): `" a"` is refused, not made into `"a"`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, StreamKey)]
#[stream_key(category = "product")]
pub struct ProductId(StreamId);

/// A caller-chosen order id; its stream is `order-{id}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, StreamKey)]
#[stream_key(category = "order")]
pub struct OrderId(StreamId);

/// A customer; their stream `customer-{id}` is their loyalty account.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, StreamKey)]
#[stream_key(category = "customer")]
pub struct CustomerId(StreamId);

/// A number of units. Never negative; arithmetic is checked.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Quantity(u32);

impl Quantity {
    pub const ZERO: Quantity = Quantity(0);

    pub const fn new(units: u32) -> Self {
        Quantity(units)
    }

    /// Checks an untrusted number of units (from a form, a request body...).
    pub fn try_from_units(units: i64) -> Result<Self, CommerceError> {
        u32::try_from(units).map(Quantity).map_err(|_| CommerceError::InvalidQuantity(units))
    }

    pub fn units(self) -> u32 {
        self.0
    }

    pub fn checked_add(self, other: Quantity) -> Option<Quantity> {
        self.0.checked_add(other.0).map(Quantity)
    }

    pub fn checked_sub(self, other: Quantity) -> Option<Quantity> {
        self.0.checked_sub(other.0).map(Quantity)
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// A price in integer cents. Arithmetic is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Price(u64);

impl Price {
    pub const ZERO: Price = Price(0);

    pub const fn from_cents(cents: u64) -> Self {
        Price(cents)
    }

    pub fn cents(self) -> u64 {
        self.0
    }

    /// The price of `quantity` units, `None` on overflow.
    pub fn times(self, quantity: Quantity) -> Option<Price> {
        self.0.checked_mul(u64::from(quantity.0)).map(Price)
    }

    pub fn checked_add(self, other: Price) -> Option<Price> {
        self.0.checked_add(other.0).map(Price)
    }

    /// Loyalty points an order of this total earns: one per whole dollar.
    pub fn loyalty_points(self) -> u64 {
        self.0 / 100
    }
}

impl fmt::Display for Price {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "${}.{:02}", self.0 / 100, self.0 % 100)
    }
}

/// One product of an order and how many units of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub product: ProductId,
    pub quantity: Quantity,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
pub enum ProductEvent {
    Added { name: String, price: Price },
    Restocked { quantity: Quantity },
    Reserved { order: OrderId, quantity: Quantity },
    Released { order: OrderId, quantity: Quantity },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
pub enum OrderEvent {
    Placed { customer: CustomerId, lines: Vec<OrderLine>, total: Price, points: u64 },
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
pub enum CustomerEvent {
    PointsEarned { order: OrderId, points: u64 },
    PointsRevoked { order: OrderId, points: u64 },
}

slot!(
    /// The one product a catalog command works on.
    pub Product: ProductEvent, key = ProductId
);
slot!(
    /// Every product of an order: one slot, any number of streams.
    pub Products: [ProductEvent], key = ProductId
);
slot!(
    /// The order.
    pub Order: OrderEvent, key = OrderId
);
slot!(
    /// The customer's loyalty account.
    pub Customer: CustomerEvent, key = CustomerId
);

/// The stream set of a cancellation after round 1: the order, extended by its products.
pub type WithProducts = Extended<Streams![Order], Products>;
/// The stream set of a cancellation after round 2: [`WithProducts`] extended by the customer.
pub type WithCustomer = Extended<WithProducts, Customer>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CommerceError {
    #[error("{0} is not a quantity: units are counted from 0 to {max}", max = u32::MAX)]
    InvalidQuantity(i64),
    #[error("a quantity must be at least 1 here")]
    ZeroQuantity,
    #[error("a product needs a name")]
    NoName,
    #[error("an order needs at least one line")]
    EmptyOrder,
    #[error("product {0} is already in the catalog")]
    ProductExists(ProductId),
    #[error("product {0} is not in the catalog")]
    UnknownProduct(ProductId),
    #[error("not enough {product} in stock: {available} left, {requested} ordered")]
    OutOfStock { product: ProductId, available: Quantity, requested: Quantity },
    #[error("the ordered quantity of {0} would overflow")]
    QuantityOverflow(ProductId),
    #[error("the stock of {0} would overflow")]
    StockOverflow(ProductId),
    #[error("the order's total would overflow")]
    TotalOverflow,
    #[error("the customer's points would overflow")]
    PointsOverflow,
    #[error("order {0} already exists")]
    OrderExists(OrderId),
    #[error("order {0} does not exist")]
    UnknownOrder(OrderId),
    #[error("order {0} is already cancelled")]
    AlreadyCancelled(OrderId),
}

/// What a command knows about one product.
#[derive(Debug, Default, Clone, PartialEq, Eq, Fold)]
#[fold(Product)]
pub struct ProductState {
    pub name: Option<String>,
    pub price: Price,
    /// Units on hand, not reserved.
    pub stock: Quantity,
    /// Units reserved by orders: a cancellation gives them back to `stock`.
    pub reserved: Quantity,
}

impl ProductState {
    pub fn exists(&self) -> bool {
        self.name.is_some()
    }
}

impl Apply<ProductEvent> for ProductState {
    fn apply(&mut self, event: &ProductEvent) {
        // Stored events were checked when decided; folding saturates rather than panicking.
        match event {
            ProductEvent::Added { name, price } => {
                self.name = Some(name.clone());
                self.price = *price;
            }
            ProductEvent::Restocked { quantity } => {
                self.stock = Quantity(self.stock.0.saturating_add(quantity.0));
            }
            ProductEvent::Released { quantity, .. } => {
                self.stock = Quantity(self.stock.0.saturating_add(quantity.0));
                self.reserved = Quantity(self.reserved.0.saturating_sub(quantity.0));
            }
            ProductEvent::Reserved { quantity, .. } => {
                self.stock = Quantity(self.stock.0.saturating_sub(quantity.0));
                self.reserved = Quantity(self.reserved.0.saturating_add(quantity.0));
            }
        }
    }
}

/// Adds a product to the catalog, with no stock.
#[derive(Command)]
#[command(state = ProductState, error = CommerceError)]
pub struct AddProduct {
    #[slot(Product)]
    pub product: ProductId,
    pub name: String,
    pub price: Price,
}

impl Handle for AddProduct {
    fn handle(&self, state: &ProductState, mut decision: Decision<Self::Streams>) -> Handled<Self> {
        require!(!state.exists(), CommerceError::ProductExists(self.product.clone()));
        // A blank name is refused; any other is stored exactly as given, never trimmed.
        require!(!self.name.trim().is_empty(), CommerceError::NoName);
        decision.emit(Product, ProductEvent::Added { name: self.name.clone(), price: self.price });
        Ok(decision)
    }
}

/// Adds units to a product's stock. The units reserved by orders count too: every one of them
/// can come back with a cancellation, and a stock that could not take them back would make
/// those orders impossible to cancel.
#[derive(Command)]
#[command(state = ProductState, error = CommerceError)]
pub struct Restock {
    #[slot(Product)]
    pub product: ProductId,
    pub quantity: Quantity,
}

impl Handle for Restock {
    fn handle(&self, state: &ProductState, mut decision: Decision<Self::Streams>) -> Handled<Self> {
        require!(state.exists(), CommerceError::UnknownProduct(self.product.clone()));
        require!(self.quantity > Quantity::ZERO, CommerceError::ZeroQuantity);
        state
            .stock
            .checked_add(state.reserved)
            .and_then(|held| held.checked_add(self.quantity))
            .ok_or_else(|| CommerceError::StockOverflow(self.product.clone()))?;
        decision.emit(Product, ProductEvent::Restocked { quantity: self.quantity });
        Ok(decision)
    }
}

/// Where an order stands.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub enum OrderStatus {
    #[default]
    Absent,
    Placed {
        customer: CustomerId,
        lines: Vec<OrderLine>,
        points: u64,
    },
    Cancelled,
}

impl Apply<OrderEvent> for OrderStatus {
    fn apply(&mut self, event: &OrderEvent) {
        *self = match event {
            OrderEvent::Placed { customer, lines, points, .. } => OrderStatus::Placed {
                customer: customer.clone(),
                lines: lines.clone(),
                points: *points,
            },
            OrderEvent::Cancelled => OrderStatus::Cancelled,
        };
    }
}

/// A customer's loyalty account: the points it holds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Loyalty {
    pub points: u64,
}

impl Apply<CustomerEvent> for Loyalty {
    fn apply(&mut self, event: &CustomerEvent) {
        match event {
            CustomerEvent::PointsEarned { points, .. } => {
                self.points = self.points.saturating_add(*points);
            }
            CustomerEvent::PointsRevoked { points, .. } => {
                self.points = self.points.saturating_sub(*points);
            }
        }
    }
}

/// What the order commands know: the order, the products they read (by stream), and the
/// customer's loyalty account.
#[derive(Debug, Default, Fold)]
pub struct OrderState {
    #[fold(Order)]
    pub order: OrderStatus,
    #[fold(Products, by_stream)]
    pub products: HashMap<StreamId, ProductState>,
    #[fold(Customer)]
    pub loyalty: Loyalty,
}

impl OrderState {
    fn product(&self, id: &ProductId) -> Option<&ProductState> {
        self.products.get(id.stream_id()).filter(|p| p.exists())
    }
}

/// Places an order: reserves stock on every ordered product, records the order and credits the
/// customer's loyalty points, all in one atomic append that checks every stream it read.
#[derive(Command)]
#[command(state = OrderState, error = CommerceError)]
pub struct PlaceOrder {
    #[slot(Order)]
    order: OrderId,
    /// The products of `lines`, in order: the streams the order reserves stock on.
    #[slot(Products)]
    products: Vec<ProductId>,
    #[slot(Customer)]
    customer: CustomerId,
    lines: Vec<OrderLine>,
}

impl PlaceOrder {
    /// An order of at least one line; lines naming the same product are merged.
    pub fn new(
        order: OrderId,
        customer: CustomerId,
        lines: impl IntoIterator<Item = (ProductId, Quantity)>,
    ) -> Result<Self, CommerceError> {
        let mut merged: Vec<OrderLine> = Vec::new();
        for (product, quantity) in lines {
            require!(quantity > Quantity::ZERO, CommerceError::ZeroQuantity);
            match merged.iter_mut().find(|line| line.product == product) {
                Some(line) => {
                    line.quantity = line
                        .quantity
                        .checked_add(quantity)
                        .ok_or_else(|| CommerceError::QuantityOverflow(line.product.clone()))?;
                }
                None => merged.push(OrderLine { product, quantity }),
            }
        }
        require!(!merged.is_empty(), CommerceError::EmptyOrder);
        let products = merged.iter().map(|line| line.product.clone()).collect();
        Ok(Self { order, products, customer, lines: merged })
    }

    pub fn lines(&self) -> &[OrderLine] {
        &self.lines
    }
}

impl Handle for PlaceOrder {
    fn handle(&self, state: &OrderState, mut decision: Decision<Self::Streams>) -> Handled<Self> {
        require!(
            state.order == OrderStatus::Absent,
            CommerceError::OrderExists(self.order.clone())
        );
        let mut total = Price::ZERO;
        // `products` was bound from `lines` in order, and lines name distinct products, so the
        // slot's targets pair with the lines one to one.
        for (line, target) in self.lines.iter().zip(decision.targets(Products)) {
            let product = state
                .product(&line.product)
                .ok_or_else(|| CommerceError::UnknownProduct(line.product.clone()))?;
            product.stock.checked_sub(line.quantity).ok_or_else(|| CommerceError::OutOfStock {
                product: line.product.clone(),
                available: product.stock,
                requested: line.quantity,
            })?;
            total = product
                .price
                .times(line.quantity)
                .and_then(|cost| total.checked_add(cost))
                .ok_or(CommerceError::TotalOverflow)?;
            decision.emit_to(
                Products,
                &target,
                ProductEvent::Reserved { order: self.order.clone(), quantity: line.quantity },
            );
        }
        let points = total.loyalty_points();
        state.loyalty.points.checked_add(points).ok_or(CommerceError::PointsOverflow)?;
        decision
            .emit(
                Order,
                OrderEvent::Placed {
                    customer: self.customer.clone(),
                    lines: self.lines.clone(),
                    total,
                    points,
                },
            )
            .emit(Customer, CustomerEvent::PointsEarned { order: self.order.clone(), points });
        Ok(decision)
    }
}

/// Cancels an order. Only the order's own events name its products and its customer, so the
/// command reads the order, then discovers the products ([`ReleaseStock`]), then the customer
/// ([`RevokePoints`]), and appends the cancellation, the released stock and the revoked points
/// in one write that checks all three rounds' reads.
#[derive(Command)]
#[command(state = OrderState, error = CommerceError, continuation = ReleaseStock)]
pub struct CancelOrder {
    #[slot(Order)]
    pub order: OrderId,
}

impl Handle for CancelOrder {
    fn handle(&self, state: &OrderState, decision: Decision<Self::Streams>) -> Handled<Self> {
        let (customer, lines, points) = match &state.order {
            OrderStatus::Absent => return Err(CommerceError::UnknownOrder(self.order.clone())),
            OrderStatus::Cancelled => {
                return Err(CommerceError::AlreadyCancelled(self.order.clone()));
            }
            OrderStatus::Placed { customer, lines, points } => (customer, lines, points),
        };
        let products = lines.iter().map(|line| line.product.clone()).collect();
        let next = ReleaseStock {
            order: self.order.clone(),
            customer: customer.clone(),
            lines: lines.clone(),
            points: *points,
        };
        Ok(decision.discover(products, next))
    }
}

/// Round 1 of a cancellation: the order's products are read; put their units back.
pub struct ReleaseStock {
    order: OrderId,
    customer: CustomerId,
    lines: Vec<OrderLine>,
    points: u64,
}

#[continuation(command = CancelOrder, slot = Products, next = RevokePoints)]
impl Continuation for ReleaseStock {
    fn resume(self, state: &OrderState, mut decision: Resuming<Self>) -> Resumed<Self> {
        // The products were discovered from `lines` in order, one per line.
        for (line, product) in self.lines.iter().zip(decision.targets(Products)) {
            let stock = state.product(&line.product).map(|p| p.stock).unwrap_or_default();
            stock
                .checked_add(line.quantity)
                .ok_or_else(|| CommerceError::StockOverflow(line.product.clone()))?;
            decision.emit_to(
                Products,
                &product,
                ProductEvent::Released { order: self.order.clone(), quantity: line.quantity },
            );
        }
        let next = RevokePoints { order: self.order, points: self.points };
        Ok(decision.discover(self.customer, next))
    }
}

/// Round 2 of a cancellation: the customer's loyalty account is read; take the order's points
/// back and close the order.
pub struct RevokePoints {
    order: OrderId,
    points: u64,
}

#[continuation(after = ReleaseStock, slot = Customer)]
impl Continuation for RevokePoints {
    fn resume(self, state: &OrderState, mut decision: Resuming<Self>) -> Resumed<Self> {
        // A loyalty account never goes below zero: revoke at most what it holds, and record
        // nothing when that is nothing.
        let points = self.points.min(state.loyalty.points);
        if points > 0 {
            decision.emit(Customer, CustomerEvent::PointsRevoked { order: self.order, points });
        }
        decision.emit(Order, OrderEvent::Cancelled);
        Ok(decision)
    }
}

type ReadError = Box<dyn std::error::Error + Send + Sync>;

/// Folds the events of one stream into a fresh `T`.
async fn fold_stream<B: Backend, E: Event, T: Apply<E> + Default>(
    store: &B,
    stream: &StreamId,
) -> Result<T, ReadError> {
    let mut state = T::default();
    for read in store.read(std::slice::from_ref(stream)).await? {
        for event in read.events {
            state.apply(&event.decode::<E>()?);
        }
    }
    Ok(state)
}

/// Reads a product's catalog entry and stock.
pub async fn product<B: Backend>(store: &B, id: &ProductId) -> Result<ProductState, ReadError> {
    fold_stream::<B, ProductEvent, _>(store, id.stream_id()).await
}

/// Reads where an order stands.
pub async fn order_status<B: Backend>(store: &B, id: &OrderId) -> Result<OrderStatus, ReadError> {
    fold_stream::<B, OrderEvent, _>(store, id.stream_id()).await
}

/// Reads a customer's loyalty points.
pub async fn loyalty_points<B: Backend>(store: &B, id: &CustomerId) -> Result<u64, ReadError> {
    Ok(fold_stream::<B, CustomerEvent, Loyalty>(store, id.stream_id()).await?.points)
}
