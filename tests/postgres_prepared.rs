//! Two-phase commit: an append whose transaction is prepared (`PREPARE TRANSACTION`) and
//! committed later (`COMMIT PREPARED`) is an append in flight until then, and readers of the
//! log wait for it like for any other.
//!
//! A prepared transaction leaves its session: it keeps its transaction id and its locks (the
//! append lock included), but no backend in `pg_stat_activity` holds them any more. The
//! horizon (`log_horizon()`, POSITIONS AND THE HORIZON in `migrations/0001_initial.sql`) takes
//! each holder of the append lock's id from the lock table, whoever holds it, so a prepared
//! append counts as one in flight; before, it moved past the prepared append, a reader went on
//! from the later events above it, and the prepared event, committed afterwards at the lower
//! position, was skipped for good.
//!
//! Runs on the second cluster, which `.ci/run` sets up with `max_prepared_transactions` above
//! zero (PostgreSQL's default is zero: no prepared transactions at all).
#![cfg(feature = "postgres")]

#[path = "support/postgres.rs"]
mod postgres_support;
#[path = "support/second_cluster.rs"]
mod second_cluster;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use eventcore::{
    GlobalPosition, RecordedEvent,
    backend::{
        AppendRequest, Backend, LogFilter,
        postgres::{Postgres, PostgresConfig},
    },
    subscription::Subscription,
};
use postgres_support::{begin_append, event, fresh_schema_name, id, v};
use second_cluster::{drop_schema, second_database_url, second_raw_connection};
use sqlx::PgConnection;

/// How long a test waits for what must happen before failing.
const PATIENCE: Duration = Duration::from_secs(30);

/// A migrated store in a fresh schema of the second cluster.
async fn fresh_store() -> Postgres {
    let config = PostgresConfig::builder(second_database_url())
        .schema(fresh_schema_name())
        .max_connections(8)
        .build()
        .unwrap();
    let store = Postgres::connect(config).await.unwrap_or_else(|e| {
        panic!("the second PostgreSQL cluster is unreachable at {}: {e}", second_database_url())
    });
    store.migrate().await.unwrap();
    store
}

/// Fails, saying how to fix it, when the second cluster does not allow prepared transactions.
async fn require_prepared_transactions(conn: &mut PgConnection) {
    let allowed: String =
        sqlx::query_scalar("SHOW max_prepared_transactions").fetch_one(&mut *conn).await.unwrap();
    assert_ne!(
        allowed,
        "0",
        "\n\nthe second PostgreSQL cluster ({}) has max_prepared_transactions = 0, so it cannot \
         prepare a transaction. Run `.ci/run`, which sets it, or set \
         `max_prepared_transactions = 8` in that cluster's postgresql.conf and restart it.\n\n",
        second_database_url()
    );
}

/// Appends one event to the new stream `stream`; returns its position.
async fn append_one(store: &Postgres, stream: &str) -> i64 {
    let s = id(stream);
    let request = AppendRequest::new().expect(s.clone(), v(0)).write(s, vec![event(1)]);
    let committed = store.append(request).await.unwrap();
    committed.positions.unwrap().0.get() as i64
}

