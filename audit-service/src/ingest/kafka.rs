//! The Kafka consumer: reads CloudEvents from the topic in batches, stores the
//! valid ones, dead-letters the rest, and commits offsets only after both.
//!
//! Processing is batch by batch: receive up to `MAX_BATCH` records (or what
//! arrives within `BATCH_WINDOW`), decode them, send the invalid ones to the
//! dead-letter topic and wait for the broker's acks, store the valid ones in
//! one transaction, then commit the next offset of each partition. Nothing
//! is committed before it is durable, so a crash re-delivers at most the
//! current batch, and the store's UNIQUE(source, id) absorbs the duplicates.
//! A rebalance can only take effect while we poll, i.e. between batches, so
//! a revoke never strands stored-but-uncommitted work beyond one batch; if
//! that batch's commit is refused because its partitions moved, the new
//! owner re-reads them and the store deduplicates.

use super::decode::{self, DecodeError};
use crate::config::KafkaSettings;
use crate::store::Store;
use cloudevents::Event;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaResult;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use shared::binding::{is_cloudevents_media_type, BinaryMessage};
use shared::cloudevents;
use shared::config::Transport;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The header of a dead-lettered record that says why it was refused.
pub const DLQ_ERROR_HEADER: &str = "dlq-error";
/// Where a dead-lettered record came from: `topic/partition/offset`.
pub const DLQ_ORIGIN_HEADER: &str = "dlq-origin";

/// Most records in one batch (one store transaction, one offset commit).
const MAX_BATCH: usize = 1000;
/// How long a batch waits for more records after its first one.
const BATCH_WINDOW: Duration = Duration::from_millis(5);
/// Retry pause when the store or the dead-letter topic is unavailable.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

type AuditConsumer = StreamConsumer<RebalanceLogger>;

/// Starts the consumer task. It runs until `shutdown` is cancelled, then
/// finishes the batch in hand (store, dead-letter, commit) and leaves the
/// group.
pub fn spawn(
    settings: &KafkaSettings,
    store: Store,
    shutdown: CancellationToken,
) -> anyhow::Result<JoinHandle<()>> {
    use anyhow::Context;
    let consumer: AuditConsumer = client_config(settings)
        .set("group.id", &settings.group_id)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .create_with_context(RebalanceLogger)
        .context("Failed to create the Kafka consumer")?;
    consumer
        .subscribe(&[settings.common.topic.as_str()])
        .with_context(|| format!("Failed to subscribe to {}", settings.common.topic))?;
    let dlq: FutureProducer = client_config(settings)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .create()
        .context("Failed to create the dead-letter producer")?;
    tracing::info!(
        topic = %settings.common.topic,
        group = %settings.group_id,
        dlq = %settings.dlq_topic,
        "consuming CloudEvents from Kafka"
    );
    let worker = Worker {
        consumer: Arc::new(consumer),
        dlq,
        dlq_topic: settings.dlq_topic.clone(),
        store,
        shutdown,
    };
    Ok(tokio::spawn(worker.run()))
}

/// Brokers plus every `KAFKA_<PROPERTY>` the operator set.
fn client_config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &settings.common.brokers);
    for (key, value) in &settings.common.properties {
        config.set(key, value);
    }
    config
}

/// Logs partition assignments, so operators (and tests) see how a group
/// shares the topic.
pub struct RebalanceLogger;

impl ClientContext for RebalanceLogger {}

impl ConsumerContext for RebalanceLogger {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                tracing::info!(partitions = %describe(list), "kafka partitions assigned")
            }
            Rebalance::Revoke(list) => {
                tracing::info!(partitions = %describe(list), "kafka partitions revoked")
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "kafka rebalance failed"),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if let Err(e) = result {
            tracing::debug!(error = %e, offsets = %describe(offsets), "offset commit failed");
        }
    }
}

fn describe(list: &TopicPartitionList) -> String {
    list.elements()
        .iter()
        .map(|e| format!("{}/{}", e.topic(), e.partition()))
        .collect::<Vec<_>>()
        .join(",")
}

struct Worker {
    consumer: Arc<AuditConsumer>,
    dlq: FutureProducer,
    dlq_topic: String,
    store: Store,
    shutdown: CancellationToken,
}

impl Worker {
    async fn run(self) {
        // If this task ends for any reason, panics included, the whole
        // service stops: an audit service that answers HTTP while nothing
        // consumes the topic would hide the outage from its supervisor.
        let _stop_service = self.shutdown.clone().drop_guard();
        while let Some(batch) = self.next_batch().await {
            if let Err(Stopped) = self.process(batch).await {
                break;
            }
        }
        tracing::info!("kafka consumer stopped");
    }

