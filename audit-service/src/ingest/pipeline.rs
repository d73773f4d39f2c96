//! The one consuming pipeline every broker transport runs: receive a batch,
//! decode it, dead-letter what is not a CloudEvent, store the rest,
//! dead-letter what the store refuses for good, and only then acknowledge.
//! A transport is a [`Source`] (how messages arrive and are acknowledged)
//! and a [`DeadLetterSink`] (where refused ones go); everything about
//! batches, retries and shutdown lives here, once.
//!
//! Two stages run side by side in one task: one receives a batch (up to
//! `INGEST_BATCH_MAX` messages, or what arrives within
//! `INGEST_BATCH_WAIT_MS` of its first, or `max_bytes`) and decodes it,
//! while the other finishes the batch before it. One decoded batch waits
//! between them, so decoding batch k+1 overlaps the store's commit of
//! batch k, and memory holds at most three batches.
//!
//! Nothing is acknowledged before it is durable (stored, or dead-lettered
//! and acknowledged by the broker), so a crash re-delivers at most the
//! batches in hand, and the store's UNIQUE(source, id) absorbs the
//! duplicates. Batches are finished one after another, each in the order
//! received, so a source that delivers a user's events in order has them
//! stored in order.

use super::dead_letter::{self, DeadLetterSink};
use super::decode::DecodeError;
use super::{Backoff, Stopped};
use crate::config::BatchLimits;
use crate::ingest::decode::Decoded;
use crate::store::{EventRow, Refused, Store, StoreError};
use cloudevents_wire::Transport;
use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What one receive gave.
pub enum Received<M> {
    Message(M),
    /// A failure the source has logged and that passes (a broker away for a
    /// moment): the pipeline pauses and receives again.
    Failed,
    /// The subscription is gone (a deleted consumer, a closed stream): the
    /// pipeline finishes what it holds and provisions again.
    Broken(String),
}

/// One message decoded, with what the pipeline needs to finish it.
pub struct Delivery<S: Source + ?Sized> {
    /// Payload and header bytes, counted against the batch's `max_bytes`.
    pub bytes: usize,
    /// Acknowledges the message once it is finished.
    pub ack: S::Ack,
    /// The row to store, or the message to dead-letter and why.
    pub row: Result<EventRow, Refusal<S::Rejected>>,
}

impl<S: Source + ?Sized> Delivery<S> {
    /// A delivery of `decoded`; `rejected` makes the message's dead letter
    /// (from the message or its acknowledgement) if it is not a CloudEvent
    /// the store takes.
    pub fn new(
        bytes: usize,
        ack: S::Ack,
        decoded: Result<Decoded, DecodeError>,
        rejected: impl FnOnce(&S::Ack) -> S::Rejected,
    ) -> Self {
        let row = decoded.and_then(|decoded| {
            EventRow::from_decoded(&decoded).map_err(|e| DecodeError::Other(e.to_string()))
        });
        Delivery {
            bytes,
            row: row.map_err(|error| Refusal {
                rejected: rejected(&ack),
                error,
            }),
            ack,
        }
    }
}

