//! Events: the typed [`Event`] trait and the serialized forms that cross a backend.

use std::{fmt, sync::Arc};

use serde::{Serialize, de::DeserializeOwned};
use serde_json::value::RawValue;

use crate::types::{EventId, EventMetadata, GlobalPosition, StreamId, StreamVersion};

mod finite;
mod upcast;

pub use upcast::{Shape, Shapes, Stored, Upcast};

/// A type of event that a stream carries.
///
/// An event type is stored under the name [`Event::EVENT_TYPE`] and a
/// [`schema version`](Event::SCHEMA_VERSION). Stored events are never rewritten: when the
/// shape of an event changes, raise the version and teach [`Event::upcast`] to read the old
/// shapes (see [`Shape`]); when the type is renamed, list its old names in
/// [`Event::FORMER_TYPES`]. The book chapter "Evolving events and snapshots" walks through it.
///
/// ```
/// use eventcore::Event;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// pub enum CounterEvent {
///     Incremented { by: u32 },
/// }
///
/// impl Event for CounterEvent {
///     const EVENT_TYPE: &'static str = "CounterEvent";
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an event type",
    label = "`{Self}` does not implement `Event`",
    note = "derive it beside serde's: `#[derive(Serialize, Deserialize, Event)]`; a slot of many streams names its event type in brackets, `slot!(pub Name: [EventType])`, not as a `Vec`",
    note = "see the book chapter \"Commands and slots\""
)]
pub trait Event: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The stable name the store files this type under.
    const EVENT_TYPE: &'static str;

    /// The current version of the serialized shape; starts at 1.
    ///
    /// Raise it when old payloads no longer deserialize as the type (and read them through
    /// [`Event::upcast`]), and also when this code writes payloads the previous release
    /// cannot read, a new variant say: at an unchanged version the previous release (during a
    /// rolling deploy, after a rollback) takes such an event for a malformed one
    /// ([`DecodeError::Malformed`], which a projection may park) rather than a newer one
    /// ([`DecodeError::FutureVersion`], which nothing skips), and restores command snapshots
    /// this code folded from it (their key names the schema version). See the book chapter
    /// "Evolving events and snapshots".
    const SCHEMA_VERSION: u32 = 1;

    /// A fingerprint of the type's definition, which [`#[derive(Event)]`](macro@crate::Event)
    /// computes from its variants and fields as written (names, field types, discriminants
    /// and `#[serde(..)]` attributes; not doc comments or layout); `0`, the default, for a
    /// hand-written impl, which has none.
    ///
    /// Command snapshots are keyed by it beside the schema version
    /// ([`snapshot_key`](crate::executor::snapshot_key)): two releases whose definitions of
    /// the type differ (one added a variant and kept the version, say) never restore each
    /// other's snapshots, so the older one, during a rolling deploy or after a rollback, does
    /// not decide on a state folded from events it cannot read; it reads the streams and
    /// fails on such an event, as it would without snapshots. It does not see into the types
    /// the fields name: a change there still calls for a new
    /// [`SCHEMA_VERSION`](Self::SCHEMA_VERSION), as does any change for a hand-written impl.
    /// Any change to the definition makes the next command of each snapshotted stream fold
    /// its history once (and take a new snapshot).
    ///
    /// ```
    /// use eventcore::Event;
    /// mod v1 {
    ///     #[derive(serde::Serialize, serde::Deserialize, eventcore::Event)]
    ///     #[event(name = "AccountEvent")]
    ///     pub enum AccountEvent { Opened, Closed }
    /// }
    /// mod v2 {
    ///     #[derive(serde::Serialize, serde::Deserialize, eventcore::Event)]
    ///     #[event(name = "AccountEvent")]
    ///     pub enum AccountEvent { Opened, Frozen, Closed }
    /// }
    /// assert_ne!(v1::AccountEvent::FINGERPRINT, v2::AccountEvent::FINGERPRINT);
    /// assert_eq!(v1::AccountEvent::SCHEMA_VERSION, v2::AccountEvent::SCHEMA_VERSION);
    /// ```
    const FINGERPRINT: u64 = 0;

    /// Names this type was stored under before it was renamed. Events stored under them are
    /// read through [`Event::upcast`] (whatever their schema version, up to the current one),
    /// and typed subscriptions read them too.
    const FORMER_TYPES: &'static [&'static str] = &[];

    /// Reads a stored event that is not in the current shape: one written under an older
    /// `schema_version` (below [`Event::SCHEMA_VERSION`]) or under a
    /// [former name](Event::FORMER_TYPES). It may become one event, several (a split) or none
    /// (a dropped event): see [`Upcast`] for the rule the parts of a split follow.
    ///
    /// Declare the old shapes as [`Shape`]s and read with [`Stored::upcast_with`]; the default
    /// reads no old shape.
    ///
    /// # Errors
    /// [`DecodeError`] when the old payload cannot be turned into the current shape.
    ///
    /// ```
    /// use eventcore::{DecodeError, Event, Shape, Stored, Upcast};
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Serialize, Deserialize, Debug, PartialEq)]
    /// struct Renamed { name: String }
    ///
    /// /// Version 1 called the field `title`.
    /// #[derive(Deserialize)]
    /// struct RenamedV1 { title: String }
    ///
    /// impl Shape<Renamed> for RenamedV1 {
    ///     const VERSION: u32 = 1;
    ///     fn upcast(self) -> Upcast<Renamed> { Upcast::One(Renamed { name: self.title }) }
    /// }
    ///
    /// impl Event for Renamed {
    ///     const EVENT_TYPE: &'static str = "Renamed";
    ///     const SCHEMA_VERSION: u32 = 2;
    ///     fn upcast(stored: Stored<'_, Self>) -> Result<Upcast<Self>, DecodeError> {
    ///         stored.upcast_with::<(RenamedV1,)>()
    ///     }
    /// }
    ///
    /// # use eventcore::*;
    /// let old = NewEvent::new("Renamed", 1, Payload::from_json_str(r#"{"title":"x"}"#)?, EventMetadata::new(CorrelationId::new()));
    /// let rec = RecordedEvent::from_new(StreamId::try_new("s")?, StreamVersion::new(1), GlobalPosition::new(1), old);
    /// assert_eq!(rec.decode::<Renamed>()?, Renamed { name: "x".into() });
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn upcast(stored: Stored<'_, Self>) -> Result<Upcast<Self>, DecodeError> {
        stored.upcast_with::<()>()
    }
}

