//! Publishing to Kafka: binary mode (`ce_` headers), key = user id, through
//! an idempotent producer, acknowledged only by the broker's delivery
//! report. The producer is rebuilt when it hits a fatal error.

use super::Outcome;
use anyhow::Context;
use cloudevents::binding::rdkafka::{FutureRecordExt, MessageRecord};
use cloudevents::{AttributesReader, Event};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use shared::config::KafkaConfig;
use std::sync::RwLock;
use std::time::Duration;

/// Records the producer may hold at once; above the relay's window, so a
/// full local queue never happens in normal operation.
const QUEUE_MESSAGES: usize = 20_000;

pub struct KafkaPublisher {
    /// Replaced as a whole after a fatal error; the lock is held only to
    /// clone or swap it, never across an await.
    producer: RwLock<FutureProducer>,
    client: ClientConfig,
    topic: String,
    brokers: String,
    timeout: Duration,
}

/// What became of one record, as the relay acts on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    Delivered,
    /// The broker refuses this record for what it is: park it.
    Refused(String),
    /// Not delivered this time (a timeout the operator configured, a purge
    /// at shutdown, an unknown topic): send it again later.
    Failed(String),
    /// The producer is unusable (a fatal idempotence error): every later
    /// send fails too, so it must be rebuilt.
    Fatal(String),
}

