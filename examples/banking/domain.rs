//! The banking domain: money, accounts, and the commands that move money.
//!
//! Shared by the `banking` example, the conformance tests and the benches (included with
//! `#[path]`), so everything here is exercised by the test suite.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use eventcore::backend::{IdempotencyKey, LogFilter, MemoryTx};
use eventcore::prelude::*;
use eventcore::subscription::Projection;
use eventcore::{DecodeError, RecordedEvent, ValidationError};
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

/// Kept exactly or refused, never trimmed (as eventcore's own names): `" a"` is refused, not
/// made into `"a"`.
fn validate_name(kind: &'static str, v: &str) -> Result<String, ValidationError> {
    if v.is_empty() || v.len() > 64 {
        return Err(ValidationError::new(kind, "must be 1 to 64 characters"));
    }
    if !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(ValidationError::new(
            kind,
            "may contain only ASCII letters, digits, '-' and '_'",
        ));
    }
    Ok(v.to_owned())
}

/// A validated account number.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AccountId(String);

impl AccountId {
    pub fn try_new(value: &str) -> Result<Self, ValidationError> {
        validate_name("AccountId", value).map(AccountId)
    }

    pub fn stream(&self) -> StreamId {
        // Validated above: short ASCII, so always a valid stream id.
        StreamId::with_category("account", &self.0).expect("account ids make valid stream ids")
    }
}

impl TryFrom<String> for AccountId {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::try_new(&value)
    }
}

impl From<AccountId> for String {
    fn from(id: AccountId) -> String {
        id.0
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

/// A validated, caller-chosen transfer id: the same id never moves money twice.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TransferId(String);

impl TransferId {
    pub fn try_new(value: &str) -> Result<Self, ValidationError> {
        validate_name("TransferId", value).map(TransferId)
    }

    pub fn stream(&self) -> StreamId {
        StreamId::with_category("transfer", &self.0).expect("transfer ids make valid stream ids")
    }
}

impl TryFrom<String> for TransferId {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::try_new(&value)
    }
}

impl From<TransferId> for String {
    fn from(id: TransferId) -> String {
        id.0
    }
}

impl fmt::Display for TransferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AccountEvent {
    Opened { owner: String },
    Deposited { amount: Money },
    Withdrawn { amount: Money },
    TransferredOut { transfer: TransferId, to: AccountId, amount: Money },
    TransferredIn { transfer: TransferId, from: AccountId, amount: Money },
}

impl Event for AccountEvent {
    const EVENT_TYPE: &'static str = "AccountEvent";
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TransferEvent {
    Completed { from: AccountId, to: AccountId, amount: Money },
}

impl Event for TransferEvent {
    const EVENT_TYPE: &'static str = "TransferEvent";
}

slot!(
    /// The one account a single-account command works on.
    pub Account: AccountEvent
);
slot!(
    /// The account money leaves.
    pub FromAccount: AccountEvent
);
slot!(
    /// The account money arrives in.
    pub ToAccount: AccountEvent
);
slot!(
    /// The transfer's own stream: proof it happened, at most once.
    pub Ledger: TransferEvent
);

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

/// What a command knows about one account.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AccountState {
    pub open: bool,
    pub balance: Money,
}

impl AccountState {
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

impl Fold<Account> for AccountState {
    fn fold(&mut self, _: &StreamId, event: &AccountEvent) {
        self.apply(event);
    }
}

pub struct OpenAccount {
    pub account: AccountId,
    pub owner: String,
}

impl Command for OpenAccount {
    type Streams = Streams![Account];
    type State = AccountState;
    type Error = BankError;
    type Continuation = NoDiscovery;

    fn streams(&self) -> Bindings<Self::Streams> {
        hlist![Account::bind(self.account.stream())]
    }
}

impl Handle for OpenAccount {
    fn handle(&self, state: &AccountState, mut decision: Decision<Self::Streams>) -> Handled<Self> {
        require!(!state.open, BankError::AlreadyOpen);
        decision.emit(Account, AccountEvent::Opened { owner: self.owner.clone() });
        Ok(decision)
    }
}

pub struct Deposit {
    pub account: AccountId,
    pub amount: Money,
}

impl Command for Deposit {
    type Streams = Streams![Account];
    type State = AccountState;
    type Error = BankError;
    type Continuation = NoDiscovery;

    fn streams(&self) -> Bindings<Self::Streams> {
        hlist![Account::bind(self.account.stream())]
    }
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

pub struct Withdraw {
    pub account: AccountId,
    pub amount: Money,
}

impl Command for Withdraw {
    type Streams = Streams![Account];
    type State = AccountState;
    type Error = BankError;
    type Continuation = NoDiscovery;

