//! A slot fixes its event type: `FromAccount` carries `AccountEvent`, not `AuditEvent`.
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
        decision.emit::<FromAccount, _>(AuditEvent::Noted);
        Ok(decision.done())
    }
}

fn main() {}
