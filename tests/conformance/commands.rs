//! Commands through the executor, on any backend.

use super::banking::*;
use super::store::sid;
use eventcore::backend::{AppendRequest, IdempotencyKey, StoreError};
use eventcore::prelude::*;
use eventcore::testing::{Faulty, Scenario};
use eventcore::{
    CorrelationId, EventId, EventMetadata, FoldError, GlobalPosition, NewEvent, Payload,
    StreamVersion,
};

pub fn account(name: &str) -> AccountId {
    AccountId::try_new(name).unwrap()
}

pub fn money(cents: u64) -> Money {
    Money::from_cents(cents)
}

pub async fn open_with<B: Backend>(bank: &Executor<B>, name: &str, cents: u64) -> AccountId {
    let id = account(name);
    bank.execute(&OpenAccount { account: id.clone(), owner: name.into() }).await.unwrap();
    if cents > 0 {
        bank.execute(&Deposit { account: id.clone(), amount: money(cents) }).await.unwrap();
    }
    id
}

pub async fn banking_scenario<B: Backend>(store: B) {
    let bank = Executor::new(store.clone());
    let alice = open_with(&bank, "alice", 10_000).await;
    let bob = open_with(&bank, "bob", 0).await;
    let t =
        Transfer::new(TransferId::try_new("t1").unwrap(), alice.clone(), bob.clone(), money(3_000))
            .unwrap();
    let done = bank.execute(&t).await.unwrap();
    assert_eq!(done.committed.streams.len(), 3, "both accounts and the ledger: {done:?}");
    // Repeating the same transfer moves nothing.
    bank.execute(&t).await.unwrap();
    assert_eq!(balance(&store, &alice).await.unwrap().balance, money(7_000));
    assert_eq!(balance(&store, &bob).await.unwrap().balance, money(3_000));
    // Reusing the id for another transfer is rejected.
    let reuse =
        Transfer::new(TransferId::try_new("t1").unwrap(), alice.clone(), bob.clone(), money(1))
            .unwrap();
    assert!(matches!(
        bank.execute(&reuse).await,
        Err(ExecuteError::Rejected(BankError::TransferIdReused(_)))
    ));
    assert!(matches!(
        Transfer::new(TransferId::try_new("t2").unwrap(), bob.clone(), bob.clone(), money(1)),
        Err(BankError::SameAccount)
    ));
    let ledger =
        store.read(&[TransferId::try_new("t1").unwrap().stream_id().clone()]).await.unwrap();
    assert_eq!(ledger[0].events.len(), 1);
}

/// A transfer of more than the payer holds is rejected with both amounts, and writes nothing:
/// the store holds the given events only.
pub async fn rejection_writes_nothing<B: Backend>(store: B) {
    let (poor, rich) = (account("poor"), account("rich"));
    let outcome = Scenario::new()
        .given(
            FromAccount,
            &poor.stream_id().clone(),
            [
                AccountEvent::Opened { owner: "poor".into() },
                AccountEvent::Deposited { amount: money(500) },
            ],
        )
        .given(
            ToAccount,
            &rich.stream_id().clone(),
            [AccountEvent::Opened { owner: "rich".into() }],
        )
        .when_on(
            &Executor::new(store.clone()),
            &Transfer::new(TransferId::try_new("big").unwrap(), poor, rich, money(600)).unwrap(),
        )
        .await;
    outcome
        .then_rejects(BankError::InsufficientFunds { balance: money(500), requested: money(600) });
    assert_eq!(store.read_all(GlobalPosition::START, 1000).await.unwrap().len(), 3);
}

/// Writes an event of a foreign type (`SomethingElse`) to `stream`, which is at `version`,
/// straight to the store; answers its id.
pub async fn append_stranger<B: Backend>(store: &B, stream: StreamId, version: u64) -> EventId {
    let stranger = NewEvent::new(
        "SomethingElse",
        1,
        Payload::to_json(&42).unwrap(),
        EventMetadata::new(CorrelationId::new()),
    );
    let id = stranger.metadata.event_id;
    store
        .append(
            AppendRequest::new()
                .expect(stream.clone(), StreamVersion::new(version))
                .write(stream, vec![stranger]),
        )
        .await
        .unwrap();
    id
}

