//! Schema evolution on every backend: stored JSON of each old version of an event type (the
//! golden files under `tests/golden/account/`) is planted in a store as the old code wrote it,
//! and read through the chain of upcasters (v1 -> v2 -> v3, a rename, splits, drops) by
//! commands (with and without a stream cache), `read` and `read_all`, a typed subscription and
//! a projection. Events of a future schema version or of an unknown type are typed errors
//! naming the event.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventcore::backend::{AppendRequest, Backend, UnreadableEvent};
use eventcore::prelude::*;
use eventcore::subscription::{Projection, ProjectionRunner, ProjectionStore, Subscription};
use eventcore::{
    CorrelationId, DecodeError, EventId, EventMetadata, FoldError, GlobalPosition, NewEvent,
    Payload, RecordedEvent, Shape, Stored, StreamCache, StreamVersion, Upcast,
};
use serde::{Deserialize, Serialize};

#[cfg(feature = "postgres")]
#[path = "support/postgres.rs"]
mod postgres_support;

const PATIENCE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// The event type, version 3, and its two older shapes.

/// The current shape (schema version 3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind")]
enum AccountEvent {
    Opened { owner: String },
    Deposited { cents: u64, currency: String },
    Withdrawn { cents: u64, currency: String },
    FeeCharged { cents: u64, currency: String },
}

impl Event for AccountEvent {
    const EVENT_TYPE: &'static str = "AccountEvent";
    const SCHEMA_VERSION: u32 = 3;
    const FORMER_TYPES: &'static [&'static str] = &["BankAccount"];

    fn upcast(stored: Stored<'_, Self>) -> Result<Upcast<Self>, DecodeError> {
        stored.upcast_with::<(AccountV1, AccountV2)>()
    }
}

/// Version 1, stored as `BankAccount`: amounts in dollars, tagged by `type`.
#[derive(Deserialize)]
#[serde(tag = "type")]
enum AccountV1 {
    Opened { owner: String },
    Deposited { amount: f64 },
    Transferred { amount: f64, fee: f64 },
    Audited,
}

/// Version 2: amounts in cents, tagged by `kind`, no currency.
#[derive(Deserialize)]
#[serde(tag = "kind")]
enum AccountV2 {
    Opened { owner: String },
    Deposited { cents: u64 },
    TransferredOut { cents: u64, fee_cents: u64 },
    Noted,
}

fn cents(dollars: f64) -> u64 {
    // Test data: small, non-negative amounts with at most two decimals.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let cents = (dollars * 100.0).round() as u64;
    cents
}

impl From<AccountV1> for AccountV2 {
    fn from(v1: AccountV1) -> Self {
        match v1 {
            AccountV1::Opened { owner } => Self::Opened { owner },
            AccountV1::Deposited { amount } => Self::Deposited { cents: cents(amount) },
            AccountV1::Transferred { amount, fee } => {
                Self::TransferredOut { cents: cents(amount), fee_cents: cents(fee) }
            }
            AccountV1::Audited => Self::Noted,
        }
    }
}

impl Shape<AccountEvent> for AccountV1 {
    const VERSION: u32 = 1;
    fn upcast(self) -> Upcast<AccountEvent> {
        AccountV2::from(self).upcast()
    }
}

