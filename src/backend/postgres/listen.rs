//! Live wake-ups across processes. The listener behind
//! [`Backend::watch_log`](crate::backend::Backend::watch_log): one connection per store, outside
//! its pool, that `LISTEN`s on the schema's channel and rings the store's bell on every notification. The
//! notifier: after appends commit, one `NOTIFY` on that channel, from a task of its own.
//!
//! Correctness never rests on it: readers poll as well. After a lost connection it rings once
//! (a notification may have been missed) and connects again, with a growing pause.

use std::{
    sync::{
        Arc, Weak,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::sync::Notify;

use sqlx::postgres::{PgListener, PgPoolOptions};

use super::{Postgres, running::OnPool, schema::notify_channel};
use crate::backend::{LogBell, log::LogBellInner};

/// How often the listener checks whether anyone still holds its bell.
const ALIVE_CHECK: Duration = Duration::from_secs(5);
/// The longest pause between two attempts to connect.
const MAX_RECONNECT_PAUSE: Duration = Duration::from_secs(5);

/// Starts the task that rings `bell` for `store`, on `runtime`.
pub(super) fn start(store: &Postgres, bell: &LogBell, runtime: &tokio::runtime::Handle) {
    let channel = notify_channel(&store.statements.schema);
    runtime.spawn(listen(store.pool.clone(), channel, bell.downgrade()));
}

async fn listen(pool: sqlx::PgPool, channel: String, bell: Weak<LogBellInner>) {
    // A connection of its own, outside the store's pool: a listener holds its connection for
    // good, and taking it from the pool left the store one connection short (none, with
    // `max_connections(1)`: every append and read then timed out waiting for one).
    let own = PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .acquire_timeout(pool.options().get_acquire_timeout())
        .connect_lazy_with(pool.connect_options().as_ref().clone());
    let mut pause = Duration::from_millis(50);
    loop {
        let mut listener = match connect(&own, &channel).await {
            Ok(listener) => listener,
            Err(e) => {
                tracing::debug!(error = %e, channel, "eventcore log listener cannot connect");
                if pool.is_closed() || bell.strong_count() == 0 {
                    return;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_RECONNECT_PAUSE);
                continue;
            }
        };
        pause = Duration::from_millis(50);
        // Appends may have committed while no one was listening.
        match LogBell::upgrade(&bell) {
            Some(b) => b.ring(),
            None => return,
        }
        loop {
            match tokio::time::timeout(ALIVE_CHECK, listener.try_recv()).await {
                // A notification: ring.
                Ok(Ok(Some(_))) => match LogBell::upgrade(&bell) {
                    Some(b) => b.ring(),
                    None => return,
                },
                // The connection was lost (`try_recv` reconnects on its next call) or failed:
                // ring, since a notification may have been missed, and go on.
                Ok(Ok(None)) | Ok(Err(_)) => {
                    match LogBell::upgrade(&bell) {
                        Some(b) => b.ring(),
                        None => return,
                    }
                    break;
                }
                // Quiet: stop when the store and every watch are gone.
                Err(_) => {
                    if bell.strong_count() == 0 || pool.is_closed() {
                        return;
                    }
                }
            }
        }
    }
}

async fn connect(pool: &sqlx::PgPool, channel: &str) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(channel).await?;
    Ok(listener)
}

/// Sends a `NOTIFY` after appends, off their path: [`poke`](Self::poke) asks for one; the
/// task waits [`GATHER`] for more appends, then sends one notification for all of them, so a
/// burst of appends costs a notification every millisecond or so, and never more than one per
/// append. A `NOTIFY` inside the appending transaction would take PostgreSQL's cluster-wide
/// notification lock at every appending commit and serialise them (measured in
/// `benches/subscription.rs`: 0.72 of the throughput without notifications, against 0.91 this
/// way).
#[derive(Debug)]
pub(super) struct Notifier(Arc<Wanted>);

/// How long the notifier gathers appends before it notifies.
const GATHER: Duration = Duration::from_millis(5);

#[derive(Debug, Default)]
pub(super) struct Wanted {
    signal: Notify,
    /// Set by appends, taken by the notification that announces them.
    dirty: AtomicBool,
}

impl Notifier {
    /// Starts the task on the current tokio runtime; `None` without one (readers then poll).
    /// Each `NOTIFY` waits `answer_wait` at most for its answer (see [`notify`]).
    pub(super) fn start(
        pool: &sqlx::PgPool,
        schema: &super::SchemaName,
        answer_wait: Duration,
    ) -> Option<Self> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let wanted = Arc::new(Wanted::default());
        let task = Arc::downgrade(&wanted);
        let channel = notify_channel(schema);
        runtime.spawn(notify(pool.clone(), channel, task, answer_wait));
        Some(Self(wanted))
    }

    /// Asks for a notification.
    pub(super) fn poke(&self) {
        self.0.dirty.store(true, Ordering::Release);
        self.0.signal.notify_one();
    }
}

/// Sends the notifications `wanted` asks for on `pool`'s connections.
///
/// Each `NOTIFY` is a statement of the store's pool, under
/// [`Running`](super::running::Running), and bounded: on a
/// connection the network black-holed (the statement or its answer lost, the socket still
/// open) no answer ever comes, and waiting for it would keep that connection from the pool for
/// good, and every later notification with it. Unanswered within `answer_wait` it is given
/// up on (readers poll as well: a lost notification delays them, it loses nothing), and
/// `Running` closes its connection once it stays silent for `answer_wait` more.
async fn notify(pool: sqlx::PgPool, channel: String, wanted: Weak<Wanted>, answer_wait: Duration) {
    loop {
        let Some(signal) = wanted.upgrade() else { return };
        // Wake up now and then to notice that the store is gone.
        let poked = tokio::time::timeout(ALIVE_CHECK, signal.signal.notified()).await.is_ok();
        if !poked {
            drop(signal);
            if pool.is_closed() {
                return;
            }
            continue;
        }
        tokio::time::sleep(GATHER).await;
        // A wake-up left over from appends the last notification already announced.
        let due = signal.dirty.swap(false, Ordering::AcqRel);
        drop(signal);
        if !due {
            continue;
        }
        let sent = sqlx::query("SELECT pg_catalog.pg_notify($1, '')")
            .bind(&channel)
            .execute(OnPool::new(&pool, answer_wait));
        match tokio::time::timeout(answer_wait, sent).await {
            Ok(Ok(_)) => {}
            // Readers poll as well: a lost notification delays them, it loses nothing.
            Ok(Err(e)) => {
                tracing::debug!(error = %e, channel, "eventcore could not notify an append");
            }
            Err(_) => tracing::debug!(channel, "eventcore notification unanswered: given up"),
        }
    }
}
