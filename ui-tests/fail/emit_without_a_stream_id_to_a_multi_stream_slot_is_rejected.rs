//! A slot of many streams needs the stream named: `emit` does not compile, `emit_to` with a
//! target from `decision.targets(Slot)` does.
#[path = "../support.rs"]
mod support;
use support::*;

slot!(pub Accounts: [AccountEvent]);

#[derive(Default)]
struct Many;
impl Fold<Accounts> for Many {
    fn fold(&mut self, _: &StreamId, _: &AccountEvent) {}
}

struct CreditAll {
    accounts: Vec<StreamId>,
}

impl Command for CreditAll {
    type Streams = Streams![Accounts];
    type State = Many;
    type Error = Rejected;
    type Continuation = NoDiscovery;

    fn streams(&self) -> Bindings<Self::Streams> {
        hlist![Accounts::bind(self.accounts.clone())]
    }
}

impl Handle for CreditAll {
    fn handle(
        &self,
        _: &Many,
        mut decision: Decision<Self::Streams>,
    ) -> Handled<Self> {
        decision.emit(Accounts, AccountEvent::Credited { cents: 1 });
        Ok(decision)
    }
}

fn main() {}
