//! The Kafka dead-letter topic `KAFKA_DLQ_TOPIC`. A dead letter is the
//! record unchanged (key, payload, headers) plus the headers
//! `ingest::dead_letter` names; `dlq-origin` is `topic/partition/offset`.
//! librdkafka refuses records over `message.max.bytes` for good, which the
//! broker may still have accepted from another client: that refusal is
//! permanent, and the pipeline sends the reduced dead letter (the key and
//! the headers that say why).

use crate::config::KafkaSettings;
use crate::ingest::dead_letter::{
    DeadLetterSink, Letter, SendError, DLQ_DROPPED_HEADER, DLQ_ERROR_HEADER, DLQ_ORIGIN_HEADER,
};
use brokers::kafka::{client_config, Guarantee, KafkaConfigError, Redacting};
use futures::future::BoxFuture;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::time::Duration;

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
}

impl DeadLetterSink for DeadLetters {
    type Rejected = OwnedMessage;

    fn destination(&self) -> &str {
        &self.topic
    }

    fn origin(&self, message: &OwnedMessage) -> String {
        format!(
            "{}/{}/{}",
            message.topic(),
            message.partition(),
            message.offset()
        )
    }

    fn send<'a>(
        &'a self,
        letter: Letter<'a, OwnedMessage>,
    ) -> BoxFuture<'a, Result<(), SendError>> {
        let message = letter.rejected;
        let mut headers = OwnedHeaders::new();
        match letter.dropped {
            None => {
                if let Some(original) = message.headers() {
                    for header in original.iter() {
                        headers = headers.insert(header);
                    }
                }
            }
            Some(dropped) => {
                headers = headers.insert(Header {
                    key: DLQ_DROPPED_HEADER,
                    value: Some(dropped),
                })
            }
        }
        let headers = with_reason(headers, letter.reason, letter.origin);
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&self.topic).headers(headers);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let (None, Some(payload)) = (letter.dropped, message.payload()) {
            record = record.payload(payload);
        }
        Box::pin(async move {
            match self.producer.send(record, Duration::from_secs(30)).await {
                Ok(_) => Ok(()),
                Err((e, _)) if is_permanent(&e) => Err(SendError::permanent(e)),
                Err((e, _)) => Err(SendError::transient(e)),
            }
        })
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
