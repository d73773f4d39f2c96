//! The NATS JetStream source: reads CloudEvents through the durable pull
//! consumer `NATS_CONSUMER`, and acknowledges each message only after it
//! is stored or dead-lettered (`ingest::pipeline` runs the batches).
//!
//! Delivery. Acknowledgements are explicit and sent after the store commit,
//! so a crash re-delivers at most the batches in hand (after `AckWait`),
//! and the store's UNIQUE(source, id) absorbs the duplicates. While the
//! store refuses a batch, its messages get "in progress" acknowledgements so
//! the server does not hand them to another replica meanwhile. `MaxDeliver`
//! bounds redelivery of a message that keeps crashing its consumer.
//!
//! Order. The consumer delivers in stream order, and one process stores
//! its batches one after another, each in order: with one audit-service a
//! user's events are stored in the order user-service published them.
//! Several processes on the same durable consumer share its messages (each
//! event is still stored once), but a user's events may then be stored in
//! the order the replicas commit: JetStream has no partition ownership to
//! keep one user on one replica, as Kafka's consumer groups do.

mod dead_letter;

use self::dead_letter::{DeadLetters, Rejected};
use super::decode;
use super::pipeline::{Delivery, Pipeline, Received, Source};
use super::{ConsumerTask, Probe};
use crate::config::{BatchLimits, NatsSettings};
use crate::store::{Refused, Store};
use anyhow::Context as _;
use async_nats::jetstream::consumer::pull::{self, MessagesErrorKind};
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy};
use async_nats::jetstream::{self, Message};
use brokers::nats::{ensure_stream, StreamProbe};
use bytes::Bytes;
use cloudevents_wire::Transport;
use futures::future::BoxFuture;
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Messages delivered and not yet acknowledged, at most, over every
/// replica: three batches per replica in hand, for a few replicas.
const MAX_ACK_PENDING: i64 = 20_000;
/// A pull request lasts this long; the server sends heartbeats at half of
/// it, and two missed ones make the client pull again (after a server
/// restart, say).
const PULL_EXPIRES: Duration = Duration::from_secs(10);
/// How long `client.flush()` may take at shutdown.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// The acknowledgement body that extends a message's AckWait.
const IN_PROGRESS: &[u8] = b"+WPI";

/// Starts the consumer task. It runs until `shutdown` is cancelled, then
/// finishes the batches in hand (dead letters, store, acknowledgements).
/// A server that is away is waited for: the task connects, creates the
/// streams and the consumer when it can, and `/readyz` says 503 until then.
pub async fn start(
    settings: &NatsSettings,
    limits: BatchLimits,
    store: Store,
    shutdown: CancellationToken,
) -> anyhow::Result<ConsumerTask> {
    let client = settings
        .common
        .connect("audit-service")
        .await
        .context("Failed to set up the NATS connection")?;
    let js = jetstream::new(client.clone());
    tracing::info!(
        server = %settings::redact::urls(&settings.common.url),
        stream = %settings.common.stream,
        consumer = %settings.consumer,
        dlq = %settings.dlq_subject,
        batch_max = limits.max_events,
        batch_wait_ms = limits.max_wait.as_millis() as u64,
        "consuming CloudEvents from NATS JetStream"
    );
    let probe = Arc::new(StreamProbe::new(js.clone(), &settings.common.stream));
    let pipeline = Pipeline {
        source: NatsSource {
            dead_letters: DeadLetters::new(js.clone(), settings),
            js: js.clone(),
            client,
            settings: settings.clone(),
            max_events: limits.max_events,
        },
        dead_letters: DeadLetters::new(js, settings),
        store,
        limits,
        shutdown,
    };
    Ok(ConsumerTask {
        task: tokio::spawn(pipeline.run()),
        probe,
    })
}

impl Probe for StreamProbe {
    fn check(&self, timeout: Duration) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(StreamProbe::check(self, timeout))
    }
}

struct NatsSource {
    js: jetstream::Context,
    client: async_nats::Client,
    /// Only to create the dead-letter stream with the others.
    dead_letters: DeadLetters,
    settings: NatsSettings,
    /// The most messages one pull asks for: a batch.
    max_events: usize,
}

impl Source for NatsSource {
    type Subscription = pull::Stream;
    type Message<'a> = Message;
    /// The message itself: its reply subject acknowledges it, and a row
    /// the store refuses is dead-lettered as it arrived (its payload is
    /// shared, not copied).
    type Ack = Message;
    type Rejected = Rejected;

    fn transport(&self) -> Transport {
        Transport::Nats
    }

