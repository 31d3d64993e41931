//! Snapshots: one command over one stream of 10, 1,000, 100,000 (and, on request, 1,000,000)
//! events, folding the full history vs starting from a snapshot, on the in-memory store and
//! (with `--features postgres`) PostgreSQL. No stream cache: every command reads as the first
//! command of a fresh process does. The command reads, folds and decides to write nothing, so
//! the stream keeps its size across iterations; with a snapshot it loads the snapshot and reads
//! the events after it (none). The time with snapshots should stay flat as the stream grows.
//!
//! Run: `cargo bench --bench snapshots` (add `--features postgres` for the PostgreSQL rows, with
//! PostgreSQL at `DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/test`; each size
//! works in a fresh schema, dropped at the end). `EVENTCORE_SNAPSHOT_BENCH_BIG=1` adds the
//! 1,000,000-event rows (loading them into PostgreSQL takes a while: 20 appends of 50,000
//! events). Prints a summary (median per command, ratio full / snapshot) before criterion's
//! rows.

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use eventcore::backend::AppendRequest;
use eventcore::prelude::*;
use eventcore::{CorrelationId, EventMetadata, NewEvent, Snapshot, SnapshotPolicy, StreamVersion};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, Event)]
pub enum LedgerEvent {
    Credited { cents: u64 },
    Debited { cents: u64 },
}

slot!(pub Ledger: LedgerEvent);

#[derive(Default, Serialize, Deserialize, Fold)]
#[fold(Ledger)]
struct Funds {
    cents: u64,
    entries: u64,
}

impl Apply<LedgerEvent> for Funds {
    fn apply(&mut self, event: &LedgerEvent) {
        self.entries += 1;
        match event {
            LedgerEvent::Credited { cents } => self.cents += cents,
            LedgerEvent::Debited { cents } => self.cents -= cents,
        }
    }
}

impl Snapshot for Funds {
    const NAME: &'static str = "funds";
    const VERSION: u32 = 1;
}

#[derive(Debug, thiserror::Error)]
#[error("the ledger has {0} entries, not {1}")]
struct Unexpected(u64, u64);

/// Checks the ledger's size and writes nothing.
#[derive(Command)]
#[command(state = Funds, error = Unexpected)]
struct Inspect {
    #[slot(Ledger)]
    ledger: StreamId,
    entries: u64,
}

impl Handle for Inspect {
    fn handle(&self, state: &Funds, decision: Decision<Self::Streams>) -> Handled<Self> {
        require!(state.entries == self.entries, Unexpected(state.entries, self.entries));
        Ok(decision)
    }
}

/// Events per append while loading a stream (PostgreSQL takes at most 65,535 per append).
const CHUNK: u64 = 50_000;

fn sizes() -> Vec<u64> {
    let mut sizes = vec![10, 1_000, 100_000];
    if std::env::var("EVENTCORE_SNAPSHOT_BENCH_BIG").is_ok_and(|v| v == "1") {
        sizes.push(1_000_000);
    }
    sizes
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// Appends `size` credits to `ledger`, `CHUNK` per append.
async fn load<B: Backend>(store: &B, ledger: &StreamId, size: u64) {
    let mut version = 0;
    while version < size {
        let n = CHUNK.min(size - version);
        let events = (0..n)
            .map(|_| {
                NewEvent::from_event(
                    &LedgerEvent::Credited { cents: 1 },
                    EventMetadata::new(CorrelationId::new()),
                )
                .unwrap()
            })
            .collect();
        let request = AppendRequest::new()
            .expect(ledger.clone(), StreamVersion::new(version))
            .write(ledger.clone(), events);
        store.append(request).await.unwrap();
        version += n;
    }
}

/// One stream of `size` events, and the two executors: full folds, and snapshots (one taken).
struct Row<B> {
    full: Executor<B>,
    snapshots: Executor<B>,
    command: Inspect,
}

async fn row<B: Backend>(store: B, size: u64) -> Row<B> {
    let ledger = StreamId::try_new("ledger-1").unwrap();
    load(&store, &ledger, size).await;
    let command = Inspect { ledger, entries: size };
    // Take the snapshot once; the measured executor only loads it.
    let taking = Executor::new(store.clone()).with_snapshots(SnapshotPolicy::every(1));
    taking.execute_snapshotted(&command).await.unwrap();
    Row {
        full: Executor::new(store.clone()),
        snapshots: Executor::new(store).with_snapshots(SnapshotPolicy::load_only()),
        command,
    }
}

impl<B: Backend> Row<B> {
    async fn run_full(&self) {
        self.full.execute(&self.command).await.unwrap();
    }

    async fn run_snapshot(&self) {
        self.snapshots.execute_snapshotted(&self.command).await.unwrap();
    }
}

/// The median of `runs` timings of `f`.
async fn median<F: std::future::Future<Output = ()>>(
    runs: usize,
    mut f: impl FnMut() -> F,
) -> Duration {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        f().await;
        times.push(start.elapsed());
    }
    times.sort();
    times[times.len() / 2]
}

