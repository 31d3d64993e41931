//! Time for process managers' timers: the system clock, or one the tests move by hand.

use std::{fmt, future::Future, pin::Pin, sync::Arc, time::Duration};

use tokio::sync::watch;

use crate::Timestamp;

/// Where a [`ProcessRunner`](super::ProcessRunner) gets the time to fire timers.
///
/// ```
/// use eventcore::subscription::{Clock, SystemClock};
/// let now = SystemClock.now();
/// # let _ = now;
/// ```
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;

    /// Resolves once [`now`](Self::now) is at or after `at`.
    fn sleep_until(&self, at: Timestamp) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// The system's clock.
///
/// ```
/// use eventcore::subscription::{Clock, SystemClock};
/// assert!(SystemClock.now() <= SystemClock.now());
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    fn sleep_until(&self, at: Timestamp) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let wait =
            (at.as_datetime() - Timestamp::now().as_datetime()).to_std().unwrap_or(Duration::ZERO);
        Box::pin(tokio::time::sleep(wait))
    }
}

/// A clock that moves only when told to: for tests of timeouts, without sleeping. After
/// [`advance`](Self::advance), [`ProjectionHandle::settle`](crate::subscription::ProjectionHandle::settle)
/// waits until the runner fired the timers that came due and their reactions committed.
///
/// ```
/// use eventcore::subscription::{Clock, ManualClock};
/// let clock = ManualClock::new();
/// let start = clock.now();
/// clock.advance(std::time::Duration::from_secs(900));
/// assert_eq!((clock.now().as_datetime() - start.as_datetime()).num_seconds(), 900);
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<watch::Sender<Timestamp>>);

impl ManualClock {
    /// A clock standing at the current system time.
    ///
    /// ```
    /// let _clock = eventcore::subscription::ManualClock::new();
    /// ```
    #[must_use]
    pub fn new() -> Self {
        Self(Arc::new(watch::channel(Timestamp::now()).0))
    }

    /// Moves the clock forward by `by`, waking whatever waits for that time. It stops at
    /// 9999-12-31T23:59:59.999999Z, the latest time a timer can be set for (see
    /// [`Reaction::schedule`](super::Reaction::schedule)).
    ///
    /// ```
    /// # use eventcore::subscription::{Clock, ManualClock};
    /// let clock = ManualClock::new();
    /// let before = clock.now();
    /// clock.advance(std::time::Duration::from_millis(1));
    /// assert!(clock.now() > before);
    /// ```
    pub fn advance(&self, by: Duration) {
        self.0.send_modify(|now| *now = now.saturating_add(by));
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.0.borrow()
    }

    fn sleep_until(&self, at: Timestamp) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let mut time = self.0.subscribe();
        Box::pin(async move {
            // The sender lives as long as `self`: the wait ends only when the time comes.
            let _ = time.wait_for(|now| *now >= at).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_advanced_past_the_latest_time_stops_there() {
        let clock = ManualClock::new();
        clock.advance(Duration::MAX);
        assert_eq!(clock.now().to_string(), "9999-12-31T23:59:59.999999Z");
        clock.advance(Duration::from_secs(1));
        assert_eq!(clock.now().to_string(), "9999-12-31T23:59:59.999999Z");
    }
}