    /// Waits for a first record, then takes what follows within the window.
    async fn next_batch(&self) -> Option<Vec<OwnedMessage>> {
        let first = loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return None,
                received = self.consumer.recv() => match received {
                    Ok(message) => break message.detach(),
                    Err(e) => {
                        tracing::warn!(error = %e, "kafka receive failed");
                        self.pause(RETRY_MIN).await.ok()?;
                    }
                },
            }
        };
        let mut batch = vec![first];
        let deadline = Instant::now() + BATCH_WINDOW;
        while batch.len() < MAX_BATCH {
            match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                Ok(Ok(message)) => batch.push(message.detach()),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "kafka receive failed");
                    break;
                }
                Err(_) => break,
            }
        }
        Some(batch)
    }

    #[tracing::instrument(name = "process_kafka_batch", skip_all, fields(records = batch.len()))]
    async fn process(&self, batch: Vec<OwnedMessage>) -> Result<(), Stopped> {
        let mut valid: Vec<Event> = Vec::with_capacity(batch.len());
        for message in &batch {
            match decode_record(message) {
                Ok(event) => valid.push(event),
                Err(error) => {
                    metrics::counter!("audit_events_rejected_total", "transport" => "kafka")
                        .increment(1);
                    self.dead_letter(message, &error).await?;
                }
            }
        }
        self.store(valid).await?;
        self.commit(&batch).await;
        Ok(())
    }

    /// Stores the batch's events, retrying until the store takes them:
    /// skipping would lose events, and committing is not allowed before.
    async fn store(&self, events: Vec<Event>) -> Result<(), Stopped> {
        let mut pause = RETRY_MIN;
        loop {
            match self.store.write(events.clone(), Transport::Kafka).await {
                Ok(_) => return Ok(()),
                Err(e) => {
                    tracing::error!(error = ?e, "storing kafka events failed; retrying");
                    self.pause(pause).await?;
                    pause = (pause * 2).min(RETRY_MAX);
                }
            }
        }
    }

    /// Copies the record (key, payload, headers) to the dead-letter topic
    /// with the reason, and waits for the broker's ack: its offset is
    /// committed right after, so the copy must exist first.
    async fn dead_letter(
        &self,
        message: &OwnedMessage,
        error: &DecodeError,
    ) -> Result<(), Stopped> {
        let reason = error.to_string();
        let origin = format!(
            "{}/{}/{}",
            message.topic(),
            message.partition(),
            message.offset()
        );
        tracing::warn!(error = %reason, origin = %origin, dlq = %self.dlq_topic, "kafka record is not a valid CloudEvent; dead-lettering it");
        let mut headers = OwnedHeaders::new();
        if let Some(original) = message.headers() {
            for header in original.iter() {
                headers = headers.insert(header);
            }
        }
        let headers = headers
            .insert(Header {
                key: DLQ_ERROR_HEADER,
                value: Some(reason.as_str()),
            })
            .insert(Header {
                key: DLQ_ORIGIN_HEADER,
                value: Some(origin.as_str()),
            });
        let mut pause = RETRY_MIN;
        loop {
            let mut record: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&self.dlq_topic).headers(headers.clone());
            if let Some(key) = message.key() {
                record = record.key(key);
            }
            if let Some(payload) = message.payload() {
                record = record.payload(payload);
            }
            match self.dlq.send(record, Duration::from_secs(30)).await {
                Ok(_) => return Ok(()),
                Err((e, _)) => {
                    tracing::error!(error = %e, dlq = %self.dlq_topic, "dead-lettering failed; retrying");
                    self.pause(pause).await?;
                    pause = (pause * 2).min(RETRY_MAX);
                }
            }
        }
    }

    /// Commits the offset after the last record of each partition in the
    /// batch. A failure is logged, not retried: the records are stored, so
    /// re-delivery only produces duplicates the store ignores.
    async fn commit(&self, batch: &[OwnedMessage]) {
        let mut next: BTreeMap<(&str, i32), i64> = BTreeMap::new();
        for message in batch {
            let offset = next
                .entry((message.topic(), message.partition()))
                .or_default();
            *offset = (*offset).max(message.offset() + 1);
        }
        let mut list = TopicPartitionList::new();
        for ((topic, partition), offset) in next {
            if let Err(e) = list.add_partition_offset(topic, partition, Offset::Offset(offset)) {
                tracing::warn!(error = %e, topic, partition, "bad offset to commit");
            }
        }
        let consumer = self.consumer.clone();
        // A synchronous commit blocks its thread until the broker answers.
        let result =
            tokio::task::spawn_blocking(move || consumer.commit(&list, CommitMode::Sync)).await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "kafka offset commit failed; the records will be re-delivered and deduplicated")
            }
            Err(e) => tracing::error!(error = %e, "kafka offset commit task failed"),
        }
    }

    /// Sleeps, unless shutdown comes first.
    async fn pause(&self, duration: Duration) -> Result<(), Stopped> {
        tokio::select! {
            _ = self.shutdown.cancelled() => Err(Stopped),
            _ = tokio::time::sleep(duration) => Ok(()),
        }
    }
}

