//! Zero-cost check: the banking Transfer through the typed executor vs a hand-written function
//! doing the same reads, fold and atomic append directly on the backend, both on the in-memory
//! backend, in the same process. Prints both throughputs and their ratio.
//!
//! A second pair of rows times a two-stream command on fresh streams (nothing to fold, two
//! events appended), the in-memory path's fixed cost per command, against the same read and
//! append written by hand.
//!
//! A third pair appends imported events (ids made elsewhere, written stream after stream, so
//! each stream's ids go back in time) against the same events appended in the order their ids
//! were made.
//!
//! Run: `cargo bench --bench transfer`.

#[path = "../examples/banking/domain.rs"]
mod banking;

use std::time::{Duration, Instant};

use banking::*;
use criterion::{Criterion, criterion_group};
use eventcore::backend::{AppendRequest, IdempotencyKey};
use eventcore::prelude::*;
use eventcore::{EventMetadata, NewEvent, RequestContext, StreamVersion};

/// Accounts per store: transfers rotate over pairs, so stream histories stay short and both
/// paths see the same history sizes.
const PAIRS: usize = 50;

struct Fixture {
    store: Memory,
    executor: Executor<Memory>,
    accounts: Vec<AccountId>,
}

async fn fixture() -> Fixture {
    let store = Memory::new();
    let executor = Executor::new(store.clone());
    let mut accounts = Vec::new();
    for i in 0..PAIRS * 2 {
        let id = AccountId::try_new(&format!("acc-{i}")).unwrap();
        executor.execute(&OpenAccount { account: id.clone(), owner: "o".into() }).await.unwrap();
        executor
            .execute(&Deposit { account: id.clone(), amount: Money::from_cents(1 << 40) })
            .await
            .unwrap();
        accounts.push(id);
    }
    Fixture { store, executor, accounts }
}

fn transfer(f: &Fixture, n: u64) -> Transfer {
    let pair = (n as usize) % PAIRS;
    Transfer::new(
        TransferId::try_new(&format!("t-{n}")).unwrap(),
        f.accounts[pair * 2].clone(),
        f.accounts[pair * 2 + 1].clone(),
        Money::from_cents(1),
    )
    .unwrap()
}

/// The same work as `Transfer` through the executor, written by hand against the backend:
/// one read of the three streams, a fold, the checks, three events, one append checking all
/// three versions with the idempotency key.
async fn hand_written(
    store: &Memory,
    id: &TransferId,
    from: &AccountId,
    to: &AccountId,
    amount: Money,
) -> Result<(), Box<dyn std::error::Error>> {
    let ids = [from.stream_id().clone(), to.stream_id().clone(), id.stream_id().clone()];
    let read = store.read(&ids).await?;
    let mut state = TransferView::default();
    for event in &read[0].events {
        Fold::<FromAccount>::fold(&mut state, &ids[0], &event.decode::<AccountEvent>()?);
    }
    for event in &read[1].events {
        Fold::<ToAccount>::fold(&mut state, &ids[1], &event.decode::<AccountEvent>()?);
    }
    for event in &read[2].events {
        Fold::<Ledger>::fold(&mut state, &ids[2], &event.decode::<TransferEvent>()?);
    }
    if state.completed.is_some() {
        return Ok(());
    }
    if !(state.from.open && state.to.open) {
        return Err(BankError::NotOpen.into());
    }
    state.from.balance.checked_sub(amount)?;
    state.to.balance.checked_add(amount)?;
    let ctx = RequestContext::new();
    let stamp = || -> EventMetadata { ctx.stamp() };
    let out = NewEvent::from_event(
        &AccountEvent::TransferredOut { transfer: id.clone(), to: to.clone(), amount },
        stamp(),
    )?;
    let inn = NewEvent::from_event(
        &AccountEvent::TransferredIn { transfer: id.clone(), from: from.clone(), amount },
        stamp(),
    )?;
    let ledger = NewEvent::from_event(
        &TransferEvent::Completed { from: from.clone(), to: to.clone(), amount },
        stamp(),
    )?;
    let [a, b, c] = ids;
    let request = AppendRequest::new()
        .expect(a.clone(), read[0].version)
        .expect(b.clone(), read[1].version)
        .expect(c.clone(), read[2].version)
        .write(a, vec![out])
        .write(b, vec![inn])
        .write(c, vec![ledger])
        .idempotent(IdempotencyKey::try_new(format!("transfer-{id}"))?);
    store.append(request).await?;
    Ok(())
}

