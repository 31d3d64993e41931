//! Group commit on PostgreSQL: appends that queue while others are in flight share one
//! statement and one transaction, and each is still checked, written and answered on its own.
#![cfg(feature = "postgres")]

#[path = "support/postgres.rs"]
mod postgres_support;

#[path = "support/commit_cutter.rs"]
mod commit_cutter;

use std::collections::HashMap;

use eventcore::{
    EventId, GlobalPosition,
    backend::{AppendRequest, Backend, IdempotencyKey, StoreError, postgres::Postgres},
};
use postgres_support::{event, fresh_config, fresh_postgres, fresh_postgres_with, id, v};
use sqlx::Row;

/// The transaction an event was written in: its position without the index (see the
/// migration).
fn transaction(position: GlobalPosition) -> u64 {
    position.get() >> 16
}

/// Counts an append of `events` events in the transaction that wrote it, after checking that
/// its positions are consecutive and in one transaction.
fn tally(
    per_transaction: &mut HashMap<u64, usize>,
    positions: (GlobalPosition, GlobalPosition),
    events: u64,
) {
    let (first, last) = positions;
    assert_eq!(last.get() - first.get() + 1, events, "an append's positions are consecutive");
    assert_eq!(transaction(first), transaction(last));
    *per_transaction.entry(transaction(first)).or_default() += 1;
}

/// At least one transaction wrote more than one append: batching happened.
fn assert_batched(per_transaction: &HashMap<u64, usize>) {
    assert!(
        per_transaction.values().any(|&n| n > 1),
        "no two appends shared a transaction: nothing was batched"
    );
}

/// One call of `append_batch` with four requests: one that commits, one whose expectation is
/// wrong, one that expected the stream as it was before the first request of the same batch
/// wrote it, and one whose key is already stored. Each gets its own outcome, and only the
/// first one's events are stored.
#[tokio::test]
async fn each_request_of_a_batch_gets_its_own_outcome() {
    let store = fresh_postgres().await;
    let keyed = AppendRequest::new()
        .expect(id("done"), v(0))
        .write(id("done"), vec![event(0)])
        .idempotent(IdempotencyKey::try_new("k-done").unwrap());
    let before = store.append(keyed).await.unwrap();

    let sql = format!(
        "SELECT request, outcome, first_position, last_position, conflict_stream, \
         conflict_expected, conflict_actual, streams, versions \
         FROM \"{}\".append_batch(\
           ARRAY[NULL, NULL, NULL, 'k-done', 'k-five'], \
           ARRAY[1, 2, 3, 4, 5], ARRAY['a', 'b', 'a', 'done', 'e'], \
           ARRAY[0, 5, 0, 0, 0]::int8[], \
           ARRAY[1, 2, 3, 4]::int4[], ARRAY[true, true, true, true], \
           ARRAY[1, 1, 2, 3, 4, 5, 5], ARRAY['a', 'a', 'b', 'a', 'done', 'e', 'e'], \
           ARRAY[1, 2, 1, 1, 1, 1, 2]::int8[], \
           ARRAY[gen_random_uuid(), gen_random_uuid(), gen_random_uuid(), gen_random_uuid(), \
                 gen_random_uuid(), gen_random_uuid(), gen_random_uuid()], \
           ARRAY['N', 'N', 'N', 'N', 'N', 'N', 'N'], ARRAY[1, 1, 1, 1, 1, 1, 1], \
           ARRAY['1', '2', '3', '4', '5', '6', '7'], \
           ARRAY[gen_random_uuid(), gen_random_uuid(), gen_random_uuid(), gen_random_uuid(), \
                 gen_random_uuid(), gen_random_uuid(), gen_random_uuid()], \
           ARRAY[NULL, NULL, NULL, NULL, NULL, NULL, NULL]::uuid[], \
           ARRAY[NULL, NULL, NULL, NULL, NULL, NULL, NULL]::text[], \
           ARRAY[now(), now(), now(), now(), now(), now(), now()])",
        store.schema()
    );
    let rows = sqlx::query(&sql).fetch_all(store.pool()).await.unwrap();
    let outcome = |i: usize| rows[i].get::<String, _>(1);
    assert_eq!(rows.len(), 5);
    assert_eq!(
        (outcome(0), outcome(1), outcome(2), outcome(3), outcome(4)),
        ("c".into(), "x".into(), "x".into(), "r".into(), "c".into())
    );
    // The committed request has two consecutive positions.
    let (first, last): (i64, i64) = (rows[0].get(2), rows[0].get(3));
    assert_eq!(last - first, 1);
    // The conflicts name the stream, the expected and the actual version; request 3 sees
    // request 1's write.
    assert_eq!(
        (rows[1].get::<String, _>(4), rows[1].get::<i64, _>(5), rows[1].get::<i64, _>(6)),
        ("b".into(), 5, 0)
    );
    assert_eq!(
        (rows[2].get::<String, _>(4), rows[2].get::<i64, _>(5), rows[2].get::<i64, _>(6)),
        ("a".into(), 0, 2)
    );
    // The replay returns the stored result.
    let (a, _) = before.positions.unwrap();
    assert_eq!(rows[3].get::<i64, _>(2), i64::try_from(a.get()).unwrap());
    assert_eq!(rows[3].get::<Vec<String>, _>(7), ["done"]);
    assert_eq!(rows[3].get::<Vec<i64>, _>(8), [1]);

    // (The events above have v4 ids, which the store would refuse to read back: count them.)
    let stored: Vec<(String, i64)> = sqlx::query_as(&format!(
        "SELECT stream_id, count(*) FROM \"{}\".events GROUP BY 1 ORDER BY 1",
        store.schema()
    ))
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(stored, [("a".to_owned(), 2), ("done".to_owned(), 1), ("e".to_owned(), 2)]);

    // The keyed request that committed after another in the batch: its key rides on its own
    // first event, and a replay returns its own range and streams, not the batch's.
    let (first, last): (i64, i64) = (rows[4].get(2), rows[4].get(3));
    assert_eq!(last - first, 1);
    let again = AppendRequest::new()
        .expect(id("e"), v(0))
        .write(id("e"), vec![event(9)])
        .idempotent(IdempotencyKey::try_new("k-five").unwrap());
    let replay = store.append(again).await.unwrap();
    assert!(replay.replayed);
    assert_eq!(replay.streams, [(id("e"), v(2))]);
    let position = |p: i64| GlobalPosition::new(u64::try_from(p).unwrap());
    assert_eq!(replay.positions, Some((position(first), position(last))));
}

