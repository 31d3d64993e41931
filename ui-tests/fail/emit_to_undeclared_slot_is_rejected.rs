//! A command may only emit to slots in its `Streams`: `Audit` is not declared here.
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

    fn handle(
        &self,
        _: &Balances,
        mut decision: Decision<Self::Streams>,
    ) -> Result<Next<Self::Streams, NoDiscovery>, Rejected> {
        decision.emit::<Audit, _>(AuditEvent::Noted);
        Ok(decision.done())
    }
}

fn main() {}
