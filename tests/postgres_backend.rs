//! The PostgreSQL backend's own behaviour: schema, append, read, idempotency, verbatim storage.
//! Concurrency is in `postgres_concurrency.rs`, failures in `postgres_failures.rs`.
#![cfg(feature = "postgres")]

#[path = "support/postgres.rs"]
mod postgres_support;

use eventcore::{
    CausationId, CorrelationId, EventMetadata, GlobalPosition, NewEvent, Payload,
    backend::{
        AppendRequest, Backend, IdempotencyKey, LogFilter, StoreError,
        postgres::{ConfigError, Postgres, PostgresConfig, SchemaName},
    },
};
use postgres_support::{
    connect_unmigrated, database_url, event, fresh_config, fresh_postgres, fresh_postgres_with,
    fresh_schema_name, id, raw_connection, v,
};

#[tokio::test]
async fn migrate_records_the_schema_version_and_can_run_again() {
    let store = connect_unmigrated(fresh_config()).await;
    assert_eq!(store.schema_version().await.unwrap(), None);
    store.migrate().await.unwrap();
    assert_eq!(store.schema_version().await.unwrap(), Some(Postgres::SCHEMA_VERSION));
    store.migrate().await.unwrap();
    assert_eq!(store.schema_version().await.unwrap(), Some(Postgres::SCHEMA_VERSION));
}

#[tokio::test]
async fn using_a_store_before_migrate_is_a_schema_error_saying_what_to_do() {
    let store = connect_unmigrated(fresh_config()).await;
    let err = store.read(&[id("a")]).await.unwrap_err();
    assert!(matches!(&err, StoreError::Schema(m) if m.contains("migrate")), "{err}");
    let err = store
        .append(AppendRequest::new().expect(id("a"), v(0)).write(id("a"), vec![event(1)]))
        .await
        .unwrap_err();
    assert!(matches!(&err, StoreError::Schema(m) if m.contains("migrate")), "{err}");
}

#[tokio::test]
async fn a_schema_newer_than_the_code_is_refused() {
    let store = fresh_postgres().await;
    let sql = format!("UPDATE \"{}\".schema_version SET version = 99", store.schema());
    sqlx::raw_sql(&sql).execute(store.pool()).await.unwrap();
    let err = store.migrate().await.unwrap_err();
    assert!(matches!(&err, StoreError::Schema(m) if m.contains("99")), "{err}");
}

#[test]
fn invalid_schema_names_are_typed_errors() {
    for bad in ["Upper", "with-dash", "x\"; DROP SCHEMA public; --", "", "pg_temp1", "1abc"] {
        let err = PostgresConfig::builder(database_url()).schema(bad).build().unwrap_err();
        assert!(matches!(err, ConfigError::InvalidSchemaName { .. }), "{bad}: {err}");
        assert!(SchemaName::try_new(bad).is_err());
    }
}

/// `information_schema` is PostgreSQL's own, as `pg_catalog` is: a whole-database `pg_dump`
/// leaves it out, so a store there would be missing from every backup.
#[test]
fn the_information_schema_is_refused_as_a_store_schema() {
    let err = SchemaName::try_new("information_schema").unwrap_err();
    assert!(matches!(err, ConfigError::InvalidSchemaName { .. }), "{err}");
}

/// A schema holding objects of another owner under eventcore's names (a table `events` of an
/// application, a half-restored copy without its version row) is a schema error saying what
/// is in the way, as `migrate()` documents, not an untyped database error.
#[tokio::test]
async fn objects_in_the_way_of_migrate_are_a_schema_error() {
    let store = connect_unmigrated(fresh_config()).await;
    let q = format!("\"{}\"", store.schema());
    sqlx::raw_sql(&format!("CREATE SCHEMA {q}; CREATE TABLE {q}.events (id integer)"))
        .execute(store.pool())
        .await
        .unwrap();
    let err = store.migrate().await.unwrap_err();
    assert!(matches!(&err, StoreError::Schema(m) if m.contains("events")), "{err:?}");
    assert_eq!(store.schema_version().await.unwrap(), None);
}

/// A role that may use the store but not change it (the privileges the book lists for
/// applications: no CREATE on the database or the schema) runs `migrate()` at start-up, as the
/// book says every instance may: on an up-to-date schema it has nothing to do, and succeeds.
#[tokio::test]
async fn a_role_that_may_only_use_the_store_can_run_migrate_on_an_up_to_date_schema() {
    let owner = fresh_postgres().await;
    let schema = owner.schema().clone();
    let role = format!("ec_test_role_{}", uuid::Uuid::now_v7().simple());
    let grants = format!(
        "CREATE ROLE {role} LOGIN;
         GRANT USAGE ON SCHEMA {schema} TO {role};
         GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {role};
         GRANT INSERT ON {schema}.events, {schema}.projections, {schema}.parked_events,
             {schema}.snapshots TO {role};
         GRANT UPDATE ON {schema}.projections, {schema}.parked_events, {schema}.snapshots
             TO {role};
         GRANT DELETE ON {schema}.parked_events TO {role};"
    );
    sqlx::raw_sql(&grants).execute(owner.pool()).await.unwrap();
    let url = database_url().replacen("postgres://postgres@", &format!("postgres://{role}@"), 1);
    let config = PostgresConfig::builder(url).schema(schema.as_str()).build().unwrap();
    let app = Postgres::connect(config).await.unwrap();
    let migrated = app.migrate().await;
    let appended =
        app.append(AppendRequest::new().expect(id("a"), v(0)).write(id("a"), vec![event(1)])).await;
    let read = app.read_all(GlobalPosition::START, 10).await.map(|page| page.len());
    app.pool().close().await;
    sqlx::raw_sql(&format!("DROP OWNED BY {role}; DROP ROLE {role}"))
        .execute(owner.pool())
        .await
        .unwrap();
    migrated.unwrap();
    appended.unwrap();
    assert_eq!(read.unwrap(), 1);
}

/// The advisory lock key `migrate()` takes for a schema (FNV-1a of its label, as the store
/// computes it), to stand in for another process's migration.
fn migrate_lock_key(schema: &SchemaName) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in format!("eventcore:migrate:{schema}").bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

/// Concurrent `migrate()` calls take turns, also where the server (or the connection string)
/// sets a `lock_timeout`, as production servers often do: the call that waits for another's
/// migration waits until it commits, instead of failing with `Timeout` after the setting.
#[tokio::test]
async fn a_migrate_waiting_for_another_outlasts_the_lock_timeout() {
    let url = database_url();
    let sep = if url.contains('?') { '&' } else { '?' };
    let config = PostgresConfig::builder(format!("{url}{sep}options=-c%20lock_timeout%3D50"))
        .schema(fresh_schema_name());
    let store = connect_unmigrated(config).await;
    let key = migrate_lock_key(store.schema());
    // Another process's migration, in progress.
    let mut other = raw_connection().await;
    sqlx::raw_sql("BEGIN").execute(&mut other).await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(key).execute(&mut other).await.unwrap();
    let mut waiting = tokio::spawn({
        let store = store.clone();
        async move { store.migrate().await }
    });
    // Ten times the lock_timeout later, it still waits for the other migration.
    let early = tokio::time::timeout(std::time::Duration::from_millis(500), &mut waiting).await;
    assert!(early.is_err(), "migrate() gave up waiting for the other migration: {early:?}");
    sqlx::raw_sql("COMMIT").execute(&mut other).await.unwrap();
    let done = tokio::time::timeout(std::time::Duration::from_secs(30), waiting).await;
    done.expect("migrate() did not finish").unwrap().unwrap();
    assert_eq!(store.schema_version().await.unwrap(), Some(Postgres::SCHEMA_VERSION));
}