impl KafkaPublisher {
    pub fn new(config: &KafkaConfig, timeout: Duration) -> anyhow::Result<Self> {
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &config.brokers)
            // Idempotence keeps per-partition order across librdkafka's own
            // retries and drops the duplicates they would make; acks=all
            // means a delivery report comes only once every in-sync replica
            // has the record.
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // With thousands of records in flight, a short linger makes
            // fewer, fuller produce requests: less CPU here and on the
            // broker per record. Draining 100,000 events on a 2-core
            // machine shared with the broker and audit-service: linger.ms=0
            // 25,000-36,000 events/s, linger.ms=10 33,000-55,000 events/s
            // (noisy; 1.6-2.3 s of our CPU instead of 2.1-2.8 s). A lone
            // event waits 10 ms more.
            .set("linger.ms", "10")
            .set("queue.buffering.max.messages", QUEUE_MESSAGES.to_string())
            // No local expiry: librdkafka retries a record until the broker
            // takes it, which is what keeps one user's records in order with
            // many in flight (see the relay's Kafka module). The cost: while
            // the broker is away no report comes at all, so the outbox shows
            // no failed attempts; the lag gauge and /readyz tell instead.
            .set("message.timeout.ms", "0");
        // Set last, so an operator's KAFKA_<PROPERTY> wins over our defaults
        // (KAFKA_MESSAGE_TIMEOUT_MS included, with the ordering cost the
        // relay's Kafka module describes).
        for (key, value) in &config.properties {
            client.set(key, value);
        }
        let producer: FutureProducer = client
            .create()
            .context("Failed to create the Kafka producer")?;
        Ok(KafkaPublisher {
            producer: RwLock::new(producer),
            client,
            topic: config.topic.clone(),
            brokers: config.brokers.clone(),
            timeout,
        })
    }

    pub fn describe(&self) -> String {
        format!("kafka {} topic {}", self.brokers, self.topic)
    }

    /// `PUBLISH_TIMEOUT_MS`: how long the relay waits for reports in flight
    /// when it stops or recovers.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The current producer (a cheap handle). A poisoned lock only means a
    /// thread panicked while swapping; the producer inside is whole.
    fn producer(&self) -> FutureProducer {
        self.producer
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Hands one event to the producer without waiting for the broker:
    /// the future resolves with its delivery report. `Err` when the
    /// producer would not take it.
    pub fn enqueue(&self, mut event: Event) -> Result<DeliveryFuture, Report> {
        // The record key is the event's `partitionkey` extension where it
        // has one (the Kafka binding maps the two), otherwise its subject,
        // the user id: one user's events share a partition and keep their
        // order. The extension is then set, saying the same to
        // CloudEvents-aware consumers.
        let key = match event.extension("partitionkey") {
            Some(pk) => pk.to_string(),
            None => event.subject().unwrap_or(event.id()).to_owned(),
        };
        event.set_extension("partitionkey", key.clone());
        let message = MessageRecord::from_event(event)
            .map_err(|e| Report::Refused(format!("event does not map to a Kafka record: {e}")))?;
        let record = FutureRecord::to(&self.topic)
            .message_record(&message)
            .key(&key);
        let producer = self.producer();
        producer
            .send_result(record)
            .map_err(|(error, _)| classify(&error, producer.client().fatal_error().is_some()))
    }

    /// What a delivery report means. A report that never came (the
    /// producer was dropped) is a failure to retry.
    pub fn report(&self, delivery: <DeliveryFuture as std::future::Future>::Output) -> Report {
        match delivery {
            Ok(Ok(_)) => Report::Delivered,
            Ok(Err((error, _))) => classify(&error, self.fatal_error().is_some()),
            Err(_) => Report::Failed("the producer was dropped before reporting".to_owned()),
        }
    }

    /// The producer's fatal error, if it has one.
    pub fn fatal_error(&self) -> Option<String> {
        self.producer()
            .client()
            .fatal_error()
            .map(|(code, reason)| format!("{code:?}: {reason}"))
    }

    /// Replaces the producer by a new one with the same configuration. The
    /// old one is dropped on a blocking thread: dropping purges and flushes
    /// it, which waits.
    pub fn rebuild(&self) -> anyhow::Result<()> {
        let fresh: FutureProducer = self
            .client
            .create()
            .context("Failed to create a new Kafka producer")?;
        let old = {
            let mut producer = self
                .producer
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            std::mem::replace(&mut *producer, fresh)
        };
        tokio::task::spawn_blocking(move || drop(old));
        Ok(())
    }

    /// Sends one event and waits for its report, at most the publish
    /// timeout (the one-shot path of the `send_event` example).
    #[tracing::instrument(skip_all, fields(event_id = event.id(), event_type = event.ty()))]
    pub async fn publish(&self, event: &Event) -> Outcome {
        let report = match self.enqueue(event.clone()) {
            Ok(delivery) => match tokio::time::timeout(self.timeout, delivery).await {
                Ok(delivery) => self.report(delivery),
                Err(_) => Report::Failed("no delivery report within the publish timeout".into()),
            },
            Err(report) => report,
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

    /// Ready when the producer is usable and the broker answers a metadata
    /// request for our topic.
    pub async fn check_ready(&self) -> Result<(), String> {
        if let Some(fatal) = self.fatal_error() {
            return Err(format!("Kafka producer failed for good: {fatal}"));
        }
        let producer = self.producer();
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
        let producer = self.producer();
        let timeout = self.timeout;
        let flushed = tokio::task::spawn_blocking(move || producer.flush(timeout)).await;
        if !matches!(flushed, Ok(Ok(()))) {
            tracing::warn!("Kafka producer did not flush before shutdown");
        }
    }
}

/// A record the broker refuses for what it is will be refused again; a
/// producer in a fatal state refuses everything; anything else (a timeout,
/// a purge, a missing topic) is worth another try.
fn classify(error: &KafkaError, producer_fatal: bool) -> Report {
    let code = error.rdkafka_error_code();
    if producer_fatal || code == Some(RDKafkaErrorCode::Fatal) {
        return Report::Fatal(error.to_string());
    }
    let permanent = matches!(
        code,
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidRecord
        )
    );
    if permanent {
        Report::Refused(error.to_string())
    } else {
        Report::Failed(error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn produce_error(code: RDKafkaErrorCode) -> KafkaError {
        KafkaError::MessageProduction(code)
    }

    #[test]
    fn reports_are_classified_by_what_the_relay_must_do() {
        let cases = [
            (RDKafkaErrorCode::MessageSizeTooLarge, false, "refused"),
            (RDKafkaErrorCode::InvalidRecord, false, "refused"),
            (RDKafkaErrorCode::MessageTimedOut, false, "failed"),
            (RDKafkaErrorCode::PurgeQueue, false, "failed"),
            (RDKafkaErrorCode::UnknownTopicOrPartition, false, "failed"),
            (RDKafkaErrorCode::QueueFull, false, "failed"),
            (RDKafkaErrorCode::Fatal, false, "fatal"),
            // The record's own error is not Fatal, but the producer is:
            // what librdkafka reports for the request that broke it.
            (RDKafkaErrorCode::OutOfOrderSequenceNumber, true, "fatal"),
            (RDKafkaErrorCode::MessageSizeTooLarge, true, "fatal"),
        ];
        for (code, fatal, expected) in cases {
            let got = match classify(&produce_error(code), fatal) {
                Report::Delivered => "delivered",
                Report::Refused(_) => "refused",
                Report::Failed(_) => "failed",
                Report::Fatal(_) => "fatal",
            };
            assert_eq!(got, expected, "{code:?}, producer fatal: {fatal}");
        }
    }
}
