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
//! No report at all is the third case: records in flight, and not one
//! report for `RelaySettings::stall_after` while the broker answers every
//! probe. The relay treats the producer as stuck, as if it had failed for
//! good: it forgets the records in flight, rebuilds it (dropping the old
//! one purges what it held) and reads the outbox again from its oldest
//! pending row. A copy the old producer did get to the broker is stored
//! once by the receiver. While the broker does not answer, nothing is
//! rebuilt: librdkafka's own retries carry the records through an outage.
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
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use publishers::{Pending, Pipelined, Report};
use std::collections::HashSet;
use std::time::Duration;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::Span;

/// Events in flight (handed to the publisher, no report yet) plus rows
/// awaiting their write, at most. Enough to keep batches full on a LAN
/// link; small enough to bound memory and what is re-sent after a crash.
const WINDOW: usize = 5000;

/// Probes of the broker per `stall_after` while records are in flight and
/// no report has come.
const PROBES_PER_STALL: u32 = 6;

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

/// Tells a publisher that holds records without a word about them, while
/// its broker answers, from a broker that is away (where waiting is right).
#[derive(Debug)]
struct StallWatch {
    stall_after: Duration,
    /// When to ask the broker next, while records are in flight.
    next_probe: Instant,
    /// Since when every probe has answered, in this stretch without a
    /// report.
    answering_since: Option<Instant>,
}

impl StallWatch {
    fn new(stall_after: Duration, now: Instant) -> Self {
        StallWatch {
            stall_after,
            next_probe: now + stall_after / PROBES_PER_STALL,
            answering_since: None,
        }
    }

    /// A report came, or records went in flight after none were: a new
    /// stretch begins.
    fn heard(&mut self, now: Instant) {
        *self = StallWatch::new(self.stall_after, now);
    }

