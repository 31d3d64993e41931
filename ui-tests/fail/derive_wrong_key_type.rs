//! A slot declared `key = AccountId` is bound with an `AccountId`: a derived command whose
//! field holds another id type for it is rejected at that field.
#[path = "../support.rs"]
mod support;
use support::*;

#[derive(Clone, StreamKey)]
#[stream_key(category = "account")]
pub struct AccountId(StreamId);

#[derive(Clone, StreamKey)]
#[stream_key(category = "transfer")]
pub struct TransferId(StreamId);

slot!(pub Payer: AccountEvent, key = AccountId);

#[derive(Default)]
struct Paid;
impl Fold<Payer> for Paid {
    fn fold(&mut self, _: &StreamId, _: &AccountEvent) {}
}

#[derive(Command)]
#[command(state = Paid, error = Rejected)]
struct Pay {
    #[slot(Payer)]
    payer: TransferId,
}

fn main() {}
