//! The Kafka consumer's client context: partition assignments logged, the
//! consumer lag gauge kept, librdkafka's errors reported.

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, TopicPartitionList};

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
