//! Holds on hot streams across processes: a session advisory lock per stream, on a connection
//! of a pool of their own, from before a command reads until its append has answered.
//!
//! Why this cannot deadlock with the append's own locks: the holds are advisory locks of a
//! class of their own (`schema::hot_lock_class`), never taken by an append; a command takes
//! all of its holds, sorted by key, before it reads, and an append never waits for a hold. A
//! wait for a hold is therefore only ever a wait for a command that already has every hold it
//! needs and goes on to append without waiting for any other hold. The holds live on a pool of
//! their own, so commands holding streams can never take every connection their reads and
//! appends need.

use std::{fmt, sync::Arc};

use sqlx::{PgPool, pool::PoolConnection, postgres::PgPoolOptions};

use super::{
    codec,
    errors::{Class, classify, store_error},
    schema,
};
use crate::{
    StreamId,
    backend::{StoreError, StreamHold},
};

/// Which streams are hot: held across processes while a command reads, decides and appends.
#[derive(Clone)]
pub(crate) struct HotStreams {
    is_hot: Arc<dyn Fn(&StreamId) -> bool + Send + Sync>,
}

impl HotStreams {
    pub(crate) fn new(is_hot: impl Fn(&StreamId) -> bool + Send + Sync + 'static) -> Self {
        Self { is_hot: Arc::new(is_hot) }
    }
}

impl fmt::Debug for HotStreams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HotStreams(..)")
    }
}

/// What a store needs to hold hot streams.
#[derive(Debug, Clone)]
pub(super) struct Holds {
    streams: HotStreams,
    /// The connections holds are taken on: one per command holding streams.
    pool: PgPool,
    /// `SELECT pg_advisory_lock(class, k) FROM unnest($1) AS k`, for this schema.
    lock: Arc<str>,
    /// How long a hold's unlock waits for its answer before its connection is taken for lost
    /// and closed (see `running::answer_wait`).
    answer_wait: std::time::Duration,
}

impl Holds {
    /// Holds for the hot streams of `streams`, on up to `connections` connections opened as
    /// needed with `main`'s connect options, and `statement_timeout` (the store's
    /// configured one, which bounds a wait for a hold as it bounds any other statement; `None`:
    /// the server's). An unlock unanswered for `answer_wait` closes its connection.
    pub(super) fn new(
        main: &PgPool,
        schema: &super::SchemaName,
        streams: HotStreams,
        connections: std::num::NonZeroU32,
        statement_timeout: Option<std::time::Duration>,
        answer_wait: std::time::Duration,
    ) -> Self {
        let options = main.connect_options().as_ref().clone();
        let timeout = statement_timeout.map(|t| format!("{}ms", t.as_millis()));
        let pool = PgPoolOptions::new()
            .max_connections(connections.get())
            .min_connections(0)
            .acquire_timeout(main.options().get_acquire_timeout())
            .test_before_acquire(false)
            .after_connect(move |conn, _meta| {
                let timeout = timeout.clone();
                Box::pin(async move {
                    // A command that gives up waiting closes its connection; have the server
                    // notice that while it waits for a lock (PostgreSQL 14 and newer), rather
                    // than when the lock is granted. And the store's `statement_timeout`, as
                    // on its other connections: a wait for a hold that runs out of it fails
                    // with `StoreError::Timeout` (transient), having taken nothing.
                    //
                    // And the server probes the connection while it sits idle (as a holding
                    // one does, while its command reads, decides and appends on others): a
                    // holder whose host vanishes (power lost, network cut) closes nothing, and
                    // with the server's usual TCP keepalive (two hours, then nine probes 75 s
                    // apart) its locks would stop every other process's commands over those
                    // streams for over two hours. With these, its locks go within about 11 s.
                    // Probes go only while nothing sent waits for its acknowledgement: a
                    // waiter that vanishes and is then granted its locks has their grant
                    // unacknowledged, and would keep them through the kernel's retransmissions
                    // (some 15 minutes), so data unacknowledged for 11 s closes the connection
                    // too (`tcp_user_timeout`, PostgreSQL 12 and newer). A live peer's kernel
                    // acknowledges at once, however busy the process. (All ignored on a Unix
                    // socket, whose peer cannot vanish so.)
                    sqlx::query(
                        "SELECT pg_catalog.set_config('statement_timeout', \
                             coalesce($1, pg_catalog.current_setting('statement_timeout')), \
                                 false), \
                         (SELECT pg_catalog.set_config(name, '100ms', \
                             false) FROM pg_catalog.pg_settings \
                          WHERE name = 'client_connection_check_interval'), \
                         pg_catalog.set_config('tcp_keepalives_idle', '5', false), \
                         pg_catalog.set_config('tcp_keepalives_interval', '2', false), \
                         pg_catalog.set_config('tcp_keepalives_count', '3', false), \
                         (SELECT pg_catalog.set_config(name, '11000', \
                             false) FROM pg_catalog.pg_settings \
                          WHERE name = 'tcp_user_timeout')",
                    )
                    .bind(timeout)
                    .execute(conn)
                    .await?;
                    Ok(())
                })
            })
            .connect_lazy_with(options);
        let lock = format!(
            "SELECT pg_catalog.pg_advisory_lock({}, k) FROM pg_catalog.unnest($1::int4[]) AS k",
            schema::hot_lock_class(schema)
        );
        Self { streams, pool, lock: lock.into(), answer_wait }
    }

