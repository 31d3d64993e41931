//! The banking domain: money, accounts, and the commands that move money.
//!
//! Shared by the `banking` example, the conformance tests and the benches (included with
//! `#[path]`), so everything here is exercised by the test suite.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use AccountEvent::{TransferredIn, TransferredOut};
use eventcore::backend::{IdempotencyKey, LogFilter, MemoryTx};
use eventcore::prelude::*;
use eventcore::subscription::Projection;
use eventcore::{Apply, DecodeError, RecordedEvent, StreamVersion, ValidationError};
use serde::{Deserialize, Serialize};

/// An amount of money in integer cents. Never negative; arithmetic is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Money(u64);

impl Money {
    pub const ZERO: Money = Money(0);

    pub fn from_cents(cents: u64) -> Self {
        Money(cents)
    }

    pub fn cents(self) -> u64 {
        self.0
    }

    pub fn checked_add(self, other: Money) -> Result<Money, BankError> {
        self.0.checked_add(other.0).map(Money).ok_or(BankError::Overflow)
    }

    pub fn checked_sub(self, other: Money) -> Result<Money, BankError> {
        self.0
            .checked_sub(other.0)
            .map(Money)
            .ok_or(BankError::InsufficientFunds { balance: self, requested: other })
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "${}.{:02}", self.0 / 100, self.0 % 100)
    }
}

/// An account number; its stream is `account-<number>`. Kept exactly or refused, never
/// trimmed: `" a"` is refused, not made into `"a"`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, StreamKey)]
#[stream_key(category = "account")]
pub struct AccountId(StreamId);

