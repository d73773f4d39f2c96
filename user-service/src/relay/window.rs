//! The relay to a broker with publish acknowledgements (Kafka): pending
//! rows go to the publisher in seq order with up to `WINDOW` events in
//! flight, and are marked delivered from the broker's reports, many to a
//! commit. Written once against `publishers::Pipelined`.
//!
//! Why one user's order survives thousands in flight, on Kafka. A user's
//! records share a key, hence a partition, and enter the producer in seq
//! order: the outbox is read in seq order and each page is handed over
//! whole, in order, before the next is read. The idempotent producer keeps
//! a partition's records in that order on the broker, its own retries
//! included: it numbers them, the broker refuses a gap or a duplicate, and
//! librdkafka sends again from the first one missing. Our default
//! `message.timeout.ms=0` lets a record wait forever, so librdkafka retries
//! through a broker restart, a leader change or a network cut by itself,
//! and a delivery report can fail in only two ways:
//! - for that record, for good (too large, invalid): it is parked as a
//!   dead letter. Later records of its user may already be on the broker;
//!   a dead letter is out of order by nature, as over HTTP, and a re-drive
//!   sends it after them.
//! - for the producer (a fatal idempotence error: librdkafka can no longer
//!   promise order or once-only, and fails every send from then on). The
//!   relay stops sending, lets the reports in flight come in, builds a new
//!   producer and reads the outbox again from its oldest pending row, so
//!   nothing is skipped and what goes again goes in seq order. /delivery
//!   answers 503 while the producer is in that state.
//!
//! An operator's `KAFKA_MESSAGE_TIMEOUT_MS` still wins, at a price: a record
//! that expires is a plain failure, and librdkafka documents that later
//! records of the partition may still be written ("1, 4, 5" once 2 and 3
//! expired; `enable.gapless.guarantee` does not cover expiry). The relay
//! does what it can: on any failed report it stops sending, lets the
//! reports in flight come in, backs off and reads again from the oldest
//! pending row, so the expired records go again in seq order, but they may
//! land after later records of the same user that did not expire. What the
//! operator gets for it: a broker outage shows as failed attempts in the
//! outbox instead of only as lag.

use super::feed::{Fed, Feed};
use super::{backoff, publish_span, sleep_until, EventCounters, Recovery, Relay, PAGE};
use crate::outbox::{Failure, PendingEvent};
use cloudevents::event::ExtensionValue;
use cloudevents::Event;
use futures::stream::{FuturesUnordered, StreamExt};
use publishers::{Pending, Pipelined, Report};
use std::collections::HashSet;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::Span;

/// Events in flight (handed to the publisher, no report yet) plus rows
/// awaiting their write, at most. Enough to keep batches full on a LAN
/// link; small enough to bound memory and what is re-sent after a crash.
const WINDOW: usize = 5000;

/// An event handed to the publisher: what its report is about.
struct Sent {
    seq: i64,
    attempts: u32,
    event_type: String,
    /// The trace id its event carries, for log lines about it.
    trace_id: Option<String>,
    /// Its publish span while spans are exported; it ends with the report.
    span: Option<Span>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Sending,
    /// A report failed: nothing more is sent until the records in flight
    /// have reported, or `deadline` passed (a broker that is away may
    /// never answer for them).
    Draining {
        fatal: bool,
        deadline: Instant,
    },
    /// Backing off before reading again from the oldest pending row.
    Paused {
        until: Instant,
    },
}