/// Why a stored event could not be read as the event type a reader expects.
///
/// ```
/// let event_id = eventcore::EventId::new();
/// let e = eventcore::DecodeError::Malformed { event_id, event_type: "A", reason: "oops".into() };
/// assert_eq!(e.to_string(), format!("event {event_id}: payload does not match `A`: oops"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The stored event type is neither the reader's type nor one of its former names.
    UnknownType {
        /// The stored event.
        event_id: EventId,
        /// What the store holds.
        event_type: String,
        /// Its stored schema version.
        version: u32,
        /// The type the reader expected.
        expected: &'static str,
    },
    /// The stored schema version is newer than this code's: written by newer code.
    FutureVersion {
        /// The stored event.
        event_id: EventId,
        /// Its stored type name.
        event_type: String,
        /// Its stored schema version.
        version: u32,
        /// The newest version this code reads ([`Event::SCHEMA_VERSION`]).
        newest: u32,
    },
    /// The stored schema version is older, and the type's upcaster has no reader for it.
    UnknownSchemaVersion {
        /// The stored event.
        event_id: EventId,
        /// The event type.
        event_type: &'static str,
        /// The stored version.
        version: u32,
    },
    /// The stored event upcasts to no event or to several, and was read as exactly one
    /// ([`RecordedEvent::decode`]); read it with [`RecordedEvent::decode_all`].
    NotOne {
        /// The stored event.
        event_id: EventId,
        /// The event type.
        event_type: &'static str,
        /// How many events it reads as.
        count: usize,
    },
    /// The payload does not match the type's shape.
    Malformed {
        /// The stored event.
        event_id: EventId,
        /// The event type.
        event_type: &'static str,
        /// What serde said.
        reason: String,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownType { event_id, event_type, version, expected } => write!(
                f,
                "event {event_id} has type `{event_type}` (schema version {version}), which `{expected}` does not read"
            ),
            Self::FutureVersion { event_id, event_type, version, newest } => write!(
                f,
                "event {event_id} of type `{event_type}` has schema version {version}, newer than the {newest} this code reads (written by newer code)"
            ),
            Self::UnknownSchemaVersion { event_id, event_type, version } => write!(
                f,
                "event {event_id}: event type `{event_type}` has no reader for schema version {version}"
            ),
            Self::NotOne { event_id, event_type, count } => write!(
                f,
                "event {event_id} reads as {count} events of `{event_type}`, not one (read it with `decode_all`)"
            ),
            Self::Malformed { event_id, event_type, reason } => {
                write!(f, "event {event_id}: payload does not match `{event_type}`: {reason}")
            }
        }
    }
}

