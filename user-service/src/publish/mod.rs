//! Publishing CloudEvents to the audit service, over HTTP or Kafka, and
//! what the receiver's answer means for the relay.

mod http;
mod kafka;

pub use self::http::HttpPublisher;
pub use self::kafka::{KafkaPublisher, Report};

use crate::config::PublishSettings;
use cloudevents::Event;
use std::time::Duration;

/// What the relay does with an event after one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The receiver has it: mark it delivered.
    Ack,
    /// Worth trying again later (receiver down, overloaded, timed out).
    /// `after` is the receiver's Retry-After, when it sent one.
    Retry {
        after: Option<Duration>,
        status: Option<u16>,
        reason: String,
    },
    /// The receiver will never accept it as sent: park it as a dead letter.
    Nack { status: Option<u16>, reason: String },
}

impl Outcome {
    /// A word for logs and spans.
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Ack => "ack",
            Outcome::Retry { .. } => "retry",
            Outcome::Nack { .. } => "nack",
        }
    }
}

pub enum Publisher {
    Http(HttpPublisher),
    Kafka(KafkaPublisher),
}

impl Publisher {
    pub fn new(settings: &PublishSettings) -> anyhow::Result<Self> {
        Ok(match settings {
            PublishSettings::Http { url, mode, timeout } => {
                Publisher::Http(HttpPublisher::new(url, *mode, *timeout)?)
            }
            PublishSettings::Kafka { config, timeout } => {
                Publisher::Kafka(KafkaPublisher::new(config, *timeout)?)
            }
        })
    }

    /// Sends one event and waits for the answer (the relay itself uses
    /// the transports' own batch and in-flight paths).
    pub async fn publish(&self, event: &Event) -> Outcome {
        match self {
            Publisher::Http(p) => p.publish(event).await,
            Publisher::Kafka(p) => p.publish(event).await,
        }
    }

    /// Whether the transport is usable, for `/readyz`. Over HTTP this is
    /// always true: the audit service being down delays events in the
    /// outbox but must not take user-service out of rotation.
    pub async fn check_ready(&self) -> Result<(), String> {
        match self {
            Publisher::Http(_) => Ok(()),
            Publisher::Kafka(p) => p.check_ready().await,
        }
    }

    /// Waits for anything still buffered to be delivered (Kafka); called
    /// once at shutdown.
    pub async fn flush(&self) {
        if let Publisher::Kafka(p) = self {
            p.flush().await;
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Publisher::Http(p) => p.describe(),
            Publisher::Kafka(p) => p.describe(),
        }
    }
}
