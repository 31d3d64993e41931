//! What crosses the backend boundary on append and read.

use serde::{Deserialize, Serialize};

use crate::{EventId, GlobalPosition, NewEvent, StreamId, StreamVersion};
pub use crate::{
    event::StreamEvents,
    types::{IdempotencyKey, RequestFingerprint},
};

/// One atomic append: the versions the writer read, and the events per stream.
///
/// ```
/// use eventcore::{backend::AppendRequest, StreamId, StreamVersion};
/// let a = StreamId::try_new("a")?;
/// let req = AppendRequest::new().expect(a.clone(), StreamVersion::EMPTY).write(a, vec![]);
/// assert_eq!(req.expected.len(), 1);
/// # Ok::<(), eventcore::ValidationError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct AppendRequest {
    /// Every stream the writer read, with the version it saw.
    pub expected: Vec<(StreamId, StreamVersion)>,
    /// For some of the expected streams, the id of the event the writer saw at the version it
    /// expects (above 0): the append also fails with a
    /// [`Conflict`](super::Conflict) when the stream's event at that version has another id,
    /// even though the version matches (the store lost events the writer saw, and other
    /// writers brought the stream back to the same version). Each entry's stream must be
    /// expected at the entry's version; see [`expect_event`](Self::expect_event). Empty for
    /// most appends: the check then costs nothing.
    pub expected_events: Vec<(StreamId, StreamVersion, EventId)>,
    /// The events to store, per stream, in order.
    pub writes: Vec<(StreamId, Vec<NewEvent>)>,
    /// Makes the append happen at most once: an append with a key that a committed append
    /// already carried writes nothing and returns that append's result, marked
    /// [`Committed::replayed`]. The key is recorded with the append's events, so an append
    /// that writes no events records nothing (it applied nothing), and running it again runs
    /// it again.
    pub idempotency_key: Option<IdempotencyKey>,
    /// What the key is used for, stored with it (only with a key): a backend gives the stored
    /// fingerprint back on a replay, in [`Committed::fingerprint`], and the executor refuses a
    /// key sent with another request than the one it was first used for. `None` stores none;
    /// a replay then answers whatever the request.
    pub fingerprint: Option<RequestFingerprint>,
}

impl AppendRequest {
    /// An empty request.
    ///
    /// ```
    /// assert!(eventcore::backend::AppendRequest::new().writes.is_empty());
    /// ```
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a stream the writer read and the version it saw.
    ///
    /// ```
    /// # use eventcore::{backend::AppendRequest, StreamId, StreamVersion};
    /// let r = AppendRequest::new().expect(StreamId::try_new("a")?, StreamVersion::new(3));
    /// assert_eq!(r.expected[0].1, StreamVersion::new(3));
    /// # Ok::<(), eventcore::ValidationError>(())
    /// ```
    #[must_use]
    pub fn expect(mut self, stream: StreamId, version: StreamVersion) -> Self {
        self.expected.push((stream, version));
        self
    }

