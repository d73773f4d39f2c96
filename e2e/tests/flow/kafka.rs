//! The Kafka environment of the end-to-end tests (scripts/kafka.sh); the
//! tests every transport shares are in `transports`.

use std::path::PathBuf;
use std::process::Command;

pub(crate) const SHARED_BROKER: &str = "127.0.0.1:9092";

fn kafka_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/kafka.sh")
}

pub(crate) fn require_shared_broker() {
    let up = Command::new(kafka_script())
        .arg("status")
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        up,
        "no Kafka broker at {SHARED_BROKER}: start one with `make kafka-up` (make test does)"
    );
}

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
