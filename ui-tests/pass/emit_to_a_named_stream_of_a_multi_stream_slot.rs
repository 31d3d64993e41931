//! A slot of many streams takes events through `emit_to`, which names the stream with a
//! target; the targets come from the decision, one per stream the slot is bound to.
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
        for account in decision.targets(Accounts) {
            decision
                .emit_to(Accounts, &account, AccountEvent::Credited { cents: 1 });
        }
        Ok(decision)
    }
}

fn main() {
    let _ = CreditAll { accounts: vec![StreamId::try_new("a").unwrap()] };
}