    /// Adds a stream the writer read, the version it saw, and the id of the event it saw at
    /// that version (its last one): the append fails with a [`Conflict`](super::Conflict)
    /// unless the stream is still at `version` **and** its event at `version` is still
    /// `event_id`. For a writer that decided on a copy of the stream kept from earlier (a
    /// cache) rather than read now: a store restored from a backup, or failed over to a replica
    /// that missed the last commits, may since have lost that event, and other writers may
    /// have brought the stream back to the same version with other events. The conflict then
    /// reports `expected` and `actual` both at `version`.
    ///
    /// `version` must be above 0 (an empty stream has no event to name):
    /// [`validate`](Self::validate) refuses the request otherwise.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// use eventcore::backend::{AppendRequest, Backend, StoreError};
    /// use eventcore::{CorrelationId, EventMetadata, Memory, NewEvent, Payload, StreamId, StreamVersion};
    /// let event = || {
    ///     let payload = Payload::to_json(&1)?;
    ///     Ok::<_, serde_json::Error>(NewEvent::new("Noted", 1, payload, EventMetadata::new(CorrelationId::new())))
    /// };
    /// let (store, a) = (Memory::new(), StreamId::try_new("a")?);
    /// let first = event()?;
    /// let seen = first.metadata.event_id;
    /// store.append(AppendRequest::new().expect(a.clone(), StreamVersion::EMPTY).write(a.clone(), vec![first])).await?;
    ///
    /// // Decided on the stream as it was, with `seen` at version 1: commits.
    /// let on_seen = AppendRequest::new()
    ///     .expect_event(a.clone(), StreamVersion::new(1), seen)
    ///     .write(a.clone(), vec![event()?]);
    /// store.append(on_seen).await?;
    ///
    /// // Version 2 holds another event than the one named: a conflict, nothing written.
    /// let on_other = AppendRequest::new()
    ///     .expect_event(a.clone(), StreamVersion::new(2), seen)
    ///     .write(a.clone(), vec![event()?]);
    /// let Err(StoreError::Conflict(c)) = store.append(on_other).await else { panic!() };
    /// assert_eq!((c.expected, c.actual), (StreamVersion::new(2), StreamVersion::new(2)));
    /// assert_eq!(store.len(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
    /// ```
    #[must_use]
    pub fn expect_event(
        mut self,
        stream: StreamId,
        version: StreamVersion,
        event_id: EventId,
    ) -> Self {
        self.expected.push((stream.clone(), version));
        self.expected_events.push((stream, version, event_id));
        self
    }

    /// Adds events for one stream.
    ///
    /// ```
    /// # use eventcore::{backend::AppendRequest, StreamId};
    /// let r = AppendRequest::new().write(StreamId::try_new("a")?, vec![]);
    /// assert_eq!(r.writes.len(), 1);
    /// # Ok::<(), eventcore::ValidationError>(())
    /// ```
    #[must_use]
    pub fn write(mut self, stream: StreamId, events: Vec<NewEvent>) -> Self {
        self.writes.push((stream, events));
        self
    }

    /// Sets the idempotency key.
    ///
    /// ```
    /// # use eventcore::backend::{AppendRequest, IdempotencyKey};
    /// let r = AppendRequest::new().idempotent(IdempotencyKey::try_new("k")?);
    /// assert!(r.idempotency_key.is_some());
    /// # Ok::<(), eventcore::ValidationError>(())
    /// ```
    #[must_use]
    pub fn idempotent(mut self, key: IdempotencyKey) -> Self {
        self.idempotency_key = Some(key);
        self
    }

    /// Sets what the idempotency key is used for (see [`fingerprint`](Self::fingerprint)).
    ///
    /// ```
    /// # use eventcore::{backend::{AppendRequest, IdempotencyKey, RequestFingerprint}, StreamId};
    /// let r = AppendRequest::new()
    ///     .idempotent(IdempotencyKey::try_new("k")?)
    ///     .fingerprinted(RequestFingerprint::of("Deposit", &[StreamId::try_new("a")?]));
    /// assert!(r.fingerprint.is_some());
    /// # Ok::<(), eventcore::ValidationError>(())
    /// ```
    #[must_use]
    pub fn fingerprinted(mut self, fingerprint: RequestFingerprint) -> Self {
        self.fingerprint = Some(fingerprint);
        self
    }

    /// The number of events in the request.
    ///
    /// ```
    /// assert_eq!(eventcore::backend::AppendRequest::new().event_count(), 0);
    /// ```
    #[must_use]
    pub fn event_count(&self) -> usize {
        self.writes.iter().map(|(_, e)| e.len()).sum()
    }

