//! The Kafka consumer: reads CloudEvents from the topic in batches, stores the
//! valid ones, dead-letters the rest, and commits offsets only after both.
//!
//! Two stages run side by side in one task: one receives a batch (up to
//! `INGEST_BATCH_MAX` records, or what arrives within `INGEST_BATCH_WAIT_MS`
//! of its first) and decodes it, while the other finishes the batch before
//! it: dead letters acknowledged by the broker, events committed by the
//! store, then the next offset of each partition committed. One decoded
//! batch waits between them, so decoding batch k+1 overlaps the store's
//! commit of batch k, and memory holds at most three batches.
//!
//! Nothing is committed before it is durable, so a crash re-delivers at most
//! the batches in hand, and the store's UNIQUE(source, id) absorbs the
//! duplicates. A rebalance takes effect while the first stage polls; an
//! offset commit for a partition that has moved on is refused or lands
//! behind the new owner's, and either way the new owner re-reads from the
//! last commit and the store deduplicates. Offsets are committed
//! asynchronously while running (the order of commits is kept by
//! librdkafka) and synchronously once at shutdown.

mod dead_letter;

use self::dead_letter::{DeadLetters, Rejected};
use super::decode::{self, DecodeError};
use super::{Backoff, ConsumerTask, Probe, Stopped};
use crate::config::{BatchLimits, KafkaSettings};
use crate::store::{EventRow, Refused, Store, StoreError};
use brokers::kafka::{client_config, BrokerProbe, Guarantee, KafkaConfigError};
use cloudevents_wire::Transport;
use futures::future::BoxFuture;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, Timestamp, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
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
            // matters, so keep the read-ahead small (2 MiB measured within
            // 10% of 16 MiB draining a backlog, and 60 MiB less resident)...
            ("queued.max.messages.kbytes", "2048"),
            ("fetch.max.bytes", "4194304"),
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
        dlq = %dead_letters.topic(),
        batch_max = limits.max_events,
        batch_wait_ms = limits.max_wait.as_millis() as u64,
        "consuming CloudEvents from Kafka"
    );
    let worker = Worker {
        consumer: Arc::new(consumer),
        dead_letters,
        store,
        limits,
        shutdown,
    };
    Ok(ConsumerTask {
        task: tokio::spawn(worker.run()),
        probe: Arc::new(BrokerProbe::new(&settings.common)?),
    })
}

impl Probe for BrokerProbe {
    fn check(&self, timeout: Duration) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(BrokerProbe::check(self, timeout))
    }
}

/// Logs partition assignments, so operators (and tests) see how a group
/// shares the topic; keeps the consumer lag gauge; and reports librdkafka's
/// errors, a topic that does not exist yet as the wait it is.
pub struct RebalanceLogger;

impl ClientContext for RebalanceLogger {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::UnknownTopicOrPartition) {
            // A fresh cluster before the topic is created (by a producer, an
            // operator, or us at start when allowed); consumption starts
            // once it exists.
            let reason = settings::redact::in_text(reason);
            tracing::info!(%reason, "waiting for the Kafka topic to exist");
        } else {
            let reason = settings::redact::in_text(reason);
            tracing::error!(%error, %reason, "Kafka client error");
        }
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        brokers::kafka::log(level, fac, message);
    }

    /// Lag per partition this member consumes: the partition's end offset
    /// minus the committed offset, i.e. records not yet in the store.
    fn stats(&self, statistics: Statistics) {
        for (topic, stats) in &statistics.topics {
            for (partition, p) in &stats.partitions {
                // -1 is librdkafka's internal partition; "none" is one this
                // member does not consume.
                if *partition < 0 || p.fetch_state == "none" {
                    continue;
                }
                let lag = if p.consumer_lag >= 0 {
                    p.consumer_lag
                } else if p.hi_offset >= 0 && p.lo_offset >= 0 {
                    // Nothing committed yet: a new group reads from the
                    // oldest record, so all of them are still to store.
                    p.hi_offset - p.lo_offset
                } else {
                    continue;
                };
                metrics::gauge!(
                    "audit_kafka_consumer_lag",
                    "topic" => topic.clone(),
                    "partition" => partition.to_string()
                )
                .set(lag as f64);
            }
        }
    }
}