/// A broker's consuming side.
pub trait Source: Send + Sync + 'static {
    /// The receiving end of a subscription, owned by the receive stage.
    type Subscription: Send;
    /// One received message, possibly borrowed from the subscription.
    type Message<'a>: Send
    where
        Self: 'a;
    /// Acknowledges one message, and says where it came from.
    type Ack: Send + Sync;
    /// What a dead letter is made of: the refused message, as the
    /// transport's sink sends it.
    type Rejected: Send + Sync;

    fn transport(&self) -> Transport;

    /// Creates what consuming needs on the broker (streams, consumers,
    /// subscriptions) where missing, and subscribes. Retried with a
    /// backoff until it works or the service stops.
    fn provision(&self) -> BoxFuture<'_, Result<Self::Subscription, String>>;

    /// Waits for the next message.
    fn receive<'a>(
        &'a self,
        subscription: &'a mut Self::Subscription,
    ) -> BoxFuture<'a, Received<Self::Message<'a>>>;

    /// Decodes a message; `None` for a message there is nothing to do
    /// with (not a delivery to acknowledge).
    fn decode(&self, message: Self::Message<'_>) -> Option<Delivery<Self>>;

    /// The dead letter of a message the store refused, from what its
    /// acknowledgement keeps and the row as it would have been stored.
    fn unstorable(&self, ack: &Self::Ack, refused: Refused) -> Self::Rejected;

    /// Acknowledges a finished batch's messages, in the order received. A
    /// lost acknowledgement only means a redelivery the store deduplicates.
    fn acknowledge(&self, acks: Vec<Self::Ack>) -> BoxFuture<'_, ()>;

    /// Tells the broker that these messages are still being worked on,
    /// while the store is retried, so it does not hand them to another
    /// consumer meanwhile. Nothing by default.
    fn in_progress<'a>(&'a self, _acks: &'a [Self::Ack]) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }

    /// Called once when the pipeline stops: sends what acknowledgements
    /// are still buffered.
    fn close(&self) -> BoxFuture<'_, ()>;
}

/// A message the pipeline refused and why.
pub struct Refusal<R> {
    pub rejected: R,
    pub error: DecodeError,
}

/// Messages received together: the valid ones as rows ready for the store,
/// the refused ones with the reason, and every message's acknowledgement.
struct Batch<S: Source> {
    rows: Vec<EventRow>,
    /// The acknowledgement of each row, by row index, for the dead letter
    /// of a row the store refuses.
    row_acks: Vec<usize>,
    rejected: Vec<Refusal<S::Rejected>>,
    acks: Vec<S::Ack>,
    bytes: usize,
}

impl<S: Source> Batch<S> {
    fn new() -> Self {
        Batch {
            rows: Vec::new(),
            row_acks: Vec::new(),
            rejected: Vec::new(),
            acks: Vec::new(),
            bytes: 0,
        }
    }

    fn len(&self) -> usize {
        self.acks.len()
    }

    fn add(&mut self, delivery: Option<Delivery<S>>) {
        let Some(delivery) = delivery else {
            return;
        };
        self.bytes += delivery.bytes;
        match delivery.row {
            Ok(row) => {
                self.rows.push(row);
                self.row_acks.push(self.acks.len());
            }
            Err(refusal) => self.rejected.push(refusal),
        }
        self.acks.push(delivery.ack);
    }
}

/// Why reading stopped.
enum Ended {
    Shutdown,
    Broken(String),
}

/// A source, its dead-letter sink and the store, run until shutdown.
pub struct Pipeline<S, D> {
    pub source: S,
    pub dead_letters: D,
    pub store: Store,
    pub limits: BatchLimits,
    pub shutdown: CancellationToken,
}