    /// Checks the request's shape (not the store's state): a
    /// [`fingerprint`](Self::fingerprint) comes only with a key, every written stream has an
    /// expected version, no stream is expected at two different versions, every entry of
    /// [`expected_events`](Self::expected_events) names a stream expected at its version, above
    /// 0, and no stream's event there is named by two different ids, no event is larger than
    /// `max_payload` bytes (its payload, its event type and its custom metadata as JSON text,
    /// together) nor all of them together larger than `max_request` bytes, no event is stamped before 4714-11-24 BC (PostgreSQL keeps no
    /// earlier time), no payload or custom metadata nests arrays and objects deeper than
    /// [`MAX_JSON_DEPTH`] levels (deeper JSON is written, but `serde_json` refuses to read it
    /// back, so the event could never be decoded, and on PostgreSQL its whole stream would fail
    /// to read), no more than [`MAX_EVENTS_PER_APPEND`] events are written, no stream is
    /// expected above version 2^63 - 1 and no event has a schema version above 2^31 - 1 (the
    /// limits of PostgreSQL's columns, checked on every backend so that all accept the same
    /// requests), and no event type or custom metadata (a key, or a string anywhere in a value)
    /// contains U+0000 (NUL), which PostgreSQL cannot keep in `text`, nor in `jsonb` (to which
    /// tools reading the table often convert custom metadata): every backend refuses it, so
    /// that all behave alike. (A payload may hold NUL: its JSON
    /// text carries it as the escape `\u0000`, which every backend keeps as written.) Backends
    /// call this before touching the store.
    ///
    /// # Errors
    /// [`StoreError::InvalidAppend`](super::StoreError::InvalidAppend) naming the offending
    /// stream (and event, for a NUL),
    /// [`StoreError::PayloadTooLarge`](super::StoreError::PayloadTooLarge), or
    /// [`StoreError::RequestTooLarge`](super::StoreError::RequestTooLarge).
    ///
    /// ```
    /// # use eventcore::{backend::AppendRequest, CorrelationId, EventMetadata, NewEvent, Payload};
    /// # use eventcore::{StreamId, StreamVersion};
    /// let r = AppendRequest::new().write(StreamId::try_new("unread")?, vec![]);
    /// assert!(r.validate(1024, 4096).is_err());
    ///
    /// let meta = EventMetadata::new(CorrelationId::new()).with_custom("user", "al\0ice");
    /// let event = NewEvent::new("Noted", 1, Payload::to_json(&1).unwrap(), meta);
    /// let s = StreamId::try_new("s")?;
    /// let r = AppendRequest::new().expect(s.clone(), StreamVersion::EMPTY).write(s, vec![event]);
    /// assert!(r.validate(1024, 4096).unwrap_err().to_string().contains("U+0000"));
    ///
    /// // Each event within 1 KiB, all three together above 2 KiB.
    /// let big = || {
    ///     let payload = Payload::to_json(&"x".repeat(1000)).unwrap();
    ///     NewEvent::new("Noted", 1, payload, EventMetadata::new(CorrelationId::new()))
    /// };
    /// let s = StreamId::try_new("s")?;
    /// let r = AppendRequest::new().expect(s.clone(), StreamVersion::EMPTY).write(s, vec![big(), big(), big()]);
    /// assert!(r.validate(1024, 4096).is_ok());
    /// assert!(r.validate(1024, 2048).unwrap_err().to_string().contains("the limit on one append is 2048"));
    /// # Ok::<(), eventcore::ValidationError>(())
    /// ```
    pub fn validate(
        &self,
        max_payload: usize,
        max_request: usize,
    ) -> Result<(), super::StoreError> {
        let twice = |stream: &StreamId| {
            super::StoreError::InvalidAppend(format!(
                "stream `{stream}` is expected at two different versions"
            ))
        };
        if self.fingerprint.is_some() && self.idempotency_key.is_none() {
            return Err(super::StoreError::InvalidAppend(
                "a request fingerprint is given without an idempotency key: it is stored only \
                 with a key"
                    .into(),
            ));
        }
        // Most requests expect a handful of streams: a scan beats hashing their ids (and the map
        // is made only past a handful: making one seeds its hasher).
        let mut index: Option<std::collections::HashMap<_, _, foldhash::fast::RandomState>> =
            (self.expected.len() > LINEAR_SCAN).then(std::collections::HashMap::default);
        let mut highest = 0;
        for (i, (stream, version)) in self.expected.iter().enumerate() {
            highest = highest.max(version.get());
            if let Some(index) = index.as_mut() {
                if let Some(seen) = index.insert(stream, version) {
                    if seen != version {
                        return Err(twice(stream));
                    }
                }
            } else if self.expected[..i].iter().any(|(s, v)| s == stream && v != version) {
                return Err(twice(stream));
            }
        }
        let expected_of = |stream: &StreamId| match &index {
            Some(index) => index.get(stream).copied(),
            None => self.expected.iter().find(|(s, _)| s == stream).map(|(_, v)| v),
        };
        // Hashed only past a handful (built only then: a map seeds its hasher when made).
        let mut events: Option<std::collections::HashMap<_, _, foldhash::fast::RandomState>> =
            (self.expected_events.len() > LINEAR_SCAN).then(std::collections::HashMap::default);
        for (i, (stream, version, id)) in self.expected_events.iter().enumerate() {
            let invalid = |why: &str| {
                Err(super::StoreError::InvalidAppend(format!(
                    "stream `{stream}` is expected to hold event {id} at version {version}, {why}"
                )))
            };
            if version.get() == 0 {
                return invalid("but version 0 holds no event");
            }
            if expected_of(stream) != Some(version) {
                return invalid("but is not expected at that version");
            }
            let twice = if let Some(events) = events.as_mut() {
                events.insert(stream, id).is_some_and(|other| other != id)
            } else {
                self.expected_events[..i].iter().any(|(s, _, other)| s == stream && other != id)
            };
            if twice {
                return invalid("and another event too");
            }
        }
        if highest > MAX_EXPECTED_VERSION {
            if let Some((stream, version)) =
                self.expected.iter().find(|(_, v)| v.get() > MAX_EXPECTED_VERSION)
            {
                return Err(super::StoreError::InvalidAppend(format!(
                    "stream `{stream}` is expected at version {version}, above \
                     {MAX_EXPECTED_VERSION}, the highest a store keeps"
                )));
            }
        }
        let count = self.event_count();
        if count > MAX_EVENTS_PER_APPEND {
            return Err(super::StoreError::InvalidAppend(format!(
                "an append holds at most {MAX_EVENTS_PER_APPEND} events, not {count}; split it \
                 into several commands"
            )));
        }
        // Only when all the request's events on top of its highest expected version could pass
        // the highest version a store keeps (never, in practice) are they counted per stream.
        let near_the_top = highest.saturating_add(count as u64) > MAX_EXPECTED_VERSION;
        for (i, (stream, _)) in self.writes.iter().enumerate() {
            let Some(expected) = expected_of(stream) else {
                return Err(super::StoreError::InvalidAppend(format!(
                    "stream `{stream}` is written but has no expected version"
                )));
            };
            if !near_the_top {
                continue;
            }
            // The version the stream would reach (a stream may be written more than once): past
            // the highest a store keeps, the request is refused whatever the stream holds, on
            // every backend (PostgreSQL could not number the events).
            let written: u64 = self.writes[..=i]
                .iter()
                .filter(|(s, _)| s == stream)
                .map(|(_, e)| e.len() as u64)
                .sum();
            if expected.get().saturating_add(written) > MAX_EXPECTED_VERSION {
                return Err(super::StoreError::InvalidAppend(format!(
                    "stream `{stream}` would outgrow its version: expected at {expected}, with \
                     {written} more events, above {MAX_EXPECTED_VERSION}, the highest a store keeps"
                )));
            }
        }
        // The size of the whole request, checked once every event is within its own limit.
        let mut total: usize = 0;
        for (stream, events) in &self.writes {
            for e in events {
                let size = stored_size(e);
                if size > max_payload {
                    return Err(super::StoreError::PayloadTooLarge {
                        stream: stream.clone(),
                        event_id: e.metadata.event_id,
                        size,
                        limit: max_payload,
                    });
                }
                total = total.saturating_add(size);
            }
            for e in events {
                if e.schema_version > MAX_SCHEMA_VERSION {
                    return Err(super::StoreError::InvalidAppend(format!(
                        "event {} for stream `{stream}` has schema version {}, above \
                         {MAX_SCHEMA_VERSION}, the highest a store keeps",
                        e.metadata.event_id, e.schema_version
                    )));
                }
                if e.metadata.timestamp.as_datetime().timestamp() < EARLIEST_SECONDS {
                    return Err(super::StoreError::InvalidAppend(format!(
                        "event {} for stream `{stream}`: its timestamp {} is before \
                         4714-11-24 BC, the earliest PostgreSQL keeps",
                        e.metadata.event_id,
                        e.metadata.timestamp.as_datetime()
                    )));
                }
                if let Some(place) = too_deep(e) {
                    return Err(super::StoreError::InvalidAppend(format!(
                        "event {} for stream `{stream}`: {place} nests arrays and objects more \
                         than {MAX_JSON_DEPTH} levels deep, which cannot be read back",
                        e.metadata.event_id
                    )));
                }
                if let Some(place) = nul_in(e) {
                    return Err(super::StoreError::InvalidAppend(format!(
                        "event {} for stream `{stream}`: {place} contains U+0000 (NUL), which \
                         not every store can keep (PostgreSQL refuses it in text and jsonb)",
                        e.metadata.event_id
                    )));
                }
            }
        }
        if total > max_request {
            return Err(super::StoreError::RequestTooLarge { size: total, limit: max_request });
        }
        Ok(())
    }
}

