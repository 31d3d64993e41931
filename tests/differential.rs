//! Differential test: random runs of banking and e-commerce commands, some steps concurrent,
//! executed on the memory backend and on PostgreSQL (each run in a fresh schema) through an
//! `Executor`, leave the same streams (ids, versions, event types, schema versions, payload
//! bytes, and the same global order; positions themselves differ, gapless in memory and
//! sparse in PostgreSQL) and end with the same outcome for every command: committed (with the
//! versions it reached and the attempts it took), rejected (with which error) or given up
//! after conflicts.
//!
//! Concurrent steps are made deterministic by [`Lockstep`]. Each command of a step runs as if
//! in a process of its own, with a stream queue of its own (commands of one process over the
//! same streams would take turns instead of racing). The commands read and decide freely, but
//! their appends are held until every command of the step still running has either reached
//! its append or finished; the held appends then go to the store one after the other, in the
//! order the commands were generated, and only when all of them are answered do the commands
//! go on: the losers retry from a fresh read and meet again in the next round. So a concurrent
//! step is a real race (commands that read the same streams decide on the same versions, and
//! all but the first to append conflict) whose result does not depend on thread timing, and
//! both backends must resolve it alike.
//!
//! Runs are generated from a fixed seed (`PROPTEST_RNG_SEED` overrides it) and shrink on
//! failure; `PROPTEST_CASES` overrides the number of runs. The test counts what the runs
//! reached and fails when they never had rejections, concurrent conflicts (retried, and given
//! up), commits after a retry, or discovery rounds.
#![cfg(feature = "postgres")]

#[path = "../examples/banking/domain.rs"]
mod banking;
#[path = "../examples/ecommerce/domain.rs"]
mod ecommerce;
#[path = "support/postgres.rs"]
mod postgres_support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use banking::{BankError, Deposit, Money, OpenAccount, Transfer, Withdraw};
use ecommerce::{
    AddProduct, CancelOrder, CommerceError, CustomerId, OrderId, PlaceOrder, Price, ProductId,
    Quantity, Restock,
};
use eventcore::backend::{
    AppendRequest, Committed, IdempotencyKey, LogFilter, LogPage, LogWatch, StoreError,
    StreamEvents, StreamHold, StreamQueue, postgres::Postgres,
};
use eventcore::testing::sequences::{Coverage, Step, kinds, sequences};
use eventcore::{
    Backend, ExecuteError, Executed, Executor, GlobalPosition, Handle, Memory, RetryPolicy,
    StreamId, StreamVersion,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use tokio::sync::oneshot;

/// The seed of the runs, unless `PROPTEST_RNG_SEED` says otherwise.
const SEED: u64 = 0x00ec_d1ff;
/// Runs per test run, unless `PROPTEST_CASES` says otherwise.
const CASES: u32 = 64;

const ACCOUNTS: usize = 3;
const TRANSFERS: usize = 5;
const PRODUCTS: usize = 2;
const ORDERS: usize = 4;
const CUSTOMERS: usize = 2;

/// A command, as generated: small numbers name accounts, products, orders... from small
/// pools, so that commands meet on the same streams.
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
    /// From `from` to the account `offset` places after it (never itself).
    Transfer {
        id: usize,
        from: usize,
        offset: usize,
        cents: u64,
    },
    AddProduct {
        product: usize,
        cents: u64,
    },
    Restock {
        product: usize,
        units: u32,
    },
    PlaceOrder {
        order: usize,
        customer: usize,
        lines: Vec<(usize, u32)>,
    },
    CancelOrder {
        order: usize,
    },
}

