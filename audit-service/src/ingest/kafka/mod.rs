//! The Kafka source: reads CloudEvents from the topic through the consumer
//! group `KAFKA_GROUP_ID`, and commits each partition's offset only after
//! the records before it are stored or dead-lettered (`ingest::pipeline`
//! runs the batches).
//!
//! A rebalance takes effect while the receive stage polls; an offset commit
//! for a partition that has moved on is refused or lands behind the new
//! owner's, and either way the new owner re-reads from the last commit and
//! the store deduplicates. Offsets are committed asynchronously while
//! running (the order of commits is kept by librdkafka) and synchronously
//! once at shutdown. A partition is read by one member of the group, in
//! order, so a user's events (keyed by user) are stored in order.

mod context;
mod dead_letter;

use self::context::RebalanceLogger;
use self::dead_letter::DeadLetters;
use super::decode;
use super::pipeline::{Delivery, Pipeline, Received, Source};
use super::{ConsumerTask, Probe};
use crate::config::{BatchLimits, KafkaSettings};
use crate::store::{Refused, Store};
use brokers::kafka::{client_config, BrokerProbe, Guarantee, KafkaConfigError};
use cloudevents_wire::Transport;
use futures::future::BoxFuture;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, Timestamp, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

type AuditConsumer = StreamConsumer<RebalanceLogger>;

/// Starts the consumer task. It runs until `shutdown` is cancelled, then
/// finishes the batches in hand (dead letters, store, commit) and leaves
/// the group.
pub fn start(
    settings: &KafkaSettings,
    limits: BatchLimits,
    store: Store,
    shutdown: CancellationToken,
) -> anyhow::Result<ConsumerTask> {
    use anyhow::Context;
    let consumer: AuditConsumer = client_config(
        &settings.common,
        &[
            // A new group starts from the oldest record: the audit log wants
            // everything the topic still holds.
            ("auto.offset.reset", "earliest"),
            ("enable.partition.eof", "false"),
            // librdkafka prefetches up to 64 MiB by default, and its heap
            // grows to several times that; the batches in hand are what
            // matters, so keep the read-ahead small. The queue limit counts
            // payload bytes only, while the receive buffers behind it also
            // hold each record's headers (all of a binary-mode event's
            // attributes): at 2 MiB queued and 4 MiB fetches, librdkafka's
            // buffers were 29 of a 64 MiB peak draining a six-partition
            // backlog into PostgreSQL. At 1 MiB each the peak was 50 MiB and
            // the backlog drained no slower...
            ("queued.max.messages.kbytes", "1024"),
            ("fetch.max.bytes", "1048576"),
            // ...and refill it at once: by default a full queue postpones
            // the next fetch by a second, which with a small queue halved
            // the rate.
            ("fetch.queue.backoff.ms", "5"),
            // The consumer lag gauge comes from librdkafka's statistics.
            ("statistics.interval.ms", "5000"),
        ],
        &[Guarantee {
            property: "enable.auto.commit",
            value: "false",
            same: &[],
            why: "offsets are committed only after the events before them are in the store",
        }],
    )?
    .set("group.id", &settings.group_id)
    .create_with_context(RebalanceLogger)
    .map_err(KafkaConfigError::from)
    .context("Failed to create the Kafka consumer")?;
    consumer
        .subscribe(&[settings.common.topic.as_str()])
        .with_context(|| format!("Failed to subscribe to {}", settings.common.topic))?;
    let dead_letters =
        DeadLetters::new(settings).context("Failed to create the dead-letter producer")?;
    tracing::info!(
        brokers = %settings::redact::urls(&settings.common.brokers),
        topic = %settings.common.topic,
        group = %settings.group_id,
        dlq = %settings.dlq_topic,
        batch_max = limits.max_events,
        batch_wait_ms = limits.max_wait.as_millis() as u64,
        "consuming CloudEvents from Kafka"
    );
    let pipeline = Pipeline {
        source: KafkaSource {
            consumer: Arc::new(consumer),
            topic: Arc::from(settings.common.topic.as_str()),
            last_commit: Mutex::new(None),
        },
        dead_letters,
        store,
        limits,
        shutdown,
    };
    Ok(ConsumerTask {
        task: tokio::spawn(pipeline.run()),
        probe: Arc::new(BrokerProbe::new(&settings.common)?),
    })
}

impl Probe for BrokerProbe {
    fn check(&self, timeout: Duration) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(BrokerProbe::check(self, timeout))
    }
}

/// Where a record came from: what its offset commit and its dead letter
/// need. The topic is shared between records, not copied.
pub struct Origin {
    topic: Arc<str>,
    partition: i32,
    offset: i64,
}

struct KafkaSource {
    consumer: Arc<AuditConsumer>,
    /// The topic subscribed to, shared by its records' origins.
    topic: Arc<str>,
    /// The offsets of the last batch, committed once more, synchronously,
    /// at shutdown.
    last_commit: Mutex<Option<TopicPartitionList>>,
}