/// What `max_payload` limits: the bytes an event brings of its own, its payload's JSON text,
/// its event type and its custom metadata as JSON text (the fields the store keeps for it
/// whatever their size; ids, versions and times are of a fixed size). The metadata is
/// measured only when it has custom fields.
fn stored_size(event: &NewEvent) -> usize {
    /// Counts what is written to it, keeping nothing.
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 = self.0.saturating_add(bytes.len());
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let custom = &event.metadata.custom;
    let mut count = Count(0);
    if !custom.is_empty() {
        // A map of strings to JSON values always serializes: counting cannot fail.
        let _ = serde_json::to_writer(&mut count, custom);
    }
    event.payload.len().saturating_add(event.event_type.len()).saturating_add(count.0)
}

/// Up to this many expected streams, `validate` scans instead of hashing.
const LINEAR_SCAN: usize = 16;

/// The earliest time PostgreSQL's `timestamptz` holds, 4714-11-24 BC at midnight UTC, in
/// seconds since the Unix epoch: every backend refuses an event stamped earlier. (The latest
/// time `chrono` holds is earlier than PostgreSQL's latest.)
const EARLIEST_SECONDS: i64 = -210_866_803_200;

/// The most events one append may hold, on every backend: PostgreSQL numbers the events of one
/// transaction within 16 bits of their global position, and the memory store refuses the same,
/// so that code tested on it does not fail in production.
///
/// ```
/// assert_eq!(eventcore::backend::MAX_EVENTS_PER_APPEND, 65_535);
/// ```
pub const MAX_EVENTS_PER_APPEND: usize = 65_535;