/// The positions `read_log` returns from the start of the log, one page.
async fn sql_page(store: &Postgres) -> Vec<i64> {
    let sql = format!("SELECT position FROM \"{}\".read_log(0, 100)", store.schema());
    sqlx::query_scalar(&sql).fetch_all(store.pool()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_append_holds_readers_back_until_it_commits() {
    let store = fresh_store().await;
    let mut session = second_raw_connection().await;
    require_prepared_transactions(&mut session).await;

    // An append, prepared: its session lets go of it, its id and the append lock stay.
    let low = begin_append(&mut session, &store, "prepared-1").await;
    let gid = format!("{}_prepared", store.schema());
    run(&mut session, format!("PREPARE TRANSACTION '{gid}'")).await;
    let mut cleanup = second_raw_connection().await;

    // A later append commits above it.
    let high = append_one(&store, "later-1").await;
    assert!(low < high, "the prepared append has the lower position");

    // Readers stop below the prepared append: the SQL reader returns nothing yet, and a page
    // of the log holds nothing and vouches for nothing at or above it.
    let early = sql_page(&store).await;
    let page = store.read_log(GlobalPosition::START, &LogFilter::all(), 100).await.unwrap();
    let delivered_early: Vec<i64> =
        page.entries.iter().map(|e| e.as_ref().unwrap().position.get() as i64).collect();

    run(&mut cleanup, format!("COMMIT PREPARED '{gid}'")).await;
    assert!(early.is_empty(), "read_log went past a prepared append: {early:?}");
    assert!(delivered_early.is_empty(), "read past a prepared append: {delivered_early:?}");
    assert!(
        (page.checked_to.get() as i64) < low,
        "a page vouched for positions up to {:?}, past the prepared append at {low}",
        page.checked_to
    );

    // Once it commits, both arrive, in position order.
    assert_eq!(sql_page(&store).await, vec![low, high]);
    let mut sub = Subscription::new(store.clone().with_read_all_wait(Duration::ZERO))
        .poll_interval(Duration::from_millis(20))
        .unwrap();
    let mut got: Vec<RecordedEvent> = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        while got.len() < 2 {
            let batch = sub.next_batch().await.unwrap();
            got.extend(batch.events.into_iter().map(Result::unwrap));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {} of 2 events arrived", got.len()));
    let positions: Vec<i64> = got.iter().map(|e| e.position.get() as i64).collect();
    assert_eq!(positions, vec![low, high]);

    drop_schema(&second_database_url(), store.schema().as_str()).await;
}

/// A prepared transaction that never appended (other two-phase work in the same database)
/// holds no reader back, however long it stays prepared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_transaction_that_did_not_append_holds_no_reader_back() {
    let store = fresh_store().await;
    let mut session = second_raw_connection().await;
    require_prepared_transactions(&mut session).await;
    sqlx::raw_sql(&format!(
        "BEGIN; CREATE TABLE \"{0}\".other_work (n int); INSERT INTO \"{0}\".other_work VALUES (1)",
        store.schema()
    ))
    .execute(&mut session)
    .await
    .unwrap();
    let gid = format!("{}_unrelated", store.schema());
    run(&mut session, format!("PREPARE TRANSACTION '{gid}'")).await;
    let mut cleanup = second_raw_connection().await;

    let position = append_one(&store, "later-1").await;
    let page = sql_page(&store).await;
    let log = store.read_log(GlobalPosition::START, &LogFilter::all(), 100).await.unwrap();

    run(&mut cleanup, format!("ROLLBACK PREPARED '{gid}'")).await;
    assert_eq!(page, vec![position], "read_log waited for a transaction that never appended");
    assert_eq!(log.entries.len(), 1, "read_log waited for a transaction that never appended");
    drop_schema(&second_database_url(), store.schema().as_str()).await;
}

/// Under load: three sessions each prepare 40 appends one after another and commit (or, one in
/// five, roll back) each once more plain appends committed above it, while 300 plain appends
/// commit around them and a reader pages `read_log` throughout. The reader sees every stored
/// event, once, in position order. (With the horizon before prepared transactions were
/// counted, it skipped about one event in seven.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prepared_appends_under_load_are_never_skipped() {
    let store = fresh_store().await;
    require_prepared_transactions(&mut second_raw_connection().await).await;
    let schema = store.schema().as_str().to_owned();
    let done = Arc::new(AtomicBool::new(false));

    // How many plain appends have committed; closed when the writer is done.
    let (appended, plain) = tokio::sync::watch::channel(0u64);
    let preparers: Vec<_> = (0..3u64)
        .map(|w| tokio::spawn(prepare_and_settle(store.clone(), schema.clone(), w, plain.clone())))
        .collect();
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..300u64 {
                append_one(&store, &format!("plain-{i}")).await;
                appended.send_replace(i + 1);
            }
        })
    };
    let reader = {
        let (store, done) = (store.clone(), Arc::clone(&done));
        tokio::spawn(async move {
            let mut conn = second_raw_connection().await;
            let sql = format!("SELECT position FROM \"{}\".read_log($1, 100)", store.schema());
            let (mut seen, mut after) = (Vec::<i64>::new(), 0i64);
            loop {
                // Read after the flag: a page read once everything settled holds the rest.
                let settled = done.load(Ordering::SeqCst);
                let page: Vec<i64> =
                    sqlx::query_scalar(&sql).bind(after).fetch_all(&mut conn).await.unwrap();
                after = page.last().copied().unwrap_or(after);
                seen.extend(&page);
                if settled && page.is_empty() {
                    return seen;
                }
                tokio::task::yield_now().await;
            }
        })
    };
    tokio::time::timeout(PATIENCE * 4, async {
        for p in preparers {
            p.await.unwrap();
        }
        writer.await.unwrap();
    })
    .await
    .expect("the writers finished");
    done.store(true, Ordering::SeqCst);
    let seen = tokio::time::timeout(PATIENCE, reader).await.expect("the reader finished").unwrap();

    let stored: Vec<i64> =
        sqlx::query_scalar(&format!("SELECT position FROM \"{schema}\".events ORDER BY position"))
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "read out of order, or twice");
    let read: BTreeSet<i64> = seen.iter().copied().collect();
    let skipped: Vec<i64> = stored.iter().copied().filter(|p| !read.contains(p)).collect();
    assert!(
        skipped.is_empty(),
        "skipped {} of {} events: {skipped:?}",
        skipped.len(),
        stored.len()
    );
    assert_eq!(stored.len(), 300 + 3 * 32, "every plain append and every committed prepared one");
    drop_schema(&second_database_url(), &schema).await;
}

/// Prepares 40 appends on one session, one after another; each stays prepared until one to
/// three more plain appends have committed above it (or the plain writer is done), then is
/// committed (one in five rolled back) from another connection.
async fn prepare_and_settle(
    store: Postgres,
    schema: String,
    w: u64,
    mut plain: tokio::sync::watch::Receiver<u64>,
) {
    let mut session = second_raw_connection().await;
    let mut other = second_raw_connection().await;
    for i in 0..40u64 {
        begin_append(&mut session, &store, &format!("prep-{w}-{i}")).await;
        let gid = format!("{schema}_{w}_{i}");
        run(&mut session, format!("PREPARE TRANSACTION '{gid}'")).await;
        let target = *plain.borrow_and_update() + 1 + (i + w) % 3;
        // An error only says the writer is done: nothing more will commit above it.
        let _ = plain.wait_for(|n| *n >= target).await;
        let verb = if i % 5 == 0 { "ROLLBACK" } else { "COMMIT" };
        run(&mut other, format!("{verb} PREPARED '{gid}'")).await;
    }
}

/// Runs one statement (as a prepared statement: `raw_sql`'s future cannot be spawned).
async fn run(conn: &mut PgConnection, sql: String) {
    sqlx::query(&sql).execute(conn).await.unwrap();
}
