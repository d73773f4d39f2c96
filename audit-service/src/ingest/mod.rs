//! The ways events come in: `POST /` (always) and, when `EVENT_TRANSPORT`
//! names a broker, a consumer of it. Every broker runs the one `pipeline`;
//! each transport's module is its `Source` (receiving, decoding with
//! `decode` and its binding, acknowledging) and its `DeadLetterSink`. This
//! module holds what they share and the one place that picks the consumer.

pub mod dead_letter;
pub use cloudevents_wire::decode;
pub mod http;
pub mod kafka;
pub mod mqtt;
pub mod nats;
pub mod pipeline;

use crate::config::{ConsumerSettings, Settings};
use crate::store::Store;
use futures::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Whether a consumer's broker answers, for `/readyz`.
pub trait Probe: Send + Sync {
    /// Asks the broker within `timeout`; the error says why not.
    fn check(&self, timeout: Duration) -> BoxFuture<'_, Result<(), String>>;
}

/// A running broker consumer.
pub struct ConsumerTask {
    /// Ends after `shutdown` once the work in hand is finished; if it ends
    /// on its own, it cancels `shutdown`, stopping the service.
    pub task: JoinHandle<()>,
    pub probe: Arc<dyn Probe>,
}

/// Starts the consumer of the broker `EVENT_TRANSPORT` names, if it names
/// one.
pub async fn start(
    settings: &Settings,
    store: Store,
    shutdown: CancellationToken,
) -> anyhow::Result<Option<ConsumerTask>> {
    Ok(match &settings.consumer {
        ConsumerSettings::Http => None,
        ConsumerSettings::Kafka(kafka) => {
            Some(kafka::start(kafka, settings.batch, store, shutdown)?)
        }
        ConsumerSettings::Nats(nats) => {
            Some(nats::start(nats, settings.batch, store, shutdown).await?)
        }
        ConsumerSettings::Mqtt(mqtt) => Some(mqtt::start(
            mqtt,
            settings.max_body_bytes,
            settings.batch,
            store,
            shutdown,
        )?),
    })
}

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
