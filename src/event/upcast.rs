//! Upcasting: reading events stored in an older shape, or under an older name, as the current
//! event type.

use std::{fmt, marker::PhantomData};

use serde::de::DeserializeOwned;

use super::{DecodeError, Event, RecordedEvent};
use crate::EventId;

/// What one stored event becomes when read as the current event type: nothing (the event no
/// longer matters), one event, or several (the old event was split).
///
/// **The split rule.** The parts of a split stored event share its event id, stream version,
/// global position and metadata: they are folded, delivered and applied one after the other,
/// in order, at the place of the stored event. Versions and positions count stored events, not
/// parts, so a command's expected version, a subscription's checkpoint and the stream cache's
/// decoded copy (one entry per stored event) are unaffected by splits and drops.
///
/// ```
/// use eventcore::Upcast;
/// let split = Upcast::One(1).and_then(|n| Upcast::Split(vec![n, n + 1]));
/// assert_eq!(split.as_slice(), [1, 2]);
/// assert!(Upcast::<u8>::Dropped.as_slice().is_empty());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upcast<E> {
    /// The stored event is not read any more (it no longer matters).
    Dropped,
    /// The stored event reads as one event.
    One(E),
    /// The stored event reads as several events, in this order.
    Split(Vec<E>),
}

impl<E> Upcast<E> {
    /// The events, in order.
    ///
    /// ```
    /// assert_eq!(eventcore::Upcast::One(3).as_slice(), [3]);
    /// ```
    #[must_use]
    pub fn as_slice(&self) -> &[E] {
        match self {
            Self::Dropped => &[],
            Self::One(e) => std::slice::from_ref(e),
            Self::Split(es) => es,
        }
    }

    /// How many events.
    ///
    /// ```
    /// assert_eq!(eventcore::Upcast::Split(vec![1, 2]).len(), 2);
    /// ```
    #[must_use]
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// Whether the stored event was dropped (or split into nothing).
    ///
    /// ```
    /// assert!(eventcore::Upcast::<u8>::Dropped.is_empty());
    /// ```
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }

    /// Converts each event.
    ///
    /// ```
    /// assert_eq!(eventcore::Upcast::One(2).map(|n| n * 10), eventcore::Upcast::One(20));
    /// ```
    #[must_use]
    pub fn map<F>(self, mut f: impl FnMut(E) -> F) -> Upcast<F> {
        match self {
            Self::Dropped => Upcast::Dropped,
            Self::One(e) => Upcast::One(f(e)),
            Self::Split(es) => Upcast::Split(es.into_iter().map(f).collect()),
        }
    }

    /// Upcasts each event further and flattens: the next link of a chain
    /// (`v1 -> v2 -> current`), where any link may drop or split.
    ///
    /// ```
    /// use eventcore::Upcast;
    /// let two = Upcast::Split(vec![1, 2]).and_then(|n| if n == 1 { Upcast::Dropped } else { Upcast::One(n) });
    /// assert_eq!(two, Upcast::Split(vec![2]));
    /// ```
    #[must_use]
    pub fn and_then<F>(self, mut f: impl FnMut(E) -> Upcast<F>) -> Upcast<F> {
        match self {
            Self::Dropped => Upcast::Dropped,
            Self::One(e) => f(e),
            Self::Split(es) => {
                Upcast::Split(es.into_iter().flat_map(|e| f(e).into_iter()).collect())
            }
        }
    }
}

impl<E> From<E> for Upcast<E> {
    fn from(event: E) -> Self {
        Self::One(event)
    }
}

impl<E> IntoIterator for Upcast<E> {
    type Item = E;
    type IntoIter = std::iter::Chain<std::option::IntoIter<E>, std::vec::IntoIter<E>>;

    fn into_iter(self) -> Self::IntoIter {
        match self {
            Self::Dropped => None.into_iter().chain(Vec::new()),
            Self::One(e) => Some(e).into_iter().chain(Vec::new()),
            Self::Split(es) => None.into_iter().chain(es),
        }
    }
}