/// Many appends at once through one batch in flight: they share transactions (so batching
/// happened), every one of them commits with its own versions and positions, and a reader of
/// the log sees them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queued_appends_share_a_commit_and_keep_their_own_results() {
    let store = fresh_postgres_with(fresh_config().append_batches(1).max_connections(4)).await;
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let s = id(&format!("many-{}", i % 16));
                let mut version = 0;
                let mut positions = Vec::new();
                // Each task appends to a stream shared with three others, retrying conflicts.
                for n in 0..4 {
                    loop {
                        let request = AppendRequest::new()
                            .expect(s.clone(), v(version))
                            .write(s.clone(), vec![event(n), event(n)]);
                        match store.append(request).await {
                            Ok(done) => {
                                version = done.version_of(&s).unwrap().get();
                                positions.push(done.positions.unwrap());
                                break;
                            }
                            Err(StoreError::Conflict(c)) => version = c.actual.get(),
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
                positions
            })
        })
        .collect();
    let mut per_transaction: HashMap<u64, usize> = HashMap::new();
    let mut all = Vec::new();
    for t in tasks {
        for positions in t.await.unwrap() {
            tally(&mut per_transaction, positions, 2);
            all.push(positions.0);
        }
    }
    assert_eq!(all.len(), 256);
    assert_batched(&per_transaction);
    // Every stream: 16 appends of 2 events, versions 1..=32 without gaps.
    for i in 0..16 {
        let read = store.read(&[id(&format!("many-{i}"))]).await.unwrap().remove(0);
        let versions: Vec<u64> = read.events.iter().map(|e| e.version.get()).collect();
        assert_eq!(versions, (1..=32).collect::<Vec<_>>());
    }
    let log = store.read_all(GlobalPosition::START, 10_000).await.unwrap();
    assert_eq!(log.len(), 512);
    assert!(log.windows(2).all(|w| w[0].position < w[1].position));
}

/// Requests that each fit the payload limit are batched only up to 8 MiB of payload together:
/// 64 of them could otherwise add up past what one statement carries (PostgreSQL refuses a
/// message over 1 GiB) and fail together. 32 appends of 1.5 MB each, queued behind one
/// permit: none of their transactions holds more than five of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_carries_at_most_eight_mebibytes_of_payload() {
    const SIZE: usize = 1_500_000;
    let config = fresh_config().append_batches(1).max_connections(4).max_payload(2 << 20);
    let store = fresh_postgres_with(config).await;
    let payload = eventcore::Payload::to_json(&"x".repeat(SIZE)).unwrap();
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let (store, payload) = (store.clone(), payload.clone());
            tokio::spawn(async move {
                let s = id(&format!("large-{i}"));
                let big = eventcore::NewEvent::new(
                    "Large",
                    1,
                    payload,
                    eventcore::EventMetadata::new(eventcore::CorrelationId::new()),
                );
                let request = AppendRequest::new().expect(s.clone(), v(0)).write(s, vec![big]);
                store.append(request).await.unwrap().positions.unwrap()
            })
        })
        .collect();
    let mut per_transaction: HashMap<u64, usize> = HashMap::new();
    for t in tasks {
        tally(&mut per_transaction, t.await.unwrap(), 1);
    }
    assert_eq!(per_transaction.values().sum::<usize>(), 32);
    assert_batched(&per_transaction);
    let most = per_transaction.values().max().copied().unwrap_or(0);
    assert!(most * (SIZE + 2) <= 8 << 20, "{most} appends of {SIZE} bytes in one batch");
}

