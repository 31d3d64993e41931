//! Events: the typed [`Event`] trait and the serialized forms that cross a backend.

use std::{fmt, sync::Arc};

use serde::{Serialize, de::DeserializeOwned};
use serde_json::value::RawValue;

use crate::types::{EventId, EventMetadata, GlobalPosition, StreamId, StreamVersion};

/// A type of event that a stream carries.
///
/// An event type is stored under the name [`Event::EVENT_TYPE`] and a
/// [`schema version`](Event::SCHEMA_VERSION). When the shape of an event changes, raise the
/// version and teach [`Event::upcast`] to read the old shapes; stored events are never rewritten.
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
pub trait Event: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The stable name the store files this type under.
    const EVENT_TYPE: &'static str;

    /// The current version of the serialized shape; starts at 1.
    const SCHEMA_VERSION: u32 = 1;

    /// Reads a payload written under an older `schema_version` (below
    /// [`Event::SCHEMA_VERSION`]).
    ///
    /// The default refuses: override it when you raise the version.
    ///
    /// # Errors
    /// [`DecodeError`] when the old payload cannot be turned into the current shape.
    ///
    /// ```
    /// use eventcore::{DecodeError, Event};
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Serialize, Deserialize, Debug, PartialEq)]
    /// struct Renamed { name: String }
    ///
    /// impl Event for Renamed {
    ///     const EVENT_TYPE: &'static str = "Renamed";
    ///     const SCHEMA_VERSION: u32 = 2;
    ///     fn upcast(version: u32, payload: serde_json::Value) -> Result<Self, DecodeError> {
    ///         match version {
    ///             // version 1 called the field `title`
    ///             1 => Ok(Renamed { name: payload["title"].as_str().unwrap_or_default().into() }),
    ///             v => Err(DecodeError::UnknownSchemaVersion { event_type: Self::EVENT_TYPE, version: v }),
    ///         }
    ///     }
    /// }
    ///
    /// let old = serde_json::json!({ "title": "x" });
    /// assert_eq!(Renamed::upcast(1, old)?, Renamed { name: "x".into() });
    /// # Ok::<(), DecodeError>(())
    /// ```
    fn upcast(schema_version: u32, payload: serde_json::Value) -> Result<Self, DecodeError> {
        let _ = payload;
        Err(DecodeError::UnknownSchemaVersion {
            event_type: Self::EVENT_TYPE,
            version: schema_version,
        })
    }
}

/// Why a stored event could not be read as the type its stream's slot expects.
///
/// ```
/// let e = eventcore::DecodeError::UnexpectedType { expected: "A", found: "B".into() };
/// assert_eq!(e.to_string(), "expected event type `A`, found `B`");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The stored event type is not the one the slot carries.
    #[error("expected event type `{expected}`, found `{found}`")]
    UnexpectedType {
        /// What the slot's event type is called.
        expected: &'static str,
        /// What the store holds.
        found: String,
    },
    /// The stored schema version is newer than this code, or older and not upcast.
    #[error("event type `{event_type}` has no reader for schema version {version}")]
    UnknownSchemaVersion {
        /// The event type.
        event_type: &'static str,
        /// The stored version.
        version: u32,
    },
    /// The payload does not match the type's shape.
    #[error("payload does not match `{event_type}`: {reason}")]
    Malformed {
        /// The event type.
        event_type: &'static str,
        /// What serde said.
        reason: String,
    },
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
pub struct Payload(Arc<RawValue>);

impl Payload {
    /// Serializes a value.
    ///
    /// # Errors
    /// What `serde_json` reports (for example a map with non-string keys).
    ///
    /// ```
    /// let p = eventcore::Payload::to_json(&vec![1, 2])?;
    /// assert_eq!(p.as_str(), "[1,2]");
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        Ok(Self(Arc::from(serde_json::value::to_raw_value(value)?)))
    }

    /// Checks and wraps JSON text.
    ///
    /// # Errors
    /// When `json` is not valid JSON.
    ///
    /// ```
    /// assert!(eventcore::Payload::from_json_str("null").is_ok());
    /// ```
    pub fn from_json_str(json: &str) -> Result<Self, serde_json::Error> {
        Ok(Self(Arc::from(RawValue::from_string(json.to_owned())?)))
    }

    /// The JSON text.
    ///
    /// ```
    /// assert_eq!(eventcore::Payload::to_json(&true)?.as_str(), "true");
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    #[must_use]
    pub fn as_str(&self) -> &str {
        self.0.get()
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
        self.0.get().len()
    }
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
        Ok(Self::new(E::EVENT_TYPE, E::SCHEMA_VERSION, Payload::to_json(event)?, metadata))
    }
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

    /// Reads the payload as `E`, upcasting older schema versions.
    ///
    /// # Errors
    /// [`DecodeError`] when the type name, schema version or payload does not fit `E`.
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
        if &*self.event_type != E::EVENT_TYPE {
            return Err(DecodeError::UnexpectedType {
                expected: E::EVENT_TYPE,
                found: self.event_type.to_string(),
            });
        }
        let malformed = |e: serde_json::Error| DecodeError::Malformed {
            event_type: E::EVENT_TYPE,
            reason: e.to_string(),
        };
        match self.schema_version {
            v if v == E::SCHEMA_VERSION => {
                serde_json::from_str(self.payload.as_str()).map_err(malformed)
            }
            v if v < E::SCHEMA_VERSION => {
                let value = serde_json::from_str(self.payload.as_str()).map_err(malformed)?;
                E::upcast(v, value)
            }
            v => Err(DecodeError::UnknownSchemaVersion { event_type: E::EVENT_TYPE, version: v }),
        }
    }
}