impl std::error::Error for DecodeError {
    /// A marker for an event of a kind this code does not know
    /// ([`is_unknown_kind`](DecodeError::is_unknown_kind)), so that it still shows in the chain
    /// of an error that wraps this one with `#[error(transparent)]` (which forwards `source()`
    /// past the error it holds): a projection runner finds it there and never parks such an
    /// event. `None` otherwise.
    ///
    /// ```
    /// use std::error::Error;
    /// # let event_id = eventcore::EventId::new();
    /// let e = eventcore::DecodeError::UnknownSchemaVersion { event_id, event_type: "A", version: 9 };
    /// assert_eq!(
    ///     e.source().map(|s| s.to_string()).as_deref(),
    ///     Some("an event of a kind this code does not know: not to be skipped, newer code reads it")
    /// );
    /// let e = eventcore::DecodeError::Malformed { event_id, event_type: "A", reason: "oops".into() };
    /// assert!(e.source().is_none());
    /// ```
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        if self.is_unknown_kind() { Some(&UnknownKind) } else { None }
    }
}

/// The `source()` of a [`DecodeError`] for an event of a kind this code does not know: a newer
/// schema version, or a type the reader does not read. It marks the error chain of whatever
/// wraps such a decode error, `#[error(transparent)]` included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UnknownKind;

impl fmt::Display for UnknownKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "an event of a kind this code does not know: not to be skipped, newer code reads it",
        )
    }
}

impl std::error::Error for UnknownKind {}

impl DecodeError {
    /// Whether the event is of a kind this code does not know (a newer schema version, or a
    /// type the reader does not read), as opposed to a broken payload: readers must not skip
    /// such an event, newer code reads it.
    ///
    /// ```
    /// # let event_id = eventcore::EventId::new();
    /// let e = eventcore::DecodeError::Malformed { event_id, event_type: "A", reason: "oops".into() };
    /// assert!(!e.is_unknown_kind());
    /// ```
    #[must_use]
    pub fn is_unknown_kind(&self) -> bool {
        matches!(
            self,
            Self::UnknownType { .. }
                | Self::FutureVersion { .. }
                | Self::UnknownSchemaVersion { .. }
        )
    }
}

/// A serialized event payload: JSON text, shared cheaply between clones.
///
/// ```
/// let p = eventcore::Payload::from_json_str(r#"{"a":1}"#)?;
/// assert_eq!(p.as_str(), r#"{"a":1}"#);
/// assert!(eventcore::Payload::from_json_str("{oops").is_err());
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone)]
pub struct Payload(Arc<str>);

