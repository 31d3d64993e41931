//! A continuation goes on with its command's decision: its `State` and `Error` must be the
//! command's. This one declares an error type of its own.
#[path = "../support.rs"]
mod support;
use support::*;

impl Fold<Products> for Cancellation {
    fn fold(&mut self, _: &StreamId, _: &ProductEvent) {}
}

struct CancelOrder {
    order: StreamId,
}

#[derive(Debug, thiserror::Error)]
#[error("another error")]
struct OtherError;

struct ReleaseStock;

impl Continuation for ReleaseStock {
    type Prior = Streams![Order];
    type Slot = Products;
    type State = Cancellation;
    type Error = OtherError;
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
