//! The audit service's settings, read once from the environment at start.

use shared::config::{env_or, env_parse, listen_addr, ConfigError, KafkaConfig, Transport};
use std::net::SocketAddr;
use std::time::Duration;

/// Everything the service needs to start. Tests build one by hand.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `LISTEN_ADDR` (see `shared::config::listen_addr`), where the
    /// CloudEvents sink and the query API listen.
    pub listen_addr: SocketAddr,
    /// `DATABASE_URL`, the SQLite audit store.
    pub database_url: String,
    /// `EVENT_TRANSPORT`: with `kafka` the service also consumes the topic.
    /// `POST /` is always available.
    pub transport: Transport,
    /// `MAX_BODY_BYTES`, the largest request body `POST /` reads.
    pub max_body_bytes: usize,
    /// How the broker transports group records into store batches.
    pub batch: BatchLimits,
    pub kafka: KafkaSettings,
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

/// Kafka consumer settings, used when `transport` is Kafka.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// Brokers, topic and extra librdkafka properties (`KAFKA_<PROPERTY>`).
    pub common: KafkaConfig,
    /// `KAFKA_GROUP_ID`.
    pub group_id: String,
    /// `KAFKA_DLQ_TOPIC`, where records that are not valid CloudEvents go.
    pub dlq_topic: String,
}

impl Settings {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Settings {
            listen_addr: listen_addr(SocketAddr::from(([0, 0, 0, 0], 8080)))?,
            database_url: env_or("DATABASE_URL", "sqlite://data/audit.db"),
            transport: Transport::from_env()?,
            max_body_bytes: env_parse("MAX_BODY_BYTES", 1024 * 1024)?,
            batch: BatchLimits {
                max_events: at_least_one("INGEST_BATCH_MAX", BatchLimits::default().max_events)?,
                max_wait: Duration::from_millis(env_parse("INGEST_BATCH_WAIT_MS", 5)?),
                ..BatchLimits::default()
            },
            kafka: KafkaSettings {
                common: KafkaConfig::from_env(),
                group_id: env_or("KAFKA_GROUP_ID", "audit-group-id"),
                dlq_topic: env_or("KAFKA_DLQ_TOPIC", "audit.dlq"),
            },
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
