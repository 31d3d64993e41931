//! The one validation error of the domain types.

use std::borrow::Cow;

/// A value was rejected while constructing a domain type.
///
/// The message names the type and the rule that was broken.
///
/// ```
/// use eventcore::StreamId;
///
/// let err = StreamId::try_new("").unwrap_err();
/// assert_eq!(err.to_string(), "invalid StreamId: must not be empty");
/// assert_eq!(err.type_name(), "StreamId");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {type_name}: {reason}")]
pub struct ValidationError {
    type_name: &'static str,
    reason: Cow<'static, str>,
}

impl ValidationError {
    /// Creates an error for `type_name` explaining `reason`.
    ///
    /// ```
    /// # use eventcore::ValidationError;
    /// let e = ValidationError::new("Money", "must not be negative");
    /// assert_eq!(e.to_string(), "invalid Money: must not be negative");
    /// ```
    pub fn new(type_name: &'static str, reason: impl Into<Cow<'static, str>>) -> Self {
        Self { type_name, reason: reason.into() }
    }

    /// The name of the type whose construction failed.
    ///
    /// ```
    /// # use eventcore::ValidationError;
    /// assert_eq!(ValidationError::new("X", "y").type_name(), "X");
    /// ```
    #[must_use]
    pub fn type_name(&self) -> &'static str {
        self.type_name
    }

    /// Why the value was rejected.
    ///
    /// ```
    /// # use eventcore::ValidationError;
    /// assert_eq!(ValidationError::new("X", "y").reason(), "y");
    /// ```
    #[must_use]
    pub fn reason(&self) -> &str {
        &self.reason
    }
}
