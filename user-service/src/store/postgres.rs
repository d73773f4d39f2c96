//! Users and the outbox on PostgreSQL, shared by several user-service
//! replicas.
//!
//! Two things differ from SQLite, where one transaction commits at a time:
//!
//! - **Seq order is commit order only under a lock.** An identity value is
//!   handed out when the row is inserted, not when its transaction commits,
//!   so two concurrent changes can commit seq 11 before seq 10. A relay that
//!   has read past 11 would then never look at 10 again until its next
//!   rescan, and if 10 and a later 12 belong to the same user, it would send
//!   12 first. So each change takes the outbox's advisory lock right before
//!   inserting its event and keeps it until it commits: seqs are handed out
//!   in commit order. What it costs: the insert of the event and the commit
//!   (one WAL flush) of user changes take turns across all replicas, as
//!   every SQLite commit does anyway; the hashing and the user row do not.
//! - **Several relays.** Each user's rows fall in one of 64 buckets (a
//!   generated column), and a relay sends only the rows of buckets whose
//!   lease it holds (`relay::leases` decides; the SQL is here).

use super::{sql, Backend, DeletedEvent, LeaseState, NewEvent, Scope, StoreError, User};
use crate::outbox::{Backlog, DeadLetter, NotDead, Outcomes, PendingEvent, Redrive, RedriveError};
use anyhow::Context;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Postgres, Row, Transaction};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// The advisory lock that orders outbox inserts (an arbitrary constant,
/// distinct from audit-service's, as both may share one database).
const OUTBOX_SEQ_LOCK: i64 = 0x0075_7365_7273_0001;

pub struct PgBackend {
    pool: PgPool,
}

impl PgBackend {
    pub async fn open(url: &str, connections: u32) -> anyhow::Result<Self> {
        let pool = service_kit::db::connect_postgres(url, connections, "user-service")
            .await
            .with_context(|| {
                format!(
                    "Failed to connect to the database {}",
                    settings::redact::url(url)
                )
            })?;
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .context("Failed to migrate the database")?;
        Ok(PgBackend { pool })
    }
}

/// Takes the outbox's lock (until commit) and inserts the event: the last
/// statements of every change.
async fn insert_event(
    tx: &mut Transaction<'static, Postgres>,
    event: &NewEvent,
) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(OUTBOX_SEQ_LOCK)
        .execute(&mut **tx)
        .await?;
    sqlx::query(sql::INSERT_EVENT)
        .bind(event.event_id)
        .bind(event.user_id)
        .bind(event.event_type)
        .bind(&event.json)
        .bind(event.created_at)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// A user id as the relay and the operator see it; ids held back or
/// re-read come back as text and are parsed here.
fn parse_ids(ids: &[&str]) -> Vec<Uuid> {
    // Every id came out of this database, so none fails to parse; one
    // that did would match no row, which is what leaving it out does.
    ids.iter()
        .filter_map(|id| Uuid::parse_str(id).ok())
        .collect()
}