/// A caller-chosen transfer id (the same id never moves money twice); its stream is
/// `transfer-<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, StreamKey)]
#[stream_key(category = "transfer")]
pub struct TransferId(StreamId);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
pub enum AccountEvent {
    Opened { owner: String },
    Deposited { amount: Money },
    Withdrawn { amount: Money },
    TransferredOut { transfer: TransferId, to: AccountId, amount: Money },
    TransferredIn { transfer: TransferId, from: AccountId, amount: Money },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
pub enum TransferEvent {
    Completed { from: AccountId, to: AccountId, amount: Money },
}

slot!(
    /// The one account a single-account command works on.
    pub Account: AccountEvent, key = AccountId
);
slot!(
    /// The account money leaves.
    pub FromAccount: AccountEvent, key = AccountId
);
slot!(
    /// The account money arrives in.
    pub ToAccount: AccountEvent, key = AccountId
);
slot!(
    /// The transfer's own stream: proof it happened, at most once.
    pub Ledger: TransferEvent, key = TransferId
);

/// What the banking commands return.
pub type Result<T, E = BankError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BankError {
    #[error("account is already open")]
    AlreadyOpen,
    #[error("account is not open")]
    NotOpen,
    #[error("amount must be positive")]
    ZeroAmount,
    #[error("insufficient funds: balance {balance}, requested {requested}")]
    InsufficientFunds { balance: Money, requested: Money },
    #[error("balance would overflow")]
    Overflow,
    #[error("a transfer needs two different accounts")]
    SameAccount,
    #[error("transfer id {0} was already used for a different transfer")]
    TransferIdReused(TransferId),
    #[error(transparent)]
    InvalidId(#[from] ValidationError),
}

/// What a command knows about one account: the state of every single-account command.
#[derive(Debug, Default, Clone, PartialEq, Eq, Fold)]
#[fold(Account)]
pub struct AccountState {
    pub open: bool,
    pub balance: Money,
}

impl Apply<AccountEvent> for AccountState {
    fn apply(&mut self, event: &AccountEvent) {
        // Stored events were checked when decided; folding saturates rather than panicking.
        match event {
            AccountEvent::Opened { .. } => self.open = true,
            AccountEvent::Deposited { amount } | AccountEvent::TransferredIn { amount, .. } => {
                self.balance = Money(self.balance.0.saturating_add(amount.0));
            }
            AccountEvent::Withdrawn { amount } | AccountEvent::TransferredOut { amount, .. } => {
                self.balance = Money(self.balance.0.saturating_sub(amount.0));
            }
        }
    }
}

#[derive(Command)]
#[command(state = AccountState, error = BankError)]
pub struct OpenAccount {
    #[slot(Account)]
    pub account: AccountId,
    pub owner: String,
}

impl Handle for OpenAccount {
    fn handle(&self, state: &AccountState, mut decision: Decision<Self::Streams>) -> Handled<Self> {
        require!(!state.open, BankError::AlreadyOpen);
        decision.emit(Account, AccountEvent::Opened { owner: self.owner.clone() });
        Ok(decision)
    }
}

/// Adds money to an open account.
///
/// Not idempotent, to keep the example short: sent again after a lost reply, it deposits
/// again. A deposit taken from the outside world (a payment provider's callback, a request a
/// client may retry) carries a `#[key]` field made from the request's own id, as
/// [`Transfer`] does, so that a second run answers with the first.
#[derive(Command)]
#[command(state = AccountState, error = BankError)]
pub struct Deposit {
    #[slot(Account)]
    pub account: AccountId,
    pub amount: Money,
}

impl Handle for Deposit {
    fn handle(&self, state: &AccountState, mut decision: Decision<Self::Streams>) -> Handled<Self> {
        require!(state.open, BankError::NotOpen);
        require!(self.amount > Money::ZERO, BankError::ZeroAmount);
        state.balance.checked_add(self.amount)?;
        decision.emit(Account, AccountEvent::Deposited { amount: self.amount });
        Ok(decision)
    }
}

/// Takes money from an open account, never below zero. Not idempotent either: see
/// [`Deposit`].
#[derive(Command)]
#[command(state = AccountState, error = BankError)]
pub struct Withdraw {
    #[slot(Account)]
    pub account: AccountId,
    pub amount: Money,
}

impl Handle for Withdraw {
    fn handle(&self, state: &AccountState, mut decision: Decision<Self::Streams>) -> Handled<Self> {
        require!(state.open, BankError::NotOpen);
        require!(self.amount > Money::ZERO, BankError::ZeroAmount);
        state.balance.checked_sub(self.amount)?;
        decision.emit(Account, AccountEvent::Withdrawn { amount: self.amount });
        Ok(decision)
    }
}

/// Moves money between two different accounts, recording the transfer in its own stream.
#[derive(Command)]
#[command(state = TransferView, error = BankError)]
pub struct Transfer {
    #[slot(FromAccount)]
    from: AccountId,
    #[slot(ToAccount)]
    to: AccountId,
    #[slot(Ledger)]
    id: TransferId,
    amount: Money,
    #[key]
    key: IdempotencyKey,
}

impl Transfer {
    /// A transfer between two different accounts; a self-transfer cannot be constructed.
    pub fn new(id: TransferId, from: AccountId, to: AccountId, amount: Money) -> Result<Self> {
        require!(from != to, BankError::SameAccount);
        require!(amount > Money::ZERO, BankError::ZeroAmount);
        // The key names this exact request (sent again under a used key, a command answers
        // with its first run), so it is made of every field: the id reused for another transfer
        // is another request, which `handle` rejects. A digest of the fields, each preceded by
        // its length: joined with separators instead, ids that hold a separator (`a:b`) could
        // make two different transfers one key, and long ids a key over its 255 bytes.
        let amount_text = amount.cents().to_string();
        let fields = [id.to_string(), from.to_string(), to.to_string(), amount_text];
        let request: String = fields.iter().map(|f| format!("{}:{f};", f.len())).collect();
        let digest = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, request.as_bytes());
        let key = IdempotencyKey::try_new(format!("transfer-{digest}"))?;
        Ok(Self { id, from, to, amount, key })
    }
}

/// What a transfer sees: both accounts, and the transfer itself if it already happened.
#[derive(Debug, Default, Fold)]
pub struct TransferView {
    #[fold(FromAccount)]
    pub from: AccountState,
    #[fold(ToAccount)]
    pub to: AccountState,
    #[fold(Ledger)]
    pub completed: Option<TransferEvent>,
}

impl Handle for Transfer {
    fn handle(&self, state: &TransferView, mut decision: Decision<Self::Streams>) -> Handled<Self> {
        if let Some(TransferEvent::Completed { from, to, amount }) = &state.completed {
            // Already done: repeating it is a no-op, reusing the id for another transfer is not.
            let same = (from, to, *amount) == (&self.from, &self.to, self.amount);
            require!(same, BankError::TransferIdReused(self.id.clone()));
            return Ok(decision);
        }
        require!(state.from.open && state.to.open, BankError::NotOpen);
        state.from.balance.checked_sub(self.amount)?;
        state.to.balance.checked_add(self.amount)?;
        let (id, from, to, amount) = (&self.id, &self.from, &self.to, self.amount);
        decision
            .emit(FromAccount, TransferredOut { transfer: id.clone(), to: to.clone(), amount })
            .emit(ToAccount, TransferredIn { transfer: id.clone(), from: from.clone(), amount })
            .emit(Ledger, TransferEvent::Completed { from: from.clone(), to: to.clone(), amount });
        Ok(decision)
    }
}

/// Reads an account's balance by folding its stream.
pub async fn balance<B: Backend>(
    store: &B,
    account: &AccountId,
) -> Result<AccountState, Box<dyn std::error::Error + Send + Sync>> {
    let streams = store.read(&[account.stream_id().clone()]).await?;
    let mut state = AccountState::default();
    for stream in streams {
        for event in stream.events {
            state.apply(&event.decode::<AccountEvent>()?);
        }
    }
    Ok(state)
}

/// The balances read model: every account's balance, kept up to date by a projection from the
/// accounts' events in the order they were committed (see the book's "Subscriptions and
/// projections"). Clones share one table: give one to the projection runner, read another.
///
/// The table is not written through the checkpoint's transaction, so an event may come again
/// (a batch applied, then its checkpoint's commit failed): each account keeps the version of
/// the last event applied, and an event at or below it is passed over, so none counts twice.
#[derive(Debug, Default, Clone)]
pub struct Balances(Arc<Mutex<BTreeMap<StreamId, (StreamVersion, AccountState)>>>);

impl Balances {
    /// The balance of `account` as far as the projection has got (zero when unknown).
    pub fn of(&self, account: &AccountId) -> Money {
        self.table().get(account.stream_id()).map_or(Money::ZERO, |(_, state)| state.balance)
    }

