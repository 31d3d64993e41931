//! Statements abandoned while they run. Every statement the store sends on a connection of its
//! pool (appends, reads, key and conflict lookups, snapshots, leases...) goes through
//! [`Running`], directly or as the executor [`OnPool`]; those of its transactions run on a
//! [`ProjectionTx`](super::ProjectionTx), which bounds them the same way.
//!
//! A statement's future dropped before the server answered (a command's timeout, an aborted
//! task, a `select!` that went the other way) leaves the statement on the wire. sqlx 0.8 would
//! take its connection back as usual and wait for the answer (its test of a released
//! connection) without a bound; on a connection the network black-holed (the statement or its
//! answer lost, the socket still open) no answer ever comes, so that place in the pool would
//! be gone for good, and once every place was, every later command would time out waiting for
//! a connection. So an abandoned statement's connection is kept on a task of its own until the
//! answer has come, at most `answer_wait` (see [`answer_wait`]), and past that it is closed,
//! which gives its place back. A statement that answered costs nothing more: its connection
//! goes back to the pool as it did.

use std::time::Duration;

use futures_core::{future::BoxFuture, stream::BoxStream};
use futures_util::{StreamExt, TryStreamExt};
use sqlx::{
    Connection, Either, Execute, Executor, PgConnection, PgPool,
    pool::PoolConnection,
    postgres::{PgQueryResult, PgRow, PgStatement, PgTypeInfo},
};

use super::Postgres;

/// What the server's answer to a statement may take beyond its `statement_timeout`s: the way
/// back, and a busy server.
const ANSWER_GRACE: Duration = Duration::from_secs(1);

/// How long a statement nobody can cancel (one abandoned mid-statement, see [`Running`], or a
/// batch of appends, see `batch::lost_if_silent`) waits for its answer on connections whose
/// `statement_timeout` is `statement_timeout`; `unknown` when that is not known (a store made
/// by `from_pool`, or one left to the server's setting: see
/// [`PostgresConfigBuilder::answer_wait`](super::PostgresConfigBuilder::answer_wait)). The server
/// ends both halves of what a statement sends (preparing it, running it) within theirs, so a
/// connection silent for longer than both is lost.
pub(super) fn answer_wait(statement_timeout: Option<Duration>, unknown: Duration) -> Duration {
    statement_timeout.map_or(unknown, |t| t.saturating_mul(2).saturating_add(ANSWER_GRACE))
}

/// A pool connection with a statement running on it. Dropped before [`answered`](Self::answered)
/// (the statement's future dropped), the connection is kept on a task of its own until the
/// statement has answered, at most `wait`, and then goes back to the pool; a connection that
/// fails, or stays silent past the bound, is closed (returned to the pool, sqlx would wait on it
/// again, without a bound).
///
/// An append's guard is [`announcing`](Self::announcing): an append abandoned mid-statement
/// still runs to its end in the server, and may commit; nobody would announce it, and other
/// processes' live readers would see its events only at their next poll. So it is announced
/// once its answer came or its connection was closed (a wake-up for nothing costs a reader one
/// read; one for an append that commits after the close comes with their next poll).
pub(super) struct Running<'s> {
    conn: Option<PoolConnection<sqlx::Postgres>>,
    wait: Duration,
    announce: Option<&'s Postgres>,
}

impl<'s> Running<'s> {
    /// Guards `conn`, on which a statement is about to run.
    pub(super) fn new(conn: PoolConnection<sqlx::Postgres>, wait: Duration) -> Self {
        Self { conn: Some(conn), wait, announce: None }
    }

    /// Takes a connection of `pool` for a statement.
    pub(super) async fn acquire(pool: &PgPool, wait: Duration) -> Result<Self, sqlx::Error> {
        Ok(Self::new(pool.acquire().await?, wait))
    }

    /// Announces `store`'s appends if the statement is abandoned (see the type's docs).
    pub(super) fn announcing(mut self, store: &'s Postgres) -> Self {
        self.announce = Some(store);
        self
    }

    /// The connection, until the statement answered.
    pub(super) fn connection(&mut self) -> Result<&mut PgConnection, sqlx::Error> {
        self.conn.as_deref_mut().ok_or(sqlx::Error::PoolClosed)
    }

    /// The statement answered: the connection goes back to the pool as usual.
    pub(super) fn answered(mut self) {
        self.conn = None;
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else { return };
        let store = self.announce.cloned();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime to wait on (sqlx would panic returning the connection): shut it
            // down here (and announce at once), the best that can be done without one.
            drop(conn.detach());
            if let Some(store) = store {
                store.announce();
            }
            return;
        };
        let wait = self.wait;
        runtime.spawn(async move {
            // Reads the abandoned statement's answer before its own: once it is back, the
            // statement has ended (an append committed or never will).
            match tokio::time::timeout(wait, conn.ping()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => conn.close_on_drop(),
            }
            drop(conn);
            if let Some(store) = store {
                store.announce();
            }
        });
    }
}