    /// The broker's answer to a probe; `true` when the publisher is stuck.
    fn answered(&mut self, answers: bool, now: Instant) -> bool {
        self.next_probe = now + self.stall_after / PROBES_PER_STALL;
        if !answers {
            self.answering_since = None;
            return false;
        }
        let since = *self.answering_since.get_or_insert(now);
        now.duration_since(since) >= self.stall_after
    }
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
    let mut watch = StallWatch::new(settings.stall_after, Instant::now());
    let mut probe: Option<BoxFuture<'_, Result<(), String>>> = None;
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
                    tracing::warn!(publisher = %publisher.describe(), "publisher rebuilt; re-reading the outbox from its oldest pending event");
                }
                recoveries = recoveries.saturating_add(1);
                mode = Mode::Paused {
                    until: now + backoff(settings, recoveries, None),
                };
                feed.rescan();
            }
        }
        let watching = mode == Mode::Sending && stop_by.is_none() && !in_flight.is_empty();
        if watching && probe.is_none() && now >= watch.next_probe {
            probe = Some(publisher.check_ready());
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
            (watching && probe.is_none()).then_some(watch.next_probe),
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
                watch.heard(now);
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
            answer = answer_of(&mut probe), if probe.is_some() => {
                probe = None;
                let stuck = watch.answered(answer.is_ok(), Instant::now());
                // Still sending, and not stopping: a stop or a failure
                // since the probe began has its own way with what is in
                // flight.
                if stuck && mode == Mode::Sending && stop_by.is_none() && !in_flight.is_empty() {
                    tracing::error!(
                        publisher = %publisher.describe(),
                        in_flight = in_flight.len(),
                        "no delivery report for {} s though the broker answers: the publisher is stuck; it will be rebuilt",
                        settings.stall_after.as_secs(),
                    );
                    metrics::counter!("publisher_stalls_total", "transport" => publisher.transport().as_str()).increment(1);
                    mode = Mode::Draining {
                        fatal: true,
                        deadline: Instant::now(),
                    };
                }
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
                                    if in_flight.is_empty() {
                                        watch.heard(now);
                                    }
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

/// The answer of the probe running; never, with none running.
async fn answer_of(probe: &mut Option<BoxFuture<'_, Result<(), String>>>) -> Result<(), String> {
    match probe {
        Some(probe) => probe.await,
        None => std::future::pending().await,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RelaySettings;
    use crate::domain::{Password, RawPassword, UserName};
    use crate::store::{Scope, Store};
    use cloudevents_wire::Transport;
    use futures::FutureExt;
    use publishers::Publisher;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use std::sync::Arc;
    use tokio::sync::Notify;
    use tokio_util::sync::CancellationToken;

    /// A producer that, until it is rebuilt, takes every record and never
    /// reports on any, as a stuck librdkafka does; once rebuilt it
    /// delivers everything at once. Whether its broker answers is the
    /// test's to say.
    #[derive(Clone, Default)]
    struct Stuck {
        rebuilds: Arc<AtomicU32>,
        broker_answers: Arc<AtomicBool>,
    }

    impl Pipelined for Stuck {
        fn transport(&self) -> Transport {
            Transport::Kafka
        }

        fn enqueue(&self, _event: Event) -> BoxFuture<'_, Result<Pending, Report>> {
            let pending: Pending = if self.rebuilds.load(Ordering::SeqCst) == 0 {
                std::future::pending().boxed()
            } else {
                futures::future::ready(Report::Delivered).boxed()
            };
            futures::future::ready(Ok(pending)).boxed()
        }

        fn timeout(&self) -> Duration {
            Duration::from_secs(5)
        }

        fn rebuild(&self) -> anyhow::Result<()> {
            self.rebuilds.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }

        fn check_ready(&self) -> BoxFuture<'_, Result<(), String>> {
            let answers = self.broker_answers.load(Ordering::SeqCst);
            futures::future::ready(if answers {
                Ok(())
            } else {
                Err("broker away".to_owned())
            })
            .boxed()
        }

        fn flush(&self) -> BoxFuture<'_, ()> {
            futures::future::ready(()).boxed()
        }

        fn describe(&self) -> String {
            "stuck".to_owned()
        }
    }

    /// Short, so the test runs in seconds.
    const STALL: Duration = Duration::from_millis(1500);

    async fn pending(store: &Store) -> i64 {
        store.backend().backlog().await.unwrap().pending
    }

    /// Waits until nothing is pending, at most `limit`.
    async fn drained_within(store: &Store, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if pending(store).await == 0 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        false
    }

    #[tokio::test]
    async fn a_publisher_that_never_reports_while_its_broker_answers_is_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("users.db").display());
        let backend = crate::store::open(&url).await.unwrap();
        let wake = Arc::new(Notify::new());
        let store = Store::new(backend.clone(), "/test".to_owned(), wake.clone());
        // One user's three events.
        let raw: RawPassword = serde_json::from_str("\"12345\"").unwrap();
        let mut memory = vec![argon2::Block::default(); Password::memory_blocks()];
        let hash = Password::parse(raw)
            .unwrap()
            .hash_with(&mut memory)
            .unwrap();
        let user = store
            .create_user(UserName::parse("Ozzy").unwrap(), hash)
            .await
            .unwrap();
        for name in ["Ozzy O.", "Ozzy Osbourne"] {
            store
                .update_user(user.id, UserName::parse(name).unwrap(), None)
                .await
                .unwrap();
        }
        assert_eq!(pending(&store).await, 3);

        let stuck = Stuck::default();
        let shutdown = CancellationToken::new();
        let relay = Relay {
            store: backend,
            publisher: Arc::new(Publisher::Pipelined(Box::new(stuck.clone()))),
            settings: RelaySettings {
                backoff_initial: Duration::from_millis(100),
                backoff_max: Duration::from_secs(1),
                retry_after_max: Duration::from_secs(1),
                max_attempts: None,
                poll_interval: Duration::from_millis(500),
                concurrency: 4,
                batch_max: 100,
                lease_term: Duration::from_secs(30),
                lease_margin: Duration::from_secs(6),
                lag_max: Duration::from_secs(60),
                stall_after: STALL,
            },
            wake,
            shutdown: shutdown.clone(),
            scope: Scope::All,
        };
        let running = tokio::spawn(relay.run());

        // The broker is away: the records wait in the producer, which is
        // what carries them through an outage. Nothing is rebuilt.
        assert!(!drained_within(&store, STALL * 4).await);
        assert_eq!(stuck.rebuilds.load(Ordering::SeqCst), 0);

        // The broker answers, yet no report comes: the producer is stuck,
        // is rebuilt once, and every event goes again and is delivered.
        stuck.broker_answers.store(true, Ordering::SeqCst);
        assert!(
            drained_within(&store, STALL * 3).await,
            "{} events still pending",
            pending(&store).await
        );
        assert_eq!(stuck.rebuilds.load(Ordering::SeqCst), 1);

        shutdown.cancel();
        running.await.unwrap().unwrap();
    }
}
