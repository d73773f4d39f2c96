//! What a publisher is built from: the target, the content mode and the
//! publish timeout, as one sum type so an invalid combination cannot be
//! built. Each service reads these from its own configuration (the relay
//! from the environment, a replay from its request).

use brokers::kafka::KafkaConfig;
use brokers::mqtt::MqttConfig;
use brokers::nats::NatsConfig;
use cloudevents_wire::Transport;
use settings::BearerToken;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// How the HTTP, NATS and MQTT publishers lay an event out on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentMode {
    /// Attributes in `ce-` headers, data as the body (the default, as in the seed).
    Binary,
    /// The whole event as `application/cloudevents+json`.
    Structured,
}

impl FromStr for ContentMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "binary" => Ok(ContentMode::Binary),
            "structured" => Ok(ContentMode::Structured),
            _ => Err("expected `binary` or `structured`".to_owned()),
        }
    }
}

/// Where a publisher sends events.
#[derive(Debug, Clone)]
pub enum PublishSettings {
    Http {
        /// The receiver's URL (`AUDIT_URL` for the relay).
        url: String,
        /// How a single event is sent.
        mode: ContentMode,
        /// `PUBLISH_TIMEOUT_MS`.
        timeout: Duration,
        /// The bearer token sent and the CAs trusted.
        client: HttpClientSettings,
    },
    Kafka {
        config: KafkaConfig,
        /// `PUBLISH_TIMEOUT_MS`: how long one delivery may take.
        timeout: Duration,
    },
    Nats {
        config: NatsConfig,
        /// `NATS_CONTENT_MODE`.
        mode: ContentMode,
        /// `PUBLISH_TIMEOUT_MS`: how long one publish acknowledgement may
        /// take.
        timeout: Duration,
    },
    Mqtt(MqttSettings),
}

impl PublishSettings {
    pub fn transport(&self) -> Transport {
        match self {
            PublishSettings::Http { .. } => Transport::Http,
            PublishSettings::Kafka { .. } => Transport::Kafka,
            PublishSettings::Nats { .. } => Transport::Nats,
            PublishSettings::Mqtt(_) => Transport::Mqtt,
        }
    }
}

/// An MQTT publisher's settings.
#[derive(Debug, Clone)]
pub struct MqttSettings {
    pub config: MqttConfig,
    /// `MQTT_CONTENT_MODE`, binary by default.
    pub mode: ContentMode,
    /// `PUBLISH_TIMEOUT_MS`: how long one PUBACK may take.
    pub timeout: Duration,
}

/// How the HTTP publisher proves who it is and whom it trusts.
#[derive(Debug, Clone, Default)]
pub struct HttpClientSettings {
    /// `AUDIT_TOKEN` (or the file `AUDIT_TOKEN_FILE`): sent as
    /// `Authorization: Bearer` with every request.
    pub token: Option<BearerToken>,
    /// `AUDIT_CA_FILE`: PEM certificates trusted for an https `AUDIT_URL`
    /// besides the public roots, for an audit service with a private CA.
    pub ca_file: Option<PathBuf>,
}
