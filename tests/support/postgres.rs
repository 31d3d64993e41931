//! Fresh PostgreSQL stores for tests: one new, migrated schema per call, so tests run in
//! parallel without seeing each other's events.
//!
//! Include it with `#[path = "support/postgres.rs"] mod postgres_support;` (the path is relative
//! to the including file). `DATABASE_URL` picks the database, default
//! `postgres://postgres@127.0.0.1:5432/test`. When no database answers, the calling test fails
//! (it is never skipped), saying how to start one.
#![cfg(feature = "postgres")]
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use eventcore::backend::postgres::{Postgres, PostgresConfig, PostgresConfigBuilder};
use eventcore::{CorrelationId, EventMetadata, NewEvent, Payload, StreamId, StreamVersion};
use sqlx::{Connection, PgConnection};

/// The database tests use.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

const HOW_TO_START: &str = "These tests need PostgreSQL 13+ at DATABASE_URL (default \
postgres://postgres@127.0.0.1:5432/test, trust auth). Start one with `pg_ctlcluster <version> \
main start` (Debian: `apt-get install postgresql`, then `createdb -U postgres test`), or \
`docker run --rm -d -p 5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust -e POSTGRES_DB=test \
postgres:16`, or run `.ci/run`, which starts it.";

/// A schema name no other test uses: `ec_test_<unix seconds>_<random>`.
pub fn fresh_schema_name() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("ec_test_{secs}_{}", uuid::Uuid::now_v7().simple())
}

/// Settings for a fresh schema; adjust them, then pass them to [`fresh_postgres_with`].
pub fn fresh_config() -> PostgresConfigBuilder {
    PostgresConfig::builder(database_url()).schema(fresh_schema_name()).max_connections(16)
}

/// A connected, migrated store in a new schema of its own.
///
/// # Panics
/// When no database answers at `DATABASE_URL`, with a message saying how to start one.
pub async fn fresh_postgres() -> Postgres {
    fresh_postgres_with(fresh_config()).await
}

/// Like [`fresh_postgres`], with settings of your choice.
///
/// # Panics
/// When no database answers, or migrating fails.
pub async fn fresh_postgres_with(config: PostgresConfigBuilder) -> Postgres {
    let store = connect_unmigrated(config).await;
    store.migrate().await.unwrap_or_else(|e| panic!("migrating {} failed: {e}", store.schema()));
    store
}

/// A connected store whose schema does not exist yet.
///
/// # Panics
/// When no database answers at `DATABASE_URL`.
pub async fn connect_unmigrated(config: PostgresConfigBuilder) -> Postgres {
    let config = config.build().unwrap_or_else(|e| panic!("bad test configuration: {e}"));
    let store = Postgres::connect(config).await.unwrap_or_else(|e| {
        panic!("\n\nPostgreSQL is unreachable at {}: {e}\n\n{HOW_TO_START}\n\n", database_url())
    });
    drop_stale_schemas(&store).await;
    store
}

/// A connection of its own, outside any store's pool (to hold locks, corrupt rows...).
///
/// # Panics
/// When no database answers.
pub async fn raw_connection() -> PgConnection {
    PgConnection::connect(&database_url()).await.unwrap_or_else(|e| {
        panic!("\n\nPostgreSQL is unreachable at {}: {e}\n\n{HOW_TO_START}\n\n", database_url())
    })
}

/// Once per test process, drops test schemas older than an hour (left by earlier runs), so the
/// test database does not grow forever. Younger ones may belong to a run in progress.
async fn drop_stale_schemas(store: &Postgres) {
    static DONE: AtomicBool = AtomicBool::new(false);
    if DONE.swap(true, Ordering::SeqCst) {
        return;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'ec\\_test\\_%'",
    )
    .fetch_all(store.pool())
    .await
    .unwrap_or_default();
    for name in names {
        let born = name.split('_').nth(2).and_then(|s| s.parse::<u64>().ok());
        let valid = name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if valid && born.is_some_and(|t| t + 3600 < now) {
            // The name was checked to be a plain identifier.
            let _ = sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
                .execute(store.pool())
                .await;
        }
    }
}

