//! How long to wait before trying an event again: exponential backoff with
//! full jitter, and the receiver's `Retry-After` honoured up to a bound of
//! its own.

use rand::Rng;
use std::time::Duration;

/// The bounds of the retry delays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// First retry delay bound.
    pub initial: Duration,
    /// Largest retry delay of our own backoff.
    pub max: Duration,
    /// Longest `Retry-After` from the receiver that is honoured as sent; a
    /// longer one is cut to this.
    pub retry_after_max: Duration,
}

impl Backoff {
    /// The delay before attempt `attempts + 1`: a uniform delay up to the
    /// doubling cap, at most `max`, so many services retrying one receiver
    /// spread out. A Retry-After is honoured as sent up to
    /// `retry_after_max`, which is separate from (and by default far above)
    /// our own cap: a receiver asking for five minutes gets five minutes,
    /// one asking for a week does not stall events for a week.
    pub fn delay(&self, attempts: u32, retry_after: Option<Duration>) -> Duration {
        let exponent = attempts.saturating_sub(1).min(30);
        let cap = self.initial.saturating_mul(1u32 << exponent).min(self.max);
        let jittered = Duration::from_millis(rand::rng().random_range(0..=cap.as_millis() as u64));
        match retry_after {
            Some(after) => jittered.max(after.min(self.retry_after_max)),
            None => jittered,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff() -> Backoff {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            retry_after_max: Duration::from_secs(600),
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_below_it() {
        let b = backoff();
        for _ in 0..200 {
            assert!(b.delay(1, None) <= Duration::from_millis(100));
            assert!(b.delay(4, None) <= Duration::from_millis(800));
            assert!(b.delay(1000, None) <= Duration::from_secs(30));
        }
    }

    #[test]
    fn retry_after_beyond_our_cap_is_honoured_up_to_its_own_bound() {
        let b = backoff();
        assert!(b.delay(1, Some(Duration::from_secs(5))) >= Duration::from_secs(5));
        // Longer than our own cap (30 s): honoured as sent.
        assert_eq!(
            b.delay(1, Some(Duration::from_secs(300))),
            Duration::from_secs(300)
        );
        // Longer than retry_after_max: cut to it.
        assert_eq!(
            b.delay(1, Some(Duration::from_secs(7 * 24 * 3600))),
            Duration::from_secs(600)
        );
    }
}