pub(super) async fn run(relay: &Relay, publisher: &dyn Pipelined) -> anyhow::Result<()> {
    let settings = &relay.settings;
    let mut feed = Feed::new(
        relay.store.clone(),
        relay.scope.clone(),
        PAGE,
        settings.poll_interval,
    );
    let mut in_flight = FuturesUnordered::new();
    let mut counters = EventCounters::new(publisher.transport());
    let mut recovery = Recovery::default();
    let mut sent: HashSet<i64> = HashSet::new();
    let mut mode = Mode::Sending;
    // Recoveries since the last delivered record, for the backoff.
    let mut recoveries: u32 = 0;
    let mut stop_by: Option<Instant> = None;
    let mut tick = tokio::time::interval(settings.poll_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let now = Instant::now();
        if let Mode::Draining { fatal, deadline } = mode {
            if in_flight.is_empty() || now >= deadline {
                if !in_flight.is_empty() {
                    // Reports that are not coming: forget them. Their rows
                    // are still pending and go again; a copy that did reach
                    // the broker is stored once by the receiver.
                    in_flight = FuturesUnordered::new();
                    for seq in sent.drain() {
                        feed.release(seq);
                    }
                }
                if fatal {
                    publisher.rebuild()?;
                    metrics::counter!("publisher_rebuilds_total", "transport" => publisher.transport().as_str()).increment(1);
                    tracing::warn!(publisher = %publisher.describe(), "publisher rebuilt after a fatal error; re-reading the outbox from its oldest pending event");
                }
                recoveries = recoveries.saturating_add(1);
                mode = Mode::Paused {
                    until: now + backoff(settings, recoveries, None),
                };
                feed.rescan();
            }
        }
        feed.start_write();
        if stop_by.is_none() && feed.can_query() {
            if mode == Mode::Sending && feed.can_read() && feed.held() + PAGE as usize <= WINDOW {
                feed.start_read(Vec::new());
            } else {
                feed.start_lag();
            }
        }
        if let Some(deadline) = stop_by {
            if (in_flight.is_empty() || now >= deadline) && feed.is_idle() {
                // Rows without a report stay pending for the next start.
                return Ok(());
            }
        }
        let timer = [
            match mode {
                Mode::Sending => None,
                Mode::Draining { deadline, .. } => Some(deadline),
                Mode::Paused { until } => Some(until),
            },
            stop_by,
        ]
        .into_iter()
        .flatten()
        .min();
        tokio::select! {
            biased;
            _ = relay.shutdown.cancelled(), if stop_by.is_none() => {
                // Reports in flight get as long as one publish may take.
                stop_by = Some(now + publisher.timeout());
                feed.stop();
            }
            Some((record, report)) = in_flight.next() => {
                let record: Sent = record;
                sent.remove(&record.seq);
                match report {
                    Report::Delivered => {
                        recoveries = 0;
                        // A failure stops all sending: any delivery ends it.
                        recovery.delivered(true, publisher.transport());
                    }
                    Report::Failed(_) | Report::Fatal(_) => recovery.failed(),
                    Report::Refused(_) => {}
                }
                reported(relay, &mut feed, &mut mode, &mut counters, publisher, record, report);
            }
            fed = feed.next() => {
                // Rows read while not sending are dropped: the rescan that
                // ends the pause reads them again, in order.
                if let Fed::Rows(rows) = fed {
                    if mode == Mode::Sending && stop_by.is_none() {
                        for row in rows {
                            if mode != Mode::Sending {
                                break;
                            }
                            match enqueue(&mut feed, &mut mode, &mut counters, publisher, row).await {
                                Some((record, pending)) => {
                                    sent.insert(record.seq);
                                    in_flight.push(await_report(record, pending));
                                }
                                // Not taken: the publisher failed it at once.
                                None if mode != Mode::Sending => recovery.failed(),
                                None => {}
                            }
                        }
                    }
                }
            }
            _ = sleep_until(timer), if timer.is_some() => {
                if let Mode::Paused { until } = mode {
                    if Instant::now() >= until {
                        mode = Mode::Sending;
                    }
                }
            }
            _ = relay.wake.notified(), if stop_by.is_none() => feed.more(),
            _ = tick.tick(), if stop_by.is_none() => feed.tick(),
        }
    }
}

async fn await_report(record: Sent, pending: Pending) -> (Sent, Report) {
    (record, pending.await)
}

/// Hands one row to the publisher. `None` when it was not sent: parked, or
/// the publisher would not take it (then `mode` says what to do).
async fn enqueue(
    feed: &mut Feed,
    mode: &mut Mode,
    counters: &mut EventCounters,
    publisher: &dyn Pipelined,
    row: PendingEvent,
) -> Option<(Sent, Pending)> {
    let span = publish_span(&row, publisher.transport());
    let mut record = Sent {
        seq: row.seq,
        attempts: row.attempts,
        event_type: row.event_type,
        trace_id: None,
        span,
    };
    let event: Event = match serde_json::from_str(&row.event_json) {
        Ok(event) => event,
        Err(e) => {
            // Only a hand-edited row gets here; it can never be sent.
            let reason = format!("stored event is not valid CloudEvents JSON: {e}");
            park(feed, counters, &record, &reason);
            return None;
        }
    };
    record.trace_id = match event.extension(cloudevents_wire::tracecontext::TRACEPARENT) {
        Some(ExtensionValue::String(traceparent)) => {
            cloudevents_wire::tracecontext::trace_id_of(traceparent).map(str::to_owned)
        }
        _ => None,
    };
    match publisher.enqueue(event).await {
        Ok(pending) => {
            feed.hold(record.seq);
            Some((record, pending))
        }
        Err(Report::Refused(reason)) => {
            park(feed, counters, &record, &reason);
            None
        }
        Err(Report::Fatal(reason)) => {
            stop_sending(mode, true, publisher, &reason);
            None
        }
        Err(Report::Failed(reason)) => {
            stop_sending(mode, false, publisher, &reason);
            None
        }
        Err(Report::Delivered) => {
            stop_sending(mode, false, publisher, "the publisher refused the event");
            None
        }
    }
}

