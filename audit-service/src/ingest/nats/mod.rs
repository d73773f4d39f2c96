//! The NATS JetStream consumer: reads CloudEvents through the durable pull
//! consumer `NATS_CONSUMER` in batches, stores the valid ones,
//! dead-letters the rest, and acknowledges each message only after both.
//!
//! Two stages run side by side in one task, as on Kafka: one receives a
//! batch (up to `INGEST_BATCH_MAX` messages, or what arrives within
//! `INGEST_BATCH_WAIT_MS` of its first) and decodes it, while the other
//! finishes the batch before it: dead letters acknowledged by the server,
//! events committed by the store in one `write_rows` call, then every
//! message acknowledged. Memory holds at most three batches.
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
use super::decode::{self, DecodeError};
use super::{Backoff, ConsumerTask, Probe, Stopped};
use crate::config::{BatchLimits, NatsSettings};
use crate::store::{EventRow, Refused, Store, StoreError};
use anyhow::Context as _;
use async_nats::jetstream::consumer::pull::{self, MessagesErrorKind};
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy};
use async_nats::jetstream::{self, Message};
use async_nats::Subject;
use brokers::nats::{ensure_stream, StreamProbe};
use bytes::Bytes;
use cloudevents_wire::Transport;
use futures::future::BoxFuture;
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
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
    let worker = Worker {
        dead_letters: DeadLetters::new(js.clone(), settings),
        probe: StreamProbe::new(js.clone(), &settings.common.stream),
        js,
        client,
        settings: settings.clone(),
        store,
        limits,
        shutdown,
    };
    let probe = Arc::new(worker.probe.clone());
    Ok(ConsumerTask {
        task: tokio::spawn(worker.run()),
        probe,
    })
}

impl Probe for StreamProbe {
    fn check(&self, timeout: Duration) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(StreamProbe::check(self, timeout))
    }
}

/// Messages received together: the valid ones as rows ready for the store,
/// the others with the reason, and every message's acknowledgement subject.
#[derive(Default)]
struct Batch {
    rows: Vec<EventRow>,
    /// The message of each row, kept (not copied) until the batch is
    /// finished: a row the store refuses is dead-lettered as it arrived.
    row_messages: Vec<Message>,
    rejected: Vec<Rejected>,
    acks: Vec<Subject>,
    bytes: usize,
}

impl Batch {
    fn len(&self) -> usize {
        self.acks.len()
    }

    /// Decodes the message at once; only refused messages keep their
    /// payload (to be dead-lettered).
    fn add(&mut self, delivered: Message) {
        let message = &delivered.message;
        let Some(reply) = message.reply.clone() else {
            // Not a JetStream delivery (nothing to acknowledge); nothing a
            // pull consumer sends.
            tracing::warn!(subject = %message.subject, "NATS message without a reply subject ignored");
            return;
        };
        self.bytes += message.length;
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
        let decoded = decode::nats_message(&headers, &message.payload).and_then(|decoded| {
            EventRow::from_decoded(&decoded).map_err(|e| DecodeError::Other(e.to_string()))
        });
        self.acks.push(reply);
        match decoded {
            Ok(row) => {
                self.rows.push(row);
                self.row_messages.push(delivered);
            }
            Err(error) => self.rejected.push(rejected(&delivered, error)),
        }
    }
}

/// The dead letter of `delivered`, with why.
fn rejected(delivered: &Message, error: DecodeError) -> Rejected {
    let message = &delivered.message;
    Rejected {
        origin: delivered
            .info()
            .map(|i| format!("{}/{}/{}", i.stream, i.consumer, i.stream_sequence))
            .unwrap_or_else(|_| message.reply.as_deref().unwrap_or_default().to_owned()),
        headers: message.headers.clone(),
        payload: message.payload.clone(),
        error,
    }
}

/// Why reading stopped.
enum Ended {
    Shutdown,
    /// The consumer went away (deleted) or the pull failed for good:
    /// subscribe again.
    Broken(String),
}

struct Worker {
    js: jetstream::Context,
    client: async_nats::Client,
    dead_letters: DeadLetters,
    probe: StreamProbe,
    settings: NatsSettings,
    store: Store,
    limits: BatchLimits,
    shutdown: CancellationToken,
}