fn runs_for(size: u64) -> usize {
    match size {
        0..=1_000 => 201,
        1_001..=100_000 => 11,
        _ => 3,
    }
}

fn print_row(backend: &str, size: u64, full: Duration, snapshot: Duration) {
    println!(
        "{backend:<8} {size:>9} events: full {:>12.1} us   snapshot {:>9.1} us   full/snapshot {:>9.1}x",
        full.as_secs_f64() * 1e6,
        snapshot.as_secs_f64() * 1e6,
        full.as_secs_f64() / snapshot.as_secs_f64()
    );
}

async fn summarise<B: Backend>(backend: &str, row: &Row<B>, size: u64) {
    let runs = runs_for(size);
    let full = median(runs, || row.run_full()).await;
    let snapshot = median(runs, || row.run_snapshot()).await;
    print_row(backend, size, full, snapshot);
}

fn bench_rows<B: Backend>(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    backend: &str,
    row: &Row<B>,
    size: u64,
) {
    let mut group = c.benchmark_group(format!("snapshots/{backend}"));
    group.sample_size(10).warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(if size > 100_000 { 20 } else { 3 }));
    group.bench_with_input(BenchmarkId::new("full", size), &size, |b, _| {
        b.to_async(rt).iter(|| row.run_full());
    });
    group.bench_with_input(BenchmarkId::new("snapshot", size), &size, |b, _| {
        b.to_async(rt).iter(|| row.run_snapshot());
    });
    group.finish();
}

#[cfg(feature = "postgres")]
mod postgres {
    use eventcore::backend::postgres::{Postgres, PostgresConfig};

    fn database_url() -> String {
        std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
    }

    /// A migrated store in a fresh schema.
    pub(crate) async fn fresh_store() -> Postgres {
        let schema = format!("ec_bench_snap_{}", uuid::Uuid::now_v7().simple());
        let config = PostgresConfig::builder(database_url()).schema(schema).build().unwrap();
        let store = Postgres::connect(config).await.unwrap_or_else(|e| panic!("{e}"));
        store.migrate().await.unwrap();
        store
    }

    pub(crate) async fn drop_schema(store: &Postgres) {
        sqlx::raw_sql(&format!("DROP SCHEMA \"{}\" CASCADE", store.schema()))
            .execute(store.pool())
            .await
            .unwrap();
    }
}

fn main() {
    let rt = runtime();
    let mut c = Criterion::default().configure_from_args();
    println!("== One command over one stream, no cache: median per command ==");
    for size in sizes() {
        let started = Instant::now();
        let row = rt.block_on(row(Memory::new(), size));
        eprintln!("memory: {size} events loaded in {:?}", started.elapsed());
        rt.block_on(summarise("memory", &row, size));
        bench_rows(&mut c, &rt, "memory", &row, size);
    }
    #[cfg(feature = "postgres")]
    for size in sizes() {
        let started = Instant::now();
        let store = rt.block_on(postgres::fresh_store());
        let row = rt.block_on(row(store.clone(), size));
        eprintln!("postgres: {size} events loaded in {:?}", started.elapsed());
        rt.block_on(summarise("postgres", &row, size));
        bench_rows(&mut c, &rt, "postgres", &row, size);
        rt.block_on(postgres::drop_schema(&store));
    }
    c.final_summary();
}
