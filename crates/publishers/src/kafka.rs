//! Publishing to Kafka: binary mode (`ce_` headers), key = user id, through
//! an idempotent producer (built by `brokers::kafka`, so the operator's
//! `KAFKA_<PROPERTY>` settings follow the same rule in both services),
//! acknowledged only by the broker's delivery report. The producer is
//! rebuilt when it hits a fatal error.

use super::{Pending, Pipelined, Report};
use anyhow::Context;
use brokers::kafka::KafkaConfig;
use brokers::kafka::{client_config, BrokerProbe, Guarantee, Redacting};
use cloudevents::binding::rdkafka::{FutureRecordExt, MessageRecord};
use cloudevents::{AttributesReader, Event};
use cloudevents_wire::Transport;
use futures::future::BoxFuture;
use futures::FutureExt;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use std::sync::RwLock;
use std::time::Duration;

/// Records the producer may hold at once; above the relay's window, so a
/// full local queue never happens in normal operation.
const QUEUE_MESSAGES: &str = "20000";

/// Longest wait of one `GET /delivery` metadata request.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The producer's defaults; an operator's `KAFKA_<PROPERTY>` wins over each.
const DEFAULTS: &[(&str, &str)] = &[
    // With thousands of records in flight, a short linger makes fewer,
    // fuller produce requests: less CPU here and on the broker per record.
    // Draining 100,000 events on a 2-core machine shared with the broker
    // and audit-service: linger.ms=0 25,000-36,000 events/s, linger.ms=10
    // 33,000-55,000 events/s (noisy; 1.6-2.3 s of our CPU instead of
    // 2.1-2.8 s). A lone event waits 10 ms more.
    ("linger.ms", "10"),
    ("queue.buffering.max.messages", QUEUE_MESSAGES),
    // No local expiry: librdkafka retries a record until the broker takes
    // it, which is what keeps one user's records in order with many in
    // flight (see the relay's window module). The cost: while the broker is
    // away no report comes at all, so the outbox shows no failed attempts;
    // the lag gauge and GET /delivery tell instead. An operator's
    // KAFKA_MESSAGE_TIMEOUT_MS wins, with the ordering cost described there.
    ("message.timeout.ms", "0"),
];

/// What the relay's delivery guarantee rests on; an operator setting that
/// contradicts one stops the service at start.
const GUARANTEES: &[Guarantee] = &[
    Guarantee {
        property: "enable.idempotence",
        value: "true",
        same: &[],
        why: "the producer's own retries must keep each partition's order and write no duplicates",
    },
    Guarantee {
        property: "acks",
        value: "all",
        same: &["-1"],
        why: "a record counts as delivered only once every in-sync replica has it",
    },
];

pub struct KafkaPublisher {
    /// Replaced as a whole after a fatal error; the lock is held only to
    /// clone or swap it, never across an await.
    producer: RwLock<FutureProducer<Redacting>>,
    client: ClientConfig,
    probe: BrokerProbe,
    topic: String,
    brokers: String,
    timeout: Duration,
}

impl KafkaPublisher {
    pub fn new(config: &KafkaConfig, timeout: Duration) -> anyhow::Result<Self> {
        let client = client_config(config, DEFAULTS, GUARANTEES)?;
        let producer: FutureProducer<Redacting> = client
            .create_with_context(Redacting)
            .context("Failed to create the Kafka producer")?;
        Ok(KafkaPublisher {
            producer: RwLock::new(producer),
            client,
            probe: BrokerProbe::new(config)?,
            topic: config.topic.clone(),
            brokers: config.brokers.clone(),
            timeout,
        })
    }

    /// The current producer (a cheap handle). A poisoned lock only means a
    /// thread panicked while swapping; the producer inside is whole.
    fn producer(&self) -> FutureProducer<Redacting> {
        self.producer
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Hands one event to the producer; the future resolves with its
    /// delivery report.
    fn send(&self, mut event: Event) -> Result<Pending, Report> {
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
        let delivery = producer
            .send_result(record)
            .map_err(|(error, _)| classify(&error, fatal_error(&producer).is_some()))?;
        Ok(async move {
            match delivery.await {
                Ok(Ok(_)) => Report::Delivered,
                Ok(Err((error, _))) => classify(&error, fatal_error(&producer).is_some()),
                // The producer was dropped (rebuilt) before reporting.
                Err(_) => Report::Failed("the producer was dropped before reporting".to_owned()),
            }
        }
        .boxed())
    }
}

/// The producer's fatal error, if it has one.
fn fatal_error(producer: &FutureProducer<Redacting>) -> Option<String> {
    producer
        .client()
        .fatal_error()
        .map(|(code, reason)| format!("{code:?}: {reason}"))
}

impl Pipelined for KafkaPublisher {
    fn transport(&self) -> Transport {
        Transport::Kafka
    }

    fn enqueue(&self, event: Event) -> BoxFuture<'_, Result<Pending, Report>> {
        // librdkafka takes the record at once (or refuses it): nothing to
        // wait for here.
        futures::future::ready(self.send(event)).boxed()
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Replaces the producer by a new one with the same configuration. The
    /// old one is dropped on a blocking thread: dropping purges and flushes
    /// it, which waits.
    fn rebuild(&self) -> anyhow::Result<()> {
        let fresh: FutureProducer<Redacting> = self
            .client
            .create_with_context(Redacting)
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

    /// Ready when the producer is usable and the brokers answer a metadata
    /// request for the topic.
    fn check_ready(&self) -> BoxFuture<'_, Result<(), String>> {
        async move {
            if let Some(fatal) = fatal_error(&self.producer()) {
                return Err(format!("Kafka producer failed for good: {fatal}"));
            }
            self.probe.check(self.timeout.min(PROBE_TIMEOUT)).await
        }
        .boxed()
    }

    fn flush(&self) -> BoxFuture<'_, ()> {
        async move {
            let producer = self.producer();
            let timeout = self.timeout;
            let flushed = tokio::task::spawn_blocking(move || producer.flush(timeout)).await;
            if !matches!(flushed, Ok(Ok(()))) {
                tracing::warn!("Kafka producer did not flush before shutdown");
            }
        }
        .boxed()
    }

    fn describe(&self) -> String {
        format!(
            "kafka {} topic {}",
            settings::redact::urls(&self.brokers),
            self.topic
        )
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
