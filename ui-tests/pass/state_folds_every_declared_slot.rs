//! With a `Fold` impl for each slot, a command over three slots compiles.
#[path = "../support.rs"]
mod support;
use support::*;

#[derive(Default)]
struct Audited;
impl Fold<FromAccount> for Audited {
    fn fold(&mut self, _: &StreamId, _: &AccountEvent) {}
}
impl Fold<ToAccount> for Audited {
    fn fold(&mut self, _: &StreamId, _: &AccountEvent) {}
}
impl Fold<Audit> for Audited {
    fn fold(&mut self, _: &StreamId, _: &AuditEvent) {}
}

struct TransferWithAudit {
    from: StreamId,
    to: StreamId,
    audit: StreamId,
}

impl Command for TransferWithAudit {
    type Streams = Streams![FromAccount, ToAccount, Audit];
    type State = Audited;
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
        _: &Audited,
        mut decision: Decision<Self::Streams>,
    ) -> Handled<Self> {
        decision.emit(Audit, AuditEvent::Noted);
        Ok(decision)
    }
}

fn main() {
    let id = || StreamId::try_new("x").unwrap();
    let _ = TransferWithAudit { from: id(), to: id(), audit: id() };
}
