//! `handle` discovers the order's products; its continuation, whose stream set is the command's
//! extended by `Products`, may emit to them.
#[path = "../support.rs"]
mod support;
use support::*;

impl Fold<Products> for Cancellation {
    fn fold(&mut self, _: &StreamId, _: &ProductEvent) {}
}

struct CancelOrder {
    order: StreamId,
}

struct ReleaseStock;

impl Continuation for ReleaseStock {
    type Prior = Streams![Order];
    type Slot = Products;
    type State = Cancellation;
    type Error = Rejected;
    type Next = NoDiscovery;

    fn resume(
        self,
        state: &Cancellation,
        mut decision: Resuming<Self>,
    ) -> Resumed<Self> {
        let _ = state;
        for product in decision.targets(Products) {
            decision
                .emit_to(Products, &product, ProductEvent::Released { units: 1 });
        }
        decision.emit(Order, OrderEvent::Cancelled);
        Ok(decision)
    }
}

impl Command for CancelOrder {
    type Streams = Streams![Order];
    type State = Cancellation;
    type Error = Rejected;
    type Continuation = ReleaseStock;

    fn streams(&self) -> Bindings<Self::Streams> {
        hlist![Order::bind(self.order.clone())]
    }
}

impl Handle for CancelOrder {
    fn handle(
        &self,
        state: &Cancellation,
        decision: Decision<Self::Streams>,
    ) -> Handled<Self> {
        Ok(decision.discover(state.products.clone(), ReleaseStock))
    }
}

fn main() {
    let _ = CancelOrder { order: StreamId::try_new("order-1").unwrap() };
}
