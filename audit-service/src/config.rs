//! The audit service's settings, read once from the environment at start.

use crate::auth::Access;
use crate::limits::ApiLimits;
use crate::replay::ReplaySettings;
use crate::tlog::LogSettings;
use brokers::kafka::KafkaConfig;
use brokers::mqtt::MqttConfig;
use brokers::nats::{check_stream_name, check_subject, NatsConfig};
use cloudevents_wire::Transport;
use service_kit::config::listen_addr;
use service_kit::serve::ListenSettings;
use settings::{env_or, env_parse, ConfigError};
use std::net::SocketAddr;
use std::time::Duration;

/// Everything the service needs to start. Tests build one by hand.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `LISTEN_ADDR` (see `service_kit::config::listen_addr`), where the
    /// CloudEvents sink and the query API listen.
    pub listen_addr: SocketAddr,
    /// `DATABASE_URL`: the audit store, a SQLite file or a PostgreSQL
    /// database that several replicas share.
    pub database_url: String,
    /// `EVENT_TRANSPORT` and its settings: with `kafka`, `nats` or `mqtt` the service also consumes
    /// the broker. `POST /` is always available.
    pub consumer: ConsumerSettings,
    /// `MAX_BODY_BYTES`, the largest request body `POST /` reads.
    pub max_body_bytes: usize,
    /// How the broker transports group records into store batches.
    pub batch: BatchLimits,
    /// `SHUTDOWN_GRACE_MS`: after SIGTERM, how long open connections and the
    /// Kafka batches in hand get to finish before they are dropped (what is
    /// already queued for the store is committed either way).
    pub shutdown_grace: Duration,
    /// TLS and the HTTP server's limits (`service_kit::serve`).
    pub listen: ListenSettings,
    /// Who may write and read the events (`crate::auth`).
    pub access: Access,
    /// Request timeout and live-tail clients (`crate::limits`).
    pub limits: ApiLimits,
    /// The transparency log, erasure on types and retention (`crate::tlog`).
    pub log: LogSettings,
    /// How replays run (`crate::replay`).
    pub replay: ReplaySettings,
}

/// How many records a broker consumer takes into one batch (one store
/// commit, one offset commit).
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// `INGEST_BATCH_MAX`: most records in a batch.
    pub max_events: usize,
    /// `INGEST_BATCH_WAIT_MS`: how long a batch waits for more records after
    /// its first one. An idle topic's record is stored this much later.
    pub max_wait: Duration,
    /// Most payload and header bytes in a batch, so large records make
    /// smaller batches rather than a larger heap.
    pub max_bytes: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        BatchLimits {
            max_events: 1000,
            max_wait: Duration::from_millis(5),
            max_bytes: 4 * 1024 * 1024,
        }
    }
}

/// The broker consumed besides `POST /` (`EVENT_TRANSPORT`), with its
/// settings, which are read (and refused when wrong) only for it.
#[derive(Debug, Clone)]
pub enum ConsumerSettings {
    /// `POST /` only.
    Http,
    Kafka(KafkaSettings),
    Nats(NatsSettings),
    Mqtt(MqttSettings),
}

impl ConsumerSettings {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(match Transport::from_env()? {
            Transport::Http => ConsumerSettings::Http,
            Transport::Kafka => ConsumerSettings::Kafka(KafkaSettings::from_env()),
            Transport::Nats => ConsumerSettings::Nats(NatsSettings::from_env()?),
            Transport::Mqtt => ConsumerSettings::Mqtt(MqttSettings::from_env()?),
        })
    }

    pub fn transport(&self) -> Transport {
        match self {
            ConsumerSettings::Http => Transport::Http,
            ConsumerSettings::Kafka(_) => Transport::Kafka,
            ConsumerSettings::Nats(_) => Transport::Nats,
            ConsumerSettings::Mqtt(_) => Transport::Mqtt,
        }
    }
}

/// Kafka consumer settings.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// Brokers, topic and extra librdkafka properties (`KAFKA_<PROPERTY>`).
    pub common: KafkaConfig,
    /// `KAFKA_GROUP_ID`.
    pub group_id: String,
    /// `KAFKA_DLQ_TOPIC`, where records that are not valid CloudEvents go.
    pub dlq_topic: String,
}

