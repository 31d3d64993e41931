//! Projection transactions abandoned before they committed or rolled back: a runner's task
//! aborted, or stopped, while a statement of its transaction is on a connection the network
//! black-holed (through a proxy on 127.0.0.1, see `support/commit_cutter.rs`: the statement
//! never reaches the server, the socket stays open, nothing answers). None of them may keep its
//! pool connection for good; and one dropped with nothing in flight, or with a statement that
//! does answer, is rolled back and its connection reused.
#![cfg(feature = "postgres")]

#[path = "support/commit_cutter.rs"]
mod commit_cutter;
#[path = "support/postgres.rs"]
mod postgres_support;

#[path = "../examples/banking/domain.rs"]
mod banking;

use std::time::Duration;

use banking::{AccountId, OpenAccount};
use commit_cutter::CommitCutter;
use eventcore::backend::AppendRequest;
use eventcore::backend::postgres::{Postgres, PostgresConfig, PostgresConfigBuilder};
use eventcore::prelude::*;
use eventcore::subscription::{Projection, ProjectionRunner, ProjectionStore};
use eventcore::{GlobalPosition, RecordedEvent};
use postgres_support::{database_url, event, fresh_postgres, id, v};

/// How long any wait in these tests may last before it counts as a hang.
const LIMIT: Duration = Duration::from_secs(30);

/// What only the handler's statement holds, which the proxy holds back.
const SEEN: &str = "rm_black_holed_seen VALUES ($1, $2)";

/// A fresh schema with the read model's table and one event in the log.
async fn schema_with_an_event() -> Postgres {
    let verify = fresh_postgres().await;
    let q = verify.schema();
    sqlx::raw_sql(&format!(
        "CREATE TABLE \"{q}\".rm_black_holed_seen (position bigint NOT NULL, projection text)"
    ))
    .execute(verify.pool())
    .await
    .unwrap();
    let s = id("account-1");
    verify
        .append(AppendRequest::new().expect(s.clone(), v(0)).write(s, vec![event(1)]))
        .await
        .unwrap();
    verify
}

/// A store on `verify`'s schema whose connections go through `cutter` (see
/// [`CommitCutter::store`]), with a `statement_timeout` of 300 ms (answers are waited for
/// 1.6 s at most).
async fn through(cutter: &CommitCutter, verify: &Postgres) -> Postgres {
    let timeout =
        |config: PostgresConfigBuilder| config.statement_timeout(Duration::from_millis(300));
    cutter.store(verify.schema().as_str(), timeout).await
}

/// Writes a row per event through the runner's transaction.
struct Seen {
    schema: String,
    name: String,
}

impl Projection<Postgres> for Seen {
    type Error = sqlx::Error;

    fn name(&self) -> &str {
        &self.name
    }

    async fn apply(
        &mut self,
        tx: &mut <Postgres as ProjectionStore>::Tx,
        e: &RecordedEvent,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(&format!("INSERT INTO \"{}\".{SEEN}", self.schema))
            .bind(i64::try_from(e.position.get()).unwrap())
            .bind(&self.name)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}

/// How a case abandons its runner once the proxy held its statement.
#[derive(Clone, Copy, Debug)]
enum Abandon {
    /// Its task aborted.
    Abort,
    /// The stop of its `run_until` fired.
    Stop,
}

/// Runs a projection on `store` (a new one each time, so that it claims its lease at once)
/// until the proxy holds what `hold` asked it to, then abandons the runner as `how` says;
/// twice, on a pool of two; then ordinary commands on `store` must run, within `LIMIT`, rather
/// than fail with `PoolTimedOut` (two such transactions would otherwise have emptied the
/// pool for good). Nothing the handlers wrote is committed.
async fn abandon_twice_then_command(case: &str, hold: fn(&CommitCutter), how: Abandon) {
    let verify = schema_with_an_event().await;
    let cutter = CommitCutter::start(&database_url()).await;
    let store = through(&cutter, &verify).await;
    for n in 0..2 {
        // Each time on a connection that has not prepared the statement (pool of two).
        hold(&cutter);
        let seen = Seen { schema: verify.schema().to_string(), name: format!("seen-{n}") };
        let runner = ProjectionRunner::new(store.clone(), seen);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = match how {
            Abandon::Abort => tokio::spawn(async move {
                let _ = stop;
                runner.run().await.map(|_| ())
            }),
            Abandon::Stop => tokio::spawn(runner.run_until(async move {
                let _ = stopped.await;
            })),
        };
        tokio::time::timeout(LIMIT, cutter.held())
            .await
            .unwrap_or_else(|_| panic!("{case} {n}: nothing was held"));
        match how {
            Abandon::Abort => {
                task.abort();
                let ended = tokio::time::timeout(LIMIT, task).await;
                assert!(ended.expect("the aborted runner hung").is_err_and(|e| e.is_cancelled()));
            }
            Abandon::Stop => {
                let _ = stop.send(());
                // The stop gives the lease up, on the pool's other connection.
                let ended = tokio::time::timeout(LIMIT, task).await;
                ended.expect("the stopped runner hung").unwrap().unwrap();
            }
        }
    }
    let bank = Executor::new(store.clone()).with_retry(RetryPolicy::none());
    for name in ["after-1", "after-2", "after-3"] {
        let account = AccountId::try_new(name).unwrap();
        tokio::time::timeout(LIMIT, bank.execute(&OpenAccount { account, owner: name.into() }))
            .await
            .unwrap_or_else(|_| panic!("{case}, {name}: the command hung"))
            .unwrap_or_else(|e| panic!("{case}, {name}: the pool stayed exhausted: {e}"));
    }
    let stored = verify.read_all(GlobalPosition::START, 10).await.unwrap();
    assert_eq!(stored.len(), 4, "{case}: {stored:?}");
    assert_eq!(seen_rows(&verify).await, 0, "{case}: an abandoned transaction committed");
}

/// The rows the handlers committed.
async fn seen_rows(verify: &Postgres) -> i64 {
    let q = verify.schema();
    sqlx::query_scalar(&format!("SELECT count(*) FROM \"{q}\".rm_black_holed_seen"))
        .fetch_one(verify.pool())
        .await
        .unwrap()
}

/// Holds the handler's statement.
fn the_handlers_statement(cutter: &CommitCutter) {
    cutter.hold_statement(SEEN);
}

/// Holds the runner's `COMMIT`.
fn the_commit(cutter: &CommitCutter) {
    cutter.hold();
}

/// A handler's statement black-holed, its runner's task aborted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_runners_whose_handlers_statement_is_black_holed_give_their_connections_back() {
    abandon_twice_then_command("handler, aborted", the_handlers_statement, Abandon::Abort).await;
}

