//! The listener behind [`Backend::watch_log`](crate::backend::Backend::watch_log): one
//! connection per store that `LISTEN`s on the schema's channel and rings the store's bell on
//! every notification (one per appending transaction, sent by a statement-level trigger).
//!
//! Correctness never rests on it: readers poll as well. After a lost connection it rings once
//! (a notification may have been missed) and connects again, with a growing pause.

use std::{sync::Weak, time::Duration};

use sqlx::postgres::PgListener;

use super::{Postgres, schema::notify_channel};
use crate::backend::{LogBell, LogWatch, log::LogBellInner};

/// How often the listener checks whether anyone still holds its bell.
const ALIVE_CHECK: Duration = Duration::from_secs(5);
/// The longest pause between two attempts to connect.
const MAX_RECONNECT_PAUSE: Duration = Duration::from_secs(5);

/// A bell for `store`, and the task that rings it when a tokio runtime is at hand (without
/// one, readers fall back to polling alone).
pub(super) fn start(store: &Postgres) -> LogBell {
    let (bell, _) = LogWatch::channel();
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        let channel = notify_channel(&store.statements.schema);
        runtime.spawn(listen(store.pool.clone(), channel, bell.downgrade()));
    }
    bell
}

async fn listen(pool: sqlx::PgPool, channel: String, bell: Weak<LogBellInner>) {
    let mut pause = Duration::from_millis(50);
    loop {
        let mut listener = match connect(&pool, &channel).await {
            Ok(listener) => listener,
            Err(e) => {
                tracing::debug!(error = %e, channel, "eventcore log listener cannot connect");
                if pool.is_closed() {
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
