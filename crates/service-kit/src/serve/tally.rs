//! Log lines about what any client can repeat at will (failed TLS
//! handshakes, refused connections): the first at once, then at most one
//! per period, counting what happened since the last line.

use governor::{DefaultDirectRateLimiter, Quota};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How often a line about the same thing may be logged.
pub(super) const LOG_PERIOD: Duration = Duration::from_secs(10);

pub(super) struct Tally {
    lines: DefaultDirectRateLimiter,
    since_last_line: AtomicU64,
}

impl Tally {
    pub(super) fn new(period: Duration) -> Self {
        Tally {
            // Only a zero period has no quota; a line a second then.
            lines: DefaultDirectRateLimiter::direct(
                Quota::with_period(period)
                    .unwrap_or_else(|| Quota::per_second(std::num::NonZeroU32::MIN)),
            ),
            since_last_line: AtomicU64::new(0),
        }
    }

    /// Counts one occurrence; when a line is due, returns how many
    /// occurrences it reports (this one included).
    pub(super) fn record(&self) -> Option<u64> {
        self.since_last_line.fetch_add(1, Ordering::Relaxed);
        self.lines
            .check()
            .ok()
            .map(|()| self.since_last_line.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_is_logged_then_one_line_per_period_with_the_count() {
        let tally = Tally::new(Duration::from_millis(200));
        assert_eq!(tally.record(), Some(1));
        for _ in 0..19 {
            assert_eq!(tally.record(), None);
        }
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(tally.record(), Some(20), "the 19 silent ones and this one");
        assert_eq!(tally.record(), None);
    }
}
