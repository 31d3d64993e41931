//! The in-memory backend under real concurrency: many writers, readers and subscribers at once
//! on a multi-threaded runtime, each invariant checked against the final log.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventcore::backend::{AppendRequest, Backend, LogFilter, StoreError};
use eventcore::subscription::Subscription;
use eventcore::{
    CorrelationId, EventId, EventMetadata, GlobalPosition, IdempotencyKey, Memory, NewEvent,
    Payload, RecordedEvent, StreamId, StreamVersion,
};

/// Every test ends within this, or fails.
const BOUND: Duration = Duration::from_secs(10);

fn event(event_type: &str, n: u64) -> NewEvent {
    NewEvent::new(
        event_type,
        1,
        Payload::to_json(&n).unwrap(),
        EventMetadata::new(CorrelationId::new()),
    )
}

fn stream(n: usize) -> StreamId {
    let category = ["a", "b", "c"][n % 3];
    StreamId::try_new(format!("{category}-{n}")).unwrap()
}

async fn whole_log(store: &Memory) -> Vec<RecordedEvent> {
    let page = store.read_log(GlobalPosition::START, &LogFilter::all(), usize::MAX).await.unwrap();
    page.into_events().unwrap()
}

/// A tiny deterministic generator per task (no shared RNG state between tasks).
struct Rng(u64);
impl Rng {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

/// What one writer saw of one append it made.
#[derive(Debug, Clone)]
struct Attempt {
    ids: Vec<EventId>,
    /// Streams written, in request order, each with its events' count.
    writes: Vec<(StreamId, usize)>,
    key: Option<IdempotencyKey>,
    outcome: Result<eventcore::backend::Committed, String>,
}

/// 16 writers append to 1-3 of 9 streams in 3 categories, each with the versions it read
/// (conflicts are expected), half of them under idempotency keys that two writers share;
/// meanwhile 6 subscribers (every filter kind, pages of 1 to 7) follow the log live. Then:
/// positions are 1..=n without gaps; every stream's versions are 1..=k; each committed append
/// is in the log whole and contiguous, each failed one not at all; each key committed once,
/// and a replay answers the first commit's positions; and every subscriber saw exactly the
/// events of the final log its filter takes, once each, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writers_readers_and_keys_under_contention_agree_on_one_log() {
    tokio::time::timeout(BOUND, async {
        let store = Memory::new();
        // The log's final length, once the writers are done.
        let (end_tx, end_rx) = tokio::sync::watch::channel(None::<GlobalPosition>);
        let filters = [
            LogFilter::all(),
            LogFilter::all().category("a"),
            LogFilter::all().category("b").category("c"),
            LogFilter::all().event_type("T1"),
            LogFilter::all().category("c").event_type("T0"),
            LogFilter::all().event_type("T2").event_type("T0"),
        ];
        let mut readers = Vec::new();
        for (n, filter) in filters.iter().cloned().enumerate() {
            let store = store.clone();
            let mut end_rx = end_rx.clone();
            readers.push(tokio::spawn(async move {
                let mut sub = Subscription::new(store)
                    .filter(filter)
                    .page_size(NonZeroUsize::new(n + 1).unwrap())
                    .poll_interval(Duration::from_secs(3600))
                    .unwrap();
                let mut seen = Vec::new();
                loop {
                    let end = *end_rx.borrow_and_update();
                    if end.is_some_and(|end| sub.position() >= end) {
                        return seen;
                    }
                    tokio::select! {
                        batch = sub.next_batch() => {
                            let batch = batch.unwrap();
                            assert!(batch.events.len() <= n + 1);
                            for e in batch.events {
                                let e = e.unwrap();
                                assert!(e.position <= batch.position);
                                seen.push(e);
                            }
                        }
                        _ = end_rx.changed(), if end.is_none() => {}
                    }
                }
            }));
        }
        let attempts = Arc::new(Mutex::new(Vec::<Attempt>::new()));
        let mut writers = Vec::new();
        for w in 0..16u64 {
            let store = store.clone();
            let attempts = Arc::clone(&attempts);
            writers.push(tokio::spawn(async move {
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (w + 1).wrapping_mul(0x1000_0001));
                for i in 0..60u64 {
                    let mut chosen: Vec<usize> = (0..1 + rng.next(3))
                        .map(|_| usize::try_from(rng.next(9)).unwrap())
                        .collect();
                    chosen.sort_unstable();
                    chosen.dedup();
                    let ids: Vec<StreamId> = chosen.into_iter().map(stream).collect();
                    let read = store.read(&ids).await.unwrap();
                    let mut request = AppendRequest::new();
                    let mut writes = Vec::new();
                    let mut event_ids = Vec::new();
                    for s in &read {
                        request = request.expect(s.stream_id.clone(), s.version);
                        let count = 1 + usize::try_from(rng.next(2)).unwrap();
                        let events: Vec<NewEvent> = (0..count)
                            .map(|k| event(&format!("T{}", rng.next(3)), i * 10 + k as u64))
                            .collect();
                        event_ids.extend(events.iter().map(|e| e.metadata.event_id));
                        writes.push((s.stream_id.clone(), count));
                        request = request.write(s.stream_id.clone(), events);
                    }
                    // Writers 2k and 2k+1 share their keys.
                    let key = (i % 2 == 0)
                        .then(|| IdempotencyKey::try_new(format!("k-{}-{i}", w / 2)).unwrap());
                    if let Some(key) = &key {
                        request = request.idempotent(key.clone());
                    }
                    tokio::task::yield_now().await;
                    let outcome = store.append(request).await.map_err(|e| match e {
                        StoreError::Conflict(_) => "conflict".to_owned(),
                        other => panic!("unexpected error {other:?}"),
                    });
                    attempts.lock().unwrap().push(Attempt { ids: event_ids, writes, key, outcome });
                }
            }));
        }
        for w in writers {
            w.await.unwrap();
        }
        let log = whole_log(&store).await;
        end_tx.send(Some(GlobalPosition::new(log.len() as u64))).unwrap();
        let mut seen_by = Vec::new();
        for r in readers {
            seen_by.push(r.await.unwrap());
        }

        // Positions 1..=n, stream versions 1..=k.
        let mut versions: HashMap<StreamId, u64> = HashMap::new();
        for (i, e) in log.iter().enumerate() {
            assert_eq!(e.position, GlobalPosition::new(i as u64 + 1));
            let v = versions.entry(e.stream_id.clone()).or_default();
            *v += 1;
            assert_eq!(e.version, StreamVersion::new(*v), "{e:?}");
        }
        let at: HashMap<EventId, usize> =
            log.iter().enumerate().map(|(i, e)| (e.event_id(), i)).collect();
        assert_eq!(at.len(), log.len(), "an event id stored twice");
        let attempts = attempts.lock().unwrap().clone();
        let mut by_key: HashMap<IdempotencyKey, Vec<&Attempt>> = HashMap::new();
        let mut in_log = 0;
        for a in &attempts {
            let stored: Vec<Option<usize>> = a.ids.iter().map(|id| at.get(id).copied()).collect();
            match &a.outcome {
                Ok(c) if !c.replayed => {
                    in_log += a.ids.len();
                    let stored: Vec<usize> = stored.into_iter().map(Option::unwrap).collect();
                    let first = stored[0];
                    assert_eq!(stored, (first..first + a.ids.len()).collect::<Vec<_>>());
                    let (from, to) = c.positions.unwrap();
                    assert_eq!(from, GlobalPosition::new(first as u64 + 1));
                    assert_eq!(to.get() - from.get() + 1, a.ids.len() as u64);
                    // Each stream's events in request order, at the versions reported.
                    let mut i = first;
                    for (s, count) in &a.writes {
                        for _ in 0..*count {
                            assert_eq!(&log[i].stream_id, s);
                            i += 1;
                        }
                        assert_eq!(c.version_of(s), Some(log[i - 1].version));
                    }
                }
                _ => assert!(
                    stored.iter().all(Option::is_none),
                    "a failed or replayed append left events"
                ),
            }
            if let Some(key) = &a.key {
                by_key.entry(key.clone()).or_default().push(a);
            }
        }
        assert_eq!(in_log, log.len(), "events in the log that no committed append made");
        for (key, tries) in by_key {
            let committed: Vec<_> =
                tries.iter().filter(|a| a.outcome.as_ref().is_ok_and(|c| !c.replayed)).collect();
            assert!(committed.len() <= 1, "{key:?} committed twice");
            for replay in tries.iter().filter(|a| a.outcome.as_ref().is_ok_and(|c| c.replayed)) {
                let first = committed.first().expect("a replay of a key never committed");
                assert_eq!(
                    replay.outcome.as_ref().unwrap().positions,
                    first.outcome.as_ref().unwrap().positions
                );
            }
        }
        for (filter, seen) in filters.iter().zip(seen_by) {
            let want: Vec<GlobalPosition> =
                log.iter().filter(|e| filter.matches(e)).map(|e| e.position).collect();
            let got: Vec<GlobalPosition> = seen.iter().map(|e| e.position).collect();
            assert_eq!(got, want, "{filter:?}");
        }
    })
    .await
    .expect("stress test took too long");
}

