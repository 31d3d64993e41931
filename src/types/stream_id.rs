//! Stream identifiers.

use std::{borrow::Borrow, fmt, sync::Arc};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::ValidationError;

/// The name of one event stream, validated on construction.
///
/// A `StreamId` is stored byte for byte as given, or refused: it is never trimmed or
/// normalised, so `" a"` and `"a"` can never name one stream. It is refused (with a
/// [`ValidationError`] saying what is wrong and where) when it
///
/// - is empty or longer than [`StreamId::MAX_LEN`] bytes of UTF-8;
/// - contains a control character (NUL, tab, CR, LF, DEL, C1), a line or paragraph separator
///   (U+2028, U+2029) or a bidirectional formatting character (U+061C, U+200E, U+200F,
///   U+202A..=U+202E, U+2066..=U+2069) anywhere;
/// - starts or ends with whitespace (`char::is_whitespace`, which includes the no-break space
///   U+00A0 and the ideographic space U+3000) or with an invisible U+200B, U+2060, U+FEFF
///   (a byte-order mark) or U+180E.
///
/// Anything else (interior spaces, quotes, semicolons, backslashes, `%` and `_`, emoji and the
/// zero-width joiners inside them, any script) is kept verbatim. The same rule applies to
/// every name the crate takes (see [the rule](crate::types#names-are-kept-exactly-or-refused));
/// deserializing, from storage too, applies it as well: a stored id that breaks it is an error,
/// never silently fixed. Cloning is cheap: the text is shared.
///
/// The bound of 255 bytes keeps every id well inside a single B-tree index entry in any SQL store
/// (PostgreSQL rejects index entries above about 2.7 kB), leaves room for a tenant or category
/// prefix, and is far longer than any id built from a UUID and a short category name.
///
/// ```
/// use eventcore::StreamId;
///
/// let id = StreamId::try_new("account 42")?;
/// assert_eq!(id.as_str(), "account 42");
///
/// let err = StreamId::try_new(" account-42").unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "invalid StreamId: starts with the whitespace character U+0020 \
///      (names are stored exactly as given, never trimmed)"
/// );
/// assert!(StreamId::try_new("account-42\u{3000}").is_err());
/// assert!(StreamId::try_new("   ").is_err());
/// # Ok::<(), eventcore::ValidationError>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId(Arc<str>);

impl StreamId {
    /// The longest accepted id, in bytes of UTF-8.
    pub const MAX_LEN: usize = 255;

    /// Validates and wraps a stream name, exactly as given.
    ///
    /// # Errors
    /// [`ValidationError`] when the text is empty, longer than [`StreamId::MAX_LEN`] bytes,
    /// contains a control character, a line or paragraph separator or a bidirectional
    /// formatting character, or starts or ends with whitespace or an invisible character (see
    /// [`StreamId`]). The message names the character and where it is.
    ///
    /// ```
    /// # use eventcore::StreamId;
    /// assert_eq!(StreamId::try_new("order-'1';--")?.as_str(), "order-'1';--");
    /// assert_eq!(StreamId::try_new("a b")?.as_str(), "a b");
    /// assert!(StreamId::try_new(" a").is_err());
    /// let err = StreamId::try_new("a\nb").unwrap_err();
    /// assert_eq!(err.reason(), "contains the control character U+000A at byte 1");
    /// let err = StreamId::try_new("ü".repeat(128)).unwrap_err();
    /// assert_eq!(err.reason(), "is 256 bytes long; at most 255");
    /// # Ok::<(), eventcore::ValidationError>(())
    /// ```
    pub fn try_new(value: impl AsRef<str>) -> Result<Self, ValidationError> {
        let value = value.as_ref();
        super::check_name("StreamId", value, Self::MAX_LEN)?;
        Ok(Self(Arc::from(value)))
    }

    /// Builds the id `"{category}-{suffix}"`, validating the result.
    ///
    /// # Errors
    /// When `category` is not a category ([`StreamId::check_category`]), and as
    /// [`StreamId::try_new`].
    ///
    /// ```
    /// # use eventcore::StreamId;
    /// assert_eq!(StreamId::with_category("account", 7)?.as_str(), "account-7");
    /// assert!(StreamId::with_category("order-line", 7).is_err()); // would be in category "order"
    /// # Ok::<(), eventcore::ValidationError>(())
    /// ```
    pub fn with_category(
        category: &str,
        suffix: impl fmt::Display,
    ) -> Result<Self, ValidationError> {
        Self::check_category(category)?;
        Self::try_new(format!("{category}-{suffix}"))
    }

    /// Checks that `category` can be a stream category: a stream's category is the text of
    /// its id before the first `-` (the log filters on it, see
    /// [`LogFilter`](crate::backend::LogFilter)), so a category is non-empty and has no `-` in
    /// it; otherwise ids built from it would silently belong to another category. The rest is
    /// as for a stream id, except that a category may end with a space (or any other
    /// character an id may hold but not end with): the `-` after it ends its streams' ids.
    ///
    /// # Errors
    /// [`ValidationError`] naming what is wrong.
    ///
    /// ```
    /// # use eventcore::StreamId;
    /// assert!(StreamId::check_category("account").is_ok());
    /// let err = StreamId::check_category("order-line").unwrap_err();
    /// assert_eq!(err.reason(), "`order-line` contains `-`, which ends a category");
    /// assert!(StreamId::check_category("").is_err());
    /// assert!(StreamId::check_category("gift ").is_ok()); // the category of `gift -1`
    /// assert!(StreamId::check_category(" gift").is_err());
    /// ```
    pub fn check_category(category: &str) -> Result<(), ValidationError> {
        if category.contains('-') {
            return Err(ValidationError::new(
                "stream category",
                format!("`{category}` contains `-`, which ends a category"),
            ));
        }
        // It may end as no id does: `-` follows it in its streams' ids (`gift -1`).
        super::check_name_start("stream category", category, Self::MAX_LEN)
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

#[cfg(test)]
mod tests {
    use super::StreamId;

    #[test]
    fn ids_are_kept_byte_for_byte() {
        for raw in ["a b", "it's \"x\"; --", "👩\u{200D}💻", "e\u{301}", "%_\\", "a\u{200B}b"] {
            let id = StreamId::try_new(raw).unwrap();
            assert_eq!(id.as_str().as_bytes(), raw.as_bytes());
            let json = serde_json::to_string(&id).unwrap();
            assert_eq!(serde_json::from_str::<StreamId>(&json).unwrap().as_str(), raw);
        }
        let longest = format!("{}🦀", "x".repeat(StreamId::MAX_LEN - 4));
        assert_eq!(StreamId::try_new(&longest).unwrap().as_str().len(), StreamId::MAX_LEN);
    }

    #[test]
    fn ids_that_would_need_changing_are_refused_also_when_deserialized() {
        for raw in [" a", "a ", "a\u{3000}", "\u{A0}a", "\u{FEFF}a", "a\0b", "a\u{202E}b", "", "  "]
        {
            let err = StreamId::try_new(raw).unwrap_err();
            assert_eq!(err.type_name(), "StreamId");
            let json = serde_json::to_string(raw).unwrap();
            let de = serde_json::from_str::<StreamId>(&json).unwrap_err().to_string();
            assert!(de.contains(err.reason()), "{raw:?}: {de}");
        }
        assert!(StreamId::try_new("x".repeat(StreamId::MAX_LEN + 1)).is_err());
        assert!(StreamId::try_new(format!("{}🦀", "x".repeat(StreamId::MAX_LEN - 3))).is_err());
    }
}
