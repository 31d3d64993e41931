//! Each discovery round extends the stream set by a slot of its own: discovering `Order` again,
//! when the command already declares it, fails the build once the command is executed.
#[path = "../support.rs"]
mod support;
use support::*;

struct CancelOrder {
    order: StreamId,
}

struct ReadOrderAgain;

impl Continuation for ReadOrderAgain {
    type Prior = Streams![Order];
    type Slot = Order;
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
    type Continuation = ReadOrderAgain;

    fn streams(&self) -> Bindings<Self::Streams> {
        hlist![Order::bind(self.order.clone())]
    }
}

impl Handle for CancelOrder {
    fn handle(
        &self,
        _: &Cancellation,
        decision: Decision<Self::Streams>,
    ) -> Handled<Self> {
        Ok(decision.discover(self.order.clone(), ReadOrderAgain))
    }
}

#[tokio::main]
async fn main() {
    let order = StreamId::try_new("order-1").unwrap();
    let _ = Executor::new(Memory::new()).execute(&CancelOrder { order }).await;
}