pub async fn undecodable_event_is_a_typed_error<B: Backend>(store: B) {
    let bank = Executor::new(store.clone());
    let alice = open_with(&bank, "corrupt", 100).await;
    // Someone wrote an event of a foreign type into the account's stream.
    let stranger_id = append_stranger(&store, alice.stream_id().clone(), 2).await;
    match bank.execute(&Deposit { account: alice.clone(), amount: money(1) }).await {
        Err(ExecuteError::Fold(FoldError::Decode { stream, event_id, slot, .. })) => {
            assert_eq!(stream, alice.stream_id().clone());
            assert_eq!(event_id, stranger_id);
            assert_eq!(slot, "Account");
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
    // A payload of the right type name but the wrong shape, or a future schema version.
    let bob = open_with(&bank, "future", 0).await;
    let future = NewEvent::new(
        "AccountEvent",
        99,
        Payload::to_json(&"?").unwrap(),
        EventMetadata::new(CorrelationId::new()),
    );
    store
        .append(
            AppendRequest::new()
                .expect(bob.stream_id().clone(), StreamVersion::new(1))
                .write(bob.stream_id().clone(), vec![future]),
        )
        .await
        .unwrap();
    let err = bank.execute(&Deposit { account: bob, amount: money(1) }).await.unwrap_err();
    assert!(err.to_string().contains("schema version 99"), "{err}");
}

#[derive(serde::Deserialize)]
pub enum Unserializable {
    Map(std::collections::HashMap<(u8, u8), u8>),
}

impl serde::Serialize for Unserializable {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let Unserializable::Map(m) = self;
        // JSON maps need string keys: serde_json refuses this one.
        serde::Serialize::serialize(m, s)
    }
}

impl Event for Unserializable {
    const EVENT_TYPE: &'static str = "Unserializable";
}

slot!(pub Sink: Unserializable);

struct WriteBoth {
    good: AccountId,
    bad: StreamId,
}

impl Command for WriteBoth {
    type Streams = Streams![Account, Sink];
    type State = AccountState;
    type Error = BankError;
    type Continuation = NoDiscovery;

    fn streams(&self) -> Bindings<Self::Streams> {
        hlist![Account::bind(self.good.clone()), Sink::bind(self.bad.clone())]
    }
}

impl Handle for WriteBoth {
    fn handle(&self, _: &AccountState, mut decision: Decision<Self::Streams>) -> Handled<Self> {
        decision.emit(Account, AccountEvent::Opened { owner: "x".into() });
        decision.emit(Sink, Unserializable::Map([((1, 2), 3)].into_iter().collect()));
        Ok(decision)
    }
}

impl Fold<Sink> for AccountState {
    fn fold(&mut self, _: &StreamId, _: &Unserializable) {}
}

pub async fn encode_failure_writes_nothing<B: Backend>(store: B) {
    let bank = Executor::new(store.clone());
    let err = bank
        .execute(&WriteBoth { good: account("enc-good"), bad: sid("enc-bad") })
        .await
        .unwrap_err();
    assert!(matches!(&err, ExecuteError::Encode(e) if e.event_type == "Unserializable"), "{err:?}");
    assert!(store.read_all(GlobalPosition::START, 10).await.unwrap().is_empty());
}

/// A meter's readings: a float the command takes from its caller.
#[derive(serde::Serialize, serde::Deserialize)]
pub enum MeterEvent {
    Read { value: f64 },
}

impl Event for MeterEvent {
    const EVENT_TYPE: &'static str = "MeterEvent";
}

slot!(pub Meter: MeterEvent);

#[derive(Default)]
pub struct MeterTotal {
    readings: usize,
    sum: f64,
}

impl Fold<Meter> for MeterTotal {
    fn fold(&mut self, _: &StreamId, MeterEvent::Read { value }: &MeterEvent) {
        self.readings += 1;
        self.sum += value;
    }
}

impl Fold<Account> for MeterTotal {
    fn fold(&mut self, _: &StreamId, _: &AccountEvent) {}
}

/// Records a reading, and opens an account beside it in the same append.
struct RecordReading {
    meter: StreamId,
    account: AccountId,
    value: f64,
}

impl Command for RecordReading {
    type Streams = Streams![Meter, Account];
    type State = MeterTotal;
    type Error = BankError;
    type Continuation = NoDiscovery;

    fn streams(&self) -> Bindings<Self::Streams> {
        hlist![Meter::bind(self.meter.clone()), Account::bind(self.account.clone())]
    }
}

impl Handle for RecordReading {
    fn handle(&self, _: &MeterTotal, mut decision: Decision<Self::Streams>) -> Handled<Self> {
        decision.emit(Account, AccountEvent::Opened { owner: "meter".into() });
        decision.emit(Meter, MeterEvent::Read { value: self.value });
        Ok(decision)
    }
}

/// A float is stored exactly as given and reads back as the same number, to the last bit:
/// `0.9999999999999999` stays itself, never `1.0`.
pub async fn a_float_reads_back_as_written<B: Backend>(store: B) {
    let bank = Executor::new(store.clone());
    let meter = sid("meter-exact");
    let values = [0.9999999999999999_f64, 1.4000000000000001, 9.299999999999983];
    for (i, value) in values.into_iter().enumerate() {
        let account = account(&format!("meter-exact-owner-{i}"));
        bank.execute(&RecordReading { meter: meter.clone(), account, value }).await.unwrap();
    }
    let stored = store.read(std::slice::from_ref(&meter)).await.unwrap().remove(0);
    let read: Vec<f64> = (stored.events.iter())
        .map(|e| match e.decode::<MeterEvent>().unwrap() {
            MeterEvent::Read { value } => value,
        })
        .collect();
    let bits = |values: &[f64]| values.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&read), bits(&values), "{read:?}");
}