thread_local! {
    /// Where [`Payload::to_json`] writes before the text is copied into its shared
    /// allocation, reused so that serializing an event allocates once.
    static SCRATCH: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// The largest scratch buffer kept for the next event: a bigger one (left by a large event)
/// is freed.
const SCRATCH_KEPT: usize = 64 * 1024;

impl Payload {
    /// Serializes a value.
    ///
    /// # Errors
    /// What `serde_json` reports (for example a map with non-string keys), and a float that is
    /// NaN or infinite anywhere in the value: JSON has no such number, and `serde_json` alone
    /// would write it as `null`, which could never be read back into the float it was (an event
    /// stored so would fail every later fold of its stream).
    ///
    /// ```
    /// let p = eventcore::Payload::to_json(&vec![1.5, 2.0])?;
    /// assert_eq!(p.as_str(), "[1.5,2.0]");
    /// assert!(eventcore::Payload::to_json(&vec![1.5, f64::NAN]).is_err());
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        // Taken rather than borrowed: a `Serialize` impl that serializes a payload of its own
        // gets an empty buffer, not a panic.
        let mut scratch = SCRATCH.take();
        scratch.clear();
        // Through `finite`: serde_json alone writes a NaN or an infinity as `null`, which no
        // float field can be read back from.
        let written = finite::serialize(value, &mut serde_json::Serializer::new(&mut scratch));
        // serde_json writes UTF-8; checked rather than assumed (this crate has no unsafe code).
        let payload = written.and_then(|()| match std::str::from_utf8(&scratch) {
            Ok(text) => Ok(Self(Arc::from(text))),
            Err(e) => Err(serde::ser::Error::custom(e)),
        });
        if scratch.capacity() <= SCRATCH_KEPT {
            SCRATCH.set(scratch);
        }
        payload
    }

    /// Checks and wraps JSON text.
    ///
    /// # Errors
    /// When `json` is not valid JSON, or escapes a lone UTF-16 surrogate (`"\ud800"`: valid JSON
    /// syntax, but no character, so no string can be read back from it, and PostgreSQL's `json`
    /// refuses it). A surrogate pair (`"\ud83d\ude00"`) is kept as written.
    ///
    /// ```
    /// assert!(eventcore::Payload::from_json_str("null").is_ok());
    /// assert!(eventcore::Payload::from_json_str(r#""\ud83d\ude00""#).is_ok()); // a pair: 😀
    /// assert!(eventcore::Payload::from_json_str(r#""\ud83d""#).is_err()); // half of one
    /// ```
    pub fn from_json_str(json: &str) -> Result<Self, serde_json::Error> {
        // Kept without the whitespace around the value, as serde_json's `RawValue` keeps it.
        let raw: &RawValue = serde_json::from_str(json)?;
        if lone_surrogate(raw.get()) {
            return Err(serde::de::Error::custom(
                "the JSON escapes a lone UTF-16 surrogate (\\uD800 to \\uDFFF outside a pair), \
                 which is no character: no string can be read back from it, and PostgreSQL \
                 refuses it",
            ));
        }
        Ok(Self(Arc::from(raw.get())))
    }

    /// The JSON text.
    ///
    /// ```
    /// assert_eq!(eventcore::Payload::to_json(&true)?.as_str(), "true");
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The size of the JSON text in bytes.
    ///
    /// ```
    /// assert_eq!(eventcore::Payload::to_json(&"ab")?.len(), 4);
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    #[must_use]
    #[allow(clippy::len_without_is_empty)] // JSON text is never empty
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// Whether the JSON text `json` holds a `\uXXXX` escape of a UTF-16 surrogate that is not half
/// of a pair: JSON text can spell one, but it is no character, so no string can be read back
/// from it (`serde_json` refuses it) and PostgreSQL's `json` refuses to store it. Text without
/// a backslash has no escape, and is not walked.
fn lone_surrogate(json: &str) -> bool {
    let bytes = json.as_bytes();
    if !bytes.contains(&b'\\') {
        return false;
    }
    // The code unit of a `\uXXXX` escape starting at `at` (the backslash), if there is one.
    let unit = |at: usize| -> Option<u16> {
        let hex = bytes.get(at..at + 6)?;
        if hex[0] != b'\\' || hex[1] != b'u' {
            return None;
        }
        u16::from_str_radix(std::str::from_utf8(&hex[2..]).ok()?, 16).ok()
    };
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            i += 1;
            continue;
        }
        match unit(i) {
            Some(0xD800..=0xDBFF) => match unit(i + 6) {
                Some(0xDC00..=0xDFFF) => i += 12,
                _ => return true,
            },
            Some(0xDC00..=0xDFFF) => return true,
            Some(_) => i += 6,
            // Any other escape is two bytes (`\"`, `\\`, `\n`, ..).
            None => i += 2,
        }
    }
    false
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