/// Readers paging the log with `read_log` alone while 8 writers append: each page's positions
/// are strictly increasing, above `after` and at most `checked_to`, `checked_to` never goes
/// back, and paging to the end finds exactly the filtered final log.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pages_read_during_appends_never_skip_or_repeat() {
    tokio::time::timeout(BOUND, async {
        let store = Memory::new();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let filters = [
            LogFilter::all(),
            LogFilter::all().category("b"),
            LogFilter::all().event_type("T2"),
            LogFilter::all().category("a").category("c").event_type("T1"),
        ];
        let mut readers = Vec::new();
        for (n, filter) in filters.iter().cloned().enumerate() {
            let store = store.clone();
            let stop = stop_rx.clone();
            readers.push(tokio::spawn(async move {
                let mut at = GlobalPosition::START;
                let mut seen = Vec::new();
                let mut stopping = false;
                loop {
                    let page = store.read_log(at, &filter, 1 + n % 3).await.unwrap();
                    assert!(page.checked_to >= at);
                    for e in page.entries {
                        let e = e.unwrap();
                        assert!(e.position > at && e.position <= page.checked_to);
                        assert!(seen.last().is_none_or(|p| *p < e.position));
                        assert!(filter.matches(&e));
                        seen.push(e.position);
                    }
                    at = page.checked_to;
                    if stopping && page.caught_up {
                        return seen;
                    }
                    stopping = *stop.borrow();
                    tokio::task::yield_now().await;
                }
            }));
        }
        let mut writers = Vec::new();
        for w in 0..8usize {
            let store = store.clone();
            writers.push(tokio::spawn(async move {
                let mut rng = Rng(0xDEAD_BEEF ^ (w as u64 + 7).wrapping_mul(0x2545_F491));
                for i in 0..150u64 {
                    // Each writer owns streams of its own: no conflicts.
                    let s = stream(w * 3 + usize::try_from(rng.next(3)).unwrap());
                    let s2 = stream(100 + w * 3 + usize::try_from(rng.next(3)).unwrap());
                    let read = store.read(&[s.clone(), s2.clone()]).await.unwrap();
                    let request = AppendRequest::new()
                        .expect(s.clone(), read[0].version)
                        .expect(s2.clone(), read[1].version)
                        .write(s, vec![event(&format!("T{}", rng.next(3)), i)])
                        .write(s2, vec![event(&format!("T{}", rng.next(3)), i)]);
                    store.append(request).await.unwrap();
                }
            }));
        }
        for w in writers {
            w.await.unwrap();
        }
        stop_tx.send(true).unwrap();
        let log = whole_log(&store).await;
        assert_eq!(log.len(), 8 * 150 * 2);
        for (filter, r) in filters.iter().zip(readers) {
            let got = r.await.unwrap();
            let want: Vec<GlobalPosition> =
                log.iter().filter(|e| filter.matches(e)).map(|e| e.position).collect();
            assert_eq!(got, want, "{filter:?}");
        }
    })
    .await
    .expect("stress test took too long");
}

