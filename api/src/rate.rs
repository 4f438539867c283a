//! The token bucket every rate limit uses: media-node's signaling message rate,
//! turn-node's per-allocation bandwidth cap and its per-source-IP limit on failed
//! authentication. The caller passes the clock, so limits are tested without sleeping.
//!
//! The rate and burst are arguments of [`TokenBucket::take`] rather than fields: a
//! TURN node holds one bucket per allocation and per source IP, all with the same
//! settings, and 16 bytes per bucket is what keeps them cheap.

use std::time::Instant;

/// Tokens refill at `rate` per second up to `burst`; taking `cost` succeeds when that
/// many are there.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A bucket holding `burst` tokens at `now`.
    pub fn full(now: Instant, burst: f64) -> Self {
        TokenBucket { tokens: burst, last: now }
    }

    /// Refill for the time since the last call, then take `cost` tokens if there are
    /// that many. A clock that went backwards refills nothing.
    #[inline]
    pub fn take(&mut self, now: Instant, rate: f64, burst: f64, cost: f64) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + dt * rate).min(burst);
        if self.tokens >= cost {
            self.tokens -= cost;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn bursts_then_refills_at_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::full(t0, 10.0);
        assert_eq!((0..20).filter(|_| b.take(t0, 5.0, 10.0, 1.0)).count(), 10, "the burst");
        assert!(!b.take(t0 + Duration::from_millis(199), 5.0, 10.0, 1.0));
        assert!(b.take(t0 + Duration::from_millis(200), 5.0, 10.0, 1.0), "one token per 1/rate seconds");
        // Never more than the burst, however long the pause.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!((0..20).filter(|_| b.take(later, 5.0, 10.0, 1.0)).count(), 10);
    }

    #[test]
    fn costs_are_weighed_and_a_clock_going_back_refills_nothing() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut b = TokenBucket::full(t0, 1000.0);
        assert!(b.take(t0, 1000.0, 1000.0, 600.0));
        assert!(!b.take(t0, 1000.0, 1000.0, 600.0), "400 left");
        assert!(!b.take(t0 - Duration::from_secs(5), 1000.0, 1000.0, 600.0));
        assert!(b.take(t0 + Duration::from_millis(200), 1000.0, 1000.0, 600.0), "400 + 200 refilled");
    }
}
