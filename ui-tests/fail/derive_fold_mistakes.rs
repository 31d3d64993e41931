//! `#[derive(Fold)]` folds each slot once: a slot listed twice is reported where it is listed
//! again, naming the slot; `by_stream` belongs on a map field.
#[path = "../support.rs"]
mod support;
use std::collections::BTreeMap;

use support::*;

#[derive(Default, Fold)]
struct FoldedTwice {
    #[fold(FromAccount, ToAccount)]
    from: Balance,
    #[fold(ToAccount)]
    to: Balance,
}

#[derive(Default, Fold)]
#[fold(FromAccount, by_stream)]
struct WholeStateByStream {
    balances: BTreeMap<StreamId, Balance>,
}

fn main() {}