impl ConsumerContext for RebalanceLogger {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                tracing::info!(partitions = %describe(list), "kafka partitions assigned")
            }
            Rebalance::Revoke(list) => {
                tracing::info!(partitions = %describe(list), "kafka partitions revoked");
                // Another member reports them now; a stale value here would
                // add to theirs in a sum over the group.
                for e in list.elements() {
                    metrics::gauge!(
                        "audit_kafka_consumer_lag",
                        "topic" => e.topic().to_owned(),
                        "partition" => e.partition().to_string()
                    )
                    .set(0.0);
                }
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "kafka rebalance failed"),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if let Err(e) = result {
            tracing::debug!(error = %e, offsets = %describe(offsets), "offset commit failed; the records will be re-delivered and deduplicated");
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

/// Records received together: the valid ones as rows ready for the store,
/// the others with the reason, and the offset to commit per partition.
#[derive(Default)]
struct Batch {
    rows: Vec<EventRow>,
    /// Where each row came from: (topic, partition, offset), for the dead
    /// letter of a row the store refuses. The topic is shared, not copied.
    origins: Vec<(Arc<str>, i32, i64)>,
    rejected: Vec<Rejected>,
    /// (topic, partition) -> the offset after the last record seen.
    next_offsets: BTreeMap<(String, i32), i64>,
    records: usize,
    bytes: usize,
}

impl Batch {
    /// Decodes the record at once, so only refused records are copied out of
    /// librdkafka's buffer (to be dead-lettered).
    fn add(&mut self, message: &BorrowedMessage<'_>) {
        self.records += 1;
        self.bytes += message.payload_len()
            + message.headers().map_or(0, |h| {
                h.iter()
                    .map(|h| h.key.len() + h.value.map_or(0, <[u8]>::len))
                    .sum()
            });
        let partition = (message.topic(), message.partition());
        match self
            .next_offsets
            .iter_mut()
            .find(|((t, p), _)| (t.as_str(), *p) == partition)
        {
            Some((_, next)) => *next = (*next).max(message.offset() + 1),
            None => {
                self.next_offsets
                    .insert((partition.0.to_owned(), partition.1), message.offset() + 1);
            }
        }
        let headers: Vec<(&str, Option<&[u8]>)> = message
            .headers()
            .map(|h| h.iter().map(|h| (h.key, h.value)).collect())
            .unwrap_or_default();
        let decoded = decode::kafka_record(&headers, message.payload()).and_then(|decoded| {
            EventRow::from_decoded(&decoded).map_err(|e| DecodeError::Other(e.to_string()))
        });
        match decoded {
            Ok(row) => {
                self.rows.push(row);
                let topic = match self.origins.last() {
                    Some((topic, _, _)) if &**topic == message.topic() => topic.clone(),
                    _ => Arc::from(message.topic()),
                };
                self.origins
                    .push((topic, message.partition(), message.offset()));
            }
            Err(error) => self.rejected.push(Rejected {
                message: message.detach(),
                error,
            }),
        }
    }

    fn offsets(&self) -> TopicPartitionList {
        let mut list = TopicPartitionList::new();
        for ((topic, partition), offset) in &self.next_offsets {
            if let Err(e) = list.add_partition_offset(topic, *partition, Offset::Offset(*offset)) {
                tracing::warn!(error = %e, topic, partition, "bad offset to commit");
            }
        }
        list
    }
}

struct Worker {
    consumer: Arc<AuditConsumer>,
    dead_letters: DeadLetters,
    store: Store,
    limits: BatchLimits,
    shutdown: CancellationToken,
}

impl Worker {
    async fn run(self) {
        // If this task ends for any reason, panics included, the whole
        // service stops: an audit service that answers HTTP while nothing
        // consumes the topic would hide the outage from its supervisor.
        let _stop_service = self.shutdown.clone().drop_guard();
        let (decoded, mut to_finish) = mpsc::channel::<Batch>(1);
        let worker = &self;
        let receive = async move {
            while let Some(batch) = worker.next_batch().await {
                if decoded.send(batch).await.is_err() {
                    break;
                }
            }
        };
        let finish = async {
            let mut last: Option<TopicPartitionList> = None;
            while let Some(batch) = to_finish.recv().await {
                match self.finish(batch).await {
                    Ok(offsets) => last = Some(offsets),
                    Err(Stopped) => break,
                }
            }
            // Async commits may still be on their way; the last one again,
            // synchronously, so the group resumes exactly after it.
            if let Some(offsets) = last {
                self.commit(offsets, CommitMode::Sync).await;
            }
        };
        tokio::join!(receive, finish);
        tracing::info!("kafka consumer stopped");
    }

    /// Waits for a first record, then takes what follows within the window,
    /// up to the batch limits.
    async fn next_batch(&self) -> Option<Batch> {
        let mut batch = Batch::default();
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return None,
                received = self.consumer.recv() => match received {
                    Ok(message) => {
                        batch.add(&message);
                        break;
                    }
                    Err(e) => {
                        // A missing topic is already reported, once, by the
                        // client context; it is the normal wait of a fresh
                        // cluster.
                        if e.rdkafka_error_code() == Some(RDKafkaErrorCode::UnknownTopicOrPartition) {
                            tracing::debug!(error = %e, "kafka topic not there yet");
                        } else {
                            tracing::warn!(error = %e, "kafka receive failed");
                        }
                        Backoff::new().pause(&self.shutdown).await.ok()?;
                    }
                },
            }
        }
        let deadline = Instant::now() + self.limits.max_wait;
        while batch.records < self.limits.max_events && batch.bytes < self.limits.max_bytes {
            match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                Ok(Ok(message)) => batch.add(&message),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "kafka receive failed");
                    break;
                }
                Err(_) => break,
            }
        }
        Some(batch)
    }

    /// Dead-letters, stores and commits one batch; returns the offsets it
    /// committed.
    #[tracing::instrument(level = "debug", name = "finish_kafka_batch", skip_all, fields(records = batch.records))]
    async fn finish(&self, batch: Batch) -> Result<TopicPartitionList, Stopped> {
        let offsets = batch.offsets();
        self.dead_letters
            .send_all(&batch.rejected, &self.shutdown)
            .await?;
        let refused = self.store(batch.rows).await?;
        let unstorable: Vec<Rejected> = refused
            .into_iter()
            .map(|refused| unstorable(refused, &batch.origins))
            .collect();
        self.dead_letters
            .send_all(&unstorable, &self.shutdown)
            .await?;
        self.commit(offsets.clone(), CommitMode::Async).await;
        Ok(offsets)
    }

    /// Stores the batch's events, retrying until the store takes them:
    /// skipping would lose events, and committing is not allowed before.
    /// Returns the rows the store refused for what they hold (the others
    /// are stored): retrying those would stop this consumer for good.
    async fn store(&self, mut rows: Vec<EventRow>) -> Result<Vec<Refused>, Stopped> {
        let mut backoff = Backoff::new();
        loop {
            match self.store.write_rows(rows, Transport::Kafka).await {
                Ok(outcome) => return Ok(outcome.refused),
                Err(failed) if matches!(*failed.error, StoreError::WriterGone) => {
                    tracing::error!("the audit store writer has stopped; stopping the consumer");
                    return Err(Stopped);
                }
                Err(failed) => {
                    tracing::error!(error = ?failed.error, "storing kafka events failed; retrying");
                    rows = failed.rows;
                    backoff.pause(&self.shutdown).await?;
                }
            }
        }
    }

    /// A failure is logged, not retried: the records are stored, so
    /// re-delivery only produces duplicates the store ignores.
    async fn commit(&self, offsets: TopicPartitionList, mode: CommitMode) {
        if offsets.count() == 0 {
            return;
        }
        let result = match mode {
            // Queues the request and returns at once.
            CommitMode::Async => self.consumer.commit(&offsets, mode),
            // Blocks its thread until the broker answers.
            CommitMode::Sync => {
                let consumer = self.consumer.clone();
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

/// The dead letter of a record the store refused. Its bytes were decoded
/// and let go (keeping every record's copy would cost the whole batch), so
/// the dead letter carries the event as it would have been stored: the
/// JSON format, `content-type: application/cloudevents+json`, from the
/// record's topic, partition and offset (`dlq-origin`).
fn unstorable(refused: Refused, origins: &[(Arc<str>, i32, i64)]) -> Rejected {
    let (topic, partition, offset) = origins
        .get(refused.index)
        .map_or(("", -1, -1), |(t, p, o)| (&**t, *p, *o));
    let headers = OwnedHeaders::new().insert(Header {
        key: "content-type",
        value: Some(cloudevents_wire::binding::STRUCTURED_JSON),
    });
    Rejected {
        message: OwnedMessage::new(
            Some(refused.row.json.into_bytes()),
            None,
            topic.to_owned(),
            Timestamp::NotAvailable,
            partition,
            offset,
            Some(headers),
        ),
        error: DecodeError::Unstorable(refused.error.describe()),
    }
}