/// A request that makes its whole batch fail (here: an event id that is already stored) gets
/// its own error, and the requests that shared the batch with it commit on their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_that_fails_its_batch_does_not_take_the_others_down() {
    let store = fresh_postgres_with(fresh_config().append_batches(1)).await;
    let taken = event(0);
    let taken_id: EventId = taken.metadata.event_id;
    store
        .append(AppendRequest::new().expect(id("first"), v(0)).write(id("first"), vec![taken]))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let s = id(&format!("mixed-{i}"));
                let mut e = event(i);
                if i == 7 {
                    e.metadata.event_id = taken_id;
                }
                store.append(AppendRequest::new().expect(s.clone(), v(0)).write(s, vec![e])).await
            })
        })
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        let result = t.await.unwrap();
        if i == 7 {
            assert!(matches!(result, Err(StoreError::InvalidAppend(_))), "{result:?}");
        } else {
            assert!(result.is_ok(), "request {i}: {result:?}");
        }
    }
    let read = store.read(&[id("mixed-7"), id("mixed-8")]).await.unwrap();
    assert_eq!((read[0].version, read[1].version), (v(0), v(1)));
}

/// With batching off (the default, or set to 0), every append is its own transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batching_is_off_by_default() {
    for store in
        [fresh_postgres().await, fresh_postgres_with(fresh_config().append_batches(0)).await]
    {
        assert_appends_have_their_own_transactions(store).await;
    }
}

async fn assert_appends_have_their_own_transactions(store: Postgres) {
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let s = id(&format!("alone-{i}"));
                let done = store
                    .append(AppendRequest::new().expect(s.clone(), v(0)).write(s, vec![event(i)]))
                    .await
                    .unwrap();
                transaction(done.positions.unwrap().0)
            })
        })
        .collect();
    let mut seen = std::collections::HashSet::new();
    for t in tasks {
        assert!(seen.insert(t.await.unwrap()), "two appends shared a transaction");
    }
}

/// A store with batching on whose schema has no `append_batch` function: every batch it sends
/// must go as the INSERT, or fail with a schema error.
async fn store_without_append_batch() -> Postgres {
    let store = fresh_postgres_with(fresh_config().append_batches(1).max_connections(4)).await;
    sqlx::query(&format!("DROP FUNCTION \"{}\".append_batch", store.schema()))
        .execute(store.pool())
        .await
        .unwrap();
    store
}

/// Requests that each write every stream they expect, on streams no other request of their
/// batch touches, go as one INSERT (the function that would otherwise run them is gone): they
/// share transactions, and each keeps its own versions, positions and idempotency key; sent
/// again, each keyed request replays its own result.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn disjoint_batches_go_as_one_insert_and_keep_their_own_results() {
    let store = store_without_append_batch().await;
    let tasks: Vec<_> = (0..48)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                // Two streams per task, two appends each; every other append keyed.
                let (a, b) = (id(&format!("own-{i}-a")), id(&format!("own-{i}-b")));
                let mut done = Vec::new();
                for n in 0..2u64 {
                    let mut request = AppendRequest::new()
                        .expect(a.clone(), v(n * 2))
                        .expect(b.clone(), v(n))
                        .write(a.clone(), vec![event(n), event(n)])
                        .write(b.clone(), vec![event(n)]);
                    if (i + n) % 2 == 0 {
                        request = request
                            .idempotent(IdempotencyKey::try_new(format!("own-{i}-{n}")).unwrap());
                    }
                    let committed = store.append(request.clone()).await.unwrap();
                    assert!(!committed.replayed);
                    assert_eq!(committed.version_of(&a), Some(v(n * 2 + 2)));
                    assert_eq!(committed.version_of(&b), Some(v(n + 1)));
                    done.push((request, committed));
                }
                done
            })
        })
        .collect();
    let mut per_transaction: HashMap<u64, usize> = HashMap::new();
    let mut appends = Vec::new();
    for t in tasks {
        for (request, committed) in t.await.unwrap() {
            tally(&mut per_transaction, committed.positions.unwrap(), 3);
            appends.push((request, committed));
        }
    }
    assert_batched(&per_transaction);
    // The log holds exactly what each append was told, in its own position range.
    let log = store.read_all(GlobalPosition::START, 10_000).await.unwrap();
    assert_eq!(log.len(), 48 * 2 * 3);
    for (request, committed) in &appends {
        let (first, last) = committed.positions.unwrap();
        let mine: Vec<_> =
            log.iter().filter(|e| e.position >= first && e.position <= last).collect();
        let sent: Vec<EventId> = request
            .writes
            .iter()
            .flat_map(|(_, events)| events.iter().map(|e| e.metadata.event_id))
            .collect();
        assert_eq!(mine.iter().map(|e| e.event_id()).collect::<Vec<_>>(), sent);
        // Sent again, a keyed request replays exactly its own result.
        if request.idempotency_key.is_some() {
            let again = store.append(request.clone()).await.unwrap();
            assert!(again.replayed);
            assert_eq!(
                (again.positions, &again.streams),
                (committed.positions, &committed.streams)
            );
        }
    }
}

