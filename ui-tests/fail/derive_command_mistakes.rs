//! `#[derive(Command)]` checks its attributes: each mistake is reported at the attribute or
//! field at fault, naming the slot or field and the fix.
#[path = "../support.rs"]
mod support;
use support::*;

// A slot is one role: two fields cannot bind it.
#[derive(Command)]
#[command(state = Balances, error = Rejected)]
struct BoundTwice {
    #[slot(FromAccount)]
    from: StreamId,
    #[slot(FromAccount)]
    to: StreamId,
}

// The state (what the slots fold into) is required, and keys are checked.
#[derive(Command)]
#[command(error = Rejected, continuation_of = Balances)]
struct NoState {
    #[slot(FromAccount)]
    from: StreamId,
}

// One idempotency key, one slot per field.
#[derive(Command)]
#[command(state = Balances, error = Rejected)]
struct TwoKeys {
    #[slot(FromAccount, ToAccount)]
    account: StreamId,
    #[key]
    request: IdempotencyKey,
    #[key]
    retry: IdempotencyKey,
}

// Each attribute in its place: `#[slot(..)]` and `#[key]` on fields, `#[command(..)]` on the
// struct. Misplaced, they would bind nothing (and a key meant for retries would be dropped).
#[derive(Command)]
#[command(state = Balances, error = Rejected)]
#[key]
#[slot(ToAccount)]
struct Misplaced {
    #[slot(FromAccount)]
    from: StreamId,
    #[command(state = Balances)]
    request: IdempotencyKey,
}

// `#[fingerprint]` marks a field that makes the request what it is: on the key, with arguments
// or on the struct it is a mistake (on a slot's field it is not: its id then tells the roles
// of the streams apart).
#[derive(Command)]
#[command(state = Balances, error = Rejected)]
#[fingerprint]
struct Printed {
    #[slot(FromAccount)]
    #[fingerprint]
    from: StreamId,
    #[key]
    #[fingerprint]
    request: IdempotencyKey,
    #[fingerprint(amount)]
    amount: u64,
}

fn main() {}
