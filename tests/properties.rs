//! Property tests of the store's promises, on random runs of banking commands (some steps
//! concurrent, some commands hit by injected faults), on the memory backend and on
//! PostgreSQL (a fresh schema per run):
//!
//! - per-stream versions start at 1 and increase by 1, with no gaps, and the log agrees;
//! - stored events never change, nor disappear;
//! - an append lands whole or not at all, also when the store refuses it before it commits,
//!   when its reply is lost after it committed, or when reads fail, and what the executor
//!   answers agrees with what was stored;
//! - a command with an idempotency key appends at most once, however often it is sent again
//!   and whatever replies are lost, and every later execution answers with the first one's
//!   result.
//!
//! Every command runs as if in a process of its own ([`Process`]: a stream queue of its own,
//! so commands of a concurrent step race to the store instead of taking turns; its first read
//! waits until every command of the step has read, so that they decide on the same versions).
//! A [`Faulty`] in front of it loses the replies of the command's next committed appends or
//! fails its next reads, and the [`Process`] refuses its next appends before they reach the
//! store. Faults are planned per command, not per append number, so they hit the same commands
//! when a run is replayed; which command wins a race is up to timing, and the properties must
//! hold whichever does.
//!
//! Runs come from a fixed seed (`PROPTEST_RNG_SEED` overrides it) and shrink on failure;
//! `PROPTEST_CASES` overrides their number. Each test counts what its runs reached and fails
//! when they missed what its property is about (lost replies, conflicts, replays...).

#[path = "../examples/banking/domain.rs"]
mod banking;
#[cfg(feature = "postgres")]
#[path = "support/postgres.rs"]
mod postgres_support;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use banking::{AccountId, BankError, Deposit, Money, OpenAccount, Transfer, TransferId, Withdraw};
use eventcore::backend::{
    AppendRequest, Committed, IdempotencyKey, LogFilter, LogPage, LogWatch, StoreError,
    StreamEvents, StreamHold, StreamQueue,
};
use eventcore::prelude::*;
use eventcore::testing::{
    Faulty,
    sequences::{Coverage, Step, kinds, sequences},
};
use eventcore::{EventId, Executed, GlobalPosition, RecordedEvent};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use tokio::sync::Barrier;

/// The seed of the runs, unless `PROPTEST_RNG_SEED` says otherwise.
const SEED: u64 = 0x00ec_0b0b;
/// Runs per test, unless `PROPTEST_CASES` says otherwise.
const CASES: u32 = 32;

const ACCOUNTS: usize = 3;
const TRANSFERS: usize = 4;
const DEPOSIT_KEYS: usize = 4;

/// A banking command, as generated.
#[derive(Debug, Clone)]
enum Op {
    Open {
        account: usize,
    },
    Deposit {
        account: usize,
        cents: u64,
    },
    Withdraw {
        account: usize,
        cents: u64,
    },
    /// Keyed by what it does (its id, accounts and amount, as the banking example keys it).
    Transfer {
        id: usize,
        from: usize,
        offset: usize,
        cents: u64,
    },
    /// A deposit with the idempotency key `deposit-{key}`: the same key drawn again is the
    /// same request sent again (possibly with other contents, which must not apply).
    KeyedDeposit {
        key: usize,
        account: usize,
        cents: u64,
    },
}

/// A command and the faults planned for its execution.
#[derive(Debug, Clone)]
struct Planned {
    op: Op,
    /// Its next reads fail (the executor retries reads).
    fail_reads: usize,
    /// Its next appends are refused before they reach the store.
    refuse_appends: usize,
    /// Its next appends that commit report a dropped connection instead.
    lose_replies: usize,
}

fn planned() -> impl Strategy<Value = Planned> + Clone {
    let account = || 0..ACCOUNTS;
    let ops = kinds::<Op>()
        .kind(2, account().prop_map(|account| Op::Open { account }))
        .kind(
            3,
            (account(), 1..=300u64).prop_map(|(account, cents)| Op::Deposit { account, cents }),
        )
        .kind(
            1,
            (account(), 1..=300u64).prop_map(|(account, cents)| Op::Withdraw { account, cents }),
        )
        .kind(
            4,
            (0..TRANSFERS, account(), 1..ACCOUNTS, 1..=200u64)
                .prop_map(|(id, from, offset, cents)| Op::Transfer { id, from, offset, cents }),
        )
        .kind(
            3,
            (0..DEPOSIT_KEYS, account(), 1..=300u64)
                .prop_map(|(key, account, cents)| Op::KeyedDeposit { key, account, cents }),
        );
    let faults = prop_oneof![
        5 => Just((0, 0, 0)),
        1 => Just((1, 0, 0)),
        1 => Just((0, 1, 0)),
        2 => (1..=2usize).prop_map(|n| (0, 0, n)),
        1 => Just((0, 1, 1)),
    ];
    (ops, faults).prop_map(|(op, (fail_reads, refuse_appends, lose_replies))| Planned {
        op,
        fail_reads,
        refuse_appends,
        lose_replies,
    })
}

