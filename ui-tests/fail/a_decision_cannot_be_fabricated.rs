//! Only the executor makes a `Decision`, over the streams it read: `handle` cannot return one
//! over streams it never read, so it cannot build one. (Tests use `eventcore::testing::decision`,
//! behind the `testing` feature.)
#[path = "../support.rs"]
mod support;
use support::*;

#[derive(Default)]
struct Seen;
impl Fold<FromAccount> for Seen {
    fn fold(&mut self, _: &StreamId, _: &AccountEvent) {}
}

struct Sneaky {
    account: StreamId,
}

impl Command for Sneaky {
    type Streams = Streams![FromAccount];
    type State = Seen;
    type Error = Rejected;
    type Continuation = NoDiscovery;

    fn streams(&self) -> Bindings<Self::Streams> {
        hlist![FromAccount::bind(self.account.clone())]
    }
}

impl Handle for Sneaky {
    fn handle(&self, _: &Seen, _decision: Decision<Self::Streams>) -> Handled<Self> {
        let other = StreamId::try_new("account-of-someone-else").map_err(|_| Rejected)?;
        Ok(Decision::new(hlist![FromAccount::bind(other)]))
    }
}

fn main() {}