impl Worker {
    async fn run(self) {
        // If this task ends for any reason, panics included, the whole
        // service stops: an audit service that answers HTTP while nothing
        // consumes the stream would hide the outage from its supervisor.
        let _stop_service = self.shutdown.clone().drop_guard();
        let mut backoff = Backoff::new();
        loop {
            let messages = match self.subscribe().await {
                Ok(messages) => {
                    backoff = Backoff::new();
                    messages
                }
                Err(e) => {
                    tracing::warn!(error = %e, "NATS consumer not ready; retrying");
                    if backoff.pause(&self.shutdown).await.is_err() {
                        break;
                    }
                    continue;
                }
            };
            match self.consume(messages).await {
                Ended::Shutdown => break,
                Ended::Broken(reason) => {
                    tracing::warn!(%reason, "NATS consumer interrupted; subscribing again");
                    if backoff.pause(&self.shutdown).await.is_err() {
                        break;
                    }
                }
            }
        }
        // Acknowledgements are plain publishes; send what is buffered.
        if !matches!(
            tokio::time::timeout(FLUSH_TIMEOUT, self.client.flush()).await,
            Ok(Ok(()))
        ) {
            tracing::warn!("NATS acknowledgements not flushed at shutdown; those messages will be delivered again and deduplicated");
        }
        tracing::info!("nats consumer stopped");
    }

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
            .max_messages_per_batch(self.limits.max_events)
            .expires(PULL_EXPIRES)
            .heartbeat(PULL_EXPIRES / 2)
            .messages()
            .await
            .map_err(|e| format!("pull from consumer {}: {e}", self.settings.consumer))
    }

    /// Runs the two stages until shutdown or a broken subscription.
    async fn consume(&self, messages: pull::Stream) -> Ended {
        let (decoded, mut to_finish) = mpsc::channel::<Batch>(1);
        let receive = async move {
            let mut messages = messages;
            loop {
                match self.next_batch(&mut messages).await {
                    Ok(batch) => {
                        if decoded.send(batch).await.is_err() {
                            return Ended::Shutdown;
                        }
                    }
                    Err(ended) => return ended,
                }
            }
        };
        let finish = async {
            while let Some(batch) = to_finish.recv().await {
                if self.finish(batch).await.is_err() {
                    break;
                }
            }
        };
        let (ended, ()) = tokio::join!(receive, finish);
        ended
    }

    /// Waits for a first message, then takes what follows within the
    /// window, up to the batch limits.
    async fn next_batch(&self, messages: &mut pull::Stream) -> Result<Batch, Ended> {
        let mut batch = Batch::default();
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return Err(Ended::Shutdown),
                received = messages.next() => match received {
                    Some(Ok(message)) => {
                        batch.add(message);
                        if batch.len() > 0 {
                            break;
                        }
                    }
                    Some(Err(e)) => {
                        self.received_error(&e)?;
                        // An error that comes back at once must not spin.
                        if Backoff::new().pause(&self.shutdown).await.is_err() {
                            return Err(Ended::Shutdown);
                        }
                    }
                    None => return Err(Ended::Broken("the pull subscription ended".into())),
                },
            }
        }
        let deadline = Instant::now() + self.limits.max_wait;
        while batch.len() < self.limits.max_events && batch.bytes < self.limits.max_bytes {
            match tokio::time::timeout_at(deadline, messages.next()).await {
                Ok(Some(Ok(message))) => batch.add(message),
                Ok(Some(Err(e))) => {
                    if let Err(ended) = self.received_error(&e) {
                        // Finish what is in hand first; the next call
                        // meets the error again or a fresh subscription.
                        tracing::debug!("pull failed with a batch in hand; finishing it");
                        if batch.len() == 0 {
                            return Err(ended);
                        }
                        break;
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        Ok(batch)
    }

    /// Transient pull errors (a missed heartbeat while the server is away)
    /// are logged and reading goes on; a deleted consumer means subscribing
    /// again.
    fn received_error(&self, error: &pull::MessagesError) -> Result<(), Ended> {
        match error.kind() {
            MessagesErrorKind::ConsumerDeleted
            | MessagesErrorKind::NoResponders
            | MessagesErrorKind::PushBasedConsumer
            | MessagesErrorKind::RequestLimitExceeded => Err(Ended::Broken(error.to_string())),
            _ => {
                tracing::warn!(error = %error, "NATS pull failed; going on");
                Ok(())
            }
        }
    }

    /// Dead-letters, stores and acknowledges one batch.
    #[tracing::instrument(level = "debug", name = "finish_nats_batch", skip_all, fields(messages = batch.len()))]
    async fn finish(&self, batch: Batch) -> Result<(), Stopped> {
        self.dead_letters
            .send_all(&batch.rejected, &self.shutdown)
            .await?;
        let refused = self.store(batch.rows, &batch.acks).await?;
        let unstorable: Vec<Rejected> = refused
            .into_iter()
            .filter_map(|refused| {
                let message = batch.row_messages.get(refused.index)?;
                Some(rejected(
                    message,
                    DecodeError::Unstorable(refused.error.describe()),
                ))
            })
            .collect();
        self.dead_letters
            .send_all(&unstorable, &self.shutdown)
            .await?;
        for reply in batch.acks {
            // A lost acknowledgement only means a redelivery the store
            // deduplicates.
            if let Err(e) = self.client.publish(reply, Bytes::new()).await {
                tracing::debug!(error = %e, "NATS acknowledgement not sent");
            }
        }
        Ok(())
    }

    /// Stores the batch's events, retrying until the store takes them:
    /// skipping would lose events, and acknowledging is not allowed before.
    /// Returns the rows the store refused for what they hold (the others
    /// are stored): retrying those would stop this consumer for good.
    async fn store(
        &self,
        mut rows: Vec<EventRow>,
        acks: &[Subject],
    ) -> Result<Vec<Refused>, Stopped> {
        let mut backoff = Backoff::new();
        loop {
            match self.store.write_rows(rows, Transport::Nats).await {
                Ok(outcome) => return Ok(outcome.refused),
                Err(failed) if matches!(*failed.error, StoreError::WriterGone) => {
                    tracing::error!("the audit store writer has stopped; stopping the consumer");
                    return Err(Stopped);
                }
                Err(failed) => {
                    tracing::error!(error = ?failed.error, "storing NATS events failed; retrying");
                    rows = failed.rows;
                    for reply in acks {
                        let _ = self
                            .client
                            .publish(reply.clone(), Bytes::from_static(IN_PROGRESS))
                            .await;
                    }
                    backoff.pause(&self.shutdown).await?;
                }
            }
        }
    }
}