/// The limit on a whole append's size on every backend unless the store sets another (see
/// [`max_request`]).
pub(crate) const DEFAULT_MAX_REQUEST: usize = 64 << 20;

/// The limit on a whole append's size for a store that set `set` (`None`: none), and takes
/// events of at most `max_payload`: [`DEFAULT_MAX_REQUEST`], or `max_payload` when that is
/// higher (an event the store takes alone fits in an append).
pub(crate) fn max_request(set: Option<usize>, max_payload: usize) -> usize {
    set.unwrap_or_else(|| DEFAULT_MAX_REQUEST.max(max_payload))
}

/// The highest version a stream may be expected at, and the highest schema version an event may
/// carry, are PostgreSQL's `bigint` and `integer` maxima; [`AppendRequest::validate`] refuses
/// more on every backend.
const MAX_EXPECTED_VERSION: u64 = i64::MAX as u64;
const MAX_SCHEMA_VERSION: u32 = i32::MAX as u32;

/// The deepest nesting of arrays and objects a stored JSON document (an event's payload, or its
/// custom metadata as one object) may have: `serde_json` reads no deeper, so
/// [`AppendRequest::validate`] refuses more.
///
/// ```
/// assert_eq!(eventcore::backend::MAX_JSON_DEPTH, 127);
/// ```
pub const MAX_JSON_DEPTH: usize = 127;

