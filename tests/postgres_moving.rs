//! Moving a PostgreSQL event store into another cluster with `pg_dump` and a restore.
//!
//! Positions come from transaction ids plus the log's base (see POSITIONS AND THE HORIZON in
//! `migrations/0001_initial.sql`). Restored into a cluster whose transaction-id counter lies
//! below the ids that wrote the log, the store refuses appends and reads
//! (`StoreError::LogMoved`, SQLSTATE `EC006` for the SQL reader) until `Postgres::migrate()`
//! re-bases it; then everything works, new events follow the stored ones, and readers resume
//! where they stopped on the source. Restored into a cluster whose counter is higher, nothing
//! needs doing.
//!
//! Each test arranges the counters for real: it burns transaction ids on one cluster until
//! its counter lies at least [`MARGIN`] above the other's, then writes, dumps and restores.
#![cfg(feature = "postgres")]

#[path = "support/postgres.rs"]
mod postgres_support;
#[path = "support/second_cluster.rs"]
mod second_cluster;

use std::{
    collections::{HashMap, HashSet},
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use eventcore::{
    EventId, GlobalPosition, NewEvent, RecordedEvent, StreamId,
    backend::{
        AppendRequest, Backend, Committed, LogFilter, StoreError,
        postgres::{Postgres, PostgresConfig},
    },
    subscription::{Projection, ProjectionRunner, ProjectionStore},
};
use postgres_support::{database_url, event, fresh_postgres_with, fresh_schema_name, id, v};
use second_cluster::{
    drop_schema, dump_schema, restore, second_database_url, second_raw_connection,
};
use sqlx::{Connection, PgConnection};
use tokio::sync::Mutex;

type Error = Box<dyn std::error::Error + Send + Sync>;
type TestResult = Result<(), Error>;

/// How far one cluster's transaction-id counter is raised above the other's before a move:
/// room for the transactions the restore itself and other tests take meanwhile.
const MARGIN: i64 = 2_000;

/// More events than any test here writes: "everything", for `read_all`.
const ALL: usize = 100_000;

/// Tests here raise one cluster's counter above the other's; one at a time, so that one
/// test's burning cannot undo another's arrangement (the "higher counter" test raises the
/// second cluster, which could lift it past a log another test just moved there).
static CLUSTERS: Mutex<()> = Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_restored_below_the_clusters_ids_is_refused_until_migrate_rebases_it() -> TestResult {
    let _clusters = CLUSTERS.lock().await;
    let schema = fresh_schema_name();
    let (source, moved, history) = move_below(&schema).await?;
    let mut second = second_raw_connection().await;
    // The last position a reader of the source had seen before the move.
    let checkpoint = history.last().ok_or("no history")?.position;

    // Appends are refused, whichever way they go: the INSERT (the request writes every stream
    // it expects), the function `append` (it only reads one), and batches (group commit).
    let (a1, a2) = (id("acct-1"), id("acct-2"));
    let written = AppendRequest::new()
        .expect(a1.clone(), v(version_in(&history, &a1)))
        .write(a1.clone(), vec![event(9_001)]);
    assert_log_moved(moved.append(written).await, "an append writing the stream it read")?;
    let fresh = id("fresh-1");
    let only_read = AppendRequest::new()
        .expect(a2.clone(), v(version_in(&history, &a2)))
        .expect(fresh.clone(), v(0))
        .write(fresh.clone(), vec![event(9_002), event(9_003)]);
    assert_log_moved(moved.append(only_read).await, "an append only reading a stream")?;
    let batching = moved.clone().with_append_batches(1);
    let attempts = (0..8).map(|i| {
        let store = batching.clone();
        tokio::spawn(async move {
            let stream = id(&format!("batched-{i}"));
            store
                .append(
                    AppendRequest::new()
                        .expect(stream.clone(), v(0))
                        .write(stream.clone(), vec![event(9_100 + i)]),
                )
                .await
        })
    });
    for attempt in futures_join(attempts).await? {
        assert_log_moved(attempt, "a batched append")?;
    }
    // Reads are refused too, saying what to run.
    let error = moved.read_all(GlobalPosition::START, ALL).await.err().ok_or("read_all worked")?;
    assert!(matches!(error, StoreError::LogMoved(_)), "read_all: {error:?}");
    assert!(error.to_string().contains("migrate()"), "{error}");
    let filtered = moved.read_log(checkpoint, &LogFilter::all().category("acct"), 10).await;
    assert!(matches!(filtered, Err(StoreError::LogMoved(_))), "read_log: {filtered:?}");
    // Nothing was written below the stored events, and nothing was re-based behind our back.
    assert_eq!(count_events(&mut second, &schema).await?, history.len() as i64);
    assert_eq!(log_base(&mut second, &schema).await?.0, 0);

    moved.migrate().await?;

    let based = log_base(&mut second, &schema).await?;
    assert!(based.0 > 0, "migrate() did not re-base the moved log: {based:?}");
    // The whole history, as the source holds it: positions, ids, streams, versions, payloads,
    // metadata.
    assert_eq!(moved.read_all(GlobalPosition::START, ALL).await?, history);

    // New appends, after the move: to streams of the history, to a new one, one of several
    // events, and one through the function (it only reads a stream).
    let mut after_move: Vec<EventId> = Vec::new();
    let requests = [
        AppendRequest::new()
            .expect(a1.clone(), v(version_in(&history, &a1)))
            .write(a1.clone(), vec![event(10_001)]),
        AppendRequest::new()
            .expect(fresh.clone(), v(0))
            .write(fresh.clone(), vec![event(10_002), event(10_003), event(10_004)]),
        AppendRequest::new()
            .expect(a2.clone(), v(version_in(&history, &a2)))
            .expect(fresh.clone(), v(3))
            .write(fresh.clone(), vec![event(10_005)]),
        AppendRequest::new()
            .expect(a2.clone(), v(version_in(&history, &a2)))
            .write(a2.clone(), vec![event(10_006), event(10_007)]),
    ];
    for request in requests {
        after_move.extend(request_event_ids(&request));
        let committed = moved.append(request).await?;
        let (first, _) = committed.positions.ok_or("no positions")?;
        assert!(first > checkpoint, "an event after the move at {first:?}, before {checkpoint:?}");
    }

    // A reader that had read the source up to the checkpoint resumes there on the moved
    // database: it gets exactly the events written after the move, once each, in order.
    let resumed = read_from(&moved, checkpoint, 2).await?;
    let resumed_ids: Vec<EventId> = resumed.iter().map(RecordedEvent::event_id).collect();
    assert_eq!(resumed_ids, after_move);
    assert!(resumed.windows(2).all(|w| w[0].position < w[1].position));
    // And one from the start gets the history, then them.
    let everything = moved.read_all(GlobalPosition::START, ALL).await?;
    assert_eq!(everything[..history.len()], history[..]);
    assert_eq!(everything[history.len()..], resumed[..]);

    // Migrating again changes nothing.
    moved.migrate().await?;
    assert_eq!(log_base(&mut second, &schema).await?, based);
    assert_eq!(moved.read_all(GlobalPosition::START, ALL).await?, everything);

    let _ = second.close().await;
    clean_up(&schema, [source, moved]).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_and_a_tailing_reader_work_on_a_rebased_log() -> TestResult {
    const WRITERS: u64 = 4;
    const OWN: u64 = 50;
    const SHARED: u64 = 5;

    let _clusters = CLUSTERS.lock().await;
    let schema = fresh_schema_name();
    let (source, moved, history) = move_below(&schema).await?;
    moved.migrate().await?;
    let history_top = history.last().ok_or("no history")?.position;
    let total = history.len() + usize::try_from(WRITERS * (OWN + SHARED))?;

    // The reader tails the log from the start, resuming after each page's `checked_to`.
    let reader = {
        let store = moved.clone();
        tokio::spawn(async move {
            let mut watch = store.watch_log();
            let mut seen: Vec<(GlobalPosition, EventId)> = Vec::new();
            let mut ids = HashSet::new();
            let mut after = GlobalPosition::START;
            while seen.len() < total {
                let page = store.read_log(after, &LogFilter::all(), 100).await?;
                let empty = page.entries.is_empty();
                for entry in page.entries {
                    let event = entry?;
                    assert!(event.position > after, "{:?} came after {after:?}", event.position);
                    assert!(ids.insert(event.event_id()), "{:?} came twice", event.event_id());
                    after = event.position;
                    seen.push((event.position, event.event_id()));
                }
                assert!(
                    page.checked_to >= after,
                    "checked_to {:?} before {after:?}",
                    page.checked_to
                );
                after = page.checked_to;
                if empty {
                    // Only a wake-up: the next page is read either way.
                    watch.changed(Duration::from_millis(50)).await;
                }
            }
            // Nothing more is stored: the next page is empty.
            let rest = store.read_log(after, &LogFilter::all(), 100).await?;
            assert!(rest.entries.is_empty(), "more than was written: {:?}", rest.entries);
            Ok::<_, Error>(seen)
        })
    };

    // Writers append one event at a time to streams of their own and to one shared stream,
    // sending again on a conflict; group commit puts their appends together.
    let batching = moved.clone().with_append_batches(1);
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = batching.clone();
            tokio::spawn(async move {
                let (own, shared) = (id(&format!("writer-{w}")), id("shared-1"));
                let mut written = Vec::new();
                for i in 0..OWN + SHARED {
                    let new = event(1_000_000 + w * 1_000 + i);
                    written.push(new.metadata.event_id);
                    if i < OWN {
                        let request = AppendRequest::new()
                            .expect(own.clone(), v(i))
                            .write(own.clone(), vec![new]);
                        let committed = store.append(request).await?;
                        let (first, _) = committed.positions.ok_or("no positions")?;
                        assert!(first > history_top, "{first:?} is not above {history_top:?}");
                        continue;
                    }
                    loop {
                        let at = store.read(std::slice::from_ref(&shared)).await?[0].version;
                        let request = AppendRequest::new()
                            .expect(shared.clone(), at)
                            .write(shared.clone(), vec![new.clone()]);
                        match store.append(request).await {
                            Ok(committed) => {
                                let (first, _) = committed.positions.ok_or("no positions")?;
                                assert!(first > history_top, "{first:?} not above {history_top:?}");
                                break;
                            }
                            Err(StoreError::Conflict(_)) => {}
                            Err(e) => return Err(e.into()),
                        }
                    }
                }
                Ok::<_, Error>(written)
            })
        })
        .collect();

    let (seen, written) = tokio::time::timeout(Duration::from_secs(60), async {
        let mut written: Vec<EventId> = history.iter().map(RecordedEvent::event_id).collect();
        for writer in futures_join(writers).await? {
            written.extend(writer?);
        }
        let seen = reader.await??;
        Ok::<_, Error>((seen, written))
    })
    .await
    .map_err(|_| "writers and reader did not finish within 60 s")??;

    // The reader saw every event once, in position order: exactly what a final read holds.
    let everything = moved.read_all(GlobalPosition::START, ALL).await?;
    let stored: Vec<(GlobalPosition, EventId)> =
        everything.iter().map(|e| (e.position, e.event_id())).collect();
    assert_eq!(seen, stored);
    let written: HashSet<EventId> = written.into_iter().collect();
    let seen_ids: HashSet<EventId> = seen.iter().map(|(_, id)| *id).collect();
    assert_eq!(seen_ids, written);
    assert_eq!(everything[..history.len()], history[..]);
    for stream in (0..WRITERS).map(|w| id(&format!("writer-{w}"))) {
        assert_eq!(moved.read(std::slice::from_ref(&stream)).await?[0].version, v(OWN));
    }
    assert_eq!(moved.read(&[id("shared-1")]).await?[0].version, v(WRITERS * SHARED));

    drop(batching);
    clean_up(&schema, [source, moved]).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_restored_above_the_clusters_ids_needs_nothing() -> TestResult {
    let _clusters = CLUSTERS.lock().await;
    let schema = fresh_schema_name();
    let source = fresh_postgres_with(PostgresConfig::builder(database_url()).schema(&schema)).await;
    let history = write_history(&source).await?;
    let history_top = history.last().ok_or("no history")?.position;
    // The second cluster's counter goes above every id that wrote the history.
    let mut main = postgres_support::raw_connection().await;
    let mut second = second_raw_connection().await;
    let main_next = next_xid(&mut main).await?;
    burn_until(&mut second, main_next + MARGIN).await?;
    dump_and_restore(&schema).await?;
    let restored = connect(&second_database_url(), &schema).await?;
    let base_before = log_base(&mut second, &schema).await?;
    assert_eq!(base_before.0, 0);

    // Without migrate(): reads and appends work, and new events follow the restored ones.
    assert_eq!(restored.read_all(GlobalPosition::START, ALL).await?, history);
    let committed =
        append_to_acct_1(&restored, &history, vec![event(20_001), event(20_002)]).await?;
    let (first, _) = committed.positions.ok_or("no positions")?;
    assert!(first > history_top, "{first:?} is not above {history_top:?}");
    let fresh = id("fresh-1");
    let committed = restored
        .append(
            AppendRequest::new()
                .expect(id("acct-3"), v(version_in(&history, &id("acct-3"))))
                .expect(fresh.clone(), v(0))
                .write(fresh.clone(), vec![event(20_003)]),
        )
        .await?;
    let (second_first, _) = committed.positions.ok_or("no positions")?;
    assert!(second_first > first);
    let everything = restored.read_all(GlobalPosition::START, ALL).await?;
    assert_eq!(everything.len(), history.len() + 3);
    assert_eq!(everything[..history.len()], history[..]);
    let resumed = read_from(&restored, history_top, 2).await?;
    assert_eq!(resumed[..], everything[history.len()..]);

    // migrate() has nothing to re-base.
    restored.migrate().await?;
    assert_eq!(log_base(&mut second, &schema).await?, base_before);

    let (_, _) = (main.close().await, second.close().await);
    clean_up(&schema, [source, restored]).await;
    Ok(())
}

/// A reader caught up on the source keeps the position its last page reached. The cluster's
/// other work (here 500 transactions that write no event) moves the source's horizon on, but
/// that position must stay at the last stored event: after the move and `migrate()`, the
/// first new event lands just above it, and a reader resuming from a position above the log
/// would skip that event for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_caught_up_before_a_move_misses_nothing_written_after_it() -> TestResult {
    let _clusters = CLUSTERS.lock().await;
    let schema = fresh_schema_name();
    let (source, moved, history) = move_below(&schema).await?;
    let top = history.last().ok_or("no history")?.position;
    let mut main = postgres_support::raw_connection().await;
    let now = next_xid(&mut main).await?;
    burn_until(&mut main, now + 500).await?;
    let checkpoint = caught_up_position(&source, &LogFilter::all()).await?;
    let quiet = caught_up_position(&source, &LogFilter::all().category("quiet")).await?;
    assert_eq!((checkpoint, quiet), (top, top), "a caught-up reader looked past the log");

    moved.migrate().await?;
    let committed = append_to_acct_1(&moved, &history, vec![event(30_001)]).await?;
    let resumed = read_from(&moved, checkpoint, 10).await?;
    assert_eq!(resumed.len(), 1, "resuming after {checkpoint:?}: {resumed:?}");
    assert_eq!(Some(resumed[0].position), committed.positions.map(|(first, _)| first));

    main.close().await?;
    clean_up(&schema, [source, moved]).await;
    Ok(())
}

