//! The PostgreSQL backend against the physical limit: the banking Transfer through the executor
//! vs a raw-sqlx baseline doing the least SQL for the same work (one statement, hence one
//! transaction, inserting the three events), at 1 and 8 concurrent tasks; heavy contention;
//! a 100-event batch append vs a raw multi-row insert; reading 1,000 events.
//!
//! Run: `cargo bench --features postgres --bench postgres` with PostgreSQL at `DATABASE_URL`
//! (default `postgres://postgres@127.0.0.1:5432/test`). Each run works in a fresh schema and
//! drops it at the end.

#[path = "../examples/banking/domain.rs"]
mod banking;

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use banking::*;
use criterion::{Criterion, criterion_group};
use eventcore::backend::postgres::{Postgres, PostgresConfig};
use eventcore::backend::{AppendRequest, Backend};
use eventcore::prelude::*;
use eventcore::{CorrelationId, EventMetadata, NewEvent, Payload, StreamCache, StreamVersion};
use sqlx::PgPool;

/// Pairs of accounts per task in the uncontended runs: each task transfers within its own pairs,
/// rotating, so no two tasks touch the same stream and histories stay short.
const PAIRS_PER_TASK: usize = 25;
/// Pairs per task in the throughput runs: `EVENTCORE_BENCH_PAIRS`, default [`PAIRS_PER_TASK`].
/// More pairs mean shorter account histories, so less to fold per transfer.
fn pairs_per_task() -> usize {
    std::env::var("EVENTCORE_BENCH_PAIRS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(PAIRS_PER_TASK)
}

/// How long each throughput run lasts.
const RUN: Duration = Duration::from_secs(3);

fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// A migrated store in a fresh schema, plus the baseline's table in the same schema.
async fn fresh_store() -> Postgres {
    fresh_store_with(None).await
}

/// [`fresh_store`] with group commit: `batches` append batches in flight.
async fn fresh_store_with(batches: Option<usize>) -> Postgres {
    let schema = format!("ec_bench_{}", uuid::Uuid::now_v7().simple());
    // `EVENTCORE_BENCH_APPEND_BATCHES` sets how many append batches may be in flight where
    // the run does not say.
    let mut config = PostgresConfig::builder(database_url()).schema(schema).max_connections(16);
    let env = std::env::var("EVENTCORE_BENCH_APPEND_BATCHES").ok().and_then(|v| v.parse().ok());
    if let Some(n) = batches.or(env) {
        config = config.append_batches(n);
    }
    let config = config.build().unwrap();
    let store = Postgres::connect(config).await.unwrap_or_else(|e| panic!("{e}"));
    store.migrate().await.unwrap();
    sqlx::raw_sql(&format!(
        "CREATE TABLE \"{}\".raw_events (
             position bigserial PRIMARY KEY,
             stream_id text NOT NULL,
             version bigint NOT NULL,
             event_id uuid NOT NULL UNIQUE,
             event_type text NOT NULL,
             schema_version integer NOT NULL,
             payload json NOT NULL,
             metadata jsonb NOT NULL,
             recorded_at timestamptz NOT NULL,
             UNIQUE (stream_id, version))",
        store.schema()
    ))
    .execute(store.pool())
    .await
    .unwrap();
    store
}

async fn drop_store(store: &Postgres) {
    let sql = format!("DROP SCHEMA \"{}\" CASCADE", store.schema());
    sqlx::raw_sql(&sql).execute(store.pool()).await.unwrap();
}

fn account(task: usize, i: usize) -> AccountId {
    AccountId::try_new(&format!("acc-{task}-{i}")).unwrap()
}

async fn open_accounts(bank: &Executor<Postgres>, task: usize, count: usize) -> Vec<AccountId> {
    let mut accounts = Vec::new();
    for i in 0..count {
        let id = account(task, i);
        bank.execute(&OpenAccount { account: id.clone(), owner: "o".into() }).await.unwrap();
        bank.execute(&Deposit { account: id.clone(), amount: Money::from_cents(1 << 40) })
            .await
            .unwrap();
        accounts.push(id);
    }
    accounts
}

/// The baseline: the three events a transfer writes, encoded as the executor encodes them,
/// inserted by one statement. No read, no fold, no version check, no idempotency record.
struct Raw {
    pool: PgPool,
    insert: Arc<str>,
    versions: HashMap<String, i64>,
}

