//! Sending on interval ticks: packet k is due at `start + k × interval`.
//!
//! A wake-up that comes late (timer granularity is about a millisecond, and a
//! busy machine is later still) sends what fell due, at most [`MAX_CATCH_UP`]
//! worth, and forgets older debt: the rate stays even instead of bursting
//! after a stall, and a generator that cannot keep up shows it as a lower
//! achieved rate.

use std::time::{Duration, Instant};

/// The most sending time one wake-up may catch up on.
pub(crate) const MAX_CATCH_UP: Duration = Duration::from_millis(10);

#[derive(Debug)]
pub(crate) struct Pacer {
    interval: Duration,
    next: Instant,
    max_burst: u32,
}

impl Pacer {
    /// The first packet is due at `start`.
    pub(crate) fn new(start: Instant, interval: Duration) -> Self {
        let interval = interval.max(Duration::from_nanos(1));
        let max_burst = (MAX_CATCH_UP.as_nanos() / interval.as_nanos()).clamp(1, 1024) as u32;
        Pacer { interval, next: start, max_burst }
    }

    /// How many packets are due at `now`; counts them as sent.
    pub(crate) fn due(&mut self, now: Instant) -> u32 {
        let mut n = 0;
        while self.next <= now && n < self.max_burst {
            n += 1;
            self.next += self.interval;
        }
        if self.next <= now {
            self.next = now + self.interval;
        }
        n
    }

    /// When the next packet is due.
    pub(crate) fn next(&self) -> Instant {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn punctual_wakeups_send_one_at_a_time_at_the_rate() {
        let t0 = Instant::now();
        let mut p = Pacer::new(t0, Duration::from_millis(4));
        let mut sent = 0;
        while p.next() < t0 + Duration::from_secs(1) {
            let at = p.next();
            assert_eq!(p.due(at), 1);
            sent += 1;
        }
        assert_eq!(sent, 250);
        assert_eq!(p.due(p.next() - Duration::from_nanos(1)), 0);
    }

    #[test]
    fn coarse_timer_catches_up_without_losing_rate() {
        // 80 µs interval (12,500 packets/s) woken every millisecond.
        let t0 = Instant::now();
        let mut p = Pacer::new(t0, Duration::from_micros(80));
        let sent: u32 = (0..1000).map(|ms| p.due(t0 + Duration::from_millis(ms))).sum();
        assert!((12_480..=12_500).contains(&sent), "{sent}");
    }

    #[test]
    fn a_long_stall_is_forgiven_not_burst() {
        let t0 = Instant::now();
        let mut p = Pacer::new(t0, Duration::from_millis(1));
        assert_eq!(p.due(t0 + Duration::from_secs(1)), 10, "at most 10 ms worth");
        assert_eq!(p.next(), t0 + Duration::from_secs(1) + Duration::from_millis(1));
    }
}