fn ops() -> impl Strategy<Value = Op> + Clone {
    let account = || 0..ACCOUNTS;
    let product = || 0..PRODUCTS;
    kinds::<Op>()
        .kind(3, account().prop_map(|account| Op::Open { account }))
        .kind(
            3,
            (account(), 1..=300u64).prop_map(|(account, cents)| Op::Deposit { account, cents }),
        )
        .kind(
            1,
            (account(), 1..=300u64).prop_map(|(account, cents)| Op::Withdraw { account, cents }),
        )
        .kind(
            3,
            (0..TRANSFERS, account(), 1..ACCOUNTS, 1..=200u64)
                .prop_map(|(id, from, offset, cents)| Op::Transfer { id, from, offset, cents }),
        )
        .kind(
            2,
            (product(), 1..=500u64).prop_map(|(product, cents)| Op::AddProduct { product, cents }),
        )
        .kind(3, (product(), 1..=6u32).prop_map(|(product, units)| Op::Restock { product, units }))
        .kind(
            3,
            (0..ORDERS, 0..CUSTOMERS, vec((product(), 1..=2u32), 1..=2))
                .prop_map(|(order, customer, lines)| Op::PlaceOrder { order, customer, lines }),
        )
        .kind(2, (0..ORDERS).prop_map(|order| Op::CancelOrder { order }))
}

/// How a command ended, as compared between the backends.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// Committed (or decided to write nothing): the versions its streams reached, whether the
    /// store replayed an earlier commit for its idempotency key, and the attempts it took.
    Committed {
        streams: Vec<(StreamId, StreamVersion)>,
        replayed: bool,
        attempts: u32,
    },
    Rejected(Rejection),
    /// Conflicts outlasted the retry policy.
    GaveUp {
        attempts: u32,
    },
    /// Anything else: a bug on either side, which fails the run.
    Failed(String),
}

#[derive(Debug, PartialEq)]
enum Rejection {
    Bank(BankError),
    Commerce(CommerceError),
}

impl From<BankError> for Rejection {
    fn from(e: BankError) -> Self {
        Rejection::Bank(e)
    }
}

impl From<CommerceError> for Rejection {
    fn from(e: CommerceError) -> Self {
        Rejection::Commerce(e)
    }
}

fn outcome<E: Into<Rejection> + std::fmt::Debug>(
    result: Result<Executed, ExecuteError<E>>,
) -> Outcome {
    match result {
        Ok(done) => Outcome::Committed {
            streams: done.committed.streams,
            replayed: done.committed.replayed,
            attempts: done.attempts,
        },
        Err(ExecuteError::Rejected(e)) => Outcome::Rejected(e.into()),
        Err(ExecuteError::Conflict { attempts, .. }) => Outcome::GaveUp { attempts },
        Err(e) => Outcome::Failed(format!("{e:?}")),
    }
}

fn name(prefix: &str, n: usize) -> String {
    format!("{prefix}{n}")
}

async fn execute<B: Backend>(executor: &Executor<B>, op: &Op) -> Outcome {
    async fn run<B: Backend, C: Handle>(executor: &Executor<B>, command: C) -> Outcome
    where
        C::Error: Into<Rejection> + std::fmt::Debug,
    {
        outcome(executor.execute(&command).await)
    }
    let account = |n| banking::AccountId::try_new(&name("a", n)).unwrap();
    let product = |n| ProductId::try_new(&name("p", n)).unwrap();
    let order = |n| OrderId::try_new(&name("o", n)).unwrap();
    match op.clone() {
        Op::Open { account: a } => {
            run(executor, OpenAccount { account: account(a), owner: name("owner", a) }).await
        }
        Op::Deposit { account: a, cents } => {
            run(executor, Deposit { account: account(a), amount: Money::from_cents(cents) }).await
        }
        Op::Withdraw { account: a, cents } => {
            run(executor, Withdraw { account: account(a), amount: Money::from_cents(cents) }).await
        }
        Op::Transfer { id, from, offset, cents } => {
            let transfer = Transfer::new(
                banking::TransferId::try_new(&name("t", id)).unwrap(),
                account(from),
                account((from + offset) % ACCOUNTS),
                Money::from_cents(cents),
            );
            match transfer {
                Ok(transfer) => run(executor, transfer).await,
                Err(e) => Outcome::Failed(format!("generated an invalid transfer: {e}")),
            }
        }
        Op::AddProduct { product: p, cents } => {
            let add = AddProduct {
                product: product(p),
                name: name("product ", p),
                price: Price::from_cents(cents),
            };
            run(executor, add).await
        }
        Op::Restock { product: p, units } => {
            run(executor, Restock { product: product(p), quantity: Quantity::new(units) }).await
        }
        Op::PlaceOrder { order: o, customer, lines } => {
            let lines = lines.into_iter().map(|(p, units)| (product(p), Quantity::new(units)));
            let customer = CustomerId::try_new(&name("c", customer)).unwrap();
            match PlaceOrder::new(order(o), customer, lines) {
                Ok(place) => run(executor, place).await,
                Err(e) => Outcome::Failed(format!("generated an invalid order: {e}")),
            }
        }
        Op::CancelOrder { order: o } => run(executor, CancelOrder { order: order(o) }).await,
    }
}