impl Raw {
    fn new(store: &Postgres) -> Self {
        let insert = raw_insert_sql(store.schema().as_str());
        Self { pool: store.pool().clone(), insert: insert.into(), versions: HashMap::new() }
    }

    async fn insert(&mut self, events: Vec<(String, NewEvent)>) {
        let events = events.into_iter().map(|(stream, e)| {
            let v = self.versions.entry(stream.clone()).or_insert(0);
            *v += 1;
            (stream, *v, e)
        });
        raw_insert(&self.pool, &self.insert, events.collect()).await;
    }

    async fn transfer(&mut self, id: &TransferId, from: &AccountId, to: &AccountId) {
        let events = transfer_events(id, from, to).into();
        self.insert(events).await;
    }
}

/// The baseline's INSERT of events given as column arrays, into the schema's `raw_events`.
fn raw_insert_sql(schema: &str) -> String {
    format!(
        "INSERT INTO \"{schema}\".raw_events (stream_id, version, event_id, event_type, \
         schema_version, payload, metadata, recorded_at) \
         SELECT s, v, id, t, sv, p::json, m::jsonb, at FROM unnest($1::text[], $2::int8[], \
         $3::uuid[], $4::text[], $5::int4[], $6::text[], $7::text[], $8::timestamptz[]) \
         AS u(s, v, id, t, sv, p, m, at)"
    )
}

