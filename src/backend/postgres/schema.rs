//! The database schema: its migrations, its version, and `migrate()`.

use std::time::Duration;

use sqlx::{Executor, PgConnection, PgPool, Row};

use super::{SchemaName, errors::store_error};
use crate::backend::StoreError;

/// The schema version this code creates and understands.
pub(super) const LATEST: i32 = 8;

/// Every migration, in order: `(version it brings the schema to, SQL template)`.
///
/// A later version appends an entry here; a database at version `n` runs the entries above `n`.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("../../../migrations/0001_initial.sql")),
    (2, include_str!("../../../migrations/0002_projections.sql")),
    (3, include_str!("../../../migrations/0003_inputs.sql")),
    (4, include_str!("../../../migrations/0004_snapshots.sql")),
    (5, include_str!("../../../migrations/0005_snapshot_checks.sql")),
    (6, include_str!("../../../migrations/0006_discarded_parked.sql")),
    (7, include_str!("../../../migrations/0007_category_index.sql")),
    (8, include_str!("../../../migrations/0008_search_path.sql")),
];

/// FNV-1a, 64 bits: a stable hash for advisory lock keys (Rust's `Hasher`s are not stable).
pub(super) fn fnv1a(text: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

/// The advisory lock key that serialises `migrate()` on one schema.
fn migrate_lock(schema: &SchemaName) -> i64 {
    fnv1a(&format!("eventcore:migrate:{schema}"))
}

/// The advisory lock key that serialises `Postgres::index_event_types()` on one schema (held by
/// the build's session), so that a second call never takes the first's index, invalid while it is
/// built, for one left by a build that failed.
pub(super) fn index_event_types_lock(schema: &SchemaName) -> i64 {
    fnv1a(&format!("eventcore:index-event-types:{schema}"))
}

/// The advisory lock key that an append over more than 64 streams takes exclusively, and every
/// other append shared (see READ-SET VALIDATION in the migration).
pub(super) fn append_lock(schema: &SchemaName) -> i64 {
    fnv1a(&format!("eventcore:appends:{schema}"))
}

/// The first half of the advisory lock keys `(class, codec::lock_key(stream_id))` that appends to one
/// schema take on the streams they read and write.
pub(super) fn stream_lock_class(schema: &SchemaName) -> i32 {
    fold(fnv1a(&format!("eventcore:streams:{schema}")))
}

/// The first half of the advisory lock keys `(class, codec::lock_key(stream_id))` that hold hot
/// streams of one schema across processes: a class of its own, so that a hold never waits
/// for, or is waited for by, an append's locks.
pub(super) fn hot_lock_class(schema: &SchemaName) -> i32 {
    fold(fnv1a(&format!("eventcore:hot:{schema}")))
}

/// The `LISTEN`/`NOTIFY` channel appends to one schema notify (at most 63 bytes, as channel
/// names must be).
pub(super) fn notify_channel(schema: &SchemaName) -> String {
    format!("eventcore_{:016x}", fnv1a(&format!("eventcore:log:{schema}")))
}

/// Folds a 64-bit hash into 32 bits, for the two-integer form of advisory lock keys.
pub(super) fn fold(hash: i64) -> i32 {
    let bits = u64::from_ne_bytes(hash.to_ne_bytes());
    i32::from_ne_bytes(((bits >> 32) as u32 ^ bits as u32).to_ne_bytes())
}

/// Fills a SQL template: the schema name (validated, then quoted: identifiers cannot be bound
/// as parameters) and the lock keys, as integer literals.
pub(super) fn render(template: &str, schema: &SchemaName) -> String {
    // `pg_locks` shows a bigint advisory key as two unsigned 32-bit halves.
    let key = u64::from_ne_bytes(append_lock(schema).to_ne_bytes());
    template
        .replace("@schema@", &schema.quoted())
        .replace("@stream_lock_class@", &stream_lock_class(schema).to_string())
        .replace("@append_lock@", &append_lock(schema).to_string())
        .replace("@append_lock_hi@", &(key >> 32).to_string())
        .replace("@append_lock_lo@", &(key & 0xffff_ffff).to_string())
        .replace("@channel@", &notify_channel(schema))
}

/// Creates or upgrades the schema; see [`Postgres::migrate`](super::Postgres::migrate).
/// Abandoned (the caller's timeout, an aborted task), its transaction is rolled back, waiting
/// `answer_wait` at most for the answer, and its connection closed past that (see
/// [`ProjectionTx`](super::ProjectionTx)).
pub(super) async fn migrate(
    pool: &PgPool,
    schema: &SchemaName,
    answer_wait: Duration,
) -> Result<(), StoreError> {
    let map = |e: sqlx::Error| store_error(e, schema);
    let mut tx = super::ProjectionTx::begin(pool, None, answer_wait).await.map_err(map)?;
    // One concrete `&mut PgConnection` (instead of `&mut *tx` at each call) keeps the future
    // provably `Send`, so `migrate()` can run inside `tokio::spawn`.
    let conn: &mut PgConnection = &mut tx;
    // The pool's `statement_timeout` is for appends and reads: a migration statement takes
    // longer, and a concurrent call waits for the first to commit. For this transaction only.
    // The server's `lock_timeout` stays: the wait for another migration is not a lock wait
    // (see `lock_migrations`), and a migration's `ALTER TABLE` or `CREATE INDEX` that waits
    // for the tables' locks behind live traffic (a long transaction that appended, a report
    // that reads) makes every later append and read wait behind it, which that timeout is
    // there to bound (the migration then fails, and is run again). A server that sets none
    // would leave that wait, and every append queued behind it, unbounded: the migration then
    // waits at most `MIGRATION_LOCK_TIMEOUT` for each lock.
    // The migrations, and the statements below, resolve names under `pg_catalog, pg_temp`
    // alone, whatever the caller's `search_path`: what they create (a CHECK, an index, a
    // default) is bound to PostgreSQL's built-ins, never to a function of a schema on that
    // path that fits better (see 0008_search_path.sql). Every object of the store is named
    // with its schema. For this transaction only.
    sqlx::query(
        "SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true), \
           pg_catalog.set_config('statement_timeout', '0', true), \
           (SELECT pg_catalog.set_config('lock_timeout', $1, true) FROM pg_catalog.pg_settings \
            WHERE name = 'lock_timeout' AND setting::bigint = 0)",
    )
    .bind(format!("{}ms", MIGRATION_LOCK_TIMEOUT.as_millis()))
    .execute(&mut *conn)
    .await
    .map_err(map)?;
    // Held until commit: concurrent calls run one after the other, and each later one finds the
    // schema at the latest version and does nothing.
    lock_migrations(conn, schema).await?;
    let q = schema.quoted();
    // Only what is missing is created: `CREATE ... IF NOT EXISTS` checks its privilege (CREATE
    // on the database, on the schema) before it looks, so it would refuse a role that may use
    // the store but not change it, even when there is nothing to do.
    let (has_schema, has_version): (bool, bool) = sqlx::query_as(
        "SELECT pg_catalog.to_regnamespace($1) IS NOT NULL, \
           pg_catalog.to_regclass($1 || '.schema_version') IS NOT NULL",
    )
    .bind(&q)
    .fetch_one(&mut *conn)
    .await
    .map_err(map)?;
    if !has_schema {
        conn.execute(format!("CREATE SCHEMA IF NOT EXISTS {q}").as_str()).await.map_err(map)?;
    }
    if !has_version {
        conn.execute(
            format!(
                "CREATE TABLE IF NOT EXISTS {q}.schema_version (
                     singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
                     version integer NOT NULL,
                     migrated_at timestamptz NOT NULL DEFAULT pg_catalog.now()
                 )"
            )
            .as_str(),
        )
        .await
        .map_err(map)?;
    }
    let current: i32 = sqlx::query(&format!("SELECT version FROM {q}.schema_version"))
        .fetch_optional(&mut *conn)
        .await
        .map_err(map)?
        .map(|row| row.try_get::<i32, _>(0))
        .transpose()
        .map_err(map)?
        .unwrap_or(0);
    if current > LATEST {
        return Err(newer_than_known(schema, current));
    }
    for (version, template) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        conn.execute(render(template, schema).as_str())
            .await
            .map_err(|e| in_the_way(e, schema, *version))?;
        sqlx::query(&format!(
            "INSERT INTO {q}.schema_version (singleton, version) VALUES (true, $1)
             ON CONFLICT (singleton) DO UPDATE SET version = excluded.version, migrated_at = pg_catalog.now()"
        ))
        .bind(version)
        .execute(&mut *conn)
        .await
        .map_err(map)?;
        tracing::info!(schema = %schema, version, "eventcore schema migrated");
    }
    rebase(conn, schema).await?;
    tx.commit().await.map_err(map)
}