/// Shutdown interrupted a retry; nothing of the current batch is committed.
struct Stopped;

/// Decodes one record per the CloudEvents Kafka binding, without ever
/// handing the SDK a record it would panic on (a null header value, a null
/// structured payload).
pub fn decode_record(message: &OwnedMessage) -> Result<Event, DecodeError> {
    let headers: Vec<(&str, Option<&[u8]>)> = message
        .headers()
        .map(|h| h.iter().map(|h| (h.key, h.value)).collect())
        .unwrap_or_default();
    let payload = message.payload().unwrap_or_default();
    let content_type = headers
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case("content-type"))
        .and_then(|(_, value)| *value)
        .map(String::from_utf8_lossy);
    if let Some(content_type) = content_type.filter(|ct| is_cloudevents_media_type(ct)) {
        let media_type = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if media_type != shared::binding::STRUCTURED_JSON {
            return Err(DecodeError::NotACloudEvent(format!(
                "structured-mode format {media_type:?} is not supported: use {}",
                shared::binding::STRUCTURED_JSON
            )));
        }
        if payload.is_empty() {
            return Err(DecodeError::NotACloudEvent(
                "a structured-mode record needs a payload".into(),
            ));
        }
        return decode::structured(payload);
    }
    if headers.is_empty() {
        return Err(DecodeError::NotACloudEvent(
            "the record has no headers: neither structured (content-type) nor binary mode (ce_ headers)".into(),
        ));
    }
    match BinaryMessage::from_kafka(headers, payload.to_vec()) {
        Ok(Some(message)) => decode::binary(message),
        Ok(None) => Err(DecodeError::NotACloudEvent(
            "no ce_specversion header and no application/cloudevents content-type".into(),
        )),
        Err(e) => Err(decode::from_message_error(e)),
    }
}

/// Answers whether the brokers respond, for `/readyz`.
#[derive(Clone)]
pub struct BrokerProbe {
    client: Arc<BaseConsumer>,
    topic: String,
}

impl BrokerProbe {
    pub fn new(settings: &KafkaSettings) -> anyhow::Result<Self> {
        use anyhow::Context;
        let client: BaseConsumer = client_config(settings)
            .create()
            .context("Failed to create the Kafka readiness client")?;
        Ok(BrokerProbe {
            client: Arc::new(client),
            topic: settings.common.topic.clone(),
        })
    }

    /// Fetches the topic's metadata within `timeout`.
    pub async fn check(&self, timeout: Duration) -> Result<(), String> {
        let client = self.client.clone();
        let topic = self.topic.clone();
        tokio::task::spawn_blocking(move || client.fetch_metadata(Some(&topic), timeout))
            .await
            .map_err(|e| e.to_string())?
            .map(|_| ())
            .map_err(|e| format!("Kafka brokers unreachable: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::Timestamp;

    fn record(headers: Option<OwnedHeaders>, payload: Option<&[u8]>) -> OwnedMessage {
        OwnedMessage::new(
            payload.map(<[u8]>::to_vec),
            None,
            "t".into(),
            Timestamp::NotAvailable,
            0,
            0,
            headers,
        )
    }

    #[test]
    fn a_null_header_value_is_an_error_not_a_panic() {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "ce_specversion",
                value: Some("1.0"),
            })
            .insert(Header::<&str> {
                key: "ce_id",
                value: None,
            });
        assert!(decode_record(&record(Some(headers), Some(b"x"))).is_err());
    }

    #[test]
    fn a_structured_record_without_payload_is_an_error() {
        let headers = OwnedHeaders::new().insert(Header {
            key: "content-type",
            value: Some("application/cloudevents+json"),
        });
        let err = decode_record(&record(Some(headers), None)).unwrap_err();
        assert!(err.to_string().contains("payload"), "{err}");
    }

    #[test]
    fn a_record_without_headers_is_not_a_cloudevent() {
        assert!(matches!(
            decode_record(&record(None, Some(b"{}"))),
            Err(DecodeError::NotACloudEvent(_))
        ));
    }

    #[test]
    fn upper_case_structured_content_type_is_structured_mode() {
        let headers = OwnedHeaders::new().insert(Header {
            key: "Content-Type",
            value: Some("Application/CloudEvents+JSON; charset=UTF-8"),
        });
        let body = br#"{"specversion":"1.0","id":"1","source":"/s","type":"t"}"#;
        assert!(decode_record(&record(Some(headers), Some(body))).is_ok());
    }
}