impl Source for KafkaSource {
    /// The consumer is subscribed once, at start; librdkafka rejoins the
    /// group by itself.
    type Subscription = ();
    type Message<'a> = BorrowedMessage<'a>;
    type Ack = Origin;
    type Rejected = OwnedMessage;

    fn transport(&self) -> Transport {
        Transport::Kafka
    }

    fn provision(&self) -> BoxFuture<'_, Result<Self::Subscription, String>> {
        Box::pin(async { Ok(()) })
    }

    fn receive<'a>(&'a self, _: &'a mut ()) -> BoxFuture<'a, Received<BorrowedMessage<'a>>> {
        Box::pin(async move {
            match self.consumer.recv().await {
                Ok(message) => Received::Message(message),
                Err(e) => {
                    // A missing topic is already reported, once, by the
                    // client context; it is the normal wait of a fresh
                    // cluster.
                    if e.rdkafka_error_code() == Some(RDKafkaErrorCode::UnknownTopicOrPartition) {
                        tracing::debug!(error = %e, "kafka topic not there yet");
                    } else {
                        tracing::warn!(error = %e, "kafka receive failed");
                    }
                    Received::Failed
                }
            }
        })
    }

    /// Decodes the record at once, so only refused records are copied out
    /// of librdkafka's buffer (to be dead-lettered).
    fn decode(&self, message: BorrowedMessage<'_>) -> Option<Delivery<Self>> {
        let bytes = message.payload_len()
            + message.headers().map_or(0, |h| {
                h.iter()
                    .map(|h| h.key.len() + h.value.map_or(0, <[u8]>::len))
                    .sum()
            });
        let topic = if &*self.topic == message.topic() {
            self.topic.clone()
        } else {
            Arc::from(message.topic())
        };
        let ack = Origin {
            topic,
            partition: message.partition(),
            offset: message.offset(),
        };
        let headers: Vec<(&str, Option<&[u8]>)> = message
            .headers()
            .map(|h| h.iter().map(|h| (h.key, h.value)).collect())
            .unwrap_or_default();
        let decoded = decode::kafka_record(&headers, message.payload());
        Some(Delivery::new(bytes, ack, decoded, |_| message.detach()))
    }

    /// The record's bytes were decoded and let go (keeping every record's
    /// copy would cost the whole batch), so the dead letter carries the
    /// event as it would have been stored: the JSON format,
    /// `content-type: application/cloudevents+json`.
    fn unstorable(&self, origin: &Origin, refused: Refused) -> OwnedMessage {
        let headers = OwnedHeaders::new().insert(Header {
            key: "content-type",
            value: Some(cloudevents_wire::binding::STRUCTURED_JSON),
        });
        OwnedMessage::new(
            Some(refused.row.json.into_bytes()),
            None,
            origin.topic.to_string(),
            Timestamp::NotAvailable,
            origin.partition,
            origin.offset,
            Some(headers),
        )
    }

    /// Commits the offset after each partition's last record.
    fn acknowledge(&self, acks: Vec<Origin>) -> BoxFuture<'_, ()> {
        let mut next: BTreeMap<(&str, i32), i64> = BTreeMap::new();
        for origin in &acks {
            let offset = next.entry((&origin.topic, origin.partition)).or_default();
            *offset = (*offset).max(origin.offset + 1);
        }
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), offset) in next {
            if let Err(e) = offsets.add_partition_offset(topic, partition, Offset::Offset(offset)) {
                tracing::warn!(error = %e, topic, partition, "bad offset to commit");
            }
        }
        Box::pin(async move {
            self.commit(&offsets, CommitMode::Async).await;
            if let Ok(mut last) = self.last_commit.lock() {
                *last = Some(offsets);
            }
        })
    }

    /// Async commits may still be on their way; the last one again,
    /// synchronously, so the group resumes exactly after it.
    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let last = self
                .last_commit
                .lock()
                .ok()
                .and_then(|mut last| last.take());
            if let Some(offsets) = last {
                self.commit(&offsets, CommitMode::Sync).await;
            }
        })
    }
}

impl KafkaSource {
    /// A failure is logged, not retried: the records are stored, so
    /// re-delivery only produces duplicates the store ignores.
    async fn commit(&self, offsets: &TopicPartitionList, mode: CommitMode) {
        if offsets.count() == 0 {
            return;
        }
        let result = match mode {
            // Queues the request and returns at once.
            CommitMode::Async => self.consumer.commit(offsets, mode),
            // Blocks its thread until the broker answers.
            CommitMode::Sync => {
                let consumer = self.consumer.clone();
                let offsets = offsets.clone();
                match tokio::task::spawn_blocking(move || consumer.commit(&offsets, mode)).await {
                    Ok(result) => result,
                    Err(e) => {
                        tracing::error!(error = %e, "kafka offset commit task failed");
                        return;
                    }
                }
            }
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "kafka offset commit failed; the records will be re-delivered and deduplicated");
        }
    }
}