/// A command with an idempotency key of the test's choosing.
struct Keyed<C> {
    command: C,
    key: IdempotencyKey,
}

impl<C: Command> Command for Keyed<C> {
    type Streams = C::Streams;
    type State = C::State;
    type Error = C::Error;
    type Continuation = C::Continuation;

    fn streams(&self) -> Bindings<Self::Streams> {
        self.command.streams()
    }

    fn idempotency_key(&self) -> Option<IdempotencyKey> {
        Some(self.key.clone())
    }
}

impl<C: Handle> Handle for Keyed<C> {
    fn handle(&self, state: &Self::State, decision: Decision<Self::Streams>) -> Handled<Self> {
        self.command.handle(state, decision)
    }
}

fn account(n: usize) -> AccountId {
    AccountId::try_new(&format!("a{n}")).unwrap()
}

/// Executes the command `op` describes; answers the idempotency key it carried, and how it
/// ended.
async fn execute<B: Backend>(
    executor: &Executor<B>,
    op: &Op,
) -> (Option<IdempotencyKey>, Result<Executed, ExecuteError<BankError>>) {
    async fn run<B: Backend, C: Handle<Error = BankError>>(
        executor: &Executor<B>,
        command: C,
    ) -> (Option<IdempotencyKey>, Result<Executed, ExecuteError<BankError>>) {
        (command.idempotency_key(), executor.execute(&command).await)
    }
    match op.clone() {
        Op::Open { account: a } => {
            run(executor, OpenAccount { account: account(a), owner: format!("owner {a}") }).await
        }
        Op::Deposit { account: a, cents } => {
            run(executor, Deposit { account: account(a), amount: Money::from_cents(cents) }).await
        }
        Op::Withdraw { account: a, cents } => {
            run(executor, Withdraw { account: account(a), amount: Money::from_cents(cents) }).await
        }
        Op::Transfer { id, from, offset, cents } => {
            let transfer = Transfer::new(
                TransferId::try_new(&format!("t{id}")).unwrap(),
                account(from),
                account((from + offset) % ACCOUNTS),
                Money::from_cents(cents),
            );
            match transfer {
                Ok(transfer) => run(executor, transfer).await,
                Err(e) => (None, Err(ExecuteError::Rejected(e))),
            }
        }
        Op::KeyedDeposit { key, account: a, cents } => {
            let command = Deposit { account: account(a), amount: Money::from_cents(cents) };
            let key = IdempotencyKey::try_new(format!("deposit-{key}")).unwrap();
            run(executor, Keyed { command, key }).await
        }
    }
}

/// An append that reached a [`Process`], and what became of it there.
#[derive(Debug, Clone)]
struct Sent {
    /// The ids of its events, with their streams.
    events: Vec<(StreamId, EventId)>,
    key: Option<IdempotencyKey>,
    /// Refused before it reached the store.
    refused: bool,
    /// The store's answer (before any reply was lost above it).
    answer: Result<Committed, String>,
}

impl Sent {
    /// The store committed its events now (not a replay of an earlier append's).
    fn committed(&self) -> Option<&Committed> {
        self.answer.as_ref().ok().filter(|c| !c.replayed && c.positions.is_some())
    }

    fn conflicted(&self) -> bool {
        self.answer.as_ref().is_err_and(|e| e.starts_with("conflict"))
    }
}

/// One command's view of the store, as if it ran in a process of its own: a stream queue of
/// its own; it refuses its next appends before they reach the store, on request, and records
/// every append that reaches it. Its first read waits at the step's barrier until every
/// command of the step has read, so that commands of a concurrent step decide on the same
/// versions and race at the append.
#[derive(Clone)]
struct Process<B> {
    inner: B,
    queue: Arc<StreamQueue>,
    refuse: Arc<Mutex<usize>>,
    sent: Arc<Mutex<Vec<Sent>>>,
    first_read: Arc<Mutex<Option<Arc<Barrier>>>>,
}

