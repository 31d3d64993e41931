//! Failures of the PostgreSQL backend are typed and lose nothing (promise 7).
#![cfg(feature = "postgres")]

#[path = "support/postgres.rs"]
mod postgres_support;

use std::time::{Duration, Instant};

use eventcore::{
    CorrelationId, EventId, EventMetadata, GlobalPosition, NewEvent, Payload, StreamId,
    backend::{
        AppendRequest, Backend, IdempotencyKey, LogFilter, StoreError,
        postgres::{Postgres, PostgresConfig},
    },
};
use postgres_support::{
    event, fresh_config, fresh_postgres, fresh_postgres_with, id, raw_connection, v,
};
use sqlx::{Connection, PgConnection};

fn one(stream: &StreamId, expected: u64) -> AppendRequest {
    AppendRequest::new()
        .expect(stream.clone(), v(expected))
        .write(stream.clone(), vec![event(expected)])
}

/// Starts a transaction on `conn` that stores the idempotency key `key` without committing, so
/// an append carrying that key does all its work, then waits for this transaction just before
/// it could commit.
async fn hold_key(conn: &mut PgConnection, store: &Postgres, key: &str) {
    sqlx::query("BEGIN").execute(&mut *conn).await.unwrap();
    // The key rides on an append's first event (see the migration).
    let sql = format!(
        "INSERT INTO \"{}\".events (position, stream_id, version, event_id, event_type, \
         schema_version, payload, correlation_id, recorded_at, idempotency_key, \
         idempotency_events) \
         VALUES (pg_current_xact_id()::text::bigint * 65536 + 1, 'key-holder', 1, \
         gen_random_uuid(), 'T', 1, '1', gen_random_uuid(), now(), $1, 1)",
        store.schema()
    );
    sqlx::query(&sql).bind(key).execute(&mut *conn).await.unwrap();
}

fn keyed(stream: &StreamId, expected: u64, key: &str) -> AppendRequest {
    one(stream, expected).idempotent(IdempotencyKey::try_new(key).unwrap())
}

/// Polls `pg_stat_activity` until a backend runs a statement on this store's schema (an
/// append: nothing else takes locks) and waits for a lock.
async fn backend_waiting_in_append(conn: &mut PgConnection, store: &Postgres) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pid: Option<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
             AND strpos(query, $1) > 0 LIMIT 1",
        )
        .bind(format!("\"{}\".", store.schema()))
        .fetch_optional(&mut *conn)
        .await
        .unwrap();
        if let Some(pid) = pid {
            return pid;
        }
        assert!(Instant::now() < deadline, "the append never started waiting for the lock");
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn an_unreachable_database_is_unavailable_and_says_how_to_start_one() {
    let config = PostgresConfig::builder("postgres://postgres@127.0.0.1:1/test")
        .acquire_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let err = Postgres::connect(config).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert!(err.is_transient());
    let text = err.to_string();
    assert!(text.contains("127.0.0.1:1/test") && text.contains("start PostgreSQL"), "{text}");
}

