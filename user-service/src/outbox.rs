//! The outbox's read side: what the relay takes, how it records outcomes,
//! and the dead letters an operator lists and re-drives.
//!
//! Delivered rows are kept, with their delivery time, as a record of what
//! left the service; nothing prunes them yet. The partial indexes on
//! pending and dead rows keep the relay's and the operator's queries fast
//! however many delivered rows pile up.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Row, SqlitePool};

/// A row the relay has yet to deliver.
#[derive(Debug, Clone)]
pub struct PendingEvent {
    pub seq: i64,
    pub event_id: String,
    pub user_id: String,
    /// The CloudEvent in the JSON event format.
    pub event_json: String,
    pub attempts: u32,
    pub created_at: DateTime<Utc>,
}

/// The oldest pending rows, in the order they were committed.
pub async fn pending(pool: &SqlitePool, limit: u32) -> Result<Vec<PendingEvent>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT seq, event_id, user_id, event_json, attempts, created_at FROM outbox \
         WHERE status = 'pending' ORDER BY seq LIMIT ?1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(PendingEvent {
                seq: r.try_get("seq")?,
                event_id: r.try_get("event_id")?,
                user_id: r.try_get("user_id")?,
                event_json: r.try_get("event_json")?,
                attempts: r.try_get("attempts")?,
                created_at: r.try_get("created_at")?,
            })
        })
        .collect()
}

/// Marks rows acknowledged by the receiver.
pub async fn mark_delivered(pool: &SqlitePool, seqs: &[i64]) -> Result<(), sqlx::Error> {
    // One transaction for the lot: with synchronous=FULL every commit is an
    // fsync, which would otherwise cap the relay at one event per fsync.
    let mut tx = pool.begin().await?;
    let now = Utc::now();
    for seq in seqs {
        sqlx::query(
            "UPDATE outbox SET status = 'delivered', attempts = attempts + 1, delivered_at = ?2 \
             WHERE seq = ?1",
        )
        .bind(seq)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

/// Records a failed attempt that will be retried.
pub async fn record_failure(
    pool: &SqlitePool,
    seq: i64,
    status: Option<u16>,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE outbox SET attempts = attempts + 1, last_status = ?2, last_error = ?3 \
         WHERE seq = ?1",
    )
    .bind(seq)
    .bind(status)
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}

/// Parks the row as a dead letter; the relay moves on to the next one.
pub async fn mark_dead(
    pool: &SqlitePool,
    seq: i64,
    status: Option<u16>,
    reason: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE outbox SET status = 'dead', attempts = attempts + 1, last_status = ?2, \
         last_error = ?3 WHERE seq = ?1",
    )
    .bind(seq)
    .bind(status)
    .bind(reason)
    .execute(pool)
    .await?;
    Ok(())
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

/// Puts dead letters back to pending with a fresh attempt count; the
/// running relay's poll picks them up. Returns how many rows changed.
/// Rows that are not dead are left alone, so re-driving twice is harmless.
pub async fn redrive(pool: &SqlitePool, which: &Redrive) -> Result<u64, sqlx::Error> {
    const SET_PENDING: &str = "UPDATE outbox SET status = 'pending', attempts = 0 \
                               WHERE status = 'dead'";
    match which {
        Redrive::All => Ok(sqlx::query(SET_PENDING)
            .execute(pool)
            .await?
            .rows_affected()),
        Redrive::Seqs(seqs) => {
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            let mut changed = 0;
            for seq in seqs {
                changed += sqlx::query(&format!("{SET_PENDING} AND seq = ?1"))
                    .bind(seq)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            }
            tx.commit().await?;
            Ok(changed)
        }
    }
}
