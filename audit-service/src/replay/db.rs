//! The replays' tables, on SQLite or PostgreSQL (one SQL text for both but
//! for the clock): a replay's spec, state, position and counts, its lease,
//! and its dead letters.
//!
//! The lease is what makes one replica run a given replay: a replica takes
//! a replay whose lease is free or expired, and every write of its progress
//! renews the lease and succeeds only while the replica still holds it and
//! the replay still runs. A replica that stops hearing "yes" stops sending:
//! the replay was cancelled, or another replica took it after this one was
//! silent for a whole lease term. Times are the database's clock, which
//! every replica shares.

use super::spec::ReplayRequest;
use crate::store::{Readers, StoreError};
use chrono::{SecondsFormat, Utc};
use serde::Serialize;
use std::time::Duration;
use utoipa::ToSchema;

/// Runs the same sqlx expression on whichever pool `readers` holds.
macro_rules! on_pool {
    ($readers:expr, |$pool:ident| $body:expr) => {
        match $readers {
            Readers::Sqlite($pool) => $body,
            Readers::Postgres($pool) => $body,
        }
    };
}

/// Where a replay is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReplayState {
    /// Waiting for a replica to take it.
    Pending,
    Running,
    /// Every selected event was sent (or dead-lettered, or skipped).
    Done,
    Cancelled,
    /// It cannot go on (a target that cannot be set up); `error` says why.
    Failed,
}

impl ReplayState {
    pub fn as_str(self) -> &'static str {
        match self {
            ReplayState::Pending => "pending",
            ReplayState::Running => "running",
            ReplayState::Done => "done",
            ReplayState::Cancelled => "cancelled",
            ReplayState::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Result<Self, StoreError> {
        Ok(match text {
            "pending" => ReplayState::Pending,
            "running" => ReplayState::Running,
            "done" => ReplayState::Done,
            "cancelled" => ReplayState::Cancelled,
            "failed" => ReplayState::Failed,
            other => {
                return Err(StoreError::Database(sqlx::Error::Decode(
                    format!("unknown replay state {other:?}").into(),
                )))
            }
        })
    }
}

/// One replay as stored.
#[derive(Debug, Clone)]
pub struct ReplayRow {
    pub id: String,
    pub created_at: String,
    pub request: ReplayRequest,
    pub state: ReplayState,
    pub from_seq: i64,
    pub to_seq: i64,
    /// The last seq done with: every selected event up to it was sent
    /// (acknowledged), dead-lettered or skipped.
    pub position: i64,
    pub counts: Counts,
    pub error: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// The replica holding its lease (`HOSTNAME/pid/tag`): the one that
    /// runs it. None when no replica has taken it or it has ended; a
    /// replica that died still holds it until its lease runs out.
    pub holder: Option<String>,
}

/// What a replay has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Events the target acknowledged (counted, in a dry run).
    pub sent: i64,
    /// Failed attempts, each retried.
    pub failed: i64,
    /// Events the target refused for good.
    pub dead_lettered: i64,
    /// Erased events left out (`"erased": "skip"`).
    pub skipped: i64,
}

type Columns = (
    String,
    String,
    String,
    String,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

const COLUMNS: &str = "id, created_at, spec, state, from_seq, to_seq, position, sent, failed, \
                       dead_lettered, skipped, error, started_at, finished_at, lease_owner";

fn row(columns: Columns) -> Result<ReplayRow, StoreError> {
    let (id, created_at, spec, state, from_seq, to_seq, position) = (
        columns.0, columns.1, columns.2, columns.3, columns.4, columns.5, columns.6,
    );
    Ok(ReplayRow {
        id,
        created_at,
        request: serde_json::from_str(&spec)?,
        state: ReplayState::parse(&state)?,
        from_seq,
        to_seq,
        position,
        counts: Counts {
            sent: columns.7,
            failed: columns.8,
            dead_lettered: columns.9,
            skipped: columns.10,
        },
        error: columns.11,
        started_at: columns.12,
        finished_at: columns.13,
        holder: columns.14,
    })
}

/// Now, in milliseconds since the epoch, by the database's clock.
fn now_ms(readers: &Readers) -> &'static str {
    match readers {
        Readers::Sqlite(_) => "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)",
        Readers::Postgres(_) => "CAST(extract(epoch FROM clock_timestamp()) * 1000 AS BIGINT)",
    }
}

