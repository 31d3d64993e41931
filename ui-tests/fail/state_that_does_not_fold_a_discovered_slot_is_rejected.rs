//! A discovered slot's events are folded into the command's state too, so the state needs a
//! `Fold` impl for it: `Cancellation` does not fold `Products` here.
#[path = "../support.rs"]
mod support;
use support::*;

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
        _: &Cancellation,
        decision: Resuming<Self>,
    ) -> Resumed<Self> {
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

fn main() {}
