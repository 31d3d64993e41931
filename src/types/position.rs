//! Per-stream versions and global positions.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The number of events in a stream when it was read, or the version of one event in it.
///
/// Versions of a stream start at 1 and grow by one per event with no gaps; an empty stream is at
/// [`StreamVersion::EMPTY`] (0).
///
/// ```
/// use eventcore::StreamVersion;
///
/// let v = StreamVersion::EMPTY.next().unwrap();
/// assert_eq!(v.get(), 1);
/// assert!(StreamVersion::new(u64::MAX).next().is_none());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StreamVersion(u64);

impl StreamVersion {
    /// The version of a stream without events.
    pub const EMPTY: Self = Self(0);

    /// Wraps a raw version.
    ///
    /// ```
    /// assert_eq!(eventcore::StreamVersion::new(3).get(), 3);
    /// ```
    #[must_use]
    pub const fn new(value: u64) -> Self {
        Self(value)
    }

    /// The raw number.
    ///
    /// ```
    /// assert_eq!(eventcore::StreamVersion::EMPTY.get(), 0);
    /// ```
    #[must_use]
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The version after this one, or `None` on overflow.
    ///
    /// ```
    /// assert_eq!(eventcore::StreamVersion::new(1).next().map(|v| v.get()), Some(2));
    /// ```
    #[must_use]
    pub const fn next(self) -> Option<Self> {
        match self.0.checked_add(1) {
            Some(v) => Some(Self(v)),
            None => None,
        }
    }
}

impl fmt::Debug for StreamVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

impl fmt::Display for StreamVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// The place of an event in the store-wide order.
///
/// Every stored event gets one; positions grow in the order readers see events, so a reader that
/// resumes after position `p` never misses an event. Positions may skip numbers (a rolled-back
/// write can burn some) but never go back. [`GlobalPosition::START`] (0) is before every event.
///
/// ```
/// use eventcore::GlobalPosition;
/// assert!(GlobalPosition::START < GlobalPosition::new(1));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GlobalPosition(u64);

impl GlobalPosition {
    /// Before the first event of the store.
    pub const START: Self = Self(0);

    /// Wraps a raw position.
    ///
    /// ```
    /// assert_eq!(eventcore::GlobalPosition::new(9).get(), 9);
    /// ```
    #[must_use]
    pub const fn new(value: u64) -> Self {
        Self(value)
    }

    /// The raw number.
    ///
    /// ```
    /// assert_eq!(eventcore::GlobalPosition::START.get(), 0);
    /// ```
    #[must_use]
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Debug for GlobalPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "@{}", self.0)
    }
}

impl fmt::Display for GlobalPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}
