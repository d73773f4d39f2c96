//! The Kafka dead-letter topic: where records that are not valid CloudEvents
//! go, with the reason, before their offsets are committed.
//!
//! A dead letter is the record unchanged (key, payload, headers) plus
//! `dlq-error` (why it was refused, cut to `MAX_REASON_BYTES` by
//! `ingest::dead_letter::bounded`) and
//! `dlq-origin` (`topic/partition/offset`). The broker must acknowledge it
//! before the consumer commits past the record, so transient failures (the
//! broker away) are retried until they succeed or the service stops.
//!
//! A record can also be refused for what it is: librdkafka refuses records
//! over `message.max.bytes`, which the broker may still have accepted from
//! another client, and a copy with the reason added is larger than the
//! original. Retrying those would wedge every partition of this consumer for
//! good. So a permanent refusal is answered once with a reduced dead letter:
//! the key, the two headers above and `dlq-dropped` saying that the payload
//! and the original headers were dropped and why. If even that is refused,
//! the record is logged and counted (`audit_dead_letters_failed_total`) and
//! consumption goes on.

use crate::config::KafkaSettings;
use crate::ingest::dead_letter::{
    bounded, DLQ_DROPPED_HEADER, DLQ_ERROR_HEADER, DLQ_ORIGIN_HEADER,
};
use crate::ingest::decode::DecodeError;
use crate::ingest::{Backoff, Stopped};
use brokers::kafka::{client_config, Guarantee, KafkaConfigError, Redacting};
use cloudevents_wire::Transport;
use futures::future::join_all;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A record the consumer refused, and why.
pub struct Rejected {
    pub message: OwnedMessage,
    pub error: DecodeError,
}

pub struct DeadLetters {
    producer: FutureProducer<Redacting>,
    topic: String,
}

impl DeadLetters {
    pub fn new(settings: &KafkaSettings) -> Result<Self, KafkaConfigError> {
        let producer = client_config(
            &settings.common,
            &[],
            &[
                Guarantee {
                    property: "acks",
                    value: "all",
                    same: &["-1"],
                    why: "a dead letter must be on every in-sync replica before its offset is committed",
                },
                Guarantee {
                    property: "enable.idempotence",
                    value: "true",
                    same: &[],
                    why: "retried dead letters must not be written twice",
                },
            ],
        )?
        .create_with_context(Redacting)?;
        Ok(DeadLetters {
            producer,
            topic: settings.dlq_topic.clone(),
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Dead-letters every record, all in flight together, and returns once
    /// the broker has acknowledged (or permanently refused) each one.
    pub async fn send_all(
        &self,
        rejected: &[Rejected],
        shutdown: &CancellationToken,
    ) -> Result<(), Stopped> {
        let sent = join_all(rejected.iter().map(|r| self.send(r, shutdown))).await;
        sent.into_iter().collect()
    }

    async fn send(&self, rejected: &Rejected, shutdown: &CancellationToken) -> Result<(), Stopped> {
        let message = &rejected.message;
        let reason = bounded(&rejected.error.to_string());
        let origin = format!(
            "{}/{}/{}",
            message.topic(),
            message.partition(),
            message.offset()
        );
        tracing::warn!(error = %reason, origin = %origin, dlq = %self.topic, "kafka record is not a valid CloudEvent; dead-lettering it");
        metrics::counter!("audit_events_rejected_total", "transport" => Transport::Kafka.as_str())
            .increment(1);
        let mut full = OwnedHeaders::new();
        if let Some(original) = message.headers() {
            for header in original.iter() {
                full = full.insert(header);
            }
        }
        let full = with_reason(full, &reason, &origin);
        let error = match self.produce(message, full, true, shutdown).await? {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        tracing::warn!(error = %error, origin = %origin, "the dead letter was refused; sending it without payload and headers");
        let dropped = format!("payload and original headers dropped: {error}");
        let reduced = with_reason(OwnedHeaders::new(), &reason, &origin).insert(Header {
            key: DLQ_DROPPED_HEADER,
            value: Some(dropped.as_str()),
        });
        if let Err(e) = self.produce(message, reduced, false, shutdown).await? {
            tracing::error!(error = %e, origin = %origin, dlq = %self.topic, "the dead letter was refused even without its payload; the record is skipped");
            metrics::counter!("audit_dead_letters_failed_total").increment(1);
        }
        Ok(())
    }

    /// Produces one dead letter, retrying transient failures. The inner
    /// result is a permanent refusal.
    async fn produce(
        &self,
        message: &OwnedMessage,
        headers: OwnedHeaders,
        with_payload: bool,
        shutdown: &CancellationToken,
    ) -> Result<Result<(), KafkaError>, Stopped> {
        let mut backoff = Backoff::new();
        loop {
            let mut record: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&self.topic).headers(headers.clone());
            if let Some(key) = message.key() {
                record = record.key(key);
            }
            if let (true, Some(payload)) = (with_payload, message.payload()) {
                record = record.payload(payload);
            }
            match self.producer.send(record, Duration::from_secs(30)).await {
                Ok(_) => return Ok(Ok(())),
                Err((e, _)) if is_permanent(&e) => return Ok(Err(e)),
                Err((e, _)) => {
                    tracing::error!(error = %e, dlq = %self.topic, "dead-lettering failed; retrying");
                    backoff.pause(shutdown).await?;
                }
            }
        }
    }
}

fn with_reason(headers: OwnedHeaders, reason: &str, origin: &str) -> OwnedHeaders {
    headers
        .insert(Header {
            key: DLQ_ERROR_HEADER,
            value: Some(reason),
        })
        .insert(Header {
            key: DLQ_ORIGIN_HEADER,
            value: Some(origin),
        })
}

/// Refusals that the same record will meet on every try.
fn is_permanent(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::MessageBatchTooLarge
                | RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::InvalidArgument
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_refusals_are_permanent_and_broker_outages_are_not() {
        let size = KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge);
        assert!(is_permanent(&size));
        let down = KafkaError::MessageProduction(RDKafkaErrorCode::BrokerTransportFailure);
        assert!(!is_permanent(&down));
        let timeout = KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
        assert!(!is_permanent(&timeout));
    }
}
