//! Retry policy: exponential backoff with jitter.

use std::time::Duration;

use crate::ValidationError;

/// How often and how patiently the executor retries a command that lost an optimistic
/// concurrency race (or hit a transient store failure it may safely retry).
///
/// Attempt `n` (from 1) that fails waits `min(max_delay, base_delay * 2^(n-1))` before the next,
/// scaled by a random factor in `[0.5, 1.0]` when jitter is on, so competing writers spread out.
///
/// ```
/// use std::time::Duration;
/// use eventcore::RetryPolicy;
///
/// let policy = RetryPolicy::builder()
///     .max_attempts(5)
///     .base_delay(Duration::from_millis(10))
///     .max_delay(Duration::from_millis(100))
///     .jitter(false)
///     .build()?;
/// assert_eq!(policy.delay_after(1), Duration::from_millis(10));
/// assert_eq!(policy.delay_after(3), Duration::from_millis(40));
/// assert_eq!(policy.delay_after(9), Duration::from_millis(100));
/// # Ok::<(), eventcore::ValidationError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    max_attempts: u32,
    base_delay: Duration,
    max_delay: Duration,
    jitter: bool,
}

impl Default for RetryPolicy {
    /// 10 attempts, 1 ms doubling up to 100 ms, with jitter.
    fn default() -> Self {
        Self {
            max_attempts: 10,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(100),
            jitter: true,
        }
    }
}

impl RetryPolicy {
    /// Starts from the default policy.
    ///
    /// ```
    /// let p = eventcore::RetryPolicy::builder().max_attempts(3).build()?;
    /// assert_eq!(p.max_attempts(), 3);
    /// # Ok::<(), eventcore::ValidationError>(())
    /// ```
    #[must_use]
    pub fn builder() -> RetryPolicyBuilder {
        RetryPolicyBuilder { policy: Self::default() }
    }

    /// One attempt, no retry.
    ///
    /// ```
    /// assert_eq!(eventcore::RetryPolicy::none().max_attempts(), 1);
    /// ```
    #[must_use]
    pub fn none() -> Self {
        Self { max_attempts: 1, ..Self::default() }
    }

    /// The most attempts, the first included.
    ///
    /// ```
    /// assert_eq!(eventcore::RetryPolicy::default().max_attempts(), 10);
    /// ```
    #[must_use]
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The wait after failed attempt `attempt` (counting from 1).
    ///
    /// ```
    /// let p = eventcore::RetryPolicy::default();
    /// assert!(p.delay_after(1) <= std::time::Duration::from_millis(1));
    /// ```
    #[must_use]
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(31);
        let full = self.base_delay.saturating_mul(1u32 << exponent).min(self.max_delay);
        if self.jitter { full.mul_f64(0.5 + fastrand::f64() * 0.5) } else { full }
    }
}

/// Builds a [`RetryPolicy`], checking its settings.
///
/// ```
/// assert!(eventcore::RetryPolicy::builder().max_attempts(0).build().is_err());
/// ```
#[derive(Debug, Clone)]
pub struct RetryPolicyBuilder {
    policy: RetryPolicy,
}

impl RetryPolicyBuilder {
    /// The most attempts, the first included (at least 1).
    ///
    /// ```
    /// assert!(eventcore::RetryPolicy::builder().max_attempts(1).build().is_ok());
    /// ```
    #[must_use]
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.policy.max_attempts = attempts;
        self
    }

    /// The wait after the first failed attempt.
    ///
    /// ```
    /// # use std::time::Duration;
    /// assert!(eventcore::RetryPolicy::builder().base_delay(Duration::ZERO).build().is_ok());
    /// ```
    #[must_use]
    pub fn base_delay(mut self, delay: Duration) -> Self {
        self.policy.base_delay = delay;
        self
    }

    /// The longest wait (at least the base delay).
    ///
    /// ```
    /// # use std::time::Duration;
    /// let p = eventcore::RetryPolicy::builder().max_delay(Duration::from_secs(1)).build()?;
    /// # let _ = p; Ok::<(), eventcore::ValidationError>(())
    /// ```
    #[must_use]
    pub fn max_delay(mut self, delay: Duration) -> Self {
        self.policy.max_delay = delay;
        self
    }

    /// Whether to randomise each wait within `[0.5, 1.0]` of its value.
    ///
    /// ```
    /// let p = eventcore::RetryPolicy::builder().jitter(false).build()?;
    /// # let _ = p; Ok::<(), eventcore::ValidationError>(())
    /// ```
    #[must_use]
    pub fn jitter(mut self, on: bool) -> Self {
        self.policy.jitter = on;
        self
    }

    /// Checks and returns the policy.
    ///
    /// # Errors
    /// [`ValidationError`] when `max_attempts` is 0 or `max_delay < base_delay`.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let bad = eventcore::RetryPolicy::builder()
    ///     .base_delay(Duration::from_secs(2))
    ///     .max_delay(Duration::from_secs(1))
    ///     .build();
    /// assert!(bad.is_err());
    /// ```
    pub fn build(self) -> Result<RetryPolicy, ValidationError> {
        let p = self.policy;
        if p.max_attempts == 0 {
            return Err(ValidationError::new("RetryPolicy", "max_attempts must be at least 1"));
        }
        if p.max_delay < p.base_delay {
            return Err(ValidationError::new(
                "RetryPolicy",
                format!(
                    "max_delay {:?} is shorter than base_delay {:?}",
                    p.max_delay, p.base_delay
                ),
            ));
        }
        Ok(p)
    }
}