/// An event ready to append: serialized, typed by name, with its metadata.
///
/// ```
/// use eventcore::{CorrelationId, EventMetadata, NewEvent, Payload};
///
/// let e = NewEvent::new("Pinged", 1, Payload::to_json(&())?, EventMetadata::new(CorrelationId::new()));
/// assert_eq!(&*e.event_type, "Pinged");
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct NewEvent {
    /// The stored type name.
    pub event_type: Arc<str>,
    /// The schema version of the payload.
    pub schema_version: u32,
    /// The JSON payload.
    pub payload: Payload,
    /// Ids, correlation, time and custom fields.
    pub metadata: EventMetadata,
}

impl NewEvent {
    /// Assembles an event to append.
    ///
    /// ```
    /// # use eventcore::{CorrelationId, EventMetadata, NewEvent, Payload};
    /// let e = NewEvent::new("T", 2, Payload::to_json(&1)?, EventMetadata::new(CorrelationId::new()));
    /// assert_eq!(e.schema_version, 2);
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    #[must_use]
    pub fn new(
        event_type: impl Into<Arc<str>>,
        schema_version: u32,
        payload: Payload,
        metadata: EventMetadata,
    ) -> Self {
        Self { event_type: event_type.into(), schema_version, payload, metadata }
    }

    /// Serializes a typed event.
    ///
    /// # Errors
    /// When serde cannot serialize it.
    ///
    /// ```
    /// # use eventcore::{CorrelationId, Event, EventMetadata, NewEvent};
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Ping;
    /// # impl Event for Ping { const EVENT_TYPE: &'static str = "Ping"; }
    /// let e = NewEvent::from_event(&Ping, EventMetadata::new(CorrelationId::new()))?;
    /// assert_eq!(e.payload.as_str(), "null");
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn from_event<E: Event>(
        event: &E,
        metadata: EventMetadata,
    ) -> Result<Self, serde_json::Error> {
        let payload = Payload::to_json(event)?;
        Ok(Self::typed(E::EVENT_TYPE, E::SCHEMA_VERSION, payload, metadata))
    }

    /// [`NewEvent::new`] for a type name known at compile time (an [`Event::EVENT_TYPE`]):
    /// its shared copy is made once per thread, not once per event.
    pub(crate) fn typed(
        event_type: &'static str,
        schema_version: u32,
        payload: Payload,
        metadata: EventMetadata,
    ) -> Self {
        Self { event_type: shared_type_name(event_type), schema_version, payload, metadata }
    }
}

