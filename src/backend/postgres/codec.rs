//! Turning events into bound parameters and rows back into events.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use sqlx::{Row, postgres::PgRow};
use uuid::Uuid;

use crate::{
    CausationId, CorrelationId, EventId, EventMetadata, GlobalPosition, NewEvent, Payload,
    RecordedEvent, StreamId, StreamVersion, Timestamp,
    backend::{AppendRequest, Committed, StoreError},
};

/// An [`AppendRequest`] as the parallel arrays that `append(...)` in SQL takes.
#[derive(Debug, Default)]
pub(super) struct AppendArgs {
    pub(super) expected_streams: Vec<String>,
    pub(super) expected_versions: Vec<i64>,
    pub(super) write_streams: Vec<String>,
    pub(super) event_streams: Vec<String>,
    pub(super) event_ids: Vec<Uuid>,
    pub(super) event_types: Vec<String>,
    pub(super) schema_versions: Vec<i32>,
    pub(super) payloads: Vec<String>,
    pub(super) correlation_ids: Vec<Uuid>,
    pub(super) causation_ids: Vec<Option<Uuid>>,
    pub(super) custom: Vec<Option<String>>,
    pub(super) recorded_at: Vec<DateTime<Utc>>,
    pub(super) key: Option<String>,
}

impl AppendArgs {
    /// Flattens a request that already passed [`AppendRequest::validate`].
    pub(super) fn new(request: &AppendRequest) -> Result<Self, StoreError> {
        let n = request.event_count();
        let mut args = Self {
            expected_streams: Vec::with_capacity(request.expected.len()),
            expected_versions: Vec::with_capacity(request.expected.len()),
            write_streams: Vec::with_capacity(request.writes.len()),
            event_streams: Vec::with_capacity(n),
            event_ids: Vec::with_capacity(n),
            event_types: Vec::with_capacity(n),
            schema_versions: Vec::with_capacity(n),
            payloads: Vec::with_capacity(n),
            correlation_ids: Vec::with_capacity(n),
            causation_ids: Vec::with_capacity(n),
            custom: Vec::with_capacity(n),
            recorded_at: Vec::with_capacity(n),
            key: request.idempotency_key.as_ref().map(|k| k.as_str().to_owned()),
        };
        for (stream, version) in &request.expected {
            let v = i64::try_from(version.get()).map_err(|_| {
                StoreError::InvalidAppend(format!(
                    "stream `{stream}` is expected at version {version}, beyond what the store can hold"
                ))
            })?;
            args.expected_streams.push(stream.as_str().to_owned());
            args.expected_versions.push(v);
        }
        for (stream, events) in &request.writes {
            args.write_streams.push(stream.as_str().to_owned());
            for event in events {
                let sv = i32::try_from(event.schema_version).map_err(|_| {
                    StoreError::InvalidAppend(format!(
                        "event {} has schema version {}, above {}",
                        event.metadata.event_id,
                        event.schema_version,
                        i32::MAX
                    ))
                })?;
                let meta = &event.metadata;
                let custom = if meta.custom.is_empty() {
                    None
                } else {
                    Some(
                        serde_json::to_string(&meta.custom)
                            .map_err(|e| StoreError::Other(Box::new(e)))?,
                    )
                };
                args.event_streams.push(stream.as_str().to_owned());
                args.event_ids.push(meta.event_id.as_uuid());
                args.event_types.push(event.event_type.to_string());
                args.schema_versions.push(sv);
                args.payloads.push(event.payload.as_str().to_owned());
                args.correlation_ids.push(meta.correlation_id.as_uuid());
                args.causation_ids.push(meta.causation_id.map(CausationId::as_uuid));
                args.custom.push(custom);
                args.recorded_at.push(meta.timestamp.as_datetime());
            }
        }
        Ok(args)
    }
}

/// The `committed` jsonb column as `append(...)` in SQL builds it.
#[derive(Deserialize)]
struct StoredCommit {
    streams: Vec<(String, u64)>,
    positions: Option<(u64, u64)>,
}

/// Reads a stored append result.
pub(super) fn decode_committed(json: &str, replayed: bool) -> Result<Committed, StoreError> {
    let unreadable = |reason: String| {
        StoreError::UnreadableRow(format!("stored append result {json:?} is unreadable: {reason}"))
    };
    let stored: StoredCommit = serde_json::from_str(json).map_err(|e| unreadable(e.to_string()))?;
    let streams = stored
        .streams
        .into_iter()
        .map(|(s, v)| Ok((StreamId::try_new(s)?, StreamVersion::new(v))))
        .collect::<Result<Vec<_>, crate::ValidationError>>()
        .map_err(|e| unreadable(e.to_string()))?;
    let positions = stored.positions.map(|(a, b)| (GlobalPosition::new(a), GlobalPosition::new(b)));
    let mut committed = Committed::new(streams, positions);
    committed.replayed = replayed;
    Ok(committed)
}

