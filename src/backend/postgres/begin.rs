//! Beginning a transaction on the pool so that abandoning it cannot leave a transaction block
//! open on a pooled connection.
//!
//! sqlx 0.8 (and 0.9) count a transaction only once `BEGIN` has answered. A `pool.begin()`
//! dropped while `BEGIN` is on the wire (a task aborted, a timeout, a `select!` that went the
//! other way) queues no `ROLLBACK`, and the pool hands the connection, still inside the block,
//! to the next borrower (sqlx issues 4385 and 4393). Every statement of that borrower then runs
//! in the block and is never committed: an append there would answer "committed" for events no
//! other connection ever sees. So the store never lets a `begin` be dropped half-way: it runs
//! on a task of its own, which finishes it; a transaction nobody waits for any more is dropped
//! there, complete, and so rolled back as usual.

use sqlx::{PgPool, Postgres, Transaction};

/// `pool.begin()`, carried to its end even when the caller stops waiting for it.
pub(super) async fn begin(pool: &PgPool) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    begin_with(pool, "BEGIN".to_owned()).await
}

/// [`begin`], with `statement` in place of `BEGIN` (it must begin the transaction, and may go on
/// with statements that take no parameters): `pool.begin_with(statement)`, carried to its end
/// even when the caller stops waiting for it.
pub(super) async fn begin_with(
    pool: &PgPool,
    statement: String,
) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        // sqlx's own I/O needs a tokio runtime: without one, begin fails by itself.
        return pool.begin_with(statement).await;
    };
    let pool = pool.clone();
    runtime
        .spawn(async move { pool.begin_with(statement).await })
        .await
        // The task panicked, or the runtime shut down under it.
        .unwrap_or(Err(sqlx::Error::WorkerCrashed))
}