/// An upgrade that alters a table waits for that table's locks, and every append and read
/// queued behind it waits too: the server's `lock_timeout` bounds that wait, so the upgrade
/// fails with `Timeout`, changing nothing, and can be run again once the traffic allows.
#[tokio::test]
async fn an_upgrade_behind_live_traffic_keeps_the_lock_timeout() {
    let url = database_url();
    let sep = if url.contains('?') { '&' } else { '?' };
    let config = PostgresConfig::builder(format!("{url}{sep}options=-c%20lock_timeout%3D50"))
        .schema(fresh_schema_name());
    let store = connect_unmigrated(config).await;
    store.migrate().await.unwrap();
    let q = store.schema();
    // A database at version 4: the next migration alters the snapshots table.
    let mut traffic = raw_connection().await;
    sqlx::raw_sql(&format!("UPDATE \"{q}\".schema_version SET version = 4"))
        .execute(&mut traffic)
        .await
        .unwrap();
    // Live traffic: a transaction that has read the table.
    sqlx::raw_sql("BEGIN").execute(&mut traffic).await.unwrap();
    sqlx::raw_sql(&format!("SELECT count(*) FROM \"{q}\".snapshots"))
        .execute(&mut traffic)
        .await
        .unwrap();
    let upgrade = tokio::time::timeout(std::time::Duration::from_secs(10), store.migrate()).await;
    let upgrade = upgrade.expect("the upgrade waited behind live traffic past the lock_timeout");
    assert!(matches!(upgrade, Err(StoreError::Timeout)), "{upgrade:?}");
    sqlx::raw_sql("ROLLBACK").execute(&mut traffic).await.unwrap();
    assert_eq!(store.schema_version().await.unwrap(), Some(4), "the failed upgrade changed it");
}

/// An upgrade to version 7 over a category index left invalid (a `CREATE INDEX CONCURRENTLY`
/// built ahead of it that did not finish) is refused, saying to drop it, rather than taking
/// the index for built, with `StoreError::Schema` (what is in the way of a migration); once it
/// is dropped, the upgrade builds it.
#[tokio::test]
async fn an_upgrade_over_an_invalid_category_index_is_refused() {
    let store = fresh_postgres().await;
    let q = store.schema().to_string();
    let index = format!("\"{q}\".events_category_position");
    let valid = async |conn: &mut sqlx::PgConnection| {
        index_valid(conn, &store, "events_category_position").await
    };
    let mut conn = raw_connection().await;
    sqlx::raw_sql(&format!(
        "UPDATE \"{q}\".schema_version SET version = 6; \
         UPDATE pg_index SET indisvalid = false WHERE indexrelid = to_regclass('{index}')"
    ))
    .execute(&mut conn)
    .await
    .unwrap();
    assert_eq!(valid(&mut conn).await, Some(false));
    let refused = store.migrate().await.unwrap_err();
    assert!(
        matches!(&refused, StoreError::Schema(m) if m.contains("events_category_position is invalid")),
        "{refused:?}"
    );
    assert_eq!(store.schema_version().await.unwrap(), Some(6), "the refused upgrade changed it");
    sqlx::raw_sql(&format!("DROP INDEX {index}")).execute(&mut conn).await.unwrap();
    store.migrate().await.unwrap();
    assert_eq!(store.schema_version().await.unwrap(), Some(Postgres::SCHEMA_VERSION));
    assert_eq!(valid(&mut conn).await, Some(true));
}

/// An upgrade that must lock the log (version 7 indexes it) behind a transaction that holds
/// it (one that appended and has not ended) waits, and every append and read that comes
/// after it would wait behind it. On a server that sets no `lock_timeout`, the migration
/// gives up after 5 s with a transient timeout, changing nothing, rather than stall the log
/// for as long as that transaction lasts; appends go on meanwhile, and it can be run again.
#[tokio::test]
async fn an_upgrade_behind_a_long_transaction_gives_up_rather_than_stall_the_log() {
    let store = fresh_postgres().await;
    let q = store.schema().to_string();
    let mut conn = raw_connection().await;
    let timeout: String =
        sqlx::query_scalar("SHOW lock_timeout").fetch_one(&mut conn).await.unwrap();
    assert_eq!(timeout, "0", "this test needs a server without a lock_timeout of its own");
    sqlx::raw_sql(&format!(
        "UPDATE \"{q}\".schema_version SET version = 6; \
         DROP INDEX \"{q}\".events_category_position"
    ))
    .execute(&mut conn)
    .await
    .unwrap();
    let mut long = raw_connection().await;
    sqlx::raw_sql(&format!("BEGIN; LOCK TABLE \"{q}\".events IN ROW EXCLUSIVE MODE"))
        .execute(&mut long)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let gave_up = tokio::time::timeout(std::time::Duration::from_secs(60), store.migrate())
        .await
        .expect("the migration waited on behind the transaction");
    assert!(matches!(gave_up, Err(StoreError::Timeout)), "{gave_up:?}");
    assert!(started.elapsed() >= std::time::Duration::from_secs(4), "{:?}", started.elapsed());
    assert_eq!(store.schema_version().await.unwrap(), Some(6), "the failed upgrade changed it");
    // The log is not left waiting behind it.
    let s = id("after");
    store
        .append(AppendRequest::new().expect(s.clone(), v(0)).write(s, vec![event(1)]))
        .await
        .unwrap();
    sqlx::raw_sql("ROLLBACK").execute(&mut long).await.unwrap();
    store.migrate().await.unwrap();
    assert_eq!(store.schema_version().await.unwrap(), Some(Postgres::SCHEMA_VERSION));
}