impl<B: Backend> Process<B> {
    fn new(inner: B, refuse_appends: usize, step: Arc<Barrier>) -> Self {
        Self {
            inner,
            queue: Arc::default(),
            refuse: Arc::new(Mutex::new(refuse_appends)),
            sent: Arc::default(),
            first_read: Arc::new(Mutex::new(Some(step))),
        }
    }

    fn sent(&self) -> Vec<Sent> {
        self.sent.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl<B: Backend> Backend for Process<B> {
    async fn read(&self, streams: &[StreamId]) -> Result<Vec<StreamEvents>, StoreError> {
        let read = self.inner.read(streams).await;
        let barrier = self.first_read.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(barrier) = barrier {
            barrier.wait().await;
        }
        read
    }

    async fn append(&self, request: AppendRequest) -> Result<Committed, StoreError> {
        let events = request
            .writes
            .iter()
            .flat_map(|(stream, events)| {
                events.iter().map(|e| (stream.clone(), e.metadata.event_id))
            })
            .collect();
        let key = request.idempotency_key.clone();
        let refused = {
            let mut left = self.refuse.lock().unwrap_or_else(PoisonError::into_inner);
            let refused = *left > 0;
            *left = left.saturating_sub(1);
            refused
        };
        let result = if refused {
            Err(StoreError::Unavailable("injected fault: append refused before the store".into()))
        } else {
            self.inner.append(request).await
        };
        let answer = match &result {
            Ok(committed) => Ok(committed.clone()),
            Err(StoreError::Conflict(c)) => Err(format!("conflict: {c}")),
            Err(e) => Err(e.to_string()),
        };
        self.sent.lock().unwrap_or_else(PoisonError::into_inner).push(Sent {
            events,
            key,
            refused,
            answer,
        });
        result
    }

    async fn read_log(
        &self,
        after: GlobalPosition,
        filter: &LogFilter,
        limit: usize,
    ) -> Result<LogPage, StoreError> {
        self.inner.read_log(after, filter, limit).await
    }

    fn watch_log(&self) -> LogWatch {
        self.inner.watch_log()
    }

    async fn find_committed(&self, key: &IdempotencyKey) -> Result<Option<Committed>, StoreError> {
        self.inner.find_committed(key).await
    }

    fn stream_queue(&self) -> &StreamQueue {
        &self.queue
    }

    async fn hold(&self, streams: &[StreamId]) -> Result<Option<StreamHold>, StoreError> {
        self.inner.hold(streams).await
    }
}

/// One command's execution in a run.
#[derive(Debug)]
struct Ran {
    step: usize,
    planned: Planned,
    key: Option<IdempotencyKey>,
    result: Result<Executed, String>,
    /// Whether it was rejected by the domain.
    rejected: bool,
    sent: Vec<Sent>,
}

/// What the store held after a step: the log in global order, and each stream read alone.
#[derive(Debug)]
struct Snapshot {
    log: Vec<RecordedEvent>,
    streams: Vec<StreamEvents>,
}

/// What a run did and left.
#[derive(Debug)]
struct Record {
    ran: Vec<Ran>,
    /// After each step.
    snapshots: Vec<Snapshot>,
    concurrent_steps: usize,
}

async fn snapshot<B: Backend>(store: &B) -> Snapshot {
    let mut log: Vec<RecordedEvent> = Vec::new();
    let mut after = GlobalPosition::START;
    loop {
        let page = store.read_all(after, 500).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.position;
        log.extend(page);
    }
    let mut ids: Vec<StreamId> = log.iter().map(|e| e.stream_id.clone()).collect();
    ids.sort();
    ids.dedup();
    let streams = store.read(&ids).await.unwrap();
    Snapshot { log, streams }
}

/// Every run starts with two open accounts, one of them funded (the third is opened, or not,
/// by the run).
fn prelude() -> Vec<Step<Planned>> {
    let planned = |op| Planned { op, fail_reads: 0, refuse_appends: 0, lose_replies: 0 };
    vec![
        Step::together(vec![planned(Op::Open { account: 0 }), planned(Op::Open { account: 1 })]),
        Step::alone(planned(Op::Deposit { account: 0, cents: 500 })),
    ]
}

async fn run<B: Backend>(store: B, steps: &[Step<Planned>]) -> Record {
    let steps = &[prelude(), steps.to_vec()].concat();
    let retry = RetryPolicy::builder()
        .max_attempts(8)
        .base_delay(Duration::from_micros(50))
        .max_delay(Duration::from_millis(2))
        .build()
        .unwrap();
    let mut ran = Vec::new();
    let mut snapshots = Vec::new();
    for (index, step) in steps.iter().enumerate() {
        let mut tasks = tokio::task::JoinSet::new();
        let barrier = Arc::new(Barrier::new(step.commands().len()));
        for (i, planned) in step.commands().iter().cloned().enumerate() {
            let process = Process::new(store.clone(), planned.refuse_appends, barrier.clone());
            let faulty = Faulty::new(process.clone());
            faulty.fail_next_reads(planned.fail_reads);
            faulty.lose_next_append_replies(planned.lose_replies);
            let executor = Executor::new(faulty).with_retry(retry);
            tasks.spawn(async move {
                let (key, result) = execute(&executor, &planned.op).await;
                let rejected = matches!(result, Err(ExecuteError::Rejected(_)));
                let result = result.map_err(|e| format!("{e:?}"));
                (i, Ran { step: index, planned, key, result, rejected, sent: process.sent() })
            });
        }
        let mut ended = tokio::time::timeout(Duration::from_secs(60), tasks.join_all())
            .await
            .unwrap_or_else(|_| panic!("step {step:?} did not finish within a minute"));
        ended.sort_by_key(|(i, _)| *i);
        ran.extend(ended.into_iter().map(|(_, ran)| ran));
        snapshots.push(snapshot(&store).await);
    }
    Record { ran, snapshots, concurrent_steps: steps.iter().filter(|s| s.is_concurrent()).count() }
}

// ---- The properties -------------------------------------------------------------------------

/// After every step: each stream's versions are 1, 2, 3... with rising positions, its
/// version is its last event's, and its events are the log's events of that stream, in the
/// same order; the log's positions rise.
fn versions_are_gapless(record: &Record, coverage: &Coverage) -> Result<(), TestCaseError> {
    for (step, snapshot) in record.snapshots.iter().enumerate() {
        let positions: Vec<u64> = snapshot.log.iter().map(|e| e.position.get()).collect();
        prop_assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "after step {step}, the log's positions do not rise: {positions:?}"
        );
        for stream in &snapshot.streams {
            let versions: Vec<u64> = stream.events.iter().map(|e| e.version.get()).collect();
            let expected: Vec<u64> = (1..=versions.len() as u64).collect();
            prop_assert_eq!(
                &versions,
                &expected,
                "after step {}, stream `{}`",
                step,
                stream.stream_id
            );
            prop_assert_eq!(stream.version.get(), versions.len() as u64);
            let in_log: Vec<&RecordedEvent> =
                snapshot.log.iter().filter(|e| e.stream_id == stream.stream_id).collect();
            let read: Vec<&RecordedEvent> = stream.events.iter().collect();
            prop_assert_eq!(
                read,
                in_log,
                "after step {}, stream `{}` read alone",
                step,
                stream.stream_id
            );
        }
    }
    count_common(record, coverage);
    Ok(())
}

/// An event once stored stays, with the same stream, version, position, type, payload and
/// metadata, through every later step (faults and races included).
fn stored_events_never_change(record: &Record, coverage: &Coverage) -> Result<(), TestCaseError> {
    for (step, pair) in record.snapshots.windows(2).enumerate() {
        let later: HashMap<EventId, &RecordedEvent> =
            pair[1].log.iter().map(|e| (e.event_id(), e)).collect();
        for event in &pair[0].log {
            match later.get(&event.event_id()) {
                Some(now) => prop_assert_eq!(*now, event, "changed in step {}", step + 1),
                None => {
                    return Err(TestCaseError::fail(format!(
                        "event {event:?} disappeared in step {}",
                        step + 1
                    )));
                }
            }
        }
        coverage.add("event kept across a step", pair[0].log.len() as u64);
    }
    count_common(record, coverage);
    Ok(())
}

/// Every append that reached the store is stored whole or not at all: all of its events when
/// the store committed it, none when it refused it (a conflict, an injected refusal). Nothing
/// else is stored. And the executor's answer agrees: a command that reports a commit
/// committed exactly what it reports; one that reports a failure after its append committed
/// had its reply lost.
fn appends_are_atomic(record: &Record, coverage: &Coverage) -> Result<(), TestCaseError> {
    let Some(last) = record.snapshots.last() else { return Ok(()) };
    let stored: HashMap<EventId, &RecordedEvent> =
        last.log.iter().map(|e| (e.event_id(), e)).collect();
    for (n, ran) in record.ran.iter().enumerate() {
        for sent in &ran.sent {
            let landed = sent.events.iter().filter(|(_, id)| stored.contains_key(id)).count();
            let expected = if sent.committed().is_some() { sent.events.len() } else { 0 };
            prop_assert_eq!(
                landed,
                expected,
                "command #{} ({:?}): {} of the {} events of an append landed, answered {:?}",
                n,
                ran.planned,
                landed,
                sent.events.len(),
                sent.answer
            );
            for (stream, id) in &sent.events {
                if let Some(event) = stored.get(id) {
                    prop_assert_eq!(&event.stream_id, stream);
                }
            }
            if sent.committed().is_some() {
                let streams: BTreeSet<&StreamId> = sent.events.iter().map(|(s, _)| s).collect();
                if streams.len() > 1 {
                    coverage.count("multi-stream append committed");
                }
                if ran.planned.lose_replies > 0 {
                    coverage.count("reply lost after commit");
                }
            }
            if sent.refused {
                coverage.count("append refused before the store");
            }
        }
        let committed: Vec<&Committed> = ran.sent.iter().filter_map(Sent::committed).collect();
        match &ran.result {
            Ok(done) if done.committed.positions.is_some() && !done.committed.replayed => {
                prop_assert_eq!(
                    committed.last().copied(),
                    Some(&done.committed),
                    "command #{} reports a commit its last append did not make",
                    n
                );
            }
            Ok(_) => {}
            Err(error) if !committed.is_empty() => {
                prop_assert!(
                    ran.planned.lose_replies > 0,
                    "command #{} ({:?}) failed ({}) although its append committed, and no \
                     reply of it was lost",
                    n,
                    ran.planned,
                    error
                );
                coverage.count("failure reported for a commit whose reply was lost");
            }
            Err(_) => {}
        }
        if ran.planned.fail_reads > 0 && ran.result.is_ok() {
            coverage.count("committed after a failed read");
        }
    }
    let all_sent: HashSet<EventId> = record
        .ran
        .iter()
        .flat_map(|r| &r.sent)
        .flat_map(|s| s.events.iter().map(|(_, id)| *id))
        .collect();
    for event in &last.log {
        prop_assert!(
            all_sent.contains(&event.event_id()),
            "stored event {:?} was never sent",
            event
        );
    }
    count_common(record, coverage);
    Ok(())
}

/// For every idempotency key, at most one append carrying it commits, however many times
/// commands with it run and whatever replies are lost; every command with the key that
/// reports success reports that append (marked replayed unless it made it and heard so); and
/// a command sent again after its key committed in an earlier step is never rejected.
fn keyed_commands_apply_once(record: &Record, coverage: &Coverage) -> Result<(), TestCaseError> {
    let mut commits: BTreeMap<IdempotencyKey, (usize, usize, Committed)> = BTreeMap::new();
    for (n, ran) in record.ran.iter().enumerate() {
        for sent in &ran.sent {
            let (Some(key), Some(committed)) = (&sent.key, sent.committed()) else { continue };
            if let Some((first, _, _)) = commits.get(key) {
                return Err(TestCaseError::fail(format!(
                    "key `{key}` committed twice: by command #{first} and by #{n} ({:?})",
                    ran.planned
                )));
            }
            commits.insert(key.clone(), (n, ran.step, committed.clone()));
        }
    }
    let mut runs_per_key: BTreeMap<&IdempotencyKey, usize> = BTreeMap::new();
    for (n, ran) in record.ran.iter().enumerate() {
        let Some(key) = &ran.key else { continue };
        *runs_per_key.entry(key).or_default() += 1;
        let commit = commits.get(key);
        match (&ran.result, commit) {
            (Ok(done), Some((by, _, committed))) => {
                prop_assert_eq!(
                    (&done.committed.streams, done.committed.positions),
                    (&committed.streams, committed.positions),
                    "command #{} ({:?}) answers another result than the commit of its key by #{}",
                    n,
                    ran.planned,
                    by
                );
                let heard = *by == n
                    && ran.sent.last().and_then(Sent::committed).is_some()
                    && ran.planned.lose_replies == 0;
                if heard {
                    prop_assert!(
                        !done.committed.replayed,
                        "command #{} made the commit of its key and heard so, yet reports a replay",
                        n
                    );
                } else {
                    prop_assert!(
                        done.committed.replayed,
                        "command #{} answers the commit of #{} without marking it replayed",
                        n,
                        by
                    );
                    coverage.count(if *by == n {
                        "own commit replayed after a lost reply"
                    } else {
                        "earlier commit replayed"
                    });
                }
            }
            (Ok(done), None) => prop_assert!(
                done.committed.positions.is_none(),
                "command #{} reports a commit of key `{}`, which never committed: {:?}",
                n,
                key,
                ran
            ),
            (Err(error), Some((by, step, _))) if ran.rejected && *step < ran.step => {
                return Err(TestCaseError::fail(format!(
                    "command #{n} ({:?}) was rejected ({error}) although its key committed \
                     in an earlier step, by #{by}",
                    ran.planned
                )));
            }
            (Err(_), _) => {}
        }
    }
    if runs_per_key.values().any(|&n| n > 1) {
        coverage.count("key sent more than once");
    }
    count_common(record, coverage);
    Ok(())
}

/// Counts what every property wants its runs to have reached.
fn count_common(record: &Record, coverage: &Coverage) {
    coverage.count("run");
    coverage.add("concurrent step", record.concurrent_steps as u64);
    for ran in &record.ran {
        let conflicts = ran.sent.iter().filter(|s| s.conflicted()).count() as u64;
        coverage.add("conflict", conflicts);
        if ran.rejected {
            coverage.count("rejection");
        }
    }
}

// ---- Running them ---------------------------------------------------------------------------

type Property = fn(&Record, &Coverage) -> Result<(), TestCaseError>;

fn config() -> Config {
    let mut config = Config { failure_persistence: None, ..Config::default() };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = CASES;
    }
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = RngSeed::Fixed(SEED);
    }
    config
}

