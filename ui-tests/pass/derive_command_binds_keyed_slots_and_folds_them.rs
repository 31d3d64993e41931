//! The passing side of the derive cases: a derived command binds each keyed slot with a field
//! of its key type, and a derived state folds each slot once, through field `Apply` impls.
#[path = "../support.rs"]
mod support;
use support::*;

#[derive(Clone, StreamKey)]
#[stream_key(category = "account")]
pub struct AccountId(StreamId);

slot!(pub Payer: AccountEvent, key = AccountId);
slot!(pub Payee: AccountEvent, key = AccountId);

#[derive(Default)]
struct Balance(i64);
impl Apply<AccountEvent> for Balance {
    fn apply(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::Debited { cents } => self.0 -= *cents as i64,
            AccountEvent::Credited { cents } => self.0 += *cents as i64,
        }
    }
}

#[derive(Default, Fold)]
struct PayState {
    #[fold(Payer)]
    payer: Balance,
    #[fold(Payee)]
    payee: Balance,
}

#[derive(Command)]
#[command(state = PayState, error = Rejected)]
struct Pay {
    #[slot(Payer)]
    payer: AccountId,
    #[slot(Payee)]
    payee: AccountId,
    cents: u64,
    #[key]
    request: Option<IdempotencyKey>,
}

impl Handle for Pay {
    fn handle(&self, state: &PayState, mut decision: Decision<Self::Streams>) -> Handled<Self> {
        require!(state.payer.0 >= self.cents as i64, Rejected);
        decision.emit(Payer, AccountEvent::Debited { cents: self.cents });
        decision.emit(Payee, AccountEvent::Credited { cents: self.cents });
        Ok(decision)
    }
}

fn main() {
    let id = |s| AccountId::try_new(s).unwrap();
    let _ = Pay { payer: id("a"), payee: id("b"), cents: 5, request: None };
}
