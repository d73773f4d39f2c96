//! The outbox relay: a background task that publishes pending outbox rows,
//! each until it is acknowledged or refused for good, in commit (seq) order
//! per user.
//!
//! Every transport reads the outbox the same way ([`feed`]): pages of
//! pending rows behind a seq cursor, outcomes written back many to a
//! commit. How rows go out depends on the kind of publisher:
//! - request/response (HTTP, [`http`]): per-user lanes ([`lanes`]) send a
//!   user's events one request at a time and in order, many users per
//!   batch request and many requests at once; a user whose event is
//!   retried holds back only that user;
//! - pipelined with acknowledgements (a broker, [`window`]): rows go to
//!   the publisher in seq order with thousands in flight; the broker keeps
//!   the order they were handed over in.
//!
//! On a database several replicas share (PostgreSQL), each relay sends only
//! the rows of the buckets whose lease it holds ([`leases`]), and starts a
//! new round over the outbox whenever that set changes.

mod feed;
mod http;
mod lanes;
mod leases;
mod window;

use crate::config::RelaySettings;
use crate::outbox::PendingEvent;
use crate::store::{Backend, Scope};
use cloudevents_wire::tracecontext::JsonTraceContext;
use cloudevents_wire::Transport;
use leases::Leases;
use metrics::Counter;
use publishers::Publisher;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::field::Empty;
use tracing::Span;
use user_events::{USER_DELETED, USER_STORED, USER_UPDATED};

/// Rows per outbox read.
const PAGE: u32 = 1000;

pub struct Relay {
    pub store: Arc<dyn Backend>,
    pub publisher: Arc<Publisher>,
    pub settings: RelaySettings,
    /// Notified after each commit that adds an outbox row.
    pub wake: Arc<Notify>,
    pub shutdown: CancellationToken,
    /// The rows this round may send.
    pub scope: Scope,
}

impl Relay {
    /// Runs until the shutdown token is cancelled. Requests in flight are
    /// finished first (bounded by the publish timeout) and their outcomes
    /// written; rows waiting for a retry stay pending for the next start.
    /// An error means the relay cannot go on (a broker publisher that could
    /// not be rebuilt).
    #[tracing::instrument(name = "outbox_relay", skip_all)]
    pub async fn run(self) -> anyhow::Result<()> {
        // If this task ends for any reason, panics included, the whole
        // service stops: serving users whose events go nowhere is worse.
        let _stop_service = self.shutdown.clone().drop_guard();
        tracing::info!("outbox relay started");
        let mut leases = self.store.is_shared().then(|| {
            Leases::new(
                self.store.clone(),
                self.settings.lease_term,
                self.settings.lease_margin,
            )
        });
        if let Some(leases) = &mut leases {
            leases.renew(&[]).await;
        }
        let ended = loop {
            let round = Relay {
                store: self.store.clone(),
                publisher: self.publisher.clone(),
                settings: self.settings.clone(),
                wake: self.wake.clone(),
                shutdown: self.shutdown.child_token(),
                scope: leases.as_mut().map_or(Scope::All, Leases::scope),
            };
            let ended = {
                let sending = round.send();
                tokio::pin!(sending);
                loop {
                    tokio::select! {
                        ended = &mut sending => break ended,
                        _ = until_change(&mut leases) => round.shutdown.cancel(),
                    }
                }
            };
            if ended.is_err() || self.shutdown.is_cancelled() {
                break ended;
            }
            if let Some(leases) = &mut leases {
                leases.round_ended().await;
            }
        };
        if let Some(leases) = leases {
            leases.leave().await;
        }
        match &ended {
            Ok(()) => tracing::info!("outbox relay stopped"),
            Err(e) => tracing::error!(error = format!("{e:#}"), "outbox relay failed"),
        }
        ended
    }

    /// One round: sends the scope's rows until this round's token is
    /// cancelled.
    async fn send(&self) -> anyhow::Result<()> {
        match &*self.publisher {
            Publisher::Http(publisher) => http::run(self, publisher).await,
            Publisher::Pipelined(publisher) => window::run(self, publisher.as_ref()).await,
        }
    }
}

async fn until_change(leases: &mut Option<Leases>) {
    match leases {
        Some(leases) => leases.until_change().await,
        None => std::future::pending().await,
    }
}

/// The relay's counters of events by `type`, for one transport: published
/// (acknowledged), retried (a failed attempt that will be repeated) and
/// dead-lettered. The handles are looked up once per type, not per event:
/// the Kafka relay counts tens of thousands of reports a second.
pub(crate) struct EventCounters {
    transport: &'static str,
    by_type: HashMap<String, TypeCounters>,
}

struct TypeCounters {
    published: Counter,
    retried: Counter,
    dead_lettered: Counter,
}

impl EventCounters {
    /// Counters for `transport`, the user event types already at zero so
    /// that dashboards see them before the first event.
    pub(crate) fn new(transport: Transport) -> Self {
        let mut counters = EventCounters {
            transport: transport.as_str(),
            by_type: HashMap::new(),
        };
        for ty in [USER_STORED, USER_UPDATED, USER_DELETED] {
            counters.of(ty);
        }
        counters
    }