fn timestamp() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Stores a new replay, pending.
pub async fn insert(
    readers: &Readers,
    id: &str,
    request: &ReplayRequest,
    from_seq: i64,
    to_seq: i64,
) -> Result<ReplayRow, StoreError> {
    const SQL: &str =
        "INSERT INTO replays (id, created_at, spec, state, from_seq, to_seq, position) \
                       VALUES ($1, $2, $3, 'pending', $4, $5, $6)";
    let spec = serde_json::to_string(request)?;
    let created_at = timestamp();
    on_pool!(readers, |pool| {
        sqlx::query(SQL)
            .bind(id)
            .bind(&created_at)
            .bind(&spec)
            .bind(from_seq)
            .bind(to_seq)
            .bind(from_seq - 1)
            .execute(pool)
            .await?;
    });
    get(readers, id)
        .await?
        .ok_or(StoreError::Database(sqlx::Error::RowNotFound))
}

pub async fn get(readers: &Readers, id: &str) -> Result<Option<ReplayRow>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM replays WHERE id = $1");
    let columns: Option<Columns> = on_pool!(readers, |pool| sqlx::query_as(&sql)
        .bind(id)
        .fetch_optional(pool)
        .await?);
    columns.map(row).transpose()
}

/// Every replay, newest first, at most `limit`.
pub async fn list(readers: &Readers, limit: i64) -> Result<Vec<ReplayRow>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM replays ORDER BY created_at DESC, id LIMIT $1");
    let rows: Vec<Columns> = on_pool!(readers, |pool| sqlx::query_as(&sql)
        .bind(limit)
        .fetch_all(pool)
        .await?);
    rows.into_iter().map(row).collect()
}

/// Cancels a replay that has not ended; false when there is none such.
pub async fn cancel(readers: &Readers, id: &str) -> Result<bool, StoreError> {
    const SQL: &str = "UPDATE replays SET state = 'cancelled', finished_at = $2 \
                       WHERE id = $1 AND state IN ('pending', 'running')";
    let done = on_pool!(readers, |pool| sqlx::query(SQL)
        .bind(id)
        .bind(timestamp())
        .execute(pool)
        .await?
        .rows_affected());
    Ok(done == 1)
}

/// The replays that should run and that no replica holds.
pub async fn unclaimed(readers: &Readers) -> Result<Vec<String>, StoreError> {
    let sql = format!(
        "SELECT id FROM replays WHERE state IN ('pending', 'running') AND lease_until < {} \
         ORDER BY created_at",
        now_ms(readers)
    );
    Ok(on_pool!(readers, |pool| sqlx::query_scalar(&sql)
        .fetch_all(pool)
        .await?))
}

/// Takes the lease of replay `id` for `owner`, for `term`, if it is free or
/// expired (or already `owner`'s) and the replay should run; true when
/// taken. The replay is then running.
pub async fn claim(
    readers: &Readers,
    id: &str,
    owner: &str,
    term: Duration,
) -> Result<bool, StoreError> {
    let now = now_ms(readers);
    let sql = format!(
        "UPDATE replays SET lease_owner = $2, lease_until = {now} + $3, state = 'running', \
         started_at = coalesce(started_at, $4) \
         WHERE id = $1 AND state IN ('pending', 'running') \
         AND (lease_until < {now} OR lease_owner = $2)"
    );
    let term = i64::try_from(term.as_millis()).unwrap_or(i64::MAX);
    let done = on_pool!(readers, |pool| sqlx::query(&sql)
        .bind(id)
        .bind(owner)
        .bind(term)
        .bind(timestamp())
        .execute(pool)
        .await?
        .rows_affected());
    Ok(done == 1)
}

