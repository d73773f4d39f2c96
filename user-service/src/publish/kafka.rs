//! Publishing to Kafka: binary mode (`ce_` headers), key = user id, through
//! an idempotent producer, acknowledged only by the broker's delivery report.

use super::Outcome;
use anyhow::Context;
use cloudevents::binding::rdkafka::{FutureRecordExt, MessageRecord};
use cloudevents::{AttributesReader, Event};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use shared::config::KafkaConfig;
use std::time::Duration;

pub struct KafkaPublisher {
    producer: FutureProducer,
    topic: String,
    brokers: String,
    timeout: Duration,
}

impl KafkaPublisher {
    pub fn new(config: &KafkaConfig, timeout: Duration) -> anyhow::Result<Self> {
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &config.brokers)
            // Idempotence keeps per-partition order and drops the broker-side
            // duplicates of librdkafka's own retries; acks=all means a
            // delivery report comes only once every in-sync replica has it.
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // The relay has at most RELAY_CONCURRENCY records in flight, one
            // per user, so the producer batches whatever queues up while a
            // request is out; lingering on top only adds latency. Measured
            // draining a 2,000-event backlog (release build, 32 in flight):
            // linger.ms=0 ~6,000 events/s, linger.ms=5 ~2,800 events/s.
            .set("linger.ms", "0")
            // Bounds what the producer may hold in memory.
            .set("queue.buffering.max.messages", "10000")
            // A delivery report (success or failure) within the publish
            // timeout; the relay then retries with its own backoff.
            .set("message.timeout.ms", timeout.as_millis().to_string());
        // Set last, so an operator's KAFKA_<PROPERTY> wins over our defaults.
        for (key, value) in &config.properties {
            client.set(key, value);
        }
        let producer: FutureProducer = client
            .create()
            .context("Failed to create the Kafka producer")?;
        Ok(KafkaPublisher {
            producer,
            topic: config.topic.clone(),
            brokers: config.brokers.clone(),
            timeout,
        })
    }

    pub fn describe(&self) -> String {
        format!("kafka {} topic {}", self.brokers, self.topic)
    }

    #[tracing::instrument(skip_all, fields(event_id = event.id(), event_type = event.ty()))]
    pub async fn publish(&self, event: &Event) -> Outcome {
        // The record key is the event's `partitionkey` extension where it has
        // one (the Kafka binding maps the two), otherwise its subject, the
        // user id: one user's events share a partition and keep their order.
        // The extension is then set, saying the same to CloudEvents-aware
        // consumers.
        let key = match event.extension("partitionkey") {
            Some(pk) => pk.to_string(),
            None => event.subject().unwrap_or(event.id()).to_owned(),
        };
        let mut event = event.clone();
        event.set_extension("partitionkey", key.clone());
        let message = match MessageRecord::from_event(event) {
            Ok(m) => m,
            Err(e) => {
                return Outcome::Nack {
                    status: None,
                    reason: format!("event does not map to a Kafka record: {e}"),
                }
            }
        };
        let record = FutureRecord::to(&self.topic)
            .message_record(&message)
            .key(&key);
        // The queue timeout only matters when the local queue is full; the
        // delivery itself is bounded by message.timeout.ms.
        match self.producer.send(record, self.timeout).await {
            Ok(_) => Outcome::Ack,
            Err((error, _)) => classify(error),
        }
    }

    /// The broker answers a metadata request for our topic.
    pub async fn check_ready(&self) -> Result<(), String> {
        let producer = self.producer.clone();
        let topic = self.topic.clone();
        let timeout = self.timeout.min(Duration::from_secs(2));
        // fetch_metadata blocks the calling thread.
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(Some(&topic), timeout)
                .map(|_| ())
                .map_err(|e| format!("Kafka broker unreachable: {e}"))
        })
        .await
        .map_err(|e| format!("metadata task failed: {e}"))?
    }

    pub async fn flush(&self) {
        let producer = self.producer.clone();
        let timeout = self.timeout;
        let flushed = tokio::task::spawn_blocking(move || producer.flush(timeout)).await;
        if !matches!(flushed, Ok(Ok(()))) {
            tracing::warn!("Kafka producer did not flush before shutdown");
        }
    }
}

/// A record the broker refuses for what it is will be refused again;
/// everything else (broker down, timeouts, leader changes) is transient.
fn classify(error: KafkaError) -> Outcome {
    let permanent = matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidRecord
        )
    );
    if permanent {
        Outcome::Nack {
            status: None,
            reason: error.to_string(),
        }
    } else {
        Outcome::Retry {
            after: None,
            status: None,
            reason: error.to_string(),
        }
    }
}
