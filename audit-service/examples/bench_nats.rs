//! The NATS JetStream side of `make bench`: fills a fresh stream with
//! `user.storeUser` events as user-service's relay publishes them, and is
//! the bare reference the consume-and-store figure is compared with.
//!
//!     bench_nats produce URL STREAM SUBJECT COUNT
//!         creates STREAM (as the services create it: `brokers::nats`) and
//!         publishes COUNT binary-mode events to SUBJECT (`ce-` headers,
//!         `Nats-Msg-Id` = the event id), every publish acknowledged;
//!     bench_nats drain URL STREAM CONSUMER COUNT
//!         a durable pull consumer configured as audit-service's (explicit
//!         acknowledgements, the same pull batch and ack window) that only
//!         acknowledges each message, until COUNT are acknowledged; prints
//!         the seconds from connecting to the last acknowledgement flushed;
//!     bench_nats delete URL STREAM...
//!         deletes the streams a run made (the server is shared).
//!
//! Fails if the stream already holds messages (a benchmark on a stream with
//! earlier messages would measure those too) or if fewer than COUNT arrive
//! within a minute.

use anyhow::{bail, Context};
use async_nats::header::{HeaderMap, NATS_MESSAGE_ID};
use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy};
use brokers::nats::{ensure_stream, NatsConfig};
use bytes::Bytes;
use chrono::Utc;
use cloudevents::AttributesReader;
use cloudevents_wire::binding::to_nats_binary;
use futures::stream::{FuturesUnordered, StreamExt};
use std::future::IntoFuture;
use std::time::{Duration, Instant};
use user_events::{UserData, UserEvent};
use uuid::Uuid;

/// Publishes awaiting their acknowledgement at most, as user-service's
/// publisher allows.
const ACKS_IN_FLIGHT: usize = 20_000;
/// audit-service's pull batch (`INGEST_BATCH_MAX`'s default) and ack window.
const PULL_BATCH: usize = 1000;
const MAX_ACK_PENDING: i64 = 20_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["produce", url, stream, subject, count] => {
            produce(url, stream, subject, count.parse().context("COUNT")?).await
        }
        ["drain", url, stream, consumer, count] => {
            drain(url, stream, consumer, count.parse().context("COUNT")?).await
        }
        ["delete", url, streams @ ..] => delete(url, streams).await,
        _ => bail!(
            "usage: bench_nats produce URL STREAM SUBJECT COUNT | drain URL STREAM CONSUMER COUNT | delete URL STREAM..."
        ),
    }
}

fn config(url: &str, stream: &str, subject: &str) -> anyhow::Result<NatsConfig> {
    Ok(NatsConfig::from_vars([
        ("NATS_URL".to_owned(), url.to_owned()),
        ("NATS_STREAM".to_owned(), stream.to_owned()),
        ("NATS_SUBJECT".to_owned(), subject.to_owned()),
    ])?)
}

async fn produce(url: &str, stream: &str, subject: &str, count: usize) -> anyhow::Result<()> {
    let config = config(url, stream, subject)?;
    let client = async_nats::connect(url).await.context("connect")?;
    let js = jetstream::ContextBuilder::new()
        .max_ack_inflight(ACKS_IN_FLIGHT)
        .timeout(Duration::from_secs(30))
        .build(client);
    ensure_stream(&js, config.stream_config())
        .await
        .map_err(anyhow::Error::msg)?;
    let held = js.get_stream(stream).await?.info().await?.state.messages;
    if held > 0 {
        bail!("stream {stream} already holds {held} messages");
    }

    let start = Instant::now();
    let now = Utc::now();
    let mut acks = FuturesUnordered::new();
    for i in 0..count {
        let user = UserData {
            id: Uuid::now_v7(),
            name: format!("bench user {i}"),
        };
        let event = UserEvent::Stored(user).to_cloudevent(Uuid::now_v7(), "/user-service", now)?;
        let (attributes, body) = to_nats_binary(&event);
        let mut headers = HeaderMap::new();
        for (name, value) in attributes {
            headers.insert(name.as_str(), value.as_str());
        }
        headers.insert(NATS_MESSAGE_ID, event.id());
        let ack = js
            .publish_with_headers(subject.to_owned(), headers, body.into())
            .await
            .context("publish")?;
        acks.push(ack.into_future());
        while acks.len() >= ACKS_IN_FLIGHT {
            acks.next()
                .await
                .context("no ack")?
                .context("publish ack")?;
        }
    }
    while let Some(ack) = acks.next().await {
        ack.context("publish ack")?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "{count} events published to {subject} in {elapsed:.2} s ({:.0} events/s)",
        count as f64 / elapsed
    );
    Ok(())
}

async fn drain(url: &str, stream: &str, consumer: &str, count: usize) -> anyhow::Result<()> {
    let start = Instant::now();
    let client = async_nats::connect(url).await.context("connect")?;
    let js = jetstream::new(client.clone());
    let consumer: jetstream::consumer::PullConsumer = js
        .get_stream(stream)
        .await?
        .get_or_create_consumer(
            consumer,
            pull::Config {
                durable_name: Some(consumer.to_owned()),
                ack_policy: AckPolicy::Explicit,
                max_ack_pending: MAX_ACK_PENDING,
                ..Default::default()
            },
        )
        .await?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(PULL_BATCH)
        .messages()
        .await?;
    let mut acked = 0;
    let deadline = tokio::time::sleep(Duration::from_secs(60));
    tokio::pin!(deadline);
    while acked < count {
        tokio::select! {
            message = messages.next() => {
                let message = message.context("the pull subscription ended")??;
                let reply = message.reply.clone().context("no reply subject")?;
                // The acknowledgement audit-service sends: an empty publish
                // to the reply subject.
                client.publish(reply, Bytes::new()).await?;
                acked += 1;
            }
            () = &mut deadline => bail!("{acked} of {count} messages within 60 s"),
        }
    }
    client.flush().await?;
    println!("{:.3}", start.elapsed().as_secs_f64());
    Ok(())
}

async fn delete(url: &str, streams: &[&str]) -> anyhow::Result<()> {
    let js = jetstream::new(async_nats::connect(url).await.context("connect")?);
    for stream in streams {
        // A stream the run never made (it failed earlier) is no error here.
        let _ = js.delete_stream(stream).await;
    }
    Ok(())
}
