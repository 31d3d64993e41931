//! `streams()` binds slots in the order of `Streams`; swapping two slots is a type error, so
//! ids cannot be mixed up silently.
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
        hlist![ToAccount::bind(self.to.clone()), FromAccount::bind(self.from.clone())]
    }
}

impl Handle for Transfer {
    fn handle(
        &self,
        _: &Balances,
        decision: Decision<Self::Streams>,
    ) -> Handled<Self> {
        Ok(decision)
    }
}

fn main() {}
