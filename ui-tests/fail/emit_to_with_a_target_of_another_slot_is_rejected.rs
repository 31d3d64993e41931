//! A target names a stream of one slot: giving it to `emit_to` for another slot, even one of
//! the same event type, does not compile.
#[path = "../support.rs"]
mod support;
use support::*;

slot!(pub Payers: [AccountEvent]);
slot!(pub Payees: [AccountEvent]);

#[derive(Default)]
struct Both;
impl Fold<Payers> for Both {
    fn fold(&mut self, _: &StreamId, _: &AccountEvent) {}
}
impl Fold<Payees> for Both {
    fn fold(&mut self, _: &StreamId, _: &AccountEvent) {}
}

struct Split {
    payers: Vec<StreamId>,
    payees: Vec<StreamId>,
}

impl Command for Split {
    type Streams = Streams![Payers, Payees];
    type State = Both;
    type Error = Rejected;
    type Continuation = NoDiscovery;

    fn streams(&self) -> Bindings<Self::Streams> {
        hlist![
            Payers::bind(self.payers.clone()),
            Payees::bind(self.payees.clone())
        ]
    }
}

impl Handle for Split {
    fn handle(
        &self,
        _: &Both,
        mut decision: Decision<Self::Streams>,
    ) -> Handled<Self> {
        for payer in decision.targets(Payers) {
            decision
                .emit_to(Payees, &payer, AccountEvent::Credited { cents: 1 });
        }
        Ok(decision)
    }
}

fn main() {}
