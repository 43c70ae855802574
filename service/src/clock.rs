//! The time the limits (and the refresh grace) are judged by: the system clock plus an offset
//! that only a test sets, so that delays and expiries are tested by moving time, not by sleeping.

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Duration, Utc};

#[derive(Debug, Default)]
pub struct Clock {
    /// Milliseconds added to the system clock; 0 unless a test moved it.
    offset_ms: AtomicI64,
}

impl Clock {
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + Duration::milliseconds(self.offset_ms.load(Ordering::Relaxed))
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
}