/// The event columns, in the order the read queries select them from `base` on (see
/// `Statements` in `mod.rs`). Read by index: looking columns up by name hashes the name for
/// every column of every row.
const EVENT_COLUMNS: [&str; 10] = [
    "version",
    "position",
    "event_id",
    "event_type",
    "schema_version",
    "payload",
    "correlation_id",
    "causation_id",
    "custom",
    "recorded_at",
];

/// The index of the `position` column, relative to `base`.
pub(super) const POSITION: usize = 1;

/// Decodes the event columns of a row, which start at column `base`, for `stream`.
///
/// The event id is read first: without it the row is [`StoreError::UnreadableRow`]; anything
/// wrong after that is [`StoreError::Corrupt`] naming the event and its stream.
pub(super) fn decode_event(
    row: &PgRow,
    base: usize,
    stream: StreamId,
) -> Result<RecordedEvent, StoreError> {
    let raw_id: Uuid = row.try_get(base + 2).map_err(|e| {
        StoreError::UnreadableRow(format!("an event of stream `{stream}` has no readable id: {e}"))
    })?;
    let event_id = EventId::try_from(raw_id).map_err(|e| {
        StoreError::UnreadableRow(format!("event {raw_id} of stream `{stream}`: {e}"))
    })?;
    let corrupt = |reason: String| StoreError::Corrupt { stream: stream.clone(), event_id, reason };
    let column = |k: usize, e: sqlx::Error| corrupt(format!("column `{}`: {e}", EVENT_COLUMNS[k]));

    let version: i64 = row.try_get(base).map_err(|e| column(0, e))?;
    let position: i64 = row.try_get(base + 1).map_err(|e| column(1, e))?;
    let event_type: String = row.try_get(base + 3).map_err(|e| column(3, e))?;
    let schema_version: i32 = row.try_get(base + 4).map_err(|e| column(4, e))?;
    let payload: String = row.try_get(base + 5).map_err(|e| column(5, e))?;
    let correlation_id: Uuid = row.try_get(base + 6).map_err(|e| column(6, e))?;
    let causation_id: Option<Uuid> = row.try_get(base + 7).map_err(|e| column(7, e))?;
    let custom: Option<String> = row.try_get(base + 8).map_err(|e| column(8, e))?;
    let recorded_at: DateTime<Utc> = row.try_get(base + 9).map_err(|e| column(9, e))?;

    let version = u64::try_from(version)
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| corrupt(format!("version {version} is not positive")))?;
    let position = u64::try_from(position)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| corrupt(format!("position {position} is not positive")))?;
    let schema_version = u32::try_from(schema_version)
        .map_err(|_| corrupt(format!("schema version {schema_version} is negative")))?;
    let payload = Payload::from_json_str(&payload).map_err(|e| corrupt(format!("payload: {e}")))?;
    let custom: BTreeMap<String, serde_json::Value> = match custom {
        None => BTreeMap::new(),
        Some(json) => serde_json::from_str(&json)
            .map_err(|e| corrupt(format!("custom metadata is not a JSON object: {e}")))?,
    };
    let metadata = EventMetadata {
        event_id,
        correlation_id: CorrelationId::from_uuid(correlation_id),
        causation_id: causation_id.map(CausationId::from_uuid),
        timestamp: Timestamp::from_datetime(recorded_at),
        custom,
    };
    Ok(RecordedEvent::from_new(
        stream,
        StreamVersion::new(version),
        GlobalPosition::new(position),
        NewEvent::new(event_type, schema_version, payload, metadata),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_round_trips_through_the_sql_format() {
        let c = decode_committed(r#"{"streams": [["a", 2]], "positions": [3, 4]}"#, true).unwrap();
        assert_eq!(c.version_of(&StreamId::try_new("a").unwrap()), Some(StreamVersion::new(2)));
        assert_eq!(c.positions, Some((GlobalPosition::new(3), GlobalPosition::new(4))));
        assert!(c.replayed);
        let empty = decode_committed(r#"{"streams": [], "positions": null}"#, false).unwrap();
        assert_eq!(empty, Committed::default());
        assert!(matches!(decode_committed("{}", false), Err(StoreError::UnreadableRow(_))));
    }
}