/// A handler's statement black-holed, its runner stopped by `run_until`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_runners_whose_handlers_statement_is_black_holed_give_their_connections_back() {
    abandon_twice_then_command("handler, stopped", the_handlers_statement, Abandon::Stop).await;
}

/// The store's own `COMMIT` of the batch black-holed, its runner's task aborted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_runners_whose_commit_is_black_holed_give_their_connections_back() {
    abandon_twice_then_command("commit, aborted", the_commit, Abandon::Abort).await;
}

/// A store on `verify`'s schema with a pool of one connection (straight to the server): the
/// connection of a dropped transaction is the next borrower's.
async fn single(verify: &Postgres) -> Postgres {
    let config = PostgresConfig::builder(database_url())
        .schema(verify.schema().as_str())
        .max_connections(1)
        .acquire_timeout(LIMIT)
        .build()
        .unwrap();
    Postgres::connect(config).await.unwrap()
}

/// Begins a projection's transaction on `store`, writes a row through it, and answers it with
/// its connection's backend pid.
async fn a_transaction_that_wrote(store: &Postgres) -> (<Postgres as ProjectionStore>::Tx, i32) {
    let owner = uuid::Uuid::now_v7();
    let lease = store.claim("dropped", owner, Duration::from_secs(10)).await.unwrap().unwrap();
    let mut tx = store.begin(&lease).await.unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut *tx).await.unwrap();
    let q = store.schema();
    sqlx::query(&format!("INSERT INTO \"{q}\".rm_black_holed_seen VALUES (1, 'dropped')"))
        .execute(&mut *tx)
        .await
        .unwrap();
    (tx, pid)
}

/// After a transaction of `store` (a pool of one) on the connection `pid` was dropped: the
/// next borrower gets that same connection (rolled back, not closed), outside any transaction
/// block (what it writes, others see), and what the dropped transaction wrote is gone.
async fn rolled_back_and_reused(case: &str, verify: &Postgres, store: &Postgres, pid: i32) {
    let mut conn = tokio::time::timeout(LIMIT, store.pool().acquire())
        .await
        .unwrap_or_else(|_| panic!("{case}: the connection never came back"))
        .unwrap();
    let again: i32 =
        sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut *conn).await.unwrap();
    assert_eq!(again, pid, "{case}: the dropped transaction's connection was not reused");
    assert_eq!(seen_rows(verify).await, 0, "{case}: the dropped transaction committed");
    let q = verify.schema();
    sqlx::query(&format!("INSERT INTO \"{q}\".rm_black_holed_seen VALUES (2, 'after')"))
        .execute(&mut *conn)
        .await
        .unwrap();
    assert_eq!(
        seen_rows(verify).await,
        1,
        "{case}: a write on the reused connection is not seen: it is still in a transaction block"
    );
}

