//! Event, correlation and causation identifiers.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

use super::ValidationError;

/// The unique id of one stored event: a UUID of version 7, so ids sort by creation time.
///
/// Ids made in one process increase in the order they are made, on every thread: each
/// carries its millisecond and a counter within it (RFC 9562, section 6.2, method 1), then
/// random bits. Making one reads the clock and updates one atomic; it never waits for a lock
/// or asks the operating system for randomness.
///
/// ```
/// use eventcore::EventId;
///
/// let a = EventId::new();
/// let b = EventId::new();
/// assert_ne!(a, b);
/// assert_eq!(EventId::try_from(a.as_uuid())?, a);
/// assert!(EventId::try_from(uuid::Uuid::nil()).is_err());
/// # Ok::<(), eventcore::ValidationError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct EventId(Uuid);

impl EventId {
    /// A fresh, time-ordered id.
    ///
    /// ```
    /// assert_eq!(eventcore::EventId::new().as_uuid().get_version_num(), 7);
    /// ```
    #[must_use]
    pub fn new() -> Self {
        Self(super::clock::v7_now())
    }

    /// A fresh id for the time `since` the Unix epoch (see [`super::clock::v7_at`]).
    pub(crate) fn at(since: std::time::Duration) -> Self {
        Self(super::clock::v7_at(since))
    }

    /// The underlying UUID.
    ///
    /// ```
    /// let id = eventcore::EventId::new();
    /// assert_eq!(id.as_uuid().to_string(), id.to_string());
    /// ```
    #[must_use]
    pub fn as_uuid(self) -> Uuid {
        self.0
    }
}

impl Default for EventId {
    fn default() -> Self {
        Self::new()
    }
}

impl TryFrom<Uuid> for EventId {
    type Error = ValidationError;
    fn try_from(value: Uuid) -> Result<Self, Self::Error> {
        if value.get_version_num() == 7 {
            Ok(Self(value))
        } else {
            Err(ValidationError::new(
                "EventId",
                format!("must be a UUID of version 7, got version {}", value.get_version_num()),
            ))
        }
    }
}

impl<'de> Deserialize<'de> for EventId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::try_from(Uuid::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventId({})", self.0)
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

macro_rules! plain_uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh, time-ordered (version 7) id.
            #[must_use]
            pub fn new() -> Self {
                Self(super::clock::v7_now())
            }

            /// Wraps an existing UUID of any version (ids may come from other systems).
            #[must_use]
            pub fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// The underlying UUID.
            #[must_use]
            pub fn as_uuid(self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl From<EventId> for $name {
            fn from(id: EventId) -> Self {
                Self(id.as_uuid())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    };
}

plain_uuid_id!(
    /// Groups every event caused, directly or not, by one external request.
    ///
    /// ```
    /// use eventcore::CorrelationId;
    /// let id = CorrelationId::new();
    /// assert_eq!(CorrelationId::from_uuid(id.as_uuid()), id);
    /// ```
    CorrelationId
);

plain_uuid_id!(
    /// Names the event or request that directly caused an event.
    ///
    /// ```
    /// use eventcore::{CausationId, EventId};
    /// let cause = EventId::new();
    /// assert_eq!(CausationId::from(cause).as_uuid(), cause.as_uuid());
    /// ```
    CausationId
);
