//! The outbox's rows as the relay and the operator see them: the pending
//! rows the relay reads, the outcomes it writes back, and the dead letters
//! an operator lists and re-drives. (The rows are written with the user
//! change they describe, and all the SQL is in `store`.)
//!
//! Delivered rows are kept, with their delivery time, as a record of what
//! left the service, for `OUTBOX_RETENTION` (see `retention`). The partial
//! indexes on pending and dead rows keep the relay's and the operator's
//! queries fast however many delivered rows pile up.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A row the relay has yet to deliver.
#[derive(Debug, Clone)]
pub struct PendingEvent {
    pub seq: i64,
    pub event_id: String,
    pub user_id: String,
    /// The CloudEvent's `type`, for the relay's counters.
    pub event_type: String,
    /// The CloudEvent in the JSON event format. Shared, not copied, when
    /// the row is put in a request.
    pub event_json: Arc<str>,
    pub attempts: u32,
}

/// How far behind the relay is: the outbox's depth (pending rows), when
/// the oldest of them was committed and why its last attempt failed, if
/// there is one; and how many events were parked as dead letters.
#[derive(Debug, Clone, PartialEq)]
pub struct Backlog {
    pub pending: i64,
    pub oldest: Option<DateTime<Utc>>,
    pub oldest_error: Option<String>,
    pub dead: i64,
}

/// What came of sent rows, written to the outbox together.
#[derive(Debug, Default)]
pub struct Outcomes {
    /// Acknowledged by the receiver.
    pub delivered: Vec<i64>,
    /// Refused for good: parked as dead letters.
    pub dead: Vec<Failure>,
    /// Failed attempts that will be retried.
    pub failed: Vec<Failure>,
}

/// A row and why it failed.
#[derive(Debug, Clone)]
pub struct Failure {
    pub seq: i64,
    /// The receiver's HTTP status, when there was one.
    pub status: Option<u16>,
    pub reason: String,
}

impl Outcomes {
    pub fn is_empty(&self) -> bool {
        self.delivered.is_empty() && self.dead.is_empty() && self.failed.is_empty()
    }

    /// Takes `other`'s outcomes too (a failed write is retried together
    /// with what came in since).
    pub fn merge(&mut self, other: Outcomes) {
        self.delivered.extend(other.delivered);
        self.dead.extend(other.dead);
        self.failed.extend(other.failed);
    }

    /// The rows whose fate is settled by this write: delivered or dead.
    pub fn settled(&self) -> impl Iterator<Item = i64> + '_ {
        self.delivered
            .iter()
            .copied()
            .chain(self.dead.iter().map(|f| f.seq))
    }
}

/// An event the relay gave up on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetter {
    pub seq: i64,
    pub event_id: String,
    pub event_type: String,
    pub user_id: String,
    pub attempts: u32,
    /// The receiver's HTTP status, when there was one.
    pub status: Option<u16>,
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// Which dead letters to send again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redrive {
    All,
    Seqs(Vec<i64>),
}

/// Why named dead letters were not re-driven.
#[derive(Debug, thiserror::Error)]
pub enum RedriveError {
    #[error("{}; nothing was re-driven", describe_not_dead(.0))]
    NotDead(Vec<NotDead>),
    #[error("database error")]
    Database(#[from] sqlx::Error),
}

/// A seq an operator named that is not a dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotDead {
    pub seq: i64,
    /// The row's status, or `None` when there is no row with that seq.
    pub status: Option<String>,
}

fn describe_not_dead(not_dead: &[NotDead]) -> String {
    not_dead
        .iter()
        .map(|n| match &n.status {
            None => format!("there is no dead letter with seq {}", n.seq),
            Some(status) => format!("seq {} is not a dead letter (it is {status})", n.seq),
        })
        .collect::<Vec<_>>()
        .join("; ")
}
