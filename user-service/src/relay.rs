//! The outbox relay: a background task that publishes pending outbox rows,
//! retrying each until it is acknowledged or rejected for good, in commit
//! (seq) order per user.
//!
//! It reads the oldest pending rows as a batch and splits them by user. Each
//! user's rows go one at a time, in seq order; different users go side by
//! side (up to `concurrency` at once), which is what lets the transport
//! batch (Kafka's linger) and keeps one slow event from idling the link. The
//! next batch is read only when the whole batch is done, so a user's later
//! event can never overtake an earlier one.

use crate::config::RelaySettings;
use crate::outbox::{self, PendingEvent};
use crate::publish::{Outcome, Publisher};
use chrono::Utc;
use cloudevents::Event;
use futures::stream::{self, StreamExt};
use rand::Rng;
use sqlx::SqlitePool;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Rows read per query; the relay goes back for more when they are done.
const BATCH: u32 = 100;

pub struct Relay {
    pub pool: SqlitePool,
    pub publisher: Arc<Publisher>,
    pub settings: RelaySettings,
    /// Notified after each commit that adds an outbox row.
    pub wake: Arc<Notify>,
    pub shutdown: CancellationToken,
}

/// How handling one row ended.
enum Handled {
    /// The receiver acknowledged the row with this seq; the batch marks it
    /// delivered when it ends.
    Delivered(i64),
    /// Parked as a dead letter: go on with the next row.
    Done,
    /// Shutdown was asked for while waiting to retry.
    Stopped,
    /// The outcome could not be recorded; re-read the outbox before going on,
    /// so nothing is skipped. The row may be published twice, which the
    /// receiver's de-duplication on (source, id) absorbs.
    DatabaseError,
}

