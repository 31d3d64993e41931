//! The transaction of a projection's batch ([`ProjectionTx`]), and of a migration: a pool
//! connection with a transaction open on it, which gives its place in the pool back within the
//! store's bound however it is abandoned.
//!
//! **Abandoned while `BEGIN` is on the wire.** sqlx 0.8 (and 0.9) count a transaction only once
//! `BEGIN` has answered. A `pool.begin()` dropped while `BEGIN` is on the wire (a task aborted, a
//! timeout, a `select!` that went the other way) queues no `ROLLBACK`, and the pool hands the
//! connection, still inside the block, to the next borrower (sqlx issues 4385 and 4393). Every
//! statement of that borrower then runs in the block and is never committed: an append there
//! would answer "committed" for events no other connection ever sees. A [`ProjectionTx`] owns
//! its connection from before `BEGIN` is sent, and one dropped before it is known to be out of
//! its transaction block rolls the connection back (below), `BEGIN` answered or not.
//!
//! **Abandoned with a statement on the wire.** A `sqlx::Transaction` dropped before its commit
//! or rollback queues a `ROLLBACK` and gives its connection back to the pool, which waits for
//! the answers (its test of a released connection) without a bound. On a connection the
//! network black-holed (the socket open, nothing answering: a handler's statement lost, or the
//! store's fence or `COMMIT`) no answer ever comes, and that place in the pool is lost for
//! good. A [`ProjectionTx`] dropped before it committed or rolled back keeps its connection
//! instead on a task of its own, which rolls it back, waiting `answer_wait` at most (see
//! `running::answer_wait`), and closes it when the rollback fails or does not answer in time:
//! either way, the connection's place in the pool comes back. A transaction that commits or
//! rolls back costs nothing more: its connection goes back to the pool as it did.

use std::{borrow::Cow, fmt, time::Duration};

use futures_core::future::BoxFuture;
use sqlx::{
    Acquire, Executor, PgConnection, PgPool, Transaction, TransactionManager, pool::PoolConnection,
    postgres::PgTransactionManager,
};

/// The open transaction in which a projection's batch and its checkpoint commit, on
/// PostgreSQL: [`<Postgres as ProjectionStore>::Tx`](crate::subscription::ProjectionStore::Tx).
/// A handler writes its read model through it: `&mut **tx` is the transaction's
/// [`PgConnection`], an sqlx executor. A transaction nested in it (`tx.begin()`, through
/// [`Acquire`]) is a savepoint, as in sqlx's own `Transaction`.
///
/// It owns a connection of the store's pool. Committed (by the runner, or by
/// [`commit`](Self::commit)) or rolled back ([`rollback`](Self::rollback)), the connection goes
/// back to the pool. Dropped before that (the runner's task aborted or stopped, a handler
/// timed out or panicked, a `BEGIN` abandoned half-way), it is rolled back on a task of its
/// own, and closed if it does not answer within the store's bound (twice its
/// `statement_timeout` plus a second, or
/// [`answer_wait`](super::PostgresConfigBuilder::answer_wait)): what the handler wrote is
/// undone, and a connection the network black-holed does not keep its place in the pool for
/// good (as sqlx's own `Transaction` would).
///
/// ```no_run
/// use eventcore::backend::postgres::Postgres;
/// use eventcore::subscription::{Projection, ProjectionStore};
/// use eventcore::RecordedEvent;
///
/// struct Orders;
///
/// impl Projection<Postgres> for Orders {
///     type Error = sqlx::Error;
///
///     fn name(&self) -> &str {
///         "orders"
///     }
///
///     async fn apply(
///         &mut self,
///         tx: &mut <Postgres as ProjectionStore>::Tx, // a `ProjectionTx`
///         event: &RecordedEvent,
///     ) -> Result<(), sqlx::Error> {
///         sqlx::query("INSERT INTO shop.orders (stream) VALUES ($1) ON CONFLICT DO NOTHING")
///             .bind(event.stream_id.as_str())
///             .execute(&mut **tx) // commits with the checkpoint, or not at all
///             .await?;
///         Ok(())
///     }
/// }
/// ```
pub struct ProjectionTx {
    /// `None` only once the transaction ended (in [`commit`](Self::commit) and
    /// [`rollback`](Self::rollback), which take it by value) or in `drop`.
    conn: Option<PoolConnection<sqlx::Postgres>>,
    /// How long a rollback of the abandoned transaction may wait for its answer.
    wait: Duration,
}

