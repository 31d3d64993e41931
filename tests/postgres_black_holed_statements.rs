//! Statements other than appends whose messages the network loses, through a proxy on
//! 127.0.0.1 (see `support/commit_cutter.rs`): a read, a key lookup, a snapshot load, a page
//! of the log black-holed on a connection that stays open (the statement never reaches the
//! server, the socket stays open, nothing answers), and abandoned by a timeout. None of them
//! may keep its pool connection for good.
#![cfg(feature = "postgres")]

#[path = "support/commit_cutter.rs"]
mod commit_cutter;
#[path = "support/postgres.rs"]
mod postgres_support;

#[path = "../examples/banking/domain.rs"]
mod banking;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use banking::{AccountId, OpenAccount};
use commit_cutter::CommitCutter;
use eventcore::GlobalPosition;
use eventcore::backend::postgres::{Postgres, PostgresConfig, PostgresConfigBuilder};
use eventcore::backend::{LogFilter, SnapshotKey};
use eventcore::prelude::*;
use postgres_support::{database_url, fresh_postgres};

/// How long any wait in these tests may last before it counts as a hang.
const LIMIT: Duration = Duration::from_secs(30);

/// How a case's store bounds the wait for an abandoned statement's answer.
type Bound = fn(PostgresConfigBuilder) -> PostgresConfigBuilder;

/// A `statement_timeout` of 300 ms: answers are waited for 1.6 s at most.
fn statement_timeout(config: PostgresConfigBuilder) -> PostgresConfigBuilder {
    config.statement_timeout(Duration::from_millis(300))
}

fn open(name: &str) -> OpenAccount {
    OpenAccount { account: AccountId::try_new(name).unwrap(), owner: name.into() }
}

/// What a case black-holes: the statement that holds `needle`, sent by `run`.
type Run = fn(Postgres, u32) -> Pin<Box<dyn Future<Output = ()> + Send>>;

/// A command's read of its streams, abandoned by the executor's timeout.
fn read_under_an_executor_timeout(
    store: Postgres,
    n: u32,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        let hasty = Executor::new(store)
            .with_retry(RetryPolicy::none())
            .with_timeout(Duration::from_millis(500));
        match hasty.execute(&open(&format!("black-holed-{n}"))).await {
            Err(ExecuteError::Timeout(_)) => {}
            other => panic!("read {n}: expected the executor's timeout, got {other:?}"),
        }
    })
}

/// Runs `call` under a caller's timeout of 500 ms, which must strike.
async fn abandoned<T: std::fmt::Debug>(what: &str, call: impl Future<Output = T>) {
    if let Ok(answer) = tokio::time::timeout(Duration::from_millis(500), call).await {
        panic!("{what}: the black-holed statement answered: {answer:?}");
    }
}

fn key_lookup(store: Postgres, n: u32) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        let key = IdempotencyKey::try_new(format!("key-{n}")).unwrap();
        abandoned("key lookup", store.find_committed(&key)).await;
    })
}

fn snapshot_load(store: Postgres, n: u32) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        let key = SnapshotKey::new(format!("snapshot-{n}"));
        abandoned("snapshot load", store.load_snapshot(&key)).await;
    })
}

fn log_page(store: Postgres, _: u32) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        abandoned("log page", store.read_log(GlobalPosition::START, &LogFilter::all(), 10)).await;
    })
}

/// Black-holes the statement holding `needle` twice, on each of the pool's two connections,
/// each abandoned by `run`'s timeout; then the next commands must run, within `LIMIT`, once
/// the network carries new connections again (on a pool that two such statements would
/// otherwise have emptied for good: every later command failing with `PoolTimedOut`).
async fn black_hole_twice_then_command(case: &str, needle: &str, run: Run, bound: Bound) {
    let verify = fresh_postgres().await;
    let cutter = CommitCutter::start(&database_url()).await;
    let store = cutter.store(verify.schema().as_str(), bound).await;
    black_hole_twice_on(case, needle, run, &verify, &cutter, store).await;
}

/// [`black_hole_twice_then_command`] on `store`, whose connections go through `cutter`, to
/// the schema of `verify`.
async fn black_hole_twice_on(
    case: &str,
    needle: &str,
    run: Run,
    verify: &Postgres,
    cutter: &CommitCutter,
    store: Postgres,
) {
    for n in 0..2 {
        // Each time on a connection that has not prepared the statement (pool of two).
        cutter.hold_statement(needle);
        tokio::time::timeout(LIMIT, run(store.clone(), n))
            .await
            .unwrap_or_else(|_| panic!("{case} {n}: the caller's timeout never struck"));
        tokio::time::timeout(LIMIT, cutter.held())
            .await
            .unwrap_or_else(|_| panic!("{case} {n}: no statement was held"));
    }
    let patient = Executor::new(store.clone()).with_retry(RetryPolicy::none());
    commands_run(&patient, &["after-1", "after-2", "after-3"], case, "pool").await;
    let stored = verify.read_all(GlobalPosition::START, 10).await.unwrap();
    assert_eq!(stored.len(), 3, "{case}: {stored:?}");
}

/// Opens the accounts `names` through `bank`, each within `LIMIT`: a failure says `case`, and
/// that `pool` stayed exhausted.
async fn commands_run(bank: &Executor<Postgres>, names: &[&str], case: &str, pool: &str) {
    for name in names {
        tokio::time::timeout(LIMIT, bank.execute(&open(name)))
            .await
            .unwrap_or_else(|_| panic!("{case}, {name}: the command hung"))
            .unwrap_or_else(|e| panic!("{case}, {name}: the {pool} stayed exhausted: {e}"));
    }
}