/// A server that answers, and refuses (a database that does not exist, a user it does not
/// know), is not a server to start: the error says what the server said and what to check,
/// and is not transient.
#[tokio::test]
async fn a_server_that_refuses_the_connection_says_why_not_how_to_start_one() {
    let url = postgres_support::database_url();
    let (base, _) = url.rsplit_once('/').expect("a URL with a database");
    let cases = [
        (format!("{base}/ec_no_such_database"), "does not exist", "create the database"),
        (
            url.replacen("postgres://postgres@", "postgres://ec_no_such_role@", 1),
            "ec_no_such_role",
            "check the user",
        ),
    ];
    for (url, said, advice) in cases {
        let config =
            PostgresConfig::builder(url).acquire_timeout(Duration::from_secs(5)).build().unwrap();
        let err = Postgres::connect(config).await.unwrap_err();
        // Trying again does not mend it: a service starting with it should fail, not wait.
        assert!(matches!(err, StoreError::Other(_)), "{err}");
        assert!(!err.is_transient(), "{err}");
        let text = err.to_string();
        assert!(text.contains(said) && text.contains(advice), "{text}");
        assert!(!text.contains("start PostgreSQL"), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminating_the_connection_mid_append_is_unavailable_and_writes_nothing() {
    let store = fresh_postgres().await;
    let s = id("victim");
    store.append(one(&s, 0)).await.unwrap();

    let mut holder = raw_connection().await;
    hold_key(&mut holder, &store, "k").await;
    let append = tokio::spawn({
        let (store, s) = (store.clone(), s.clone());
        async move { store.append(keyed(&s, 1, "k")).await }
    });
    let mut killer = raw_connection().await;
    let pid = backend_waiting_in_append(&mut killer, &store).await;
    let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(&mut killer)
        .await
        .unwrap();
    assert!(killed);

    let err = append.await.unwrap().unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "expected Unavailable, got {err:?}");
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();

    let read = store.read(std::slice::from_ref(&s)).await.unwrap();
    assert_eq!((read[0].version, read[0].events.len()), (v(1), 1), "partial write");
    assert_eq!(store.read_all(GlobalPosition::START, 10).await.unwrap().len(), 1);
    let next = store.append(keyed(&s, 1, "k")).await.unwrap();
    assert_eq!((next.version_of(&s), next.replayed), (Some(v(2)), false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_timeout_is_a_timeout_and_the_next_append_succeeds() {
    let store =
        fresh_postgres_with(fresh_config().statement_timeout(Duration::from_millis(300))).await;
    let s = id("slow");
    store.append(one(&s, 0)).await.unwrap();
    let mut holder = raw_connection().await;
    hold_key(&mut holder, &store, "k").await;
    let err = store.append(keyed(&s, 1, "k")).await.unwrap_err();
    assert!(matches!(err, StoreError::Timeout), "expected Timeout, got {err:?}");
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    assert_eq!(store.read(std::slice::from_ref(&s)).await.unwrap()[0].version, v(1));
    store.append(keyed(&s, 1, "k")).await.unwrap();
}

/// Positions are derived from the writing transaction's id, so an append must be the first
/// write of its transaction: called by hand after another write, the SQL function refuses with
/// its own error code and writes nothing.
#[tokio::test]
async fn the_append_function_refuses_to_share_a_transaction_with_an_earlier_write() {
    let store = fresh_postgres().await;
    let mut conn = raw_connection().await;
    sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()").execute(&mut conn).await.unwrap();
    let sql = format!(
        "SELECT * FROM \"{}\".append(ARRAY['s'], ARRAY[0::int8], ARRAY[1], ARRAY[true], \
         ARRAY['s'], ARRAY[1::int8], ARRAY[gen_random_uuid()], ARRAY['T'], ARRAY[1], \
         ARRAY['1'], ARRAY[gen_random_uuid()], ARRAY[NULL::uuid], ARRAY[NULL::text], \
         ARRAY[now()], NULL)",
        store.schema()
    );
    let err = sqlx::query(&sql).execute(&mut conn).await.unwrap_err();
    let code = err.as_database_error().and_then(|e| e.code()).map(|c| c.into_owned());
    assert_eq!(code.as_deref(), Some("EC002"), "{err}");
    sqlx::query("ROLLBACK").execute(&mut conn).await.unwrap();
    assert_eq!(store.read(&[id("s")]).await.unwrap()[0].version, v(0));
}

#[tokio::test]
async fn an_append_beyond_the_position_scheme_is_refused_whole() {
    let store = fresh_postgres().await;
    let s = id("huge");
    let events: Vec<_> = (0..65_536).map(event).collect();
    let request = AppendRequest::new().expect(s.clone(), v(0)).write(s.clone(), events);
    let err = store.append(request).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::InvalidAppend(m) if m.contains("65535")),
        "expected InvalidAppend, got {err:?}"
    );
    assert_eq!(store.read(&[s]).await.unwrap()[0].version, v(0));
}

/// Inserts an event row behind the store's back, with the given id, schema version and
/// custom-metadata JSON.
async fn insert_raw_event(
    conn: &mut PgConnection,
    store: &Postgres,
    stream: &str,
    event_id: uuid::Uuid,
    schema_version: i32,
    custom: &str,
) {
    let sql = format!(
        "INSERT INTO \"{}\".events (position, stream_id, version, event_id, event_type, \
         schema_version, payload, correlation_id, custom, recorded_at) \
         VALUES ((pg_current_xact_id()::text::bigint << 16) + 1, $1, 1, $2, 'T', $3, '1', \
         gen_random_uuid(), $4::json, now())",
        store.schema()
    );
    sqlx::query(&sql)
        .bind(stream)
        .bind(event_id)
        .bind(schema_version)
        .bind(custom)
        .execute(&mut *conn)
        .await
        .unwrap();
}

/// A stored time no `chrono` time can hold (`infinity`, `-infinity`, a year past 262142,
/// written behind the store's back) makes its event corrupt, named, as any bad column does:
/// reading it never panics, and the log delivers it in place as unreadable.
#[tokio::test]
async fn a_stored_time_out_of_range_is_a_corrupt_event_not_a_panic() {
    let store = fresh_postgres().await;
    let mut conn = raw_connection().await;
    let times = ["infinity", "-infinity", "270000-01-01 00:00:00+00"];
    let mut ids = Vec::new();
    for (n, time) in times.iter().enumerate() {
        let event_id = EventId::new();
        ids.push(event_id);
        let sql = format!(
            "INSERT INTO \"{}\".events (position, stream_id, version, event_id, event_type, \
             schema_version, payload, correlation_id, recorded_at) \
             VALUES ($1, $2, 1, $3, 'T', 1, '1', gen_random_uuid(), $4::timestamptz)",
            store.schema()
        );
        sqlx::query(&sql)
            .bind(i64::try_from(n + 1).unwrap())
            .bind(format!("time-{n}"))
            .bind(event_id.as_uuid())
            .bind(*time)
            .execute(&mut conn)
            .await
            .unwrap();
    }
    for (n, event_id) in ids.iter().enumerate() {
        let stream = id(&format!("time-{n}"));
        match store.read(std::slice::from_ref(&stream)).await {
            Err(StoreError::Corrupt { stream: s, event_id: e, reason }) => {
                assert_eq!((s, e), (stream, *event_id));
                assert!(reason.contains("recorded_at"), "{reason}");
            }
            other => panic!("{}: {other:?}", times[n]),
        }
    }
    let page = store.read_log(GlobalPosition::START, &LogFilter::all(), 10).await.unwrap();
    let unreadable: Vec<_> =
        page.entries.iter().map(|e| e.as_ref().err().and_then(|u| u.event_id)).collect();
    assert_eq!(unreadable, ids.into_iter().map(Some).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_corrupt_stored_row_is_an_error_naming_its_event_and_stream() {
    let store = fresh_postgres().await;
    let mut conn = raw_connection().await;
    let good_meta = r#"{"user": "alice"}"#;

    let bad_metadata = EventId::new();
    insert_raw_event(
        &mut conn,
        &store,
        "bad-metadata",
        bad_metadata.as_uuid(),
        1,
        "\"not an object\"",
    )
    .await;
    let err = store.read(&[id("bad-metadata")]).await.unwrap_err();
    match &err {
        StoreError::Corrupt { stream, event_id, reason } => {
            assert_eq!((stream, *event_id), (&id("bad-metadata"), bad_metadata));
            assert!(reason.contains("custom metadata"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(err.to_string().contains(&bad_metadata.to_string()));
    // The strict `read_all` names the event and its position.
    let err = store.read_all(GlobalPosition::START, 10).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Unreadable(u) if u.event_id == Some(bad_metadata) && u.position > GlobalPosition::START),
        "{err:?}"
    );

    let bad_version = EventId::new();
    insert_raw_event(&mut conn, &store, "bad-version", bad_version.as_uuid(), -3, good_meta).await;
    let err = store.read(&[id("bad-version")]).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt { event_id, stream, .. } if *event_id == bad_version && *stream == id("bad-version")),
        "{err:?}"
    );

    // Not a UUIDv7: there is no event id to name, so the row is unreadable, naming its stream.
    insert_raw_event(&mut conn, &store, "bad-id", uuid::Uuid::nil(), 1, good_meta).await;
    let err = store.read(&[id("bad-id")]).await.unwrap_err();
    assert!(matches!(&err, StoreError::UnreadableRow(m) if m.contains("bad-id")), "{err:?}");

    // Healthy streams next to them still read.
    let fine = id("fine");
    store.append(one(&fine, 0)).await.unwrap();
    assert_eq!(store.read(&[fine]).await.unwrap()[0].events.len(), 1);

    // The log is not blocked by them: each bad row is one entry of its page, at its position,
    // and the good event after them is delivered.
    let page = store.read_log(GlobalPosition::START, &LogFilter::all(), 10).await.unwrap();
    let kinds: Vec<_> = page
        .entries
        .iter()
        .map(|e| match e {
            Ok(e) => (e.stream_id.to_string(), true, Some(e.event_id())),
            Err(u) => (u.stream.clone(), false, u.event_id),
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("bad-metadata".to_owned(), false, Some(bad_metadata)),
            ("bad-version".to_owned(), false, Some(bad_version)),
            ("bad-id".to_owned(), false, None),
            ("fine".to_owned(), true, kinds[3].2),
        ]
    );
    let positions: Vec<_> = page
        .entries
        .iter()
        .map(|e| e.as_ref().map_or_else(|u| u.position, |e| e.position))
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    assert!(page.checked_to >= positions[3]);
}

#[tokio::test]
async fn an_oversized_payload_is_rejected_and_nothing_is_stored() {
    let store = fresh_postgres_with(fresh_config().max_payload(64)).await;
    let (a, b) = (id("a"), id("b"));
    let big = NewEvent::new(
        "Big",
        1,
        Payload::to_json(&"x".repeat(100)).unwrap(),
        EventMetadata::new(CorrelationId::new()),
    );
    let big_id = big.metadata.event_id;
    let err = store
        .append(
            AppendRequest::new()
                .expect(a.clone(), v(0))
                .expect(b.clone(), v(0))
                .write(a.clone(), vec![event(1)])
                .write(b.clone(), vec![big]),
        )
        .await
        .unwrap_err();
    match err {
        StoreError::PayloadTooLarge { stream, event_id, size, limit } => {
            // 102 bytes of payload and the 3 of its event type.
            assert_eq!((stream, event_id, size, limit), (b, big_id, 105, 64));
        }
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }
    assert!(store.read_all(GlobalPosition::START, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_repeated_event_id_is_an_invalid_append() {
    let store = fresh_postgres().await;
    let (a, b) = (id("a"), id("b"));
    let e = event(1);
    store
        .append(AppendRequest::new().expect(a.clone(), v(0)).write(a, vec![e.clone()]))
        .await
        .unwrap();
    let err = store
        .append(AppendRequest::new().expect(b.clone(), v(0)).write(b, vec![e]))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidAppend(_)), "{err:?}");
}

#[tokio::test]
async fn a_pool_that_was_closed_is_unavailable() {
    let store = fresh_postgres().await;
    store.pool().close().await;
    let err = store.read(&[id("a")]).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    // The raw connection API is still usable for checks like this one.
    let mut conn = raw_connection().await;
    conn.ping().await.unwrap();
}

/// The SQL `append` called inside a SERIALIZABLE transaction whose snapshot predates a change
/// to a stream it only reads: PostgreSQL's serializable checks do not see the store's own READ
/// COMMITTED appends, so the stale version check would let write skew through. It refuses to
/// run instead, and nothing is written.
#[tokio::test]
async fn the_sql_append_refuses_a_serializable_transaction_with_a_stale_snapshot() {
    let store = fresh_postgres().await;
    let mut t = raw_connection().await;
    sqlx::raw_sql("BEGIN ISOLATION LEVEL SERIALIZABLE; SELECT 1").execute(&mut t).await.unwrap();
    // The library writes `r` (now at version 1) after T's snapshot.
    let r = id("r-1");
    store
        .append(AppendRequest::new().expect(r.clone(), v(0)).write(r, vec![event(1)]))
        .await
        .unwrap();
    // T expects `r` at 0 (only read) and writes `w`.
    let sql = format!(
        "SELECT first_position FROM \"{}\".append(ARRAY['r-1','w-1'], ARRAY[0::int8, 0::int8], \
         ARRAY[1, 2], ARRAY[false, true], ARRAY['w-1'], ARRAY[1::int8], ARRAY[$1::uuid], \
         ARRAY['N'], ARRAY[1], ARRAY['0'], ARRAY[$2::uuid], ARRAY[NULL::uuid], \
         ARRAY[NULL::text], ARRAY[now()], NULL)",
        store.schema()
    );
    let result = sqlx::query_scalar::<_, Option<i64>>(&sql)
        .bind(uuid::Uuid::now_v7())
        .bind(uuid::Uuid::now_v7())
        .fetch_one(&mut t)
        .await;
    let err = result.expect_err("append() ran on a stale SERIALIZABLE snapshot");
    assert!(err.to_string().contains("READ COMMITTED"), "{err}");
    sqlx::query("ROLLBACK").execute(&mut t).await.unwrap();
    assert_eq!(store.read(&[id("w-1")]).await.unwrap()[0].version, v(0));
}

/// An append that only reads a stream checks its version on a snapshot taken after its locks,
/// which REPEATABLE READ and SERIALIZABLE would not give it (SERIALIZABLE's own checks do not
/// see the store's READ COMMITTED appends either): on a pool whose transactions default to
/// either, that append refuses to run (and writes nothing), while a store made by `connect`
/// sets its connections to READ COMMITTED whatever the URL or the server says.
#[tokio::test]
async fn appends_refuse_repeatable_read_and_serializable_and_connect_sets_read_committed() {
    let store = fresh_postgres().await;
    let (written, read) = (id("rr-written"), id("rr-read"));
    let request = || {
        AppendRequest::new()
            .expect(written.clone(), v(0))
            .expect(read.clone(), v(0))
            .write(written.clone(), vec![event(1)])
    };
    for level in ["repeatable read", "serializable"] {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    sqlx::query(&format!("SET default_transaction_isolation = '{level}'"))
                        .execute(conn)
                        .await?;
                    Ok(())
                })
            })
            .connect(&postgres_support::database_url())
            .await
            .unwrap();
        let other = Postgres::from_pool(pool, store.schema().clone());
        let err = other.append(request()).await.unwrap_err();
        assert!(err.to_string().contains("READ COMMITTED"), "{level}: {err}");
        assert!(err.to_string().contains(&level.to_uppercase()), "{level}: {err}");
        assert_eq!(store.read(std::slice::from_ref(&written)).await.unwrap()[0].version, v(0));
    }

    let url = format!(
        "{}?options=-c%20default_transaction_isolation%3Drepeatable%5C%20read",
        postgres_support::database_url()
    );
    let config = PostgresConfig::builder(url).schema(store.schema().as_str()).build().unwrap();
    let connected = Postgres::connect(config).await.unwrap();
    let isolation: String =
        sqlx::query_scalar("SHOW transaction_isolation").fetch_one(connected.pool()).await.unwrap();
    assert_eq!(isolation, "read committed");
    connected.append(request()).await.unwrap();
}

/// The listener behind a live reader has a connection of its own: on a store with a
/// one-connection pool, appends and reads still get that connection once a reader listens
/// (the listener took it from the pool for good, and every append timed out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_reader_leaves_the_pool_whole() {
    let store = fresh_postgres_with(
        fresh_config().max_connections(1).acquire_timeout(Duration::from_secs(5)),
    )
    .await;
    let _watch = store.watch_log();
    // Until the listener is listening (a condition, bounded).
    let mut conn = raw_connection().await;
    let listen = format!("LISTEN \"{}\"", store.log_channel());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let listening: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE query = $1 AND state = 'idle'",
        )
        .bind(&listen)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        if listening > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the listener never listened");
        tokio::task::yield_now().await;
    }
    store.append(one(&id("whole-1"), 0)).await.unwrap();
    assert_eq!(store.read(&[id("whole-1")]).await.unwrap()[0].version, v(1));
}

