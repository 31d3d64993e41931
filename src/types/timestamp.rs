//! UTC timestamps.

use std::fmt;

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};

/// A point in time in UTC, with microsecond precision (what PostgreSQL stores), so a timestamp
/// survives a round trip through any backend unchanged.
///
/// ```
/// use eventcore::Timestamp;
///
/// let t = Timestamp::now();
/// let text = t.to_string();
/// assert_eq!(text.parse::<Timestamp>()?, t);
/// # Ok::<(), eventcore::ValidationError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(DateTime<Utc>);

impl Timestamp {
    /// The current time, truncated to microseconds.
    ///
    /// ```
    /// assert!(eventcore::Timestamp::now() <= eventcore::Timestamp::now());
    /// ```
    #[must_use]
    pub fn now() -> Self {
        Self::since_epoch(super::clock::since_epoch())
    }

    /// The time `since` the Unix epoch, truncated to microseconds (the epoch itself past the
    /// last date `chrono` holds, a quarter of a million years away).
    pub(crate) fn since_epoch(since: std::time::Duration) -> Self {
        let micros = since
            .as_secs()
            .saturating_mul(1_000_000)
            .saturating_add(u64::from(since.subsec_micros()));
        let at = i64::try_from(micros).ok().and_then(DateTime::from_timestamp_micros);
        Self(at.unwrap_or_default())
    }

    /// Wraps a `chrono` time, truncated to microseconds.
    ///
    /// ```
    /// let t = eventcore::Timestamp::from_datetime(chrono::DateTime::UNIX_EPOCH);
    /// assert_eq!(t.as_datetime().timestamp(), 0);
    /// ```
    #[must_use]
    pub fn from_datetime(at: DateTime<Utc>) -> Self {
        Self(at.trunc_subsecs(6))
    }

    /// This time plus `by`, or the latest time a timer can be set for,
    /// 9999-12-31T23:59:59.999999Z, when that comes first (the latest that RFC 3339, the text
    /// form of timestamps, can write): a timer set that far never fires on the system clock.
    pub(crate) fn saturating_add(self, by: std::time::Duration) -> Self {
        let latest = Self::latest();
        if self >= latest {
            return self;
        }
        let later =
            chrono::Duration::from_std(by).ok().and_then(|by| self.0.checked_add_signed(by));
        later.map_or(latest, |at| Self::from_datetime(at).min(latest))
    }

    /// 9999-12-31T23:59:59.999999Z: see [`saturating_add`](Self::saturating_add).
    pub(crate) fn latest() -> Self {
        let at = chrono::NaiveDate::from_ymd_opt(9999, 12, 31)
            .and_then(|day| day.and_hms_micro_opt(23, 59, 59, 999_999))
            .map_or(DateTime::<Utc>::MAX_UTC, |at| at.and_utc());
        Self::from_datetime(at)
    }

    /// The `chrono` value.
    ///
    /// ```
    /// let t = eventcore::Timestamp::now();
    /// assert_eq!(eventcore::Timestamp::from_datetime(t.as_datetime()), t);
    /// ```
    #[must_use]
    pub fn as_datetime(self) -> DateTime<Utc> {
        self.0
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({self})")
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
    }
}

impl std::str::FromStr for Timestamp {
    type Err = super::ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| Self::from_datetime(t.with_timezone(&Utc)))
            .map_err(|e| super::ValidationError::new("Timestamp", format!("{e} in {s:?}")))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_time_since_the_epoch_is_kept_to_the_microsecond_and_one_out_of_range_is_the_epoch() {
        let at = Timestamp::since_epoch(Duration::new(1_764_800_000, 123_456_789));
        assert_eq!(at.as_datetime().timestamp(), 1_764_800_000);
        assert_eq!(at.as_datetime().timestamp_subsec_nanos(), 123_456_000);
        assert_eq!(Timestamp::since_epoch(Duration::MAX).as_datetime(), DateTime::UNIX_EPOCH);
    }

    #[test]
    fn adding_past_the_latest_time_stops_there_and_the_latest_time_reads_back() {
        let latest = Timestamp::now().saturating_add(Duration::MAX);
        assert_eq!(latest.to_string(), "9999-12-31T23:59:59.999999Z");
        assert_eq!(latest.to_string().parse::<Timestamp>().unwrap(), latest);
        assert_eq!(latest.saturating_add(Duration::from_secs(1)), latest);
        let json = serde_json::to_string(&latest).unwrap();
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), latest);
        let epoch = Timestamp::from_datetime(DateTime::UNIX_EPOCH);
        assert_eq!(epoch.saturating_add(Duration::from_secs(60)).as_datetime().timestamp(), 60);
    }
}
