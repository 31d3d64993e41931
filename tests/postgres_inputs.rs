//! Inputs are kept exactly or refused, on PostgreSQL (issue #11): the bytes the database STORES
//! for a stream id or idempotency key are the caller's, through every append path (the SQL
//! function `append(...)` that outside callers use, the store's single INSERT and its call of
//! that function, and group commit as one INSERT or as `append_batch(...)`); the database
//! refuses what the Rust types refuse, by the same rule, code point for code point; and rows
//! stored before that rule read as unreadable events, with their id as stored.
#![cfg(feature = "postgres")]

#[path = "support/postgres.rs"]
mod postgres_support;

#[path = "conformance/inputs.rs"]
#[allow(dead_code)]
mod inputs;

use std::{future::Future, pin::Pin, task::Poll};

use eventcore::backend::{AppendRequest, Committed, IdempotencyKey, LogFilter, postgres::Postgres};
use eventcore::{Backend, GlobalPosition, StreamId};
use inputs::{hostile_ids, refused_ids};
use postgres_support::{event, fresh_config, fresh_postgres, fresh_postgres_with, v};
use sqlx::{PgPool, Row};

fn id(s: &str) -> StreamId {
    StreamId::try_new(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

fn key(s: &str) -> IdempotencyKey {
    IdempotencyKey::try_new(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

fn q(store: &Postgres) -> String {
    format!("\"{}\"", store.schema())
}

/// The stream ids and idempotency keys stored in the log, as their bytes, in position order.
async fn stored(store: &Postgres) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    let sql = format!(
        "SELECT convert_to(stream_id, 'UTF8'), octet_length(stream_id), \
                convert_to(idempotency_key, 'UTF8') \
         FROM {}.events ORDER BY position",
        q(store)
    );
    let rows = sqlx::query(&sql).fetch_all(store.pool()).await.unwrap();
    rows.iter()
        .map(|row| {
            let bytes: Vec<u8> = row.get(0);
            let length: i32 = row.get(1);
            assert_eq!(usize::try_from(length).unwrap(), bytes.len());
            (bytes, row.get(2))
        })
        .collect()
}

/// Asserts that the log holds exactly `expected` (stream id, key) pairs, byte for byte, in
/// any order.
async fn assert_stored<S: AsRef<str>>(store: &Postgres, expected: &[(S, Option<S>)]) {
    let mut found = stored(store).await;
    let mut wanted: Vec<(Vec<u8>, Option<Vec<u8>>)> = expected
        .iter()
        .map(|(s, k)| {
            (s.as_ref().as_bytes().to_vec(), k.as_ref().map(|k| k.as_ref().as_bytes().to_vec()))
        })
        .collect();
    found.sort();
    wanted.sort();
    // Shown as text first, for a readable failure; then compared as bytes.
    let show = |v: &[(Vec<u8>, Option<Vec<u8>>)]| {
        let text = |b: &[u8]| format!("{:?}", String::from_utf8_lossy(b));
        v.iter().map(|(s, k)| (text(s), k.as_deref().map(text))).collect::<Vec<_>>()
    };
    assert_eq!(show(&found), show(&wanted), "stored ids and keys differ from the input");
    assert_eq!(found, wanted);
}

/// The longest start of `raw` of at most `max` bytes.
fn shorter(raw: &str, max: usize) -> &str {
    let end = (0..=max.min(raw.len())).rev().find(|&i| raw.is_char_boundary(i)).unwrap_or(0);
    &raw[..end]
}

/// Each hostile id with itself as key.
fn keyed_by_themselves(ids: &[String]) -> Vec<(String, Option<String>)> {
    ids.iter().map(|s| (s.clone(), Some(s.clone()))).collect()
}

/// Reads every id back through the library: by stream, and through the log (where none is
/// unreadable), byte for byte.
async fn assert_read_back(store: &Postgres, ids: &[String]) {
    let streams: Vec<StreamId> = ids.iter().map(|s| id(s)).collect();
    for (raw, read) in ids.iter().zip(store.read(&streams).await.unwrap()) {
        assert_eq!(read.stream_id.as_str().as_bytes(), raw.as_bytes());
        assert!(!read.events.is_empty(), "{raw:?} has no events");
        assert!(read.events.iter().all(|e| e.stream_id.as_str().as_bytes() == raw.as_bytes()));
    }
    let page = store.read_log(GlobalPosition::START, &LogFilter::all(), 10_000).await.unwrap();
    for entry in page.entries {
        let e = entry.unwrap_or_else(|u| panic!("unreadable: {u:?}"));
        let known = ids.iter().any(|raw| raw.as_bytes() == e.stream_id.as_str().as_bytes());
        assert!(known || e.stream_id.as_str() == "blocker", "{:?} was not appended", e.stream_id);
    }
}

/// Calls the schema's SQL function `append(...)` as a caller outside the library would: one
/// event (version 1) on each of `streams`, each expected empty, under `key`. Returns whether
/// the call was a replay.
async fn sql_append(
    pool: &PgPool,
    store: &Postgres,
    streams: &[&str],
    key: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let n = streams.len();
    let sql = format!(
        "SELECT replayed FROM {}.append(\
           $1::text[], array_fill(0::int8, ARRAY[$2::int4]), NULL, NULL, \
           $1::text[], array_fill(1::int8, ARRAY[$2::int4]), $3::uuid[], \
           array_fill('N'::text, ARRAY[$2::int4]), array_fill(1, ARRAY[$2::int4]), \
           array_fill('0'::text, ARRAY[$2::int4]), $4::uuid[], \
           array_fill(NULL::uuid, ARRAY[$2::int4]), array_fill(NULL::text, ARRAY[$2::int4]), \
           array_fill(now(), ARRAY[$2::int4]), $5)",
        q(store)
    );
    let uuids = || (0..n).map(|_| uuid::Uuid::now_v7()).collect::<Vec<_>>();
    sqlx::query_scalar(&sql)
        .bind(streams)
        .bind(i32::try_from(n).unwrap())
        .bind(uuids())
        .bind(uuids())
        .bind(key)
        .fetch_one(pool)
        .await
}

/// The SQL function `append(...)`, called from outside the library with each hostile id (and
/// the id as its key), stores exactly those bytes; the library reads them back, and a second
/// call with the same key is a replay.
#[tokio::test]
async fn the_sql_append_function_stores_hostile_ids_byte_for_byte() {
    let store = fresh_postgres().await;
    let ids = hostile_ids();
    for raw in &ids {
        assert!(!sql_append(store.pool(), &store, &[raw], Some(raw)).await.unwrap());
        assert!(sql_append(store.pool(), &store, &[raw], Some(raw)).await.unwrap(), "{raw:?}");
    }
    assert_stored(&store, &keyed_by_themselves(&ids)).await;
    assert_read_back(&store, &ids).await;
    // The library replays those keys too: the stored key is the caller's, exactly.
    for raw in &ids {
        let request = AppendRequest::new()
            .expect(id(raw), v(0))
            .write(id(raw), vec![event(9)])
            .idempotent(key(raw));
        assert!(store.append(request).await.unwrap().replayed, "{raw:?}");
    }
}

/// The store's own single appends: a request that writes every stream it expects goes as one
/// INSERT, one that also reads a stream as a call of `append(...)`. Both store the exact bytes
/// of ids and keys.
#[tokio::test]
async fn single_appends_store_hostile_ids_and_keys_byte_for_byte() {
    let store = fresh_postgres().await;
    let ids = hostile_ids();
    let mut expected = Vec::new();
    for raw in &ids {
        // The INSERT.
        let s = id(raw);
        let request = AppendRequest::new()
            .expect(s.clone(), v(0))
            .write(s.clone(), vec![event(1)])
            .idempotent(key(raw));
        let committed = store.append(request).await.unwrap();
        assert_eq!(committed.streams[0].0.as_str().as_bytes(), raw.as_bytes());
        expected.push((raw.clone(), Some(raw.clone())));
        // The function: the request also reads (and does not write) the stream `reader`.
        let k = format!("{}-2", shorter(raw, 250));
        let request = AppendRequest::new()
            .expect(s.clone(), v(1))
            .expect(id("reader"), v(0))
            .write(s, vec![event(2)])
            .idempotent(key(&k));
        assert!(!store.append(request).await.unwrap().replayed);
        expected.push((raw.clone(), Some(k)));
    }
    assert_stored(&store, &expected).await;
    assert_read_back(&store, &ids).await;
}

/// Polls every future once (so that each append reaches the batcher's queue), then `release`s
/// what holds the batch in flight, then awaits them all.
async fn queued_then_released<F, R>(mut futures: Vec<Pin<Box<F>>>, release: R) -> Vec<F::Output>
where
    F: Future + ?Sized,
    R: Future<Output = ()>,
{
    std::future::poll_fn(|cx| {
        for (i, f) in futures.iter_mut().enumerate() {
            assert!(f.as_mut().poll(cx).is_pending(), "append {i} did not wait for its batch");
        }
        Poll::Ready(())
    })
    .await;
    release.await;
    let mut out = Vec::with_capacity(futures.len());
    for f in futures {
        out.push(f.await);
    }
    out
}

/// Sends `requests` through group commit as one batch: an append to the stream `blocker` is
/// held in flight (it waits for a table lock taken on a connection of our own), so that all
/// `requests` queue behind it; the lock is then released and they go together. Asserts that
/// they shared one transaction.
async fn as_one_batch(store: &Postgres, requests: Vec<AppendRequest>) -> Vec<Committed> {
    let mut holder = postgres_support::raw_connection().await;
    sqlx::raw_sql(&format!("BEGIN; LOCK TABLE {}.events IN SHARE MODE", q(store)))
        .execute(&mut holder)
        .await
        .unwrap();
    let blocker = tokio::spawn({
        let store = store.clone();
        async move {
            let b = id("blocker");
            store
                .append(AppendRequest::new().expect(b.clone(), v(0)).write(b, vec![event(0)]))
                .await
        }
    });
    // Wait until the blocker's INSERT waits for the lock: the batcher's only permit is busy.
    let waiting = format!(
        "SELECT EXISTS (SELECT FROM pg_locks WHERE relation = '{}.events'::regclass AND NOT granted)",
        q(store)
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !sqlx::query_scalar::<_, bool>(&waiting).fetch_one(store.pool()).await.unwrap() {
        assert!(
            std::time::Instant::now() < deadline,
            "the blocking append never waited for the lock"
        );
        tokio::task::yield_now().await;
    }
    let futures: Vec<_> = requests
        .into_iter()
        .map(|r| {
            let store = store.clone();
            Box::pin(async move { store.append(r).await })
        })
        .collect();
    let results = queued_then_released(futures, async {
        sqlx::raw_sql("COMMIT").execute(&mut holder).await.unwrap();
    })
    .await;
    blocker.await.unwrap().unwrap();
    let committed: Vec<Committed> = results.into_iter().map(Result::unwrap).collect();
    let transactions: std::collections::HashSet<u64> =
        committed.iter().map(|c| c.positions.unwrap().0.get() >> 16).collect();
    assert_eq!(transactions.len(), 1, "the queued appends were not one batch");
    committed
}

/// Group commit, as one INSERT for the batch (each request writes the streams it expects, no
/// two share one): ids and keys stored byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_sent_as_one_insert_stores_hostile_ids_byte_for_byte() {
    let store = fresh_postgres_with(fresh_config().append_batches(1)).await;
    // Without the function, a batch that did not go as the INSERT would fail.
    sqlx::query(&format!("DROP FUNCTION {}.append_batch", q(&store)))
        .execute(store.pool())
        .await
        .unwrap();
    hostile_ids_go_as_one_batch(&store, |request| request).await;
}

/// Group commit through `append_batch(...)` (every request also reads the stream `reader`, so
/// the batch cannot go as one INSERT): ids and keys stored byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_sent_through_append_batch_stores_hostile_ids_byte_for_byte() {
    let store = fresh_postgres_with(fresh_config().append_batches(1)).await;
    hostile_ids_go_as_one_batch(&store, |request| request.expect(id("reader"), v(0))).await;
}

/// Sends one keyed append per hostile id, shaped by `shape`, as one batch, and checks that
/// every id and key was stored and reads back byte for byte.
async fn hostile_ids_go_as_one_batch(
    store: &Postgres,
    shape: impl Fn(AppendRequest) -> AppendRequest,
) {
    let ids = hostile_ids();
    let requests = ids
        .iter()
        .map(|raw| {
            shape(AppendRequest::new().expect(id(raw), v(0)))
                .write(id(raw), vec![event(1)])
                .idempotent(key(raw))
        })
        .collect();
    for (raw, committed) in ids.iter().zip(as_one_batch(store, requests).await) {
        assert_eq!(committed.streams[0].0.as_str().as_bytes(), raw.as_bytes());
    }
    let mut expected = keyed_by_themselves(&ids);
    expected.push(("blocker".into(), None));
    assert_stored(store, &expected).await;
    assert_read_back(store, &ids).await;
}

/// The SQLSTATE and constraint of a failed statement.
fn refusal(err: &sqlx::Error) -> (String, Option<String>) {
    match err {
        sqlx::Error::Database(db) => {
            (db.code().unwrap_or_default().into_owned(), db.constraint().map(str::to_owned))
        }
        other => panic!("not a database error: {other}"),
    }
}

/// What the Rust types refuse, the database refuses too, from callers outside the library:
/// `append(...)` and a plain INSERT with such a stream id, or such a key, store nothing.
#[tokio::test]
async fn outside_callers_cannot_store_what_the_types_refuse() {
    let store = fresh_postgres().await;
    // A text value cannot hold NUL at all: PostgreSQL refuses it on its own.
    let representable: Vec<String> =
        refused_ids().into_iter().filter(|s| !s.contains('\0')).collect();
    for raw in &representable {
        let err = sql_append(store.pool(), &store, &[raw], None).await.unwrap_err();
        assert_eq!(
            refusal(&err),
            ("23514".into(), Some("events_stream_id_valid".into())),
            "stream id {raw:?}: {err}"
        );
        let err = sql_append(store.pool(), &store, &["fine"], Some(raw)).await.unwrap_err();
        assert_eq!(
            refusal(&err),
            ("23514".into(), Some("events_idempotency_key_valid".into())),
            "key {raw:?}: {err}"
        );
        let insert = format!(
            "INSERT INTO {}.events (position, stream_id, version, event_id, event_type, \
               schema_version, payload, correlation_id, recorded_at) \
             VALUES (1, $1, 1, gen_random_uuid(), 'N', 1, '0', gen_random_uuid(), now())",
            q(&store)
        );
        let err = sqlx::query(&insert).bind(raw).execute(store.pool()).await.unwrap_err();
        assert_eq!(refusal(&err).1.as_deref(), Some("events_stream_id_valid"), "{raw:?}: {err}");
    }
    assert_stored::<&str>(&store, &[]).await;
    // `" a"` refused, `"a"` and `"a b"` stored.
    sql_append(store.pool(), &store, &["a", "a b"], Some("k")).await.unwrap();
    assert_stored(&store, &[("a", Some("k")), ("a b", None)]).await;
}

/// The rule in SQL (`is_valid_name`) and the rule in Rust agree on every code point, inside a
/// name and at either end, and on the byte limit with multi-byte characters.
#[tokio::test]
async fn the_sql_rule_and_the_rust_rule_agree_on_every_code_point() {
    let store = fresh_postgres().await;
    let f = format!("{}.is_valid_name", q(&store));
    // The code points (no surrogates; NUL cannot be in a text value) for which SQL refuses a
    // name with it inside, first, or last.
    let sql = format!(
        "SELECT * FROM ( \
           SELECT c, NOT {f}('a' || chr(c) || 'b', 255) AS inside, \
                  NOT {f}(chr(c) || 'a', 255) AS first, NOT {f}('a' || chr(c), 255) AS last \
           FROM generate_series(1, 1114111) AS c WHERE c NOT BETWEEN 55296 AND 57343) AS r \
         WHERE inside OR first OR last ORDER BY c"
    );
    let refused_in_sql: Vec<(u32, bool, bool, bool)> = sqlx::query(&sql)
        .fetch_all(store.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| (u32::try_from(r.get::<i32, _>(0)).unwrap(), r.get(1), r.get(2), r.get(3)))
        .collect();
    let refused_in_rust: Vec<(u32, bool, bool, bool)> = (1..=0x10FFFFu32)
        .filter_map(char::from_u32)
        .map(|c| {
            let refused = |s: String| StreamId::try_new(s).is_err();
            (
                u32::from(c),
                refused(format!("a{c}b")),
                refused(format!("{c}a")),
                refused(format!("a{c}")),
            )
        })
        .filter(|(_, inside, first, last)| *inside || *first || *last)
        .collect();
    assert_eq!(refused_in_sql, refused_in_rust);
    // The byte limit counts whole multi-byte characters.
    for (text, valid) in [
        (format!("{}x", "é".repeat(127)), true),
        (format!("{}xx", "é".repeat(127)), false),
        ("語".repeat(85), true),
        ("語".repeat(86), false),
        (format!("{}xxx", "🦀".repeat(63)), true),
        ("🦀".repeat(64), false),
        (String::new(), false),
    ] {
        let in_sql: bool = sqlx::query_scalar(&format!("SELECT {f}($1, 255)"))
            .bind(&text)
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(
            (in_sql, StreamId::try_new(&text).is_ok()),
            (valid, valid),
            "{} bytes",
            text.len()
        );
    }
}

/// A log migrated from before the rule may hold ids that it refuses (written by the library of
/// that time, or by outside callers): migrating still works (the rows cannot be changed), the
/// library reads each such row as an unreadable event carrying the id exactly as stored, the
/// events around it read normally, and no new such row can be stored.
#[tokio::test]
async fn stored_ids_the_rule_refuses_read_as_unreadable_events() {
    let store = fresh_postgres().await;
    // The schema as it was at version 2.
    sqlx::raw_sql(&format!(
        "ALTER TABLE {s}.events DROP CONSTRAINT events_stream_id_valid, \
           DROP CONSTRAINT events_idempotency_key_valid; \
         DROP FUNCTION {s}.is_valid_name; \
         DROP TABLE {s}.snapshots; \
         ALTER TABLE {s}.projections DROP COLUMN snapshot_type, DROP COLUMN snapshot_version, \
           DROP COLUMN snapshot_position, DROP COLUMN snapshot_event_position, \
           DROP COLUMN snapshot_event_id, DROP COLUMN snapshot_state; \
         ALTER TABLE {s}.parked_events DROP COLUMN discarded_at; \
         UPDATE {s}.schema_version SET version = 2;",
        s = q(&store)
    ))
    .execute(store.pool())
    .await
    .unwrap();
    let legacy = [" a", "a\u{3000}", "a\u{202E}b", "\u{FEFF}a"];
    for (i, raw) in legacy.iter().enumerate() {
        sql_append(store.pool(), &store, &[raw], Some(raw)).await.unwrap();
        sql_append(store.pool(), &store, &[&format!("fine-{i}")], None).await.unwrap();
    }
    store.migrate().await.unwrap();
    assert_eq!(store.schema_version().await.unwrap(), Some(Postgres::SCHEMA_VERSION));

    let page = store.read_log(GlobalPosition::START, &LogFilter::all(), 100).await.unwrap();
    assert_eq!(page.entries.len(), 2 * legacy.len());
    for (i, raw) in legacy.iter().enumerate() {
        let unreadable = page.entries[2 * i].as_ref().expect_err("a refused id was read");
        assert_eq!(unreadable.stream.as_bytes(), raw.as_bytes(), "the id as stored");
        assert!(unreadable.reason.contains("StreamId"), "{}", unreadable.reason);
        let fine = page.entries[2 * i + 1].as_ref().unwrap();
        assert_eq!(fine.stream_id.as_str(), format!("fine-{i}"));
    }
    // Nothing like them can be stored any more; "a" is another stream, and can.
    let err = sql_append(store.pool(), &store, &[" b"], None).await.unwrap_err();
    assert_eq!(refusal(&err).1.as_deref(), Some("events_stream_id_valid"), "{err}");
    let a = id("a");
    store
        .append(AppendRequest::new().expect(a.clone(), v(0)).write(a, vec![event(1)]))
        .await
        .unwrap();
}
