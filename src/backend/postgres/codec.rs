//! Turning events into bound parameters and rows back into events.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use sqlx::{Row, postgres::PgRow};
use uuid::Uuid;

use crate::{
    CausationId, CorrelationId, EventId, EventMetadata, GlobalPosition, NewEvent, Payload,
    RecordedEvent, StreamId, StreamVersion, Timestamp,
    backend::{AppendRequest, Committed, RequestFingerprint, StoreError},
};

/// An [`AppendRequest`] as the parallel arrays that the append statements take, with the
/// bookkeeping that needs no data done here: each expected stream once, whether it is written,
/// the advisory lock keys, and the version each event gets if the check in SQL passes.
#[derive(Debug, Default)]
pub(super) struct AppendArgs {
    pub(super) streams: Vec<String>,
    pub(super) expected: Vec<i64>,
    /// The id of the event each stream must hold at its expected version, parallel to
    /// `streams` ([`AppendRequest::expected_events`]); `None` (bound as NULL) when the request
    /// names none, so that the statements skip the check.
    pub(super) expected_ids: Option<Vec<Option<Uuid>>>,
    pub(super) written: Vec<bool>,
    /// The streams' lock keys, sorted, each once, with whether the append writes a stream of
    /// that key (then it is locked exclusively); `None` when there are more than
    /// [`MAX_STREAM_LOCKS`]: the append then takes the schema's append lock instead.
    pub(super) lock_keys: Option<Vec<i32>>,
    pub(super) lock_exclusive: Vec<bool>,
    pub(super) event_streams: Vec<String>,
    pub(super) event_versions: Vec<i64>,
    pub(super) event_ids: Vec<Uuid>,
    pub(super) event_types: Vec<String>,
    pub(super) schema_versions: Vec<i32>,
    pub(super) payloads: Vec<String>,
    pub(super) correlation_ids: Vec<Uuid>,
    pub(super) causation_ids: Vec<Option<Uuid>>,
    pub(super) custom: Vec<Option<String>>,
    pub(super) recorded_at: Vec<DateTime<Utc>>,
    pub(super) key: Option<String>,
    /// The request's fingerprint, stored beside its key (never without one).
    pub(super) fingerprint: Option<String>,
    /// The written streams with their new versions, in first-write order: the result of the
    /// append if it commits.
    pub(super) committed: Vec<(StreamId, StreamVersion)>,
}

/// The most events one append may hold: positions are `xid * 65536 + index` (see the
/// migration). `AppendRequest::validate` refuses more on every backend.
pub(super) use crate::backend::MAX_EVENTS_PER_APPEND;

/// The most streams an append locks one by one (see READ-SET VALIDATION in the migration).
pub(super) const MAX_STREAM_LOCKS: usize = 64;

/// The second half of a stream's advisory lock key: a stable 32-bit hash of its id. Two
/// streams with the same key share a lock, which costs waiting, never correctness.
pub(super) fn lock_key(text: &str) -> i32 {
    super::schema::fold(super::schema::fnv1a(text))
}

/// Sorts `locks` by key and keeps each key once, exclusive when any of its entries is: the
/// order in which an append takes its locks.
pub(super) fn lock_order(mut locks: Vec<(i32, bool)>) -> (Vec<i32>, Vec<bool>) {
    locks.sort_unstable();
    let mut keys: Vec<i32> = Vec::with_capacity(locks.len());
    let mut exclusive: Vec<bool> = Vec::with_capacity(locks.len());
    for (key, x) in locks {
        match (keys.last(), exclusive.last_mut()) {
            (Some(&last), Some(e)) if last == key => *e |= x,
            _ => {
                keys.push(key);
                exclusive.push(x);
            }
        }
    }
    (keys, exclusive)
}

