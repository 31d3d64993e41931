//! The state must say how every declared slot's events change it: `Balances` has no
//! `Fold<Audit>`. The bound on `Command::State` reports it first, at `state = Balances`: its
//! message names the whole stream set, with the missing slot on a help line (all a
//! hand-written `impl Command` gets). The derive also checks each slot at its `#[slot(..)]`
//! field, so the second error names the slot.
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
