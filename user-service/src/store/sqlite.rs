//! Users and the outbox on SQLite: one process, one writer at a time, ids
//! and times kept as text. Seq order is commit order because SQLite commits
//! one transaction at a time.

use super::{sql, Backend, DeletedEvent, LeaseState, NewEvent, Scope, StoreError, User};
use crate::outbox::{Backlog, DeadLetter, NotDead, Outcomes, PendingEvent, Redrive, RedriveError};
use anyhow::Context;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, Sqlite, SqlitePool, Transaction};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

pub struct SqliteBackend {
    pool: SqlitePool,
}

impl SqliteBackend {
    pub async fn open(url: &str, connections: u32) -> anyhow::Result<Self> {
        let pool = service_kit::db::connect_sqlite(url, connections)
            .await
            .with_context(|| {
                format!("Failed to open the database {}", settings::redact::url(url))
            })?;
        migrator()
            .run(&pool)
            .await
            .context("Failed to migrate the database")?;
        Ok(SqliteBackend { pool })
    }

    /// Opens the service's database for an operator command: it must exist
    /// and have an outbox. A wrong DATABASE_URL fails here instead of
    /// creating an empty database (and its folders) and reporting on it. It
    /// is not migrated either; that is the service's job at start.
    pub async fn open_existing(url: &str, connections: u32) -> anyhow::Result<Self> {
        let shown = settings::redact::url(url);
        let pool = service_kit::db::open_existing_sqlite(url, connections)
            .await
            .with_context(|| format!("Failed to open the database {shown}"))?;
        let has_outbox: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'outbox'",
        )
        .fetch_optional(&pool)
        .await
        .with_context(|| format!("Failed to read the database {shown}"))?;
        if has_outbox.is_none() {
            anyhow::bail!("{shown} is not a user-service database: it has no outbox table");
        }
        Ok(SqliteBackend { pool })
    }

    /// `BEGIN IMMEDIATE` takes the write lock up front: a deferred
    /// transaction that read first could fail to upgrade under concurrent
    /// writers instead of waiting its turn.
    async fn begin(&self) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
        self.pool.begin_with("BEGIN IMMEDIATE").await
    }
}

/// The SQLite migrations. They moved from `migrations/` to
/// `migrations/sqlite/` unchanged: a database records each migration's
/// version and checksum (of the file's bytes), and neither depends on where
/// the file is, which the test below pins.
pub fn migrator() -> sqlx::migrate::Migrator {
    sqlx::migrate!("./migrations/sqlite")
}