thread_local! {
    /// The type names [`shared_type_name`] has shared on this thread, by address.
    static TYPE_NAMES: std::cell::RefCell<Vec<(&'static str, Arc<str>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// How many type names one thread keeps shared copies of; names past it get a copy per event.
const TYPE_NAMES_KEPT: usize = 64;

/// A shared copy of a type name known at compile time, made once per thread and name.
fn shared_type_name(name: &'static str) -> Arc<str> {
    let found = TYPE_NAMES.with(|names| {
        let mut names = names.try_borrow_mut().ok()?;
        // The same address and length is the same text; the same text elsewhere is only
        // another entry.
        if let Some((_, shared)) = names.iter().find(|(n, _)| std::ptr::eq(*n, name)) {
            return Some(Arc::clone(shared));
        }
        let shared: Arc<str> = Arc::from(name);
        if names.len() < TYPE_NAMES_KEPT {
            names.push((name, Arc::clone(&shared)));
        }
        Some(shared)
    });
    found.unwrap_or_else(|| Arc::from(name))
}

/// An event as the store holds it.
///
/// ```
/// use eventcore::{backend::{AppendRequest, Backend}, CorrelationId, EventMetadata, Memory, NewEvent, Payload, StreamId, StreamVersion};
///
/// # tokio_test();
/// # fn tokio_test() { tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let store = Memory::new();
/// let id = StreamId::try_new("s")?;
/// let event = NewEvent::new("T", 1, Payload::to_json(&1)?, EventMetadata::new(CorrelationId::new()));
/// store.append(AppendRequest::new().expect(id.clone(), StreamVersion::EMPTY).write(id.clone(), vec![event])).await?;
/// let read = store.read(&[id]).await?;
/// assert_eq!(read[0].events[0].version, StreamVersion::new(1));
/// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap() }
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RecordedEvent {
    /// The stream the event belongs to.
    pub stream_id: StreamId,
    /// Its version in that stream (1, 2, ...).
    pub version: StreamVersion,
    /// Its place in the store-wide order.
    pub position: GlobalPosition,
    /// The stored type name.
    pub event_type: Arc<str>,
    /// The schema version of the payload.
    pub schema_version: u32,
    /// The JSON payload.
    pub payload: Payload,
    /// Ids, correlation, time and custom fields.
    pub metadata: EventMetadata,
}

impl RecordedEvent {
    /// Assembles a stored event (for backends).
    ///
    /// ```
    /// # use eventcore::*;
    /// let new = NewEvent::new("T", 1, Payload::to_json(&1)?, EventMetadata::new(CorrelationId::new()));
    /// let rec = RecordedEvent::from_new(StreamId::try_new("s")?, StreamVersion::new(1), GlobalPosition::new(1), new);
    /// assert_eq!(rec.event_type.as_ref(), "T");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn from_new(
        stream_id: StreamId,
        version: StreamVersion,
        position: GlobalPosition,
        event: NewEvent,
    ) -> Self {
        Self {
            stream_id,
            version,
            position,
            event_type: event.event_type,
            schema_version: event.schema_version,
            payload: event.payload,
            metadata: event.metadata,
        }
    }

    /// The event's id.
    ///
    /// ```
    /// # use eventcore::*;
    /// # let new = NewEvent::new("T", 1, Payload::to_json(&1)?, EventMetadata::new(CorrelationId::new()));
    /// # let id = new.metadata.event_id;
    /// # let rec = RecordedEvent::from_new(StreamId::try_new("s")?, StreamVersion::new(1), GlobalPosition::new(1), new);
    /// assert_eq!(rec.event_id(), id);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn event_id(&self) -> EventId {
        self.metadata.event_id
    }

    /// Reads the payload as exactly one `E`, upcasting older schema versions and former type
    /// names.
    ///
    /// # Errors
    /// [`DecodeError`] when the type name, schema version or payload does not fit `E`, and
    /// [`DecodeError::NotOne`] when the upcaster drops the event or splits it into several
    /// (read those with [`decode_all`](Self::decode_all)); a split into one is that one.
    ///
    /// ```
    /// # use eventcore::*;
    /// # #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)] struct Ping(u8);
    /// # impl Event for Ping { const EVENT_TYPE: &'static str = "Ping"; }
    /// let new = NewEvent::from_event(&Ping(3), EventMetadata::new(CorrelationId::new()))?;
    /// let rec = RecordedEvent::from_new(StreamId::try_new("s")?, StreamVersion::new(1), GlobalPosition::new(1), new);
    /// assert_eq!(rec.decode::<Ping>()?, Ping(3));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn decode<E: Event>(&self) -> Result<E, DecodeError> {
        let count = match self.decode_all::<E>()? {
            Upcast::One(event) => return Ok(event),
            // A split into one event (an `and_then` chain, a split built at run time) is one.
            Upcast::Split(events) => match <[E; 1]>::try_from(events) {
                Ok([event]) => return Ok(event),
                Err(events) => events.len(),
            },
            Upcast::Dropped => 0,
        };
        Err(DecodeError::NotOne { event_id: self.event_id(), event_type: E::EVENT_TYPE, count })
    }

    /// Reads the payload as `E`: one event, or, through [`Event::upcast`], none or several
    /// (which share this event's id, version and position; see [`Upcast`]).
    ///
    /// # Errors
    /// [`DecodeError::UnknownType`] when the stored type is neither `E`'s nor a former name
    /// of it, [`DecodeError::FutureVersion`] when the stored schema version is newer than
    /// `E`'s, and what the payload or the upcaster reports.
    ///
    /// ```
    /// # use eventcore::*;
    /// # #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)] struct Ping(u8);
    /// # impl Event for Ping { const EVENT_TYPE: &'static str = "Ping"; }
    /// let new = NewEvent::new("Ping", 2, Payload::to_json(&Ping(3))?, EventMetadata::new(CorrelationId::new()));
    /// let rec = RecordedEvent::from_new(StreamId::try_new("s")?, StreamVersion::new(1), GlobalPosition::new(1), new);
    /// assert!(matches!(rec.decode_all::<Ping>(), Err(DecodeError::FutureVersion { version: 2, .. })));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn decode_all<E: Event>(&self) -> Result<Upcast<E>, DecodeError> {
        if self.schema_version == E::SCHEMA_VERSION && &*self.event_type == E::EVENT_TYPE {
            return serde_json::from_str(self.payload.as_str()).map(Upcast::One).map_err(|e| {
                DecodeError::Malformed {
                    event_id: self.event_id(),
                    event_type: E::EVENT_TYPE,
                    reason: e.to_string(),
                }
            });
        }
        self.upcast::<E>()
    }

    /// [`decode_all`](Self::decode_all) for an event not in `E`'s current shape.
    #[cold]
    fn upcast<E: Event>(&self) -> Result<Upcast<E>, DecodeError> {
        let known = &*self.event_type == E::EVENT_TYPE
            || E::FORMER_TYPES.iter().any(|former| *former == &*self.event_type);
        if !known {
            return Err(DecodeError::UnknownType {
                event_id: self.event_id(),
                event_type: self.event_type.to_string(),
                version: self.schema_version,
                expected: E::EVENT_TYPE,
            });
        }
        if self.schema_version > E::SCHEMA_VERSION {
            return Err(DecodeError::FutureVersion {
                event_id: self.event_id(),
                event_type: self.event_type.to_string(),
                version: self.schema_version,
                newest: E::SCHEMA_VERSION,
            });
        }
        E::upcast(Stored::new(self))
    }
}

