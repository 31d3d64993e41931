//! The clock and the version 7 UUIDs every event, correlation and causation id is made from.
//!
//! One clock read serves both an event's id and its timestamp, and a new id costs one atomic
//! update and a few bits from a thread-local generator: no lock, no system call for
//! randomness, no 128-bit arithmetic.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, SystemTime},
};

use uuid::Uuid;

/// The time since the Unix epoch (zero for a clock set before 1970).
pub(crate) fn since_epoch() -> Duration {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or(Duration::ZERO)
}

/// The millisecond and counter of the last id made in this process: `millis << 16 | counter`,
/// the first 64 bits of the id's order.
static LAST: AtomicU64 = AtomicU64::new(0);

/// The largest millisecond a version 7 UUID holds (48 bits: the year 10889).
const MAX_MILLIS: u64 = (1 << 48) - 1;

/// A version 7 UUID for the time `since_epoch` (RFC 9562, with a 16-bit counter after the
/// millisecond, as its section 6.2 method 1 describes), greater than every id made before it
/// in this process, on any thread.
///
/// The counter starts at a random value below 2^15 in each new millisecond and counts up
/// within it; past 2^16 ids in one millisecond (or when the clock steps back) the id's
/// millisecond runs ahead of the clock until the clock catches up, as RFC 9562 allows, so
/// that order is never broken. The remaining 58 bits are random.
pub(crate) fn v7_at(since_epoch: Duration) -> Uuid {
    v7_after(&LAST, since_epoch)
}

/// [`v7_at`] counting on from `last` (the process's [`LAST`], or a test's own).
fn v7_after(last_made: &AtomicU64, since_epoch: Duration) -> Uuid {
    let millis = since_epoch
        .as_secs()
        .saturating_mul(1000)
        .saturating_add(u64::from(since_epoch.subsec_millis()))
        .min(MAX_MILLIS);
    let seed = millis << 16 | fastrand::u64(..1 << 15);
    let mut last = last_made.load(Ordering::Relaxed);
    let next = loop {
        // Within the last id's millisecond (or behind it): count up. `wrapping_add` cannot
        // wrap before the year 10889.
        let next = if seed >> 16 > last >> 16 { seed } else { last.wrapping_add(1) };
        match last_made.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => break next,
            Err(seen) => last = seen,
        }
    };
    let (millis, counter) = (u128::from(next >> 16), u128::from(next & 0xFFFF));
    let random = u128::from(fastrand::u64(..)) & ((1 << 58) - 1);
    Uuid::from_u128(
        millis << 80
            | 0x7 << 76 // version 7
            | (counter >> 4) << 64 // rand_a: the counter's top 12 bits
            | 0b10 << 62 // the RFC 9562 variant
            | (counter & 0xF) << 58 // then its last 4 bits
            | random,
    )
}

/// A version 7 UUID for now: [`v7_at`] of the clock.
pub(crate) fn v7_now() -> Uuid {
    v7_at(since_epoch())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::{Arc, Barrier, Mutex};

    use super::*;

    /// The millisecond an id carries.
    fn millis(id: Uuid) -> u64 {
        let (secs, nanos) = id.get_timestamp().expect("a v7 id has a timestamp").to_unix();
        secs * 1000 + u64::from(nanos / 1_000_000)
    }

    #[test]
    fn ids_are_version_7_of_the_rfc_variant_and_carry_the_clock_millisecond() {
        let last = AtomicU64::new(0);
        let at = Duration::from_millis(1_764_800_000_123) + Duration::from_micros(456);
        let id = v7_after(&last, at);
        assert_eq!(id.get_version_num(), 7);
        assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
        assert_eq!(millis(id), 1_764_800_000_123);
        let now = v7_now();
        assert_eq!(now.get_version_num(), 7);
        assert_eq!(now.get_variant(), uuid::Variant::RFC4122);
    }

    #[test]
    fn ids_count_on_within_a_millisecond_and_past_it_and_when_the_clock_steps_back() {
        let last = AtomicU64::new(0);
        let at = Duration::from_millis(1_000_000);
        let first = v7_after(&last, at);
        let mut previous = first;
        // More ids in one millisecond than the counter holds: they run ahead of the clock, in
        // order.
        for _ in 0..(1 << 16) {
            let id = v7_after(&last, at);
            assert!(id > previous, "{id} was made after {previous}");
            previous = id;
        }
        assert_eq!(millis(first), 1_000_000);
        assert_eq!(millis(previous), 1_000_001, "the counter carried into the millisecond");
        // A clock that steps back still gets a greater id.
        let back = v7_after(&last, Duration::from_millis(5));
        assert!(back > previous);
        // A clock that moves on starts from its own millisecond again.
        let later = v7_after(&last, Duration::from_millis(2_000_000));
        assert!(later > back);
        assert_eq!(millis(later), 2_000_000);
    }

    #[test]
    fn a_clock_before_1970_or_past_the_year_10889_makes_ids_not_a_panic() {
        let last = AtomicU64::new(0);
        assert_eq!(millis(v7_after(&last, Duration::ZERO)), 0);
        let far = v7_after(&last, Duration::MAX);
        assert_eq!(far.get_version_num(), 7);
        assert_eq!(millis(far), MAX_MILLIS);
    }

    #[test]
    fn ids_increase_across_threads_in_the_order_they_are_made() {
        // Each id is made and recorded under one lock, so the record's order is the order in
        // which they were made, whatever thread made them: it must be increasing.
        const THREADS: usize = 4;
        const PER_THREAD: usize = 20_000;
        let record = Arc::new(Mutex::new(Vec::with_capacity(THREADS * PER_THREAD)));
        let start = Arc::new(Barrier::new(THREADS));
        let threads: Vec<_> = (0..THREADS)
            .map(|_| {
                let (record, start) = (Arc::clone(&record), Arc::clone(&start));
                std::thread::spawn(move || {
                    start.wait();
                    for _ in 0..PER_THREAD {
                        let mut record = record.lock().unwrap();
                        let id = v7_now();
                        record.push(id);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let record = record.lock().unwrap();
        assert_eq!(record.len(), THREADS * PER_THREAD);
        for pair in record.windows(2) {
            assert!(pair[0] < pair[1], "{} was made before {}", pair[0], pair[1]);
        }
    }

    #[test]
    fn ids_made_at_once_on_many_threads_are_all_distinct_and_each_threads_increase() {
        const THREADS: usize = 4;
        const PER_THREAD: usize = 50_000;
        let start = Arc::new(Barrier::new(THREADS));
        let threads: Vec<_> = (0..THREADS)
            .map(|_| {
                let start = Arc::clone(&start);
                std::thread::spawn(move || {
                    start.wait();
                    (0..PER_THREAD).map(|_| v7_now()).collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all = HashSet::new();
        for t in threads {
            let ids = t.join().unwrap();
            assert!(ids.windows(2).all(|p| p[0] < p[1]), "one thread's ids went back");
            all.extend(ids);
        }
        assert_eq!(all.len(), THREADS * PER_THREAD, "two ids were the same");
    }
}