    fn provision(&self) -> BoxFuture<'_, Result<pull::Stream, String>> {
        Box::pin(self.subscribe())
    }

    fn receive<'a>(&'a self, messages: &'a mut pull::Stream) -> BoxFuture<'a, Received<Message>> {
        Box::pin(async move {
            match messages.next().await {
                Some(Ok(message)) => Received::Message(message),
                Some(Err(e)) => received_error(&e),
                None => Received::Broken("the pull subscription ended".into()),
            }
        })
    }

    /// Decodes the message at once; only refused messages keep their
    /// payload (to be dead-lettered).
    fn decode(&self, delivered: Message) -> Option<Delivery<Self>> {
        if delivered.message.reply.is_none() {
            // Not a JetStream delivery (nothing to acknowledge); nothing a
            // pull consumer sends.
            tracing::warn!(subject = %delivered.message.subject, "NATS message without a reply subject ignored");
            return None;
        }
        let message = &delivered.message;
        let headers: Vec<(&str, &str)> = message
            .headers
            .as_ref()
            .map(|h| {
                h.iter()
                    .filter_map(|(name, values)| {
                        values.first().map(|v| (name.as_ref(), v.as_str()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let decoded = decode::nats_message(&headers, &message.payload);
        let bytes = message.length;
        Some(Delivery::new(bytes, delivered, decoded, Rejected::new))
    }

    fn unstorable(&self, delivered: &Message, _: Refused) -> Rejected {
        Rejected::new(delivered)
    }

    fn acknowledge(&self, acks: Vec<Message>) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            for delivered in acks {
                let Some(reply) = delivered.message.reply.clone() else {
                    continue;
                };
                if let Err(e) = self.client.publish(reply, Bytes::new()).await {
                    tracing::debug!(error = %e, "NATS acknowledgement not sent");
                }
            }
        })
    }

    /// Extends each message's AckWait while the store is retried.
    fn in_progress<'a>(&'a self, acks: &'a [Message]) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            for delivered in acks {
                if let Some(reply) = delivered.message.reply.clone() {
                    let _ = self
                        .client
                        .publish(reply, Bytes::from_static(IN_PROGRESS))
                        .await;
                }
            }
        })
    }

    /// Acknowledgements are plain publishes; send what is buffered.
    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if !matches!(
                tokio::time::timeout(FLUSH_TIMEOUT, self.client.flush()).await,
                Ok(Ok(()))
            ) {
                tracing::warn!("NATS acknowledgements not flushed at shutdown; those messages will be delivered again and deduplicated");
            }
        })
    }
}

impl NatsSource {
    /// The stream, the dead-letter stream and the durable consumer (each
    /// created if missing), and a pull subscription on it.
    async fn subscribe(&self) -> Result<pull::Stream, String> {
        ensure_stream(&self.js, self.settings.common.stream_config()).await?;
        self.dead_letters.ensure_stream().await?;
        let stream = self
            .js
            .get_stream(&self.settings.common.stream)
            .await
            .map_err(|e| format!("stream {}: {e}", self.settings.common.stream))?;
        let consumer: jetstream::consumer::PullConsumer = stream
            .get_or_create_consumer(
                &self.settings.consumer,
                pull::Config {
                    durable_name: Some(self.settings.consumer.clone()),
                    description: Some("audit-service: stores every CloudEvent once".into()),
                    // A new consumer reads everything the stream holds: the
                    // audit log wants it all.
                    deliver_policy: DeliverPolicy::All,
                    // Not AckAll: with replicas sharing the consumer, one
                    // acknowledging its batch would acknowledge another's
                    // earlier messages that are not stored yet.
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: self.settings.ack_wait,
                    max_deliver: self.settings.max_deliver,
                    max_ack_pending: MAX_ACK_PENDING,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| format!("consumer {}: {e}", self.settings.consumer))?;
        consumer
            .stream()
            .max_messages_per_batch(self.max_events)
            .expires(PULL_EXPIRES)
            .heartbeat(PULL_EXPIRES / 2)
            .messages()
            .await
            .map_err(|e| format!("pull from consumer {}: {e}", self.settings.consumer))
    }
}

/// Transient pull errors (a missed heartbeat while the server is away)
/// are logged and reading goes on; a deleted consumer means subscribing
/// again.
fn received_error<M>(error: &pull::MessagesError) -> Received<M> {
    match error.kind() {
        MessagesErrorKind::ConsumerDeleted
        | MessagesErrorKind::NoResponders
        | MessagesErrorKind::PushBasedConsumer
        | MessagesErrorKind::RequestLimitExceeded => Received::Broken(error.to_string()),
        _ => {
            tracing::warn!(error = %error, "NATS pull failed; going on");
            Received::Failed
        }
    }
}
