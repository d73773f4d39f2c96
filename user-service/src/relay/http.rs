//! The relay over HTTP: per-user lanes feed up to `RELAY_CONCURRENCY`
//! requests at once, each a batch of up to `HTTP_BATCH_MAX` events
//! (`application/cloudevents-batch+json`) or a single event in
//! `HTTP_CONTENT_MODE`.
//!
//! The rules, in the order a request meets them:
//! - a user's events are in at most one request at a time, in seq order
//!   (inside a batch too), so no later event can overtake an earlier one;
//! - a 2xx acknowledges every event of the request;
//! - any other answer to a batch of more than one event says nothing about
//!   which event was the matter (audit-service refuses a whole batch with
//!   400 for one invalid event, a 413 may be the size of the lot), so each
//!   of its events is sent again alone, first in line. No attempt is
//!   counted for the batch;
//! - a single event follows the delivery rules: 2xx ack; a retryable
//!   answer backs off that user only (its later events wait, everyone
//!   else's keep flowing); any other 4xx parks that event as a dead letter
//!   and the user's next event goes on;
//! - no answer at all (the connection refused, reset or timed out) is about
//!   the receiver, not the event: every user's next request would meet the
//!   same. Until the receiver answers again, one request at a time goes
//!   out, after a pause that grows like an event's backoff, instead of
//!   every waiting user's own retry.

use super::feed::{Fed, Feed};
use super::lanes::{Batch, Lanes};
use super::{backoff, publish_span, sleep_until, trace_id, EventCounters, Recovery, Relay, PAGE};
use crate::config::RelaySettings;
use crate::outbox::Failure;
use cloudevents::Event;
use cloudevents_wire::Transport;
use futures::stream::{FuturesUnordered, StreamExt};
use publishers::{HttpPublisher, Outcome};
use tokio::time::{Instant, MissedTickBehavior};
use tracing::Instrument;

/// Rows held in memory in all, in lanes or awaiting their write.
const HELD_MAX: usize = 10_000;

