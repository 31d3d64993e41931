//! `#[derive(Fold)]` folds a slot through `Apply`: a field (or the state itself) that does not
//! apply the slot's event type is reported where the slot is folded, naming the event type.
#[path = "../support.rs"]
mod support;

use support::*;

// `Balance` applies account events, not audit events.
#[derive(Default, Fold)]
struct FieldWithoutApply {
    #[fold(FromAccount)]
    from: Balance,
    #[fold(Audit)]
    audit: Balance,
}

// The state itself applies nothing.
#[derive(Default, Fold)]
#[fold(ToAccount)]
struct StateWithoutApply {
    total: i64,
}

fn main() {}