async fn run_typed(f: &Fixture, start: u64, n: u64) -> Duration {
    let commands: Vec<Transfer> = (start..start + n).map(|i| transfer(f, i)).collect();
    let t = Instant::now();
    for c in &commands {
        f.executor.execute(c).await.unwrap();
    }
    t.elapsed()
}

async fn run_hand(f: &Fixture, start: u64, n: u64) -> Duration {
    let args: Vec<(TransferId, AccountId, AccountId)> = (start..start + n)
        .map(|i| {
            let pair = (i as usize) % PAIRS;
            (
                TransferId::try_new(&format!("t-{i}")).unwrap(),
                f.accounts[pair * 2].clone(),
                f.accounts[pair * 2 + 1].clone(),
            )
        })
        .collect();
    let t = Instant::now();
    for (id, from, to) in &args {
        hand_written(&f.store, id, from, to, Money::from_cents(1)).await.unwrap();
    }
    t.elapsed()
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, Event)]
pub enum Ping {
    Pinged { n: u64 },
}

slot!(pub Left: Ping);
slot!(pub Right: Ping);

/// How many pings each side saw: always none here, the streams are fresh.
#[derive(Default, Fold)]
#[fold(Left, Right)]
struct Seen(u64);

impl Apply<Ping> for Seen {
    fn apply(&mut self, _: &Ping) {
        self.0 += 1;
    }
}

/// Pings two streams at once.
#[derive(Command)]
#[command(state = Seen, error = BankError)]
struct PingBoth {
    #[slot(Left)]
    left: StreamId,
    #[slot(Right)]
    right: StreamId,
    n: u64,
}

impl Handle for PingBoth {
    fn handle(&self, seen: &Seen, mut decision: Decision<Self::Streams>) -> Handled<Self> {
        require!(seen.0 == 0, BankError::AlreadyOpen);
        decision.emit(Left, Ping::Pinged { n: self.n }).emit(Right, Ping::Pinged { n: self.n });
        Ok(decision)
    }
}

fn fresh_pairs(start: u64, n: u64) -> Vec<(StreamId, StreamId)> {
    (start..start + n)
        .map(|i| {
            let left = StreamId::try_new(format!("left-{i}")).unwrap();
            (left, StreamId::try_new(format!("right-{i}")).unwrap())
        })
        .collect()
}

async fn run_fresh_typed(executor: &Executor<Memory>, start: u64, n: u64) -> Duration {
    let commands: Vec<PingBoth> = fresh_pairs(start, n)
        .into_iter()
        .zip(start..)
        .map(|((left, right), n)| PingBoth { left, right, n })
        .collect();
    let t = Instant::now();
    for c in &commands {
        executor.execute(c).await.unwrap();
    }
    t.elapsed()
}

/// The same by hand: read both streams, fold (nothing), check, append two stamped events
/// expecting both versions.
async fn run_fresh_hand(store: &Memory, start: u64, n: u64) -> Duration {
    let pairs = fresh_pairs(start, n);
    let t = Instant::now();
    for (i, (left, right)) in pairs.into_iter().enumerate() {
        let ids = [left, right];
        let read = store.read(&ids).await.unwrap();
        let mut seen = 0;
        for stream in &read {
            for event in &stream.events {
                let _: Ping = event.decode().unwrap();
                seen += 1;
            }
        }
        assert_eq!(seen, 0);
        let context = RequestContext::new();
        let event = |n| NewEvent::from_event(&Ping::Pinged { n }, context.stamp()).unwrap();
        let n = start + i as u64;
        let [left, right] = ids;
        let request = AppendRequest::new()
            .expect(left.clone(), read[0].version)
            .expect(right.clone(), read[1].version)
            .write(left, vec![event(n)])
            .write(right, vec![event(n)]);
        store.append(request).await.unwrap();
    }
    t.elapsed()
}

