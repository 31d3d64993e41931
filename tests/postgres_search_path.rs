//! The store's SQL cannot be hijacked through the `search_path` (the CVE-2018-1058 class): a
//! schema on the application role's path, ahead of the store's, holding functions and
//! operators that fit the store's arguments better than PostgreSQL's built-ins do
//! (`unnest(text[])` beats `pg_catalog.unnest(anyarray)`), is never called, whichever path the
//! store takes: migrating, appending (one INSERT, the SQL function `append`, `append_batch`,
//! keys, replays, conflicts), reading, snapshots, the log and projections.
#![cfg(feature = "postgres")]

#[path = "support/postgres.rs"]
mod postgres_support;

use std::time::Duration;

use eventcore::backend::{
    AppendRequest, Backend, IdempotencyKey, LogFilter, SnapshotKey, StoreError, StoredSnapshot,
    postgres::{Postgres, PostgresConfig},
};
use eventcore::subscription::{ParkedEvent, ProjectionSnapshot, ProjectionStore};
use eventcore::{GlobalPosition, Payload};
use postgres_support::{
    connect_unmigrated, database_url, event, fresh_schema_name, id, raw_connection, v,
};

/// Every element type the store passes in arrays.
const ELEMENT_TYPES: [&str; 6] = ["text", "bigint", "integer", "uuid", "boolean", "timestamptz"];

/// Creates schema `evil` holding, for each polymorphic or variadic built-in the store's SQL
/// calls, a function of the same name with the exact argument types of the store's calls, so
/// that PostgreSQL prefers it wherever the name is resolved through a `search_path` that holds
/// `evil`; each fails with `hijacked: <name>`.
async fn plant(evil: &str) {
    let e = format!("\"{evil}\"");
    let raise = |what: &str| format!("BEGIN RAISE EXCEPTION 'hijacked: {what}'; END");
    let mut sql = format!("CREATE SCHEMA {e};\n");
    let mut function = |name: &str, args: &str, returns: &str| {
        let body = raise(&format!("{name}({args})"));
        sql.push_str(&format!(
            "CREATE FUNCTION {e}.{name}({args}) RETURNS {returns} LANGUAGE plpgsql \
             AS $fn$ {body} $fn$;\n"
        ));
    };
    for t in ELEMENT_TYPES {
        function("unnest", &format!("{t}[]"), &format!("SETOF {t}"));
        function("cardinality", &format!("{t}[]"), "integer");
        function("array_fill", &format!("{t}, integer[]"), &format!("{t}[]"));
        function("array_position", &format!("{t}[], {t}"), "integer");
        function("agg_step", &format!("{t}[], {t}"), &format!("{t}[]"));
        function("array_eq", &format!("{t}[], {t}[]"), "boolean");
    }
    for args in ["text, integer", "text, text", "text, bigint", "text, text, bigint, bigint"] {
        function("format", args, "text");
    }
    function("jsonb_build_object", "text, text, text, bigint, text, bigint", "jsonb");
    function("convert_to", "text, text", "bytea");
    function("count_step", "bigint, boolean", "bigint");
    for t in ELEMENT_TYPES {
        sql.push_str(&format!(
            "CREATE AGGREGATE {e}.array_agg({t}) (SFUNC = {e}.agg_step, STYPE = {t}[]);\n\
             CREATE OPERATOR {e}.= (LEFTARG = {t}[], RIGHTARG = {t}[], \
               FUNCTION = {e}.array_eq);\n"
        ));
    }
    sql.push_str(&format!(
        "CREATE AGGREGATE {e}.count(boolean) (SFUNC = {e}.count_step, STYPE = bigint);\n"
    ));
    let mut conn = raw_connection().await;
    sqlx::raw_sql(&sql).execute(&mut conn).await.unwrap();
}

/// A store in a new schema whose connections' `search_path` is `evil, <schema>, public`,
/// migrated through that path.
async fn store_behind(evil: &str) -> Postgres {
    let schema = fresh_schema_name();
    let url = database_url();
    let sep = if url.contains('?') { '&' } else { '?' };
    let url = format!("{url}{sep}options=-c%20search_path%3D{evil}%2C{schema}%2Cpublic");
    let store = connect_unmigrated(PostgresConfig::builder(url).schema(schema)).await;
    let path: String =
        sqlx::query_scalar("SHOW search_path").fetch_one(store.pool()).await.unwrap();
    assert!(path.starts_with(evil), "the store's connections do not put `evil` first: {path}");
    store.migrate().await.unwrap();
    store
}

