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
}

impl Handle for Transfer {
    fn handle(
        &self,
        _: &Balances,
        mut decision: Decision<Self::Streams>,
    ) -> Handled<Self> {
        decision.emit(FromAccount, AuditEvent::Noted);
        Ok(decision)
    }
}

fn main() {}