/// Events imported from another store, `streams` streams of `per_stream` events, with the
/// UUIDv7 ids they were given there: stream `s`'s event `e` was made at millisecond
/// `e * streams + s`, so the streams interleave in time. `in_time_order` gives them in the order
/// their ids were made (one stream after another within each millisecond round, as a live
/// system writes them); otherwise one whole stream after another, as an import reads them.
fn imported(streams: u64, per_stream: u64, in_time_order: bool) -> Vec<(StreamId, NewEvent)> {
    let event = |s: u64, e: u64| {
        let millis = 1_700_000_000_000 + e * streams + s;
        let ts = uuid::Timestamp::from_unix(
            uuid::NoContext,
            millis / 1000,
            (millis % 1000) as u32 * 1_000_000,
        );
        let mut metadata = EventMetadata::new(eventcore::CorrelationId::new());
        metadata.event_id = eventcore::EventId::try_from(uuid::Uuid::new_v7(ts)).unwrap();
        let stream = StreamId::try_new(format!("imported-{s}")).unwrap();
        (stream, NewEvent::from_event(&Ping::Pinged { n: e }, metadata).unwrap())
    };
    let mut events = Vec::with_capacity((streams * per_stream) as usize);
    if in_time_order {
        for e in 0..per_stream {
            for s in 0..streams {
                events.push(event(s, e));
            }
        }
    } else {
        for s in 0..streams {
            for e in 0..per_stream {
                events.push(event(s, e));
            }
        }
    }
    events
}

/// Appends each event on its own (an import copies events one by one, checking each stream's
/// version), on a fresh store.
async fn run_import(events: Vec<(StreamId, NewEvent)>) -> Duration {
    let store = Memory::new();
    let mut versions = std::collections::HashMap::new();
    let t = Instant::now();
    for (stream, event) in events {
        let version = versions.entry(stream.clone()).or_insert(StreamVersion::EMPTY);
        let request = AppendRequest::new()
            .expect(stream.clone(), *version)
            .write(stream.clone(), vec![event]);
        *version = store.append(request).await.unwrap().version_of(&stream).unwrap();
    }
    t.elapsed()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap()
}

fn criterion_benches(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("transfer/in-memory");
    group.bench_function("typed executor", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let f = fixture().await;
                run_typed(&f, 0, iters).await
            })
        })
    });
    group.bench_function("hand-written", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let f = fixture().await;
                run_hand(&f, 0, iters).await
            })
        })
    });
    group.finish();

    let mut fresh = c.benchmark_group("two streams, fresh/in-memory");
    fresh.bench_function("typed executor", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let executor = Executor::new(Memory::new());
                run_fresh_typed(&executor, 0, iters).await
            })
        })
    });
    fresh.bench_function("hand-written", |b| {
        b.iter_custom(|iters| rt.block_on(async { run_fresh_hand(&Memory::new(), 0, iters).await }))
    });
    fresh.finish();

    // Criterion's iteration count is the number of events; 100 streams, interleaved in time.
    let mut import = c.benchmark_group("import, one event per append/in-memory");
    import.bench_function("stream after stream", |b| {
        b.iter_custom(|iters| rt.block_on(run_import(imported(100, iters.div_ceil(100), false))))
    });
    import.bench_function("in time order", |b| {
        b.iter_custom(|iters| rt.block_on(run_import(imported(100, iters.div_ceil(100), true))))
    });
    import.finish();
}

