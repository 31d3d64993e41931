//! A slot names one role; declaring it twice in one stream set fails the build as soon as the
//! command is executed (the check runs when the set's type is known).
#[path = "../support.rs"]
mod support;
use support::*;

#[derive(Default)]
struct Twice;
impl Fold<FromAccount> for Twice {
    fn fold(&mut self, _: &StreamId, _: &AccountEvent) {}
}

struct Doubled {
    a: StreamId,
    b: StreamId,
}

impl Command for Doubled {
    type Streams = Streams![FromAccount, FromAccount];
    type State = Twice;
    type Error = Rejected;
    type Continuation = NoDiscovery;

    fn streams(&self) -> Bindings<Self::Streams> {
        hlist![FromAccount::bind(self.a.clone()), FromAccount::bind(self.b.clone())]
    }
}

impl Handle for Doubled {
    fn handle(
        &self,
        _: &Twice,
        decision: Decision<Self::Streams>,
    ) -> Handled<Self> {
        Ok(decision)
    }
}

#[tokio::main]
async fn main() {
    let id = |s| StreamId::try_new(s).unwrap();
    let _ = Executor::new(Memory::new()).execute(&Doubled { a: id("a"), b: id("b") }).await;
}