/// A move that needs no re-base: the second cluster's counter lies above every id that wrote
/// the log, but below where the source's horizon had got to. New events there lie above the
/// log yet below that horizon, so a reader whose position had followed the horizon would skip
/// them; one whose position stays at the last stored event reads them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_caught_up_before_an_unnoticed_move_misses_nothing_written_after_it() -> TestResult
{
    let _clusters = CLUSTERS.lock().await;
    let schema = fresh_schema_name();
    let mut main = postgres_support::raw_connection().await;
    let mut second = second_raw_connection().await;
    sweep_second_cluster(&mut second).await;
    let target = next_xid(&mut second).await? + MARGIN;
    burn_until(&mut main, target).await?;
    let source = fresh_postgres_with(PostgresConfig::builder(database_url()).schema(&schema)).await;
    let history = write_history(&source).await?;
    let written_at = next_xid(&mut main).await?;
    burn_until(&mut main, written_at + 3 * MARGIN).await?;
    let checkpoint = caught_up_position(&source, &LogFilter::all()).await?;
    assert_eq!(Some(checkpoint), history.last().map(|e| e.position));
    // Above the history's ids, well below the source's horizon.
    burn_until(&mut second, written_at + MARGIN).await?;
    dump_and_restore(&schema).await?;
    let moved = connect(&second_database_url(), &schema).await?;
    let committed = append_to_acct_1(&moved, &history, vec![event(30_002)]).await?;
    let (first, _) = committed.positions.ok_or("no positions")?;
    let resumed = read_from(&moved, checkpoint, 10).await?;
    assert_eq!(
        resumed.iter().map(|e| e.position).collect::<Vec<_>>(),
        vec![first],
        "resuming after {checkpoint:?}"
    );

    let (_, _) = (main.close().await, second.close().await);
    clean_up(&schema, [source, moved]).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sql_reader_refuses_a_moved_log_and_reads_it_once_rebased() -> TestResult {
    let _clusters = CLUSTERS.lock().await;
    let schema = fresh_schema_name();
    let (source, moved, history) = move_below(&schema).await?;
    let mut second = second_raw_connection().await;
    let sql = format!(
        "SELECT position, event_id, stream_id, version, payload::text \
         FROM \"{schema}\".read_log($1, $2)"
    );

    let refused = sqlx::query_as::<_, SqlEvent>(&sql)
        .bind(0_i64)
        .bind(100_i32)
        .fetch_all(&mut second)
        .await
        .err()
        .ok_or("the SQL reader read a moved log")?;
    let code = refused.as_database_error().and_then(|db| db.code()).map(|c| c.into_owned());
    assert_eq!(code.as_deref(), Some("EC006"), "{refused}");

    moved.migrate().await?;
    append_to_acct_1(&moved, &history, vec![event(30_001), event(30_002)]).await?;

    // Paged by hand, three at a time, as the migration's comment says.
    let mut by_sql: Vec<SqlEvent> = Vec::new();
    let mut after = 0_i64;
    loop {
        let page: Vec<SqlEvent> =
            sqlx::query_as(&sql).bind(after).bind(3_i32).fetch_all(&mut second).await?;
        let Some(last) = page.last() else { break };
        after = last.0;
        by_sql.extend(page);
    }
    let everything = moved.read_all(GlobalPosition::START, ALL).await?;
    assert_eq!(everything.len(), history.len() + 2);
    let expected: Vec<SqlEvent> = everything
        .iter()
        .map(|e| {
            (
                i64::try_from(e.position.get()).unwrap_or(i64::MAX),
                e.event_id().as_uuid(),
                e.stream_id.as_str().to_owned(),
                i64::try_from(e.version.get()).unwrap_or(i64::MAX),
                e.payload.as_str().to_owned(),
            )
        })
        .collect();
    assert_eq!(by_sql, expected);

    let _ = second.close().await;
    clean_up(&schema, [source, moved]).await;
    Ok(())
}

/// A row of the SQL reader: position, event id, stream, version, payload text.
type SqlEvent = (i64, uuid::Uuid, String, i64, String);

/// Writes some history into `schema` on the main cluster and restores it into the second
/// cluster, having first raised the main cluster's counter [`MARGIN`] above the second's: the
/// ids that wrote the history lie above the second cluster's. Returns the source store, the
/// store on the restored copy (not migrated), and the history.
async fn move_below(schema: &str) -> Result<(Postgres, Postgres, Vec<RecordedEvent>), Error> {
    let mut main = postgres_support::raw_connection().await;
    let mut second = second_raw_connection().await;
    sweep_second_cluster(&mut second).await;
    let target = next_xid(&mut second).await? + MARGIN;
    burn_until(&mut main, target).await?;
    let source = fresh_postgres_with(PostgresConfig::builder(database_url()).schema(schema)).await;
    let history = write_history(&source).await?;
    dump_and_restore(schema).await?;
    // The arrangement holds: the history's ids (base 0 on the source) are at or above the
    // second cluster's next id.
    let top: i64 =
        sqlx::query_scalar(&format!("SELECT max(position) >> 16 FROM \"{schema}\".events"))
            .fetch_one(&mut second)
            .await?;
    let next = next_xid(&mut second).await?;
    assert!(
        top >= next,
        "the second cluster's counter ({next}) caught up with the history's ids ({top}) \
         during the move: something else is using transaction ids there"
    );
    let moved = connect(&second_database_url(), schema).await?;
    let (_, _) = (main.close().await, second.close().await);
    Ok((source, moved, history))
}

/// Appends a small history to `store`: three streams, appends of one and two events, and
/// appends over two streams. Returns it as `read_all` gives it.
async fn write_history(store: &Postgres) -> Result<Vec<RecordedEvent>, Error> {
    let mut versions: HashMap<StreamId, u64> = HashMap::new();
    let mut n = 0;
    for round in 0..4_u64 {
        for s in 1..=3_u64 {
            let stream = id(&format!("acct-{s}"));
            let other = id(&format!("acct-{}", s % 3 + 1));
            let count = 1 + (round + s) % 2;
            let events: Vec<NewEvent> = (0..count)
                .map(|_| {
                    n += 1;
                    event(n)
                })
                .collect();
            let at = |stream: &StreamId| v(versions.get(stream).copied().unwrap_or(0));
            let mut request = AppendRequest::new().expect(stream.clone(), at(&stream));
            if round == 2 {
                // Over two streams: writes both.
                n += 1;
                request =
                    request.expect(other.clone(), at(&other)).write(other.clone(), vec![event(n)]);
                *versions.entry(other.clone()).or_default() += 1;
            }
            store.append(request.write(stream.clone(), events)).await?;
            *versions.entry(stream).or_default() += count;
        }
    }
    let history = store.read_all(GlobalPosition::START, ALL).await?;
    assert_eq!(history.len() as u64, n);
    Ok(history)
}

/// Appends `events` to `acct-1`, expecting it where `history` left it.
async fn append_to_acct_1(
    store: &Postgres,
    history: &[RecordedEvent],
    events: Vec<NewEvent>,
) -> Result<Committed, Error> {
    let a1 = id("acct-1");
    let expected = v(version_in(history, &a1));
    Ok(store.append(AppendRequest::new().expect(a1.clone(), expected).write(a1, events)).await?)
}

/// Dumps `schema` from the main cluster and restores it into the second.
async fn dump_and_restore(schema: &str) -> TestResult {
    let schema = schema.to_owned();
    let moving = tokio::task::spawn_blocking(move || {
        let dump = dump_schema(&database_url(), &schema);
        restore(&second_database_url(), &dump);
    });
    if let Err(e) = moving.await {
        std::panic::resume_unwind(e.into_panic());
    }
    Ok(())
}

/// A store on `schema` of the database at `url`.
async fn connect(url: &str, schema: &str) -> Result<Postgres, Error> {
    let config = PostgresConfig::builder(url).schema(schema).max_connections(8).build()?;
    Ok(Postgres::connect(config).await?)
}

/// The next transaction id of the cluster `conn` is connected to.
async fn next_xid(conn: &mut PgConnection) -> Result<i64, Error> {
    Ok(sqlx::query_scalar("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint")
        .fetch_one(conn)
        .await?)
}

/// Uses up transaction ids of `conn`'s cluster, each in a transaction of its own (committed
/// without waiting for the disk), until its next id is at least `target`.
async fn burn_until(conn: &mut PgConnection, target: i64) -> TestResult {
    sqlx::raw_sql("SET synchronous_commit = off").execute(&mut *conn).await?;
    loop {
        let short = target - next_xid(conn).await?;
        if short <= 0 {
            return Ok(());
        }
        let burn = format!(
            "DO $$ BEGIN FOR i IN 1..{short} LOOP PERFORM pg_current_xact_id(); COMMIT; \
             END LOOP; END $$"
        );
        sqlx::raw_sql(&burn).execute(&mut *conn).await?;
    }
}

/// The one row of `<schema>.log_base`: base, when and at which id it was set.
async fn log_base(
    conn: &mut PgConnection,
    schema: &str,
) -> Result<(i64, i64, chrono::DateTime<chrono::Utc>), Error> {
    Ok(sqlx::query_as(&format!("SELECT base, based_at_xid, based_at FROM \"{schema}\".log_base"))
        .fetch_one(conn)
        .await?)
}

async fn count_events(conn: &mut PgConnection, schema: &str) -> Result<i64, Error> {
    Ok(sqlx::query_scalar(&format!("SELECT count(*) FROM \"{schema}\".events"))
        .fetch_one(conn)
        .await?)
}

/// The version `stream` reached in `history`.
fn version_in(history: &[RecordedEvent], stream: &StreamId) -> u64 {
    history.iter().filter(|e| &e.stream_id == stream).map(|e| e.version.get()).max().unwrap_or(0)
}

/// The ids of the events a request writes, in the order they get positions.
fn request_event_ids(request: &AppendRequest) -> Vec<EventId> {
    request
        .writes
        .iter()
        .flat_map(|(_, events)| events.iter().map(|e| e.metadata.event_id))
        .collect()
}

/// Every event after `after`, paging `limit` at a time and resuming after `checked_to`, until
/// a page finds nothing (nobody writes meanwhile).
async fn read_from(
    store: &Postgres,
    mut after: GlobalPosition,
    limit: usize,
) -> Result<Vec<RecordedEvent>, Error> {
    let mut events = Vec::new();
    loop {
        let page = store.read_log(after, &LogFilter::all(), limit).await?;
        after = page.checked_to;
        let page = page.into_events()?;
        if page.is_empty() {
            return Ok(events);
        }
        events.extend(page);
    }
}

/// Where a reader with `filter` stands once a page says it caught up (nobody writes meanwhile).
async fn caught_up_position(store: &Postgres, filter: &LogFilter) -> Result<GlobalPosition, Error> {
    let mut after = GlobalPosition::START;
    loop {
        let page = store.read_log(after, filter, 100).await?;
        after = page.checked_to;
        if page.caught_up {
            return Ok(after);
        }
    }
}

fn assert_log_moved(result: Result<Committed, StoreError>, what: &str) -> TestResult {
    match result {
        Err(StoreError::LogMoved(message)) => {
            assert!(message.contains("migrate()"), "{what}: {message}");
            Ok(())
        }
        other => Err(format!("{what} on a moved log: {other:?}, not LogMoved").into()),
    }
}

/// Awaits spawned tasks, in order, passing on a panic of any.
async fn futures_join<T>(
    tasks: impl IntoIterator<Item = tokio::task::JoinHandle<T>>,
) -> Result<Vec<T>, Error> {
    let mut out = Vec::new();
    for task in tasks {
        match task.await {
            Ok(value) => out.push(value),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

/// Closes the stores and drops `schema` from both clusters.
async fn clean_up(schema: &str, stores: [Postgres; 2]) {
    for store in stores {
        store.pool().close().await;
    }
    drop_schema(&second_database_url(), schema).await;
    drop_schema(&database_url(), schema).await;
}

/// Once per test process, drops test schemas older than an hour from the second cluster (left
/// by runs that failed before cleaning up). Younger ones may belong to a run in progress.
async fn sweep_second_cluster(conn: &mut PgConnection) {
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
    .fetch_all(&mut *conn)
    .await
    .unwrap_or_default();
    for name in names {
        let born = name.split('_').nth(2).and_then(|s| s.parse::<u64>().ok());
        if born.is_some_and(|t| t + 3600 < now) {
            drop_schema(&second_database_url(), &name).await;
        }
    }
}

/// The book's logical-replication move ("Logical replication: re-base after the cut-over of
/// writes"), with the replication's effect on the target done by hand: the rows of the tables
/// the book says to replicate are copied from the source, as the subscription's initial copy
/// and apply would leave them once drained. A projection that kept its checkpoint in the store
/// (the default) caught up on the source; on the target, after the re-base, it must apply the
/// events written since, and none of the history again ("readers keep their checkpoints as
/// they are"). Replicating the `events` table alone, as the book once said, leaves the target
/// without the checkpoint, and the projection applies the whole history a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logical_replication_move_as_the_book_says_keeps_projections_checkpoints() -> TestResult {
    let _clusters = CLUSTERS.lock().await;
    let schema = fresh_schema_name();
    let mut main = postgres_support::raw_connection().await;
    let mut second = second_raw_connection().await;
    sweep_second_cluster(&mut second).await;
    let target_xid = next_xid(&mut second).await? + MARGIN;
    burn_until(&mut main, target_xid).await?;
    let source = fresh_postgres_with(PostgresConfig::builder(database_url()).schema(&schema)).await;
    let history = write_history(&source).await?;
    let applied = Applied::default();
    let checkpoint = tokio::time::timeout(
        Duration::from_secs(30),
        ProjectionRunner::new(source.clone(), applied.clone()).catch_up(),
    )
    .await??;
    assert_eq!(checkpoint, history.last().ok_or("no history")?.position);
    assert_eq!(applied.take().len(), history.len());

    // 1. The schema on the target, by `migrate()`; then the replicated tables' rows.
    let target = connect(&second_database_url(), &schema).await?;
    target.migrate().await?;
    for table in REPLICATED {
        copy_table(&mut main, &mut second, &schema, table).await?;
    }
    // 5. Re-base on the target; 6. writers and readers go there.
    target.migrate().await?;
    let written = append_to_acct_1(&target, &history, vec![event(20_001), event(20_002)]).await?;
    let (first, _) = written.positions.ok_or("no positions")?;
    assert!(first > checkpoint, "an event after the move at {first:?}, before {checkpoint:?}");
    let resumed = tokio::time::timeout(
        Duration::from_secs(30),
        ProjectionRunner::new(target.clone(), applied.clone()).catch_up(),
    )
    .await??;
    let after_move = applied.take();
    assert_eq!(
        after_move.len(),
        2,
        "the projection applied {} events on the target, not just the 2 written there: \
         its checkpoint did not come with the move",
        after_move.len()
    );
    assert!(after_move.iter().all(|p| *p > checkpoint));
    assert!(resumed > checkpoint);

    let (_, _) = (main.close().await, second.close().await);
    clean_up(&schema, [source, target]).await;
    Ok(())
}

/// The tables of the schema the book says to replicate for a move by logical replication.
const REPLICATED: [&str; 4] = ["events", "projections", "parked_events", "snapshots"];

/// Copies the rows of `<schema>.<table>` from `from` into the same table of `to`, as a
/// subscription's initial copy would.
async fn copy_table(
    from: &mut PgConnection,
    to: &mut PgConnection,
    schema: &str,
    table: &str,
) -> TestResult {
    use futures_util::StreamExt;
    let mut rows = Vec::new();
    let mut out = from.copy_out_raw(&format!("COPY \"{schema}\".{table} TO STDOUT")).await?;
    while let Some(chunk) = out.next().await {
        rows.extend_from_slice(&chunk?);
    }
    drop(out);
    let mut into = to.copy_in_raw(&format!("COPY \"{schema}\".{table} FROM STDIN")).await?;
    into.send(rows).await?;
    into.finish().await?;
    Ok(())
}

/// A projection that notes the positions it applies.
#[derive(Clone, Default)]
struct Applied(std::sync::Arc<std::sync::Mutex<Vec<GlobalPosition>>>);

impl Applied {
    fn take(&self) -> Vec<GlobalPosition> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

impl Projection<Postgres> for Applied {
    type Error = std::convert::Infallible;

    fn name(&self) -> &str {
        "applied"
    }

    async fn apply(
        &mut self,
        _: &mut <Postgres as ProjectionStore>::Tx,
        e: &RecordedEvent,
    ) -> Result<(), Self::Error> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(e.position);
        Ok(())
    }
}