/// "Wait for ever" and "no limit" written as the largest values: refused by `build` where
/// the clock arithmetic would overflow, and never a panic where a setter takes them.
#[tokio::test]
async fn the_largest_durations_and_limits_are_refused_or_work_but_never_panic() {
    for build in [
        fresh_config().acquire_timeout(Duration::MAX).build(),
        fresh_config().read_all_wait(Duration::MAX).build(),
    ] {
        assert!(
            matches!(build, Err(eventcore::backend::postgres::ConfigError::InvalidSetting { .. })),
            "{build:?}"
        );
    }
    let store =
        fresh_postgres().await.with_read_all_wait(Duration::MAX).with_append_batches(usize::MAX);
    store.append(one(&id("largest-1"), 0)).await.unwrap();
    let page = store.read_log(GlobalPosition::START, &LogFilter::all(), 10).await.unwrap();
    assert_eq!(page.entries.len(), 1);
}

/// PostgreSQL keeps `statement_timeout` in whole milliseconds: a timeout with a fraction of one
/// would be cut short without a word, so `build` refuses it, as it refuses zero.
#[test]
fn a_statement_timeout_that_is_not_whole_milliseconds_is_refused() {
    for timeout in [Duration::from_micros(1500), Duration::from_nanos(2_000_001)] {
        let build = fresh_config().statement_timeout(timeout).build();
        assert!(
            matches!(
                build,
                Err(eventcore::backend::postgres::ConfigError::InvalidSetting {
                    setting: "statement_timeout",
                    ..
                })
            ),
            "{timeout:?}: {build:?}"
        );
    }
    assert!(fresh_config().statement_timeout(Duration::from_millis(1500)).build().is_ok());
}

