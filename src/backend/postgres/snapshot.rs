//! Reading streams after a version, and the snapshot table (see
//! `migrations/0004_snapshots.sql`).

use sqlx::{Row, postgres::types::PgInterval};

use super::{
    Postgres,
    codec::{POSITION, decode_event},
};
use crate::{
    EventId, Payload, StreamId, StreamVersion,
    backend::{SnapshotKey, StoreError, StoredSnapshot, StreamEvents},
};

// Column indexes of the `read_after` query: ordinal, current version, then the event columns.
const AFTER_ORD: usize = 0;
const AFTER_CURRENT: usize = 1;
const AFTER_EVENTS: usize = 2;
// Column indexes of the `read_with_snapshot` query: ordinal and current version as above, the
// snapshot's seven columns, whether its streams hold other events now, then the event columns.
const WITH_SNAPSHOT: usize = 2;
const WITH_RESTORED: usize = 9;
const WITH_EVENTS: usize = 10;

/// The oldest a snapshot can be, in microseconds: 10,000 years.
const MAX_SNAPSHOT_AGE_MICROS: u128 = 10_000 * 366 * 86_400 * 1_000_000;

impl Postgres {
    /// See `Backend::prune_snapshots`.
    pub(super) async fn delete_snapshots(
        &self,
        older_than: std::time::Duration,
    ) -> Result<u64, StoreError> {
        // In whole microseconds (the server's resolution), rounded up: every row deleted is at
        // least `older_than` old. No row is older than the store (`taken_at` is the server's
        // clock when it was saved), so an age beyond any the server's timestamps reach
        // deletes nothing, and is not sent. The age is added to `taken_at` rather than taken
        // from `now()`: `now()` minus more than about 6,700 years falls before the first
        // timestamp the server holds (4714 BC), an error, while a row's time plus at most
        // 10,000 years stays far below the last (294276 AD). It is bound as an interval of
        // exactly that many microseconds (a number times `interval '1 microsecond'` goes
        // through a `float8`, which rounds ages above 2^53 µs, 285 years).
        let micros = older_than.as_nanos().div_ceil(1_000);
        if micros > MAX_SNAPSHOT_AGE_MICROS {
            return Ok(0);
        }
        let age = PgInterval {
            months: 0,
            days: 0,
            microseconds: i64::try_from(micros).unwrap_or(i64::MAX),
        };
        let q = self.statements.schema.quoted();
        let done = sqlx::query(&format!(
            "DELETE FROM {q}.snapshots WHERE taken_at + $1::interval <= pg_catalog.now()"
        ))
        .bind(age)
        .execute(self.on_pool())
        .await
        .map_err(|e| self.error(e))?;
        Ok(done.rows_affected())
    }

    pub(super) async fn read_streams_after(
        &self,
        streams: &[(StreamId, StreamVersion)],
    ) -> Result<Vec<StreamEvents>, StoreError> {
        if streams.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = streams.iter().map(|(id, _)| id.as_str()).collect();
        let after: Vec<i64> =
            streams.iter().map(|(_, v)| i64::try_from(v.get()).unwrap_or(i64::MAX)).collect();
        let rows = sqlx::query(&self.statements.read_after)
            .bind(&ids)
            .bind(&after)
            .fetch_all(self.on_pool())
            .await
            .map_err(|e| self.error(e))?;
        let mut out: Vec<StreamEvents> = streams
            .iter()
            .map(|(id, _)| StreamEvents::new(id.clone(), StreamVersion::EMPTY, Vec::new()))
            .collect();
        for row in &rows {
            let ord: i64 = row.try_get(AFTER_ORD).map_err(|e| self.error(e))?;
            self.read_after_row(row, ord, AFTER_EVENTS, &mut out)?;
        }
        Ok(out)
    }

    /// Adds one row of a `read_after` answer (the stream's current version at
    /// `AFTER_CURRENT`, its event from column `events` on, if any) to `out`.
    fn read_after_row(
        &self,
        row: &sqlx::postgres::PgRow,
        ord: i64,
        events: usize,
        out: &mut [StreamEvents],
    ) -> Result<(), StoreError> {
        // `ord` numbers the requested ids from 1, so it indexes `out`.
        let slot = usize::try_from(ord - 1)
            .ok()
            .and_then(|i| out.get_mut(i))
            .ok_or_else(|| StoreError::UnreadableRow(format!("read returned ordinal {ord}")))?;
        let current: i64 = row.try_get(AFTER_CURRENT).map_err(|e| self.error(e))?;
        slot.version = StreamVersion::new(u64::try_from(current).unwrap_or(0));
        // A stream without later events comes back as one row whose event columns are NULL.
        let has_event =
            row.try_get::<Option<i64>, _>(events + POSITION).map_err(|e| self.error(e))?.is_some();
        if has_event {
            slot.events.push(decode_event(row, events, slot.stream_id.clone())?);
        }
        Ok(())
    }

    pub(super) async fn find_snapshot(
        &self,
        key: &SnapshotKey,
    ) -> Result<Option<StoredSnapshot>, StoreError> {
        let row = sqlx::query(&self.statements.load_snapshot)
            .bind(key.as_str())
            .fetch_optional(self.on_pool())
            .await
            .map_err(|e| self.error(e))?;
        row.map(|row| snapshot_from_row(&row, 0, key, |e| self.error(e))).transpose()
    }