/// Acts on one delivery report.
fn reported(
    relay: &Relay,
    feed: &mut Feed,
    mode: &mut Mode,
    counters: &mut EventCounters,
    publisher: &dyn Pipelined,
    record: Sent,
    report: Report,
) {
    if let Some(span) = &record.span {
        let outcome = match report {
            Report::Delivered => "ack",
            Report::Refused(_) => "nack",
            Report::Failed(_) | Report::Fatal(_) => "retry",
        };
        span.record("outcome", outcome);
    }
    match report {
        Report::Delivered => {
            counters.published(&record.event_type);
            feed.outcomes().delivered.push(record.seq);
        }
        Report::Refused(reason) => park(feed, counters, &record, &reason),
        Report::Failed(reason) => failed(
            relay, feed, mode, counters, publisher, record, reason, false,
        ),
        Report::Fatal(reason) => {
            failed(relay, feed, mode, counters, publisher, record, reason, true)
        }
    }
}

/// A record that was not delivered: recorded as a failed attempt (or
/// parked once out of attempts), and the relay stops sending.
#[allow(clippy::too_many_arguments)]
fn failed(
    relay: &Relay,
    feed: &mut Feed,
    mode: &mut Mode,
    counters: &mut EventCounters,
    publisher: &dyn Pipelined,
    record: Sent,
    reason: String,
    fatal: bool,
) {
    let attempts = record.attempts.saturating_add(1);
    // A fatal error is the publisher's, not the event's: it does not use
    // up the record's attempts.
    let out_of_attempts = !fatal
        && relay
            .settings
            .max_attempts
            .is_some_and(|max| attempts >= max);
    if out_of_attempts {
        park(
            feed,
            counters,
            &record,
            &format!("gave up after {attempts} attempts: {reason}"),
        );
    } else {
        counters.retried(&record.event_type);
        feed.release(record.seq);
        feed.outcomes().failed.push(Failure {
            seq: record.seq,
            status: None,
            reason: reason.clone(),
        });
    }
    stop_sending(mode, fatal, publisher, &reason);
}

/// Enters (or stays in) the drain after a failure, logging its start.
fn stop_sending(mode: &mut Mode, fatal: bool, publisher: &dyn Pipelined, reason: &str) {
    match *mode {
        Mode::Draining {
            fatal: was_fatal,
            deadline,
        } => {
            if fatal && !was_fatal {
                tracing::error!(%reason, publisher = %publisher.describe(), "publisher failed for good; it will be rebuilt");
            }
            *mode = Mode::Draining {
                fatal: fatal || was_fatal,
                deadline,
            };
        }
        Mode::Sending | Mode::Paused { .. } => {
            if fatal {
                tracing::error!(%reason, publisher = %publisher.describe(), "publisher failed for good; it will be rebuilt");
            } else {
                tracing::warn!(%reason, publisher = %publisher.describe(), "publish failed; pausing, then sending again from the oldest pending event");
            }
            *mode = Mode::Draining {
                fatal,
                deadline: Instant::now() + publisher.timeout(),
            };
        }
    }
}

fn park(feed: &mut Feed, counters: &mut EventCounters, record: &Sent, reason: &str) {
    // The seq leads to the event and its user in the outbox (and in
    // `user-service dead-letters list`).
    tracing::warn!(
        seq = record.seq,
        trace_id = record.trace_id.as_deref(),
        %reason,
        "event parked as a dead letter"
    );
    counters.dead_lettered(&record.event_type);
    feed.hold(record.seq);
    feed.outcomes().dead.push(Failure {
        seq: record.seq,
        status: None,
        reason: reason.to_owned(),
    });
}
