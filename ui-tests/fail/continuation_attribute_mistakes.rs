//! `#[continuation(..)]` checks its arguments and the impl it goes on: each mistake is
//! reported at the attribute or the item at fault, with the fix.
#[path = "../support.rs"]
mod support;
use support::*;

struct ReleaseStock;

// The step it continues is required, and keys are checked.
#[continuation(slot = Products, nxt = NoDiscovery)]
impl Continuation for ReleaseStock {
    fn resume(self, _: &Cancellation, decision: Resuming<Self>) -> Resumed<Self> {
        Ok(decision)
    }
}

struct RestockAgain;

// The attribute writes the five types: one written by hand as well is refused.
#[continuation(command = ReleaseStock, slot = Products)]
impl Continuation for RestockAgain {
    type State = Cancellation;

    fn resume(self, _: &Cancellation, decision: Resuming<Self>) -> Resumed<Self> {
        Ok(decision)
    }
}

fn main() {}