/// serde_json writes a NaN or an infinity as `null`, which no `f64` is read back from: stored,
/// such an event would fail every later fold of its stream. It is refused when encoded, the
/// append writes nothing (not even the other slot's event), and the stream stays usable.
pub async fn a_non_finite_float_is_refused_and_writes_nothing<B: Backend>(store: B) {
    let bank = Executor::new(store.clone());
    let meter = sid("meter-nan");
    for (i, bad) in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY].into_iter().enumerate() {
        let account = account(&format!("meter-owner-{i}"));
        let err = bank
            .execute(&RecordReading { meter: meter.clone(), account, value: bad })
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ExecuteError::Encode(e) if e.event_type == "MeterEvent" && e.reason.contains("null")),
            "{bad}: {err:?}"
        );
    }
    assert!(store.read_all(GlobalPosition::START, 10).await.unwrap().is_empty());
    let ok = RecordReading { meter: meter.clone(), account: account("meter-owner-ok"), value: 2.5 };
    bank.execute(&ok).await.unwrap();
    let again = RecordReading { meter, account: account("meter-owner-ok-2"), value: 0.5 };
    bank.execute(&again).await.unwrap();
    let stored = store.read(&[sid("meter-nan")]).await.unwrap();
    let payloads: Vec<&str> = stored[0].events.iter().map(|e| e.payload.as_str()).collect();
    assert_eq!(payloads, [r#"{"Read":{"value":2.5}}"#, r#"{"Read":{"value":0.5}}"#]);
}

pub async fn lost_reply_with_idempotency_key_does_not_apply_twice<B: Backend>(store: B) {
    let faulty = Faulty::new(store.clone());
    let bank = Executor::new(faulty.clone());
    let alice = open_with(&bank, "lost-a", 1_000).await;
    let bob = open_with(&bank, "lost-b", 0).await;
    let t =
        Transfer::new(TransferId::try_new("lost").unwrap(), alice.clone(), bob.clone(), money(400))
            .unwrap();
    // The append commits, but the client is told the connection dropped: the executor retries,
    // and the idempotency key makes the store answer with the first commit.
    faulty.lose_next_append_replies(1);
    let done = bank.execute(&t).await.unwrap();
    assert_eq!(done.attempts, 2);
    assert_eq!(balance(&store, &alice).await.unwrap().balance, money(600));
    assert_eq!(balance(&store, &bob).await.unwrap().balance, money(400));

    // A deposit is not idempotent by itself; its key is what stops the retry from applying it
    // again: the store answers with the first commit.
    faulty.lose_next_append_replies(1);
    let keyed = KeyedDeposit {
        deposit: Deposit { account: alice.clone(), amount: money(50) },
        key: IdempotencyKey::try_new("deposit-1").unwrap(),
    };
    let done = bank.execute(&keyed).await.unwrap();
    assert_eq!(done.attempts, 2);
    assert!(done.committed.replayed, "{done:?}");
    assert_eq!(balance(&store, &alice).await.unwrap().balance, money(650));
    // Executing it again later is also a replay.
    assert!(bank.execute(&keyed).await.unwrap().committed.replayed);
    assert_eq!(balance(&store, &alice).await.unwrap().balance, money(650));

    // Without a key the executor does not retry a lost append reply (it cannot know whether the
    // write landed): the caller gets the store error.
    faulty.lose_next_append_replies(1);
    let err =
        bank.execute(&Deposit { account: alice.clone(), amount: money(1) }).await.unwrap_err();
    assert!(matches!(err, ExecuteError::Store(StoreError::Unavailable(_))), "{err:?}");
}

/// An append that fails before it reaches the store writes nothing: without a key the caller
/// gets the error (the executor cannot know it wrote nothing), with one the executor retries
/// and the command lands once.
pub async fn a_failed_append_writes_nothing<B: Backend>(store: B) {
    let faulty = Faulty::new(store.clone());
    let bank = Executor::new(faulty.clone());
    let alice = open_with(&bank, "failed-append", 100).await;
    let before = store.read(&[alice.stream_id().clone()]).await.unwrap().remove(0).version;
    faulty.fail_next_appends(1);
    let err =
        bank.execute(&Deposit { account: alice.clone(), amount: money(5) }).await.unwrap_err();
    assert!(matches!(err, ExecuteError::Store(StoreError::Unavailable(_))), "{err:?}");
    assert_eq!(store.read(&[alice.stream_id().clone()]).await.unwrap()[0].version, before);
    assert_eq!(balance(&store, &alice).await.unwrap().balance, money(100));

    faulty.fail_next_appends(1);
    let keyed = KeyedDeposit {
        deposit: Deposit { account: alice.clone(), amount: money(7) },
        key: IdempotencyKey::try_new("failed-append-1").unwrap(),
    };
    let done = bank.execute(&keyed).await.unwrap();
    assert_eq!(done.attempts, 2);
    assert!(!done.committed.replayed, "the first attempt wrote nothing: {done:?}");
    assert_eq!(balance(&store, &alice).await.unwrap().balance, money(107));
}

pub async fn transient_read_failure_is_retried<B: Backend>(store: B) {
    let faulty = Faulty::new(store);
    let bank = Executor::new(faulty.clone());
    let alice = open_with(&bank, "flaky", 0).await;
    faulty.fail_next_reads(2);
    let done = bank.execute(&Deposit { account: alice.clone(), amount: money(1) }).await.unwrap();
    assert_eq!(done.attempts, 3);
    faulty.fail_next_reads(100);
    let bank = bank.with_retry(RetryPolicy::builder().max_attempts(3).build().unwrap());
    let err = bank.execute(&Deposit { account: alice, amount: money(1) }).await.unwrap_err();
    assert!(matches!(err, ExecuteError::Store(StoreError::Unavailable(_))), "{err:?}");
}

pub async fn context_metadata_is_stored<B: Backend>(store: B) {
    let bank = Executor::new(store.clone());
    let correlation = CorrelationId::new();
    let cause = eventcore::CausationId::new();
    let ctx = RequestContext::new()
        .correlated_with(correlation)
        .caused_by(cause)
        .with_custom("user", "alice");
    bank.execute_in(&OpenAccount { account: account("ctx"), owner: "c".into() }, &ctx)
        .await
        .unwrap();
    let all = store.read_all(GlobalPosition::START, 10).await.unwrap();
    assert_eq!(all.len(), 1);
    let meta = &all[0].metadata;
    assert_eq!(meta.correlation_id, correlation);
    assert_eq!(meta.causation_id, Some(cause));
    assert_eq!(meta.custom["user"], "alice");
    assert_eq!(meta.event_id.as_uuid().get_version_num(), 7);
}

/// A deposit carrying a caller-chosen idempotency key.
pub struct KeyedDeposit {
    pub deposit: Deposit,
    pub key: IdempotencyKey,
}

impl Command for KeyedDeposit {
    type Streams = <Deposit as Command>::Streams;
    type State = <Deposit as Command>::State;
    type Error = <Deposit as Command>::Error;
    type Continuation = NoDiscovery;

    fn streams(&self) -> Bindings<Self::Streams> {
        self.deposit.streams()
    }

    fn idempotency_key(&self) -> Option<IdempotencyKey> {
        Some(self.key.clone())
    }

    fn request_fields(&self, fields: &mut eventcore::RequestFields) {
        fields.add("amount", &self.deposit.amount.cents());
    }
}

impl Handle for KeyedDeposit {
    fn handle(&self, state: &AccountState, decision: Decision<Self::Streams>) -> Handled<Self> {
        self.deposit.handle(state, decision)
    }
}

/// Emits to two slots, interleaved.
struct Interleaved {
    a: AccountId,
    b: AccountId,
}

impl Command for Interleaved {
    type Streams = Streams![FromAccount, ToAccount];
    type State = TransferView;
    type Error = BankError;
    type Continuation = NoDiscovery;

    fn streams(&self) -> Bindings<Self::Streams> {
        hlist![FromAccount::bind(self.a.clone()), ToAccount::bind(self.b.clone())]
    }
}

impl Handle for Interleaved {
    fn handle(&self, _: &TransferView, mut decision: Decision<Self::Streams>) -> Handled<Self> {
        decision
            .emit(ToAccount, AccountEvent::Deposited { amount: money(1) })
            .emit(FromAccount, AccountEvent::Deposited { amount: money(2) })
            .emit(ToAccount, AccountEvent::Deposited { amount: money(3) });
        Ok(decision)
    }
}

pub async fn events_are_stored_in_emission_order<B: Backend>(store: B) {
    let bank = Executor::new(store.clone());
    let (a, b) = (account("order-a"), account("order-b"));
    bank.execute(&Interleaved { a: a.clone(), b: b.clone() }).await.unwrap();
    let all = store.read_all(GlobalPosition::START, 10).await.unwrap();
    let seen: Vec<(String, u64, String)> = all
        .iter()
        .map(|e| (e.stream_id.to_string(), e.version.get(), e.payload.as_str().to_owned()))
        .collect();
    let deposit = |n: u64| format!("{{\"Deposited\":{{\"amount\":{n}}}}}");
    assert_eq!(
        seen,
        vec![
            (b.stream_id().clone().to_string(), 1, deposit(1)),
            (a.stream_id().clone().to_string(), 1, deposit(2)),
            (b.stream_id().clone().to_string(), 2, deposit(3)),
        ]
    );
    assert!(all.windows(2).all(|w| w[0].position < w[1].position));
    // Metadata is stamped in the same order: event ids (UUIDv7) grow with positions.
    assert!(all.windows(2).all(|w| w[0].event_id() < w[1].event_id()));
}
