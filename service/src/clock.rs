//! The time the limits (and the refresh grace) are judged by: the system clock plus an offset
//! that only a test sets, so that delays and expiries are tested by moving time, not by sleeping.

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Duration, Utc};

#[derive(Debug, Default)]
pub struct Clock {
    /// Milliseconds added to the system clock (or to the frozen instant); 0 unless a test moved it.
    offset_ms: AtomicI64,
    /// When set (Unix milliseconds, non-zero), the instant time stands still at.
    frozen_at_ms: AtomicI64,
}

impl Clock {
    pub fn now(&self) -> DateTime<Utc> {
        let offset = Duration::milliseconds(self.offset_ms.load(Ordering::Relaxed));
        match self.frozen_at_ms.load(Ordering::Relaxed) {
            0 => Utc::now() + offset,
            frozen => DateTime::from_timestamp_millis(frozen).unwrap_or_else(Utc::now) + offset,
        }
    }

    /// Stops this clock at the current instant: from now on only [`Self::advance`] moves it, so a
    /// test's expectations do not depend on how long its requests take. Like `advance`, called
    /// only by the test suite.
    pub fn freeze(&self) {
        let now = self.now();
        self.offset_ms.store(0, Ordering::Relaxed);
        self.frozen_at_ms
            .store(now.timestamp_millis().max(1), Ordering::Relaxed);
    }

    /// Moves this clock forward. Nothing in the server calls it: the test suite holds the
    /// server's [`crate::AppContext`] in-process and calls it to let a delay or an expiry pass.
    pub fn advance(&self, by: Duration) {
        self.offset_ms
            .fetch_add(by.num_milliseconds(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advancing_moves_now_forward() {
        let clock = Clock::default();
        let before = clock.now();
        clock.advance(Duration::minutes(15));
        assert!(clock.now() - before >= Duration::minutes(15));
    }

    #[test]
    fn a_frozen_clock_moves_only_when_advanced() {
        let clock = Clock::default();
        clock.freeze();
        let frozen = clock.now();
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(clock.now(), frozen);
        clock.advance(Duration::seconds(3));
        assert_eq!(clock.now() - frozen, Duration::seconds(3));
    }
}