/// A number of connections for hot streams with no hot streams would do nothing, and zero
/// connections could hold nothing: both are refused by name, not quietly ignored or raised.
#[test]
fn hot_connections_without_hot_streams_or_zero_of_them_are_refused() {
    use eventcore::backend::postgres::ConfigError;
    let hot = |id: &eventcore::StreamId| id.as_str().starts_with("hot-");
    for (build, says) in [
        (fresh_config().hot_connections(4).build(), "without `hot_streams`"),
        (fresh_config().hot_streams(hot).hot_connections(0).build(), "at least 1"),
    ] {
        match build {
            Err(ConfigError::InvalidSetting { setting: "hot_connections", reason }) => {
                assert!(reason.contains(says), "{reason}");
            }
            other => panic!("expected hot_connections refused ({says}): {other:?}"),
        }
    }
    let config = fresh_config().hot_streams(hot).hot_connections(3).build().unwrap();
    assert!(format!("{config:?}").contains("hot_connections: Some(3)"), "{config:?}");
    let config = fresh_config().hot_streams(hot).build().unwrap();
    assert!(format!("{config:?}").contains("hot_connections: Some(16)"), "{config:?}");
}

/// A lock not granted within the server's `lock_timeout` (set by many production databases)
/// wrote nothing: the append fails as a timeout, which is transient (a keyed command retries
/// it), not as a final error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_timeout_is_a_transient_timeout() {
    let url = format!("{}?options=-c%20lock_timeout%3D200ms", postgres_support::database_url());
    let store = fresh_postgres_with(
        PostgresConfig::builder(url).schema(postgres_support::fresh_schema_name()),
    )
    .await;
    let mut holder = raw_connection().await;
    postgres_support::begin_append(&mut holder, &store, "locked-1").await;
    let err = store.append(one(&id("locked-1"), 0)).await.unwrap_err();
    assert!(matches!(err, StoreError::Timeout) && err.is_transient(), "{err:?}");
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
}