/// Where runs get a fresh store of their own, and what is done with it after.
trait Stores {
    type Store: Backend;
    async fn fresh(&self) -> Self::Store;
    async fn dispose(&self, store: Self::Store);
}

struct InMemory;

impl Stores for InMemory {
    type Store = Memory;

    async fn fresh(&self) -> Memory {
        Memory::new()
    }

    async fn dispose(&self, _: Memory) {}
}

#[cfg(feature = "postgres")]
struct OnPostgres;

#[cfg(feature = "postgres")]
impl Stores for OnPostgres {
    type Store = eventcore::backend::postgres::Postgres;

    async fn fresh(&self) -> Self::Store {
        postgres_support::fresh_postgres().await
    }

    /// Drops the run's schema.
    async fn dispose(&self, store: Self::Store) {
        let sql = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", store.schema().as_str());
        sqlx::raw_sql(&sql).execute(store.pool()).await.unwrap();
        store.pool().close().await;
    }
}

/// Checks `property` on random runs, each on a fresh store; then that the runs reached each
/// of `required`.
#[track_caller]
fn check<S: Stores>(stores: &S, property: Property, required: &[&str]) {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let coverage = Coverage::new();
    let strategy = sequences(planned()).steps(5..=30).concurrency(2..=4).concurrent_one_in(3);
    let mut runner = TestRunner::new(config());
    let result = runner.run(&strategy, |steps| {
        runtime.block_on(async {
            let store = stores.fresh().await;
            let record = run(store.clone(), &steps).await;
            stores.dispose(store).await;
            property(&record, &coverage)
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    println!("what the runs reached: {:?}", coverage.counts());
    coverage.require(required);
}

/// One test per property and backend: `memory::name` and `postgres::name`.
macro_rules! properties {
    ($($name:ident requires [$($what:literal),* $(,)?];)*) => {
        mod memory {
            $(
                #[test]
                fn $name() {
                    super::check(&super::InMemory, super::$name, &[$($what),*]);
                }
            )*
        }

        #[cfg(feature = "postgres")]
        mod postgres {
            $(
                #[test]
                fn $name() {
                    super::check(&super::OnPostgres, super::$name, &[$($what),*]);
                }
            )*
        }
    };
}

properties! {
    versions_are_gapless requires ["concurrent step", "conflict", "rejection"];
    stored_events_never_change requires ["event kept across a step", "conflict"];
    appends_are_atomic requires [
        "multi-stream append committed",
        "reply lost after commit",
        "failure reported for a commit whose reply was lost",
        "append refused before the store",
        "committed after a failed read",
        "conflict",
    ];
    keyed_commands_apply_once requires [
        "key sent more than once",
        "earlier commit replayed",
        "own commit replayed after a lost reply",
    ];
}
