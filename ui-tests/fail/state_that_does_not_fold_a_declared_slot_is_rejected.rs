//! The state must say how every declared slot's events change it: `Balances` has no
//! `Fold<Audit>`.
#[path = "../support.rs"]
mod support;
use support::*;

struct TransferWithAudit {
    from: StreamId,
    to: StreamId,
    audit: StreamId,
}

impl Command for TransferWithAudit {
    type Streams = Streams![FromAccount, ToAccount, Audit];
    type State = Balances;
    type Error = Rejected;
    type Continuation = NoDiscovery;

    fn streams(&self) -> Bindings<Self::Streams> {
        hlist![
            FromAccount::bind(self.from.clone()),
            ToAccount::bind(self.to.clone()),
            Audit::bind(self.audit.clone()),
        ]
    }
}

impl Handle for TransferWithAudit {
    fn handle(
        &self,
        _: &Balances,
        decision: Decision<Self::Streams>,
    ) -> Handled<Self> {
        Ok(decision)
    }
}

fn main() {}