/// An older stored shape of the event type `E`: what events stored with schema version
/// [`VERSION`](Self::VERSION) look like, and what each becomes in `E`'s current shape.
///
/// Chain shapes by letting each convert into the next (`impl From<V1> for V2`) and upcast
/// through it, so each change is written once:
///
/// ```
/// use eventcore::{Shape, Upcast};
/// # use eventcore::Event;
/// # #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
/// # struct Renamed { name: String }
/// # impl Event for Renamed { const EVENT_TYPE: &'static str = "Renamed"; const SCHEMA_VERSION: u32 = 3; }
/// #[derive(serde::Deserialize)]
/// struct V1 { title: String }
/// #[derive(serde::Deserialize)]
/// struct V2 { title: String, lang: String }
///
/// impl From<V1> for V2 {
///     fn from(v1: V1) -> Self { V2 { title: v1.title, lang: "en".into() } }
/// }
/// impl Shape<Renamed> for V1 {
///     const VERSION: u32 = 1;
///     fn upcast(self) -> Upcast<Renamed> { V2::from(self).upcast() }
/// }
/// impl Shape<Renamed> for V2 {
///     const VERSION: u32 = 2;
///     fn upcast(self) -> Upcast<Renamed> { Upcast::One(Renamed { name: self.title }) }
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an older shape of the event type `{E}`",
    label = "no `Shape<{E}>` impl",
    note = "add `impl Shape<{E}> for {Self} {{ const VERSION: u32 = ..; fn upcast(self) -> Upcast<{E}> {{ .. }} }}`",
    note = "see the book chapter \"Evolving events and snapshots\""
)]
pub trait Shape<E>: DeserializeOwned {
    /// The schema version events of this shape were stored with.
    const VERSION: u32;

    /// What the stored event becomes in the current shape.
    fn upcast(self) -> Upcast<E>;
}

/// A list of [`Shape`]s of `E`, as a tuple `(V1, V2, ...)`: what
/// [`Stored::upcast_with`] reads stored events with. Machinery; implemented for tuples of up to
/// eight shapes.
///
/// A type in the list that is not a [`Shape`] of `E` does not compile:
///
/// ```compile_fail
/// # use eventcore::{DecodeError, Event, Stored, Upcast};
/// # #[derive(serde::Serialize, serde::Deserialize)] struct Ping;
/// #[derive(serde::Deserialize)]
/// struct NotAShape;
///
/// impl Event for Ping {
///     const EVENT_TYPE: &'static str = "Ping";
///     const SCHEMA_VERSION: u32 = 2;
///     fn upcast(stored: Stored<'_, Self>) -> Result<Upcast<Self>, DecodeError> {
///         stored.upcast_with::<(NotAShape,)>() // no `Shape<Ping>` impl
///     }
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a list of older shapes of the event type `{E}`",
    label = "expected a tuple of `Shape<{E}>` types, such as `(V1, V2)`",
    note = "a single shape is written `(V1,)`; see the book chapter \"Evolving events and snapshots\""
)]
pub trait Shapes<E> {
    /// The shapes' versions, in the list's order.
    #[doc(hidden)]
    const VERSIONS: &'static [u32] = &[];

