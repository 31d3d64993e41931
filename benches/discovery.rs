//! The cost of discovery: a command that reads a manifest stream, discovers the N item streams
//! it lists (N = 1, 10, 100), folds them and appends one event to each, in one atomic write that
//! checks all N + 1 versions. The baseline does the same reads, decoding, fold and append by
//! hand on the `Backend` trait, with no executor, slots or continuations.
//!
//! Both run on the in-memory backend, on a fresh store every `CHUNK` executions (set up outside
//! the timed region) so the item streams stay short.
//!
//! Run with `cargo bench --bench discovery`. After criterion's own report, a summary prints
//! throughput per size, the executor/baseline ratio, and the cost per discovered stream.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use eventcore::backend::{AppendRequest, Committed};
use eventcore::prelude::*;
use eventcore::{NewEvent, StreamVersion};
use serde::{Deserialize, Serialize};

const SIZES: [usize; 3] = [1, 10, 100];
/// Executions per fresh store.
const CHUNK: u64 = 10;

#[derive(Serialize, Deserialize)]
enum ManifestEvent {
    Listed { items: Vec<StreamId> },
}

impl Event for ManifestEvent {
    const EVENT_TYPE: &'static str = "ManifestEvent";
}

#[derive(Serialize, Deserialize)]
enum ItemEvent {
    Created,
    Touched,
}

impl Event for ItemEvent {
    const EVENT_TYPE: &'static str = "ItemEvent";
}

slot!(Manifest: ManifestEvent);
slot!(Items: [ItemEvent]);

#[derive(Default)]
struct TouchState {
    items: Vec<StreamId>,
    touched: u64,
}

impl Fold<Manifest> for TouchState {
    fn fold(&mut self, _: &StreamId, event: &ManifestEvent) {
        let ManifestEvent::Listed { items } = event;
        self.items = items.clone();
    }
}

impl Fold<Items> for TouchState {
    fn fold(&mut self, _: &StreamId, event: &ItemEvent) {
        if let ItemEvent::Touched = event {
            self.touched += 1;
        }
    }
}

/// Round 0 reads the manifest; round 1 the items it lists, each of which gets one event.
struct TouchAll {
    manifest: StreamId,
}

struct TouchItems;

impl Command for TouchAll {
    type Streams = Streams![Manifest];
    type State = TouchState;
    type Error = std::convert::Infallible;
    type Continuation = TouchItems;

    fn streams(&self) -> Bindings<Self::Streams> {
        hlist![Manifest::bind(self.manifest.clone())]
    }
}

impl Handle for TouchAll {
    fn handle(&self, state: &TouchState, decision: Decision<Self::Streams>) -> Handled<Self> {
        Ok(decision.discover(state.items.clone(), TouchItems))
    }
}

impl Continuation for TouchItems {
    type Prior = Streams![Manifest];
    type Slot = Items;
    type State = TouchState;
    type Error = std::convert::Infallible;
    type Next = NoDiscovery;

    fn resume(self, _: &TouchState, mut decision: Resuming<Self>) -> Resumed<Self> {
        for item in decision.targets(Items) {
            decision.emit_to(Items, &item, ItemEvent::Touched);
        }
        Ok(decision)
    }
}

type Failure = Box<dyn std::error::Error + Send + Sync>;

/// The same work written by hand against the backend trait.
async fn touch_by_hand<B: Backend>(
    store: &B,
    manifest: &StreamId,
    context: &RequestContext,
) -> Result<Committed, Failure> {
    let mut request = AppendRequest::new();
    let mut items = Vec::new();
    for read in store.read(std::slice::from_ref(manifest)).await? {
        for event in &read.events {
            let ManifestEvent::Listed { items: listed } = event.decode()?;
            items = listed;
        }
        request = request.expect(read.stream_id, read.version);
    }
    let mut touched = 0u64;
    for read in store.read(&items).await? {
        for event in &read.events {
            if let ItemEvent::Touched = event.decode()? {
                touched += 1;
            }
        }
        request = request.expect(read.stream_id, read.version);
    }
    black_box(touched);
    for item in items {
        request =
            request.write(item, vec![NewEvent::from_event(&ItemEvent::Touched, context.stamp())?]);
    }
    Ok(store.append(request).await?)
}

