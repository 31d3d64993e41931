//! Reading streams (one statement for any number of them) and the global log.

use std::time::Duration;

use sqlx::Row;
use tokio::time::Instant;

use super::{
    Postgres,
    codec::{POSITION, decode_event},
    errors::store_error,
};
use crate::{
    GlobalPosition, RecordedEvent, StreamId, StreamVersion,
    backend::{StoreError, StreamEvents},
};

/// The longest pause between two looks while `read_all` waits for older transactions.
const MAX_PAUSE: Duration = Duration::from_millis(20);

// Column indexes of the `read` query: ordinal, then the event columns.
const READ_ORD: usize = 0;
const READ_EVENTS: usize = 1;
// Column indexes of the `read_all` query: stream id, the event columns, then `settled`.
const LOG_STREAM_ID: usize = 0;
const LOG_EVENTS: usize = 1;
const LOG_SETTLED: usize = 11;

impl Postgres {
    pub(super) async fn read_streams(
        &self,
        streams: &[StreamId],
    ) -> Result<Vec<StreamEvents>, StoreError> {
        if streams.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = streams.iter().map(StreamId::as_str).collect();
        let rows = sqlx::query(&self.statements.read)
            .bind(&ids)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        let mut out: Vec<StreamEvents> = streams
            .iter()
            .map(|id| StreamEvents::new(id.clone(), StreamVersion::EMPTY, Vec::new()))
            .collect();
        for row in &rows {
            // `ord` numbers the requested ids from 1, so it indexes `out`.
            let ord: i64 = row.try_get(READ_ORD).map_err(|e| self.error(e))?;
            let slot = usize::try_from(ord - 1)
                .ok()
                .and_then(|i| out.get_mut(i))
                .ok_or_else(|| StoreError::UnreadableRow(format!("read returned ordinal {ord}")))?;
            // A stream without events comes back as one row whose event columns are NULL.
            let has_event = row
                .try_get::<Option<i64>, _>(READ_EVENTS + POSITION)
                .map_err(|e| self.error(e))?
                .is_some();
            if has_event {
                let event = decode_event(row, READ_EVENTS, slot.stream_id.clone())?;
                // Rows come in version order: a stream's version is its last event's.
                slot.version = event.version;
                slot.events.push(event);
            }
        }
        Ok(out)
    }

    /// Pages through the log; see the module docs for why it may wait.
    pub(super) async fn read_log(
        &self,
        after: GlobalPosition,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let after = i64::try_from(after.get()).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let deadline = Instant::now() + self.read_all_wait;
        let mut pause = Duration::from_millis(1);
        // The last committed event of the first look: the page waits until it is settled.
        let mut target: Option<i64> = None;
        loop {
            let rows = sqlx::query(&self.statements.read_all)
                .bind(after)
                .bind(limit)
                .fetch_all(&self.pool)
                .await
                .map_err(|e| self.error(e))?;
            // Settled rows (transaction id below the snapshot's xmin) always come first: see
            // `append` in the migration for why.
            let mut settled = 0;
            let mut last_settled = after;
            for row in &rows {
                if !row.try_get::<bool, _>(LOG_SETTLED).map_err(|e| self.error(e))? {
                    break;
                }
                settled += 1;
                last_settled = row.try_get(LOG_EVENTS + POSITION).map_err(|e| self.error(e))?;
            }
            let last_seen = match rows.last() {
                Some(row) => {
                    row.try_get::<i64, _>(LOG_EVENTS + POSITION).map_err(|e| self.error(e))?
                }
                None => after,
            };
            let target = *target.get_or_insert(last_seen);
            let now = Instant::now();
            if settled == rows.len() || last_settled >= target || now >= deadline {
                return rows[..settled].iter().map(|row| self.decode_log_row(row)).collect();
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }

    fn decode_log_row(&self, row: &sqlx::postgres::PgRow) -> Result<RecordedEvent, StoreError> {
        let raw: String = row.try_get(LOG_STREAM_ID).map_err(|e| self.error(e))?;
        let stream = StreamId::try_new(&raw).map_err(|e| {
            let id = row.try_get::<uuid::Uuid, _>(LOG_EVENTS + 2).ok();
            StoreError::UnreadableRow(format!("event {id:?} has an invalid stream id {raw:?}: {e}"))
        })?;
        decode_event(row, LOG_EVENTS, stream)
    }

    pub(super) fn error(&self, e: sqlx::Error) -> StoreError {
        store_error(e, &self.statements.schema)
    }
}