    fn streams(&self) -> Bindings<Self::Streams> {
        hlist![Account::bind(self.account.stream())]
    }
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
pub struct Transfer {
    id: TransferId,
    from: AccountId,
    to: AccountId,
    amount: Money,
    key: IdempotencyKey,
}

impl Transfer {
    /// A transfer between two different accounts; a self-transfer cannot be constructed.
    pub fn new(
        id: TransferId,
        from: AccountId,
        to: AccountId,
        amount: Money,
    ) -> Result<Self, BankError> {
        require!(from != to, BankError::SameAccount);
        require!(amount > Money::ZERO, BankError::ZeroAmount);
        // Validated here, so a transfer never runs without its key. The key names this exact
        // request (a command sent again under a used key answers with the first run), so it
        // holds every field: reusing the id for another transfer is another request, which
        // `handle` rejects.
        let key = IdempotencyKey::try_new(format!("transfer-{id}:{from}>{to}:{}", amount.cents()))
            .map_err(BankError::InvalidId)?;
        Ok(Self { id, from, to, amount, key })
    }
}

#[derive(Debug, Default)]
pub struct TransferState {
    pub from: AccountState,
    pub to: AccountState,
    pub completed: Option<(AccountId, AccountId, Money)>,
}

impl Fold<FromAccount> for TransferState {
    fn fold(&mut self, _: &StreamId, event: &AccountEvent) {
        self.from.apply(event);
    }
}

impl Fold<ToAccount> for TransferState {
    fn fold(&mut self, _: &StreamId, event: &AccountEvent) {
        self.to.apply(event);
    }
}

impl Fold<Ledger> for TransferState {
    fn fold(&mut self, _: &StreamId, event: &TransferEvent) {
        let TransferEvent::Completed { from, to, amount } = event;
        self.completed = Some((from.clone(), to.clone(), *amount));
    }
}

impl Command for Transfer {
    type Streams = Streams![FromAccount, ToAccount, Ledger];
    type State = TransferState;
    type Error = BankError;
    type Continuation = NoDiscovery;

    fn streams(&self) -> Bindings<Self::Streams> {
        hlist![
            FromAccount::bind(self.from.stream()),
            ToAccount::bind(self.to.stream()),
            Ledger::bind(self.id.stream()),
        ]
    }

    fn idempotency_key(&self) -> Option<IdempotencyKey> {
        Some(self.key.clone())
    }
}

impl Handle for Transfer {
    fn handle(
        &self,
        state: &TransferState,
        mut decision: Decision<Self::Streams>,
    ) -> Handled<Self> {
        if let Some((from, to, amount)) = &state.completed {
            // Already done: repeating it is a no-op, reusing the id for another transfer is not.
            let same = *from == self.from && *to == self.to && *amount == self.amount;
            require!(same, BankError::TransferIdReused(self.id.clone()));
            return Ok(decision);
        }
        require!(state.from.open && state.to.open, BankError::NotOpen);
        state.from.balance.checked_sub(self.amount)?;
        state.to.balance.checked_add(self.amount)?;
        decision
            .emit(
                FromAccount,
                AccountEvent::TransferredOut {
                    transfer: self.id.clone(),
                    to: self.to.clone(),
                    amount: self.amount,
                },
            )
            .emit(
                ToAccount,
                AccountEvent::TransferredIn {
                    transfer: self.id.clone(),
                    from: self.from.clone(),
                    amount: self.amount,
                },
            )
            .emit(
                Ledger,
                TransferEvent::Completed {
                    from: self.from.clone(),
                    to: self.to.clone(),
                    amount: self.amount,
                },
            );
        Ok(decision)
    }
}

/// Reads an account's balance by folding its stream.
pub async fn balance<B: Backend>(
    store: &B,
    account: &AccountId,
) -> Result<AccountState, Box<dyn std::error::Error + Send + Sync>> {
    let streams = store.read(&[account.stream()]).await?;
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
#[derive(Debug, Default, Clone)]
pub struct Balances(Arc<Mutex<BTreeMap<StreamId, AccountState>>>);

impl Balances {
    /// The balance of `account` as far as the projection has got (zero when unknown).
    pub fn of(&self, account: &AccountId) -> Money {
        self.table().get(&account.stream()).map_or(Money::ZERO, |state| state.balance)
    }

    /// Every account seen so far, with its balance.
    pub fn all(&self) -> Vec<(StreamId, Money)> {
        self.table().iter().map(|(id, state)| (id.clone(), state.balance)).collect()
    }

    fn table(&self) -> std::sync::MutexGuard<'_, BTreeMap<StreamId, AccountState>> {
        // Updates are single inserts that cannot leave the map half-changed.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The events the read model is made of: those of account streams.
    pub fn events() -> LogFilter {
        LogFilter::all().category("account").event_type(AccountEvent::EVENT_TYPE)
    }

    /// Applies one account event to the table.
    pub fn apply_event(&self, event: &RecordedEvent) -> Result<(), DecodeError> {
        let decoded = event.decode::<AccountEvent>()?;
        self.table().entry(event.stream_id.clone()).or_default().apply(&decoded);
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
