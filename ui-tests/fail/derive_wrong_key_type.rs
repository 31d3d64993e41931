//! A slot declared `key = AccountId` is bound with an `AccountId`: a derived command whose
//! field holds another id type for it is rejected at that field.
#[path = "../support.rs"]
mod support;
use eventcore_macros::Command;
use support::*;

#[derive(Clone)]
pub struct AccountId(StreamId);
impl StreamKey for AccountId {
    fn into_stream_id(self) -> StreamId {
        self.0
    }
}

#[derive(Clone)]
pub struct TransferId(StreamId);
impl StreamKey for TransferId {
    fn into_stream_id(self) -> StreamId {
        self.0
    }
}

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
