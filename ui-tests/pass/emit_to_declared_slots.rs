//! Emitting the slot's own event type to slots the command declares compiles.
#[path = "../support.rs"]
mod support;
use support::*;

struct Transfer {
    from: StreamId,
    to: StreamId,
}

impl Command for Transfer {
    type Streams = Streams![FromAccount, ToAccount];
    type State = Balances;
    type Error = Rejected;
    type Continuation = NoDiscovery;

    fn streams(&self) -> Bindings<Self::Streams> {
        hlist![FromAccount::bind(self.from.clone()), ToAccount::bind(self.to.clone())]
    }
}

impl Handle for Transfer {
    fn handle(
        &self,
        _: &Balances,
        mut decision: Decision<Self::Streams>,
    ) -> Handled<Self> {
        decision.emit(FromAccount, AccountEvent::Debited { cents: 5 });
        decision.emit(ToAccount, AccountEvent::Credited { cents: 5 });
        Ok(decision)
    }
}

fn main() {
    let _ = Transfer { from: StreamId::try_new("a").unwrap(), to: StreamId::try_new("b").unwrap() };
}