/// A stream id, for tests.
pub fn id(s: &str) -> StreamId {
    StreamId::try_new(s).unwrap()
}

/// An event whose payload is `n`, with fresh metadata.
pub fn event(n: u64) -> NewEvent {
    NewEvent::new("N", 1, Payload::to_json(&n).unwrap(), EventMetadata::new(CorrelationId::new()))
}

/// A stream version.
pub fn v(n: u64) -> StreamVersion {
    StreamVersion::new(n)
}

/// Begins a transaction on `conn` that appends one event to `stream` (at version 1) through
/// the schema's SQL function `append`, and leaves it open: an append in flight, holding the
/// append lock and a transaction id, until the caller commits or rolls back. Returns the
/// event's position.
pub async fn begin_append(conn: &mut PgConnection, store: &Postgres, stream: &str) -> i64 {
    sqlx::query("BEGIN").execute(&mut *conn).await.unwrap();
    let sql = format!(
        "SELECT first_position FROM \"{}\".append(ARRAY[$1], ARRAY[0::int8], ARRAY[hashtext($1)], \
         ARRAY[true], ARRAY[$1], ARRAY[1::int8], ARRAY[$2::uuid], ARRAY['N'], \
         ARRAY[1], ARRAY['0'], ARRAY[$3::uuid], ARRAY[NULL::uuid], ARRAY[NULL::text], \
         ARRAY[now()], NULL)",
        store.schema()
    );
    sqlx::query_scalar(&sql)
        .bind(stream)
        .bind(uuid::Uuid::now_v7())
        .bind(uuid::Uuid::now_v7())
        .fetch_one(&mut *conn)
        .await
        .unwrap()
}

/// Loses every event of `stream` after its first `keep`, as a restore from a backup taken then
/// would (with the immutability triggers off for that session, as a restore writes the table).
///
/// # Panics
/// When the database fails.
pub async fn lose_events_after(store: &Postgres, stream: &StreamId, keep: u64) {
    let mut conn = raw_connection().await;
    sqlx::raw_sql("SET session_replication_role = replica").execute(&mut conn).await.unwrap();
    sqlx::query(&format!(
        "DELETE FROM \"{}\".events WHERE stream_id = $1 AND version > $2",
        store.schema()
    ))
    .bind(stream.as_str())
    .bind(i64::try_from(keep).unwrap())
    .execute(&mut conn)
    .await
    .unwrap();
}

/// A restore that lost the events of `streams` after their first `keep`: for the conformance
/// cases that take a restore.
pub async fn restore_keeping(store: Postgres, streams: Vec<StreamId>, keep: u64) -> Postgres {
    for stream in &streams {
        lose_events_after(&store, stream, keep).await;
    }
    store
}

/// Chaos for the tests that kill connections: a task that, until `stop` is set, strikes once
/// every `pace_ms` milliseconds (drawn from the range by a generator seeded with `seed`),
/// terminating up to `per_strike` of the connections whose `application_name` starts with
/// `prefix` (never its own). Returns the task and the count of connections it terminated.
pub fn spawn_killer(
    prefix: String,
    per_strike: i64,
    pace_ms: std::ops::Range<u64>,
    seed: u64,
    stop: Arc<AtomicBool>,
) -> (tokio::task::JoinHandle<()>, Arc<AtomicU64>) {
    let kills = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&kills);
    let killer = tokio::spawn(async move {
        let mut conn = raw_connection().await;
        let mut rng = fastrand::Rng::with_seed(seed);
        while !stop.load(Ordering::SeqCst) {
            // The chaos's pace, not a wait for anything.
            tokio::time::sleep(std::time::Duration::from_millis(rng.u64(pace_ms.clone()))).await;
            let n: Vec<bool> = sqlx::query_scalar(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE application_name LIKE $1 || '%' AND pid <> pg_backend_pid() \
                 ORDER BY random() LIMIT $2",
            )
            .bind(&prefix)
            .bind(per_strike)
            .fetch_all(&mut conn)
            .await
            .unwrap();
            counted.fetch_add(n.len() as u64, Ordering::SeqCst);
        }
    });
    (killer, kills)
}