impl Shape<AccountEvent> for AccountV2 {
    const VERSION: u32 = 2;
    fn upcast(self) -> Upcast<AccountEvent> {
        let eur = || "EUR".to_owned();
        match self {
            Self::Opened { owner } => Upcast::One(AccountEvent::Opened { owner }),
            Self::Deposited { cents } => {
                Upcast::One(AccountEvent::Deposited { cents, currency: eur() })
            }
            Self::TransferredOut { cents, fee_cents } => Upcast::Split(vec![
                AccountEvent::Withdrawn { cents, currency: eur() },
                AccountEvent::FeeCharged { cents: fee_cents, currency: eur() },
            ]),
            Self::Noted => Upcast::Dropped,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The golden data.

/// One stored event of a golden file, as the old code wrote it.
#[derive(Deserialize)]
struct Golden {
    event_type: String,
    schema_version: u32,
    payload: serde_json::Value,
}

fn golden_file(name: &str) -> String {
    let path = format!("{}/tests/golden/account/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// Every stored event of the golden files, oldest first.
fn golden_events() -> Vec<NewEvent> {
    ["v1.json", "v2.json", "v3.json"]
        .into_iter()
        .flat_map(|file| serde_json::from_str::<Vec<Golden>>(&golden_file(file)).unwrap())
        .map(|g| {
            NewEvent::new(
                g.event_type,
                g.schema_version,
                Payload::to_json(&g.payload).unwrap(),
                EventMetadata::new(CorrelationId::new()),
            )
        })
        .collect()
}

/// What the golden events read as today, in order.
fn expected() -> Vec<AccountEvent> {
    serde_json::from_str(&golden_file("expected.json")).unwrap()
}

/// How many current events each stored golden event reads as (1 one, 2 a split, 0 a drop).
const PARTS: [usize; 8] = [1, 1, 2, 0, 1, 0, 2, 1];

/// The balance after the golden events: 1250 - 300 - 50 + 1000 - 200 - 25 + 500.
const BALANCE: u64 = 2175;

fn id(s: &str) -> StreamId {
    StreamId::try_new(s).unwrap()
}

/// Plants `events` as a new stream `stream` (one append, as the old code would have left
/// them); returns the stream's last position.
async fn plant<B: Backend>(store: &B, stream: &StreamId, events: Vec<NewEvent>) -> GlobalPosition {
    let done = store
        .append(
            AppendRequest::new()
                .expect(stream.clone(), StreamVersion::EMPTY)
                .write(stream.clone(), events),
        )
        .await
        .unwrap();
    done.positions.unwrap().1
}

fn meta() -> EventMetadata {
    EventMetadata::new(CorrelationId::new())
}

/// A rolling deploy's snapshots: plants the snapshot the newer release's command `newer` takes
/// of `account` (two stored events, the last `last`), holding `state`, then checks that the
/// older release's `older` fails on the stream without snapshots and with them: it never
/// decides on the newer release's snapshot. (Only the older release executes: a process
/// refuses two types stored under one name.)
async fn older_code_fails_rather_than_restore<O, N>(
    store: &Memory,
    older: &O,
    newer: &N,
    (account, last): (&StreamId, EventId),
    state: &O::State,
) where
    O: Handle,
    O::State: eventcore::Snapshot,
    O::Streams: eventcore::executor::SlotStreams,
    N: Command,
    N::State: eventcore::Snapshot,
    N::Streams: eventcore::executor::SlotStreams,
{
    use eventcore::executor::snapshot_key;
    use eventcore::{ExecuteError, SnapshotPolicy};
    assert_ne!(snapshot_key(older), snapshot_key(newer), "the releases share a snapshot");
    let snapshot = eventcore::backend::StoredSnapshot {
        key: snapshot_key(newer),
        state_type: std::any::type_name::<O::State>().into(),
        state_version: 1,
        streams: vec![(account.clone(), StreamVersion::new(2))],
        last_event_ids: vec![Some(last)],
        state: Payload::to_json(state).unwrap(),
    };
    store.save_snapshot(snapshot).await.unwrap();
    let plain = Executor::new(store.clone()).execute(older).await;
    assert!(matches!(plain, Err(ExecuteError::Fold(_))), "{plain:?}");
    let snapshots = Executor::new(store.clone()).with_snapshots(SnapshotPolicy::every(1));
    let restored = snapshots.execute_snapshotted(older).await;
    assert!(
        matches!(restored, Err(ExecuteError::Fold(_))),
        "the older release decided on the newer one's snapshot: {restored:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// A command over the account.

slot!(Account: AccountEvent);

#[derive(Default, Debug)]
struct Balance {
    cents: u64,
    folded: Vec<AccountEvent>,
}

impl Fold<Account> for Balance {
    fn fold(&mut self, _: &StreamId, event: &AccountEvent) {
        match event {
            AccountEvent::Opened { .. } => {}
            AccountEvent::Deposited { cents, .. } => self.cents += cents,
            AccountEvent::Withdrawn { cents, .. } | AccountEvent::FeeCharged { cents, .. } => {
                self.cents -= cents;
            }
        }
        self.folded.push(event.clone());
    }
}

#[derive(Debug, PartialEq, thiserror::Error)]
#[error("balance {balance} after {folded} events is below {wanted}")]
struct Insufficient {
    balance: u64,
    folded: usize,
    wanted: u64,
}

struct Withdraw {
    account: StreamId,
    cents: u64,
}

impl Command for Withdraw {
    type Streams = Streams![Account];
    type State = Balance;
    type Error = Insufficient;
    type Continuation = NoDiscovery;

    fn streams(&self) -> Bindings<Self::Streams> {
        hlist![Account::bind(self.account.clone())]
    }
}

impl Handle for Withdraw {
    fn handle(&self, state: &Balance, mut decision: Decision<Self::Streams>) -> Handled<Self> {
        require!(
            state.cents >= self.cents,
            Insufficient { balance: state.cents, folded: state.folded.len(), wanted: self.cents }
        );
        decision
            .emit(Account, AccountEvent::Withdrawn { cents: self.cents, currency: "EUR".into() });
        Ok(decision)
    }
}

// ---------------------------------------------------------------------------------------------
// The test bodies, once per backend.

/// Commands fold the golden events upcast, with and without a stream cache, and append at the
/// stored version (splits and drops do not move versions).
async fn commands_fold_old_events_through_the_chain<B: Backend>(store: B) {
    for cached in [false, true] {
        let account = id(&format!("account-commands{}", if cached { "-cached" } else { "" }));
        plant(&store, &account, golden_events()).await;
        let mut executor = Executor::new(store.clone());
        if cached {
            executor = executor.with_cache(StreamCache::new(1_000));
        }
        let rejected = |balance, folded| {
            move |r: Result<_, ExecuteError<Insufficient>>| match r {
                Err(ExecuteError::Rejected(e)) => {
                    assert_eq!((e.balance, e.folded), (balance, folded), "cached: {cached}");
                }
                other => panic!("cached: {cached}: expected a rejection, got {other:?}"),
            }
        };
        let withdraw = |cents| Withdraw { account: account.clone(), cents };
        // Too much: rejected, with the balance and the number of events folded.
        rejected(BALANCE, 8)(executor.execute(&withdraw(BALANCE + 1)).await);
        // Twice (from the cache's decoded copy the second time, when there is a cache): each
        // append expects the stored version, which counts stored events, not parts.
        for n in 1..=2 {
            let done = executor.execute(&withdraw(1)).await.unwrap();
            assert_eq!(done.committed.version_of(&account), Some(StreamVersion::new(8 + n)));
        }
        rejected(BALANCE - 2, 10)(executor.execute(&withdraw(BALANCE)).await);
    }
}

/// A balance that is snapshotted: the cents, and how many current events (parts) it folded.
#[derive(Default, Debug, Serialize, Deserialize)]
struct SnappedBalance {
    cents: u64,
    parts: usize,
}

impl eventcore::Snapshot for SnappedBalance {
    const NAME: &'static str = "golden-balance";
    const VERSION: u32 = 1;
}

impl Fold<Account> for SnappedBalance {
    fn fold(&mut self, _: &StreamId, event: &AccountEvent) {
        match event {
            AccountEvent::Opened { .. } => {}
            AccountEvent::Deposited { cents, .. } => self.cents += cents,
            AccountEvent::Withdrawn { cents, .. } | AccountEvent::FeeCharged { cents, .. } => {
                self.cents -= cents;
            }
        }
        self.parts += 1;
    }
}

struct SnappedWithdraw {
    account: StreamId,
    cents: u64,
}

impl Command for SnappedWithdraw {
    type Streams = Streams![Account];
    type State = SnappedBalance;
    type Error = Insufficient;
    type Continuation = NoDiscovery;

    fn streams(&self) -> Bindings<Self::Streams> {
        hlist![Account::bind(self.account.clone())]
    }
}

impl Handle for SnappedWithdraw {
    fn handle(
        &self,
        state: &SnappedBalance,
        mut decision: Decision<Self::Streams>,
    ) -> Handled<Self> {
        require!(
            state.cents >= self.cents,
            Insufficient { balance: state.cents, folded: state.parts, wanted: self.cents }
        );
        decision
            .emit(Account, AccountEvent::Withdrawn { cents: self.cents, currency: "EUR".into() });
        Ok(decision)
    }
}

/// A snapshot taken right after a stored event that splits covers the stored event (its
/// version), both its parts folded: the command after it neither folds a part again nor
/// skips one, and its append expects the stored version.
async fn snapshots_cover_split_events_whole<B: Backend>(store: B) {
    use eventcore::{Snapshot as _, SnapshotPolicy, executor::snapshot_key};
    let account = id("account-snapshotted");
    let mut golden = golden_events();
    let later = golden.split_off(3); // the first three end with a transfer, split in two
    plant(&store, &account, golden).await;
    let executor = Executor::new(store.clone()).with_snapshots(SnapshotPolicy::every(1));
    let withdraw = |cents| SnappedWithdraw { account: account.clone(), cents };
    let rejected = |balance, folded| {
        move |r: Result<_, ExecuteError<Insufficient>>| match r {
            Err(ExecuteError::Rejected(e)) => assert_eq!((e.balance, e.folded), (balance, folded)),
            other => panic!("expected a rejection, got {other:?}"),
        }
    };
    // 1250 - 300 - 50, from four parts of three stored events.
    rejected(900, 4)(executor.execute_snapshotted(&withdraw(100_000)).await);
    let key = snapshot_key(&withdraw(0));
    let snapshot = store.load_snapshot(&key).await.unwrap().expect("taken");
    assert_eq!(snapshot.streams, vec![(account.clone(), StreamVersion::new(3))]);
    assert_eq!(snapshot.state_version, SnappedBalance::VERSION);
    store
        .append(
            AppendRequest::new()
                .expect(account.clone(), StreamVersion::new(3))
                .write(account.clone(), later),
        )
        .await
        .unwrap();
    let parts: usize = PARTS.iter().sum();
    rejected(BALANCE, parts)(executor.execute_snapshotted(&withdraw(BALANCE + 1)).await);
    let done = executor.execute_snapshotted(&withdraw(1)).await.unwrap();
    assert_eq!(done.committed.version_of(&account), Some(StreamVersion::new(9)));
    rejected(BALANCE - 1, parts + 1)(executor.execute_snapshotted(&withdraw(BALANCE)).await);
    // What a full fold gives.
    let plain = Executor::new(store.clone());
    rejected(BALANCE - 1, parts + 1)(plain.execute(&withdraw(BALANCE)).await);
}

/// `read` and `read_all` give the stored events; `decode_all` reads each through the chain.
async fn reads_decode_old_events_through_the_chain<B: Backend>(store: B) {
    let account = id("account-reads");
    plant(&store, &account, golden_events()).await;
    let other = id("other-1");
    plant(&store, &other, vec![NewEvent::new("Other", 1, Payload::to_json(&1).unwrap(), meta())])
        .await;

    let stream = store.read(std::slice::from_ref(&account)).await.unwrap().remove(0);
    assert_eq!(stream.version, StreamVersion::new(8));
    let parts: Vec<Upcast<AccountEvent>> =
        stream.events.iter().map(|e| e.decode_all::<AccountEvent>().unwrap()).collect();
    assert_eq!(parts.iter().map(Upcast::len).collect::<Vec<_>>(), PARTS);
    let decoded: Vec<AccountEvent> = parts.into_iter().flatten().collect();
    assert_eq!(decoded, expected());

    let all = store.read_all(GlobalPosition::START, 100).await.unwrap();
    let accounts: Vec<&RecordedEvent> = all.iter().filter(|e| e.stream_id == account).collect();
    assert_eq!(accounts.len(), 8);
    let decoded: Vec<AccountEvent> =
        accounts.iter().flat_map(|e| e.decode_all::<AccountEvent>().unwrap()).collect();
    assert_eq!(decoded, expected());
    // `decode` reads exactly one event: a split or dropped one is an error naming it.
    let split = accounts[2];
    assert_eq!(
        split.decode::<AccountEvent>(),
        Err(DecodeError::NotOne {
            event_id: split.event_id(),
            event_type: "AccountEvent",
            count: 2
        })
    );
    assert_eq!(accounts[1].decode::<AccountEvent>().unwrap(), expected()[1]);
    // Another type is not silently read as this one.
    let stranger = all.iter().find(|e| e.stream_id == other).unwrap();
    assert!(matches!(
        stranger.decode_all::<AccountEvent>(),
        Err(DecodeError::UnknownType { event_id, ref event_type, version: 1, expected: "AccountEvent" })
            if event_id == stranger.event_id() && event_type == "Other"
    ));
}

/// A typed subscription reads the former type name too, delivers each part of a split with the
/// stored event it came from, and nothing for a dropped event.
async fn a_typed_subscription_reads_old_events_through_the_chain<B: Backend>(store: B) {
    let account = id("account-subscribed");
    let last = plant(&store, &account, golden_events()).await;
    plant(
        &store,
        &id("other-1"),
        vec![NewEvent::new("Other", 1, Payload::to_json(&1).unwrap(), meta())],
    )
    .await;
    let mut typed = Subscription::new(store.clone()).typed::<AccountEvent>();
    let mut delivered = Vec::new();
    while typed.position() < last {
        let batch = tokio::time::timeout(PATIENCE, typed.next_batch()).await.unwrap().unwrap();
        delivered.extend(batch.events.into_iter().map(Result::unwrap));
    }
    let events: Vec<AccountEvent> = delivered.iter().map(|d| d.event.clone()).collect();
    assert_eq!(events, expected());
    // Entries by stored event: the parts of a split share its id, version and position.
    let mut by_stored: BTreeMap<(GlobalPosition, StreamVersion, EventId), usize> = BTreeMap::new();
    for d in &delivered {
        assert_eq!(d.recorded.stream_id, account);
        let key = (d.recorded.position, d.recorded.version, d.recorded.event_id());
        *by_stored.entry(key).or_default() += 1;
    }
    let versions: Vec<(u64, usize)> =
        by_stored.iter().map(|((_, v, _), n)| (v.get(), *n)).collect();
    let want: Vec<(u64, usize)> = (1..).zip(PARTS).filter(|(_, n)| *n > 0).collect();
    assert_eq!(versions, want);
    // The v1 events came in under the former name.
    assert_eq!(&*delivered[0].recorded.event_type, "BankAccount");
}

/// What a projection saw: per stored position, the events it read there.
type Seen = Arc<Mutex<BTreeMap<GlobalPosition, Vec<AccountEvent>>>>;

/// Balances per account, from every event the projection decodes (splits applied part by
/// part, drops skipped by the upcaster).
struct Balances {
    seen: Seen,
}

impl<S: ProjectionStore> Projection<S> for Balances {
    type Error = DecodeError;

    fn name(&self) -> &str {
        "golden-balances"
    }

    async fn apply(&mut self, _: &mut S::Tx, event: &RecordedEvent) -> Result<(), DecodeError> {
        if event.stream_id.as_str().starts_with("account-") {
            let parts = event.decode_all::<AccountEvent>()?;
            self.seen.lock().unwrap().insert(event.position, parts.into_iter().collect());
        }
        Ok(())
    }
}

async fn a_projection_reads_old_events_through_the_chain<S: ProjectionStore>(store: S) {
    let account = id("account-projected");
    let last = plant(&store, &account, golden_events()).await;
    let seen = Seen::default();
    let runner = ProjectionRunner::new(store.clone(), Balances { seen: Arc::clone(&seen) })
        .batches(3, Duration::from_millis(20));
    let handle = runner.handle();
    let task = tokio::spawn(runner.run());
    handle.wait_for(last, PATIENCE).await.unwrap();
    task.abort();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.values().map(Vec::len).collect::<Vec<_>>(), PARTS);
    assert_eq!(seen.into_values().flatten().collect::<Vec<_>>(), expected());
}

/// An event written by newer code (schema version 4) or of a type the reader does not know
/// is a typed error naming the event's id, type and version, in commands, reads and typed
/// subscriptions; nothing is skipped and the events around it still read.
async fn future_versions_and_unknown_types_are_typed_errors<B: Backend>(store: B) {
    let future = NewEvent::new(
        "AccountEvent",
        4,
        Payload::from_json_str(r#"{"kind":"Frozen","until":"2030-01-01"}"#).unwrap(),
        meta(),
    );
    let future_id = future.metadata.event_id;
    let mut events = golden_events();
    events.push(future);
    let account = id("account-future");
    let last = plant(&store, &account, events).await;

    // A command.
    let executor = Executor::new(store.clone());
    match executor.execute(&Withdraw { account: account.clone(), cents: 1 }).await {
        Err(ExecuteError::Fold(FoldError::Decode { event_id, source, .. })) => {
            assert_eq!(event_id, future_id);
            assert_eq!(
                source,
                DecodeError::FutureVersion {
                    event_id: future_id,
                    event_type: "AccountEvent".into(),
                    version: 4,
                    newest: 3,
                }
            );
            assert!(source.to_string().contains(&future_id.to_string()), "{source}");
        }
        other => panic!("expected a decode error, got {other:?}"),
    }

    // A read.
    let stream = store.read(std::slice::from_ref(&account)).await.unwrap().remove(0);
    let decoded: Vec<_> =
        stream.events.iter().map(RecordedEvent::decode_all::<AccountEvent>).collect();
    assert!(decoded[..8].iter().all(Result::is_ok));
    assert!(
        matches!(&decoded[8], Err(DecodeError::FutureVersion { event_id, version: 4, .. }) if *event_id == future_id)
    );

    // A typed subscription: the events before it, then an entry naming it.
    let mut typed = Subscription::new(store.clone()).typed::<AccountEvent>();
    let mut delivered = Vec::new();
    while typed.position() < last {
        let batch = tokio::time::timeout(PATIENCE, typed.next_batch()).await.unwrap().unwrap();
        delivered.extend(batch.events);
    }
    let (good, bad): (Vec<_>, Vec<_>) = delivered.into_iter().partition(Result::is_ok);
    assert_eq!(good.len(), expected().len());
    let bad: Vec<UnreadableEvent> = bad.into_iter().map(Result::unwrap_err).collect();
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].event_id, Some(future_id));
    assert!(matches!(&bad[0].decode_error, Some(DecodeError::FutureVersion { version: 4, .. })));

    // A stream holding an event of a type nobody reads as an account event.
    let mystery = NewEvent::new("Mystery", 2, Payload::to_json(&()).unwrap(), meta());
    let mystery_id = mystery.metadata.event_id;
    let odd = id("account-odd");
    plant(&store, &odd, vec![mystery]).await;
    match executor.execute(&Withdraw { account: odd, cents: 1 }).await {
        Err(ExecuteError::Fold(FoldError::Decode { source, .. })) => assert_eq!(
            source,
            DecodeError::UnknownType {
                event_id: mystery_id,
                event_type: "Mystery".into(),
                version: 2,
                expected: "AccountEvent",
            }
        ),
        other => panic!("expected a decode error, got {other:?}"),
    }
}

/// Every decode error names the stored event, so that a handler that returns one as it is (a
/// projection's, a process manager's) says which event to look at: an old version nobody
/// reads and a payload that does not fit named only the type.
#[test]
fn a_decode_error_names_the_event_it_could_not_read() {
    #[derive(Debug, Serialize, Deserialize)]
    struct Renamed {
        cents: u64,
    }
    impl Event for Renamed {
        const EVENT_TYPE: &'static str = "Renamed";
        const SCHEMA_VERSION: u32 = 2;
    }
    let stored = |event_type: &str, version: u32, json: &str| {
        let payload = Payload::from_json_str(json).unwrap();
        let new = NewEvent::new(event_type, version, payload, meta());
        let event_id = new.metadata.event_id;
        let at = (StreamVersion::new(1), GlobalPosition::new(7));
        (RecordedEvent::from_new(id("renamed-1"), at.0, at.1, new), event_id)
    };
    let recorded = |version: u32, json: &str| stored("Renamed", version, json);
    let (old, old_id) = recorded(1, r#"{"dollars":1.5}"#);
    let (bad, bad_id) = recorded(2, r#"{"cents":"many"}"#);
    for (event, event_id) in [(old, old_id), (bad, bad_id)] {
        for error in
            [event.decode::<Renamed>().unwrap_err(), event.decode_all::<Renamed>().unwrap_err()]
        {
            let says = error.to_string();
            assert!(says.contains(&event_id.to_string()), "{says}");
            match error {
                DecodeError::UnknownSchemaVersion { event_id: named, version: 1, .. }
                | DecodeError::Malformed { event_id: named, .. } => assert_eq!(named, event_id),
                other => panic!("{other:?}"),
            }
        }
    }
    // The upcaster's own readers name it too.
    let (v1, v1_id) = stored("BankAccount", 1, r#"{"type":"Deposited","amount":"ten"}"#);
    match v1.decode_all::<AccountEvent>() {
        Err(DecodeError::Malformed { event_id, .. }) => assert_eq!(event_id, v1_id),
        other => panic!("{other:?}"),
    }
}

/// One `#[tokio::test]` per body and backend.
macro_rules! on_backend {
    ($make:expr; $($test:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                super::$test($make).await;
            }
        )*
    };
}

macro_rules! evolution_suite {
    ($make:expr) => {
        on_backend!($make;
            commands_fold_old_events_through_the_chain,
            reads_decode_old_events_through_the_chain,
            a_typed_subscription_reads_old_events_through_the_chain,
            a_projection_reads_old_events_through_the_chain,
            future_versions_and_unknown_types_are_typed_errors,
            snapshots_cover_split_events_whole,
        );
    };
}

mod memory {
    evolution_suite!(eventcore::Memory::new());
}

#[cfg(feature = "postgres")]
mod postgres {
    evolution_suite!(crate::postgres_support::fresh_postgres().await);
}

/// A rolling deploy: code that reads `AccountEvent` at schema 2 and code that reads it at
/// schema 1 run at once, with snapshots. The older code must not restore a state the newer
/// code folded from events it cannot read: it finds no snapshot for its schema, reads the
/// stream, and fails on the newer event as it does without snapshots.
mod rolling_deploy {
    use super::*;
    use eventcore::Snapshot;

    #[derive(Default, Serialize, Deserialize, Debug)]
    pub struct Balance {
        pub cents: u64,
    }

    impl Snapshot for Balance {
        const NAME: &'static str = "rolling-balance";
        const VERSION: u32 = 1;
    }

    #[derive(Debug, thiserror::Error)]
    #[error("insufficient: {0}")]
    pub struct Insufficient(pub u64);

    /// One binary's account events, slot, fold and command; `$fee` marks the newer schema.
    macro_rules! code {
        ($module:ident, $version:literal, { $($fee:ident)? }) => {
            pub mod $module {
                use super::*;

                #[derive(Debug, Serialize, Deserialize)]
                pub enum AccountEvent {
                    Deposited { cents: u64 },
                    Withdrawn { cents: u64 $(, $fee: u64)? },
                }

                impl Event for AccountEvent {
                    const EVENT_TYPE: &'static str = "RollingAccountEvent";
                    const SCHEMA_VERSION: u32 = $version;
                }

                eventcore::slot!(pub Account: AccountEvent);

                impl eventcore::Fold<Account> for Balance {
                    fn fold(&mut self, _: &StreamId, e: &AccountEvent) {
                        match e {
                            AccountEvent::Deposited { cents } => self.cents += cents,
                            AccountEvent::Withdrawn { cents, .. } => self.cents -= cents,
                        }
                    }
                }

                #[derive(Command)]
                #[command(state = Balance, error = Insufficient)]
                pub struct Withdraw {
                    #[slot(Account)]
                    pub account: StreamId,
                    pub cents: u64,
                }

                impl Handle for Withdraw {
                    fn handle(
                        &self,
                        state: &Balance,
                        mut d: Decision<Self::Streams>,
                    ) -> Handled<Self> {
                        require!(state.cents >= self.cents, Insufficient(state.cents));
                        d.emit(
                            Account,
                            AccountEvent::Withdrawn { cents: self.cents $(, $fee: 0)? },
                        );
                        Ok(d)
                    }
                }
            }
        };
    }

    code!(old_code, 1, {});
    code!(new_code, 2, { fee });

    #[tokio::test]
    async fn older_code_never_restores_a_snapshot_folded_from_newer_events() {
        let store = Memory::new();
        let account = id("rolling-1");
        let payload = |json: &str| Payload::from_json_str(json).unwrap();
        let deposit = NewEvent::new(
            "RollingAccountEvent",
            2,
            payload(r#"{"Deposited":{"cents":100}}"#),
            meta(),
        );
        let withdrawn = NewEvent::new(
            "RollingAccountEvent",
            2,
            payload(r#"{"Withdrawn":{"cents":10,"fee":1}}"#),
            meta(),
        );
        let last = withdrawn.metadata.event_id;
        plant(&store, &account, vec![deposit, withdrawn]).await;
        let old = old_code::Withdraw { account: account.clone(), cents: 5 };
        let new = new_code::Withdraw { account: account.clone(), cents: 5 };
        // What the newer binary stores after folding its own events.
        let state = Balance { cents: 89 };
        older_code_fails_rather_than_restore(&store, &old, &new, (&account, last), &state).await;
    }
}

/// A rolling deploy where the newer release added a variant and kept the schema version (the
/// mistake the book warns of): the derived fingerprints of the two definitions still keep
/// their command snapshots apart, so the older code, which cannot read the new variant, does
/// not restore the state the newer code folded from it. It reads the stream and fails on the
/// event, as it does without snapshots, instead of letting money leave a frozen account.
mod new_variant_same_version {
    use super::*;
    use eventcore::{Slot, Snapshot};

    #[derive(Default, Serialize, Deserialize, Debug)]
    pub struct Balance {
        pub cents: u64,
        #[serde(default)]
        pub frozen: bool,
    }

    impl Snapshot for Balance {
        const NAME: &'static str = "frozen-balance";
        const VERSION: u32 = 1;
    }

    #[derive(Debug, thiserror::Error)]
    #[error("refused: {0}")]
    pub struct Refused(pub &'static str);

    /// One release's account events, slot (at the one path both releases declare it under),
    /// fold and command; `$frozen` is the variant the newer release added.
    macro_rules! release {
        ($module:ident, { $($frozen:ident)? }) => {
            pub mod $module {
                use super::*;

                #[derive(Debug, Serialize, Deserialize, Event)]
                #[event(name = "FrozenAccountEvent")]
                pub enum AccountEvent {
                    Deposited { cents: u64 },
                    Withdrawn { cents: u64 },
                    $($frozen,)?
                }

                /// Declared by hand so that both releases' slots have the one path a real
                /// module would give them.
                pub struct Account;
                impl Slot for Account {
                    type Event = AccountEvent;
                    type Key = StreamId;
                    const PATH: &'static str = "bank::Account";
                }

                impl eventcore::Fold<Account> for Balance {
                    fn fold(&mut self, _: &StreamId, e: &AccountEvent) {
                        match e {
                            AccountEvent::Deposited { cents } => self.cents += cents,
                            AccountEvent::Withdrawn { cents } => self.cents -= cents,
                            $(AccountEvent::$frozen => self.frozen = true,)?
                        }
                    }
                }

                #[derive(Command)]
                #[command(state = Balance, error = Refused)]
                pub struct Withdraw {
                    #[slot(Account)]
                    pub account: StreamId,
                    pub cents: u64,
                }

                impl Handle for Withdraw {
                    fn handle(
                        &self,
                        state: &Balance,
                        mut d: Decision<Self::Streams>,
                    ) -> Handled<Self> {
                        require!(!state.frozen, Refused("frozen"));
                        require!(state.cents >= self.cents, Refused("insufficient"));
                        d.emit(Account, AccountEvent::Withdrawn { cents: self.cents });
                        Ok(d)
                    }
                }
            }
        };
    }

    release!(older, {});
    release!(newer, { Frozen });

    #[tokio::test]
    async fn older_code_never_restores_a_snapshot_folded_from_a_variant_it_does_not_know() {
        use eventcore::Event as _;
        assert_eq!(<older::Account as Slot>::PATH, <newer::Account as Slot>::PATH);
        assert_eq!(older::AccountEvent::SCHEMA_VERSION, newer::AccountEvent::SCHEMA_VERSION);
        let store = Memory::new();
        let account = id("frozen-1");
        let deposit = NewEvent::from_event(&newer::AccountEvent::Deposited { cents: 100 }, meta());
        let frozen = NewEvent::from_event(&newer::AccountEvent::Frozen, meta()).unwrap();
        let last = frozen.metadata.event_id;
        plant(&store, &account, vec![deposit.unwrap(), frozen]).await;
        let old = older::Withdraw { account: account.clone(), cents: 5 };
        let new = newer::Withdraw { account: account.clone(), cents: 5 };
        // What the newer release stores after folding the stream, which it then refuses to
        // withdraw from.
        let state = Balance { cents: 100, frozen: true };
        older_code_fails_rather_than_restore(&store, &old, &new, (&account, last), &state).await;
        let read = store.read(std::slice::from_ref(&account)).await.unwrap();
        assert_eq!(read[0].events.len(), 2, "money left a frozen account");
    }
}

/// An upcaster that splits an old event into exactly one (what an `and_then` chain, or a split
/// built at run time, can give) reads as that one event with `decode`, not as "not one".
mod split_into_one {
    use super::*;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Now(u64);

    /// Version 1: a list of numbers, split into one event each.
    #[derive(Deserialize)]
    struct Then(Vec<u64>);

    impl Shape<Now> for Then {
        const VERSION: u32 = 1;
        fn upcast(self) -> Upcast<Now> {
            Upcast::Split(self.0.into_iter().map(Now).collect())
        }
    }

    impl Event for Now {
        const EVENT_TYPE: &'static str = "SplitIntoOneNow";
        const SCHEMA_VERSION: u32 = 2;
        fn upcast(stored: Stored<'_, Self>) -> Result<Upcast<Self>, DecodeError> {
            stored.upcast_with::<(Then,)>()
        }
    }

    fn stored(json: &str) -> RecordedEvent {
        let payload = Payload::from_json_str(json).unwrap();
        let new = NewEvent::new("SplitIntoOneNow", 1, payload, meta());
        RecordedEvent::from_new(id("split-1"), StreamVersion::new(1), GlobalPosition::new(1), new)
    }

    #[test]
    fn a_split_into_one_event_decodes_as_that_event() {
        assert_eq!(stored("[7]").decode::<Now>(), Ok(Now(7)));
        assert!(matches!(
            stored("[7, 8]").decode::<Now>(),
            Err(DecodeError::NotOne { count: 2, .. })
        ));
        assert!(matches!(stored("[]").decode::<Now>(), Err(DecodeError::NotOne { count: 0, .. })));
    }
}

/// A former name stays taken: a typed subscription reading `Renamed`, whose former name another
/// type in the process stores its events under now, would read that type's events as old
/// `Renamed` ones (here they even parse). It answers the clash instead, as the executor does
/// for a command using both.
mod former_name_taken {
    use super::*;
    use eventcore::backend::StoreError;

    /// Stored today under the name `Renamed` had before.
    #[derive(Debug, Serialize, Deserialize)]
    pub struct Reused {
        cents: u64,
    }

    impl Event for Reused {
        const EVENT_TYPE: &'static str = "FormerNameTakenLegacy";
    }

    #[derive(Debug, Serialize, Deserialize)]
    struct Renamed {
        cents: u64,
    }

    impl Event for Renamed {
        const EVENT_TYPE: &'static str = "FormerNameTakenRenamed";
        const FORMER_TYPES: &'static [&'static str] = &["FormerNameTakenLegacy"];
    }

    slot!(Ledger: Reused);

    #[derive(Default)]
    struct Nothing;

    impl Fold<Ledger> for Nothing {
        fn fold(&mut self, _: &StreamId, _: &Reused) {}
    }

    #[derive(Debug, thiserror::Error)]
    #[error("never")]
    struct Never;

    struct Record(StreamId);

    impl Command for Record {
        type Streams = Streams![Ledger];
        type State = Nothing;
        type Error = Never;
        type Continuation = NoDiscovery;

        fn streams(&self) -> Bindings<Self::Streams> {
            hlist![Ledger::bind(self.0.clone())]
        }
    }

    impl Handle for Record {
        fn handle(&self, _: &Nothing, mut decision: Decision<Self::Streams>) -> Handled<Self> {
            decision.emit(Ledger, Reused { cents: 7 });
            Ok(decision)
        }
    }

    #[tokio::test]
    async fn a_typed_subscription_refuses_a_former_name_another_type_stores_under() {
        let store = Memory::new();
        Executor::new(store.clone()).execute(&Record(id("former-taken-1"))).await.unwrap();
        let mut renamed = Subscription::new(store).typed::<Renamed>();
        let batch = tokio::time::timeout(PATIENCE, renamed.next_batch()).await.unwrap();
        match batch {
            Err(StoreError::InvalidFilter(e)) => {
                assert!(e.to_string().contains("FormerNameTakenLegacy"), "{e}");
            }
            other => panic!("read another type's events as its own: {other:?}"),
        }
    }
}
