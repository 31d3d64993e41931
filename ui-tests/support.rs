//! Shared types for the compile-fail and compile-pass cases: two account slots and an audit slot,
//! a state folding the account slots and a field type applying account events.
#![allow(dead_code)]

pub use eventcore::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
pub enum AccountEvent {
    Debited { cents: u64 },
    Credited { cents: u64 },
}
impl Event for AccountEvent {
    const EVENT_TYPE: &'static str = "AccountEvent";
}

#[derive(Serialize, Deserialize)]
pub enum AuditEvent {
    Noted,
}
impl Event for AuditEvent {
    const EVENT_TYPE: &'static str = "AuditEvent";
}

slot!(pub FromAccount: AccountEvent);
slot!(pub ToAccount: AccountEvent);
slot!(pub Audit: AuditEvent);

#[derive(Debug, thiserror::Error)]
#[error("rejected")]
pub struct Rejected;

#[derive(Default)]
pub struct Balances;
impl Fold<FromAccount> for Balances {
    fn fold(&mut self, _: &StreamId, _: &AccountEvent) {}
}
impl Fold<ToAccount> for Balances {
    fn fold(&mut self, _: &StreamId, _: &AccountEvent) {}
}

/// A field type that applies account events (and nothing else), for `#[derive(Fold)]` cases.
#[derive(Default)]
pub struct Balance(pub i64);
impl Apply<AccountEvent> for Balance {
    fn apply(&mut self, _: &AccountEvent) {}
}

#[derive(Serialize, Deserialize)]
pub enum OrderEvent {
    Placed { products: Vec<String> },
    Cancelled,
}
impl Event for OrderEvent {
    const EVENT_TYPE: &'static str = "OrderEvent";
}

#[derive(Serialize, Deserialize)]
pub enum ProductEvent {
    Released { units: u32 },
}
impl Event for ProductEvent {
    const EVENT_TYPE: &'static str = "ProductEvent";
}

slot!(pub Order: OrderEvent);
slot!(pub Products: [ProductEvent]);

/// What a cancellation knows: the order's products, then (after discovery) nothing more.
#[derive(Default)]
pub struct Cancellation {
    pub products: Vec<StreamId>,
}
impl Fold<Order> for Cancellation {
    fn fold(&mut self, _: &StreamId, event: &OrderEvent) {
        if let OrderEvent::Placed { products } = event {
            self.products = products.iter().filter_map(|p| StreamId::try_new(p).ok()).collect();
        }
    }
}