/// Takes the schema's migration lock for the transaction, waiting as long as another
/// migration holds it. It asks again and again (the pause between two asks growing to 50 ms)
/// rather than waiting in the server: a caller that gives up meanwhile (a timeout of its own,
/// an aborted task) then leaves its connection idle in its transaction, which dropping it
/// rolls back at once, instead of stuck in a lock wait until the other migration ends, out of
/// its pool's reach all that time.
async fn lock_migrations(conn: &mut PgConnection, schema: &SchemaName) -> Result<(), StoreError> {
    let mut pause = Duration::from_millis(1);
    loop {
        let taken: bool = sqlx::query_scalar("SELECT pg_catalog.pg_try_advisory_xact_lock($1)")
            .bind(migrate_lock(schema))
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| store_error(e, schema))?;
        if taken {
            return Ok(());
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_LOCK_PAUSE);
    }
}

/// How long a migration waits for a lock that live traffic holds (its wait makes every append
/// and read that comes after it wait too), when the server sets no `lock_timeout` of its own.
const MIGRATION_LOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest pause between two asks for the migration lock.
const MAX_LOCK_PAUSE: Duration = Duration::from_millis(50);

/// Maps a failed migration: an object of the schema under a name the migration creates (a
/// table of an application, a half-restored copy without its version row) is
/// [`StoreError::Schema`], naming it; anything else as usual.
fn in_the_way(e: sqlx::Error, schema: &SchemaName, version: i32) -> StoreError {
    let duplicate = e.as_database_error().and_then(|db| {
        // duplicate table, object, function, schema, alias
        matches!(db.code()?.as_ref(), "42P07" | "42710" | "42723" | "42P06" | "42712")
            .then(|| db.message().to_owned())
    });
    // A migration's own refusal (`RAISE EXCEPTION`: an index left invalid by a concurrent
    // build, say), whose message says what to do.
    let refused = e
        .as_database_error()
        .filter(|db| db.code().as_deref() == Some("P0001"))
        .map(|db| db.message().to_owned());
    match (duplicate, refused) {
        (Some(message), _) => StoreError::Schema(format!(
            "cannot migrate the eventcore schema `{schema}` to version {version}: objects are \
             in the way ({message}); use a schema of its own for the event store"
        )),
        (None, Some(message)) => StoreError::Schema(format!(
            "cannot migrate the eventcore schema `{schema}` to version {version}: {message}"
        )),
        (None, None) => store_error(e, schema),
    }
}

