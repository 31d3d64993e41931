//! The PostgreSQL backend under real concurrency: many tokio tasks, one real database.
#![cfg(feature = "postgres")]

#[path = "support/postgres.rs"]
mod postgres_support;

use std::{
    collections::HashSet,
    sync::Arc,
    time::{Duration, Instant},
};

use eventcore::{
    EventId, GlobalPosition, NewEvent, RecordedEvent, StreamVersion,
    backend::{AppendRequest, Backend, Committed, IdempotencyKey, StoreError},
};
use postgres_support::{connect_unmigrated, event, fresh_config, fresh_postgres, id};
use tokio::sync::Barrier;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_concurrent_migrations_on_an_empty_schema_succeed_once() {
    let store = connect_unmigrated(fresh_config()).await;
    let barrier = Arc::new(Barrier::new(8));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (store, barrier) = (store.clone(), Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                store.migrate().await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let schemas: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_namespace WHERE nspname = $1")
        .bind(store.schema().as_str())
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(schemas, 1);
    let versions: i64 =
        sqlx::query_scalar(&format!("SELECT count(*) FROM \"{}\".schema_version", store.schema()))
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(versions, 1);
    let s = id("works");
    store
        .append(
            AppendRequest::new().expect(s.clone(), StreamVersion::EMPTY).write(s, vec![event(1)]),
        )
        .await
        .unwrap();
}

/// `migrate()` does not run under the pool's `statement_timeout`, which is for appends and
/// reads: with one of 20 ms, four concurrent migrations of an empty schema (each waits for
/// the one before to commit, and creating the schema takes longer than 20 ms) all succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migrations_ignore_a_short_statement_timeout() {
    let config = fresh_config().statement_timeout(std::time::Duration::from_millis(20));
    let store = connect_unmigrated(config).await;
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.migrate().await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let version = store.schema_version().await.unwrap();
    assert_eq!(version, Some(eventcore::backend::postgres::Postgres::SCHEMA_VERSION));
    // The pool's timeout still holds for everything else.
    let slow = sqlx::query("SELECT pg_sleep(1)").execute(store.pool()).await;
    assert!(slow.is_err(), "the statement timeout no longer applies");
}

/// Each task reads `x` and `y` and writes to one of them, expecting both versions. Without the
/// read-only check, two tasks that read the same versions could both commit (write skew). With
/// it, successes form one chain: the k-th success saw exactly k-1 earlier events.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn write_skew_is_impossible_under_concurrency() {
    let store = fresh_postgres().await;
    let (x, y) = (id("x"), id("y"));
    let barrier = Arc::new(Barrier::new(8));
    let tasks: Vec<_> = (0..8u64)
        .map(|task| {
            let (store, barrier, x, y) =
                (store.clone(), Arc::clone(&barrier), x.clone(), y.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let mut seen = Vec::new();
                let mut conflicts = 0;
                while seen.len() < 15 {
                    let read = store.read(&[x.clone(), y.clone()]).await.unwrap();
                    let (vx, vy) = (read[0].version, read[1].version);
                    let target = if (task + vx.get() + vy.get()) % 2 == 0 { &x } else { &y };
                    let request = AppendRequest::new()
                        .expect(x.clone(), vx)
                        .expect(y.clone(), vy)
                        .write(target.clone(), vec![event(task)]);
                    match store.append(request).await {
                        Ok(_) => seen.push(vx.get() + vy.get()),
                        Err(StoreError::Conflict(_)) => conflicts += 1,
                        Err(e) => panic!("unexpected error: {e}"),
                    }
                }
                (seen, conflicts)
            })
        })
        .collect();
    let mut totals = Vec::new();
    let mut conflicts = 0;
    for task in tasks {
        let (seen, c) = task.await.unwrap();
        totals.extend(seen);
        conflicts += c;
    }
    totals.sort_unstable();
    assert_eq!(totals, (0..120).collect::<Vec<u64>>(), "two appends saw the same state");
    assert!(conflicts > 0, "the tasks never raced; the test proves nothing");
    let read = store.read(&[x, y]).await.unwrap();
    assert_eq!(read[0].version.get() + read[1].version.get(), 120);
}