/// Where `event` nests JSON deeper than [`MAX_JSON_DEPTH`], if it does: its payload, or a
/// custom metadata field (the fields together are one object, one level).
fn too_deep(event: &NewEvent) -> Option<String> {
    fn deeper(value: &serde_json::Value, room: usize) -> bool {
        match value {
            serde_json::Value::Array(items) => {
                room == 0 || items.iter().any(|v| deeper(v, room - 1))
            }
            serde_json::Value::Object(map) => {
                room == 0 || map.values().any(|v| deeper(v, room - 1))
            }
            _ => false,
        }
    }
    if text_deeper(event.payload.as_str(), MAX_JSON_DEPTH) {
        return Some("its payload".into());
    }
    event.metadata.custom.iter().find_map(|(k, v)| {
        deeper(v, MAX_JSON_DEPTH - 1).then(|| format!("the custom metadata field {k:?}"))
    })
}

/// Whether the JSON text `json` nests arrays and objects more than `limit` levels deep. Text
/// shorter than two bytes a level cannot, and is not scanned.
fn text_deeper(json: &str, limit: usize) -> bool {
    if json.len() <= 2 * limit {
        return false;
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in json.as_bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Where `event` holds U+0000 outside its payload, if it does: its type, or a custom metadata
/// field (its key, or a string anywhere in its value).
fn nul_in(event: &NewEvent) -> Option<String> {
    fn in_value(value: &serde_json::Value) -> bool {
        match value {
            serde_json::Value::String(s) => s.contains('\0'),
            serde_json::Value::Array(items) => items.iter().any(in_value),
            serde_json::Value::Object(map) => {
                map.iter().any(|(k, v)| k.contains('\0') || in_value(v))
            }
            _ => false,
        }
    }
    if event.event_type.contains('\0') {
        return Some("the event type".into());
    }
    event.metadata.custom.iter().find_map(|(k, v)| {
        (k.contains('\0') || in_value(v)).then(|| format!("the custom metadata field {k:?}"))
    })
}

/// The result of a successful append.
///
/// ```
/// use eventcore::backend::Committed;
/// let c = Committed::default();
/// assert!(!c.replayed);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Committed {
    /// The new version of each written stream.
    pub streams: Vec<(StreamId, StreamVersion)>,
    /// The positions of the first and last stored event, if any were stored.
    pub positions: Option<(GlobalPosition, GlobalPosition)>,
    /// True when the idempotency key had been seen: nothing new was stored and this describes
    /// the first commit. That commit may be this very execution's: when an append's reply is
    /// lost and the executor tries again, the store answers the second try with the first
    /// one's commit, marked replayed. So `replayed` does not tell whether a request was new;
    /// no answer can, since a reply lost on its way to the client looks the same to it. Do not
    /// decide side effects (an email, a payment call) on it: drive them from the log, with a
    /// projection or a process manager.
    #[serde(skip)]
    pub replayed: bool,
    /// On a replay, the [`fingerprint`](AppendRequest::fingerprint) stored with the key by the
    /// first commit, if it gave one; `None` otherwise.
    #[serde(skip)]
    pub fingerprint: Option<RequestFingerprint>,
}

impl Committed {
    /// Assembles a result (for backends).
    ///
    /// ```
    /// let c = eventcore::backend::Committed::new(vec![], None);
    /// assert!(c.streams.is_empty());
    /// ```
    #[must_use]
    pub fn new(
        streams: Vec<(StreamId, StreamVersion)>,
        positions: Option<(GlobalPosition, GlobalPosition)>,
    ) -> Self {
        Self { streams, positions, replayed: false, fingerprint: None }
    }

    /// The version a written stream reached, if it was written.
    ///
    /// ```
    /// # use eventcore::{backend::Committed, StreamId, StreamVersion};
    /// let a = StreamId::try_new("a")?;
    /// let c = Committed::new(vec![(a.clone(), StreamVersion::new(2))], None);
    /// assert_eq!(c.version_of(&a), Some(StreamVersion::new(2)));
    /// # Ok::<(), eventcore::ValidationError>(())
    /// ```
    #[must_use]
    pub fn version_of(&self, stream: &StreamId) -> Option<StreamVersion> {
        self.streams.iter().find(|(s, _)| s == stream).map(|(_, v)| *v)
    }
}

#[cfg(test)]
mod tests {
    use super::IdempotencyKey;

    #[test]
    fn keys_are_kept_byte_for_byte_or_refused_never_trimmed() {
        for raw in ["k", "k 1", "'; --", "🔑\u{200D}x", "ü".repeat(127).as_str()] {
            let key = IdempotencyKey::try_new(raw).unwrap();
            assert_eq!(key.as_str().as_bytes(), raw.as_bytes());
            let json = serde_json::to_string(&key).unwrap();
            assert_eq!(serde_json::from_str::<IdempotencyKey>(&json).unwrap(), key);
        }
        for raw in ["", " k", "k ", "k\t", "k\u{3000}", "\u{FEFF}k", "k\0", "a\u{2066}b"] {
            let err = IdempotencyKey::try_new(raw).unwrap_err();
            assert_eq!(err.type_name(), "IdempotencyKey");
            let json = serde_json::to_string(raw).unwrap();
            assert!(serde_json::from_str::<IdempotencyKey>(&json).is_err(), "{raw:?}");
        }
        assert_eq!(
            IdempotencyKey::try_new("ü".repeat(128)).unwrap_err().reason(),
            "is 256 bytes long; at most 255"
        );
    }
}

#[cfg(test)]
mod validation {
    use super::*;

    fn id(n: usize) -> StreamId {
        StreamId::try_new(format!("s-{n}")).unwrap()
    }

    /// Both ways `validate` indexes the expected streams (a scan for a few, a map for many)
    /// refuse the same mistakes.
    #[test]
    fn few_and_many_expected_streams_are_checked_alike() {
        for n in [1, LINEAR_SCAN, LINEAR_SCAN + 1, 100] {
            let expect_all = |mut r: AppendRequest| {
                for i in 0..n {
                    r = r.expect(id(i), StreamVersion::new(i as u64));
                }
                r
            };
            assert!(
                expect_all(AppendRequest::new())
                    .write(id(n - 1), vec![])
                    .validate(64, usize::MAX)
                    .is_ok()
            );
            // The same stream at the same version twice is fine.
            let again = expect_all(AppendRequest::new()).expect(id(0), StreamVersion::new(0));
            assert!(again.validate(64, usize::MAX).is_ok(), "n = {n}");
            let twice = expect_all(AppendRequest::new()).expect(id(0), StreamVersion::new(7));
            let err = twice.validate(64, usize::MAX).unwrap_err().to_string();
            assert!(err.contains("`s-0` is expected at two different versions"), "n = {n}: {err}");
            let unread = expect_all(AppendRequest::new()).write(id(n), vec![]);
            let err = unread.validate(64, usize::MAX).unwrap_err().to_string();
            assert!(err.contains(&format!("`s-{n}` is written but has no expected")), "{err}");
        }
    }
}

#[cfg(test)]
mod depth_tests {
    use super::text_deeper;

    #[test]
    fn brackets_in_strings_do_not_count_and_escapes_end_no_string() {
        let deep = format!("{}1{}", "[".repeat(128), "]".repeat(128));
        assert!(text_deeper(&deep, 127));
        let ok = format!("{}1{}", "[".repeat(127), "]".repeat(127));
        assert!(!text_deeper(&ok, 127));
        let objects = format!("{}1{}", r#"{"a":"#.repeat(128), "}".repeat(128));
        assert!(text_deeper(&objects, 127));
        // 300 brackets inside a string, after an escaped quote and an escaped backslash.
        let quoted = format!(r#"["a\"b\\", "{}"]"#, "[".repeat(300));
        assert!(!text_deeper(&quoted, 127));
    }
}

#[cfg(test)]
mod time_tests {
    #[test]
    fn the_earliest_time_is_4714_11_24_bc() {
        let earliest = chrono::NaiveDate::from_ymd_opt(-4713, 11, 24)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| t.and_utc().timestamp());
        assert_eq!(earliest, Some(super::EARLIEST_SECONDS));
    }
}