#[track_caller]
fn ok<T>(what: &str, result: Result<T, StoreError>) -> T {
    result.unwrap_or_else(|e| panic!("{what}: {e}"))
}

#[tokio::test]
async fn no_function_on_the_search_path_is_called_in_place_of_a_built_in() {
    let evil = fresh_schema_name();
    plant(&evil).await;
    let store = store_behind(&evil).await;
    let q = format!("\"{}\"", store.schema());
    let (a, b, r) = (id("acct-a"), id("acct-b"), id("rate-r"));

    // One INSERT (every expected stream written), with and without a key, and its replay.
    ok(
        "plain append",
        store
            .append(
                AppendRequest::new()
                    .expect(a.clone(), v(0))
                    .expect(b.clone(), v(0))
                    .write(a.clone(), vec![event(1)])
                    .write(b.clone(), vec![event(2)]),
            )
            .await,
    );
    let key = IdempotencyKey::try_new("key-1").unwrap();
    let keyed = || {
        AppendRequest::new()
            .expect(a.clone(), v(1))
            .write(a.clone(), vec![event(3)])
            .idempotent(key.clone())
    };
    ok("keyed append", store.append(keyed()).await);
    assert!(ok("keyed replay", store.append(keyed()).await).replayed);
    // The SQL function `append` (a stream only read), with a key, its replay, and a named event.
    let read_a = store.read(std::slice::from_ref(&a)).await;
    let last_a = ok("read", read_a)[0].events.last().map(|e| e.event_id()).unwrap();
    let key2 = IdempotencyKey::try_new("key-2").unwrap();
    let reading = || {
        AppendRequest::new()
            .expect(r.clone(), v(0))
            .expect_event(a.clone(), v(2), last_a)
            .expect(b.clone(), v(1))
            .write(b.clone(), vec![event(4)])
            .idempotent(key2.clone())
    };
    ok("append through the function", store.append(reading()).await);
    assert!(ok("replay through the function", store.append(reading()).await).replayed);
    // Conflicts, on both paths, read the versions back.
    let stale = AppendRequest::new().expect(a.clone(), v(0)).write(a.clone(), vec![event(5)]);
    let conflict = store.append(stale).await;
    assert!(matches!(conflict, Err(StoreError::Conflict(_))), "{conflict:?}");
    let stale = AppendRequest::new()
        .expect(r.clone(), v(0))
        .expect(a.clone(), v(0))
        .write(a.clone(), vec![event(5)]);
    let conflict = store.append(stale).await;
    assert!(matches!(conflict, Err(StoreError::Conflict(_))), "{conflict:?}");
    // More than 64 streams: the function's exclusive append lock.
    let many: Vec<_> = (0..70).map(|i| id(&format!("many-{i}"))).collect();
    let wide = many.iter().fold(AppendRequest::new().expect(r.clone(), v(0)), |req, s| {
        req.expect(s.clone(), v(0)).write(s.clone(), vec![event(6)])
    });
    ok("append over 70 streams", store.append(wide).await);
    assert!(ok("find_committed", store.find_committed(&key).await).is_some());
    assert!(ok("find_committed", store.find_committed(&key2).await).is_some());

    // Group commit: appends in flight together, some through `append_batch`.
    let batched = store.clone().with_append_batches(8);
    let appends = (0..16).map(|i| {
        let batched = batched.clone();
        async move {
            let s = id(&format!("batch-{i}"));
            let mut request = AppendRequest::new().expect(s.clone(), v(0)).write(s, vec![event(i)]);
            if i % 2 == 0 {
                request = request.expect(id("batch-read"), v(0));
            }
            batched.append(request).await
        }
    });
    for done in futures_util::future::join_all(appends).await {
        ok("batched append", done);
    }
    // `append_batch` itself, with a stream only read, a key and a named event.
    let uuids = || {
        let one = || format!("'{}'::uuid", uuid::Uuid::now_v7());
        format!("ARRAY[{}, {}]", one(), one())
    };
    let (ids, correlations) = (uuids(), uuids());
    let batch = format!(
        "SELECT outcome FROM {q}.append_batch(\
           ARRAY['bk-1', NULL], ARRAY[1, 1, 2], ARRAY['bb-1', 'bb-read', 'bb-2'], \
           ARRAY[0, 0, 0]::int8[], ARRAY[1, 2, 3]::int4[], ARRAY[true, false, true], \
           ARRAY[1, 2], ARRAY['bb-1', 'bb-2'], ARRAY[1, 1]::int8[], \
           {ids}, ARRAY['N', 'N'], ARRAY[1, 1], ARRAY['1', '2'], {correlations}, \
           ARRAY[NULL, NULL]::uuid[], ARRAY[NULL, NULL]::text[], ARRAY[now(), now()], \
           ARRAY[NULL, NULL, NULL]::uuid[], ARRAY['f', NULL])"
    );
    let outcomes: Vec<String> = sqlx::query_scalar(&batch).fetch_all(store.pool()).await.unwrap();
    assert_eq!(outcomes, ["c", "c"]);
    let outcomes: Vec<String> = sqlx::query_scalar(&batch).fetch_all(store.pool()).await.unwrap();
    assert_eq!(outcomes, ["r", "x"], "the key replays, the second request conflicts");

    // Reads.
    let streams = [a.clone(), b.clone(), r.clone()];
    ok("read", store.read(&streams).await);
    ok("read_after", store.read_after(&[(a.clone(), v(1)), (r.clone(), v(0))]).await);
    let snapshot_key = SnapshotKey::new("{\"state\":\"S\"}");
    let snapshot = StoredSnapshot {
        key: snapshot_key.clone(),
        state_type: "S".into(),
        state_version: 1,
        streams: vec![(a.clone(), v(2)), (r.clone(), v(0))],
        last_event_ids: vec![Some(last_a), None],
        state: Payload::to_json(&7).unwrap(),
    };
    ok("save_snapshot", store.save_snapshot(snapshot.clone()).await);
    ok("save_snapshot again", store.save_snapshot(snapshot).await);
    assert!(ok("load_snapshot", store.load_snapshot(&snapshot_key).await).is_some());
    let (found, _) =
        ok("read_with_snapshot", store.read_with_snapshot(&snapshot_key, &[a.clone(), r]).await);
    assert!(found.is_some());

    // The log, every way it is read.
    let all = ok("read_all", store.read_all(GlobalPosition::START, 1000).await);
    assert!(all.len() > 70, "{}", all.len());
    let filters = [
        LogFilter::all().category("acct"),
        LogFilter::all().category("acct").category("many"),
        LogFilter::all().category("acct").category("many").event_type("N"),
        LogFilter::all().event_type("N"),
    ];
    for filter in &filters {
        ok("read_log", store.read_log(GlobalPosition::START, filter, 10).await);
    }
    ok("index_event_types", store.index_event_types().await);
    ok("read_log by type", store.read_log(GlobalPosition::START, &filters[3], 10).await);
    let gap_safe = store.clone().with_read_all_wait(Duration::from_millis(1));
    let head = all.last().map(|e| e.position).unwrap();
    ok("gap-safe read_all", gap_safe.read_all(head, 10).await);
    let from_sql: Vec<i64> =
        sqlx::query_scalar(&format!("SELECT position FROM {q}.read_log(0, 5)"))
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(from_sql.len(), 5);

    // Projections.
    let owner = uuid::Uuid::now_v7();
    let lease = ok("claim", store.claim("p", owner, Duration::from_secs(30)).await).unwrap();
    assert!(ok("renew", store.renew(&lease, Duration::from_secs(30)).await));
    let tx = ok("begin", store.begin(&lease).await);
    let parked = ParkedEvent::new(all[0].position, Some(all[0].event_id()), "acct-a", "boom");
    let projection_snapshot = ProjectionSnapshot {
        state_type: "P".into(),
        state_version: 1,
        position: all[1].position,
        last_event: Some((all[1].position, all[1].event_id())),
        state: Payload::to_json(&1).unwrap(),
    };
    let committed =
        store.commit(tx, &lease, all[1].position, Some(parked), Some(projection_snapshot)).await;
    assert!(ok("commit", committed));
    let tx = ok("begin", store.begin(&lease).await);
    assert!(ok("retried", store.retried(tx, &lease, all[0].position, Err("x".into())).await));
    assert_eq!(ok("checkpoint", store.checkpoint("p").await), Some(all[1].position));
    assert!(ok("snapshot", ProjectionStore::snapshot(&store, "p").await).is_some());
    assert_eq!(ok("parked", store.parked("p").await).len(), 1);
    assert!(ok("discard_parked", store.discard_parked("p", all[0].position).await));
    assert_eq!(ok("discarded", store.discarded("p").await).len(), 1);
    assert_eq!(ok("projections", store.projections().await).len(), 1);
    ok("log_stats", store.log_stats(GlobalPosition::START, 10).await);
    ok("release", store.release(&lease).await);

    // Migrating again (a schema at the latest version) and the version.
    ok("migrate again", store.migrate().await);
    assert_eq!(ok("schema_version", store.schema_version().await), Some(Postgres::SCHEMA_VERSION));
}