/// Why the connection is there: see the field `conn` of [`ProjectionTx`].
const OPEN: &str = "a ProjectionTx holds its connection until it ends";

impl ProjectionTx {
    /// Begins a transaction on a connection of `pool` with `statement` (which must begin it,
    /// and may go on with statements that take no parameters), or `BEGIN`; abandoned, the
    /// transaction is rolled back waiting `wait` at most (see the type's docs).
    pub(super) async fn begin(
        pool: &PgPool,
        statement: Option<String>,
        wait: Duration,
    ) -> Result<Self, sqlx::Error> {
        let mut tx = Self { conn: Some(pool.acquire().await?), wait };
        // Dropped from here on (this future dropped, or `BEGIN` failing), `tx` rolls back.
        PgTransactionManager::begin(&mut tx, statement.map(Cow::Owned)).await?;
        Ok(tx)
    }

    /// Commits the transaction, and gives its connection back to the pool.
    ///
    /// A projection's runner commits its transactions itself (with the checkpoint, see
    /// [`ProjectionStore::commit`](crate::subscription::ProjectionStore::commit)): this is for a
    /// transaction begun by hand with
    /// [`ProjectionStore::begin`](crate::subscription::ProjectionStore::begin).
    ///
    /// ```no_run
    /// use eventcore::backend::postgres::Postgres;
    /// use eventcore::subscription::ProjectionStore;
    ///
    /// # async fn demo(store: Postgres) -> Result<(), Box<dyn std::error::Error>> {
    /// let owner = uuid::Uuid::now_v7();
    /// let lease = store.claim("orders", owner, std::time::Duration::from_secs(10)).await?;
    /// if let Some(lease) = lease {
    ///     let mut tx = store.begin(&lease).await?;
    ///     sqlx::query("DELETE FROM shop.orders").execute(&mut *tx).await?;
    ///     tx.commit().await?;
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// When the server refuses the commit, or the connection fails before its answer. The
    /// transaction is then rolled back (or its connection closed) as if it had been dropped;
    /// whether a commit whose answer was lost committed, nobody can tell. Also, without
    /// sending anything, when the transaction is no longer whole: a transaction nested in it
    /// (a savepoint, see [`Acquire`]) was left open, or sqlx ended it (sqlx rolls the whole
    /// transaction back when a savepoint in it fails to begin, and what was written after that
    /// was committed statement by statement); every level of it is then rolled back.
    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        // Refused (and so rolled back, every level of it) unless the transaction is whole.
        self.whole()?;
        PgTransactionManager::commit(&mut self).await?;
        // Ended: back to the pool as usual.
        self.conn = None;
        Ok(())
    }

    /// Rolls the transaction back (with any transaction nested in it and left open), and gives
    /// its connection back to the pool. Dropping it does the same, on a task of its own; this
    /// waits for the rollback and says how it went.
    ///
    /// ```no_run
    /// use eventcore::backend::postgres::Postgres;
    /// use eventcore::subscription::ProjectionStore;
    ///
    /// # async fn demo(store: Postgres) -> Result<(), Box<dyn std::error::Error>> {
    /// let owner = uuid::Uuid::now_v7();
    /// let lease = store.claim("orders", owner, std::time::Duration::from_secs(10)).await?;
    /// if let Some(lease) = lease {
    ///     let mut tx = store.begin(&lease).await?;
    ///     sqlx::query("DELETE FROM shop.orders").execute(&mut *tx).await?;
    ///     tx.rollback().await?; // nothing deleted
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// When the server does not answer the rollback, or refuses it. The connection is then
    /// rolled back again or closed, as if the transaction had been dropped.
    pub async fn rollback(mut self) -> Result<(), sqlx::Error> {
        // Every level: a savepoint left open (a nested transaction forgotten) must not send the
        // connection back to the pool inside the transaction block.
        roll_back(&mut self).await?;
        self.conn = None;
        Ok(())
    }
}