/// Records progress and renews the lease; false when this replica may not
/// go on (the replay was cancelled, or its lease was lost).
pub async fn progress(
    readers: &Readers,
    id: &str,
    owner: &str,
    term: Duration,
    position: i64,
    counts: Counts,
) -> Result<bool, StoreError> {
    let sql = format!(
        "UPDATE replays SET position = $3, sent = $4, failed = $5, dead_lettered = $6, \
         skipped = $7, lease_until = {} + $8 \
         WHERE id = $1 AND lease_owner = $2 AND state = 'running'",
        now_ms(readers)
    );
    let term = i64::try_from(term.as_millis()).unwrap_or(i64::MAX);
    let done = on_pool!(readers, |pool| sqlx::query(&sql)
        .bind(id)
        .bind(owner)
        .bind(position)
        .bind(counts.sent)
        .bind(counts.failed)
        .bind(counts.dead_lettered)
        .bind(counts.skipped)
        .bind(term)
        .execute(pool)
        .await?
        .rows_affected());
    Ok(done == 1)
}

/// Ends a running replay held by `owner` (done, or failed with `error`) and
/// frees its lease.
pub async fn finish(
    readers: &Readers,
    id: &str,
    owner: &str,
    state: ReplayState,
    error: Option<&str>,
) -> Result<(), StoreError> {
    const SQL: &str = "UPDATE replays SET state = $3, error = $4, finished_at = $5, \
                       lease_owner = NULL, lease_until = 0 \
                       WHERE id = $1 AND lease_owner = $2 AND state = 'running'";
    on_pool!(readers, |pool| {
        sqlx::query(SQL)
            .bind(id)
            .bind(owner)
            .bind(state.as_str())
            .bind(error)
            .bind(timestamp())
            .execute(pool)
            .await?;
    });
    Ok(())
}

/// Gives the lease back at shutdown, so another replica (or this one,
/// restarted) takes the replay at once.
pub async fn release(readers: &Readers, id: &str, owner: &str) -> Result<(), StoreError> {
    const SQL: &str =
        "UPDATE replays SET lease_owner = NULL, lease_until = 0 WHERE id = $1 AND lease_owner = $2";
    on_pool!(readers, |pool| {
        sqlx::query(SQL).bind(id).bind(owner).execute(pool).await?;
    });
    Ok(())
}

/// Records an event the target refused for good.
pub async fn dead_letter(
    readers: &Readers,
    id: &str,
    seq: i64,
    event_id: &str,
    status: Option<u16>,
    reason: &str,
) -> Result<(), StoreError> {
    const SQL: &str =
        "INSERT INTO replay_dead_letters (replay_id, seq, event_id, status, reason, at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING";
    on_pool!(readers, |pool| {
        sqlx::query(SQL)
            .bind(id)
            .bind(seq)
            .bind(event_id)
            .bind(status.map(i32::from))
            .bind(reason)
            .bind(timestamp())
            .execute(pool)
            .await?;
    });
    Ok(())
}

/// The first and last seq of the events received in `[from, to)`, or
/// `None` when there are none. A scan of the table, once per replay made
/// with a time range.
pub async fn seqs_received_between(
    readers: &Readers,
    from: Option<chrono::DateTime<Utc>>,
    to: Option<chrono::DateTime<Utc>>,
) -> Result<Option<(i64, i64)>, StoreError> {
    // The writer stamps received_at in this form (UTC, microseconds, `Z`),
    // so on SQLite the text compares as the instant does.
    let format = |t: chrono::DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Micros, true);
    let from = from.map_or_else(|| "0000-01-01T00:00:00.000000Z".to_owned(), format);
    let to = to.map_or_else(|| "9999-12-31T23:59:59.999999Z".to_owned(), format);
    let sql = match readers {
        Readers::Sqlite(_) => {
            "SELECT min(seq), max(seq) FROM events WHERE received_at >= $1 AND received_at < $2"
        }
        Readers::Postgres(_) => {
            "SELECT min(seq), max(seq) FROM events \
             WHERE received_at >= $1::timestamptz AND received_at < $2::timestamptz"
        }
    };
    let (first, last): (Option<i64>, Option<i64>) = on_pool!(readers, |pool| sqlx::query_as(sql)
        .bind(&from)
        .bind(&to)
        .fetch_one(pool)
        .await?);
    Ok(first.zip(last))
}