impl<S, D> Pipeline<S, D>
where
    S: Source,
    D: DeadLetterSink<Rejected = S::Rejected>,
{
    /// Runs until `shutdown` is cancelled, then finishes the batches in
    /// hand. If it ends for any reason, panics included, the whole service
    /// stops: an audit service that answers HTTP while nothing consumes
    /// the broker would hide the outage from its supervisor.
    pub async fn run(self) {
        let _stop_service = self.shutdown.clone().drop_guard();
        let transport = self.source.transport();
        let mut backoff = Backoff::new();
        loop {
            let subscription = match self.source.provision().await {
                Ok(subscription) => {
                    backoff = Backoff::new();
                    subscription
                }
                Err(e) => {
                    tracing::warn!(error = %e, transport = transport.as_str(), "consumer not ready; retrying");
                    if backoff.pause(&self.shutdown).await.is_err() {
                        break;
                    }
                    continue;
                }
            };
            match self.consume(subscription).await {
                Ended::Shutdown => break,
                Ended::Broken(reason) => {
                    tracing::warn!(%reason, transport = transport.as_str(), "consumer interrupted; subscribing again");
                    if backoff.pause(&self.shutdown).await.is_err() {
                        break;
                    }
                }
            }
        }
        self.source.close().await;
        tracing::info!(transport = transport.as_str(), "consumer stopped");
    }

    /// Runs the two stages until shutdown or a broken subscription.
    async fn consume(&self, mut subscription: S::Subscription) -> Ended {
        let (decoded, mut to_finish) = mpsc::channel::<Batch<S>>(1);
        let receive = async move {
            loop {
                match self.next_batch(&mut subscription).await {
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
    async fn next_batch(&self, subscription: &mut S::Subscription) -> Result<Batch<S>, Ended> {
        let mut batch = Batch::new();
        while batch.len() == 0 {
            let received = tokio::select! {
                _ = self.shutdown.cancelled() => return Err(Ended::Shutdown),
                received = self.source.receive(subscription) => received,
            };
            match received {
                Received::Message(message) => {
                    batch.add(self.source.decode(message));
                }
                // An error that comes back at once must not spin.
                Received::Failed => {
                    if Backoff::new().pause(&self.shutdown).await.is_err() {
                        return Err(Ended::Shutdown);
                    }
                }
                Received::Broken(reason) => return Err(Ended::Broken(reason)),
            }
        }
        let deadline = Instant::now() + self.limits.max_wait;
        while batch.len() < self.limits.max_events && batch.bytes < self.limits.max_bytes {
            match tokio::time::timeout_at(deadline, self.source.receive(subscription)).await {
                Ok(Received::Message(message)) => {
                    batch.add(self.source.decode(message));
                }
                // Finish what is in hand first; the next call meets the
                // failure again or a fresh subscription.
                Ok(Received::Failed | Received::Broken(_)) | Err(_) => break,
            }
        }
        Ok(batch)
    }

    /// Dead-letters, stores and acknowledges one batch.
    #[tracing::instrument(level = "debug", name = "finish_batch", skip_all, fields(messages = batch.len()))]
    async fn finish(&self, batch: Batch<S>) -> Result<(), Stopped> {
        let transport = self.source.transport();
        dead_letter::send_all(
            &self.dead_letters,
            &batch.rejected,
            transport,
            &self.shutdown,
        )
        .await?;
        let refused = self.store(batch.rows, &batch.acks).await?;
        let unstorable: Vec<Refusal<S::Rejected>> = refused
            .into_iter()
            .filter_map(|refused| {
                let ack = &batch.acks[*batch.row_acks.get(refused.index)?];
                let error = DecodeError::Unstorable(refused.error.describe());
                Some(Refusal {
                    rejected: self.source.unstorable(ack, refused),
                    error,
                })
            })
            .collect();
        dead_letter::send_all(&self.dead_letters, &unstorable, transport, &self.shutdown).await?;
        self.source.acknowledge(batch.acks).await;
        Ok(())
    }

    /// Stores the batch's events, retrying until the store takes them:
    /// skipping would lose events, and acknowledging is not allowed before.
    /// Returns the rows the store refused for what they hold (the others
    /// are stored): retrying those would stop this consumer for good.
    async fn store(
        &self,
        mut rows: Vec<EventRow>,
        acks: &[S::Ack],
    ) -> Result<Vec<Refused>, Stopped> {
        let transport = self.source.transport();
        let mut backoff = Backoff::new();
        loop {
            match self.store.write_rows(rows, transport).await {
                Ok(outcome) => return Ok(outcome.refused),
                Err(failed) if matches!(*failed.error, StoreError::WriterGone) => {
                    tracing::error!("the audit store writer has stopped; stopping the consumer");
                    return Err(Stopped);
                }
                Err(failed) => {
                    tracing::error!(error = ?failed.error, transport = transport.as_str(), "storing events failed; retrying");
                    rows = failed.rows;
                    self.source.in_progress(acks).await;
                    backoff.pause(&self.shutdown).await?;
                }
            }
        }
    }
}