/// Re-bases the log when the database was moved to a cluster with lower transaction ids
/// (see POSITIONS AND THE HORIZON in the migration); does nothing otherwise.
async fn rebase(conn: &mut PgConnection, schema: &SchemaName) -> Result<(), StoreError> {
    let q = schema.quoted();
    let moved: bool = sqlx::query_scalar(&format!("SELECT {q}.log_moved()"))
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| store_error(e, schema))?;
    if moved {
        let base: i64 = sqlx::query_scalar(&format!("SELECT {q}.rebase_log()"))
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| store_error(e, schema))?;
        tracing::warn!(schema = %schema, base, "eventcore log re-based: the database was moved \
            to a cluster with lower transaction ids; stored positions are kept, new ones follow them");
    }
    Ok(())
}

/// Reads the schema's version: `None` when the schema or its version table does not exist.
pub(super) async fn version(
    on: super::running::OnPool<'_>,
    schema: &SchemaName,
) -> Result<Option<i32>, StoreError> {
    let q = schema.quoted();
    let table: Option<String> = sqlx::query_scalar("SELECT pg_catalog.to_regclass($1)::text")
        .bind(format!("{q}.schema_version"))
        .fetch_one(on)
        .await
        .map_err(|e| store_error(e, schema))?;
    if table.is_none() {
        return Ok(None);
    }
    sqlx::query_scalar(&format!("SELECT version FROM {q}.schema_version"))
        .fetch_optional(on)
        .await
        .map_err(|e| store_error(e, schema))
}

pub(super) fn newer_than_known(schema: &SchemaName, found: i32) -> StoreError {
    StoreError::Schema(format!(
        "the eventcore schema `{schema}` is at version {found}, newer than this code knows \
         ({LATEST}); upgrade eventcore instead of running older code against it"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_leave_no_placeholder() {
        let schema = SchemaName::try_new("s1").unwrap();
        for (_, template) in MIGRATIONS {
            let sql = render(template, &schema);
            assert!(!sql.contains('@'), "unfilled placeholder in migration");
            assert!(sql.contains("\"s1\"."));
        }
    }

    #[test]
    fn lock_keys_are_stable_and_distinct() {
        let a = SchemaName::try_new("a").unwrap();
        let b = SchemaName::try_new("b").unwrap();
        assert_eq!(migrate_lock(&a), migrate_lock(&a));
        assert_ne!(migrate_lock(&a), migrate_lock(&b));
        assert_ne!(index_event_types_lock(&a), index_event_types_lock(&b));
        assert_ne!(index_event_types_lock(&a), migrate_lock(&a));
        assert_eq!(stream_lock_class(&a), stream_lock_class(&a));
        assert_ne!(stream_lock_class(&a), stream_lock_class(&b));
        assert_eq!(fnv1a(""), i64::from_ne_bytes(0xcbf2_9ce4_8422_2325u64.to_ne_bytes()));
    }
}
