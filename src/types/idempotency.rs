//! Idempotency keys: below both the command layer (a command names its key) and the storage
//! layer (a backend stores it with the append).

use std::{fmt, sync::Arc};

use serde::{Deserialize, Deserializer, Serialize};

use super::ValidationError;

/// A caller-chosen key that makes an append happen at most once.
///
/// Kept byte for byte as given, or refused, by the rule every name in the crate follows (see
/// [`StreamId`](crate::StreamId) and [the rule](crate::types#names-are-kept-exactly-or-refused)): non-empty, at
/// most [`IdempotencyKey::MAX_LEN`] bytes, no control character (NUL included, on every
/// backend), line separator or bidirectional formatting character anywhere, no whitespace or
/// invisible character at either end. Never trimmed: `"k"` and `"k "` could only ever be two
/// different keys, so `"k "` is refused rather than silently made into `"k"`.
///
/// ```
/// use eventcore::backend::IdempotencyKey;
/// assert_eq!(IdempotencyKey::try_new("transfer 1")?.as_str(), "transfer 1");
/// assert!(IdempotencyKey::try_new(" transfer-1").is_err());
/// assert!(IdempotencyKey::try_new("transfer-1\0").is_err());
/// assert!(IdempotencyKey::try_new("").is_err());
/// # Ok::<(), eventcore::ValidationError>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct IdempotencyKey(Arc<str>);

impl IdempotencyKey {
    /// The longest accepted key, in bytes of UTF-8.
    pub const MAX_LEN: usize = 255;

    /// Validates a key, exactly as given.
    ///
    /// # Errors
    /// [`ValidationError`] for an empty or over-long key, one with a control character, a line
    /// separator or a bidirectional formatting character, or one that starts or ends with
    /// whitespace or an invisible character; the message names the character and where it is.
    ///
    /// ```
    /// # use eventcore::backend::IdempotencyKey;
    /// assert!(IdempotencyKey::try_new("x".repeat(256)).is_err());
    /// let err = IdempotencyKey::try_new("k\u{3000}").unwrap_err();
    /// assert!(err.reason().starts_with("ends with the whitespace character U+3000"));
    /// ```
    pub fn try_new(value: impl AsRef<str>) -> Result<Self, ValidationError> {
        let value = value.as_ref();
        crate::types::check_name("IdempotencyKey", value, Self::MAX_LEN)?;
        Ok(Self(Arc::from(value)))
    }

    /// The key's text.
    ///
    /// ```
    /// # use eventcore::backend::IdempotencyKey;
    /// assert_eq!(IdempotencyKey::try_new("k")?.as_str(), "k");
    /// # Ok::<(), eventcore::ValidationError>(())
    /// ```
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdempotencyKey({:?})", &*self.0)
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for IdempotencyKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Self::try_new(raw).map_err(serde::de::Error::custom)
    }
}