/// The two append paths meet: observers read `x` and `y` and record in `y` how many events
/// they saw in `x` (so `x` is only read, and they go through the SQL function), while writers
/// append to `x` alone (the plain INSERT). An observer must never commit after a writer wrote
/// `x` behind its back: every record must equal the number of `x` events before it in the
/// global order (positions follow transaction ids, and a writer only gets its id once the
/// observer holding `x` committed).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_only_read_cannot_move_under_a_writer_of_it() {
    let store = fresh_postgres().await;
    let (x, y) = (id("x"), id("y"));
    let barrier = Arc::new(Barrier::new(8));
    let tasks: Vec<_> = (0..8u64)
        .map(|task| {
            let (store, barrier, x, y) =
                (store.clone(), Arc::clone(&barrier), x.clone(), y.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let (mut done, mut conflicts) = (0, 0);
                while done < 30 {
                    let read = store.read(&[x.clone(), y.clone()]).await.unwrap();
                    let (vx, vy) = (read[0].version, read[1].version);
                    let request = if task % 2 == 0 {
                        AppendRequest::new()
                            .expect(x.clone(), vx)
                            .expect(y.clone(), vy)
                            .write(y.clone(), vec![event(vx.get())])
                    } else {
                        AppendRequest::new().expect(x.clone(), vx).write(x.clone(), vec![event(0)])
                    };
                    match store.append(request).await {
                        Ok(_) => done += 1,
                        Err(StoreError::Conflict(_)) => conflicts += 1,
                        Err(e) => panic!("unexpected error: {e}"),
                    }
                }
                conflicts
            })
        })
        .collect();
    let mut conflicts = 0;
    for task in tasks {
        conflicts += task.await.unwrap();
    }
    assert!(conflicts > 0, "the tasks never raced; the test proves nothing");
    let read = store.read(&[x, y]).await.unwrap();
    let x_positions: Vec<GlobalPosition> = read[0].events.iter().map(|e| e.position).collect();
    assert_eq!((x_positions.len(), read[1].events.len()), (120, 120));
    for record in &read[1].events {
        let saw: u64 = serde_json::from_str(record.payload.as_str()).unwrap();
        let before = x_positions.iter().filter(|p| **p < record.position).count();
        assert_eq!(saw, before as u64, "an observer committed on a stale read of `x`");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_writers_on_one_stream_leave_versions_without_gaps() {
    let store = fresh_postgres().await;
    let s = id("contended");
    let barrier = Arc::new(Barrier::new(8));
    let tasks: Vec<_> = (0..8u64)
        .map(|task| {
            let (store, barrier, s) = (store.clone(), Arc::clone(&barrier), s.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let mut done = 0;
                while done < 25 {
                    let version = store.read(std::slice::from_ref(&s)).await.unwrap()[0].version;
                    let request = AppendRequest::new()
                        .expect(s.clone(), version)
                        .write(s.clone(), vec![event(task), event(task)]);
                    match store.append(request).await {
                        Ok(_) => done += 1,
                        Err(StoreError::Conflict(_)) => {}
                        Err(e) => panic!("unexpected error: {e}"),
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let read = store.read(std::slice::from_ref(&s)).await.unwrap();
    assert_eq!(read[0].version, StreamVersion::new(400));
    let versions: Vec<u64> = read[0].events.iter().map(|e| e.version.get()).collect();
    assert_eq!(versions, (1..=400).collect::<Vec<_>>());
    assert!(read[0].events.windows(2).all(|w| w[0].position < w[1].position));
}

/// Eight appends with one key, at once, on one stream or each on its own: exactly one is the
/// first, every other one gets its result back as a replay, and only its event is stored.
async fn race_one_key(store: &eventcore::backend::postgres::Postgres, same_streams: bool) {
    let key = IdempotencyKey::try_new("only-once").unwrap();
    let barrier = Arc::new(Barrier::new(8));
    let tasks: Vec<_> = (0..8u64)
        .map(|task| {
            let (store, barrier, key) = (store.clone(), Arc::clone(&barrier), key.clone());
            let s = if same_streams { id("shared") } else { id(&format!("own-{task}")) };
            tokio::spawn(async move {
                let request = AppendRequest::new()
                    .expect(s.clone(), StreamVersion::EMPTY)
                    .write(s, vec![event(task)])
                    .idempotent(key);
                barrier.wait().await;
                store.append(request).await.unwrap()
            })
        })
        .collect();
    let mut results: Vec<Committed> = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    let firsts: Vec<&Committed> = results.iter().filter(|c| !c.replayed).collect();
    assert_eq!(firsts.len(), 1, "exactly one append commits: {results:?}");
    for r in &results {
        assert_eq!((&r.streams, r.positions), (&firsts[0].streams, firsts[0].positions));
    }
    assert_eq!(store.read_all(GlobalPosition::START, 100).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_with_one_key_on_one_stream_store_once() {
    race_one_key(&fresh_postgres().await, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_with_one_key_on_different_streams_store_once() {
    race_one_key(&fresh_postgres().await, false).await;
}

/// The key rides on the first event of its append, so one append goes through the plain
/// INSERT and one through the SQL function (it only reads a stream), racing with one key: one
/// of them commits, the other replays its result, round after round.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keyed_appends_by_both_paths_store_once() {
    let store = fresh_postgres().await;
    let read_only = id("only-read");
    let mut function_won = 0;
    for round in 0..40 {
        let key = IdempotencyKey::try_new(format!("both-paths-{round}")).unwrap();
        let (a, b) = (id(&format!("insert-{round}")), id(&format!("function-{round}")));
        let by_insert = AppendRequest::new()
            .expect(a.clone(), StreamVersion::EMPTY)
            .write(a.clone(), vec![event(1)])
            .idempotent(key.clone());
        let by_function = AppendRequest::new()
            .expect(b.clone(), StreamVersion::EMPTY)
            .expect(read_only.clone(), StreamVersion::EMPTY)
            .write(b.clone(), vec![event(2)])
            .idempotent(key);
        let barrier = Arc::new(Barrier::new(2));
        let run = |request: AppendRequest| {
            let (store, barrier) = (store.clone(), Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                store.append(request).await.unwrap()
            })
        };
        let (x, y) = (run(by_insert), run(by_function));
        let (x, y) = (x.await.unwrap(), y.await.unwrap());
        assert_ne!(x.replayed, y.replayed, "round {round}: one commits, one replays");
        assert_eq!((&x.streams, x.positions), (&y.streams, y.positions), "round {round}");
        let stored = store.read(&[a, b]).await.unwrap();
        assert_eq!(stored[0].events.len() + stored[1].events.len(), 1, "round {round}");
        function_won += stored[1].events.len();
    }
    // Each path won about a third of the rounds or more when this was written; both orders
    // must have been exercised for the test to mean anything.
    println!("the function path won {function_won} of 40 rounds");
    assert!((1..40).contains(&function_won), "one path won every round: {function_won} of 40");
}

/// An append without events records no key (it applied nothing); once an append with events
/// committed the key, an empty one with it is a replay of that append.
#[tokio::test]
async fn a_keyed_append_without_events_records_nothing() {
    let store = fresh_postgres().await;
    let (s, key) = (id("later"), IdempotencyKey::try_new("empty-first").unwrap());
    let empty =
        AppendRequest::new().expect(s.clone(), StreamVersion::EMPTY).idempotent(key.clone());
    let first = store.append(empty.clone()).await.unwrap();
    assert_eq!((first.replayed, first.positions), (false, None));
    let writes = AppendRequest::new()
        .expect(s.clone(), StreamVersion::EMPTY)
        .write(s.clone(), vec![event(1)])
        .idempotent(key);
    let wrote = store.append(writes).await.unwrap();
    assert!(!wrote.replayed);
    let again = store.append(empty).await.unwrap();
    assert!(again.replayed);
    assert_eq!((&again.streams, again.positions), (&wrote.streams, wrote.positions));
}

/// Promise 4. Eight writers append for ten seconds while readers page through the log by
/// position. A naive sequence lets a reader pass a position whose transaction commits later;
/// here each reader must see every committed event exactly once, in increasing order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readers_paging_by_position_never_miss_an_event_under_concurrent_writers() {
    let store = fresh_postgres().await;
    let run_for = Duration::from_secs(10);
    let started = Instant::now();
    let writers: Vec<_> = (0..8u64)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut committed: Vec<EventId> = Vec::new();
                let streams = [id(&format!("writer-{w}")), id(&format!("writer-{w}-b"))];
                let mut versions = [StreamVersion::EMPTY; 2];
                let mut n = 0u64;
                while started.elapsed() < run_for {
                    n += 1;
                    // Batches of 1 to 3 events, sometimes over two streams.
                    let batch: Vec<NewEvent> = (0..=(n % 3)).map(|i| event(n * 10 + i)).collect();
                    let ids: Vec<EventId> = batch.iter().map(|e| e.metadata.event_id).collect();
                    let mut request = AppendRequest::new()
                        .expect(streams[0].clone(), versions[0])
                        .write(streams[0].clone(), batch);
                    let two = n % 4 == 0;
                    let mut extra = Vec::new();
                    if two {
                        let e = event(n);
                        extra.push(e.metadata.event_id);
                        request = request
                            .expect(streams[1].clone(), versions[1])
                            .write(streams[1].clone(), vec![e]);
                    }
                    let done = store.append(request).await.unwrap();
                    versions[0] = done.version_of(&streams[0]).unwrap();
                    if two {
                        versions[1] = done.version_of(&streams[1]).unwrap();
                    }
                    committed.extend(ids);
                    committed.extend(extra);
                }
                committed
            })
        })
        .collect();

    // Two readers: one with the default settling wait, one that never waits (it sees only the
    // settled prefix of each page, which is exactly what the xmin rule guarantees).
    let impatient = store.clone().with_read_all_wait(Duration::ZERO);
    let readers: Vec<_> = [store.clone(), impatient]
        .into_iter()
        .map(|reader| {
            tokio::spawn(async move {
                let mut seen: Vec<RecordedEvent> = Vec::new();
                let mut after = GlobalPosition::START;
                while started.elapsed() < run_for + Duration::from_millis(200) {
                    let page = reader.read_all(after, 50).await.unwrap();
                    for e in page {
                        assert!(
                            e.position > after,
                            "position went back: {:?} after {after:?}",
                            e.position
                        );
                        after = e.position;
                        seen.push(e);
                    }
                    tokio::task::yield_now().await;
                }
                (reader, seen, after)
            })
        })
        .collect();

    let mut committed: HashSet<EventId> = HashSet::new();
    for w in writers {
        committed.extend(w.await.unwrap());
    }
    let everything = read_everything(&store).await;
    assert_eq!(everything.len(), committed.len());
    assert_eq!(everything.iter().map(|e| e.event_id()).collect::<HashSet<_>>(), committed);

    for r in readers {
        let (reader, mut seen, mut after) = r.await.unwrap();
        // Writers are done: drain what is left.
        loop {
            let page = reader.read_all(after, 500).await.unwrap();
            let Some(last) = page.last() else { break };
            after = last.position;
            seen.extend(page);
        }
        let seen_ids: Vec<EventId> = seen.iter().map(|e| e.event_id()).collect();
        let all_ids: Vec<EventId> = everything.iter().map(|e| e.event_id()).collect();
        assert_eq!(seen_ids.len(), all_ids.len(), "the reader missed or repeated events");
        assert_eq!(seen_ids, all_ids, "the reader saw another order than the final log");
    }
    println!("{} events by 8 writers in {run_for:?}", committed.len());
}

async fn read_everything(store: &impl Backend) -> Vec<RecordedEvent> {
    let mut all = Vec::new();
    let mut after = GlobalPosition::START;
    loop {
        let page = store.read_all(after, 1000).await.unwrap();
        let Some(last) = page.last() else { return all };
        after = last.position;
        all.extend(page);
    }
}