/// Interleaved rounds on fresh stores, so both paths share the machine's noise; prints the
/// throughputs and the median ratio.
fn summary() {
    let rt = runtime();
    let (rounds, per_round) = (21, 2000);
    let mut ratios = Vec::new();
    let (mut typed_total, mut hand_total) = (Duration::ZERO, Duration::ZERO);
    for round in 0..rounds {
        let (typed, hand) = rt.block_on(async {
            let f1 = fixture().await;
            let f2 = fixture().await;
            if round % 2 == 0 {
                let t = run_typed(&f1, 0, per_round).await;
                (t, run_hand(&f2, 0, per_round).await)
            } else {
                let h = run_hand(&f2, 0, per_round).await;
                (run_typed(&f1, 0, per_round).await, h)
            }
        });
        typed_total += typed;
        hand_total += hand;
        ratios.push(hand.as_secs_f64() / typed.as_secs_f64());
    }
    ratios.sort_by(f64::total_cmp);
    let n = (rounds as u64 * per_round) as f64;
    println!("\n== Transfer on the in-memory backend ({rounds} rounds x {per_round} transfers) ==");
    println!("typed executor : {:>10.0} transfers/s", n / typed_total.as_secs_f64());
    println!("hand-written   : {:>10.0} transfers/s", n / hand_total.as_secs_f64());
    println!(
        "ratio typed/hand-written throughput: median {:.3} (min {:.3}, max {:.3}; target >= 0.95)",
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1]
    );

    // The fixed cost per command: two fresh streams, nothing to fold, two events.
    let mut typed_us = Vec::new();
    let mut hand_us = Vec::new();
    for round in 0..rounds {
        let n = per_round * 5;
        let (typed, hand) = rt.block_on(async {
            let executor = Executor::new(Memory::new());
            let store = Memory::new();
            if round % 2 == 0 {
                let t = run_fresh_typed(&executor, 0, n).await;
                (t, run_fresh_hand(&store, 0, n).await)
            } else {
                let h = run_fresh_hand(&store, 0, n).await;
                (run_fresh_typed(&executor, 0, n).await, h)
            }
        });
        typed_us.push(typed.as_secs_f64() * 1e6 / n as f64);
        hand_us.push(hand.as_secs_f64() * 1e6 / n as f64);
    }
    typed_us.sort_by(f64::total_cmp);
    hand_us.sort_by(f64::total_cmp);
    println!("\n== Two-stream command on fresh streams, in memory ({rounds} rounds) ==");
    println!("typed executor : median {:.2} us per command", typed_us[typed_us.len() / 2]);
    println!("hand-written   : median {:.2} us per command", hand_us[hand_us.len() / 2]);

    // An import: 200,000 events over 1,000 streams with the ids another store gave them.
    let (streams, per_stream) = (1_000, 200);
    let mut ratios = Vec::new();
    let (mut scattered_total, mut ordered_total) = (Duration::ZERO, Duration::ZERO);
    for round in 0..5 {
        let (scattered, ordered) = rt.block_on(async {
            let (a, b) =
                (imported(streams, per_stream, false), imported(streams, per_stream, true));
            if round % 2 == 0 {
                let s = run_import(a).await;
                (s, run_import(b).await)
            } else {
                let o = run_import(b).await;
                (run_import(a).await, o)
            }
        });
        scattered_total += scattered;
        ordered_total += ordered;
        ratios.push(scattered.as_secs_f64() / ordered.as_secs_f64());
    }
    ratios.sort_by(f64::total_cmp);
    let n = (5 * streams * per_stream) as f64;
    println!(
        "\n== Import of {} events with their own ids, in memory (5 rounds) ==",
        streams * per_stream
    );
    println!("stream after stream: {:>10.0} events/s", n / scattered_total.as_secs_f64());
    println!("in time order      : {:>10.0} events/s", n / ordered_total.as_secs_f64());
    println!(
        "ratio of times, stream after stream / in time order: median {:.3} (min {:.3}, max {:.3})",
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1]
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = criterion_benches
}

/// `TRANSFER_PATH=typed|hand|fresh-typed|fresh-hand|import-streams|import-time cargo bench --bench transfer` runs only
/// that path (`TRANSFER_COUNT` commands after setup, 20,000 unless set) and exits: run it under
/// `valgrind --tool=callgrind` to compare the two paths by instruction count, which machine
/// noise does not move. Two counts (say 10,000 and 20,000) give the instructions per command,
/// setup left out: the difference of the totals over the difference of the counts.
fn single_path(path: &str) {
    let count = match std::env::var("TRANSFER_COUNT") {
        Ok(text) => match text.parse::<u64>() {
            Ok(count) => count,
            Err(e) => panic!("TRANSFER_COUNT must be a count of commands, not {text:?}: {e}"),
        },
        Err(_) => 20_000,
    };
    let rt = runtime();
    rt.block_on(async {
        let f = fixture().await;
        let took = match path {
            "typed" => run_typed(&f, 0, count).await,
            "hand" => run_hand(&f, 0, count).await,
            "fresh-typed" => run_fresh_typed(&f.executor, 0, count).await,
            "fresh-hand" => run_fresh_hand(&f.store, 0, count).await,
            "import-streams" => run_import(imported(1_000, count.div_ceil(1_000), false)).await,
            "import-time" => run_import(imported(1_000, count.div_ceil(1_000), true)).await,
            other => panic!(
                "TRANSFER_PATH must be 'typed', 'hand', 'fresh-typed', 'fresh-hand', \
                 'import-streams' or 'import-time', not {other:?}"
            ),
        };
        println!("{path}: {count} commands in {took:?}");
    });
}

fn main() {
    if let Ok(path) = std::env::var("TRANSFER_PATH") {
        return single_path(&path);
    }
    benches();
    summary();
    Criterion::default().configure_from_args().final_summary();
}
