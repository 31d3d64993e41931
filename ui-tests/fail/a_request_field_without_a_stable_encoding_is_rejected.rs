//! A field in a request's fingerprint (`#[fingerprint]`) needs an encoding that is the same for
//! the same value every time: a `HashMap`, whose order differs from one map to the next, would
//! give a request sent again another fingerprint, and have it refused. Rejected at the field's
//! type.
#[path = "../support.rs"]
mod support;
use std::collections::HashMap;
use support::*;

#[derive(Command)]
#[command(state = Balances, error = Rejected)]
struct Order {
    #[slot(FromAccount)]
    from: StreamId,
    #[fingerprint]
    lines: HashMap<String, u32>,
    #[key]
    request: IdempotencyKey,
}

fn main() {}