#[tokio::test]
async fn an_append_to_several_streams_lands_whole() {
    let store = fresh_postgres().await;
    let (a, b) = (id("a"), id("b"));
    let done = store
        .append(
            AppendRequest::new()
                .expect(a.clone(), v(0))
                .expect(b.clone(), v(0))
                .write(a.clone(), vec![event(1), event(2)])
                .write(b.clone(), vec![event(3)]),
        )
        .await
        .unwrap();
    assert_eq!(done.version_of(&a), Some(v(2)));
    assert_eq!(done.version_of(&b), Some(v(1)));
    assert!(!done.replayed);
    let (first, last) = done.positions.unwrap();
    assert_eq!(last.get() - first.get(), 2);

    let read = store.read(&[b.clone(), a.clone()]).await.unwrap();
    assert_eq!((read[0].stream_id.clone(), read[0].version), (b.clone(), v(1)));
    assert_eq!((read[1].stream_id.clone(), read[1].version), (a.clone(), v(2)));
    assert_eq!(read[1].events.iter().map(|e| e.version).collect::<Vec<_>>(), [v(1), v(2)]);

    // b is not at 5: nothing of this request is stored, a included.
    let err = store
        .append(
            AppendRequest::new()
                .expect(a.clone(), v(2))
                .expect(b.clone(), v(5))
                .write(a.clone(), vec![event(4)])
                .write(b.clone(), vec![event(5)]),
        )
        .await
        .unwrap_err();
    match err {
        StoreError::Conflict(c) => assert_eq!((c.stream, c.expected, c.actual), (b, v(5), v(1))),
        other => panic!("expected a conflict, got {other}"),
    }
    assert_eq!(store.read_all(GlobalPosition::START, 100).await.unwrap().len(), 3);
    assert_eq!(store.read(&[a]).await.unwrap()[0].version, v(2));
}

#[tokio::test]
async fn a_stream_that_was_only_read_is_checked_too() {
    let store = fresh_postgres().await;
    let (read_only, written) = (id("limits"), id("orders"));
    store
        .append(
            AppendRequest::new()
                .expect(read_only.clone(), v(0))
                .write(read_only.clone(), vec![event(1)]),
        )
        .await
        .unwrap();
    let err = store
        .append(
            AppendRequest::new()
                .expect(read_only.clone(), v(0))
                .expect(written.clone(), v(0))
                .write(written.clone(), vec![event(2)]),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict(c) if c.stream == read_only && c.actual == v(1)),
        "{err}"
    );
    assert_eq!(store.read(&[written]).await.unwrap()[0].version, v(0));
}

#[tokio::test]
async fn the_first_mismatch_in_request_order_is_reported() {
    let store = fresh_postgres().await;
    let err = store
        .append(AppendRequest::new().expect(id("zz"), v(3)).expect(id("aa"), v(4)))
        .await
        .unwrap_err();
    assert!(matches!(&err, StoreError::Conflict(c) if c.stream == id("zz")), "{err}");
}

#[tokio::test]
async fn reads_answer_in_request_order_with_repeats_and_empty_streams() {
    let store = fresh_postgres().await;
    let a = id("a");
    store
        .append(AppendRequest::new().expect(a.clone(), v(0)).write(a.clone(), vec![event(1)]))
        .await
        .unwrap();
    let read = store.read(&[id("missing"), a.clone(), a.clone()]).await.unwrap();
    assert_eq!(read.len(), 3);
    assert_eq!((read[0].version, read[0].events.len()), (v(0), 0));
    assert_eq!((read[1].version, read[1].events.len()), (v(1), 1));
    assert_eq!(read[1], read[2]);
    assert!(store.read(&[]).await.unwrap().is_empty());
}

#[tokio::test]
async fn stream_ids_full_of_sql_are_stored_verbatim() {
    let store = fresh_postgres().await;
    let nasty = [
        "it's",
        "a;b",
        "back\\slash\\\\",
        "'); DROP TABLE events; --",
        "\"quoted\" $1 %s ?",
        "emoji 🦀🔥 ünïcödé",
        "::text[]",
    ];
    for (n, name) in nasty.iter().enumerate() {
        let s = id(name);
        let n = u64::try_from(n).unwrap();
        store
            .append(AppendRequest::new().expect(s.clone(), v(0)).write(s.clone(), vec![event(n)]))
            .await
            .unwrap();
        let read = store.read(std::slice::from_ref(&s)).await.unwrap();
        assert_eq!(read[0].stream_id.as_str(), *name);
        assert_eq!(read[0].events[0].stream_id.as_str(), *name);
    }
    let all = store.read_all(GlobalPosition::START, 100).await.unwrap();
    let names: Vec<&str> = all.iter().map(|e| e.stream_id.as_str()).collect();
    assert_eq!(names, nasty);
    let key = IdempotencyKey::try_new("k'; DROP TABLE idempotency; --").unwrap();
    let s = id("keyed");
    let req = AppendRequest::new().expect(s.clone(), v(0)).write(s, vec![event(9)]).idempotent(key);
    store.append(req.clone()).await.unwrap();
    assert!(store.append(req).await.unwrap().replayed);
}