/// A projection's transaction dropped with nothing in flight is rolled back, and its
/// connection goes back to the pool, reused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_dropped_idle_is_rolled_back_and_its_connection_reused() {
    let verify = schema_with_an_event().await;
    let store = single(&verify).await;
    let (tx, pid) = a_transaction_that_wrote(&store).await;
    drop(tx);
    rolled_back_and_reused("idle", &verify, &store, pid).await;
}

/// A projection's transaction dropped while a statement runs that does answer (a caller's
/// timeout struck first) is rolled back once it answered, and its connection reused, not
/// closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_dropped_mid_statement_is_rolled_back_once_it_answers() {
    let verify = schema_with_an_event().await;
    let store = single(&verify).await;
    let (mut tx, pid) = a_transaction_that_wrote(&store).await;
    let slow = sqlx::query("SELECT pg_sleep(0.5)").execute(&mut *tx);
    assert!(
        tokio::time::timeout(Duration::from_millis(50), slow).await.is_err(),
        "the statement answered before the timeout"
    );
    drop(tx);
    rolled_back_and_reused("mid-statement", &verify, &store, pid).await;
}

/// A transaction nested in a projection's (`tx.begin()`) is a savepoint: rolled back, it undoes
/// only its own writes, and the projection's transaction commits the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_nested_in_a_projections_is_a_savepoint() {
    let verify = schema_with_an_event().await;
    let store = single(&verify).await;
    let (mut tx, _) = a_transaction_that_wrote(&store).await;
    let mut nested = sqlx::Acquire::begin(&mut tx).await.unwrap();
    let q = verify.schema();
    sqlx::query(&format!("INSERT INTO \"{q}\".rm_black_holed_seen VALUES (2, 'nested')"))
        .execute(&mut *nested)
        .await
        .unwrap();
    nested.rollback().await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(seen_rows(&verify).await, 1, "the savepoint's rollback undid the wrong rows");
}

/// Ends a projection's transaction (`commit`, or else `rollback`) in which a nested one was
/// left open for good (`mem::forget`, a leaked box): every level must end all the same, and
/// the connection go back to the pool outside any transaction block (what the next borrower
/// writes, others see). The commit is refused (the transaction cannot be committed whole) and
/// rolls every level back.
async fn end_with_a_savepoint_left_open(commit: bool) {
    let case = if commit { "committed" } else { "rolled back" };
    let verify = schema_with_an_event().await;
    let store = single(&verify).await;
    let (mut tx, pid) = a_transaction_that_wrote(&store).await;
    let nested = sqlx::Acquire::begin(&mut tx).await.unwrap();
    std::mem::forget(nested);
    if commit {
        let refused = tx.commit().await;
        assert!(refused.is_err(), "{case}: a commit that left a savepoint open answered Ok");
    } else {
        tx.rollback().await.unwrap();
    }
    rolled_back_and_reused(case, &verify, &store, pid).await;
}

/// A projection's transaction committed with a savepoint left open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_with_a_savepoint_left_open_is_refused_and_rolled_back() {
    end_with_a_savepoint_left_open(true).await;
}

/// A projection's transaction rolled back with a savepoint left open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_with_a_savepoint_left_open_ends_every_level() {
    end_with_a_savepoint_left_open(false).await;
}

/// sqlx ends the whole projection's transaction when a savepoint in it fails to begin (its
/// guard for a `BEGIN` rolls back a level too far), and counts it as ended; what the handler
/// writes next is committed on its own. The store must then refuse the commit (which would
/// otherwise move the checkpoint past events whose writes were rolled back) rather than
/// answer that it committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_after_sqlx_ended_the_transaction_under_a_failed_savepoint_is_refused() {
    let verify = schema_with_an_event().await;
    let store = single(&verify).await;
    let owner = uuid::Uuid::now_v7();
    let lease = store.claim("savepoint", owner, Duration::from_secs(10)).await.unwrap().unwrap();
    let mut tx = store.begin(&lease).await.unwrap();
    let q = verify.schema();
    let row = format!("INSERT INTO \"{q}\".rm_black_holed_seen VALUES (1, 'savepoint')");
    sqlx::query(&row).execute(&mut *tx).await.unwrap();
    // A handler that goes on after a failed statement (its error logged, say)...
    assert!(sqlx::query("SELECT 1 / 0").execute(&mut *tx).await.is_err());
    // ...and after a savepoint that could not begin.
    assert!(sqlx::Acquire::begin(&mut tx).await.is_err());
    let at = GlobalPosition::new(1);
    let committed = store.commit(tx, &lease, at, None, None).await;
    assert!(committed.is_err(), "the commit answered {committed:?}");
    assert_eq!(store.checkpoint("savepoint").await.unwrap(), Some(GlobalPosition::START));
}