pub(super) async fn run(relay: &Relay, publisher: &HttpPublisher) -> anyhow::Result<()> {
    let settings = &relay.settings;
    let mut feed = Feed::new(
        relay.store.clone(),
        relay.scope.clone(),
        PAGE,
        settings.poll_interval,
    );
    // Rows one user's lane keeps: two full batches keep that user's
    // requests full back to back; a user with more pending has the rest
    // read in order as the lane drains, so a few long backlogs cannot fill
    // memory and hold everyone else's events back.
    let per_user = (2 * settings.batch_max).clamp(16, HELD_MAX / 20);
    let mut lanes = Lanes::new(per_user);
    let mut counters = EventCounters::new(Transport::Http);
    let mut recovery = Recovery::default();
    let mut receiver = Receiver::default();
    let mut in_flight = FuturesUnordered::new();
    let mut tick = tokio::time::interval(settings.poll_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut stopping = false;
    loop {
        if !stopping {
            let probe = receiver.is_silent();
            let room = receiver.room(settings.concurrency, in_flight.len(), Instant::now());
            for _ in 0..room {
                let Some(batch) = lanes.next_batch(settings.batch_max) else {
                    break;
                };
                in_flight.push(send(publisher, batch, probe));
            }
        }
        feed.start_write();
        if !stopping && feed.can_query() {
            if let Some((user, after)) = lanes.next_refill() {
                feed.start_refill(user, after, per_user as u32);
            } else if feed.can_read() && feed.held() + PAGE as usize <= HELD_MAX {
                feed.start_read(lanes.behind());
            } else {
                feed.start_lag();
            }
        }
        if stopping && in_flight.is_empty() && feed.is_idle() {
            return Ok(());
        }
        let next_retry = [lanes.next_retry(), receiver.pause_ends(Instant::now())]
            .into_iter()
            .flatten()
            .min();
        tokio::select! {
            biased;
            _ = relay.shutdown.cancelled(), if !stopping => {
                stopping = true;
                feed.stop();
            }
            Some((batch, outcome, probe)) = in_flight.next() => {
                receiver.answered(settings, &outcome, probe);
                answered(relay, &mut lanes, &mut feed, &mut counters, &mut recovery, batch, outcome);
            }
            fed = feed.next() => match fed {
                Fed::Rows(rows) => {
                    for row in rows {
                        let seq = row.seq;
                        if lanes.offer(row) {
                            feed.hold(seq);
                        }
                    }
                }
                Fed::Refill { user, rows, complete } => {
                    for seq in lanes.refilled(&user, rows, complete) {
                        feed.hold(seq);
                    }
                }
                Fed::Nothing => {}
            },
            _ = sleep_until(next_retry), if next_retry.is_some() => {
                lanes.wake_due(Instant::now());
            }
            _ = relay.wake.notified(), if !stopping => feed.more(),
            _ = tick.tick(), if !stopping => feed.tick(),
        }
    }
}

/// Sends a batch: alone in the configured content mode when it holds one
/// event, in batch mode otherwise. While spans are exported, each event's
/// publish is a span in that event's trace; a single event's request is
/// sent inside it, so its `traceparent` header continues the same trace.
/// `probe` travels with the answer: whether the request went out while the
/// receiver was silent.
async fn send(publisher: &HttpPublisher, batch: Batch, probe: bool) -> (Batch, Outcome, bool) {
    let spans: Vec<_> = batch
        .rows
        .iter()
        .filter_map(|row| publish_span(row, Transport::Http))
        .collect();
    let outcome = if batch.is_single() {
        match serde_json::from_str::<Event>(&batch.rows[0].event_json) {
            Ok(event) => match spans.first() {
                Some(span) => publisher.publish(&event).instrument(span.clone()).await,
                None => publisher.publish(&event).await,
            },
            // Only a hand-edited row gets here; it can never be sent.
            Err(e) => Outcome::Nack {
                status: None,
                reason: format!("stored event is not valid CloudEvents JSON: {e}"),
            },
        }
    } else {
        publisher.publish_batch(&batch.events_json()).await
    };
    for span in &spans {
        span.record("outcome", outcome.name());
    }
    (batch, outcome, probe)
}

/// Whether the receiver answers at all, and while it does not, when the
/// next probe may go out.
#[derive(Debug, Default)]
struct Receiver {
    silent: Option<Silence>,
}

#[derive(Debug)]
struct Silence {
    /// No request starts before this.
    until: Instant,
    /// Probes that went unanswered, for the pause's growth.
    probes: u32,
}

impl Receiver {
    fn is_silent(&self) -> bool {
        self.silent.is_some()
    }

    /// How many more requests may start at `now` with `in_flight` out:
    /// up to `concurrency` while the receiver answers; while it is silent,
    /// one once the pause is over and nothing else is out.
    fn room(&self, concurrency: usize, in_flight: usize, now: Instant) -> usize {
        match &self.silent {
            None => concurrency.saturating_sub(in_flight),
            Some(silence) => usize::from(in_flight == 0 && now >= silence.until),
        }
    }

    /// When the pause ends, if it is still ahead of `now`.
    fn pause_ends(&self, now: Instant) -> Option<Instant> {
        self.silent
            .as_ref()
            .map(|s| s.until)
            .filter(|&until| until > now)
    }

    /// Takes note of the outcome of a request; `probe` says whether it was
    /// sent while the receiver was silent. Requests already out when it
    /// fell silent fail too; only a failed probe lengthens the pause.
    fn answered(&mut self, settings: &RelaySettings, outcome: &Outcome, probe: bool) {
        let unanswered = matches!(outcome, Outcome::Retry { status: None, .. });
        if !unanswered {
            self.silent = None;
            return;
        }
        let now = Instant::now();
        match &mut self.silent {
            None => {
                self.silent = Some(Silence {
                    until: now + backoff(settings, 1, None),
                    probes: 0,
                })
            }
            Some(silence) if probe => {
                silence.probes = silence.probes.saturating_add(1);
                silence.until = now + backoff(settings, silence.probes + 1, None);
            }
            Some(_) => {}
        }
    }
}

/// Acts on the answer to one request.
fn answered(
    relay: &Relay,
    lanes: &mut Lanes,
    feed: &mut Feed,
    counters: &mut EventCounters,
    recovery: &mut Recovery,
    batch: Batch,
    outcome: Outcome,
) {
    let settings = &relay.settings;
    match outcome {
        Outcome::Ack => {
            for row in &batch.rows {
                counters.published(&row.event_type);
            }
            let retried = batch.rows.iter().any(|row| row.attempts > 0);
            recovery.delivered(retried, Transport::Http);
            for (user, _) in &batch.users {
                for row in lanes.finish(user) {
                    feed.outcomes().delivered.push(row.seq);
                }
            }
        }
        outcome if !batch.is_single() => {
            let (status, reason) = match outcome {
                Outcome::Retry { status, reason, .. } | Outcome::Nack { status, reason } => {
                    (status, reason)
                }
                Outcome::Ack => (None, String::new()),
            };
            metrics::counter!("outbox_batches_split_total").increment(1);
            tracing::info!(
                events = batch.rows.len(),
                status,
                %reason,
                "batch refused, sending its events one by one"
            );
            lanes.split(&batch.users);
        }
        Outcome::Nack { status, reason } => {
            park(lanes, feed, counters, &batch, status, &reason);
        }
        Outcome::Retry {
            after,
            status,
            reason,
        } => {
            let row = &batch.rows[0];
            let attempts = row.attempts.saturating_add(1);
            if settings.max_attempts.is_some_and(|max| attempts >= max) {
                let reason = format!("gave up after {attempts} attempts: {reason}");
                park(lanes, feed, counters, &batch, status, &reason);
                return;
            }
            counters.retried(&row.event_type);
            recovery.failed();
            let delay = backoff(settings, attempts, after);
            tracing::warn!(
                seq = row.seq,
                event_id = %row.event_id,
                user_id = %row.user_id,
                trace_id = trace_id(row),
                attempts,
                status,
                %reason,
                retry_in_ms = delay.as_millis() as u64,
                "publish failed, will retry"
            );
            feed.outcomes().failed.push(Failure {
                seq: row.seq,
                status,
                reason,
            });
            for seq in lanes.hold(&row.user_id, Instant::now() + delay) {
                feed.release(seq);
            }
        }
    }
}

/// Parks a single event as a dead letter; the user's next event goes on.
fn park(
    lanes: &mut Lanes,
    feed: &mut Feed,
    counters: &mut EventCounters,
    batch: &Batch,
    status: Option<u16>,
    reason: &str,
) {
    let row = &batch.rows[0];
    tracing::warn!(
        seq = row.seq,
        event_id = %row.event_id,
        user_id = %row.user_id,
        trace_id = trace_id(row),
        status,
        %reason,
        "event parked as a dead letter"
    );
    counters.dead_lettered(&row.event_type);
    feed.outcomes().dead.push(Failure {
        seq: row.seq,
        status,
        reason: reason.to_owned(),
    });
    lanes.finish(&row.user_id);
}