#[tokio::test]
async fn events_come_back_exactly_as_written() {
    let store = fresh_postgres().await;
    let s = id("exact");
    // Key order and spacing are kept: the payload column is `json`, not `jsonb`.
    let payload = Payload::from_json_str(r#"{"z": 1,"a":[1.50, "x"],  "n":null}"#).unwrap();
    let meta = EventMetadata::new(CorrelationId::new())
        .caused_by(CausationId::new())
        .with_custom("user", "alice")
        .with_custom("nested", serde_json::json!({"k": [1, 2]}));
    let new = NewEvent::new("Exact", 7, payload.clone(), meta.clone());
    let done = store
        .append(AppendRequest::new().expect(s.clone(), v(0)).write(s.clone(), vec![new]))
        .await
        .unwrap();
    let read = store.read(std::slice::from_ref(&s)).await.unwrap();
    let got = &read[0].events[0];
    assert_eq!(got.payload, payload);
    assert_eq!(got.metadata, meta);
    assert_eq!(got.event_type.as_ref(), "Exact");
    assert_eq!(got.schema_version, 7);
    assert_eq!(got.position, done.positions.unwrap().0);
    let all = store.read_all(GlobalPosition::START, 10).await.unwrap();
    assert_eq!(&all[0], got);
}

#[tokio::test]
async fn a_repeated_idempotency_key_replays_the_first_result() {
    let store = fresh_postgres().await;
    let s = id("s");
    let key = IdempotencyKey::try_new("transfer-1").unwrap();
    let first = store
        .append(
            AppendRequest::new()
                .expect(s.clone(), v(0))
                .write(s.clone(), vec![event(1)])
                .idempotent(key.clone()),
        )
        .await
        .unwrap();
    assert!(!first.replayed);
    // Same key, stale expectation and other events: nothing is stored, the first result returns.
    let again = store
        .append(
            AppendRequest::new()
                .expect(s.clone(), v(0))
                .write(s.clone(), vec![event(2)])
                .idempotent(key),
        )
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!((again.streams.clone(), again.positions), (first.streams, first.positions));
    assert_eq!(store.read(&[s]).await.unwrap()[0].version, v(1));
}

#[tokio::test]
async fn appends_without_events_still_check_and_report_versions() {
    let store = fresh_postgres().await;
    let s = id("s");
    let done = store
        .append(AppendRequest::new().expect(s.clone(), v(0)).write(s.clone(), vec![]))
        .await
        .unwrap();
    // An empty run writes nothing: `s` was only read, so it is not in the result...
    assert_eq!((done.version_of(&s), done.positions), (None, None));
    // ...but its expected version is checked all the same.
    let stale = store.append(AppendRequest::new().expect(s.clone(), v(1)).write(s.clone(), vec![]));
    assert!(matches!(stale.await, Err(StoreError::Conflict(_))));
    let nothing = store.append(AppendRequest::new()).await.unwrap();
    assert!(nothing.streams.is_empty());
    assert!(store.read_all(GlobalPosition::START, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_stream_written_twice_in_one_request_gets_consecutive_versions() {
    let store = fresh_postgres().await;
    let (a, b) = (id("a"), id("b"));
    let done = store
        .append(
            AppendRequest::new()
                .expect(a.clone(), v(0))
                .expect(b.clone(), v(0))
                .write(a.clone(), vec![event(1)])
                .write(b.clone(), vec![event(2)])
                .write(a.clone(), vec![event(3)]),
        )
        .await
        .unwrap();
    assert_eq!(done.streams, vec![(a.clone(), v(2)), (b.clone(), v(1))]);
    let read = store.read(&[a]).await.unwrap();
    let payloads: Vec<&str> = read[0].events.iter().map(|e| e.payload.as_str()).collect();
    assert_eq!(payloads, ["1", "3"]);
}

#[tokio::test]
async fn read_all_pages_in_position_order() {
    let store = fresh_postgres().await;
    for n in 0..5 {
        let s = id(&format!("s{}", n % 2));
        let version = store.read(std::slice::from_ref(&s)).await.unwrap()[0].version;
        store
            .append(AppendRequest::new().expect(s.clone(), version).write(s, vec![event(n)]))
            .await
            .unwrap();
    }
    let first = store.read_all(GlobalPosition::START, 2).await.unwrap();
    let rest = store.read_all(first[1].position, 10).await.unwrap();
    let payloads: Vec<&str> = first.iter().chain(&rest).map(|e| e.payload.as_str()).collect();
    assert_eq!(payloads, ["0", "1", "2", "3", "4"]);
    assert!(store.read_all(GlobalPosition::START, 0).await.unwrap().is_empty());
}

#[tokio::test]
async fn stored_events_cannot_be_changed() {
    let store = fresh_postgres().await;
    let s = id("s");
    store
        .append(AppendRequest::new().expect(s.clone(), v(0)).write(s, vec![event(1)]))
        .await
        .unwrap();
    for sql in
        ["UPDATE {s}.events SET event_type = 'x'", "DELETE FROM {s}.events", "TRUNCATE {s}.events"]
    {
        let sql = sql.replace("{s}", &format!("\"{}\"", store.schema()));
        let err = sqlx::raw_sql(&sql).execute(store.pool()).await.unwrap_err();
        assert!(err.to_string().contains("immutable"), "{sql}: {err}");
    }
}

/// The price of gap safety: an event committed after an append that is still in flight with
/// a lower position is held back from `read_all` until that append ends; a patient reader
/// waits for it, and then gets both, in position order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_all_holds_back_events_behind_an_append_still_in_flight() {
    let store = fresh_postgres().await;
    let mut older = postgres_support::raw_connection().await;
    postgres_support::begin_append(&mut older, &store, "in-flight").await;

    let s = id("behind");
    store
        .append(AppendRequest::new().expect(s.clone(), v(0)).write(s, vec![event(1)]))
        .await
        .unwrap();
    let impatient = store.clone().with_read_all_wait(std::time::Duration::ZERO);
    assert!(impatient.read_all(GlobalPosition::START, 10).await.unwrap().is_empty());

    let patient = store.clone().with_read_all_wait(std::time::Duration::from_secs(60));
    let reader = tokio::spawn(async move {
        let started = std::time::Instant::now();
        (patient.read_all(GlobalPosition::START, 10).await.unwrap(), started.elapsed())
    });
    sqlx::query("COMMIT").execute(&mut older).await.unwrap();
    let (page, waited) = reader.await.unwrap();
    assert_eq!(page.len(), 2);
    assert_eq!(page[0].stream_id, id("in-flight"));
    assert!(page[0].position < page[1].position);
    assert!(waited < std::time::Duration::from_secs(60), "the reader waited for its deadline");
}

/// Only appends hold readers back: a transaction that holds a transaction id but never appends
/// (here in another database of the cluster, and in this one) does not delay `read_all`,
/// although it is older than every event written meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_that_do_not_append_hold_no_reader_back() {
    use sqlx::Connection;
    let store = fresh_postgres().await.with_read_all_wait(std::time::Duration::ZERO);
    let other_db = postgres_support::database_url().replace("/test", "/postgres");
    let mut elsewhere = sqlx::PgConnection::connect(&other_db).await.unwrap();
    let mut here = postgres_support::raw_connection().await;
    let mut open = Vec::new();
    for conn in [&mut elsewhere, &mut here] {
        sqlx::query("BEGIN").execute(&mut *conn).await.unwrap();
        let xid: String = sqlx::query_scalar("SELECT pg_current_xact_id()::text")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        open.push(xid);
    }
    let s = id("flowing");
    for n in 0..5 {
        store
            .append(AppendRequest::new().expect(s.clone(), v(n)).write(s.clone(), vec![event(n)]))
            .await
            .unwrap();
        let page = store.read_all(GlobalPosition::START, 10).await.unwrap();
        assert_eq!(page.len() as u64, n + 1, "held back by an open transaction ({open:?})");
    }
    for conn in [&mut elsewhere, &mut here] {
        sqlx::query("ROLLBACK").execute(&mut *conn).await.unwrap();
    }
}

/// An append over thousands of streams does not exhaust PostgreSQL's lock table (it takes one
/// exclusive lock instead of one per stream) and still checks every stream.
#[tokio::test]
async fn an_append_over_thousands_of_streams_checks_them_all() {
    let store = fresh_postgres().await;
    let moved = id("read-7777");
    store
        .append(
            AppendRequest::new().expect(moved.clone(), v(0)).write(moved.clone(), vec![event(0)]),
        )
        .await
        .unwrap();
    let target = id("target");
    let mut request = AppendRequest::new();
    for n in 0..20_000 {
        let s = id(&format!("read-{n}"));
        let version = if s == moved { v(1) } else { v(0) };
        request = request.expect(s, version);
    }
    let ok = request.clone().expect(target.clone(), v(0)).write(target.clone(), vec![event(1)]);
    assert_eq!(store.append(ok).await.unwrap().version_of(&target), Some(v(1)));

    let stale = request.expect(moved.clone(), v(1)).expect(target.clone(), v(0));
    let err = store.append(stale.write(target.clone(), vec![event(2)])).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict(c) if c.stream == target && c.actual == v(1)),
        "{err}"
    );
}

