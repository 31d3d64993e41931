//! Stream identifiers.

use std::{borrow::Borrow, fmt, sync::Arc};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::ValidationError;

/// The name of one event stream, validated on construction.
///
/// A `StreamId` is trimmed, non-empty, at most [`StreamId::MAX_LEN`] bytes long and free of
/// control characters. Anything else (quotes, semicolons, backslashes, emoji) is kept verbatim.
/// Cloning is cheap: the text is shared.
///
/// The bound of 255 bytes keeps every id well inside a single B-tree index entry in any SQL store
/// (PostgreSQL rejects index entries above about 2.7 kB), leaves room for a tenant or category
/// prefix, and is far longer than any id built from a UUID and a short category name.
///
/// ```
/// use eventcore::StreamId;
///
/// let id = StreamId::try_new("  account-42 ")?;
/// assert_eq!(id.as_str(), "account-42");
/// assert!(StreamId::try_new("   ").is_err());
/// # Ok::<(), eventcore::ValidationError>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId(Arc<str>);

impl StreamId {
    /// The longest accepted id, in bytes of UTF-8.
    pub const MAX_LEN: usize = 255;

    /// Validates and wraps a stream name.
    ///
    /// # Errors
    /// [`ValidationError`] when the trimmed text is empty, longer than [`StreamId::MAX_LEN`]
    /// bytes, or contains a control character.
    ///
    /// ```
    /// # use eventcore::StreamId;
    /// assert!(StreamId::try_new("order-'1';--").is_ok());
    /// assert!(StreamId::try_new("a\nb").is_err());
    /// ```
    pub fn try_new(value: impl AsRef<str>) -> Result<Self, ValidationError> {
        let trimmed = super::trimmed_bounded("StreamId", value.as_ref(), Self::MAX_LEN)?;
        if let Some(c) = trimmed.chars().find(|c| c.is_control()) {
            return Err(ValidationError::new(
                "StreamId",
                format!("contains the control character {c:?}"),
            ));
        }
        Ok(Self(Arc::from(trimmed)))
    }

    /// Builds the id `"{category}-{suffix}"`, validating the result.
    ///
    /// # Errors
    /// As [`StreamId::try_new`].
    ///
    /// ```
    /// # use eventcore::StreamId;
    /// assert_eq!(StreamId::with_category("account", 7)?.as_str(), "account-7");
    /// # Ok::<(), eventcore::ValidationError>(())
    /// ```
    pub fn with_category(
        category: &str,
        suffix: impl fmt::Display,
    ) -> Result<Self, ValidationError> {
        Self::try_new(format!("{category}-{suffix}"))
    }

    /// The validated text.
    ///
    /// ```
    /// # use eventcore::StreamId;
    /// assert_eq!(StreamId::try_new("x")?.as_str(), "x");
    /// # Ok::<(), eventcore::ValidationError>(())
    /// ```
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamId({:?})", &*self.0)
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for StreamId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for StreamId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for StreamId {
    type Error = ValidationError;
    fn try_from(value: &str) -> Result<Self, Self::Error> {
        Self::try_new(value)
    }
}

impl TryFrom<String> for StreamId {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::try_new(value)
    }
}

impl std::str::FromStr for StreamId {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::try_new(s)
    }
}

impl Serialize for StreamId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for StreamId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Self::try_new(raw).map_err(serde::de::Error::custom)
    }
}