impl AppendArgs {
    /// Flattens a request that already passed [`AppendRequest::validate`] (which refuses more
    /// than [`MAX_EVENTS_PER_APPEND`] events, the most one transaction's positions number).
    pub(super) fn new(request: &AppendRequest) -> Result<Self, StoreError> {
        let n = request.event_count();
        let mut args = Self {
            streams: Vec::with_capacity(request.expected.len()),
            expected: Vec::with_capacity(request.expected.len()),
            expected_ids: None,
            written: Vec::with_capacity(request.expected.len()),
            event_streams: Vec::with_capacity(n),
            event_versions: Vec::with_capacity(n),
            event_ids: Vec::with_capacity(n),
            event_types: Vec::with_capacity(n),
            schema_versions: Vec::with_capacity(n),
            payloads: Vec::with_capacity(n),
            correlation_ids: Vec::with_capacity(n),
            causation_ids: Vec::with_capacity(n),
            custom: Vec::with_capacity(n),
            recorded_at: Vec::with_capacity(n),
            key: request.idempotency_key.as_ref().map(|k| k.as_str().to_owned()),
            fingerprint: (request.fingerprint.as_ref())
                .filter(|_| request.idempotency_key.is_some())
                .map(|f| f.as_str().to_owned()),
            lock_keys: None,
            lock_exclusive: Vec::new(),
            committed: Vec::with_capacity(request.writes.len()),
        };
        // Stream -> its index in `streams`; `current` is each stream's version as the events
        // below are counted onto it.
        let mut index: HashMap<&StreamId, usize> = HashMap::with_capacity(request.expected.len());
        let mut current = Vec::with_capacity(request.expected.len());
        for (stream, version) in &request.expected {
            if index.contains_key(stream) {
                continue; // `validate` made sure both expectations agree
            }
            let v = i64::try_from(version.get()).map_err(|_| {
                StoreError::InvalidAppend(format!(
                    "stream `{stream}` is expected at version {version}, beyond what the store can hold"
                ))
            })?;
            index.insert(stream, args.streams.len());
            args.streams.push(stream.as_str().to_owned());
            args.expected.push(v);
            args.written.push(false);
            current.push(v);
        }
        if !request.expected_events.is_empty() {
            let mut ids = vec![None; args.streams.len()];
            for (stream, _, id) in &request.expected_events {
                // `validate` made sure the stream is expected, at this version, with one id.
                if let Some(&i) = index.get(stream) {
                    ids[i] = Some(id.as_uuid());
                }
            }
            args.expected_ids = Some(ids);
        }
        let mut first_writes = Vec::with_capacity(request.writes.len());
        for (stream, events) in &request.writes {
            let Some(&i) = index.get(stream) else {
                return Err(StoreError::InvalidAppend(format!(
                    "stream `{stream}` is written but has no expected version"
                )));
            };
            // A stream is written once it gets an event: `write(stream, vec![])` writes
            // nothing, so the stream counts as only read (its version is checked like any
            // read stream's) and is not part of the result.
            if !args.written[i] && !events.is_empty() {
                args.written[i] = true;
                first_writes.push((stream, i));
            }
            for event in events {
                current[i] = current[i].checked_add(1).ok_or_else(|| {
                    StoreError::InvalidAppend(format!(
                        "stream `{stream}` would outgrow its version"
                    ))
                })?;
                args.push_event(stream, current[i], event)?;
            }
        }
        if args.streams.len() <= MAX_STREAM_LOCKS {
            let locks = args.streams.iter().map(|s| lock_key(s)).zip(args.written.iter().copied());
            let (keys, exclusive) = lock_order(locks.collect());
            args.lock_keys = Some(keys);
            args.lock_exclusive = exclusive;
        }
        for (stream, i) in first_writes {
            // Non-negative: it grew from a version that came from a `u64`.
            args.committed.push((stream.clone(), StreamVersion::new(current[i].unsigned_abs())));
        }
        Ok(args)
    }

    /// Whether the append writes every stream it expects, and something: then it can go as
    /// the single INSERT statement (see `Statements::append_written`).
    pub(super) fn writes_all_it_expects(&self) -> bool {
        !self.event_ids.is_empty() && self.lock_keys.is_some() && self.written.iter().all(|w| *w)
    }

    /// The INSERT's idempotency columns, one triple per event: the key, the append's number
    /// of events and the request's fingerprint on its first event, NULL on the others (and on
    /// all of them without a key).
    pub(super) fn key_columns(&self) -> impl Iterator<Item = KeyColumns<'_>> {
        let n = self.event_ids.len();
        let first = self.key.as_deref().map(|key| (key, i32::try_from(n).unwrap_or(i32::MAX)));
        let fingerprint = self.fingerprint.as_deref();
        (0..n).map(move |i| match first {
            Some((key, count)) if i == 0 => (Some(key), Some(count), fingerprint),
            _ => (None, None, None),
        })
    }

    fn push_event(
        &mut self,
        stream: &StreamId,
        version: i64,
        event: &NewEvent,
    ) -> Result<(), StoreError> {
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
            Some(serde_json::to_string(&meta.custom).map_err(|e| StoreError::Other(Box::new(e)))?)
        };
        self.event_streams.push(stream.as_str().to_owned());
        self.event_versions.push(version);
        self.event_ids.push(meta.event_id.as_uuid());
        self.event_types.push(event.event_type.to_string());
        self.schema_versions.push(sv);
        self.payloads.push(event.payload.as_str().to_owned());
        self.correlation_ids.push(meta.correlation_id.as_uuid());
        self.causation_ids.push(meta.causation_id.map(CausationId::as_uuid));
        self.custom.push(custom);
        self.recorded_at.push(meta.timestamp.as_datetime());
        Ok(())
    }
}

