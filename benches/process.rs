//! A process manager's cost per input as its instance's history grows: N inputs routed to one
//! instance (its stream gains a record per input, and every input folds the state from all
//! the records before it) against the baseline of the same N inputs routed to N instances of
//! one input each (no history), on the in-memory store, in the same process. Prints the time
//! per input of both and their ratio, at N = 1,000 and 4,000; criterion rows at N = 1,000.
//!
//! Then what a takeover costs in the manager's history: a new runner taking over N instances
//! whose timers fired and were handled, against the same N instances with their timers still
//! set (nothing to handle again), from its start to its handling of the next event (N = 5,000
//! and 20,000, printed only); and the takeover after it, which starts from the takeover
//! snapshot the first stored, against the first.
//!
//! Run: `cargo bench --bench process`.

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use eventcore::backend::{AppendRequest, LogFilter};
use eventcore::subscription::{
    Happened, ManualClock, ProcessManager, ProcessRunner, ProjectionStore, Reaction,
};
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
    let mut last = GlobalPosition::START;
    for i in 0..n {
        last = append_input(&store, i).await;
    }
    (store, last)
}

/// Appends input `i` to `input-1`, at version `i`; answers its position.
async fn append_input(store: &Memory, i: u64) -> GlobalPosition {
    let stream = StreamId::try_new("input-1").unwrap();
    let metadata = EventMetadata::new(CorrelationId::new());
    let event = NewEvent::new("Input", 1, Payload::to_json(&i).unwrap(), metadata);
    let request = AppendRequest::new()
        .expect(stream.clone(), StreamVersion::new(i))
        .write(stream, vec![event]);
    store.append(request).await.unwrap().positions.unwrap().1
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

/// Sets a timer on each input, its own instance, and answers the timeout with nothing.
struct Timing;

impl<B: Backend> ProcessManager<B> for Timing {
    type State = ();
    fn name(&self) -> &str {
        "timing"
    }
    fn filter(&self) -> LogFilter {
        LogFilter::all().category("input")
    }
    fn instance(&self, event: &RecordedEvent) -> Option<String> {
        Some(event.position.get().to_string())
    }
    fn apply(&self, _: &mut (), _: &Happened) {}
    fn react(&self, _: &(), happened: &Happened) -> Vec<Reaction<B>> {
        match happened {
            Happened::Event(_) => vec![Reaction::schedule("t", Duration::from_secs(60))],
            _ => vec![],
        }
    }
}

/// A runner of `Timing` with a short lease, so that the next one takes over soon after it is
/// aborted.
fn timing(store: &Memory, clock: &ManualClock) -> ProcessRunner<Memory, Timing> {
    ProcessRunner::new(Executor::new(store.clone()), Timing)
        .clock(clock.clone())
        .lease(Duration::from_millis(10))
        .batches(500, Duration::from_millis(1))
}

/// The times two runners take, one after the other, taking over `n` instances of `Timing`
/// (whose timers `fired`, or are still set), each from its start to its handling of one more
/// input: the first reads every record of the manager's history, the second only those
/// written after the takeover snapshot the first stored.
async fn take_over(n: u64, fired: bool) -> [Duration; 2] {
    let (store, last) = inputs(n).await;
    let clock = ManualClock::new();
    let first = timing(&store, &clock);
    let progress = first.handle();
    let task = tokio::spawn(first.run());
    progress.wait_for(last, Duration::from_secs(600)).await.unwrap();
    if fired {
        clock.advance(Duration::from_secs(61));
        // Until every timer has fired: the log stops growing (a bench, not a test: polled).
        let mut head = GlobalPosition::START;
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let now = store.log_stats(GlobalPosition::START, 0).await.unwrap().head;
            if now == head && now.get() >= 4 * n {
                break;
            }
            head = now;
        }
    }
    task.abort();
    let mut took = [Duration::ZERO; 2];
    for (i, took) in took.iter_mut().enumerate() {
        // The aborted runner's lease runs out.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let probe = append_input(&store, n + i as u64).await;
        let next = timing(&store, &clock);
        let progress = next.handle();
        let t = Instant::now();
        let task = tokio::spawn(next.run());
        progress.wait_for(probe, Duration::from_secs(600)).await.unwrap();
        *took = t.elapsed();
        task.abort();
    }
    took
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap()
}

fn criterion_benches(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("process manager, 1,000 inputs/in-memory");
    group.sample_size(10);
    for (name, one_instance) in [("one instance", true), ("an instance each (baseline)", false)] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += handle(1_000, one_instance).await;
                    }
                    total
                })
            })
        });
    }
    group.finish();
}

/// The median times of `rounds` runs of `measured(true)` and of `measured(false)`, which take
/// turns going first.
fn medians(rounds: usize, measured: impl AsyncFn(bool) -> Duration) -> (Duration, Duration) {
    let rt = runtime();
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        rt.block_on(async {
            if round % 2 == 0 {
                on.push(measured(true).await);
                off.push(measured(false).await);
            } else {
                off.push(measured(false).await);
                on.push(measured(true).await);
            }
        });
    }
    on.sort();
    off.sort();
    (on[rounds / 2], off[rounds / 2])
}

/// Alternating rounds of both, at two sizes: the time per input and the ratio.
fn summary() {
    println!("\n== Process manager inputs on the in-memory store (5 rounds each) ==");
    for n in [1_000, 4_000] {
        let (one, each) = medians(5, async |one| handle(n, one).await);
        let (one, each) = (one.as_secs_f64() * 1e6 / n as f64, each.as_secs_f64() * 1e6 / n as f64);
        println!(
            "{n} inputs: one instance {one:.1} us per input, an instance each {each:.1} us per \
             input; ratio {:.2}",
            one / each
        );
    }
}

/// Alternating rounds of takeovers after the timers fired and with them still set: the first
/// takeover (the whole history) and the next (from the snapshot the first stored).
fn takeover_summary() {
    println!("\n== Process manager takeover on the in-memory store (3 rounds each) ==");
    let rt = runtime();
    for n in [5_000, 20_000] {
        // [fired, set] x [whole history, from the snapshot]
        let mut samples: [[Vec<Duration>; 2]; 2] = Default::default();
        for round in 0..3 {
            let order = if round % 2 == 0 { [true, false] } else { [false, true] };
            for fired in order {
                let took = rt.block_on(take_over(n, fired));
                for (column, took) in samples[usize::from(!fired)].iter_mut().zip(took) {
                    column.push(took);
                }
            }
        }
        let [[fired, fired_kept], [set, set_kept]] = samples.map(|kind| {
            kind.map(|mut column| {
                column.sort();
                column[column.len() / 2].as_secs_f64() * 1e3
            })
        });
        println!(
            "{n} instances: takeover reading the whole history, after their timers fired \
             {fired:.1} ms, with the timers still set (baseline) {set:.1} ms; ratio {:.2}",
            fired / set
        );
        println!(
            "{n} instances: the next takeover, from the takeover snapshot, after the timers \
             fired {fired_kept:.1} ms ({:.2} of the whole history's), with the timers still set \
             {set_kept:.1} ms ({:.2})",
            fired_kept / fired,
            set_kept / set
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
    takeover_summary();
    Criterion::default().configure_from_args().final_summary();
}
