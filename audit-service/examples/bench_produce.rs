//! Fills a fresh topic (one partition unless told) with `user.storeUser`
//! records for the Kafka consume-and-store benchmark of `make bench` and the
//! scale-out tests. Each record is what
//! user-service's relay produces (binary mode through the SDK's Kafka
//! binding, key = the user id, the `partitionkey` extension set), with a
//! unique event id, so the consumer does the work it does in production.
//!
//!     cargo run --release -p audit-service --example bench_produce -- \
//!         BROKERS TOPIC [COUNT=200000] [PARTITIONS=1]
//!
//! Fails if the topic already exists: a benchmark on a topic with earlier
//! records would measure those too.

use anyhow::{bail, Context};
use chrono::Utc;
use cloudevents::binding::rdkafka::{BaseRecordExt, MessageRecord};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use user_events::{UserData, UserEvent};
use uuid::Uuid;

/// Counts the records the broker did not take, so a short topic is an error
/// here rather than a benchmark that waits forever for missing records.
#[derive(Default)]
struct Failures(AtomicUsize);

impl ClientContext for Failures {}

impl ProducerContext for Failures {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if result.is_err() {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(brokers), Some(topic)) = (args.next(), args.next()) else {
        bail!("usage: bench_produce BROKERS TOPIC [COUNT] [PARTITIONS]");
    };
    let count: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()
        .context("COUNT is not a number")?
        .unwrap_or(200_000);
    let partitions: i32 = args
        .next()
        .map(|a| a.parse())
        .transpose()
        .context("PARTITIONS is not a number")?
        .unwrap_or(1);

    create_topic(&brokers, &topic, partitions).await?;

    let producer: BaseProducer<Failures> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        // The service's delivery guarantees, so the broker does the same work.
        .set("enable.idempotence", "true")
        .set("acks", "all")
        // Throughput is all that matters here: big batches, room to queue.
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "1000000")
        .create_with_context(Failures::default())
        .context("Failed to create the Kafka producer")?;

    let start = Instant::now();
    let now = Utc::now();
    for i in 0..count {
        let user = UserData {
            id: Uuid::now_v7(),
            name: format!("bench user {i}"),
        };
        let key = user.id.to_string();
        let mut event =
            UserEvent::Stored(user).to_cloudevent(Uuid::now_v7(), "/user-service", now)?;
        event.set_extension("partitionkey", key.clone());
        let message = MessageRecord::from_event(event)?;
        let mut record = BaseRecord::to(&topic).key(&key).message_record(&message)?;
        // A full local queue is the producer asking us to wait for the
        // broker; serve delivery reports and offer the same record again.
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => return Err(e).context("Failed to produce"),
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer
        .flush(Duration::from_secs(120))
        .context("Failed to flush the producer")?;
    let failed = producer.context().0.load(Ordering::Relaxed);
    if failed > 0 {
        bail!("{failed} of {count} records were not delivered");
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "{count} records produced to {topic} in {elapsed:.2} s ({:.0} records/s)",
        count as f64 / elapsed
    );
    Ok(())
}

async fn create_topic(brokers: &str, topic: &str, partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .context("Failed to create the Kafka admin client")?;
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .context("Failed to create the topic")?;
    for result in results {
        if let Err((name, code)) = result {
            bail!("topic {name} was not created: {code}");
        }
    }
    Ok(())
}