/// A fresh store with a manifest listing `n` items, each created.
async fn seed(n: usize) -> (Memory, StreamId) {
    let store = Memory::new();
    let manifest = StreamId::try_new("manifest").unwrap();
    let items: Vec<StreamId> =
        (0..n).map(|i| StreamId::with_category("item", i).unwrap()).collect();
    let stamp = || RequestContext::new().stamp();
    let mut request = AppendRequest::new().expect(manifest.clone(), StreamVersion::EMPTY).write(
        manifest.clone(),
        vec![
            NewEvent::from_event(&ManifestEvent::Listed { items: items.clone() }, stamp()).unwrap(),
        ],
    );
    for item in items {
        request = request
            .expect(item.clone(), StreamVersion::EMPTY)
            .write(item, vec![NewEvent::from_event(&ItemEvent::Created, stamp()).unwrap()]);
    }
    store.append(request).await.unwrap();
    (store, manifest)
}

#[derive(Clone, Copy)]
enum Runner {
    Executor,
    Baseline,
}

/// Runs `iters` executions, on a fresh store every `CHUNK`, and returns the time spent in them.
async fn timed(runner: Runner, n: usize, iters: u64) -> Duration {
    let mut spent = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let (store, manifest) = seed(n).await;
        let batch = left.min(CHUNK);
        left -= batch;
        match runner {
            Runner::Executor => {
                let executor = Executor::new(store);
                let command = TouchAll { manifest };
                let start = Instant::now();
                for _ in 0..batch {
                    black_box(executor.execute(&command).await.unwrap());
                }
                spent += start.elapsed();
            }
            Runner::Baseline => {
                let context = RequestContext::new();
                let start = Instant::now();
                for _ in 0..batch {
                    black_box(touch_by_hand(&store, &manifest, &context).await.unwrap());
                }
                spent += start.elapsed();
            }
        }
    }
    spent
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn bench(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("discovery");
    for n in SIZES {
        group.throughput(Throughput::Elements(n as u64));
        for (name, runner) in [("executor", Runner::Executor), ("baseline", Runner::Baseline)] {
            group.bench_with_input(BenchmarkId::new(name, n), &n, |b, &n| {
                b.to_async(&rt).iter_custom(|iters| timed(runner, n, iters));
            });
        }
    }
    group.finish();
}

/// Time per execution of the executor and of the baseline, measured in alternating batches
/// until about `budget` of work is done, so both see the same machine load; the median batch
/// of each.
fn paired(rt: &tokio::runtime::Runtime, n: usize, budget: Duration) -> (Duration, Duration) {
    let per_batch = CHUNK * 5;
    let (mut executor, mut baseline, mut spent) = (Vec::new(), Vec::new(), Duration::ZERO);
    while spent < budget || executor.len() < 5 {
        for (runner, times) in
            [(Runner::Executor, &mut executor), (Runner::Baseline, &mut baseline)]
        {
            let took = rt.block_on(timed(runner, n, per_batch));
            spent += took;
            times.push(took / u32::try_from(per_batch).unwrap_or(u32::MAX));
        }
    }
    let median = |times: &mut Vec<Duration>| {
        times.sort();
        times[times.len() / 2]
    };
    (median(&mut executor), median(&mut baseline))
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Prints throughput per size, the executor/baseline ratio and the cost per discovered stream.
fn summary() {
    let rt = runtime();
    let budget = Duration::from_secs(1);
    println!(
        "\ndiscovery summary (in-memory backend; median of alternating batches, ~{budget:?} per size)"
    );
    println!(
        "{:>6} {:>14} {:>14} {:>8} {:>16} {:>16}",
        "N", "executor µs", "baseline µs", "ratio", "executor ops/s", "µs/stream (ex.)"
    );
    let mut rows = Vec::new();
    for n in SIZES {
        let (ex, base) = paired(&rt, n, budget);
        println!(
            "{n:>6} {:>14.1} {:>14.1} {:>8.2} {:>16.0} {:>16.2}",
            micros(ex),
            micros(base),
            ex.as_secs_f64() / base.as_secs_f64(),
            1.0 / ex.as_secs_f64(),
            micros(ex) / n as f64,
        );
        rows.push((n, ex, base));
    }
    if let (Some(&(n0, ex0, base0)), Some(&(n1, ex1, base1))) = (rows.first(), rows.last()) {
        let streams = (n1 - n0) as f64;
        println!(
            "marginal cost per discovered stream ({n0} -> {n1}): executor {:.2} µs, baseline {:.2} µs",
            (micros(ex1) - micros(ex0)) / streams,
            (micros(base1) - micros(base0)) / streams,
        );
    }
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    bench(&mut criterion);
    criterion.final_summary();
    // Only in a real benchmark run (`cargo bench`), not under `cargo test --benches` or `--list`.
    let args: Vec<String> = std::env::args().collect();
    let benchmarking =
        args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test" || a == "--list");
    if benchmarking {
        summary();
    }
}