    /// Every account seen so far, with its balance.
    pub fn all(&self) -> Vec<(StreamId, Money)> {
        self.table().iter().map(|(id, (_, state))| (id.clone(), state.balance)).collect()
    }

    fn table(
        &self,
    ) -> std::sync::MutexGuard<'_, BTreeMap<StreamId, (StreamVersion, AccountState)>> {
        // Updates are single inserts that cannot leave the map half-changed.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The events the read model is made of: those of account streams.
    pub fn events() -> LogFilter {
        LogFilter::all().category("account").event_type(AccountEvent::EVENT_TYPE)
    }

    /// Applies one account event to the table, unless it was applied already.
    pub fn apply_event(&self, event: &RecordedEvent) -> Result<(), DecodeError> {
        let decoded = event.decode::<AccountEvent>()?;
        let mut table = self.table();
        let (applied, state) = table.entry(event.stream_id.clone()).or_default();
        if event.version > *applied {
            state.apply(&decoded);
            *applied = event.version;
        }
        Ok(())
    }
}

impl Projection<Memory> for Balances {
    type Error = DecodeError;

    fn name(&self) -> &str {
        "balances"
    }

    fn filter(&self) -> LogFilter {
        Self::events()
    }

    async fn apply(&mut self, _: &mut MemoryTx, event: &RecordedEvent) -> Result<(), DecodeError> {
        self.apply_event(event)
    }
}
