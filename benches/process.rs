//! A process manager's cost per input as its instance's history grows: N inputs routed to one
//! instance (its stream gains a record per input, and every input folds the state from all
//! the records before it) against the baseline of the same N inputs routed to N instances of
//! one input each (no history), on the in-memory store, in the same process. Prints the time
//! per input of both and their ratio, at N = 1,000 and 4,000; criterion rows at N = 1,000.
//!
//! Run: `cargo bench --bench process`.

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use eventcore::backend::{AppendRequest, LogFilter};
use eventcore::subscription::{Happened, ProcessManager, ProcessRunner, Reaction};
use eventcore::{
    Backend, CorrelationId, EventMetadata, Executor, GlobalPosition, Memory, NewEvent, Payload,
    RecordedEvent, StreamId, StreamVersion,
};

/// Counts the inputs of each instance and reacts to none: each input only adds its record.
struct Counting {
    /// Every input to the instance `one`, or each to an instance of its own.
    one_instance: bool,
}

impl<B: Backend> ProcessManager<B> for Counting {
    type State = u64;
    fn name(&self) -> &str {
        "counting"
    }
    fn filter(&self) -> LogFilter {
        LogFilter::all().category("input")
    }
    fn instance(&self, event: &RecordedEvent) -> Option<String> {
        Some(match self.one_instance {
            true => "one".to_owned(),
            false => event.position.get().to_string(),
        })
    }
    fn apply(&self, seen: &mut u64, _: &Happened) {
        *seen += 1;
    }
    fn react(&self, _: &u64, _: &Happened) -> Vec<Reaction<B>> {
        vec![]
    }
}

/// A store holding `n` events of the category `input`, and the position of the last.
async fn inputs(n: u64) -> (Memory, GlobalPosition) {
    let store = Memory::new();
    let stream = StreamId::try_new("input-1").unwrap();
    let mut last = GlobalPosition::START;
    for i in 0..n {
        let metadata = EventMetadata::new(CorrelationId::new());
        let event = NewEvent::new("Input", 1, Payload::to_json(&i).unwrap(), metadata);
        let request = AppendRequest::new()
            .expect(stream.clone(), StreamVersion::new(i))
            .write(stream.clone(), vec![event]);
        last = store.append(request).await.unwrap().positions.unwrap().1;
    }
    (store, last)
}

/// The time a runner takes to handle `n` inputs, from its start to its checkpoint at the last.
async fn handle(n: u64, one_instance: bool) -> Duration {
    let (store, last) = inputs(n).await;
    let runner = ProcessRunner::new(Executor::new(store), Counting { one_instance })
        .batches(100, Duration::from_millis(1));
    let progress = runner.handle();
    let t = Instant::now();
    let task = tokio::spawn(runner.run());
    progress.wait_for(last, Duration::from_secs(600)).await.unwrap();
    let took = t.elapsed();
    task.abort();
    took
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap()
}

fn criterion_benches(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("process manager, 1,000 inputs/in-memory");
    group.sample_size(10);
    group.bench_function("one instance", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += handle(1_000, true).await;
                }
                total
            })
        })
    });
    group.bench_function("an instance each (baseline)", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += handle(1_000, false).await;
                }
                total
            })
        })
    });
    group.finish();
}

/// Alternating rounds of both, at two sizes: the time per input and the ratio.
fn summary() {
    let rt = runtime();
    println!("\n== Process manager inputs on the in-memory store (5 rounds each) ==");
    for n in [1_000, 4_000] {
        let (mut one, mut each) = (Vec::new(), Vec::new());
        for round in 0..5 {
            let (a, b) = rt.block_on(async {
                if round % 2 == 0 {
                    let a = handle(n, true).await;
                    (a, handle(n, false).await)
                } else {
                    let b = handle(n, false).await;
                    (handle(n, true).await, b)
                }
            });
            one.push(a.as_secs_f64() * 1e6 / n as f64);
            each.push(b.as_secs_f64() * 1e6 / n as f64);
        }
        one.sort_by(f64::total_cmp);
        each.sort_by(f64::total_cmp);
        let (one, each) = (one[2], each[2]);
        println!(
            "{n} inputs: one instance {one:.1} us per input, an instance each {each:.1} us per \
             input; ratio {:.2}",
            one / each
        );
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    targets = criterion_benches
}

fn main() {
    benches();
    summary();
    Criterion::default().configure_from_args().final_summary();
}