async fn insert_event(
    tx: &mut Transaction<'static, Sqlite>,
    event: &NewEvent,
) -> Result<(), sqlx::Error> {
    sqlx::query(sql::INSERT_EVENT)
        .bind(event.event_id.to_string())
        .bind(event.user_id.to_string())
        .bind(event.event_type)
        .bind(&event.json)
        .bind(event.created_at)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[async_trait]
impl Backend for SqliteBackend {
    async fn create_user(
        &self,
        user: &User,
        password_hash: &str,
        event: NewEvent,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query(sql::INSERT_USER)
            .bind(user.id.to_string())
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
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| user_from_row(&r)).transpose()
    }

    async fn list_users(&self, limit: u32, after: Option<Uuid>) -> Result<Vec<User>, StoreError> {
        let rows = sqlx::query(sql::LIST_USERS)
            .bind(after.map(|a| a.to_string()))
            .bind(limit)
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
        let mut tx = self.begin().await?;
        let row = sqlx::query(sql::UPDATE_USER)
            .bind(id.to_string())
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
        let mut tx = self.begin().await?;
        let name: Option<String> = sqlx::query_scalar(sql::DELETE_USER)
            .bind(id.to_string())
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
        _scope: &Scope,
        after: i64,
        limit: u32,
        held_back: &[&str],
    ) -> Result<Vec<PendingEvent>, sqlx::Error> {
        // One process owns a SQLite database, so the scope is everything.
        // The held-back users travel as a JSON array.
        let held_back = serde_json::to_string(held_back).unwrap_or_else(|_| "[]".to_owned());
        let rows = sqlx::query(
            "SELECT seq, event_id, user_id, event_type, event_json, attempts FROM outbox \
             WHERE status = 'pending' AND seq > $1 \
             AND user_id NOT IN (SELECT value FROM json_each($3)) \
             ORDER BY seq LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .bind(held_back)
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
        let rows = sqlx::query(sql::PENDING_FOR_USER)
            .bind(user_id)
            .bind(after)
            .bind(limit)
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
        let mut tx = self.begin().await?;
        if !outcomes.delivered.is_empty() {
            // One statement for the lot: the seqs travel as a JSON array.
            let seqs =
                serde_json::to_string(&outcomes.delivered).unwrap_or_else(|_| "[]".to_owned());
            sqlx::query(
                "UPDATE outbox SET status = 'delivered', attempts = attempts + 1, \
                 delivered_at = $2 \
                 WHERE seq IN (SELECT value FROM json_each($1)) AND status = 'pending'",
            )
            .bind(seqs)
            .bind(Utc::now())
            .execute(&mut *tx)
            .await?;
        }
        for dead in &outcomes.dead {
            sqlx::query(
                "UPDATE outbox SET status = 'dead', attempts = attempts + 1, last_status = $2, \
                 last_error = $3 WHERE seq = $1 AND status = 'pending'",
            )
            .bind(dead.seq)
            .bind(dead.status)
            .bind(&dead.reason)
            .execute(&mut *tx)
            .await?;
        }
        for failed in &outcomes.failed {
            sqlx::query(
                "UPDATE outbox SET attempts = attempts + 1, last_status = $2, last_error = $3 \
                 WHERE seq = $1 AND status = 'pending'",
            )
            .bind(failed.seq)
            .bind(failed.status)
            .bind(&failed.reason)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }

    async fn prune_delivered(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, sqlx::Error> {
        let mut tx = self.begin().await?;
        let deleted = sqlx::query(sql::PRUNE_DELIVERED)
            .bind(before)
            .bind(limit)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(deleted)
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, sqlx::Error> {
        let rows = sqlx::query(sql::DEAD_LETTERS).fetch_all(&self.pool).await?;
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
        let mut tx = self.begin().await?;
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
        false
    }

    async fn lease(&self, _: &str, _: Duration, _: &[i16]) -> Result<LeaseState, sqlx::Error> {
        Err(sqlx::Error::Configuration(
            "a SQLite outbox has one relay and no leases".into(),
        ))
    }

    async fn leave(&self, _: &str, _: &[i16]) -> Result<(), sqlx::Error> {
        Ok(())
    }

    async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query(sql::PING).execute(&self.pool).await.map(|_| ())
    }
}

fn user_from_row(row: &SqliteRow) -> Result<User, StoreError> {
    let id: String = row.try_get("id")?;
    Ok(User {
        id: Uuid::parse_str(&id).map_err(|_| StoreError::CorruptId(id))?,
        name: row.try_get("name")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn pending_from_row(r: &SqliteRow) -> Result<PendingEvent, sqlx::Error> {
    Ok(PendingEvent {
        seq: r.try_get("seq")?,
        event_id: r.try_get("event_id")?,
        user_id: r.try_get("user_id")?,
        event_type: r.try_get("event_type")?,
        event_json: Arc::from(r.try_get::<&str, _>("event_json")?),
        attempts: r.try_get("attempts")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Version and SHA-384 of each migration as databases created before
    /// the move recorded them: moving a file must not change either, or
    /// every existing database would refuse to start.
    #[test]
    fn moved_migrations_keep_the_versions_and_checksums_databases_recorded() {
        let recorded = [
            (20261126000001, "075e1627cdd5d2337d4e098485176f456780be4d9f33f2ec9ab2ba43a379b489dc2698fe0437f0d3c7319e6f47d43261"),
            (20261126000002, "e16633db0f03e6d0490347c31e6af60419432f913da94b58ca74171af10254158eaf79fed49e9732e90a59ca96f823ce"),
        ];
        let migrator = migrator();
        for (version, checksum) in recorded {
            let migration = migrator
                .iter()
                .find(|m| m.version == version)
                .unwrap_or_else(|| panic!("migration {version} is gone"));
            let hex: String = migration
                .checksum
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(hex, checksum, "migration {version} changed");
        }
    }
}