/// Live subscribers with a poll interval far longer than the test are woken by every append:
/// 16 waiters each wait for one append at a time (lockstep, so every append finds them
/// parked or about to park), 200 rounds. A lost wake-up shows as a timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_append_wakes_every_live_subscriber() {
    tokio::time::timeout(BOUND, async {
        let store = Memory::new();
        let rounds = 200u64;
        let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<(usize, u64)>();
        let mut subs = Vec::new();
        for n in 0..16usize {
            let store = store.clone();
            let seen_tx = seen_tx.clone();
            let filter = if n % 2 == 0 { LogFilter::all() } else { LogFilter::all().category("a") };
            subs.push(tokio::spawn(async move {
                let mut sub = Subscription::new(store)
                    .filter(filter)
                    .poll_interval(Duration::from_secs(3600))
                    .unwrap();
                while sub.position() < GlobalPosition::new(rounds) {
                    let batch = sub.next_batch().await.unwrap();
                    seen_tx.send((n, batch.position.get())).unwrap();
                }
            }));
        }
        drop(seen_tx);
        let id = StreamId::try_new("a-1").unwrap();
        let mut reached = vec![0u64; 16];
        for r in 0..rounds {
            let request = AppendRequest::new()
                .expect(id.clone(), StreamVersion::new(r))
                .write(id.clone(), vec![event("T0", r)]);
            store.append(request).await.unwrap();
            // Every subscriber reaches this append before the next one.
            while reached.iter().any(|&p| p < r + 1) {
                let (n, p) = tokio::time::timeout(Duration::from_secs(2), seen_rx.recv())
                    .await
                    .unwrap_or_else(|_| {
                        panic!("round {r}: a subscriber was never woken: {reached:?}")
                    })
                    .unwrap();
                reached[n] = reached[n].max(p);
            }
        }
        for s in subs {
            s.await.unwrap();
        }
    })
    .await
    .expect("stress test took too long");
}

