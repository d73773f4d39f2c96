//! The outbox queries of the relay and the operator: the pending rows the
//! relay reads, the outcomes it writes back, and the dead letters an
//! operator lists and re-drives. (The rows are written with the user change
//! they describe, in `store`.)
//!
//! Delivered rows are kept, with their delivery time, as a record of what
//! left the service; nothing prunes them yet. The partial indexes on
//! pending and dead rows keep the relay's and the operator's queries fast
//! however many delivered rows pile up.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Row, SqlitePool};
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

/// Pending rows after `after` in seq (= commit) order, leaving out the
/// users in `held_back`: the relay holds their rows in order itself and
/// reads them with [`pending_for_user`].
///
/// Seq order is commit order because SQLite has one writer at a time. A
/// database with concurrent writers (PostgreSQL) can commit a lower seq
/// after a higher one; there, the relay's periodic re-scan from the start
/// is what picks such a row up, and replicas will claim rows with
/// `FOR UPDATE SKIP LOCKED` behind this same function.
pub async fn pending_after(
    pool: &SqlitePool,
    after: i64,
    limit: u32,
    held_back: &[&str],
) -> Result<Vec<PendingEvent>, sqlx::Error> {
    let held_back = serde_json::to_string(held_back).unwrap_or_else(|_| "[]".to_owned());
    let rows = sqlx::query(
        "SELECT seq, event_id, user_id, event_type, event_json, attempts FROM outbox \
         WHERE status = 'pending' AND seq > ?1 \
         AND user_id NOT IN (SELECT value FROM json_each(?3)) \
         ORDER BY seq LIMIT ?2",
    )
    .bind(after)
    .bind(limit)
    .bind(held_back)
    .fetch_all(pool)
    .await?;
    rows.iter().map(pending_from_row).collect()
}

/// One user's oldest pending rows after `after`, in seq order.
pub async fn pending_for_user(
    pool: &SqlitePool,
    user_id: &str,
    after: i64,
    limit: u32,
) -> Result<Vec<PendingEvent>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT seq, event_id, user_id, event_type, event_json, attempts FROM outbox \
         WHERE status = 'pending' AND user_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
    )
    .bind(user_id)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter().map(pending_from_row).collect()
}

/// How far behind the relay is: the outbox's depth (pending rows) and
/// when the oldest of them was committed, if there is one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backlog {
    pub pending: i64,
    pub oldest: Option<DateTime<Utc>>,
}

/// The backlog, read from the pending rows' partial index.
pub async fn backlog(pool: &SqlitePool) -> Result<Backlog, sqlx::Error> {
    let (pending, oldest) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM outbox WHERE status = 'pending'), \
         (SELECT created_at FROM outbox WHERE status = 'pending' ORDER BY seq LIMIT 1)",
    )
    .fetch_one(pool)
    .await?;
    Ok(Backlog { pending, oldest })
}

fn pending_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<PendingEvent, sqlx::Error> {
    Ok(PendingEvent {
        seq: r.try_get("seq")?,
        event_id: r.try_get("event_id")?,
        user_id: r.try_get("user_id")?,
        event_type: r.try_get("event_type")?,
        event_json: Arc::from(r.try_get::<&str, _>("event_json")?),
        attempts: r.try_get("attempts")?,
    })
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

/// Writes a batch of outcomes in one transaction. With synchronous=FULL
/// every commit is an fsync, so one commit for many rows is what lets the
/// relay go faster than one event per fsync.
pub async fn record(pool: &SqlitePool, outcomes: &Outcomes) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    if !outcomes.delivered.is_empty() {
        // One statement for the lot: the seqs travel as a JSON array.
        let seqs = serde_json::to_string(&outcomes.delivered).unwrap_or_else(|_| "[]".to_owned());
        sqlx::query(
            "UPDATE outbox SET status = 'delivered', attempts = attempts + 1, delivered_at = ?2 \
             WHERE seq IN (SELECT value FROM json_each(?1)) AND status = 'pending'",
        )
        .bind(seqs)
        .bind(Utc::now())
        .execute(&mut *tx)
        .await?;
    }
    for dead in &outcomes.dead {
        sqlx::query(
            "UPDATE outbox SET status = 'dead', attempts = attempts + 1, last_status = ?2, \
             last_error = ?3 WHERE seq = ?1 AND status = 'pending'",
        )
        .bind(dead.seq)
        .bind(dead.status)
        .bind(&dead.reason)
        .execute(&mut *tx)
        .await?;
    }
    for failed in &outcomes.failed {
        sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, last_status = ?2, last_error = ?3 \
             WHERE seq = ?1 AND status = 'pending'",
        )
        .bind(failed.seq)
        .bind(failed.status)
        .bind(&failed.reason)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
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

pub async fn dead_letters(pool: &SqlitePool) -> Result<Vec<DeadLetter>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT seq, event_id, event_type, user_id, attempts, last_status, last_error, \
         created_at FROM outbox WHERE status = 'dead' ORDER BY seq",
    )
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(DeadLetter {
                seq: r.try_get("seq")?,
                event_id: r.try_get("event_id")?,
                event_type: r.try_get("event_type")?,
                user_id: r.try_get("user_id")?,
                attempts: r.try_get("attempts")?,
                status: r.try_get("last_status")?,
                reason: r.try_get("last_error")?,
                created_at: r.try_get("created_at")?,
            })
        })
        .collect()
}

/// Which dead letters to send again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redrive {
    All,
    Seqs(Vec<i64>),
}

/// Sets dead letters back to pending with a fresh attempt count, all of them
/// or the ones named; the running relay's poll picks them up. Returns how many rows changed.
///
/// Named seqs are set back together or not at all: when one of them is not
/// a dead letter (no such row, or it is pending or delivered), nothing
/// changes and the error says which.
pub async fn redrive(pool: &SqlitePool, which: &Redrive) -> Result<u64, RedriveError> {
    const SET_PENDING: &str = "UPDATE outbox SET status = 'pending', attempts = 0 \
                               WHERE status = 'dead'";
    match which {
        Redrive::All => Ok(sqlx::query(SET_PENDING)
            .execute(pool)
            .await?
            .rows_affected()),
        Redrive::Seqs(seqs) => {
            let mut seqs = seqs.clone();
            seqs.sort_unstable();
            seqs.dedup();
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            let mut not_dead = Vec::new();
            for &seq in &seqs {
                let changed = sqlx::query(&format!("{SET_PENDING} AND seq = ?1"))
                    .bind(seq)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if changed == 0 {
                    let status: Option<String> =
                        sqlx::query_scalar("SELECT status FROM outbox WHERE seq = ?1")
                            .bind(seq)
                            .fetch_optional(&mut *tx)
                            .await?;
                    not_dead.push(NotDead { seq, status });
                }
            }
            if !not_dead.is_empty() {
                // Dropping the transaction rolls it back.
                return Err(RedriveError::NotDead(not_dead));
            }
            tx.commit().await?;
            Ok(seqs.len() as u64)
        }
    }
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