/// One stream as read: its version at read time and its events.
///
/// ```
/// use eventcore::{backend::StreamEvents, StreamId, StreamVersion};
/// let s = StreamEvents::new(StreamId::try_new("a")?, StreamVersion::EMPTY, vec![]);
/// assert!(s.events.is_empty());
/// # Ok::<(), eventcore::ValidationError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StreamEvents {
    /// The stream.
    pub stream_id: StreamId,
    /// Its version when read (the version of its last event, 0 when empty).
    pub version: StreamVersion,
    /// Its events, in version order.
    pub events: Vec<RecordedEvent>,
}

impl StreamEvents {
    /// Assembles a read result (for backends).
    ///
    /// ```
    /// # use eventcore::{backend::StreamEvents, StreamId, StreamVersion};
    /// let s = StreamEvents::new(StreamId::try_new("a")?, StreamVersion::new(0), vec![]);
    /// assert_eq!(s.version, StreamVersion::EMPTY);
    /// # Ok::<(), eventcore::ValidationError>(())
    /// ```
    #[must_use]
    pub fn new(stream_id: StreamId, version: StreamVersion, events: Vec<RecordedEvent>) -> Self {
        Self { stream_id, version, events }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn lone_surrogates_are_found_and_pairs_and_other_escapes_are_not() {
        use super::lone_surrogate;
        for lone in [
            r#""\ud800""#,
            r#""\uDBFF x""#,
            r#""\udc00""#,
            r#"{"a":["ok","\ud83d"]}"#,
            r#""\ud83d\u0041""#,
            r#""\ud83d\ud83d\ude00""#,
            r#""\\\ud800""#,
        ] {
            assert!(lone_surrogate(lone), "{lone}");
        }
        for fine in [
            r#""plain""#,
            r#""\ud83d\ude00""#,
            r#""\u0041\n\t\"\\""#,
            r#""\\ud800""#,
            r#""\\\\ud800""#,
            r#""😀 é""#,
            r#""\u00e9\uD83D\uDE00""#,
        ] {
            assert!(!lone_surrogate(fine), "{fine}");
        }
    }

    use std::collections::HashMap;

    use super::*;

    /// A value whose serialization serializes a payload of its own on the way.
    struct Nested(u32);

    impl Serialize for Nested {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let inner = Payload::to_json(&[self.0, self.0]).map_err(serde::ser::Error::custom)?;
            s.serialize_str(inner.as_str())
        }
    }