/// A schema at a version newer than this code knows (migrated by a newer release) is refused
/// when connecting, with a typed error, before anything is read or written under rules this
/// code does not know.
#[tokio::test]
async fn connecting_to_a_schema_newer_than_the_code_is_refused() {
    let store = fresh_postgres().await;
    let newer = i32::try_from(Postgres::SCHEMA_VERSION).unwrap() + 1;
    sqlx::query(&format!("UPDATE \"{}\".schema_version SET version = $1", store.schema()))
        .bind(newer)
        .execute(store.pool())
        .await
        .unwrap();
    let config = PostgresConfig::builder(postgres_support::database_url())
        .schema(store.schema().as_str())
        .build()
        .unwrap();
    match Postgres::connect(config).await {
        Err(StoreError::Schema(reason)) => assert!(reason.contains(&newer.to_string()), "{reason}"),
        other => panic!("connected to a newer schema: {:?}", other.map(|_| ())),
    }
}

/// A schema renamed after it was migrated: its functions still name the old schema, so
/// `migrate()` fails on them. The error says the schema was renamed, rather than that it is
/// out of date and to call `migrate()`, the very call that failed.
#[tokio::test]
async fn a_renamed_schema_is_reported_as_renamed_not_as_out_of_date() {
    let store = fresh_postgres().await;
    let stream = id("renamed");
    store.append(one(&stream, 0)).await.unwrap();
    let renamed = postgres_support::fresh_schema_name();
    sqlx::query(&format!("ALTER SCHEMA \"{}\" RENAME TO \"{renamed}\"", store.schema()))
        .execute(store.pool())
        .await
        .unwrap();
    let config = PostgresConfig::builder(postgres_support::database_url())
        .schema(renamed.as_str())
        .build()
        .unwrap();
    let moved = Postgres::connect(config).await.unwrap();
    let says_renamed = |what: &str, e: StoreError| match e {
        StoreError::Schema(reason) => {
            assert!(reason.contains("renamed"), "{what}: {reason}");
            assert!(reason.contains(store.schema().as_str()), "{what}: {reason}");
            assert!(!reason.contains("migrate()"), "{what}: {reason}");
        }
        other => panic!("{what}: expected a schema error, got {other:?}"),
    };
    // Appends and reads go on (the statements name the schema given); `migrate()`, which a
    // user told "out of date" would call, runs into the functions made in the old one.
    moved.append(one(&stream, 1)).await.unwrap();
    says_renamed("migrate", moved.migrate().await.unwrap_err());
}
