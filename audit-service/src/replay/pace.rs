//! A replay's rate limit: events a second, with governor's GCRA, waited
//! for on tokio's timer. The burst is one HTTP batch (one event for the
//! other targets), so a replay never sends faster than asked for longer
//! than one batch.

use governor::clock::{Clock, DefaultClock};
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use std::num::NonZeroU32;

pub struct Pace {
    limiter: RateLimiter<NotKeyed, InMemoryState, DefaultClock>,
}

impl Pace {
    /// `rate` events a second, in bursts of up to `batch`.
    pub fn new(rate: u32, batch: usize) -> Self {
        let rate = NonZeroU32::new(rate).unwrap_or(NonZeroU32::MIN);
        let burst = u32::try_from(batch)
            .ok()
            .and_then(NonZeroU32::new)
            .unwrap_or(NonZeroU32::MIN);
        Pace {
            limiter: RateLimiter::direct(Quota::per_second(rate).allow_burst(burst)),
        }
    }

    /// Waits until `events` more may go.
    pub async fn wait(&mut self, events: usize) {
        let n = u32::try_from(events)
            .ok()
            .and_then(NonZeroU32::new)
            .unwrap_or(NonZeroU32::MIN);
        loop {
            match self.limiter.check_n(n) {
                Ok(Ok(())) => return,
                Ok(Err(not_until)) => {
                    let wait = not_until.wait_time_from(self.limiter.clock().now());
                    tokio::time::sleep(wait).await;
                }
                // More than the burst at once (a batch larger than the one
                // the pace was made for): let it go, it was waited for.
                Err(_) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[tokio::test]
    async fn events_go_no_faster_than_the_rate() {
        let mut pace = Pace::new(200, 1);
        let started = Instant::now();
        for _ in 0..41 {
            pace.wait(1).await;
        }
        // 40 intervals of 5 ms after the first event.
        assert!(
            started.elapsed().as_millis() >= 190,
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn batches_count_each_event() {
        let mut pace = Pace::new(100, 10);
        let started = Instant::now();
        for _ in 0..3 {
            pace.wait(10).await;
        }
        // The first batch is the burst; two more need 10 events' time each.
        assert!(
            started.elapsed().as_millis() >= 190,
            "{:?}",
            started.elapsed()
        );
    }
}
