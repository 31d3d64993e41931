//! A field binds one slot: two `#[slot(..)]` attributes on one field are refused as
//! `#[slot(A, B)]` is (they once bound both slots to the field's stream, a transfer from an
//! account to itself).
#[path = "../support.rs"]
mod support;
use support::*;

#[derive(Command)]
#[command(state = Balances, error = Rejected)]
struct Transfer {
    #[slot(FromAccount)]
    #[slot(ToAccount)]
    account: StreamId,
}

fn main() {}
