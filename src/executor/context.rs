//! The request a command runs for: correlation, causation and custom metadata.

use std::collections::BTreeMap;

use crate::{CausationId, CorrelationId, EventMetadata};

/// Where a command execution comes from; its fields are copied into the metadata of every event
/// the command appends.
///
/// ```
/// use eventcore::{CausationId, CorrelationId, RequestContext};
///
/// let ctx = RequestContext::new()
///     .correlated_with(CorrelationId::new())
///     .caused_by(CausationId::new())
///     .with_custom("user", "alice");
/// assert!(ctx.causation_id().is_some());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RequestContext {
    correlation_id: CorrelationId,
    causation_id: Option<CausationId>,
    custom: BTreeMap<String, serde_json::Value>,
}

impl Default for RequestContext {
    fn default() -> Self {
        Self::new()
    }
}

impl RequestContext {
    /// A context with a fresh correlation id.
    ///
    /// ```
    /// let a = eventcore::RequestContext::new();
    /// let b = eventcore::RequestContext::new();
    /// assert_ne!(a.correlation_id(), b.correlation_id());
    /// ```
    #[must_use]
    pub fn new() -> Self {
        Self { correlation_id: CorrelationId::new(), causation_id: None, custom: BTreeMap::new() }
    }

    /// Uses an existing correlation id.
    ///
    /// ```
    /// # use eventcore::{CorrelationId, RequestContext};
    /// let id = CorrelationId::new();
    /// assert_eq!(RequestContext::new().correlated_with(id).correlation_id(), id);
    /// ```
    #[must_use]
    pub fn correlated_with(mut self, id: CorrelationId) -> Self {
        self.correlation_id = id;
        self
    }

    /// Records what caused the command.
    ///
    /// ```
    /// # use eventcore::{CausationId, RequestContext};
    /// let c = CausationId::new();
    /// assert_eq!(RequestContext::new().caused_by(c).causation_id(), Some(c));
    /// ```
    #[must_use]
    pub fn caused_by(mut self, id: CausationId) -> Self {
        self.causation_id = Some(id);
        self
    }

    /// Adds an application-defined metadata field.
    ///
    /// ```
    /// let ctx = eventcore::RequestContext::new().with_custom("tenant", "acme");
    /// # let _ = ctx;
    /// ```
    #[must_use]
    pub fn with_custom(
        mut self,
        key: impl Into<String>,
        value: impl Into<serde_json::Value>,
    ) -> Self {
        self.custom.insert(key.into(), value.into());
        self
    }

    /// The correlation id.
    ///
    /// ```
    /// let _ = eventcore::RequestContext::new().correlation_id();
    /// ```
    #[must_use]
    pub fn correlation_id(&self) -> CorrelationId {
        self.correlation_id
    }

    /// The causation id, if any.
    ///
    /// ```
    /// assert!(eventcore::RequestContext::new().causation_id().is_none());
    /// ```
    #[must_use]
    pub fn causation_id(&self) -> Option<CausationId> {
        self.causation_id
    }

    /// Fresh metadata for one new event of this request.
    ///
    /// ```
    /// let ctx = eventcore::RequestContext::new();
    /// assert_eq!(ctx.stamp().correlation_id, ctx.correlation_id());
    /// ```
    #[must_use]
    pub fn stamp(&self) -> EventMetadata {
        let mut meta = EventMetadata::new(self.correlation_id);
        meta.causation_id = self.causation_id;
        if !self.custom.is_empty() {
            meta.custom = self.custom.clone();
        }
        meta
    }
}