/// 32 appends at once on their own streams, with group commit: request 7 expects its stream
/// at a version it is not at. A batch holding it cannot commit as one INSERT (a unique
/// violation when `moved`, a gap otherwise); it writes nothing and the batch goes through
/// `append_batch`, which answers each request for itself: request 7 gets its conflict, the
/// others commit.
async fn assert_one_stale_request_fails_alone(moved: bool) {
    let store = fresh_postgres_with(fresh_config().append_batches(1).max_connections(4)).await;
    let tag = if moved { "moved" } else { "gap" };
    if moved {
        // Another append got to request 7's stream first.
        let s = id(&format!("{tag}-7"));
        store
            .append(AppendRequest::new().expect(s.clone(), v(0)).write(s, vec![event(99)]))
            .await
            .unwrap();
    }
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let s = id(&format!("{tag}-{i}"));
                // Without `moved`, request 7 expects its empty stream at version 5.
                let expected = if i == 7 && !moved { v(5) } else { v(0) };
                store
                    .append(
                        AppendRequest::new().expect(s.clone(), expected).write(s, vec![event(i)]),
                    )
                    .await
            })
        })
        .collect();
    let stale = if moved { (v(0), v(1)) } else { (v(5), v(0)) };
    for (i, t) in tasks.into_iter().enumerate() {
        let result = t.await.unwrap();
        if i == 7 {
            match result {
                Err(StoreError::Conflict(c)) => assert_eq!((c.expected, c.actual), stale),
                other => panic!("request 7: expected a conflict, got {other:?}"),
            }
        } else {
            assert_eq!(result.unwrap().version_of(&id(&format!("{tag}-{i}"))), Some(v(1)));
        }
    }
    assert_eq!(store.read(&[id(&format!("{tag}-7"))]).await.unwrap()[0].version, stale.1);
    assert_eq!(
        store.read_all(GlobalPosition::START, 100).await.unwrap().len(),
        31 + usize::from(moved)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gap_in_an_insert_batch_fails_only_its_own_request() {
    assert_one_stale_request_fails_alone(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_moved_stream_in_an_insert_batch_fails_only_its_own_request() {
    assert_one_stale_request_fails_alone(true).await;
}

/// 32 appends at once, each naming the event its stream holds at the expected version
/// (`AppendRequest::expect_event`), with group commit: request 7 names another stream's event.
/// A batch holding it cannot commit as one INSERT and goes through `append_batch`, which
/// refuses request 7 alone, as a conflict at the version it expected; with `read_shared`, every
/// request also reads one shared stream (so batches go straight to `append_batch`), and
/// request 7 names it wrongly instead.
async fn assert_one_misnamed_request_fails_alone(read_shared: bool) {
    let store = fresh_postgres_with(fresh_config().append_batches(1).max_connections(4)).await;
    let tag = if read_shared { "named-shared" } else { "named" };
    let shared = id(&format!("{tag}-shared"));
    let seed = |s: eventcore::StreamId| {
        let (store, first) = (store.clone(), event(0));
        let named = first.metadata.event_id;
        async move {
            store
                .append(AppendRequest::new().expect(s.clone(), v(0)).write(s, vec![first]))
                .await
                .unwrap();
            named
        }
    };
    let shared_event = seed(shared.clone()).await;
    let mut named = Vec::new();
    for i in 0..32 {
        named.push(seed(id(&format!("{tag}-{i}"))).await);
    }
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let s = id(&format!("{tag}-{i}"));
            let mut request = AppendRequest::new();
            if read_shared {
                let on_shared = if i == 7 { named[7] } else { shared_event };
                request = request.expect_event(s.clone(), v(1), named[i]).expect_event(
                    shared.clone(),
                    v(1),
                    on_shared,
                );
            } else {
                let on_own = if i == 7 { named[6] } else { named[i] };
                request = request.expect_event(s.clone(), v(1), on_own);
            }
            let (store, request) = (store.clone(), request.write(s, vec![event(1)]));
            tokio::spawn(async move { store.append(request).await })
        })
        .collect();
    let mut per_transaction: HashMap<u64, usize> = HashMap::new();
    for (i, t) in tasks.into_iter().enumerate() {
        let result = t.await.unwrap();
        if i == 7 {
            let refused = if read_shared { shared.clone() } else { id(&format!("{tag}-7")) };
            match result {
                Err(StoreError::Conflict(c)) => {
                    assert_eq!((c.stream, c.expected, c.actual), (refused, v(1), v(1)));
                }
                other => panic!("request 7: expected a conflict, got {other:?}"),
            }
        } else {
            let committed = result.unwrap();
            assert_eq!(committed.version_of(&id(&format!("{tag}-{i}"))), Some(v(2)));
            tally(&mut per_transaction, committed.positions.unwrap(), 1);
        }
    }
    assert_batched(&per_transaction);
    assert_eq!(store.read(&[id(&format!("{tag}-7"))]).await.unwrap()[0].version, v(1));
    assert_eq!(store.read_all(GlobalPosition::START, 100).await.unwrap().len(), 33 + 31);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_misnamed_event_in_an_insert_batch_fails_only_its_own_request() {
    assert_one_misnamed_request_fails_alone(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_misnamed_event_in_an_append_batch_fails_only_its_own_request() {
    assert_one_misnamed_request_fails_alone(true).await;
}

/// `append_batch` checks a named event against the events stored and against those an
/// earlier request of the same batch writes (as if committed just before it): request 1
/// names the stored event (commits), request 2 names another (conflict at its version),
/// request 3 names the event request 1 writes (commits).
#[tokio::test]
async fn append_batch_checks_named_events_against_earlier_requests_too() {
    let store = fresh_postgres().await;
    let stored = event(0);
    let stored_id = stored.metadata.event_id.as_uuid();
    store
        .append(AppendRequest::new().expect(id("a"), v(0)).write(id("a"), vec![stored]))
        .await
        .unwrap();
    let (written, other) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    let sql = format!(
        "SELECT request, outcome, conflict_stream, conflict_expected, conflict_actual \
         FROM \"{}\".append_batch(\
           ARRAY[NULL, NULL, NULL]::text[], \
           ARRAY[1, 2, 3], ARRAY['a', 'a', 'a'], ARRAY[1, 2, 2]::int8[], \
           ARRAY[1]::int4[], ARRAY[true], \
           ARRAY[1, 3], ARRAY['a', 'a'], ARRAY[2, 3]::int8[], ARRAY[$2, gen_random_uuid()], \
           ARRAY['N', 'N'], ARRAY[1, 1], ARRAY['1', '2'], \
           ARRAY[gen_random_uuid(), gen_random_uuid()], ARRAY[NULL, NULL]::uuid[], \
           ARRAY[NULL, NULL]::text[], ARRAY[now(), now()], \
           ARRAY[$1, $3, $2]::uuid[])",
        store.schema()
    );
    // Request, outcome, and the conflict's stream, expected and actual version.
    type Row = (i32, String, Option<String>, Option<i64>, Option<i64>);
    let rows: Vec<Row> = sqlx::query_as(&sql)
        .bind(stored_id)
        .bind(written)
        .bind(other)
        .fetch_all(store.pool())
        .await
        .unwrap();
    assert_eq!(
        rows,
        [
            (1, "c".into(), None, None, None),
            (2, "x".into(), Some("a".into()), Some(2), Some(2)),
            (3, "c".into(), None, None, None),
        ]
    );
}

/// Queues `append` with the batcher by polling it once, without yielding: on a current-thread
/// runtime the batcher's task cannot run before the test awaits, so every append queued this
/// way before then goes in one batch.
fn queue<F: std::future::Future + Unpin>(append: &mut F) {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    assert!(std::pin::Pin::new(append).poll(&mut cx).is_pending(), "the append did not queue");
}

/// An append of one event to the empty stream `name`, as a future that can be polled by hand.
fn append_to(
    store: &Postgres,
    name: &str,
) -> std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<eventcore::backend::Committed, StoreError>>>,
> {
    let (store, s) = (store.clone(), id(name));
    Box::pin(async move {
        store.append(AppendRequest::new().expect(s.clone(), v(0)).write(s, vec![event(1)])).await
    })
}

/// Three appends in one batch; the middle one's stream is being written by a transaction that
/// does not end, so its insert waits past the server's `lock_timeout`. That wait is the middle
/// request's alone: the other two commit, as they would have without group commit, and only
/// the middle one times out.
#[tokio::test]
async fn a_request_waiting_for_a_lock_does_not_time_its_batch_out() {
    let url = format!("{}?options=-c%20lock_timeout%3D300ms", postgres_support::database_url());
    let store = fresh_postgres_with(
        eventcore::backend::postgres::PostgresConfig::builder(url)
            .schema(postgres_support::fresh_schema_name())
            .append_batches(1),
    )
    .await;
    let mut holder = postgres_support::raw_connection().await;
    postgres_support::begin_append(&mut holder, &store, "wait-locked").await;
    let mut first = append_to(&store, "wait-free-1");
    let mut locked = append_to(&store, "wait-locked");
    let mut last = append_to(&store, "wait-free-2");
    queue(&mut first);
    queue(&mut locked);
    queue(&mut last);
    let (first, locked, last) = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        tokio::join!(first, locked, last)
    })
    .await
    .expect("the batch hung");
    assert!(matches!(locked, Err(StoreError::Timeout)), "{locked:?}");
    assert!(first.is_ok(), "a neighbour of the waiting request failed: {first:?}");
    assert!(last.is_ok(), "a neighbour of the waiting request failed: {last:?}");
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    let read = store.read(&[id("wait-free-1"), id("wait-free-2")]).await.unwrap();
    assert_eq!((read[0].version, read[1].version), (v(1), v(1)));
}

/// An append whose caller stopped waiting for it (a timeout, a cancelled request) while it was
/// still queued for a batch is not sent: nothing of it was on its way, so nothing of it is
/// written, as with an append sent alone whose future is dropped before it is sent. Its
/// neighbours in the queue commit.
#[tokio::test]
async fn an_append_dropped_while_queued_for_a_batch_is_not_written() {
    let store = fresh_postgres_with(fresh_config().append_batches(1)).await;
    let mut first = append_to(&store, "dropped-neighbour-1");
    let mut dropped = append_to(&store, "dropped-queued");
    let mut last = append_to(&store, "dropped-neighbour-2");
    queue(&mut first);
    queue(&mut dropped);
    queue(&mut last);
    drop(dropped);
    let (first, last) = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        tokio::join!(first, last)
    })
    .await
    .expect("the batch hung");
    assert!(first.is_ok() && last.is_ok(), "{first:?} {last:?}");
    let read = store.read(&[id("dropped-queued")]).await.unwrap();
    assert_eq!(read[0].version, v(0), "an append dropped before it was sent was written");
}

