//! A slot of many streams takes events through `emit_to`, which names the stream; naming a
//! stream the slot is not bound to is a typed run-time error, not a panic.
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
        for account in &self.accounts {
            decision
                .emit_to(Accounts, account, AccountEvent::Credited { cents: 1 });
        }
        Ok(decision)
    }
}

fn main() {
    let _ = CreditAll { accounts: vec![StreamId::try_new("a").unwrap()] };
}
