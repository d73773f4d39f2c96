//! The Kafka environment of the end-to-end tests (scripts/kafka.sh); the
//! tests every transport shares are in `transports`.

pub(crate) const SHARED_BROKER: &str = "127.0.0.1:9092";

/// The environment putting both services on Kafka with their own topic and
/// consumer group, so tests don't see each other's events.
pub(crate) fn kafka_env(brokers: &str, tag: &str) -> Vec<(String, String)> {
    vec![
        ("EVENT_TRANSPORT".into(), "kafka".into()),
        ("KAFKA_BROKERS".into(), brokers.into()),
        ("KAFKA_TOPIC".into(), format!("e2e-{tag}")),
        ("KAFKA_GROUP_ID".into(), format!("e2e-{tag}-group")),
        ("KAFKA_DLQ_TOPIC".into(), format!("e2e-{tag}.dlq")),
    ]
}