/// A log whose base row went missing (a partial restore) is treated as moved: appends are
/// refused with `LogMoved` until `migrate()` writes the base again, and positions go on
/// increasing after it.
#[tokio::test]
async fn a_missing_log_base_is_refused_until_migrate() {
    let store = fresh_postgres().await;
    let s = id("based");
    let first = store
        .append(AppendRequest::new().expect(s.clone(), v(0)).write(s.clone(), vec![event(0)]))
        .await
        .unwrap();
    sqlx::query(&format!("DELETE FROM \"{}\".log_base", store.schema()))
        .execute(store.pool())
        .await
        .unwrap();
    let err = store
        .append(AppendRequest::new().expect(s.clone(), v(1)).write(s.clone(), vec![event(1)]))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::LogMoved(_)), "{err:?}");
    let err = store.read_all(GlobalPosition::START, 10).await.unwrap_err();
    assert!(matches!(err, StoreError::LogMoved(_)), "{err:?}");
    store.migrate().await.unwrap();
    let second = store
        .append(AppendRequest::new().expect(s.clone(), v(1)).write(s, vec![event(1)]))
        .await
        .unwrap();
    assert!(second.positions.unwrap().0 > first.positions.unwrap().1);
}

/// `migrate()` documents "bound it with a timeout of your own": a call given up while it waits
/// for another migration must not leave the store's only connection stuck behind that wait.
#[tokio::test]
async fn a_migrate_given_up_while_waiting_leaves_the_pool_usable() {
    let store = connect_unmigrated(fresh_config().max_connections(1)).await;
    let key = migrate_lock_key(store.schema());
    let mut other = raw_connection().await;
    sqlx::raw_sql("BEGIN").execute(&mut other).await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(key).execute(&mut other).await.unwrap();
    let given_up =
        tokio::time::timeout(std::time::Duration::from_millis(300), store.migrate()).await;
    assert!(given_up.is_err(), "{given_up:?}");
    let used = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(store.pool()),
    )
    .await;
    sqlx::raw_sql("COMMIT").execute(&mut other).await.unwrap();
    assert!(matches!(used, Ok(Ok(1))), "the pool after a given-up migrate(): {used:?}");
    store.migrate().await.unwrap();
}

/// A page of the log filtered by one category (what a process manager reads at every takeover
/// to find its own records) reaches the category's next event however many events of other
/// categories lie before it: one range scan of the category index (migration 7), not a window
/// of the whole log, which would take a reader of a small category through the entire log.
#[tokio::test]
async fn a_page_of_one_category_reaches_its_next_event_past_any_number_of_others() {
    let store = fresh_postgres().await;
    let (common, rare) = (id("common-1"), id("rare-1"));
    store
        .append(
            AppendRequest::new()
                .expect(common.clone(), v(0))
                .expect(rare.clone(), v(0))
                .write(common.clone(), (0..40).map(event).collect())
                .write(rare.clone(), vec![event(40)]),
        )
        .await
        .unwrap();
    let one = LogFilter::all().category("rare");
    let page = store.read_log(GlobalPosition::START, &one, 1).await.unwrap();
    let found: Vec<_> =
        page.entries.iter().map(|e| e.as_ref().unwrap().stream_id.clone()).collect();
    assert_eq!(found, [rare], "a page of one category stopped short of its event");
    let after = store.read_log(page.checked_to, &one, 1).await.unwrap();
    assert!(after.entries.is_empty() && after.caught_up);
    // A few categories alike: a range scan of each.
    let few = LogFilter::all().category("none").category("rare");
    let page = store.read_log(GlobalPosition::START, &few, 1).await.unwrap();
    let found: Vec<_> =
        page.entries.iter().map(|e| e.as_ref().unwrap().stream_id.clone()).collect();
    assert_eq!(found, [id("rare-1")], "a page of a few categories stopped short of its event");
    // With event types too: a window of the categories' events alone.
    for typed in [one.clone().event_type("N"), few.clone().event_type("M").event_type("N")] {
        let page = store.read_log(GlobalPosition::START, &typed, 1).await.unwrap();
        let found: Vec<_> =
            page.entries.iter().map(|e| e.as_ref().unwrap().stream_id.clone()).collect();
        assert_eq!(found, [id("rare-1")], "{typed:?} stopped short of its event");
        let after = store.read_log(page.checked_to, &typed, 1).await.unwrap();
        assert!(after.entries.is_empty() && after.caught_up, "{typed:?}: {after:?}");
    }

    let mut conn = raw_connection().await;
    let index: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
        .bind(format!("\"{}\".events_category_position", store.schema()))
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(index.is_some(), "migration 7 did not create the category index");
}

/// Pages of a filter of a few categories (read through the category index, one range scan per
/// category), with or without event types, hold exactly the events of those categories and
/// types (or event types alone, with and without their index), in position order, each once,
/// against the memory store's reading of the same log: at every page size, for categories that differ only by a character `LIKE` would take as a
/// wildcard, that are prefixes of one another, empty, ending in a space, not ASCII, named
/// twice, or holding nothing, and for event types rare, common, or absent.
#[tokio::test]
async fn pages_of_a_few_categories_hold_exactly_their_events() {
    let store = fresh_postgres().await;
    let memory = eventcore::Memory::new();
    let streams = [
        "rare-1", "rare-2", "rarer-1", "ra_e-1", "ra%e-1", "rare", "-7", "gift -1", "ünï-1",
        "common-1", "common-2", "rare-1-2",
    ];
    let mut versions = std::collections::HashMap::new();
    for n in 0..300u64 {
        // Mostly `common`, the others now and then, in an order that mixes them.
        let name = if n % 5 == 0 { streams[(n as usize * 7) % streams.len()] } else { "common-1" };
        let version = versions.entry(name).or_insert(0u64);
        // Mostly `N`, `M` now and then, `R` rarely.
        let event_type = if n % 29 == 0 {
            "R"
        } else if n % 4 == 0 {
            "M"
        } else {
            "N"
        };
        append_typed(&store, name, *version, event_type, n).await;
        append_typed(&memory, name, *version, event_type, n).await;
        *version += 1;
    }
    let filters: [&[&str]; 5] = [
        &["rare", "ra_e"],
        &["rare", "rarer", "ra%e"],
        &["", "gift "],
        &["ünï", "rare", "nothing"],
        &["rare", "rare"],
    ];
    let types: [&[&str]; 4] = [&[], &["N"], &["R", "absent"], &["M", "R"]];
    for categories in filters {
        let filter =
            categories.iter().fold(LogFilter::all(), |filter, category| filter.category(*category));
        for event_types in types {
            let filter = event_types.iter().fold(filter.clone(), |f, t| f.event_type(*t));
            let expected = all_pages(&memory, &filter, 1000).await;
            if event_types.is_empty() {
                assert!(!expected.is_empty(), "{categories:?} holds no event");
            }
            for page in [1, 2, 3, 7, 50, 1000] {
                let read = all_pages(&store, &filter, page).await;
                assert_eq!(read, expected, "{categories:?} {event_types:?}, pages of {page}");
            }
        }
    }
    // Event types alone, through windows of the log, then through their index.
    let types: [&[&str]; 4] = [&["N"], &["R", "absent"], &["M", "R"], &["R", "M", "N", "R"]];
    for indexed in [false, true] {
        if indexed {
            store.index_event_types().await.unwrap();
        }
        for event_types in types {
            let filter = event_types.iter().fold(LogFilter::all(), |f, t| f.event_type(*t));
            let expected = all_pages(&memory, &filter, 1000).await;
            assert!(!expected.is_empty(), "{event_types:?} holds no event");
            for page in [1, 2, 3, 7, 50, 1000] {
                let read = all_pages(&store, &filter, page).await;
                assert_eq!(read, expected, "{event_types:?} (indexed: {indexed}), pages of {page}");
            }
        }
    }
}

