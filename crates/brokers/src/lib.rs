//! The broker clients both services use, built the same way on each side,
//! with their settings: Kafka (librdkafka through rdkafka), NATS JetStream
//! (async-nats) and MQTT 5 (rumqttc). Each module reads its `*_` variables,
//! builds clients with the operator's credentials and TLS, and probes the
//! broker for `/readyz`.

pub mod kafka;
pub mod mqtt;
pub mod nats;