#[async_trait]
impl Backend for PgBackend {
    async fn create_user(
        &self,
        user: &User,
        password_hash: &str,
        event: NewEvent,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(sql::INSERT_USER)
            .bind(user.id)
            .bind(&user.name)
            .bind(password_hash)
            .bind(user.created_at)
            .execute(&mut *tx)
            .await?;
        insert_event(&mut tx, &event).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_user(&self, id: Uuid) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(sql::GET_USER)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| user_from_row(&r)).transpose()
    }

    async fn list_users(&self, limit: u32, after: Option<Uuid>) -> Result<Vec<User>, StoreError> {
        let rows = sqlx::query(sql::LIST_USERS)
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(user_from_row).collect()
    }

    async fn update_user(
        &self,
        id: Uuid,
        name: &str,
        password_hash: Option<&str>,
        now: DateTime<Utc>,
        event: NewEvent,
    ) -> Result<Option<User>, StoreError> {
        let mut tx = self.pool.begin().await?;
        // The UPDATE locks the user's row until commit, so a second change
        // of the same user waits here, before its event gets a seq.
        let row = sqlx::query(sql::UPDATE_USER)
            .bind(id)
            .bind(name)
            .bind(now)
            .bind(password_hash)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let user = user_from_row(&row)?;
        insert_event(&mut tx, &event).await?;
        tx.commit().await?;
        Ok(Some(user))
    }

    async fn delete_user(&self, id: Uuid, event: DeletedEvent<'_>) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let name: Option<String> = sqlx::query_scalar(sql::DELETE_USER)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(name) = name else {
            return Ok(false);
        };
        insert_event(&mut tx, &event(name)?).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn pending_after(
        &self,
        scope: &Scope,
        after: i64,
        limit: u32,
        held_back: &[&str],
    ) -> Result<Vec<PendingEvent>, sqlx::Error> {
        let buckets: Option<&[i16]> = match scope {
            Scope::All => None,
            Scope::Buckets(b) => Some(b),
        };
        let rows = sqlx::query(
            "SELECT seq, event_id, user_id, event_type, event_json, attempts FROM outbox \
             WHERE status = 'pending' AND seq > $1 \
             AND ($4::smallint[] IS NULL OR bucket = ANY($4)) \
             AND user_id <> ALL($3) \
             ORDER BY seq LIMIT $2",
        )
        .bind(after)
        .bind(i64::from(limit))
        .bind(parse_ids(held_back))
        .bind(buckets)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(pending_from_row).collect()
    }

    async fn pending_for_user(
        &self,
        user_id: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<PendingEvent>, sqlx::Error> {
        let Some(user_id) = parse_ids(&[user_id]).pop() else {
            return Ok(Vec::new());
        };
        let rows = sqlx::query(sql::PENDING_FOR_USER)
            .bind(user_id)
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(pending_from_row).collect()
    }

    async fn backlog(&self) -> Result<Backlog, sqlx::Error> {
        let (pending, oldest, oldest_error, dead) =
            sqlx::query_as(sql::BACKLOG).fetch_one(&self.pool).await?;
        Ok(Backlog {
            pending,
            oldest,
            oldest_error,
            dead,
        })
    }

    async fn record(&self, outcomes: &Outcomes) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        if !outcomes.delivered.is_empty() {
            sqlx::query(
                "UPDATE outbox SET status = 'delivered', attempts = attempts + 1, \
                 delivered_at = now() WHERE seq = ANY($1) AND status = 'pending'",
            )
            .bind(&outcomes.delivered)
            .execute(&mut *tx)
            .await?;
        }
        // Dead and failed rows, each kind in one statement over arrays.
        for (failures, status) in [(&outcomes.dead, "dead"), (&outcomes.failed, "pending")] {
            if failures.is_empty() {
                continue;
            }
            let seqs: Vec<i64> = failures.iter().map(|f| f.seq).collect();
            let codes: Vec<Option<i32>> =
                failures.iter().map(|f| f.status.map(i32::from)).collect();
            let reasons: Vec<&str> = failures.iter().map(|f| f.reason.as_str()).collect();
            sqlx::query(
                "UPDATE outbox o SET status = $4, attempts = o.attempts + 1, \
                 last_status = f.code, last_error = f.reason \
                 FROM UNNEST($1::bigint[], $2::int[], $3::text[]) AS f(seq, code, reason) \
                 WHERE o.seq = f.seq AND o.status = 'pending'",
            )
            .bind(seqs)
            .bind(codes)
            .bind(reasons)
            .bind(status)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }

    async fn prune_delivered(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, sqlx::Error> {
        Ok(sqlx::query(sql::PRUNE_DELIVERED)
            .bind(before)
            .bind(i64::from(limit))
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, sqlx::Error> {
        let rows = sqlx::query(sql::DEAD_LETTERS).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                let status: Option<i32> = r.try_get("last_status")?;
                Ok(DeadLetter {
                    seq: r.try_get("seq")?,
                    event_id: r.try_get::<Uuid, _>("event_id")?.to_string(),
                    event_type: r.try_get("event_type")?,
                    user_id: r.try_get::<Uuid, _>("user_id")?.to_string(),
                    attempts: attempts(r)?,
                    status: status.and_then(|s| u16::try_from(s).ok()),
                    reason: r.try_get("last_error")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    async fn redrive(&self, which: &Redrive) -> Result<u64, RedriveError> {
        let seqs = match which {
            Redrive::All => {
                return Ok(sqlx::query(sql::REDRIVE_ALL)
                    .execute(&self.pool)
                    .await?
                    .rows_affected())
            }
            Redrive::Seqs(seqs) => seqs,
        };
        let mut seqs = seqs.clone();
        seqs.sort_unstable();
        seqs.dedup();
        let mut tx = self.pool.begin().await?;
        let mut not_dead = Vec::new();
        for &seq in &seqs {
            let changed = sqlx::query(sql::REDRIVE_ONE)
                .bind(seq)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if changed == 0 {
                let status: Option<String> = sqlx::query_scalar(sql::STATUS_OF)
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

    fn is_shared(&self) -> bool {
        true
    }

    async fn lease(
        &self,
        owner: &str,
        term: Duration,
        release: &[i16],
    ) -> Result<LeaseState, sqlx::Error> {
        let term = term_interval(term);
        let mut tx = self.pool.begin().await?;
        // The heartbeat, and the relays that have gone quiet for a term
        // (killed, or cut off) leave the count.
        sqlx::query(
            "INSERT INTO outbox_relays (owner, seen_at) VALUES ($1, now()) \
             ON CONFLICT (owner) DO UPDATE SET seen_at = now()",
        )
        .bind(owner)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM outbox_relays WHERE seen_at < now() - $1::interval")
            .bind(&term)
            .execute(&mut *tx)
            .await?;
        let (relays, buckets): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM outbox_relays), (SELECT count(*) FROM outbox_leases)",
        )
        .fetch_one(&mut *tx)
        .await?;
        if !release.is_empty() {
            sqlx::query(
                "UPDATE outbox_leases SET owner = NULL, expires_at = '-infinity' \
                 WHERE owner = $1 AND bucket = ANY($2)",
            )
            .bind(owner)
            .bind(release)
            .execute(&mut *tx)
            .await?;
        }
        let mut held: Vec<i16> = sqlx::query_scalar(
            "UPDATE outbox_leases SET expires_at = now() + $2::interval \
             WHERE owner = $1 RETURNING bucket",
        )
        .bind(owner)
        .bind(&term)
        .fetch_all(&mut *tx)
        .await?;
        let fair_share = fair_share(buckets, relays);
        if held.len() < fair_share {
            // SKIP LOCKED: two relays taking buckets at once each take
            // different ones instead of queueing on the same rows.
            let taken: Vec<i16> = sqlx::query_scalar(
                "UPDATE outbox_leases SET owner = $1, expires_at = now() + $2::interval \
                 WHERE bucket IN (SELECT bucket FROM outbox_leases \
                   WHERE owner IS NULL OR expires_at < now() \
                   ORDER BY bucket LIMIT $3 FOR UPDATE SKIP LOCKED) \
                 RETURNING bucket",
            )
            .bind(owner)
            .bind(&term)
            .bind((fair_share - held.len()) as i64)
            .fetch_all(&mut *tx)
            .await?;
            held.extend(taken);
        }
        tx.commit().await?;
        held.sort_unstable();
        Ok(LeaseState { held, fair_share })
    }

    async fn leave(&self, owner: &str, buckets: &[i16]) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE outbox_leases SET owner = NULL, expires_at = '-infinity' \
             WHERE owner = $1 AND bucket = ANY($2)",
        )
        .bind(owner)
        .bind(buckets)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM outbox_relays WHERE owner = $1")
            .bind(owner)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query(sql::PING).execute(&self.pool).await.map(|_| ())
    }
}

/// A lease term as a PostgreSQL interval literal.
fn term_interval(term: Duration) -> String {
    format!("{} milliseconds", term.as_millis())
}

/// Each relay's share of the buckets, rounded up so that together they
/// cover all of them.
fn fair_share(buckets: i64, relays: i64) -> usize {
    let relays = relays.max(1);
    usize::try_from((buckets + relays - 1) / relays).unwrap_or(0)
}

fn attempts(r: &PgRow) -> Result<u32, sqlx::Error> {
    let attempts: i32 = r.try_get("attempts")?;
    u32::try_from(attempts).map_err(|e| sqlx::Error::ColumnDecode {
        index: "attempts".into(),
        source: e.into(),
    })
}

fn user_from_row(row: &PgRow) -> Result<User, StoreError> {
    Ok(User {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn pending_from_row(r: &PgRow) -> Result<PendingEvent, sqlx::Error> {
    Ok(PendingEvent {
        seq: r.try_get("seq")?,
        event_id: r.try_get::<Uuid, _>("event_id")?.to_string(),
        user_id: r.try_get::<Uuid, _>("user_id")?.to_string(),
        event_type: r.try_get("event_type")?,
        event_json: Arc::from(r.try_get::<&str, _>("event_json")?),
        attempts: attempts(r)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_every_bucket() {
        assert_eq!(fair_share(64, 1), 64);
        assert_eq!(fair_share(64, 2), 32);
        assert_eq!(fair_share(64, 3), 22);
        assert_eq!(fair_share(64, 0), 64);
        assert_eq!(fair_share(64, 100), 1);
    }
}