/// Custom metadata counts toward a batch's 8 MiB as payloads do: three requests of 3 MiB of
/// custom metadata each (on a store that takes events of 4 MiB), queued together, do not all
/// go in one batch (64 such requests would otherwise make a statement PostgreSQL refuses,
/// failing all of them together).
#[tokio::test]
async fn custom_metadata_counts_toward_a_batchs_eight_mebibytes() {
    let store = fresh_postgres_with(fresh_config().append_batches(1).max_payload(4 << 20)).await;
    let blob = serde_json::Value::String("x".repeat(3 << 20));
    let append = |i: u64| {
        let (store, s) = (store.clone(), id(&format!("custom-{i}")));
        let mut e = event(i);
        e.metadata.custom.insert("blob".to_owned(), blob.clone());
        Box::pin(async move {
            store.append(AppendRequest::new().expect(s.clone(), v(0)).write(s, vec![e])).await
        })
    };
    let (mut a, mut b, mut c) = (append(0), append(1), append(2));
    queue(&mut a);
    queue(&mut b);
    queue(&mut c);
    let (a, b, c) =
        tokio::time::timeout(std::time::Duration::from_secs(60), async { tokio::join!(a, b, c) })
            .await
            .expect("the appends hung");
    let mut per_transaction: HashMap<u64, usize> = HashMap::new();
    for done in [a, b, c] {
        tally(&mut per_transaction, done.unwrap().positions.unwrap(), 1);
    }
    let most = per_transaction.values().max().copied().unwrap_or(0);
    assert!(most <= 2, "{most} requests of 3 MiB of custom metadata in one batch");
}