    /// Reads `stored` with the shape of its schema version, `None` when no shape has it.
    #[doc(hidden)]
    fn read(stored: &Stored<'_, E>) -> Option<Result<Upcast<E>, DecodeError>>;
}

impl<E> Shapes<E> for () {
    fn read(_: &Stored<'_, E>) -> Option<Result<Upcast<E>, DecodeError>> {
        None
    }
}

/// Whether no version in `versions` is above `current` and none comes twice: a shape whose
/// version another one before it has is never read (the first one reads its events), and one
/// newer than the current version is never read either (such an event is
/// [`DecodeError::FutureVersion`] before any shape is asked).
const fn distinct_and_known(versions: &[u32], current: u32) -> bool {
    let mut i = 0;
    while i < versions.len() {
        if versions[i] > current {
            return false;
        }
        let mut j = 0;
        while j < i {
            if versions[j] == versions[i] {
                return false;
            }
            j += 1;
        }
        i += 1;
    }
    true
}

macro_rules! shapes {
    ($($s:ident),+) => {
        impl<E: Event, $($s: Shape<E>),+> Shapes<E> for ($($s,)+) {
            const VERSIONS: &'static [u32] = &[$($s::VERSION),+];

            fn read(stored: &Stored<'_, E>) -> Option<Result<Upcast<E>, DecodeError>> {
                $(
                    if stored.schema_version() == $s::VERSION {
                        return Some(stored.parse::<$s>().map(Shape::upcast));
                    }
                )+
                None
            }
        }
    };
}

shapes!(A);
shapes!(A, B);
shapes!(A, B, C);
shapes!(A, B, C, D);
shapes!(A, B, C, D, F);
shapes!(A, B, C, D, F, G);
shapes!(A, B, C, D, F, G, H);
shapes!(A, B, C, D, F, G, H, I);

/// A stored event that [`Event::upcast`] is asked to read as `E`: one of an older schema
/// version, or stored under one of `E`'s [former names](Event::FORMER_TYPES).
///
/// ```
/// # use eventcore::*;
/// # #[derive(serde::Serialize, serde::Deserialize)] struct Ping;
/// # impl Event for Ping { const EVENT_TYPE: &'static str = "Ping"; }
/// let new = NewEvent::new("Ping", 1, Payload::to_json(&())?, EventMetadata::new(CorrelationId::new()));
/// let rec = RecordedEvent::from_new(StreamId::try_new("s")?, StreamVersion::new(1), GlobalPosition::new(1), new);
/// let stored = Stored::<Ping>::new(&rec);
/// assert_eq!((stored.event_type(), stored.schema_version()), ("Ping", 1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Stored<'a, E> {
    event: &'a RecordedEvent,
    _reader: PhantomData<fn() -> E>,
}

impl<'a, E> Stored<'a, E> {
    /// Wraps a stored event (for tests of an upcaster; decoding does it for you).
    #[must_use]
    pub fn new(event: &'a RecordedEvent) -> Self {
        Self { event, _reader: PhantomData }
    }

    /// The stored type name (the current one, or a former one).
    #[must_use]
    pub fn event_type(&self) -> &'a str {
        &self.event.event_type
    }

    /// The stored schema version.
    #[must_use]
    pub fn schema_version(&self) -> u32 {
        self.event.schema_version
    }

    /// The stored event's id.
    #[must_use]
    pub fn event_id(&self) -> EventId {
        self.event.event_id()
    }

    /// The whole stored event (stream, version, position, metadata, payload).
    #[must_use]
    pub fn recorded(&self) -> &'a RecordedEvent {
        self.event
    }
}