/// Appends event `n`, of type `event_type`, to `stream` at `version`.
async fn append_typed<B: Backend>(store: &B, stream: &str, version: u64, event_type: &str, n: u64) {
    let s = id(stream);
    let mut e = event(n);
    e.event_type = event_type.into();
    store
        .append(AppendRequest::new().expect(s.clone(), v(version)).write(s, vec![e]))
        .await
        .unwrap();
}

/// Every page of `filter` from the start, as (stream, version) in order (the positions of two
/// stores differ), checking that the positions rise.
async fn all_pages<B: Backend>(store: &B, filter: &LogFilter, page: usize) -> Vec<(String, u64)> {
    let (mut after, mut out, mut last) = (GlobalPosition::START, Vec::new(), GlobalPosition::START);
    loop {
        let read = store.read_log(after, filter, page).await.unwrap();
        for entry in &read.entries {
            let e = entry.as_ref().unwrap();
            assert!(e.position > last, "out of order, or twice: {e:?}");
            last = e.position;
            out.push((e.stream_id.to_string(), e.version.get()));
        }
        assert!(read.checked_to >= after, "a page went back");
        after = read.checked_to;
        if read.caught_up {
            return out;
        }
    }
}

/// The page of one category is planned on the category index, not on the primary key with a
/// filter (which reads the whole log for a small category): on a log of 20,000 events, one of
/// them in the category read, the index is scanned; and so is a page of a few categories,
/// once per category. (One connection: the statistics it
/// flushes before answering `pg_stat_force_next_flush()` are read after.)
#[tokio::test]
async fn a_page_of_one_category_is_read_through_the_category_index() {
    let store = fresh_postgres_with(fresh_config().max_connections(1)).await;
    let q = format!("\"{}\"", store.schema());
    sqlx::raw_sql(&format!(
        "INSERT INTO {q}.events (position, stream_id, version, event_id, event_type, \
           schema_version, payload, correlation_id, recorded_at) \
         SELECT g, CASE WHEN g = 19000 THEN 'rare-1' ELSE 'common-' || (g % 500) END, \
           CASE WHEN g = 19000 THEN 1 ELSE g / 500 + 1 END, gen_random_uuid(), 'N', 1, '1', \
           gen_random_uuid(), now() \
         FROM generate_series(1, 20000) AS g; \
         ANALYZE {q}.events"
    ))
    .execute(store.pool())
    .await
    .unwrap();
    let schema = store.schema().to_string();
    let scans = || async {
        sqlx::query("SELECT pg_stat_force_next_flush()").execute(store.pool()).await.unwrap();
        let n: i64 = sqlx::query_scalar(
            "SELECT idx_scan FROM pg_stat_user_indexes \
             WHERE schemaname = $1 AND indexrelname = 'events_category_position'",
        )
        .bind(&schema)
        .fetch_one(store.pool())
        .await
        .unwrap();
        n
    };
    let before = scans().await;
    let page = store
        .read_log(GlobalPosition::START, &LogFilter::all().category("rare"), 10)
        .await
        .unwrap();
    assert_eq!(page.entries.len(), 1);
    let after_one = scans().await;
    assert!(after_one > before, "the category index was not used");
    // A few categories: one scan of the index per category.
    let few = LogFilter::all().category("rare").category("none").category("other");
    let page = store.read_log(GlobalPosition::START, &few, 10).await.unwrap();
    assert_eq!(page.entries.len(), 1);
    let after_few = scans().await;
    assert!(after_few >= after_one + 3, "the category index was not used for each category");
    // With event types: a window of the categories' events, one scan of the index each.
    let typed = few.event_type("N");
    let page = store.read_log(GlobalPosition::START, &typed, 10).await.unwrap();
    assert_eq!(page.entries.len(), 1);
    assert!(page.caught_up, "{page:?}");
    assert!(scans().await >= after_few + 3, "the category index was not used with event types");
}

/// Whether the index `name` of `store`'s schema is valid; `None` when there is none.
async fn index_valid(conn: &mut sqlx::PgConnection, store: &Postgres, name: &str) -> Option<bool> {
    sqlx::query_scalar("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass($1)")
        .bind(format!("\"{}\".{name}", store.schema()))
        .fetch_optional(conn)
        .await
        .unwrap()
}

/// A connection in a REPEATABLE READ transaction that has read `store`'s events: a snapshot
/// older than anything that starts after, which a concurrent index build waits for. `COMMIT`
/// on it lets the build go on.
async fn old_snapshot(store: &Postgres) -> sqlx::PgConnection {
    let mut long = raw_connection().await;
    sqlx::raw_sql(&format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM \"{}\".events",
        store.schema()
    ))
    .execute(&mut long)
    .await
    .unwrap();
    long
}

/// How often the index `name` of `store`'s schema has been scanned, with the statistics of
/// the connection that runs this flushed first (give `store` a pool of one connection).
async fn index_scans(store: &Postgres, name: &str) -> i64 {
    sqlx::query("SELECT pg_stat_force_next_flush()").execute(store.pool()).await.unwrap();
    sqlx::query_scalar(
        "SELECT coalesce(sum(idx_scan), 0)::int8 FROM pg_stat_user_indexes \
         WHERE schemaname = $1 AND indexrelname = $2",
    )
    .bind(store.schema().as_str())
    .bind(name)
    .fetch_one(store.pool())
    .await
    .unwrap()
}

/// 20,000 events of type `N` in 500 streams of category `common`, and at 19,000 one of type
/// `R` in `rare-1`, inserted directly (far faster than appends), with UUIDv7 event ids.
async fn a_log_with_one_rare_event_type(store: &Postgres) {
    let q = format!("\"{}\"", store.schema());
    sqlx::raw_sql(&format!(
        "INSERT INTO {q}.events (position, stream_id, version, event_id, event_type, \
           schema_version, payload, correlation_id, recorded_at) \
         SELECT g, CASE WHEN g = 19000 THEN 'rare-1' ELSE 'common-' || (g % 500) END, \
           CASE WHEN g = 19000 THEN 1 ELSE g / 500 + 1 END, \
           (lpad(to_hex(g), 12, '0') || '70008000' || lpad(to_hex(g), 12, '0'))::uuid, \
           CASE WHEN g = 19000 THEN 'R' ELSE 'N' END, 1, '1', gen_random_uuid(), now() \
         FROM generate_series(1, 20000) AS g; \
         ANALYZE {q}.events"
    ))
    .execute(store.pool())
    .await
    .unwrap();
}