    pub(super) async fn read_streams_with_snapshot(
        &self,
        key: &SnapshotKey,
        streams: &[StreamId],
    ) -> Result<(Option<StoredSnapshot>, Vec<StreamEvents>), StoreError> {
        if streams.is_empty() {
            return Ok((self.find_snapshot(key).await?, Vec::new()));
        }
        let ids: Vec<&str> = streams.iter().map(StreamId::as_str).collect();
        let rows = sqlx::query(&self.statements.read_with_snapshot)
            .bind(key.as_str())
            .bind(&ids)
            .fetch_all(self.on_pool())
            .await
            .map_err(|e| self.error(e))?;
        let mut snapshot = None;
        let mut out: Vec<StreamEvents> = streams
            .iter()
            .map(|id| StreamEvents::new(id.clone(), StreamVersion::EMPTY, Vec::new()))
            .collect();
        for row in &rows {
            let ord: i64 = row.try_get(AFTER_ORD).map_err(|e| self.error(e))?;
            if ord == 0 {
                let restored: bool = row.try_get(WITH_RESTORED).map_err(|e| self.error(e))?;
                match snapshot_from_row(row, WITH_SNAPSHOT, key, |e| self.error(e)) {
                    // The rows after it are whole streams: the statement did not trust it.
                    Ok(stored) if restored => crate::backend::snapshot::restored_under(&stored),
                    Ok(stored) => snapshot = Some(stored),
                    Err(error) => {
                        // The rows after it may be read after its versions: without the
                        // snapshot they mean nothing, so the streams are read whole.
                        tracing::warn!(key = key.as_str(), %error, "snapshot row unreadable; ignored");
                        return Ok((None, self.read_streams(streams).await?));
                    }
                }
                continue;
            }
            self.read_after_row(row, ord, WITH_EVENTS, &mut out)?;
        }
        Ok((snapshot, out))
    }

    pub(super) async fn store_snapshot(&self, snapshot: StoredSnapshot) -> Result<(), StoreError> {
        let ids: Vec<&str> = snapshot.streams.iter().map(|(id, _)| id.as_str()).collect();
        let versions: Vec<i64> = snapshot
            .streams
            .iter()
            .map(|(_, v)| i64::try_from(v.get()).unwrap_or(i64::MAX))
            .collect();
        let last_event_ids: Vec<Option<uuid::Uuid>> = (0..snapshot.streams.len())
            .map(|i| snapshot.last_event_id(i).map(EventId::as_uuid))
            .collect();
        sqlx::query(&self.statements.save_snapshot)
            .bind(snapshot.key.as_str())
            .bind(&snapshot.state_type)
            .bind(i64::from(snapshot.state_version))
            .bind(&ids)
            .bind(&versions)
            .bind(&last_event_ids)
            .bind(snapshot.state.as_str())
            .execute(self.on_pool())
            .await
            .map_err(|e| self.error(e))?;
        Ok(())
    }
}

/// Reads a snapshot from its seven columns, `at` on: key, state type, state version, stream
/// ids, versions, last event ids, state. A stored id that is not an event id reads as none
/// (the snapshot is then not trusted for that stream).
fn snapshot_from_row(
    row: &sqlx::postgres::PgRow,
    at: usize,
    key: &SnapshotKey,
    error: impl Fn(sqlx::Error) -> StoreError,
) -> Result<StoredSnapshot, StoreError> {
    let unreadable = |what: &str, e: &dyn std::fmt::Display| {
        StoreError::UnreadableRow(format!("snapshot `{}`: {what}: {e}", key.as_str()))
    };
    let stored_key: String = row.try_get(at).map_err(&error)?;
    let state_type: String = row.try_get(at + 1).map_err(&error)?;
    let state_version: i64 = row.try_get(at + 2).map_err(&error)?;
    let ids: Vec<String> = row.try_get(at + 3).map_err(&error)?;
    let versions: Vec<i64> = row.try_get(at + 4).map_err(&error)?;
    let last_event_ids: Vec<Option<uuid::Uuid>> = row.try_get(at + 5).map_err(&error)?;
    let state: String = row.try_get(at + 6).map_err(&error)?;
    let state_version =
        u32::try_from(state_version).map_err(|e| unreadable("state_version", &e))?;
    let streams = ids
        .iter()
        .zip(&versions)
        .map(|(id, v)| {
            let id = StreamId::try_new(id).map_err(|e| unreadable("stream id", &e))?;
            let v = u64::try_from(*v).map_err(|e| unreadable("version", &e))?;
            Ok((id, StreamVersion::new(v)))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let state = Payload::from_json_str(&state).map_err(|e| unreadable("state", &e))?;
    Ok(StoredSnapshot {
        key: SnapshotKey::new(stored_key),
        state_type,
        state_version,
        streams,
        last_event_ids: (last_event_ids.into_iter())
            .map(|id| id.and_then(|id| EventId::try_from(id).ok()))
            .collect(),
        state,
    })
}