impl KafkaSettings {
    pub fn from_env() -> Self {
        KafkaSettings {
            common: KafkaConfig::from_env(),
            group_id: env_or("KAFKA_GROUP_ID", "audit-group-id"),
            dlq_topic: env_or("KAFKA_DLQ_TOPIC", "audit.dlq"),
        }
    }
}

impl Default for KafkaSettings {
    /// The defaults, without the environment (tests start from them).
    fn default() -> Self {
        KafkaSettings {
            common: KafkaConfig::from_vars(Vec::new()),
            group_id: "audit-group-id".into(),
            dlq_topic: "audit.dlq".into(),
        }
    }
}

/// JetStream consumer settings.
#[derive(Debug, Clone)]
pub struct NatsSettings {
    /// Server, credentials, stream and subject (`NATS_*`), shared with
    /// user-service.
    pub common: NatsConfig,
    /// `NATS_CONSUMER`: the durable pull consumer's name. Replicas of the
    /// service with the same name share its messages.
    pub consumer: String,
    /// `NATS_DLQ_SUBJECT`: where messages that are not valid CloudEvents go.
    /// It must lie outside the stream's subjects, or the consumer would read
    /// its own dead letters.
    pub dlq_subject: String,
    /// `NATS_DLQ_STREAM`: the stream that keeps the dead letters (created
    /// if missing, capturing `dlq_subject`).
    pub dlq_stream: String,
    /// `NATS_ACK_WAIT_MS`: how long the server waits for an acknowledgement
    /// before delivering a message again (to this or another replica).
    pub ack_wait: Duration,
    /// `NATS_MAX_DELIVER`: deliveries of one message at most; one that has
    /// crashed the consumer that many times is then left, not redelivered
    /// for ever (the server announces it as a MAX_DELIVERIES advisory).
    pub max_deliver: i64,
}

impl NatsSettings {
    pub fn from_env() -> Result<Self, ConfigError> {
        let settings = NatsSettings {
            common: NatsConfig::from_env()?,
            consumer: env_or("NATS_CONSUMER", "audit"),
            dlq_subject: env_or("NATS_DLQ_SUBJECT", "dlq.audit"),
            dlq_stream: env_or("NATS_DLQ_STREAM", "AUDIT_DLQ"),
            ack_wait: Duration::from_millis(at_least_one("NATS_ACK_WAIT_MS", 30_000)? as u64),
            max_deliver: at_least_one("NATS_MAX_DELIVER", 20)? as i64,
        };
        check_stream_name("NATS_CONSUMER", &settings.consumer)?;
        check_stream_name("NATS_DLQ_STREAM", &settings.dlq_stream)?;
        check_subject("NATS_DLQ_SUBJECT", &settings.dlq_subject)?;
        if settings.dlq_in_stream() {
            return Err(ConfigError {
                name: "NATS_DLQ_SUBJECT".into(),
                value: settings.dlq_subject.clone(),
                reason: format!(
                    "must lie outside the stream's subjects {:?}",
                    settings.common.stream_subjects()
                ),
            });
        }
        Ok(settings)
    }

    /// Whether the stream of events would capture the dead letters.
    fn dlq_in_stream(&self) -> bool {
        let first = |s: &str| s.split('.').next().unwrap_or_default().to_owned();
        first(&self.dlq_subject) == first(&self.common.subject)
    }
}

impl Default for NatsSettings {
    /// The defaults, without the environment (tests start from them).
    fn default() -> Self {
        NatsSettings {
            common: NatsConfig::default(),
            consumer: "audit".into(),
            dlq_subject: "dlq.audit".into(),
            dlq_stream: "AUDIT_DLQ".into(),
            ack_wait: Duration::from_secs(30),
            max_deliver: 20,
        }
    }
}

/// MQTT 5 consumer settings.
#[derive(Debug, Clone)]
pub struct MqttSettings {
    /// Broker, credentials, topic and client id (`MQTT_*`), shared with
    /// user-service. The client id names the persistent session, so it
    /// stays the same across restarts: `audit-service` unless
    /// `MQTT_CLIENT_ID` says otherwise (each replica needs its own).
    pub common: MqttConfig,
    /// `MQTT_GROUP`: the shared subscription's group
    /// (`$share/<group>/<topic>`); replicas in one group share the messages.
    pub group: String,
    /// `MQTT_DLQ_TOPIC`: where messages that are not valid CloudEvents go.
    pub dlq_topic: String,
    /// `MQTT_SESSION_EXPIRY_SECS`: how long the broker keeps the session
    /// (the subscription and the messages for it) while the service is
    /// away.
    pub session_expiry: Duration,
}