/// Group commit under killed connections, with keys. Eight tasks send keyed requests
/// through a store with two batches in flight: some write only their own stream (batches that
/// go as the INSERT), some also read a stream another task writes (through `append_batch`),
/// some write a stream two tasks share (conflicts inside batches). A killer terminates the
/// store's connections every few milliseconds. A task sends each request again (with fresh
/// event ids, under the same key, on a fresh read) after a conflict or a transient failure,
/// until it is answered. Every key's events are stored exactly once, and every answer (fresh
/// or replayed) names the positions where they lie.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keyed_appends_in_batches_under_killed_connections_commit_once_and_answer_truly() {
    use std::sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    };
    use std::time::Duration;

    use eventcore::{CorrelationId, EventMetadata, NewEvent, Payload, StreamId};
    use postgres_support::{database_url, spawn_killer};

    const TASKS: usize = 8;
    let verify = fresh_postgres().await;
    let schema = verify.schema().as_str().to_owned();
    let app = format!("ecbk_{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    let config = eventcore::backend::postgres::PostgresConfig::builder(format!(
        "{}?application_name={app}",
        database_url()
    ))
    .schema(schema.clone())
    .max_connections(6)
    .append_batches(2)
    .build()
    .unwrap();
    let mut store = None;
    for _ in 0..20 {
        if let Ok(connected) = Postgres::connect(config.clone()).await {
            store = Some(connected);
            break;
        }
    }
    let store = store.expect("connected");

    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let (killer, kills) = spawn_killer(app.clone(), 1, 10..40, 11, Arc::clone(&stop));

    // Each answer: the key, the positions answered, and whether it was a replay.
    type Answer = (String, Option<(GlobalPosition, GlobalPosition)>, bool);
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let (store, kills, failures) =
                (store.clone(), Arc::clone(&kills), Arc::clone(&failures));
            tokio::spawn(async move {
                let own = id(&format!("own-{t}"));
                let shared = id(&format!("pair-{}", t / 2));
                let neighbour = id(&format!("own-{}", (t + 1) % TASKS));
                let mut answers: Vec<Answer> = Vec::new();
                let mut i = 0;
                // At least 8 requests each, and on until the killer struck 30 times.
                while i < 8 || (kills.load(Ordering::SeqCst) < 30 && i < 200) {
                    let key = format!("k-{t}-{i}");
                    let mut resent = 0;
                    loop {
                        resent += 1;
                        assert!(resent < 2_000, "{key} never answered");
                        let read = match store
                            .read(&[own.clone(), shared.clone(), neighbour.clone()])
                            .await
                        {
                            Ok(read) => read,
                            Err(e) if e.is_transient() => continue,
                            Err(e) => panic!("read: {e}"),
                        };
                        let event = || {
                            NewEvent::new(
                                "K",
                                1,
                                Payload::to_json(&key).unwrap(),
                                EventMetadata::new(CorrelationId::new()),
                            )
                        };
                        let target: &StreamId = if i % 3 == 1 { &shared } else { &own };
                        let at = if i % 3 == 1 { read[1].version } else { read[0].version };
                        let mut request = AppendRequest::new().expect(target.clone(), at);
                        if i % 3 == 2 {
                            // Reads the neighbour's stream too: `append_batch`.
                            request = request.expect(neighbour.clone(), read[2].version);
                        }
                        let request = request
                            .write(target.clone(), vec![event(), event()])
                            .idempotent(IdempotencyKey::try_new(key.clone()).unwrap());
                        match store.append(request).await {
                            Ok(done) => {
                                answers.push((key.clone(), done.positions, done.replayed));
                                break;
                            }
                            Err(StoreError::Conflict(_)) => {}
                            Err(e) if e.is_transient() => {
                                failures.fetch_add(1, Ordering::SeqCst);
                            }
                            Err(e) => panic!("{key}: {e}"),
                        }
                    }
                    i += 1;
                }
                answers
            })
        })
        .collect();
    let answers = tokio::time::timeout(Duration::from_secs(90), async {
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.unwrap());
        }
        all
    })
    .await
    .expect("the tasks hung");
    stop.store(true, Ordering::SeqCst);
    killer.await.unwrap();
    assert!(kills.load(Ordering::SeqCst) >= 10, "the killer struck too rarely to tell");

    // Every key's events, as stored: their positions, in order.
    let rows: Vec<(String, i64)> = sqlx::query_as(&format!(
        "SELECT payload::text, position FROM \"{schema}\".events ORDER BY position"
    ))
    .fetch_all(verify.pool())
    .await
    .unwrap();
    let mut stored: HashMap<String, Vec<i64>> = HashMap::new();
    for (payload, position) in rows {
        let key: String = serde_json::from_str(&payload).unwrap();
        stored.entry(key).or_default().push(position);
    }
    assert_eq!(stored.len(), answers.len(), "a key was stored that no task was answered for");
    let mut replays = 0;
    for (key, positions, replayed) in &answers {
        let at = stored.get(key).unwrap_or_else(|| panic!("{key} answered but not stored"));
        assert_eq!(at.len(), 2, "{key} stored {} events", at.len());
        let at = (GlobalPosition::new(at[0] as u64), GlobalPosition::new(at[1] as u64));
        assert_eq!(*positions, Some(at), "{key} answered positions it was not stored at");
        replays += usize::from(*replayed);
    }
    eprintln!(
        "{} keys, {replays} answered as replays, {} appends failed, {} kills",
        answers.len(),
        failures.load(Ordering::SeqCst),
        kills.load(Ordering::SeqCst)
    );
}