/// Reads of a command's streams (the statements `read` and `read_after` both end with
/// `ORDER BY r.ord, e.version`) abandoned by an executor's timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_abandoned_on_black_holed_connections_give_their_connections_back() {
    let read = read_under_an_executor_timeout;
    black_hole_twice_then_command("read", "ORDER BY r.ord", read, statement_timeout).await;
}

/// Idempotency key lookups (`append_result(...)`) abandoned by a caller's timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_lookups_abandoned_on_black_holed_connections_give_their_connections_back() {
    black_hole_twice_then_command(
        "key lookup",
        ".append_result($1)",
        key_lookup,
        statement_timeout,
    )
    .await;
}

/// Snapshot loads abandoned by a caller's timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_loads_abandoned_on_black_holed_connections_give_their_connections_back() {
    let load = snapshot_load;
    black_hole_twice_then_command("snapshot load", "state::text FROM", load, statement_timeout)
        .await;
}

/// Pages of the log (the unfiltered one, `read_log_all`) abandoned by a caller's timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_pages_abandoned_on_black_holed_connections_give_their_connections_back() {
    let needle = "ORDER BY e.position LIMIT $2) e ON true";
    black_hole_twice_then_command("log page", needle, log_page, statement_timeout).await;
}

/// Without a `statement_timeout`, the configured `answer_wait` bounds the wait (with the
/// default, 30 s, the next commands would time out waiting for a connection, after 5 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_statement_timeout_the_configured_answer_wait_bounds_the_wait() {
    fn answer_wait(config: PostgresConfigBuilder) -> PostgresConfigBuilder {
        config.answer_wait(Duration::from_millis(500))
    }
    let read = read_under_an_executor_timeout;
    black_hole_twice_then_command("read", "ORDER BY r.ord", read, answer_wait).await;
}

/// A store made from a pool (no `statement_timeout` known) takes its bound from
/// `with_answer_wait` (with the default, 30 s, the next commands would time out waiting for a
/// connection, after 5 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_made_from_a_pool_takes_its_bound_from_with_answer_wait() {
    let verify = fresh_postgres().await;
    let cutter = CommitCutter::start(&database_url()).await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(5))
        .connect(cutter.url())
        .await
        .unwrap();
    let store = Postgres::from_pool(pool, verify.schema().clone())
        .with_answer_wait(Duration::from_millis(500));
    let read = read_under_an_executor_timeout;
    black_hole_twice_on("read", "ORDER BY r.ord", read, &verify, &cutter, store).await;
}

/// A hold on a hot stream whose unlock, sent when its command is done, is black-holed does not
/// keep its hold connection for good: on a hold pool of one, the next command over another hot
/// stream (the server still holds the first stream for the session it never heard from) gets
/// a hold connection, and runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_unlock_gives_its_hold_connection_back() {
    let verify = fresh_postgres().await;
    let cutter = CommitCutter::start(&database_url()).await;
    let config = PostgresConfig::builder(cutter.url())
        .schema(verify.schema().as_str())
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(5))
        .statement_timeout(Duration::from_millis(300))
        .hot_streams(|id| id.as_str().starts_with("account-"))
        .hot_connections(1)
        .build()
        .unwrap();
    let store = Postgres::connect(config).await.unwrap();
    let bank = Executor::new(store.clone()).with_retry(RetryPolicy::none());
    cutter.hold_statement("pg_advisory_unlock_all");
    tokio::time::timeout(LIMIT, bank.execute(&open("held-then-lost")))
        .await
        .expect("the first command hung")
        .expect("the first command failed");
    tokio::time::timeout(LIMIT, cutter.held()).await.expect("the unlock was not held");
    commands_run(&bank, &["after-1", "after-2"], "unlock", "hold pool").await;
    let stored = verify.read_all(GlobalPosition::START, 10).await.unwrap();
    assert_eq!(stored.len(), 3, "{stored:?}");
}

/// A `NOTIFY` of the task that announces appends to other processes, black-holed, does not
/// keep its connection for good: on a pool of one, the next command gets the connection back,
/// and the notifications after it go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_notification_gives_its_connection_back() {
    let verify = fresh_postgres().await;
    let cutter = CommitCutter::start(&database_url()).await;
    let config = PostgresConfig::builder(cutter.url())
        .schema(verify.schema().as_str())
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .statement_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let store = Postgres::connect(config).await.unwrap();
    // Hears the notifications that reach the server (not the held one).
    let mut heard = sqlx::postgres::PgListener::connect(&database_url()).await.unwrap();
    heard.listen(&store.log_channel()).await.unwrap();
    let bank = Executor::new(store.clone()).with_retry(RetryPolicy::none());
    cutter.hold_statement("pg_notify");
    tokio::time::timeout(LIMIT, bank.execute(&open("announced-then-lost")))
        .await
        .expect("the first command hung")
        .expect("the first command failed");
    tokio::time::timeout(LIMIT, cutter.held()).await.expect("no notification was held");
    commands_run(&bank, &["after-1", "after-2"], "notification", "pool").await;
    tokio::time::timeout(LIMIT, heard.recv())
        .await
        .expect("no notification after the black-holed one")
        .unwrap();
    let stored = verify.read_all(GlobalPosition::START, 10).await.unwrap();
    assert_eq!(stored.len(), 3, "{stored:?}");
}
