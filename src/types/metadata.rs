//! Metadata stored with every event.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{CausationId, CorrelationId, EventId, Timestamp};

/// What the store records about an event besides its payload.
///
/// The executor fills in the id and timestamp of each event; correlation and causation come from
/// the request context a command runs in; `custom` carries whatever
/// the application wants (user ids, tenant, source IP), as JSON.
///
/// ```
/// use eventcore::{CorrelationId, EventMetadata};
///
/// let corr = CorrelationId::new();
/// let meta = EventMetadata::new(corr).with_custom("user", "alice");
/// assert_eq!(meta.correlation_id, corr);
/// assert_eq!(meta.custom["user"], "alice");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EventMetadata {
    /// The event's own id.
    pub event_id: EventId,
    /// The request this event belongs to.
    pub correlation_id: CorrelationId,
    /// What directly caused this event, if known.
    pub causation_id: Option<CausationId>,
    /// When the event was recorded.
    pub timestamp: Timestamp,
    /// Application-defined fields.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub custom: BTreeMap<String, serde_json::Value>,
}

impl EventMetadata {
    /// Metadata for a new event in the given correlation, stamped now.
    ///
    /// ```
    /// let m = eventcore::EventMetadata::new(eventcore::CorrelationId::new());
    /// assert!(m.causation_id.is_none());
    /// ```
    #[must_use]
    pub fn new(correlation_id: CorrelationId) -> Self {
        // One clock read for both: the id's millisecond is the timestamp's (or, for an id that
        // had to count on past the clock to stay in order, a little later).
        let now = super::clock::since_epoch();
        Self {
            event_id: EventId::at(now),
            correlation_id,
            causation_id: None,
            timestamp: Timestamp::since_epoch(now),
            custom: BTreeMap::new(),
        }
    }

    /// Sets the causation id.
    ///
    /// ```
    /// use eventcore::{CausationId, CorrelationId, EventMetadata};
    /// let cause = CausationId::new();
    /// assert_eq!(EventMetadata::new(CorrelationId::new()).caused_by(cause).causation_id, Some(cause));
    /// ```
    #[must_use]
    pub fn caused_by(mut self, causation_id: CausationId) -> Self {
        self.causation_id = Some(causation_id);
        self
    }

    /// Adds one application-defined field.
    ///
    /// ```
    /// let m = eventcore::EventMetadata::new(eventcore::CorrelationId::new()).with_custom("n", 1);
    /// assert_eq!(m.custom["n"], 1);
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_events_id_is_at_or_after_its_timestamps_millisecond_and_later_events_sort_after() {
        let correlation = CorrelationId::new();
        let first = EventMetadata::new(correlation);
        let second = EventMetadata::new(correlation);
        assert!(second.event_id > first.event_id);
        assert!(second.timestamp >= first.timestamp);
        for meta in [&first, &second] {
            let (secs, nanos) = meta.event_id.as_uuid().get_timestamp().unwrap().to_unix();
            let id_millis = i64::try_from(secs * 1000 + u64::from(nanos / 1_000_000)).unwrap();
            // Equal unless ids made elsewhere in this process ran ahead of the clock.
            assert!(id_millis >= meta.timestamp.as_datetime().timestamp_millis());
            assert_eq!(meta.timestamp.as_datetime().timestamp_subsec_nanos() % 1000, 0);
        }
    }
}