tokio::task_local! {
    /// The index of the command (in the whole run) a backend call is made for.
    static COMMAND: usize;
}

/// A backend wrapper that runs the commands of a step in lockstep rounds (see the file's
/// comment), and records each command's reads and the conflicts the store reported. Clones
/// share the rounds; [`Lockstep::process`] makes one with a stream queue of its own.
#[derive(Clone)]
struct Lockstep<B> {
    inner: B,
    state: Arc<Mutex<Rounds>>,
    queue: Arc<StreamQueue>,
}

type Reply = oneshot::Sender<Result<Committed, StoreError>>;

#[derive(Default)]
struct Rounds {
    /// Commands of the step that have not finished.
    running: usize,
    /// Appends waiting for their round, by command index.
    held: BTreeMap<usize, (AppendRequest, Reply)>,
    /// Every read, with the command it was made for.
    reads: Vec<(usize, Vec<StreamId>)>,
    /// Appends the store answered with a conflict.
    conflicts: u64,
    /// Rounds in which more than one append was held.
    contended_rounds: u64,
}

impl<B: Backend> Lockstep<B> {
    fn new(inner: B) -> Self {
        Self { inner, state: Arc::default(), queue: Arc::default() }
    }

    /// The same store and rounds, seen from a process of its own.
    fn process(&self) -> Self {
        Self { queue: Arc::default(), ..self.clone() }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Rounds> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A step of `commands` commands starts.
    fn begin(&self, commands: usize) {
        let mut state = self.state();
        assert!(state.held.is_empty() && state.running == 0, "a step is still running");
        state.running = commands;
    }

    /// A command of the step has finished; the others may all be waiting for it.
    async fn finished(&self) {
        let round = {
            let mut state = self.state();
            state.running -= 1;
            Self::take_round(&mut state)
        };
        self.release(round).await;
    }

    /// The held appends, when every command still running holds one.
    fn take_round(state: &mut Rounds) -> Vec<(AppendRequest, Reply)> {
        if state.held.is_empty() || state.held.len() < state.running {
            return Vec::new();
        }
        if state.held.len() > 1 {
            state.contended_rounds += 1;
        }
        std::mem::take(&mut state.held).into_values().collect()
    }

    /// Sends the round's appends to the store one by one, in command order; answers them
    /// all once the last one is done, so that no command reads while the round is appending.
    async fn release(&self, round: Vec<(AppendRequest, Reply)>) {
        let mut answers = Vec::with_capacity(round.len());
        for (request, reply) in round {
            let result = self.inner.append(request).await;
            if matches!(result, Err(StoreError::Conflict(_))) {
                self.state().conflicts += 1;
            }
            answers.push((reply, result));
        }
        for (reply, result) in answers {
            // The command waits for its answer unless its execution was dropped.
            let _ = reply.send(result);
        }
    }

    /// How many reads asked for other streams than the command's first read: discovery
    /// rounds (on every attempt).
    fn discovery_reads(&self) -> u64 {
        let state = self.state();
        let mut first: BTreeMap<usize, &Vec<StreamId>> = BTreeMap::new();
        let mut rounds = 0;
        for (command, streams) in &state.reads {
            let first = first.entry(*command).or_insert(streams);
            if *first != streams {
                rounds += 1;
            }
        }
        rounds
    }
}

impl<B: Backend> Backend for Lockstep<B> {
    async fn read(&self, streams: &[StreamId]) -> Result<Vec<StreamEvents>, StoreError> {
        if let Ok(command) = COMMAND.try_with(|c| *c) {
            self.state().reads.push((command, streams.to_vec()));
        }
        self.inner.read(streams).await
    }