/// Appends dropped at every await point, many at once: each either committed whole or left
/// nothing, and the log stays consistent (the in-memory append has no await point inside the
/// write, so a drop cannot split one).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dropped_appends_commit_whole_or_not_at_all() {
    tokio::time::timeout(BOUND, async {
        let store = Memory::new();
        let mut tasks = Vec::new();
        let outcomes = Arc::new(Mutex::new(BTreeMap::<EventId, bool>::new()));
        for t in 0..16usize {
            let store = store.clone();
            let outcomes = Arc::clone(&outcomes);
            tasks.push(tokio::spawn(async move {
                for i in 0..50u64 {
                    let a = stream(t * 2);
                    let b = stream(t * 2 + 1);
                    let read = store.read(&[a.clone(), b.clone()]).await.unwrap();
                    let ea = event("T0", i);
                    let eb = event("T1", i);
                    let (ida, idb) = (ea.metadata.event_id, eb.metadata.event_id);
                    let request = AppendRequest::new()
                        .expect(a.clone(), read[0].version)
                        .expect(b.clone(), read[1].version)
                        .write(a, vec![ea])
                        .write(b, vec![eb]);
                    let fut = store.append(request);
                    // Drop it before it is polled, or race it against an immediate timeout.
                    let committed = if i % 3 == 0 {
                        drop(fut);
                        false
                    } else {
                        tokio::time::timeout(Duration::ZERO, fut).await.is_ok_and(|r| r.is_ok())
                    };
                    let mut o = outcomes.lock().unwrap();
                    o.insert(ida, committed);
                    o.insert(idb, committed);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let log = whole_log(&store).await;
        let ids: HashSet<EventId> = log.iter().map(RecordedEvent::event_id).collect();
        for (id, committed) in outcomes.lock().unwrap().iter() {
            assert_eq!(ids.contains(id), *committed, "{id}");
        }
        for (i, e) in log.iter().enumerate() {
            assert_eq!(e.position, GlobalPosition::new(i as u64 + 1));
        }
    })
    .await
    .expect("stress test took too long");
}

/// The positions one runner value applied, in the order it applied them.
type Applied = Arc<Mutex<Vec<GlobalPosition>>>;

/// A projection that records, per runner value, the positions it applied.
struct Record {
    applied: Arc<Mutex<Vec<GlobalPosition>>>,
}

impl eventcore::subscription::Projection<Memory> for Record {
    type Error = std::convert::Infallible;
    fn name(&self) -> &str {
        "stress"
    }
    async fn apply(
        &mut self,
        _: &mut eventcore::backend::MemoryTx,
        e: &RecordedEvent,
    ) -> Result<(), Self::Error> {
        // Give other tasks a chance mid-batch: aborts land between events.
        tokio::task::yield_now().await;
        self.applied.lock().unwrap().push(e.position);
        Ok(())
    }
}

/// Two runners of one projection with 20 ms leases race while 4 writers append; one of them is
/// aborted mid-batch and restarted (a fresh value) 10 times. No event is lost (every event is
/// in some value), each value holds its events in increasing order, and the checkpoint and
/// `wait_for` reach the end of the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_projection_runners_lose_nothing_and_reach_the_end() {
    use eventcore::subscription::{ProjectionRunner, ProjectionStore};
    tokio::time::timeout(BOUND, async {
        let store = Memory::new();
        let values: Arc<Mutex<Vec<Applied>>> = Arc::default();
        let start = |store: &Memory| {
            let applied = Arc::new(Mutex::new(Vec::new()));
            values.lock().unwrap().push(Arc::clone(&applied));
            let runner = ProjectionRunner::new(store.clone(), Record { applied })
                .lease(Duration::from_millis(20))
                .batches(4, Duration::from_millis(5));
            let handle = runner.handle();
            (tokio::spawn(runner.run()), handle)
        };
        let (steady, steady_handle) = start(&store);
        let mut writers = Vec::new();
        for w in 0..4usize {
            let store = store.clone();
            writers.push(tokio::spawn(async move {
                let s = stream(w);
                for i in 0..100u64 {
                    let request = AppendRequest::new()
                        .expect(s.clone(), StreamVersion::new(i))
                        .write(s.clone(), vec![event("T0", i)]);
                    store.append(request).await.unwrap();
                    if i % 10 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            }));
        }
        for _ in 0..10 {
            let (task, handle) = start(&store);
            // Abort once it has applied something, mid-batch or not.
            let at = GlobalPosition::new(store.len() as u64);
            let _ = handle.wait_for(at, Duration::from_millis(200)).await;
            task.abort();
            let _ = task.await;
        }
        for w in writers {
            w.await.unwrap();
        }
        let end = GlobalPosition::new(store.len() as u64);
        let (last, last_handle) = start(&store);
        steady_handle.wait_for(end, Duration::from_secs(5)).await.unwrap();
        let _ = last_handle;
        steady.abort();
        last.abort();
        assert_eq!(store.checkpoint("stress").await.unwrap(), Some(end));
        let mut union = HashSet::new();
        for value in values.lock().unwrap().iter() {
            let applied = value.lock().unwrap().clone();
            assert!(
                applied.windows(2).all(|w| w[0] < w[1]),
                "a value applied out of order or twice: {applied:?}"
            );
            union.extend(applied);
        }
        for p in 1..=end.get() {
            assert!(union.contains(&GlobalPosition::new(p)), "position {p} never applied");
        }
    })
    .await
    .expect("stress test took too long");
}

mod keyed {
    use eventcore::prelude::*;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Serialize, Deserialize)]
    pub struct Bumped(pub u64);

    impl Event for Bumped {
        const EVENT_TYPE: &'static str = "Bumped";
    }

    slot!(pub Counter: Bumped);

    #[derive(Default)]
    pub struct Count(pub u64);

    impl Fold<Counter> for Count {
        fn fold(&mut self, _: &StreamId, _: &Bumped) {
            self.0 += 1;
        }
    }

    /// Bumps a counter once per key: `n` names the key and is stored in the event.
    pub struct Bump {
        pub counter: StreamId,
        pub n: u64,
    }

    impl Command for Bump {
        type Streams = Streams![Counter];
        type State = Count;
        type Error = std::convert::Infallible;
        type Continuation = NoDiscovery;

        fn streams(&self) -> Bindings<Self::Streams> {
            hlist![Counter::bind(self.counter.clone())]
        }

        fn idempotency_key(&self) -> Option<IdempotencyKey> {
            Some(IdempotencyKey::try_new(format!("bump-{}", self.n)).unwrap())
        }
    }

    impl Handle for Bump {
        fn handle(&self, _: &Count, mut d: Decision<Self::Streams>) -> Handled<Self> {
            d.emit(Counter, Bumped(self.n));
            Ok(d)
        }
    }
}

/// 16 tasks on two executors of one store run keyed commands over 4 counters; each key is run
/// by two tasks, and a third of the runs are dropped part-way (after 0 to 5 scheduler turns) and run
/// again: every key's event is in the log exactly once, and every run that returned answers
/// the same positions for its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keyed_commands_run_twice_and_dropped_midway_commit_once() {
    use keyed::{Bump, Bumped};
    tokio::time::timeout(BOUND, async {
        let store = Memory::new();
        let executors =
            [eventcore::Executor::new(store.clone()), eventcore::Executor::new(store.clone())];
        let answers = Arc::new(Mutex::new(HashMap::<
            u64,
            Vec<Option<(GlobalPosition, GlobalPosition)>>,
        >::new()));
        let mut tasks = Vec::new();
        for t in 0..16u64 {
            let executor = executors[usize::try_from(t % 2).unwrap()].clone();
            let answers = Arc::clone(&answers);
            tasks.push(tokio::spawn(async move {
                let mut rng = Rng(0x1234_5678 ^ (t + 3).wrapping_mul(0x9E37_79B9));
                // Tasks 2k and 2k+1 run the same 40 keys.
                for i in 0..40u64 {
                    let n = (t / 2) * 40 + i;
                    let bump = Bump { counter: stream(usize::try_from(n % 4).unwrap()), n };
                    if rng.next(3) == 0 {
                        // Dropped after 0 to 5 turns of the scheduler: at whichever await
                        // point it then is (its turn on the stream, the read, the append).
                        let turns = rng.next(6);
                        let give_up = async {
                            for _ in 0..turns {
                                tokio::task::yield_now().await;
                            }
                        };
                        tokio::select! {
                            biased;
                            _ = executor.execute(&bump) => {}
                            () = give_up => {}
                        }
                    }
                    let done = executor.execute(&bump).await.unwrap();
                    answers.lock().unwrap().entry(n).or_default().push(done.committed.positions);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let log = whole_log(&store).await;
        let mut count = HashMap::<u64, usize>::new();
        for e in &log {
            let Bumped(n) = e.decode::<Bumped>().unwrap();
            *count.entry(n).or_default() += 1;
        }
        assert_eq!(count.len(), 8 * 40);
        assert!(count.values().all(|&c| c == 1), "a key committed twice");
        for (n, positions) in answers.lock().unwrap().iter() {
            assert!(positions.windows(2).all(|w| w[0] == w[1]), "key {n}: {positions:?}");
        }
    })
    .await
    .expect("stress test took too long");
}

/// A stop in a handler, on one runner value: `reached` says the handler got to `at`, a permit
/// on `release` lets it go on.
struct Gate {
    at: GlobalPosition,
    release: Arc<tokio::sync::Semaphore>,
    reached: tokio::sync::mpsc::UnboundedSender<()>,
}

/// A gate at `at`, the semaphore that opens it, and what says it was reached.
fn gate(
    at: GlobalPosition,
) -> (Gate, Arc<tokio::sync::Semaphore>, tokio::sync::mpsc::UnboundedReceiver<()>) {
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let (reached, arrived) = tokio::sync::mpsc::unbounded_channel();
    (Gate { at, release: Arc::clone(&release), reached }, release, arrived)
}

/// A projection whose handler may stop at a gate, and may refuse one position (so that its
/// runner parks it); it records what it applied to its value.
struct Gated {
    name: &'static str,
    applied: Arc<Mutex<Vec<GlobalPosition>>>,
    refuse: Option<GlobalPosition>,
    gate: Option<Gate>,
}

impl Gated {
    fn new(name: &'static str, gate: Option<Gate>) -> Self {
        Self { name, applied: Arc::default(), refuse: None, gate }
    }

    fn refusing(name: &'static str, at: GlobalPosition) -> Self {
        Self { refuse: Some(at), ..Self::new(name, None) }
    }
}

impl eventcore::subscription::Projection<Memory> for Gated {
    type Error = std::io::Error;
    fn name(&self) -> &str {
        self.name
    }
    async fn apply(
        &mut self,
        _: &mut eventcore::backend::MemoryTx,
        e: &RecordedEvent,
    ) -> Result<(), Self::Error> {
        if self.refuse == Some(e.position) {
            return Err(std::io::Error::other(format!("refused at {}", e.position)));
        }
        if let Some(gate) = self.gate.take_if(|g| g.at == e.position) {
            let _ = gate.reached.send(());
            gate.release.acquire().await.unwrap().forget();
        }
        self.applied.lock().unwrap().push(e.position);
        Ok(())
    }
}

type GatedRunner = eventcore::subscription::ProjectionRunner<Memory, Gated>;

/// A store holding `events` events in one stream, at positions 1 to `events`.
async fn seeded(events: u64) -> Memory {
    let store = Memory::new();
    let s = stream(0);
    for i in 0..events {
        let request = AppendRequest::new()
            .expect(s.clone(), StreamVersion::new(i))
            .write(s.clone(), vec![event("T0", i)]);
        store.append(request).await.unwrap();
    }
    store
}

/// A runner of `value` with a lease short enough for a hand-over within a test.
fn gated_runner(store: &Memory, value: Gated) -> GatedRunner {
    eventcore::subscription::ProjectionRunner::new(store.clone(), value)
        .lease(Duration::from_millis(30))
        .batches(10, Duration::from_millis(5))
}

/// Runner A hangs in its handler at position 2 past its lease; runner B claims the lease,
/// reaches position 2 too and dies there (aborted) without committing it; then A is let go.
/// A's commit is refused (B claimed since), and once B's lease runs out A claims again from
/// the checkpoint, below 2, though A's value holds event 2. Both runners are made by
/// `configure`. Returns A's handle, task and what its value applied.
async fn a_hangs_and_b_dies_at_2(
    store: &Memory,
    name: &'static str,
    configure: fn(GatedRunner) -> GatedRunner,
) -> (
    eventcore::subscription::ProjectionHandle<Memory>,
    tokio::task::JoinHandle<
        Result<std::convert::Infallible, eventcore::subscription::ProjectionError>,
    >,
    Arc<Mutex<Vec<GlobalPosition>>>,
) {
    let at2 = GlobalPosition::new(2);
    let (a_gate, a_release, mut a_at) = gate(at2);
    let a_value = Gated::new(name, Some(a_gate));
    let a_applied = Arc::clone(&a_value.applied);
    let a = configure(gated_runner(store, a_value));
    let a_handle = a.handle();
    let a_task = tokio::spawn(a.run());
    a_at.recv().await.unwrap();
    let (b_gate, _b_release, mut b_at) = gate(at2);
    let b_task = tokio::spawn(configure(gated_runner(store, Gated::new(name, Some(b_gate)))).run());
    b_at.recv().await.unwrap();
    b_task.abort();
    let _ = b_task.await;
    a_release.add_permits(1);
    (a_handle, a_task, a_applied)
}

/// The in-memory read model is the runner's value: after the hand-over above, applying event
/// 2 again from the checkpoint would count it twice in A's value.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_runner_that_lost_its_lease_mid_event_does_not_apply_it_twice_to_its_value() {
    tokio::time::timeout(BOUND, async {
        let store = seeded(3).await;
        let (a_handle, a_task, a_applied) = a_hangs_and_b_dies_at_2(&store, "gated", |r| r).await;
        a_handle.wait_for(GlobalPosition::new(3), Duration::from_secs(5)).await.unwrap();
        a_task.abort();
        let applied = a_applied.lock().unwrap().clone();
        assert_eq!(
            applied,
            [1, 2, 3].map(GlobalPosition::new),
            "runner A's value applied an event twice"
        );
    })
    .await
    .expect("test took too long");
}

/// The same for a parked event applied again: event 2 was parked; A applies it from the list
/// and hangs past its lease before taking it off; B claims, hangs at it too, and dies. A's
/// commit is refused, and its next pass finds the event still parked: applying it to A's
/// value again would count it twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_runner_that_lost_its_lease_applying_a_parked_event_does_not_apply_it_twice() {
    use eventcore::subscription::{OnFailure, ProjectionStore};
    tokio::time::timeout(BOUND, async {
        let store = seeded(3).await;
        let at2 = GlobalPosition::new(2);
        gated_runner(&store, Gated::refusing("parked-gated", at2))
            .retries(0, Duration::from_millis(1), Duration::from_millis(1))
            .on_failure(OnFailure::Park)
            .catch_up()
            .await
            .unwrap();
        assert_eq!(store.parked("parked-gated").await.unwrap().len(), 1);
        let (a_handle, a_task, a_applied) =
            a_hangs_and_b_dies_at_2(&store, "parked-gated", GatedRunner::retry_parked).await;
        a_handle.wait_until(|s| s.unparked >= 1, Duration::from_secs(5)).await.unwrap();
        a_task.abort();
        assert!(store.parked("parked-gated").await.unwrap().is_empty(), "the event stays parked");
        let applied = a_applied.lock().unwrap().clone();
        assert_eq!(applied, [at2], "runner A's value applied the parked event twice");
    })
    .await
    .expect("test took too long");
}

/// Runner A hangs at 2 past its lease; runner B claims, fails on 2 and parks it, and applies on.
/// A's handler then returns: its commit is refused, and once B is gone A claims again and
/// applies the parked events again. A's value holds event 2 already: applying it again would
/// count it twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_another_runner_parked_after_a_lost_commit_is_not_applied_twice() {
    use eventcore::subscription::OnFailure;
    tokio::time::timeout(BOUND, async {
        let store = seeded(3).await;
        let at2 = GlobalPosition::new(2);
        let (a_gate, a_release, mut a_at) = gate(at2);
        let a_value = Gated::new("parked-later", Some(a_gate));
        let a_applied = Arc::clone(&a_value.applied);
        let a = gated_runner(&store, a_value).retry_parked();
        let a_handle = a.handle();
        let a_task = tokio::spawn(a.run());
        a_at.recv().await.unwrap();
        // A hangs at 2; B takes the lease once it runs out, refuses 2, parks it, goes on.
        let b = gated_runner(&store, Gated::refusing("parked-later", at2))
            .retries(0, Duration::from_millis(1), Duration::from_millis(1))
            .on_failure(OnFailure::Park);
        let b_handle = b.handle();
        let b_task = tokio::spawn(b.run());
        b_handle.wait_for(GlobalPosition::new(3), Duration::from_secs(5)).await.unwrap();
        assert_eq!(b_handle.status().parked, 1);
        b_task.abort();
        let _ = b_task.await;
        // A goes on; B's lease runs out and A claims it again, and takes 2 off the list.
        a_release.add_permits(1);
        a_handle.wait_until(|s| s.unparked >= 1, Duration::from_secs(5)).await.unwrap();
        a_task.abort();
        let applied = a_applied.lock().unwrap().clone();
        assert_eq!(
            applied.iter().filter(|&&p| p == at2).count(),
            1,
            "runner A's value applied event 2 twice: {applied:?}"
        );
    })
    .await
    .expect("test took too long");
}

/// The hand-over above with event 2 the last: A, claiming again, starts after 2 (its value
/// holds it) and is live there. Its stored checkpoint must say so too: left at 1, a standby's
/// lag and wait, and any later runner value, see an event pending that the read model holds,
/// for as long as the log stays quiet.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_runner_that_claims_back_past_its_checkpoint_stores_where_it_is() {
    use eventcore::subscription::{ProjectionStore, RunnerState};
    tokio::time::timeout(BOUND, async {
        let store = seeded(2).await;
        let at2 = GlobalPosition::new(2);
        let (a_handle, a_task, _) = a_hangs_and_b_dies_at_2(&store, "gated", |r| r).await;
        // A's commit of 2 is refused; it stands by, then claims again and is live after 2.
        a_handle
            .wait_until(|s| s.state == RunnerState::Standby, Duration::from_secs(5))
            .await
            .unwrap();
        a_handle
            .wait_until(
                |s| s.state == RunnerState::Live && s.position >= at2,
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        let stored = store.checkpoint("gated").await.unwrap();
        a_task.abort();
        assert_eq!(stored, Some(at2), "live after 2, its stored checkpoint says otherwise");
    })
    .await
    .expect("test took too long");
}