    /// Waits until every hot stream of `streams` is held by this command, in key order (so
    /// two commands never wait for each other); `None` when none is hot.
    pub(super) async fn hold(
        &self,
        streams: &[StreamId],
        schema: &super::SchemaName,
    ) -> Result<Option<StreamHold>, StoreError> {
        let mut keys: Vec<i32> = streams
            .iter()
            .filter(|id| (self.streams.is_hot)(id))
            .map(|id| codec::lock_key(id.as_str()))
            .collect();
        if keys.is_empty() {
            return Ok(None);
        }
        keys.sort_unstable();
        keys.dedup();
        let error = |e| store_error(e, schema);
        // Hold connections are not pinged before use (that would add a round trip to every
        // hold). One that died while idle in the pool (killed by an administrator, ended by a
        // restart or a pooler's idle timeout) fails its lock statement at once, having taken
        // nothing (the server's session, and any lock, went with it): it is closed, and the
        // hold goes once more, on a new connection, rather than failing the command.
        let mut retried = false;
        loop {
            let conn = self.pool.acquire().await.map_err(error)?;
            let mut held = Held { conn: Some(conn), locked: false, answer_wait: self.answer_wait };
            let conn = held.conn.as_deref_mut().ok_or(sqlx::Error::PoolClosed).map_err(error)?;
            // If this future is dropped while waiting, `held` closes the connection, which
            // ends the wait (or drops the locks, had they just been granted).
            match sqlx::query(&self.lock).bind(&keys).execute(conn).await {
                Ok(_) => {
                    held.locked = true;
                    return Ok(Some(StreamHold::new(held)));
                }
                // Dropped unlocked, `held` closes the connection.
                Err(e) if !retried && matches!(classify(&e, schema), Class::Unavailable) => {
                    retried = true;
                }
                Err(e) => return Err(error(e)),
            }
        }
    }
}

/// A connection holding session advisory locks; dropping it gives them back.
struct Held {
    conn: Option<PoolConnection<sqlx::Postgres>>,
    /// Whether every lock was granted (else the connection may still be waiting for one).
    locked: bool,
    /// How long the unlock waits for its answer.
    answer_wait: std::time::Duration,
}

impl Drop for Held {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else { return };
        let runtime = tokio::runtime::Handle::try_current();
        match runtime {
            // Unlock and return the connection to the pool. Should the unlock fail, the
            // connection is closed, and the server ends its session and its locks. So it is
            // when no answer comes within `answer_wait`: on a connection the network
            // black-holed (the unlock or its answer lost, the socket still open) none ever
            // comes, and waiting on would keep the connection, and its place in the hold pool,
            // for good (the server, probing the connection, ends the session and its locks).
            Ok(runtime) if self.locked => {
                let wait = self.answer_wait;
                runtime.spawn(async move {
                    let unlock = sqlx::query("SELECT pg_catalog.pg_advisory_unlock_all()")
                        .execute(&mut *conn);
                    if !matches!(tokio::time::timeout(wait, unlock).await, Ok(Ok(_))) {
                        conn.close_on_drop();
                    }
                });
            }
            // A wait given up: close the connection (the server cancels the wait and drops the
            // session's locks).
            Ok(_) => conn.close_on_drop(),
            // No runtime to unlock or close on (the hold was dropped outside one): sqlx would
            // spawn the close, and panic without a runtime. Take the connection out of the
            // pool and drop it here, which shuts its socket: the server ends the session, and
            // its locks with it.
            Err(_) => drop(conn.detach()),
        }
    }
}
