//! Before discovery, a command's stream set does not hold the discovered slot: `handle` cannot
//! write to a product stream, only the continuation can.
#[path = "../support.rs"]
mod support;
use support::*;

struct CancelOrder {
    order: StreamId,
}

impl Command for CancelOrder {
    type Streams = Streams![Order];
    type State = Cancellation;
    type Error = Rejected;
    type Continuation = NoDiscovery;

    fn streams(&self) -> Bindings<Self::Streams> {
        hlist![Order::bind(self.order.clone())]
    }
}

impl Handle for CancelOrder {
    fn handle(
        &self,
        state: &Cancellation,
        mut decision: Decision<Self::Streams>,
    ) -> Handled<Self> {
        let _ = state;
        for product in decision.targets(Products) {
            decision
                .emit_to(Products, &product, ProductEvent::Released { units: 1 });
        }
        Ok(decision)
    }
}

fn main() {}
