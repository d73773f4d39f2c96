//! The audit service's settings, read once from the environment at start.

use shared::config::{env_or, env_parse, ConfigError, KafkaConfig, Transport};
use std::net::SocketAddr;

/// Everything the service needs to start. Tests build one by hand.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `LISTEN_ADDR`, where the CloudEvents sink and the query API listen.
    pub listen_addr: SocketAddr,
    /// `DATABASE_URL`, the SQLite audit store.
    pub database_url: String,
    /// `EVENT_TRANSPORT`: with `kafka` the service also consumes the topic.
    /// `POST /` is always available.
    pub transport: Transport,
    /// `MAX_BODY_BYTES`, the largest request body `POST /` reads.
    pub max_body_bytes: usize,
    pub kafka: KafkaSettings,
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
            listen_addr: env_parse("LISTEN_ADDR", SocketAddr::from(([0, 0, 0, 0], 8080)))?,
            database_url: env_or("DATABASE_URL", "sqlite://data/audit.db"),
            transport: Transport::from_env()?,
            max_body_bytes: env_parse("MAX_BODY_BYTES", 1024 * 1024)?,
            kafka: KafkaSettings {
                common: KafkaConfig::from_env(),
                group_id: env_or("KAFKA_GROUP_ID", "audit-group-id"),
                dlq_topic: env_or("KAFKA_DLQ_TOPIC", "audit.dlq"),
            },
        })
    }
}