    async fn append(&self, request: AppendRequest) -> Result<Committed, StoreError> {
        let Ok(command) = COMMAND.try_with(|c| *c) else {
            return self.inner.append(request).await;
        };
        let (reply, answer) = oneshot::channel();
        let round = {
            let mut state = self.state();
            state.held.insert(command, (request, reply));
            Self::take_round(&mut state)
        };
        self.release(round).await;
        answer.await.unwrap_or_else(|_| Err(StoreError::Other("lockstep round dropped".into())))
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

/// One stored event, as compared: everything but its position and metadata.
#[derive(Debug, Clone, PartialEq)]
struct Stored {
    stream: StreamId,
    version: StreamVersion,
    event_type: String,
    schema_version: u32,
    payload: String,
}

/// What a run left and did.
#[derive(Debug)]
struct Run {
    outcomes: Vec<Outcome>,
    /// The whole log, in global order.
    log: Vec<Stored>,
    /// Each stream read on its own, by id.
    streams: BTreeMap<StreamId, Vec<Stored>>,
    conflicts: u64,
    contended_rounds: u64,
    discovery_reads: u64,
}

/// Runs `steps` on `store`, a fresh one, and reads back everything it holds.
async fn run<B: Backend>(store: B, steps: &[Step<Op>]) -> Run {
    let lockstep = Lockstep::new(store.clone());
    // No backoff: the lockstep rounds decide who goes next, not timing. Two attempts, so that
    // three commands racing for one stream leave one that gives up.
    let retry = RetryPolicy::builder()
        .max_attempts(2)
        .base_delay(Duration::ZERO)
        .max_delay(Duration::ZERO)
        .jitter(false)
        .build()
        .unwrap();
    let executor = |lockstep: Lockstep<B>| Executor::new(lockstep).with_retry(retry);
    let mut outcomes = Vec::new();
    for step in steps {
        lockstep.begin(step.commands().len());
        let mut tasks = tokio::task::JoinSet::new();
        for (i, op) in step.commands().iter().cloned().enumerate() {
            let (executor, index) = (executor(lockstep.process()), outcomes.len() + i);
            tasks.spawn(COMMAND.scope(index, async move {
                let outcome = execute(&executor, &op).await;
                executor.backend().finished().await;
                (index, outcome)
            }));
        }
        // A lockstep bug would leave commands waiting for each other: fail rather than hang.
        let mut ended = tokio::time::timeout(Duration::from_secs(60), tasks.join_all())
            .await
            .unwrap_or_else(|_| panic!("step {step:?} did not finish within a minute"));
        ended.sort_by_key(|(index, _)| *index);
        outcomes.extend(ended.into_iter().map(|(_, outcome)| outcome));
    }

    let mut log = Vec::new();
    let mut after = GlobalPosition::START;
    loop {
        let page = store.read_all(after, 500).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.position;
        log.extend(page.into_iter().map(|e| Stored {
            stream: e.stream_id,
            version: e.version,
            event_type: e.event_type.to_string(),
            schema_version: e.schema_version,
            payload: e.payload.as_str().to_owned(),
        }));
    }
    let ids: Vec<StreamId> = {
        let mut ids: Vec<StreamId> = log.iter().map(|e| e.stream.clone()).collect();
        ids.sort();
        ids.dedup();
        ids
    };
    let streams = store
        .read(&ids)
        .await
        .unwrap()
        .into_iter()
        .map(|read| {
            let events = read
                .events
                .into_iter()
                .map(|e| Stored {
                    stream: e.stream_id,
                    version: e.version,
                    event_type: e.event_type.to_string(),
                    schema_version: e.schema_version,
                    payload: e.payload.as_str().to_owned(),
                })
                .collect();
            (read.stream_id, events)
        })
        .collect();
    let state = lockstep.state();
    Run {
        outcomes,
        log,
        streams,
        conflicts: state.conflicts,
        contended_rounds: state.contended_rounds,
        discovery_reads: {
            drop(state);
            lockstep.discovery_reads()
        },
    }
}

/// The first place two lists differ, shown with its index.
fn first_difference<T: std::fmt::Debug + PartialEq>(
    what: &str,
    memory: &[T],
    postgres: &[T],
) -> Option<String> {
    let at = memory.iter().zip(postgres).position(|(m, p)| m != p);
    match at {
        Some(i) => Some(format!(
            "{what} #{i} differs:\n  memory:   {:?}\n  postgres: {:?}",
            memory[i], postgres[i]
        )),
        None if memory.len() != postgres.len() => Some(format!(
            "{what}: memory has {} entries, postgres {} (first extra: {:?})",
            memory.len(),
            postgres.len(),
            memory.get(postgres.len()).or(postgres.get(memory.len()))
        )),
        None => None,
    }
}

async fn compare(steps: &[Step<Op>], coverage: &Coverage) -> Result<(), TestCaseError> {
    let memory = run(Memory::new(), steps).await;
    let store: Postgres = postgres_support::fresh_postgres().await;
    let postgres = run(store.clone(), steps).await;
    drop_schema(&store).await;

    let failed: Vec<&Outcome> =
        memory.outcomes.iter().filter(|o| matches!(o, Outcome::Failed(_))).collect();
    prop_assert!(failed.is_empty(), "commands failed on the memory backend: {failed:?}");
    let difference = first_difference("outcome of command", &memory.outcomes, &postgres.outcomes)
        .or_else(|| first_difference("event in global order", &memory.log, &postgres.log));
    if let Some(difference) = difference {
        return Err(TestCaseError::fail(difference));
    }
    let (m_ids, p_ids): (Vec<_>, Vec<_>) =
        (memory.streams.keys().collect(), postgres.streams.keys().collect());
    prop_assert_eq!(m_ids, p_ids, "the backends hold different streams");
    for (id, events) in &memory.streams {
        if let Some(d) =
            first_difference(&format!("event of `{id}`"), events, &postgres.streams[id])
        {
            return Err(TestCaseError::fail(d));
        }
    }
    prop_assert_eq!(
        (memory.conflicts, memory.contended_rounds, memory.discovery_reads),
        (postgres.conflicts, postgres.contended_rounds, postgres.discovery_reads),
        "conflicts, contended rounds and discovery reads differ (memory, then postgres)"
    );

    coverage.count("run");
    coverage.add("concurrent step", steps.iter().filter(|s| s.is_concurrent()).count() as u64);
    coverage.add("contended round", memory.contended_rounds);
    coverage.add("conflict", memory.conflicts);
    coverage.add("discovery read", memory.discovery_reads);
    for outcome in &memory.outcomes {
        coverage.count(match outcome {
            Outcome::Committed { attempts: 1, .. } => "committed",
            Outcome::Committed { .. } => "committed after a conflict",
            Outcome::Rejected(Rejection::Bank(_)) => "bank rejection",
            Outcome::Rejected(Rejection::Commerce(_)) => "commerce rejection",
            Outcome::GaveUp { .. } => "gave up after conflicts",
            Outcome::Failed(_) => "failed",
        });
    }
    Ok(())
}

async fn drop_schema(store: &Postgres) {
    let sql = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", store.schema().as_str());
    sqlx::raw_sql(&sql).execute(store.pool()).await.unwrap();
    store.pool().close().await;
}

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

#[test]
fn memory_and_postgres_agree_on_random_runs() {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let coverage = Coverage::new();
    let strategy = sequences(ops()).steps(5..=40).concurrency(2..=5).concurrent_one_in(2);
    let mut runner = TestRunner::new(config());
    let result = runner.run(&strategy, |steps| runtime.block_on(compare(&steps, &coverage)));
    if let Err(e) = result {
        panic!("{e}");
    }
    println!("coverage: {:?}", coverage.counts());
    coverage.require(&[
        "concurrent step",
        "contended round",
        "conflict",
        "committed after a conflict",
        "gave up after conflicts",
        "bank rejection",
        "commerce rejection",
        "discovery read",
    ]);
}