/// Inserts `(stream, version, event)`s with `sql` (from [`raw_insert_sql`]), encoded as the
/// executor encodes them.
async fn raw_insert(
    executor: impl sqlx::PgExecutor<'_>,
    sql: &str,
    events: Vec<(String, i64, NewEvent)>,
) {
    let mut cols = (vec![], vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    for (stream, version, e) in events {
        cols.0.push(stream);
        cols.1.push(version);
        cols.2.push(e.metadata.event_id.as_uuid());
        cols.3.push(e.event_type.to_string());
        cols.4.push(e.schema_version as i32);
        cols.5.push(e.payload.as_str().to_owned());
        cols.6.push(serde_json::to_string(&e.metadata).unwrap());
        cols.7.push(e.metadata.timestamp.as_datetime());
    }
    sqlx::query(sql)
        .bind(cols.0)
        .bind(cols.1)
        .bind(cols.2)
        .bind(cols.3)
        .bind(cols.4)
        .bind(cols.5)
        .bind(cols.6)
        .bind(cols.7)
        .execute(executor)
        .await
        .unwrap();
}

/// The three events of a one-cent transfer, each with its stream.
fn transfer_events(id: &TransferId, from: &AccountId, to: &AccountId) -> [(String, NewEvent); 3] {
    let amount = Money::from_cents(1);
    let meta = || EventMetadata::new(CorrelationId::new());
    let out = AccountEvent::TransferredOut { transfer: id.clone(), to: to.clone(), amount };
    let inn = AccountEvent::TransferredIn { transfer: id.clone(), from: from.clone(), amount };
    let ledger = TransferEvent::Completed { from: from.clone(), to: to.clone(), amount };
    [
        (from.stream_id().clone().to_string(), NewEvent::from_event(&out, meta()).unwrap()),
        (to.stream_id().clone().to_string(), NewEvent::from_event(&inn, meta()).unwrap()),
        (id.stream_id().clone().to_string(), NewEvent::from_event(&ledger, meta()).unwrap()),
    ]
}

fn transfer_of(
    task: usize,
    n: usize,
    accounts: &[AccountId],
) -> (TransferId, AccountId, AccountId) {
    let pair = n % (accounts.len() / 2);
    (
        TransferId::try_new(&format!("t-{task}-{n}")).unwrap(),
        accounts[pair * 2].clone(),
        accounts[pair * 2 + 1].clone(),
    )
}

/// Transfers per second through the executor with `tasks` concurrent tasks, each on its own
/// accounts, for `run`; with `cache`, the executor keeps the streams it has seen in a
/// [`StreamCache`] that takes unknown streams (each transfer's own) to be empty, so a transfer
/// costs one round trip (the append) instead of two.
async fn typed_throughput(store: &Postgres, tasks: usize, run: Duration, cache: bool) -> f64 {
    let bank = Executor::new(store.clone());
    let bank = if cache {
        bank.with_cache(StreamCache::new(1_000_000).assume_unknown_streams_empty(true))
    } else {
        bank
    };
    let mut accounts = Vec::new();
    for task in 0..tasks {
        let bank = bank.clone();
        accounts.push(tokio::spawn(async move {
            open_accounts(&bank, task, pairs_per_task() * 2).await
        }));
    }
    let mut ready = Vec::new();
    for a in accounts {
        ready.push(a.await.unwrap());
    }
    let start = Instant::now();
    let handles: Vec<_> = ready
        .into_iter()
        .enumerate()
        .map(|(task, accounts)| {
            let bank = bank.clone();
            tokio::spawn(async move {
                let mut n = 0;
                while start.elapsed() < run {
                    let (id, from, to) = transfer_of(task, n, &accounts);
                    let t = Transfer::new(id, from, to, Money::from_cents(1)).unwrap();
                    bank.execute(&t).await.unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for h in handles {
        total += h.await.unwrap();
    }
    total as f64 / start.elapsed().as_secs_f64()
}

/// Transfers per second of the raw baseline with `tasks` concurrent tasks.
async fn raw_throughput(store: &Postgres, tasks: usize, run: Duration, round: usize) -> f64 {
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|task| {
            let mut raw = Raw::new(store);
            tokio::spawn(async move {
                let accounts: Vec<AccountId> = (0..pairs_per_task() * 2)
                    .map(|i| account(1000 * (round + 1) + task, i))
                    .collect();
                let mut n = 0;
                while start.elapsed() < run {
                    let (id, from, to) = transfer_of(task + 1000 * (round + 1), n, &accounts);
                    raw.transfer(&id, &from, &to).await;
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for h in handles {
        total += h.await.unwrap();
    }
    total as f64 / start.elapsed().as_secs_f64()
}

fn batch(n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|i| {
            NewEvent::new(
                "Item",
                1,
                Payload::to_json(&i).unwrap(),
                EventMetadata::new(CorrelationId::new()),
            )
        })
        .collect()
}

async fn append_batch(store: &Postgres, stream: &str) {
    let s = StreamId::try_new(stream).unwrap();
    let request = AppendRequest::new().expect(s.clone(), StreamVersion::EMPTY).write(s, batch(100));
    store.append(request).await.unwrap();
}

fn criterion_benches(c: &mut Criterion) {
    let rt = runtime();
    let store = rt.block_on(fresh_store());
    let mut group = c.benchmark_group("postgres");

    // Set-up happens outside `bench_function`, whose closure criterion calls more than once.
    let bank = Executor::new(store.clone());
    let accounts = rt.block_on(open_accounts(&bank, 500, PAIRS_PER_TASK * 2));
    let mut n = 0;
    group.bench_function("transfer, typed executor, 1 task", |b| {
        b.to_async(&rt).iter(|| {
            n += 1;
            let (id, from, to) = transfer_of(500, n, &accounts);
            let t = Transfer::new(id, from, to, Money::from_cents(1)).unwrap();
            let bank = bank.clone();
            async move { bank.execute(&t).await.unwrap() }
        })
    });

    // The two halves of a typed transfer, straight on the backend: reading its three streams,
    // and appending its three events with their version checks and idempotency key.
    let (from, to) = (accounts[0].stream_id().clone(), accounts[1].stream_id().clone());
    let read_ids = [from.clone(), to.clone(), StreamId::try_new("transfer-none").unwrap()];
    group.bench_function("transfer's read of 3 streams, backend only", |b| {
        b.to_async(&rt).iter(|| {
            let (store, ids) = (store.clone(), read_ids.clone());
            async move { store.read(&ids).await.unwrap() }
        })
    });
    let mut k = 0u64;
    group.bench_function("transfer's append of 3 events, backend only", |b| {
        b.to_async(&rt).iter(|| {
            k += 1;
            let store = store.clone();
            let (a, c) = (
                StreamId::try_new(format!("solo-a-{k}")).unwrap(),
                StreamId::try_new(format!("solo-l-{k}")).unwrap(),
            );
            let e = |n| {
                NewEvent::new(
                    "E",
                    1,
                    Payload::to_json(&n).unwrap(),
                    EventMetadata::new(CorrelationId::new()),
                )
            };
            let request = AppendRequest::new()
                .expect(a.clone(), StreamVersion::EMPTY)
                .expect(c.clone(), StreamVersion::EMPTY)
                .write(a, vec![e(1), e(2)])
                .write(c, vec![e(3)])
                .idempotent(
                    eventcore::backend::IdempotencyKey::try_new(format!("solo-{k}")).unwrap(),
                );
            async move { store.append(request).await.unwrap() }
        })
    });

    let raw_accounts: Vec<AccountId> = (0..PAIRS_PER_TASK * 2).map(|i| account(501, i)).collect();
    let raw = Arc::new(tokio::sync::Mutex::new(Raw::new(&store)));
    let mut n = 0;
    group.bench_function("transfer, raw sqlx baseline, 1 task", |b| {
        b.to_async(&rt).iter(|| {
            n += 1;
            let (id, from, to) = transfer_of(501, n, &raw_accounts);
            let raw = Arc::clone(&raw);
            async move { raw.lock().await.transfer(&id, &from, &to).await }
        })
    });

    let mut n = 0;
    group.bench_function("append 100 events to one stream", |b| {
        b.to_async(&rt).iter(|| {
            n += 1;
            let store = store.clone();
            async move { append_batch(&store, &format!("batch-{n}")).await }
        })
    });

    let mut n = 0;
    group.bench_function("raw multi-row insert of 100 events", |b| {
        b.to_async(&rt).iter(|| {
            n += 1;
            let raw = Arc::clone(&raw);
            let events: Vec<(String, NewEvent)> =
                batch(100).into_iter().map(|e| (format!("raw-batch-{n}"), e)).collect();
            async move { raw.lock().await.insert(events).await }
        })
    });

    let long = StreamId::try_new("read-1000").unwrap();
    rt.block_on(async {
        for i in 0..10u64 {
            let request = AppendRequest::new()
                .expect(long.clone(), StreamVersion::new(i * 100))
                .write(long.clone(), batch(100));
            store.append(request).await.unwrap();
        }
    });
    group.bench_function("read one stream of 1,000 events", |b| {
        b.to_async(&rt).iter(|| {
            let (store, long) = (store.clone(), long.clone());
            async move {
                let read = store.read(&[long]).await.unwrap();
                assert_eq!(read[0].events.len(), 1000);
            }
        })
    });
    group.bench_function("read_all 1,000 events", |b| {
        b.to_async(&rt).iter(|| {
            let store = store.clone();
            async move {
                let page = store.read_all(eventcore::GlobalPosition::START, 1000).await.unwrap();
                assert_eq!(page.len(), 1000);
            }
        })
    });
    group.finish();
    rt.block_on(drop_store(&store));
}

/// What the tasks of a contention run do.
#[derive(Clone, Copy, Debug)]
enum Load {
    /// Transfers of one cent between two of this many accounts, picked at random.
    Transfers(usize),
    /// One-cent deposits to one account: every command increments one counter stream.
    Counter,
}

/// One contention run's set-up: the load, how many tasks, whether executors keep a stream
/// cache, in how many processes, and whether the accounts are marked hot.
#[derive(Clone, Copy, Debug)]
struct Contention {
    load: Load,
    tasks: usize,
    cache: bool,
    processes: usize,
    hot: bool,
}

impl Contention {
    const fn new(load: Load, tasks: usize) -> Self {
        Self { load, tasks, cache: false, processes: 1, hot: false }
    }
    const fn cached(self) -> Self {
        Self { cache: true, ..self }
    }
    const fn processes(self, processes: usize) -> Self {
        Self { processes, ..self }
    }
    const fn hot(self) -> Self {
        Self { hot: true, ..self }
    }

    fn label(&self) -> String {
        let load = match self.load {
            Load::Transfers(n) => format!("{n} accounts"),
            Load::Counter => "one counter".to_owned(),
        };
        let mut label = format!("{} tasks, {load}", self.tasks);
        label += &match self.processes {
            1 => ", 1 process".to_owned(),
            n if n == self.tasks => ", a process per task (no turns)".to_owned(),
            n => format!(", {n} processes"),
        };
        if self.cache {
            label += ", stream cache";
        }
        if self.hot {
            label += ", hot streams";
        }
        label
    }
}

/// Stores on one fresh schema, one per process of `setup`: each with its own pools and its
/// own in-process queue, which is all two processes do not share. The first owns the schema.
async fn contention_stores(setup: Contention) -> Vec<Postgres> {
    let first = fresh_store().await;
    let mut stores = vec![first.clone()];
    for _ in 1..setup.processes {
        let config = PostgresConfig::builder(database_url())
            .schema(first.schema().as_str())
            .max_connections(16)
            .build()
            .unwrap();
        stores.push(Postgres::connect(config).await.unwrap());
    }
    if setup.hot {
        let hot = |id: &StreamId| id.as_str().starts_with("account-");
        stores = stores
            .into_iter()
            .map(|s| s.with_hot_streams(hot, const { std::num::NonZeroU32::new(16).unwrap() }))
            .collect();
    }
    stores
}

/// Opens the accounts of `setup`'s load under names no earlier run used, so that every run
/// starts on short histories (criterion runs a row many times on one schema).
async fn fresh_accounts(store: &Postgres, setup: Contention) -> Arc<Vec<AccountId>> {
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(10_000);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let bank = Executor::new(store.clone());
    let count = match setup.load {
        Load::Transfers(n) => n,
        Load::Counter => 1,
    };
    Arc::new(open_accounts(&bank, run, count).await)
}

/// What a contention run did.
#[derive(Default)]
struct Tally {
    committed: u64,
    attempts: u64,
    gave_up: u64,
}

/// Runs `setup` until `total` commands have been executed or `run` is over, whichever comes
/// first, under the default retry policy; returns the wall time and the tally.
async fn contended(
    stores: &[Postgres],
    setup: Contention,
    total: u64,
    run: Duration,
) -> (Duration, Tally) {
    let accounts = &fresh_accounts(&stores[0], setup).await;
    let banks: Vec<Executor<Postgres>> = stores
        .iter()
        .map(|store| {
            let bank = Executor::new(store.clone());
            if setup.cache {
                bank.with_cache(StreamCache::new(1_000_000).assume_unknown_streams_empty(true))
            } else {
                bank
            }
        })
        .collect();
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..setup.tasks)
        .map(|task| {
            // One executor per process, shared by its tasks (and so is its cache).
            let bank = banks[task % banks.len()].clone();
            let (accounts, next) = (Arc::clone(accounts), Arc::clone(&next));
            tokio::spawn(async move {
                let mut rng = fastrand::Rng::with_seed(task as u64);
                let mut tally = Tally::default();
                loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if n >= total || start.elapsed() >= run {
                        break;
                    }
                    let outcome = match setup.load {
                        Load::Transfers(count) => {
                            let from = rng.usize(0..count);
                            let to = (from + rng.usize(1..count)) % count;
                            let id = TransferId::try_new(&format!(
                                "hot-{}",
                                uuid::Uuid::now_v7().simple()
                            ))
                            .unwrap();
                            let t = Transfer::new(
                                id,
                                accounts[from].clone(),
                                accounts[to].clone(),
                                Money::from_cents(1),
                            )
                            .unwrap();
                            bank.execute(&t).await
                        }
                        Load::Counter => {
                            let deposit = Deposit {
                                account: accounts[0].clone(),
                                amount: Money::from_cents(1),
                            };
                            bank.execute(&deposit).await
                        }
                    };
                    match outcome {
                        Ok(executed) => {
                            tally.committed += 1;
                            tally.attempts += u64::from(executed.attempts);
                        }
                        Err(ExecuteError::Conflict { attempts, .. }) => {
                            tally.gave_up += 1;
                            tally.attempts += u64::from(attempts);
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
                tally
            })
        })
        .collect();
    let mut tally = Tally::default();
    for h in handles {
        let t = h.await.unwrap();
        tally.committed += t.committed;
        tally.attempts += t.attempts;
        tally.gave_up += t.gave_up;
    }
    (start.elapsed(), tally)
}

/// The rows of the contention benchmark: the loads, with and without the stream cache,
/// in one process and in two.
const CONTENTION: [Contention; 15] = [
    // Every task a process of its own: nothing takes turns, as before the queue.
    Contention::new(Load::Transfers(10), 8).processes(8),
    Contention::new(Load::Transfers(10), 8),
    Contention::new(Load::Transfers(10), 8).cached(),
    Contention::new(Load::Transfers(10), 8).processes(2),
    Contention::new(Load::Transfers(10), 8).processes(2).cached(),
    Contention::new(Load::Transfers(10), 8).processes(2).hot(),
    Contention::new(Load::Transfers(10), 64),
    Contention::new(Load::Transfers(10), 64).cached(),
    Contention::new(Load::Transfers(2), 8),
    Contention::new(Load::Transfers(2), 8).processes(2),
    Contention::new(Load::Transfers(2), 8).processes(2).hot(),
    Contention::new(Load::Counter, 8).processes(8),
    Contention::new(Load::Counter, 8),
    Contention::new(Load::Counter, 8).processes(2),
    Contention::new(Load::Counter, 8).processes(2).hot(),
];

/// The hand-written baseline under contention: what a careful application writes without a
/// library. One transaction takes an advisory lock per account (sorted, so two transfers
/// cannot deadlock), reads the three streams' versions, and inserts the three events.
async fn raw_locked_transfers(
    store: &Postgres,
    tasks: usize,
    accounts: usize,
    run: Duration,
) -> f64 {
    let schema = store.schema().to_string();
    // Two statements: a statement reads on a snapshot taken when it starts, so versions read
    // in the statement that waited for the locks could be stale.
    let lock = "SELECT count(pg_advisory_xact_lock(k)) FROM unnest($1::int8[]) AS k".to_owned();
    let read = format!(
        "SELECT (SELECT coalesce(max(version), 0) FROM \"{schema}\".raw_events WHERE stream_id = $1), \
                (SELECT coalesce(max(version), 0) FROM \"{schema}\".raw_events WHERE stream_id = $2)"
    );
    let insert = raw_insert_sql(&schema);
    let (lock, read, insert): (Arc<str>, Arc<str>, Arc<str>) =
        (lock.into(), read.into(), insert.into());
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|task| {
            let pool = store.pool().clone();
            let (lock, read, insert) = (Arc::clone(&lock), Arc::clone(&read), Arc::clone(&insert));
            tokio::spawn(async move {
                let mut rng = fastrand::Rng::with_seed(task as u64);
                let mut n = 0u64;
                while start.elapsed() < run {
                    let from = rng.usize(0..accounts);
                    let to = (from + rng.usize(1..accounts)) % accounts;
                    let (from, to) = (account(9997, from), account(9997, to));
                    let id = TransferId::try_new(&format!("raw-hot-{task}-{n}")).unwrap();
                    let mut keys = vec![
                        fnv1a(from.stream_id().clone().as_str()),
                        fnv1a(to.stream_id().clone().as_str()),
                    ];
                    keys.sort_unstable();
                    let mut tx = pool.begin().await.unwrap();
                    sqlx::query(&lock).bind(&keys).execute(&mut *tx).await.unwrap();
                    let (v_from, v_to): (i64, i64) = sqlx::query_as(&read)
                        .bind(from.stream_id().clone().as_str())
                        .bind(to.stream_id().clone().as_str())
                        .fetch_one(&mut *tx)
                        .await
                        .unwrap();
                    let [out, inn, ledger] = transfer_events(&id, &from, &to);
                    let events = vec![
                        (out.0, v_from + 1, out.1),
                        (inn.0, v_to + 1, inn.1),
                        (ledger.0, 1, ledger.1),
                    ];
                    raw_insert(&mut *tx, &insert, events).await;
                    tx.commit().await.unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for h in handles {
        total += h.await.unwrap();
    }
    total as f64 / start.elapsed().as_secs_f64()
}

/// A stable 64-bit hash for the baseline's advisory lock keys.
fn fnv1a(text: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

/// Criterion rows for the contention runs: time per committed command (the inverse of the
/// throughput), each row on a fresh schema.
fn contention_benches(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("postgres contention");
    group.sample_size(10).measurement_time(Duration::from_secs(4));
    for setup in CONTENTION {
        let stores = rt.block_on(contention_stores(setup));
        group.bench_function(setup.label(), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    // Commands that give up are counted by the summary, which runs each row
                    // under the same settings.
                    contended(&stores, setup, iters, Duration::MAX).await.0
                })
            })
        });
        rt.block_on(drop_store(&stores[0]));
    }
    group.finish();
}

fn summary() {
    let rt = runtime();
    // `EVENTCORE_BENCH_PROFILE=typed|cached|raw` runs only 8 tasks of that kind for 10 s, to
    // profile one side (`perf record -p`).
    if let Ok(kind) = std::env::var("EVENTCORE_BENCH_PROFILE") {
        rt.block_on(async {
            let store = fresh_store().await;
            let run = Duration::from_secs(10);
            let rate = match kind.as_str() {
                "raw" => raw_throughput(&store, 8, run, 0).await,
                "typed" => typed_throughput(&store, 8, run, false).await,
                _ => typed_throughput(&store, 8, run, true).await,
            };
            println!("{kind}: {rate:.0} transfers/s");
            drop_store(&store).await;
        });
        return;
    }
    rt.block_on(async {
        println!(
            "\n== Transfer on PostgreSQL: typed executor vs raw sqlx (3 events, 1 statement), \
             transfers per second =="
        );
        for tasks in [1, 8] {
            let (mut typed, mut cached, mut batched, mut raw) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for round in 0..2 {
                // A fresh schema for each measurement, so none runs on a log the others grew;
                // the order rotates, so all four share the machine's drift.
                for step in 0..4 {
                    let kind = (round + step) % 4;
                    let store = fresh_store_with((kind == 2).then_some(2)).await;
                    match kind {
                        0 => typed.push(typed_throughput(&store, tasks, RUN, false).await),
                        1 => cached.push(typed_throughput(&store, tasks, RUN, true).await),
                        2 => batched.push(typed_throughput(&store, tasks, RUN, true).await),
                        _ => raw.push(raw_throughput(&store, tasks, RUN, round).await),
                    }
                    drop_store(&store).await;
                }
            }
            let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
            let (t, c, b, r) = (mean(&typed), mean(&cached), mean(&batched), mean(&raw));
            println!(
                "{tasks} task(s): raw {r:>6.0}/s | typed {t:>6.0}/s ({:.2}) | + stream cache \
                 {c:>6.0}/s ({:.2}) | + group commit (2 in flight) {b:>6.0}/s ({:.2})",
                t / r,
                c / r,
                b / r
            );
        }
        println!(
            "\n== Contention on PostgreSQL (default retry policy; {} s each): commands/s, \
             retries per committed command, commands that gave up ==",
            RUN.as_secs()
        );
        // `EVENTCORE_BENCH_ROWS=text` runs only the contention rows whose label contains it.
        let rows = std::env::var("EVENTCORE_BENCH_ROWS").unwrap_or_default();
        for setup in CONTENTION.into_iter().filter(|s| s.label().contains(&rows)) {
            let stores = contention_stores(setup).await;
            let (took, tally) = contended(&stores, setup, u64::MAX, RUN).await;
            println!(
                "{:<48} {:>6.0}/s  {:>5.2} retries/commit  {} gave up",
                setup.label(),
                tally.committed as f64 / took.as_secs_f64(),
                (tally.attempts - tally.committed) as f64 / tally.committed.max(1) as f64,
                tally.gave_up
            );
            drop_store(&stores[0]).await;
        }
        for accounts in [10, 2] {
            let store = fresh_store().await;
            let bank = Executor::new(store.clone());
            for i in 0..accounts {
                let id = account(9997, i);
                bank.execute(&OpenAccount { account: id, owner: "o".into() }).await.unwrap();
            }
            let rate = raw_locked_transfers(&store, 8, accounts, RUN).await;
            println!(
                "{:<48} {rate:>6.0}/s  (hand-written: advisory locks, read versions, insert)",
                format!("raw sqlx baseline, 8 tasks, {accounts} accounts")
            );
            drop_store(&store).await;
        }
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = criterion_benches, contention_benches
}

fn main() {
    // `EVENTCORE_BENCH_SUMMARY_ONLY=1` skips the criterion measurements.
    if std::env::var_os("EVENTCORE_BENCH_SUMMARY_ONLY").is_none() {
        benches();
    }
    summary();
    Criterion::default().configure_from_args().final_summary();
}