/// A batch whose reply is lost (the connection drops between its commit and the answer): every
/// request of it hears a transient failure, none a conflict or a success, since nobody knows
/// what the batch did; each is stored once; and each, sent again under its key (with fresh
/// event ids, as a retried command sends), is answered with the commit it made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_of_a_batch_whose_reply_is_lost_hears_so_and_replays_under_its_key() {
    use std::time::Duration;

    let verify = fresh_postgres().await;
    let schema = verify.schema().as_str().to_owned();
    let cutter = commit_cutter::CommitCutter::start(&postgres_support::database_url()).await;
    let config = eventcore::backend::postgres::PostgresConfig::builder(cutter.url())
        .schema(schema.clone())
        .max_connections(4)
        .append_batches(1)
        .build()
        .unwrap();
    let store = Postgres::connect(config).await.unwrap();
    // Each request also reads a stream it does not write: batches go through `append_batch`.
    let request = |name: &str| {
        let (s, r) = (id(&format!("lost-{name}")), id(&format!("read-{name}")));
        AppendRequest::new()
            .expect(r, v(0))
            .expect(s.clone(), v(0))
            .write(s, vec![event(1), event(2)])
            .idempotent(IdempotencyKey::try_new(format!("key-{name}")).unwrap())
    };
    // A holds the batcher's one permit: its insert waits for a transaction that stored its
    // key and has not ended.
    let mut holder = postgres_support::raw_connection().await;
    sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
    sqlx::query(&format!(
        "INSERT INTO \"{schema}\".events (position, stream_id, version, event_id, event_type, \
         schema_version, payload, correlation_id, recorded_at, idempotency_key, \
         idempotency_events) \
         VALUES (pg_current_xact_id()::text::bigint * 65536 + 1, 'key-holder', 1, \
         gen_random_uuid(), 'T', 1, '1', gen_random_uuid(), now(), 'key-a', 1)"
    ))
    .execute(&mut holder)
    .await
    .unwrap();
    let a = tokio::spawn({
        let (store, request) = (store.clone(), request("a"));
        async move { store.append(request).await }
    });
    let mut watcher = postgres_support::raw_connection().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let waiting: Option<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
             AND strpos(query, $1) > 0 LIMIT 1",
        )
        .bind(format!("\"{schema}\"."))
        .fetch_optional(&mut watcher)
        .await
        .unwrap();
        if waiting.is_some() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "A never waited");
        tokio::task::yield_now().await;
    }
    // B and C queue behind it, and go together once it is done.
    let (b_request, c_request) = (request("b"), request("c"));
    let mut b = Box::pin({
        let (store, request) = (store.clone(), b_request.clone());
        async move { store.append(request).await }
    });
    let mut c = Box::pin({
        let (store, request) = (store.clone(), c_request.clone());
        async move { store.append(request).await }
    });
    queue(&mut b);
    queue(&mut c);
    cutter.arm_statement("append_batch(");
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    let (b, c) = tokio::time::timeout(Duration::from_secs(30), async { tokio::join!(b, c) })
        .await
        .expect("the batch hung");
    tokio::time::timeout(Duration::from_secs(5), cutter.cut()).await.expect("no reply was lost");
    let a = a.await.unwrap().unwrap();
    assert!(!a.replayed);
    for (name, answer, sent) in [("b", b, b_request), ("c", c, c_request)] {
        let error = answer.expect_err("the batch's reply was lost: nobody knows its outcome");
        assert!(error.is_transient(), "{name}: {error:?}");
        let stored = verify.read(&[id(&format!("lost-{name}"))]).await.unwrap().remove(0);
        assert_eq!(stored.events.len(), 2, "{name}: the batch committed");
        // Sent again as a retried command sends it: the same key, new event ids.
        let mut again = sent;
        for (_, events) in &mut again.writes {
            for e in events.iter_mut() {
                e.metadata.event_id = eventcore::EventId::new();
            }
        }
        let replay = store.append(again).await.unwrap();
        assert!(replay.replayed, "{name}: {replay:?}");
        let at = (stored.events[0].position, stored.events[1].position);
        assert_eq!(replay.positions, Some(at), "{name}");
        let stored = verify.read(&[id(&format!("lost-{name}"))]).await.unwrap().remove(0);
        assert_eq!(stored.events.len(), 2, "{name}: stored once");
    }
}