impl ProjectionTx {
    /// `Ok` when sqlx counts this transaction, and this one alone, open on the connection: not
    /// when a transaction nested in it is still open (committing would only release its
    /// savepoint), nor when sqlx already ended it (it rolls back the transaction a savepoint
    /// that failed to begin was nested in), where a commit would do nothing and the
    /// statements since were committed one by one.
    pub(super) fn whole(&self) -> Result<(), sqlx::Error> {
        match PgTransactionManager::get_transaction_depth(self) {
            1 => Ok(()),
            0 => Err(sqlx::Error::Protocol(
                "the projection's transaction was already ended (by sqlx, when a savepoint in \
                 it failed to begin): nothing of it can be committed"
                    .to_owned(),
            )),
            depth => Err(sqlx::Error::Protocol(format!(
                "{} transactions nested in the projection's are still open (savepoints left \
                 open): it cannot be committed whole",
                depth - 1
            ))),
        }
    }
}

/// Ends whatever transaction `conn` may be in: the one sqlx counts (with the savepoints of
/// transactions nested in it), and one whose `BEGIN` was abandoned before its answer, which
/// sqlx does not count.
async fn roll_back(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    if PgTransactionManager::get_transaction_depth(conn) == 0 {
        // A harmless warning when `BEGIN` never got there, or the transaction already ended.
        conn.execute("ROLLBACK").await?;
    }
    while PgTransactionManager::get_transaction_depth(conn) > 0 {
        PgTransactionManager::rollback(conn).await?;
    }
    Ok(())
}

impl Drop for ProjectionTx {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime to wait on (sqlx would panic returning the connection): shut it down
            // here, which ends the transaction on the server, the best that can be done
            // without one.
            drop(conn.detach());
            return;
        };
        let wait = self.wait;
        runtime.spawn(async move {
            // The statements still on the wire answer first, then the rollback: back in time,
            // the connection is out of any transaction, and goes back to the pool.
            match tokio::time::timeout(wait, roll_back(&mut conn)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => conn.close_on_drop(),
            }
        });
    }
}

impl std::ops::Deref for ProjectionTx {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        self.conn.as_deref().expect(OPEN)
    }
}

impl std::ops::DerefMut for ProjectionTx {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.conn.as_deref_mut().expect(OPEN)
    }
}

/// As sqlx's `&mut Transaction`: `acquire` is the transaction's connection, `begin` a savepoint
/// in it.
impl<'t> Acquire<'t> for &'t mut ProjectionTx {
    type Database = sqlx::Postgres;
    type Connection = &'t mut PgConnection;

    fn acquire(self) -> BoxFuture<'t, Result<Self::Connection, sqlx::Error>> {
        Box::pin(futures_util::future::ok(&mut **self))
    }

    fn begin(self) -> BoxFuture<'t, Result<Transaction<'t, sqlx::Postgres>, sqlx::Error>> {
        Transaction::begin(&mut **self, None)
    }
}

impl AsRef<PgConnection> for ProjectionTx {
    fn as_ref(&self) -> &PgConnection {
        self
    }
}

impl AsMut<PgConnection> for ProjectionTx {
    fn as_mut(&mut self) -> &mut PgConnection {
        self
    }
}

impl fmt::Debug for ProjectionTx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProjectionTx").field("conn", &self.conn).finish_non_exhaustive()
    }
}