impl MqttSettings {
    pub fn from_env() -> Result<Self, ConfigError> {
        let mut common = MqttConfig::from_env("audit-service")?;
        if std::env::var("MQTT_CLIENT_ID").map_or(true, |id| id.trim().is_empty()) {
            common.client_id = "audit-service".into();
        }
        let settings = MqttSettings {
            common,
            group: env_or("MQTT_GROUP", "audit"),
            dlq_topic: env_or("MQTT_DLQ_TOPIC", "audit.dlq"),
            session_expiry: Duration::from_secs(env_parse(
                "MQTT_SESSION_EXPIRY_SECS",
                7 * 24 * 3600,
            )?),
        };
        if settings.group.is_empty() || settings.group.contains(['/', '+', '#']) {
            return Err(ConfigError {
                name: "MQTT_GROUP".into(),
                value: settings.group,
                reason: "a share name is not empty and holds no /, + or #".into(),
            });
        }
        if settings.dlq_topic.is_empty()
            || settings.dlq_topic.contains(['+', '#'])
            || settings.dlq_topic.starts_with('$')
            || settings.dlq_topic == settings.common.topic
        {
            return Err(ConfigError {
                name: "MQTT_DLQ_TOPIC".into(),
                value: settings.dlq_topic,
                reason:
                    "must be a topic without wildcards, not starting with $, other than MQTT_TOPIC"
                        .into(),
            });
        }
        if settings.session_expiry.as_secs() > u64::from(u32::MAX) {
            return Err(ConfigError {
                name: "MQTT_SESSION_EXPIRY_SECS".into(),
                value: settings.session_expiry.as_secs().to_string(),
                reason: format!("must be at most {}", u32::MAX),
            });
        }
        Ok(settings)
    }

    /// The topic filter subscribed to.
    pub fn filter(&self) -> String {
        format!("$share/{}/{}", self.group, self.common.topic)
    }
}

impl Default for MqttSettings {
    /// The defaults, without the environment (tests start from them).
    fn default() -> Self {
        MqttSettings {
            common: MqttConfig {
                url: "mqtt://127.0.0.1:1883".into(),
                host: "127.0.0.1".into(),
                port: 1883,
                tls: false,
                topic: "audit".into(),
                client_id: "audit-service".into(),
                credentials: None,
                ca_file: None,
            },
            group: "audit".into(),
            dlq_topic: "audit.dlq".into(),
            session_expiry: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

impl Settings {
    pub fn transport(&self) -> Transport {
        self.consumer.transport()
    }

    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Settings {
            listen_addr: listen_addr(SocketAddr::from(([0, 0, 0, 0], 8080)))?,
            database_url: service_kit::config::database_url("sqlite://data/audit.db")?,
            consumer: ConsumerSettings::from_env()?,
            max_body_bytes: env_parse("MAX_BODY_BYTES", 1024 * 1024)?,
            batch: BatchLimits {
                max_events: at_least_one("INGEST_BATCH_MAX", BatchLimits::default().max_events)?,
                max_wait: Duration::from_millis(env_parse("INGEST_BATCH_WAIT_MS", 5)?),
                ..BatchLimits::default()
            },
            shutdown_grace: Duration::from_millis(env_parse("SHUTDOWN_GRACE_MS", 10_000)?),
            listen: ListenSettings::from_env()?,
            access: Access::from_env()?,
            limits: ApiLimits::from_env()?,
            log: LogSettings::from_env()?,
            replay: ReplaySettings::from_env()?,
        })
    }
}

/// A count that must not be zero: a batch of no records never ends.
fn at_least_one(name: &str, default: usize) -> Result<usize, ConfigError> {
    match env_parse(name, default)? {
        0 => Err(ConfigError {
            name: name.to_owned(),
            value: "0".to_owned(),
            reason: "must be at least 1".to_owned(),
        }),
        n => Ok(n),
    }
}