/// Once `Postgres::index_event_types` has built the index by event type, a page of a few event
/// types and no category is read through it (one range scan per event type) and reaches its
/// next event past any number of others, a page of one at a time; before, the same filter
/// finds the same event through windows of the log. Building it again does nothing, and a
/// store of another process finds the index on its first such read.
#[tokio::test]
async fn a_page_of_event_types_is_read_through_their_index_once_it_is_built() {
    // One connection: the statistics flushed are those of the connection that read.
    let store = fresh_postgres_with(fresh_config().max_connections(1)).await;
    a_log_with_one_rare_event_type(&store).await;
    let rare = LogFilter::all().event_type("R");
    let rare_1 = vec![("rare-1".to_owned(), 1)];
    // Without the index: windows of the log, 16 events per event asked for.
    assert_eq!(all_pages(&store, &rare, 10).await, rare_1);
    let first = store.read_log(GlobalPosition::START, &rare, 1).await.unwrap();
    assert!(first.entries.is_empty() && !first.caught_up, "{first:?}");

    store.index_event_types().await.unwrap();
    let before = index_scans(&store, "events_event_type_position").await;
    let page = store.read_log(GlobalPosition::START, &rare, 1).await.unwrap();
    let found: Vec<_> =
        page.entries.iter().map(|e| e.as_ref().unwrap().stream_id.to_string()).collect();
    assert_eq!(found, ["rare-1"], "a page of one event type stopped short of its event");
    let next = store.read_log(page.checked_to, &rare, 1).await.unwrap();
    assert!(next.entries.is_empty() && next.caught_up, "{next:?}");
    let after_one = index_scans(&store, "events_event_type_position").await;
    assert!(after_one > before, "the index by event type was not used");
    // A few event types: one scan each, the same events.
    let few = rare.clone().event_type("absent").event_type("other");
    let page = store.read_log(GlobalPosition::START, &few, 10).await.unwrap();
    assert_eq!(page.entries.len(), 1);
    assert!(page.caught_up, "{page:?}");
    let after_few = index_scans(&store, "events_event_type_position").await;
    assert!(after_few >= after_one + 3, "the index was not used for each event type");
    // Built already: nothing to do.
    store.index_event_types().await.unwrap();
    // Another process's store, new to the schema, looks for the index and reads through it.
    let config =
        PostgresConfig::builder(database_url()).schema(store.schema().as_str()).max_connections(1);
    let other = Postgres::connect(config.build().unwrap()).await.unwrap();
    let page = other.read_log(GlobalPosition::START, &rare, 1).await.unwrap();
    assert_eq!(page.entries.len(), 1, "{page:?}");
    assert!(index_scans(&other, "events_event_type_position").await > after_few);
}

/// An index by event type left invalid (a `CREATE INDEX CONCURRENTLY` that did not finish) is
/// not read through, and `index_event_types` builds it again.
#[tokio::test]
async fn an_invalid_index_by_event_type_is_built_again() {
    let store = fresh_postgres().await;
    a_log_with_one_rare_event_type(&store).await;
    let q = format!("\"{}\"", store.schema());
    let mut conn = raw_connection().await;
    sqlx::raw_sql(&format!(
        "CREATE INDEX events_event_type_position ON {q}.events (event_type, position); \
         UPDATE pg_index SET indisvalid = false \
         WHERE indexrelid = '{q}.events_event_type_position'::regclass"
    ))
    .execute(&mut conn)
    .await
    .unwrap();
    let rare = LogFilter::all().event_type("R");
    // Read through windows of the log, as without the index.
    let first = store.read_log(GlobalPosition::START, &rare, 1).await.unwrap();
    assert!(first.entries.is_empty() && !first.caught_up, "{first:?}");
    store.index_event_types().await.unwrap();
    let valid = index_valid(&mut conn, &store, "events_event_type_position").await;
    assert_eq!(valid, Some(true), "the invalid index was left as it was");
    let page = store.read_log(GlobalPosition::START, &rare, 1).await.unwrap();
    assert_eq!(page.entries.len(), 1, "{page:?}");
}

/// Building the index by event type waits for older transactions to end, as a concurrent build
/// must (the wait holds up no append), however short the store's `statement_timeout` and the
/// server's `lock_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_by_event_type_is_built_behind_a_long_transaction() {
    let url = format!("{}?options=-c%20lock_timeout%3D50ms", database_url());
    let store = fresh_postgres_with(
        PostgresConfig::builder(url)
            .schema(fresh_schema_name())
            .max_connections(4)
            .statement_timeout(std::time::Duration::from_millis(200)),
    )
    .await;
    let q = format!("\"{}\"", store.schema());
    // A reader's snapshot, older than the build: the build must wait for it.
    let mut long = old_snapshot(&store).await;
    let build = {
        let store = store.clone();
        tokio::spawn(async move { store.index_event_types().await })
    };
    let mut watcher = raw_connection().await;
    let waiting = async {
        loop {
            let waits: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM pg_stat_activity \
                 WHERE query LIKE 'CREATE INDEX CONCURRENTLY%' AND query LIKE $1 \
                   AND wait_event_type = 'Lock' \
                   AND clock_timestamp() - query_start > interval '500 milliseconds')",
            )
            .bind(format!("%{q}%"))
            // Not on `long`: a transaction sees the activity of its first look only.
            .fetch_one(&mut watcher)
            .await
            .unwrap();
            if waits || build.is_finished() {
                return;
            }
            tokio::task::yield_now().await;
        }
    };
    // Until it has waited past both timeouts (or ended: cut short, it fails below).
    tokio::time::timeout(std::time::Duration::from_secs(30), waiting)
        .await
        .expect("the build neither waited nor ended");
    sqlx::raw_sql("COMMIT").execute(&mut long).await.unwrap();
    let built = tokio::time::timeout(std::time::Duration::from_secs(30), build)
        .await
        .expect("the build did not end once the transaction did")
        .unwrap();
    assert!(built.is_ok(), "{built:?}");
    let page = store.read_log(GlobalPosition::START, &LogFilter::all().event_type("N"), 1).await;
    assert!(page.unwrap().caught_up);
}

