//! Publishing CloudEvents, and what the receiver's answer means for the
//! sender: user-service's outbox relay and audit-service's replays send
//! through these, by the same delivery rules. One module per transport;
//! this one holds the seam between them and the senders.
//!
//! There are two kinds of publisher, because there are two ways a sender
//! sends (user-service's `relay` module is the model):
//! - request/response (HTTP): one answer per request, which may carry many
//!   events; the relay keeps one request per user in flight;
//! - pipelined and acknowledged ([`Pipelined`], Kafka, NATS JetStream and
//!   MQTT): events are handed
//!   over one after another, in order, with thousands in flight, and each
//!   is acknowledged on its own by the broker later. The relay's window
//!   strategy is written once against this trait.

mod backoff;
mod config;
mod http;
mod kafka;
mod mqtt;
mod nats;

pub use self::backoff::Backoff;
pub use self::config::{ContentMode, HttpClientSettings, MqttSettings, PublishSettings};
pub use self::http::HttpPublisher;
pub use self::kafka::KafkaPublisher;
pub use self::mqtt::MqttPublisher;
pub use self::nats::NatsPublisher;
use cloudevents::{AttributesReader, Event};
use cloudevents_wire::Transport;
use futures::future::BoxFuture;
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

/// What became of one event handed to a pipelined publisher, as the relay
/// acts on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// The broker acknowledged it (a duplicate it already had included).
    Delivered,
    /// The broker refuses this event for what it is: park it.
    Refused(String),
    /// Not delivered this time (a timeout, a purge at shutdown, a broker
    /// that is away): send it again later.
    Failed(String),
    /// The publisher is unusable (a fatal producer error): every later
    /// send fails too, so it must be rebuilt.
    Fatal(String),
}

/// How often the one-shot `Publisher::publish` asks a publisher that would
/// not take its event again.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// The acknowledgement of one event in flight: resolves with its report.
pub type Pending = BoxFuture<'static, Report>;

/// A publisher that takes events one after another, in order, and reports
/// on each later, many in flight at once: a broker with publish
/// acknowledgements.
///
/// The order contract: events handed to `enqueue` one after another reach
/// the broker in that order, as long as their reports say `Delivered`. What
/// a transport does after a failure (and what the relay does about it) is
/// in the relay's window module.
pub trait Pipelined: Send + Sync {
    /// Which transport this is, for logs and metric labels.
    fn transport(&self) -> Transport;

    /// Hands one event over without waiting for the broker. Resolves once
    /// the event is on its way, in order after those handed over before;
    /// the `Pending` resolves with its report. `Err` when the publisher
    /// would not take it.
    fn enqueue(&self, event: Event) -> BoxFuture<'_, Result<Pending, Report>>;

    /// `PUBLISH_TIMEOUT_MS`: how long reports in flight are awaited when
    /// the relay stops or recovers.
    fn timeout(&self) -> Duration;

    /// Replaces an unusable publisher by a fresh one with the same settings.
    fn rebuild(&self) -> anyhow::Result<()>;

    /// Whether the broker answers, for `GET /delivery`.
    fn check_ready(&self) -> BoxFuture<'_, Result<(), String>>;

    /// Waits for anything still buffered to be delivered; called once at
    /// shutdown.
    fn flush(&self) -> BoxFuture<'_, ()>;

    fn describe(&self) -> String;
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
    Pipelined(Box<dyn Pipelined>),
}

impl Publisher {
    /// A publisher as `settings` say; `client` names this service to a
    /// broker that shows its clients (NATS).
    pub async fn new(settings: &PublishSettings, client: &str) -> anyhow::Result<Self> {
        Ok(match settings {
            PublishSettings::Http {
                url,
                mode,
                timeout,
                client,
            } => Publisher::Http(HttpPublisher::new(url, *mode, *timeout, client)?),
            PublishSettings::Kafka { config, timeout } => {
                Publisher::Pipelined(Box::new(KafkaPublisher::new(config, *timeout)?))
            }
            PublishSettings::Nats {
                config,
                mode,
                timeout,
            } => Publisher::Pipelined(Box::new(
                NatsPublisher::new(config, *mode, *timeout, client).await?,
            )),
            PublishSettings::Mqtt(settings) => {
                Publisher::Pipelined(Box::new(MqttPublisher::new(settings)?))
            }
        })
    }

    /// Sends one event and waits for the answer, at most the publish
    /// timeout (the relay itself uses the transports' own batch and
    /// in-flight paths; this is the one-shot path of the `send_event`
    /// example).
    #[tracing::instrument(skip_all, fields(event_id = event.id(), event_type = event.ty()))]
    pub async fn publish(&self, event: &Event) -> Outcome {
        let publisher = match self {
            Publisher::Http(p) => return p.publish(event).await,
            Publisher::Pipelined(p) => p,
        };
        let deadline = tokio::time::Instant::now() + publisher.timeout();
        let report = loop {
            match publisher.enqueue(event.clone()).await {
                Ok(pending) => match tokio::time::timeout_at(deadline, pending).await {
                    Ok(report) => break report,
                    Err(_) => {
                        break Report::Failed(
                            "no acknowledgement within the publish timeout".into(),
                        )
                    }
                },
                // A publisher that refuses at once (a NATS server that did
                // not answer within the first connection's wait) gets the
                // rest of the timeout: this path has no relay to try again
                // later.
                Err(Report::Failed(_)) if tokio::time::Instant::now() + RETRY_PAUSE < deadline => {
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(report) => break report,
            }
        };
        match report {
            Report::Delivered => Outcome::Ack,
            Report::Refused(reason) => Outcome::Nack {
                status: None,
                reason,
            },
            Report::Failed(reason) | Report::Fatal(reason) => Outcome::Retry {
                after: None,
                status: None,
                reason,
            },
        }
    }

    /// Whether the broker answers, for `GET /delivery`. Over HTTP there is
    /// none to ask: the outbox's lag says how delivery stands.
    pub async fn check_ready(&self) -> Result<(), String> {
        match self {
            Publisher::Http(_) => Ok(()),
            Publisher::Pipelined(p) => p.check_ready().await,
        }
    }

    /// Waits for anything still buffered to be delivered; called once at
    /// shutdown.
    pub async fn flush(&self) {
        if let Publisher::Pipelined(p) = self {
            p.flush().await;
        }
    }

    /// Which transport this is.
    pub fn transport(&self) -> Transport {
        match self {
            Publisher::Http(_) => Transport::Http,
            Publisher::Pipelined(p) => p.transport(),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Publisher::Http(p) => p.describe(),
            Publisher::Pipelined(p) => p.describe(),
        }
    }
}