    fn of(&mut self, ty: &str) -> &TypeCounters {
        let transport = self.transport;
        self.by_type.entry(ty.to_owned()).or_insert_with(|| {
            let labels = [("type", ty.to_owned()), ("transport", transport.to_owned())];
            TypeCounters {
                published: metrics::counter!("outbox_events_published_total", &labels),
                retried: metrics::counter!("outbox_events_retried_total", &labels),
                dead_lettered: metrics::counter!("outbox_events_dead_lettered_total", &labels),
            }
        })
    }

    pub(crate) fn published(&mut self, ty: &str) {
        self.of(ty).published.increment(1);
    }

    pub(crate) fn retried(&mut self, ty: &str) {
        self.of(ty).retried.increment(1);
    }

    pub(crate) fn dead_lettered(&mut self, ty: &str) {
        self.of(ty).dead_lettered.increment(1);
    }
}

/// Whether deliveries have been failing, so that their recovery is one log
/// line rather than silence (or a line per event): the first
/// acknowledgement that ends failures this relay saw. Later
/// acknowledgements say nothing until something fails again.
#[derive(Debug, Default)]
pub(crate) struct Recovery {
    /// When the first failure since the last recovery happened, and how
    /// many attempts have failed since.
    failing: Option<(std::time::Instant, u64)>,
}

impl Recovery {
    /// An attempt failed and will be repeated.
    pub(crate) fn failed(&mut self) {
        let (_, attempts) = self
            .failing
            .get_or_insert_with(|| (std::time::Instant::now(), 0));
        *attempts += 1;
    }

    /// Events were acknowledged. `ends_failures` says whether that ends the
    /// failures: on a broker, where a failure stops all sending, any
    /// acknowledgement does; over HTTP, where one user's event may keep
    /// failing while everyone else's flow, only that of an event that had
    /// failed attempts.
    pub(crate) fn delivered(&mut self, ends_failures: bool, transport: Transport) {
        if !ends_failures {
            return;
        }
        if let Some((since, failed_attempts)) = self.failing.take() {
            tracing::info!(
                transport = transport.as_str(),
                failed_attempts,
                failing_for_ms = since.elapsed().as_millis() as u64,
                "delivery recovered"
            );
        }
    }
}

/// HELP text for the relay's metrics.
pub fn describe_metrics() {
    metrics::describe_counter!(
        "outbox_events_published_total",
        "Events the receiver acknowledged, by event type and transport"
    );
    metrics::describe_counter!(
        "outbox_events_retried_total",
        "Failed delivery attempts that will be repeated, by event type and transport"
    );
    metrics::describe_counter!(
        "outbox_events_dead_lettered_total",
        "Events parked as dead letters (refused for good, or out of attempts), by event type and transport"
    );
    metrics::describe_counter!(
        "outbox_batches_split_total",
        "HTTP batches refused as a whole and sent again one event at a time"
    );
    metrics::describe_counter!(
        "publisher_rebuilds_total",
        "Broker publishers (Kafka producers, NATS clients) replaced after a fatal error or a stall, by transport"
    );
    metrics::describe_counter!(
        "publisher_stalls_total",
        "Broker publishers found stuck (records in flight, no report for 30 s while the broker answers) and rebuilt, by transport"
    );
    metrics::describe_counter!(
        "outbox_pruned_total",
        "Delivered outbox rows deleted once older than OUTBOX_RETENTION"
    );
    metrics::describe_gauge!(
        "outbox_leases_held",
        "Buckets of users whose outbox rows this relay sends (PostgreSQL; see RELAY_LEASE_MS)"
    );
    metrics::describe_gauge!(
        "outbox_pending_events",
        "Outbox rows not delivered yet (the outbox depth)"
    );
    metrics::describe_gauge!(
        "outbox_oldest_pending_age_seconds",
        metrics::Unit::Seconds,
        "Age of the oldest outbox row not delivered yet; 0 when there is none"
    );
}

/// A span for publishing one row, in the trace its event carries, made only
/// while spans are exported: per event it is work no log line needs. The
/// span lasts as long as it is kept; dropping it ends it.
fn publish_span(row: &PendingEvent, transport: Transport) -> Option<Span> {
    if !service_kit::telemetry::traces_exported() {
        return None;
    }
    let span = tracing::info_span!(
        "publish",
        event_id = %row.event_id,
        event_type = %row.event_type,
        transport = transport.as_str(),
        outcome = Empty,
    );
    cloudevents_wire::tracecontext::set_parent(
        &span,
        JsonTraceContext::of(&row.event_json).context(),
    );
    Some(span)
}

/// The trace id of a row's event, for the log lines about it.
fn trace_id(row: &PendingEvent) -> Option<String> {
    JsonTraceContext::of(&row.event_json)
        .trace_id()
        .map(str::to_owned)
}

/// The delay before trying again after `attempts` failed attempts, by the
/// rules both services retry by (`publishers::Backoff`).
fn backoff(settings: &RelaySettings, attempts: u32, retry_after: Option<Duration>) -> Duration {
    publishers::Backoff {
        initial: settings.backoff_initial,
        max: settings.backoff_max,
        retry_after_max: settings.retry_after_max,
    }
    .delay(attempts, retry_after)
}

/// Sleeps until `at`; with no deadline, never wakes (a `select!` branch
/// with nothing due).
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