/// Two stores (two processes, say two replicas of an application that each build the index at
/// start) that call `index_event_types` at once both succeed, and leave one valid index: the
/// second does not take the first's build, still running, for one left invalid by a build that
/// failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_that_build_the_index_by_event_type_at_once_both_succeed() {
    let store = fresh_postgres().await;
    a_log_with_one_rare_event_type(&store).await;
    let q = format!("\"{}\"", store.schema());
    let app = format!("second-{}", store.schema());
    let url = format!("{}?application_name={app}", database_url());
    let config = PostgresConfig::builder(url).schema(store.schema().as_str()).max_connections(2);
    let other = Postgres::connect(config.build().unwrap()).await.unwrap();
    // A snapshot older than the first build, which keeps it running (its index invalid) until
    // the second has started.
    let mut long = old_snapshot(&store).await;
    let first = {
        let store = store.clone();
        tokio::spawn(async move { store.index_event_types().await })
    };
    let mut watcher = raw_connection().await;
    // Until a session waits: the first build for the old snapshot (its index built, not yet
    // valid), any build of `app` for a lock in the server in a statement on this schema, or
    // for the build's turn, asking for it.
    let mut waiting = async |app: Option<&str>| {
        let wait = async {
            loop {
                let waits: bool = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM pg_stat_activity \
                     WHERE CASE WHEN $1::text IS NULL \
                       THEN query LIKE 'CREATE INDEX CONCURRENTLY%' AND query LIKE $2 \
                         AND wait_event_type = 'Lock' \
                       ELSE application_name = $1 \
                         AND (query LIKE $2 AND wait_event_type = 'Lock' \
                           OR query LIKE '%pg_try_advisory_lock%') END)",
                )
                .bind(app)
                .bind(format!("%{q}%"))
                .fetch_one(&mut watcher)
                .await
                .unwrap();
                if waits {
                    return;
                }
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(30), wait)
            .await
            .unwrap_or_else(|_| panic!("{app:?} did not wait"));
    };
    waiting(None).await;
    let second = {
        let other = other.clone();
        tokio::spawn(async move { other.index_event_types().await })
    };
    // The second build waits too (for the first, or for the old snapshot), whatever it runs.
    waiting(Some(&app)).await;
    sqlx::raw_sql("COMMIT").execute(&mut long).await.unwrap();
    let ended = |build: tokio::task::JoinHandle<Result<(), StoreError>>| async move {
        tokio::time::timeout(std::time::Duration::from_secs(60), build)
            .await
            .expect("a build did not end")
            .unwrap()
    };
    let (first, second) = (ended(first).await, ended(second).await);
    assert!(first.is_ok(), "the first build: {first:?}");
    assert!(second.is_ok(), "the second build: {second:?}");
    let valid = index_valid(&mut watcher, &store, "events_event_type_position").await;
    assert_eq!(valid, Some(true), "no valid index");
    for s in [&store, &other] {
        let page = s.read_log(GlobalPosition::START, &LogFilter::all().event_type("R"), 1).await;
        assert_eq!(page.unwrap().entries.len(), 1);
    }
}

/// An event type too long for an entry of the index by event type (over 2,704 bytes that do not
/// compress) is a typed error saying so, never an anonymous one: a build over a log that holds
/// one is `StoreError::Schema` and leaves no index behind (reads go on without it); with the
/// index, an append of such an event is `StoreError::InvalidAppend`, which writes nothing, and
/// the log reads on through the index.
#[tokio::test]
async fn an_event_type_too_long_for_the_index_by_event_type_is_a_typed_error() {
    let long: String = (0..100).map(|_| uuid::Uuid::new_v4().simple().to_string()).collect();
    let store = fresh_postgres().await;
    append_typed(&store, "long-1", 0, &long, 1).await;
    let built = store.index_event_types().await;
    assert!(matches!(&built, Err(StoreError::Schema(m)) if m.contains("too long")), "{built:?}");
    // Nothing of the failed build is left behind.
    let mut conn = raw_connection().await;
    let left = index_valid(&mut conn, &store, "events_event_type_position").await;
    assert_eq!(left, None, "the failed build left its index behind");
    let page = store.read_log(GlobalPosition::START, &LogFilter::all().event_type(&long), 10).await;
    assert_eq!(page.unwrap().entries.len(), 1);

    let store = fresh_postgres().await;
    append_typed(&store, "short-1", 0, "N", 1).await;
    store.index_event_types().await.unwrap();
    let s = id("long-2");
    let mut e = event(2);
    e.event_type = long.as_str().into();
    let appended =
        store.append(AppendRequest::new().expect(s.clone(), v(0)).write(s.clone(), vec![e])).await;
    assert!(
        matches!(&appended, Err(StoreError::InvalidAppend(m)) if m.contains("too long")),
        "{appended:?}"
    );
    assert_eq!(store.read(&[s]).await.unwrap()[0].events.len(), 0);
    let page = store.read_log(GlobalPosition::START, &LogFilter::all().event_type("N"), 10).await;
    assert_eq!(page.unwrap().entries.len(), 1);
}

/// A snapshot saved with the given key, of one stream, for the pruning test.
fn stored_snapshot(key: &str) -> eventcore::backend::StoredSnapshot {
    eventcore::backend::StoredSnapshot {
        key: eventcore::backend::SnapshotKey::new(key),
        state_type: "S".into(),
        state_version: 1,
        streams: vec![(id(key), v(0))],
        last_event_ids: vec![None],
        state: Payload::to_json(&0).unwrap(),
    }
}

#[tokio::test]
async fn pruning_snapshots_deletes_only_those_older_than_the_age_by_the_servers_clock() {
    let store = fresh_postgres().await;
    for key in ["old", "day-old", "fresh"] {
        store.save_snapshot(stored_snapshot(key)).await.unwrap();
    }
    // Aged by the server's clock, as `taken_at` is set.
    let q = format!("\"{}\"", store.schema());
    for (key, age) in [("old", "30 days"), ("day-old", "1 day 1 second")] {
        sqlx::query(&format!(
            "UPDATE {q}.snapshots SET taken_at = pg_catalog.now() - interval '{age}' WHERE key = $1"
        ))
        .bind(key)
        .execute(store.pool())
        .await
        .unwrap();
    }
    let day = std::time::Duration::from_secs(86_400);
    assert_eq!(store.prune_snapshots(day * 7).await.unwrap(), 1);
    assert_eq!(store.load_snapshot(&stored_snapshot("old").key).await.unwrap(), None);
    assert!(store.load_snapshot(&stored_snapshot("day-old").key).await.unwrap().is_some());
    assert_eq!(store.prune_snapshots(day).await.unwrap(), 1);
    assert_eq!(store.load_snapshot(&stored_snapshot("day-old").key).await.unwrap(), None);
    assert_eq!(
        store.load_snapshot(&stored_snapshot("fresh").key).await.unwrap(),
        Some(stored_snapshot("fresh"))
    );
    // Saving a key again makes it fresh: pruning goes by the last save.
    sqlx::query(&format!(
        "UPDATE {q}.snapshots SET taken_at = pg_catalog.now() - interval '2 days'"
    ))
    .execute(store.pool())
    .await
    .unwrap();
    store.save_snapshot(stored_snapshot("fresh")).await.unwrap();
    assert_eq!(store.prune_snapshots(day).await.unwrap(), 0);
}

/// An age no snapshot can have, up to the 10,000 years past which none is even asked for,
/// deletes nothing: it is not an error (`now()` minus thousands of years would fall before
/// the first timestamp the server can hold, 4714 BC).
#[tokio::test]
async fn pruning_snapshots_older_than_thousands_of_years_deletes_nothing() {
    let store = fresh_postgres().await;
    store.save_snapshot(stored_snapshot("kept")).await.unwrap();
    let year = std::time::Duration::from_secs(366 * 86_400);
    for years in [1_000, 7_000, 9_999] {
        let pruned = store.prune_snapshots(year * years).await;
        assert!(matches!(pruned, Ok(0)), "{years} years: {pruned:?}");
    }
    assert!(store.load_snapshot(&stored_snapshot("kept").key).await.unwrap().is_some());
}