/// The store's pool as an sqlx executor whose statements run under [`Running`]: what the
/// store runs its statements on, in place of `&PgPool`.
#[derive(Clone, Copy, Debug)]
pub(super) struct OnPool<'s> {
    pool: &'s PgPool,
    wait: Duration,
}

impl<'s> OnPool<'s> {
    /// `pool`, each statement under [`Running`] with `wait`.
    pub(super) fn new(pool: &'s PgPool, wait: Duration) -> Self {
        Self { pool, wait }
    }
}

impl Postgres {
    /// This store's pool, each statement under [`Running`].
    pub(super) fn on_pool(&self) -> OnPool<'_> {
        OnPool { pool: &self.pool, wait: self.answer_wait }
    }
}

impl<'s> Executor<'s> for OnPool<'s> {
    type Database = sqlx::Postgres;

    /// Every result, read to the end, then handed on: the answer must be in before the
    /// connection is let go, and every caller collects them anyway.
    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<Either<PgQueryResult, PgRow>, sqlx::Error>>
    where
        's: 'e,
        E: 'q + Execute<'q, Self::Database>,
    {
        let all = async move {
            let mut running = match Running::acquire(self.pool, self.wait).await {
                Ok(running) => running,
                Err(e) => return vec![Err(e)],
            };
            let conn = match running.connection() {
                Ok(conn) => conn,
                Err(e) => return vec![Err(e)],
            };
            let mut results = conn.fetch_many(query);
            let mut all = Vec::new();
            loop {
                match results.try_next().await {
                    Ok(Some(result)) => all.push(Ok(result)),
                    Ok(None) => break,
                    Err(e) => {
                        all.push(Err(e));
                        break;
                    }
                }
            }
            drop(results);
            running.answered();
            all
        };
        Box::pin(futures_util::stream::once(all).flat_map(futures_util::stream::iter))
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<PgRow>, sqlx::Error>>
    where
        's: 'e,
        E: 'q + Execute<'q, Self::Database>,
    {
        Box::pin(async move {
            let mut running = Running::acquire(self.pool, self.wait).await?;
            let row = running.connection()?.fetch_optional(query).await;
            running.answered();
            row
        })
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [PgTypeInfo],
    ) -> BoxFuture<'e, Result<PgStatement<'q>, sqlx::Error>>
    where
        's: 'e,
    {
        Box::pin(async move {
            let mut running = Running::acquire(self.pool, self.wait).await?;
            let statement = running.connection()?.prepare_with(sql, parameters).await;
            running.answered();
            statement
        })
    }

    fn describe<'e, 'q: 'e>(
        self,
        sql: &'q str,
    ) -> BoxFuture<'e, Result<sqlx::Describe<Self::Database>, sqlx::Error>>
    where
        's: 'e,
    {
        Box::pin(async move {
            let mut running = Running::acquire(self.pool, self.wait).await?;
            let described = running.connection()?.describe(sql).await;
            running.answered();
            described
        })
    }
}

#[cfg(test)]
mod tests {
    /// Every statement the store runs on its pool goes through [`super::OnPool`] (or
    /// [`super::Running`]): no file of the backend hands sqlx the bare pool as an executor,
    /// which would leave an abandoned statement's connection to sqlx's unbounded wait.
    #[test]
    fn no_statement_runs_on_the_bare_pool() {
        let files = [
            ("append.rs", include_str!("append.rs")),
            ("batch.rs", include_str!("batch.rs")),
            ("hold.rs", include_str!("hold.rs")),
            ("listen.rs", include_str!("listen.rs")),
            ("mod.rs", include_str!("mod.rs")),
            ("projection.rs", include_str!("projection.rs")),
            ("read.rs", include_str!("read.rs")),
            ("schema.rs", include_str!("schema.rs")),
            ("snapshot.rs", include_str!("snapshot.rs")),
            ("tx.rs", include_str!("tx.rs")),
        ];
        let calls = ["execute", "fetch", "fetch_all", "fetch_one", "fetch_optional", "fetch_many"];
        let pools = ["&self.pool", "&pool", "pool", "self.pool()", "store.pool()"];
        for (file, text) in files {
            for call in calls {
                for pool in pools {
                    let bare = format!(".{call}({pool})");
                    assert!(!text.contains(&bare), "{file} runs `{bare}`: use `on_pool()`");
                }
            }
        }
    }
}
