//! `#[slot(..)]` names a slot declared by `slot!`, not the slot's event type: naming
//! `AccountEvent` where `FromAccount` was meant says that `AccountEvent` is not a slot and how
//! to declare one (rather than only that a trait bound is not satisfied).
#[path = "../support.rs"]
mod support;
use support::*;

#[derive(Command)]
#[command(state = Balances, error = Rejected)]
struct Pay {
    #[slot(AccountEvent)]
    from: StreamId,
}

fn main() {}