impl Relay {
    /// Runs until the shutdown token is cancelled. A publish in flight is
    /// finished first; a row waiting for its retry stays pending for the
    /// next start.
    #[tracing::instrument(name = "outbox_relay", skip_all)]
    pub async fn run(self) {
        // If this task ends for any reason, panics included, the whole
        // service stops: serving users whose events go nowhere is worse.
        let _stop_service = self.shutdown.clone().drop_guard();
        tracing::info!("outbox relay started");
        'relay: while !self.shutdown.is_cancelled() {
            let rows = match outbox::pending(&self.pool, BATCH).await {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::error!(error = %e, "failed to read the outbox");
                    self.idle().await;
                    continue;
                }
            };
            record_lag(rows.first());
            if rows.is_empty() {
                self.idle().await;
                continue;
            }
            let outcomes: Vec<(Vec<i64>, Handled)> = stream::iter(by_user(rows))
                .map(|rows| self.handle_user(rows))
                .buffer_unordered(self.settings.concurrency)
                .collect()
                .await;
            // Marked together, one commit for the batch. Should the process
            // die first, these rows go again; the receiver stores them once.
            let delivered: Vec<i64> = outcomes.iter().flat_map(|(d, _)| d.clone()).collect();
            let marked = outbox::mark_delivered(&self.pool, &delivered).await;
            if let Err(e) = &marked {
                tracing::error!(error = %e, "failed to mark events delivered");
            }
            if outcomes.iter().any(|(_, h)| matches!(h, Handled::Stopped)) {
                break 'relay;
            }
            if marked.is_err()
                || outcomes
                    .iter()
                    .any(|(_, h)| matches!(h, Handled::DatabaseError))
            {
                self.idle().await;
            }
        }
        tracing::info!("outbox relay stopped");
    }

    /// Waits for a commit, the poll interval (which picks up rows nobody
    /// woke us for: left from before a restart, or re-driven), or shutdown.
    async fn idle(&self) {
        tokio::select! {
            _ = self.shutdown.cancelled() => {}
            _ = self.wake.notified() => {}
            _ = tokio::time::sleep(self.settings.poll_interval) => {}
        }
    }

    /// One user's rows of the batch, in order: the seqs delivered, and how
    /// it ended. A row that is not done (shutdown, or a database error)
    /// holds back that user's later rows.
    async fn handle_user(&self, rows: Vec<PendingEvent>) -> (Vec<i64>, Handled) {
        let mut delivered = Vec::new();
        for row in rows {
            // Shutdown stops the relay between rows, not only between
            // batches: only the publish in flight is finished.
            if self.shutdown.is_cancelled() {
                return (delivered, Handled::Stopped);
            }
            match self.handle(row).await {
                Handled::Delivered(seq) => delivered.push(seq),
                Handled::Done => {}
                not_done => return (delivered, not_done),
            }
        }
        (delivered, Handled::Done)
    }

    #[tracing::instrument(skip_all, fields(seq = row.seq, event_id = %row.event_id, user_id = %row.user_id))]
    async fn handle(&self, row: PendingEvent) -> Handled {
        let event: Event = match serde_json::from_str(&row.event_json) {
            Ok(e) => e,
            Err(e) => {
                // Only a hand-edited row gets here; it can never be sent.
                let reason = format!("stored event is not valid CloudEvents JSON: {e}");
                return self.park(row.seq, None, &reason).await;
            }
        };
        let mut attempts = row.attempts;
        loop {
            // Not raced against shutdown: an in-flight publish is finished,
            // and it is bounded by the publish timeout.
            let outcome = self.publisher.publish(&event).await;
            attempts = attempts.saturating_add(1);
            match outcome {
                Outcome::Ack => {
                    metrics::counter!("outbox_publish_total", "outcome" => "ack").increment(1);
                    tracing::debug!(attempts, "event delivered");
                    return Handled::Delivered(row.seq);
                }
                Outcome::Nack { status, reason } => {
                    metrics::counter!("outbox_publish_total", "outcome" => "nack").increment(1);
                    return self.park(row.seq, status, &reason).await;
                }
                Outcome::Retry {
                    after,
                    status,
                    reason,
                } => {
                    metrics::counter!("outbox_publish_total", "outcome" => "retry").increment(1);
                    if self
                        .settings
                        .max_attempts
                        .is_some_and(|max| attempts >= max)
                    {
                        let reason = format!("gave up after {attempts} attempts: {reason}");
                        return self.park(row.seq, status, &reason).await;
                    }
                    // This row is the oldest pending one while it waits.
                    record_lag(Some(&row));
                    let delay = backoff(&self.settings, attempts, after);
                    tracing::warn!(attempts, ?status, %reason, retry_in_ms = delay.as_millis() as u64, "publish failed, will retry");
                    if let Err(e) =
                        outbox::record_failure(&self.pool, row.seq, status, &reason).await
                    {
                        tracing::error!(error = %e, "failed to record the failed attempt");
                        return Handled::DatabaseError;
                    }
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return Handled::Stopped,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    async fn park(&self, seq: i64, status: Option<u16>, reason: &str) -> Handled {
        tracing::warn!(?status, %reason, "event parked as a dead letter");
        metrics::counter!("outbox_dead_letters_total").increment(1);
        match outbox::mark_dead(&self.pool, seq, status, reason).await {
            Ok(()) => Handled::Done,
            Err(e) => {
                tracing::error!(error = %e, "failed to park the event");
                Handled::DatabaseError
            }
        }
    }
}

/// Splits rows by user, keeping seq order within each user and ordering the
/// users by their oldest row.
fn by_user(rows: Vec<PendingEvent>) -> Vec<Vec<PendingEvent>> {
    let mut groups: Vec<Vec<PendingEvent>> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for row in rows {
        match index.get(&row.user_id) {
            Some(&i) => groups[i].push(row),
            None => {
                index.insert(row.user_id.clone(), groups.len());
                groups.push(vec![row]);
            }
        }
    }
    groups
}

/// How far behind the relay is: the age of the oldest row it has yet to
/// deliver (0 when caught up). It keeps growing while a row is retried, so
/// a stuck relay can be alerted on.
fn record_lag(oldest_pending: Option<&PendingEvent>) {
    let lag = oldest_pending.map_or(0.0, |row| {
        (Utc::now() - row.created_at).num_milliseconds() as f64 / 1000.0
    });
    metrics::gauge!("outbox_oldest_pending_age_seconds").set(lag);
}

/// Exponential backoff with full jitter (a uniform delay up to the doubling
/// cap), so many services retrying one receiver spread out. A Retry-After
/// from the receiver is honoured, but never beyond `backoff_max`, so a
/// misbehaving receiver cannot stall the relay longer than the operator set.
fn backoff(settings: &RelaySettings, attempts: u32, retry_after: Option<Duration>) -> Duration {
    let exponent = attempts.saturating_sub(1).min(30);
    let cap = settings
        .backoff_initial
        .saturating_mul(1u32 << exponent)
        .min(settings.backoff_max);
    let jittered = Duration::from_millis(rand::rng().random_range(0..=cap.as_millis() as u64));
    match retry_after {
        Some(after) => jittered.max(after.min(settings.backoff_max)),
        None => jittered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> RelaySettings {
        RelaySettings {
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            max_attempts: None,
            poll_interval: Duration::from_millis(500),
            concurrency: 32,
        }
    }

    fn row(seq: i64, user: &str) -> PendingEvent {
        PendingEvent {
            seq,
            event_id: format!("e{seq}"),
            user_id: user.to_owned(),
            event_json: String::new(),
            attempts: 0,
            created_at: Utc::now(),
        }
    }

    #[test]
    fn rows_split_by_user_keep_their_order_within_each_user() {
        let rows = vec![
            row(1, "a"),
            row(2, "b"),
            row(3, "a"),
            row(4, "c"),
            row(5, "b"),
        ];
        let groups: Vec<Vec<i64>> = by_user(rows)
            .into_iter()
            .map(|g| g.into_iter().map(|r| r.seq).collect())
            .collect();
        assert_eq!(groups, vec![vec![1, 3], vec![2, 5], vec![4]]);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_below_it() {
        let s = settings();
        for _ in 0..200 {
            assert!(backoff(&s, 1, None) <= Duration::from_millis(100));
            assert!(backoff(&s, 4, None) <= Duration::from_millis(800));
            assert!(backoff(&s, 1000, None) <= Duration::from_secs(30));
        }
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_maximum() {
        let s = settings();
        assert!(backoff(&s, 1, Some(Duration::from_secs(5))) >= Duration::from_secs(5));
        assert_eq!(
            backoff(&s, 1, Some(Duration::from_secs(3600))),
            Duration::from_secs(30)
        );
    }
}
