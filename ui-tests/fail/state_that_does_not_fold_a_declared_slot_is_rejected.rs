//! The state must say how every declared slot's events change it: `Balances` has no
//! `Fold<Audit>`. The derive checks each slot at its `#[slot(..)]` field, so the first error
//! names the slot. (A hand-written `impl Command` is checked by the bound on `Command::State`
//! only: its message names the whole stream set, with the missing slot on a help line; that
//! second error follows here too.)
#[path = "../support.rs"]
mod support;
use support::*;

#[derive(Command)]
#[command(state = Balances, error = Rejected)]
struct TransferWithAudit {
    #[slot(FromAccount)]
    from: StreamId,
    #[slot(ToAccount)]
    to: StreamId,
    #[slot(Audit)]
    audit: StreamId,
}

impl Handle for TransferWithAudit {
    fn handle(&self, _: &Balances, decision: Decision<Self::Streams>) -> Handled<Self> {
        Ok(decision)
    }
}

fn main() {}