    #[test]
    fn a_payload_serialized_inside_another_ones_serialization_is_whole_and_so_is_the_outer() {
        let outer = Payload::to_json(&vec![Nested(1), Nested(22)]).unwrap();
        assert_eq!(outer.as_str(), r#"["[1,1]","[22,22]"]"#);
        // And the next one starts clean.
        assert_eq!(Payload::to_json(&"x").unwrap().as_str(), r#""x""#);
    }

    #[test]
    fn a_failed_serialization_leaves_nothing_behind_for_the_next() {
        let bad: HashMap<Vec<u8>, u8> = HashMap::from([(vec![1], 1)]);
        assert!(Payload::to_json(&bad).is_err());
        assert_eq!(Payload::to_json(&[7]).unwrap().as_str(), "[7]");
    }

    #[test]
    fn a_large_payload_is_whole_and_a_small_one_after_it_is_exact() {
        let big = "é".repeat(100_000);
        let payload = Payload::to_json(&big).unwrap();
        assert_eq!(payload.len(), big.len() + 2);
        assert_eq!(serde_json::from_str::<String>(payload.as_str()).unwrap(), big);
        assert_eq!(Payload::to_json(&1).unwrap().as_str(), "1");
    }

    #[test]
    fn a_type_name_is_shared_between_events_and_equal_to_the_name() {
        let meta = || EventMetadata::new(crate::CorrelationId::new());
        let payload = || Payload::to_json(&1).unwrap();
        let a = NewEvent::typed("Deposited", 1, payload(), meta());
        let b = NewEvent::typed("Deposited", 1, payload(), meta());
        assert_eq!(&*a.event_type, "Deposited");
        assert!(Arc::ptr_eq(&a.event_type, &b.event_type), "one shared copy per name");
        let other = NewEvent::typed("Withdrawn", 1, payload(), meta());
        assert_eq!(&*other.event_type, "Withdrawn");
        // Past the names kept, each event gets its own copy, still equal to its name.
        let names: Vec<&'static str> =
            (0..100).map(|i| &*Box::leak(format!("T{i}").into_boxed_str())).collect();
        for name in &names {
            assert_eq!(&*NewEvent::typed(name, 1, payload(), meta()).event_type, *name);
        }
        let last = names[99];
        let (x, y) = (
            NewEvent::typed(last, 1, payload(), meta()),
            NewEvent::typed(last, 1, payload(), meta()),
        );
        assert_eq!((&*x.event_type, &*y.event_type), (last, last));
    }

    #[test]
    fn json_text_is_checked_and_kept_without_surrounding_whitespace() {
        assert_eq!(Payload::from_json_str(" {\"a\": 1}\n").unwrap().as_str(), "{\"a\": 1}");
        assert!(Payload::from_json_str("{\"a\": 1} x").is_err());
        assert!(Payload::from_json_str("").is_err());
    }
}