impl<E: Event> Stored<'_, E> {
    /// Reads the payload as `T` (an older shape, or `serde_json::Value` for a hand-written
    /// upcaster).
    ///
    /// # Errors
    /// [`DecodeError::Malformed`] when the payload does not have that shape.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, DecodeError> {
        serde_json::from_str(self.event.payload.as_str()).map_err(|e| DecodeError::Malformed {
            event_id: self.event.event_id(),
            event_type: E::EVENT_TYPE,
            reason: e.to_string(),
        })
    }

    /// Reads the event with the shape of its schema version among `S` (a tuple of [`Shape`]s),
    /// or, when it is at `E`'s current version (an event under a former name), as `E` itself.
    ///
    /// Each shape in `S` has a version of its own, not above [`Event::SCHEMA_VERSION`]: a list
    /// where two shapes have one version (the second would never be read, its events read as
    /// the first's shape), or a shape is newer than the type (never read: such an event is
    /// [`DecodeError::FutureVersion`]), does not build.
    ///
    /// # Errors
    /// [`DecodeError::Malformed`] when the payload does not have the shape;
    /// [`DecodeError::UnknownSchemaVersion`] when no shape has the stored version.
    ///
    /// ```compile_fail
    /// # use eventcore::*;
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Ping;
    /// #[derive(serde::Deserialize)]
    /// struct V1;
    /// #[derive(serde::Deserialize)]
    /// struct V2;
    /// impl Shape<Ping> for V1 {
    ///     const VERSION: u32 = 1;
    ///     fn upcast(self) -> Upcast<Ping> { Upcast::One(Ping) }
    /// }
    /// impl Shape<Ping> for V2 {
    ///     const VERSION: u32 = 1; // copied from V1, never changed: V2 would never be read
    ///     fn upcast(self) -> Upcast<Ping> { Upcast::One(Ping) }
    /// }
    /// impl Event for Ping {
    ///     const EVENT_TYPE: &'static str = "Ping";
    ///     const SCHEMA_VERSION: u32 = 3;
    ///     fn upcast(stored: Stored<'_, Self>) -> Result<Upcast<Self>, DecodeError> {
    ///         stored.upcast_with::<(V1, V2)>()
    ///     }
    /// }
    /// # let new = NewEvent::new("Ping", 2, Payload::to_json(&())?, EventMetadata::new(CorrelationId::new()));
    /// # let rec = RecordedEvent::from_new(StreamId::try_new("s")?, StreamVersion::new(1), GlobalPosition::new(1), new);
    /// # let _ = rec.decode::<Ping>();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// ```compile_fail
    /// # use eventcore::*;
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Ping;
    /// #[derive(serde::Deserialize)]
    /// struct V1;
    /// impl Shape<Ping> for V1 {
    ///     const VERSION: u32 = 3; // newer than `Ping` (a typo for 1?): never read
    ///     fn upcast(self) -> Upcast<Ping> { Upcast::One(Ping) }
    /// }
    /// impl Event for Ping {
    ///     const EVENT_TYPE: &'static str = "Ping";
    ///     const SCHEMA_VERSION: u32 = 2;
    ///     fn upcast(stored: Stored<'_, Self>) -> Result<Upcast<Self>, DecodeError> {
    ///         stored.upcast_with::<(V1,)>()
    ///     }
    /// }
    /// # let new = NewEvent::new("Ping", 1, Payload::to_json(&())?, EventMetadata::new(CorrelationId::new()));
    /// # let rec = RecordedEvent::from_new(StreamId::try_new("s")?, StreamVersion::new(1), GlobalPosition::new(1), new);
    /// # let _ = rec.decode::<Ping>();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn upcast_with<S: Shapes<E>>(&self) -> Result<Upcast<E>, DecodeError> {
        const {
            assert!(
                distinct_and_known(S::VERSIONS, E::SCHEMA_VERSION),
                "the shapes passed to `upcast_with` must each have their own `VERSION`, not \
                 above the event type's `SCHEMA_VERSION`"
            );
        }
        if let Some(read) = S::read(self) {
            return read;
        }
        if self.schema_version() == E::SCHEMA_VERSION {
            return self.parse::<E>().map(Upcast::One);
        }
        Err(self.no_reader())
    }

    /// The error for a schema version nobody reads: [`DecodeError::UnknownSchemaVersion`].
    #[must_use]
    pub fn no_reader(&self) -> DecodeError {
        DecodeError::UnknownSchemaVersion {
            event_id: self.event.event_id(),
            event_type: E::EVENT_TYPE,
            version: self.schema_version(),
        }
    }
}

impl<E> fmt::Debug for Stored<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stored")
            .field("event_id", &self.event.event_id())
            .field("event_type", &self.event.event_type)
            .field("schema_version", &self.event.schema_version)
            .finish()
    }
}