/// One event's idempotency columns: the key, the append's number of events, the fingerprint.
pub(super) type KeyColumns<'a> = (Option<&'a str>, Option<i32>, Option<&'a str>);

/// The result of an earlier append with the same idempotency key, as `append_result` reads it
/// back (the written streams with their new versions, the positions of the first and last
/// event, and the fingerprint stored with the key), marked [`replayed`](Committed::replayed).
pub(super) fn replayed_committed(
    streams: Vec<String>,
    versions: Vec<i64>,
    first: Option<i64>,
    last: Option<i64>,
    fingerprint: Option<String>,
) -> Result<Committed, StoreError> {
    let unreadable = |reason: String| {
        StoreError::UnreadableRow(format!("stored append result is unreadable: {reason}"))
    };
    if streams.len() != versions.len() {
        return Err(unreadable(format!(
            "{} streams but {} versions",
            streams.len(),
            versions.len()
        )));
    }
    let streams = streams
        .into_iter()
        .zip(versions)
        .map(|(s, v)| {
            let version = u64::try_from(v).map_err(|_| unreadable(format!("version {v}")))?;
            let id = StreamId::try_new(s).map_err(|e| unreadable(e.to_string()))?;
            Ok((id, StreamVersion::new(version)))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let mut committed = Committed::new(streams, positions(first, last)?);
    committed.replayed = true;
    committed.fingerprint = fingerprint
        .map(|f| RequestFingerprint::try_new(f).map_err(|e| unreadable(e.to_string())))
        .transpose()?;
    Ok(committed)
}

/// The first and last position of an append, from their SQL form.
pub(super) fn positions(
    first: Option<i64>,
    last: Option<i64>,
) -> Result<Option<(GlobalPosition, GlobalPosition)>, StoreError> {
    let position = |p: i64| {
        u64::try_from(p)
            .map(GlobalPosition::new)
            .map_err(|_| StoreError::UnreadableRow(format!("position {p} is negative")))
    };
    match (first, last) {
        (Some(a), Some(b)) => Ok(Some((position(a)?, position(b)?))),
        (None, None) => Ok(None),
        other => Err(StoreError::UnreadableRow(format!("half a position range: {other:?}"))),
    }
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
    let recorded_at: Option<DateTime<Utc>> = row.try_get(base + 9).map_err(|e| column(9, e))?;
    let recorded_at = recorded_at.ok_or_else(|| {
        corrupt(
            "recorded_at is not a time this library can hold (infinite, or after 262142)".into(),
        )
    })?;

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
    use crate::IdempotencyKey;

    #[test]
    fn stored_results_decode_and_bad_ones_are_typed_errors() {
        let c = replayed_committed(vec!["a".into()], vec![2], Some(3), Some(4), None).unwrap();
        assert_eq!(c.version_of(&StreamId::try_new("a").unwrap()), Some(StreamVersion::new(2)));
        assert_eq!(c.positions, Some((GlobalPosition::new(3), GlobalPosition::new(4))));
        assert!(c.replayed && c.fingerprint.is_none());
        let empty = Committed { replayed: true, ..Committed::default() };
        assert_eq!(replayed_committed(vec![], vec![], None, None, None).unwrap(), empty);
        let f = replayed_committed(vec![], vec![], None, None, Some("Deposit/0".into())).unwrap();
        assert_eq!(f.fingerprint.unwrap().as_str(), "Deposit/0");
        let bad = [
            replayed_committed(vec!["a".into()], vec![], None, None, None),
            replayed_committed(vec!["a".into()], vec![-1], None, None, None),
            replayed_committed(vec![" ".into()], vec![1], None, None, None),
            replayed_committed(vec![], vec![], Some(1), None, None),
            replayed_committed(vec![], vec![], None, None, Some(String::new())),
        ];
        for b in bad {
            assert!(matches!(b, Err(StoreError::UnreadableRow(_))), "{b:?}");
        }
    }

    fn event(n: u32) -> NewEvent {
        NewEvent::new(
            "E",
            1,
            Payload::to_json(&n).unwrap(),
            EventMetadata::new(CorrelationId::new()),
        )
    }

    #[test]
    fn args_number_events_from_the_expected_version_and_list_each_stream_once() {
        let (a, b, r) = (
            StreamId::try_new("a").unwrap(),
            StreamId::try_new("b").unwrap(),
            StreamId::try_new("r").unwrap(),
        );
        let request = AppendRequest::new()
            .expect(a.clone(), StreamVersion::new(4))
            .expect(r.clone(), StreamVersion::new(9))
            .expect(b.clone(), StreamVersion::EMPTY)
            .expect(a.clone(), StreamVersion::new(4))
            .write(b.clone(), vec![event(1)])
            .write(a.clone(), vec![event(2), event(3)])
            .write(b.clone(), vec![event(4)]);
        let args = AppendArgs::new(&request).unwrap();
        assert_eq!(args.streams, ["a", "r", "b"]);
        assert_eq!(args.expected, [4, 9, 0]);
        assert_eq!(args.written, [true, false, true]);
        assert!(!args.writes_all_it_expects(), "`r` is only read");
        assert_eq!(args.event_streams, ["b", "a", "a", "b"]);
        assert_eq!(args.event_versions, [1, 5, 6, 2]);
        let mut locks = [(lock_key("a"), true), (lock_key("r"), false), (lock_key("b"), true)];
        locks.sort_unstable();
        let keys: Vec<i32> = locks.iter().map(|l| l.0).collect();
        let exclusive: Vec<bool> = locks.iter().map(|l| l.1).collect();
        assert_eq!(args.lock_keys.as_deref(), Some(&keys[..]));
        assert_eq!(args.lock_exclusive, exclusive);
        assert_eq!(args.committed, [(b, StreamVersion::new(2)), (a, StreamVersion::new(6))]);
    }

    #[test]
    fn the_key_the_event_count_and_the_fingerprint_ride_on_the_first_event_only() {
        let s = StreamId::try_new("k").unwrap();
        let request = AppendRequest::new()
            .expect(s.clone(), StreamVersion::EMPTY)
            .write(s.clone(), vec![event(1), event(2), event(3)]);
        let plain = AppendArgs::new(&request).unwrap();
        assert!(plain.key_columns().all(|c| c == (None, None, None)));
        let keyed = request.idempotent(IdempotencyKey::try_new("key-1").unwrap());
        let args = AppendArgs::new(&keyed).unwrap();
        let columns: Vec<_> = args.key_columns().collect();
        let none = (None, None, None);
        assert_eq!(columns, [(Some("key-1"), Some(3), None), none, none]);
        let fingerprint = crate::backend::RequestFingerprint::of("C", &[s]);
        let args = AppendArgs::new(&keyed.fingerprinted(fingerprint.clone())).unwrap();
        let columns: Vec<_> = args.key_columns().collect();
        assert_eq!(columns, [(Some("key-1"), Some(3), Some(fingerprint.as_str())), none, none]);
    }

    #[test]
    fn locks_are_sorted_and_each_key_is_taken_once_in_its_strongest_mode() {
        let (keys, exclusive) = lock_order(vec![(7, false), (-3, false), (7, true), (-3, false)]);
        assert_eq!(keys, [-3, 7]);
        assert_eq!(exclusive, [false, true]);
        assert_eq!(lock_key("account-1"), lock_key("account-1"));
        assert_ne!(lock_key("account-1"), lock_key("account-2"));
    }

    #[test]
    fn an_append_over_many_streams_takes_no_stream_locks() {
        let mut request = AppendRequest::new();
        for i in 0..=MAX_STREAM_LOCKS {
            let s = StreamId::try_new(format!("s-{i}")).unwrap();
            request = request.expect(s.clone(), StreamVersion::EMPTY).write(s, vec![event(1)]);
        }
        let args = AppendArgs::new(&request).unwrap();
        assert_eq!(args.lock_keys, None);
        assert!(!args.writes_all_it_expects());
        let writes_all = AppendRequest::new()
            .expect(StreamId::try_new("a").unwrap(), StreamVersion::EMPTY)
            .write(StreamId::try_new("a").unwrap(), vec![event(1)]);
        assert!(AppendArgs::new(&writes_all).unwrap().writes_all_it_expects());
    }

    /// Refused before it is flattened: `append_request` validates first.
    #[test]
    fn too_many_events_for_one_append_is_a_typed_error() {
        let s = StreamId::try_new("big").unwrap();
        let events = (0..=MAX_EVENTS_PER_APPEND as u32).map(event).collect();
        let request = AppendRequest::new().expect(s.clone(), StreamVersion::EMPTY).write(s, events);
        assert!(matches!(
            request.validate(usize::MAX, usize::MAX),
            Err(StoreError::InvalidAppend(_))
        ));
    }
}
