//! The ways events come in: `POST /` (http) and a Kafka topic (kafka). Each
//! decodes with `decode` and writes through the same group-commit store.

pub mod dead_letter;
pub mod decode;
pub mod http;
pub mod kafka;

use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Shutdown interrupted a wait; nothing of the work in hand is acknowledged.
#[derive(Debug)]
pub struct Stopped;

/// The pause between retries of work that must not be skipped (storing a
/// batch, producing a dead letter): doubling from 100 ms to 5 s, cut short
/// by shutdown.
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    const MIN: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    pub fn new() -> Self {
        Backoff { next: Self::MIN }
    }

    pub async fn pause(&mut self, shutdown: &CancellationToken) -> Result<(), Stopped> {
        let pause = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        tokio::select! {
            _ = shutdown.cancelled() => Err(Stopped),
            _ = tokio::time::sleep(pause) => Ok(()),
        }
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}
