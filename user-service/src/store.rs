//! Users and the outbox: every change to a user and the event describing it
//! are written in ONE transaction, so neither exists without the other, even
//! if the process is killed right after the commit.

use crate::domain::{PasswordHash, UserName};
use chrono::{DateTime, Utc};
use serde::Serialize;
use shared::event::{UserData, UserEvent, UserEventError};
use sqlx::{Row, Sqlite, SqlitePool, Transaction};
use std::sync::Arc;
use tokio::sync::Notify;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("failed to build the event")]
    Event(#[from] UserEventError),
    #[error("failed to serialize the event")]
    Json(#[from] serde_json::Error),
    #[error("stored user id {0:?} is not a UUID")]
    CorruptId(String),
}

/// A user as the API shows it: never the password hash.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct User {
    pub id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What an update did: the user as it is now, and whether anything changed
/// (an unchanged user was not written and emitted no event).
#[derive(Debug, Clone)]
pub struct Updated {
    pub user: User,
    pub changed: bool,
}

/// The user table and the outbox's write side. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
    event_source: String,
    /// Wakes the relay after each commit, so an event leaves within
    /// milliseconds instead of at the relay's next poll.
    relay_wake: Arc<Notify>,
}

impl Store {
    pub fn new(pool: SqlitePool, event_source: String, relay_wake: Arc<Notify>) -> Self {
        Store {
            pool,
            event_source,
            relay_wake,
        }
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// `BEGIN IMMEDIATE` takes the write lock up front: a deferred
    /// transaction that read first could fail to upgrade under concurrent
    /// writers instead of waiting its turn.
    async fn begin(&self) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
        self.pool.begin_with("BEGIN IMMEDIATE").await
    }

    #[tracing::instrument(skip_all)]
    pub async fn create_user(
        &self,
        name: UserName,
        password_hash: PasswordHash,
    ) -> Result<User, StoreError> {
        // v7: time-ordered, so the primary key order is creation order.
        let id = Uuid::now_v7();
        let now = Utc::now();
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO users (id, name, password_hash, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?4)",
        )
        .bind(id.to_string())
        .bind(name.as_str())
        .bind(password_hash.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let user = User {
            id,
            name: name.into_inner(),
            created_at: now,
            updated_at: now,
        };
        self.add_event(&mut tx, UserEvent::Stored(user.data()), now)
            .await?;
        tx.commit().await?;
        self.relay_wake.notify_one();
        Ok(user)
    }

    #[tracing::instrument(skip(self))]
    pub async fn get_user(&self, id: Uuid) -> Result<Option<User>, StoreError> {
        let row = sqlx::query("SELECT id, name, created_at, updated_at FROM users WHERE id = ?1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| user_from_row(&r)).transpose()
    }

    /// Up to `limit` users in id (= creation) order, after `after` if given.
    #[tracing::instrument(skip(self))]
    pub async fn list_users(
        &self,
        limit: u32,
        after: Option<Uuid>,
    ) -> Result<Vec<User>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, created_at, updated_at FROM users \
             WHERE ?1 IS NULL OR id > ?1 ORDER BY id LIMIT ?2",
        )
        .bind(after.map(|a| a.to_string()))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(user_from_row).collect()
    }

    /// Renames the user, and rehashes the password when a new one is given.
    /// `None` when there is no such user.
    ///
    /// A change is a new name or a new password. An update that changes
    /// nothing (the same name, no password) writes nothing and emits no
    /// event: the audit trail records changes, and `updated_at` stays the
    /// time of the last one. A new password with the same name is a change
    /// and emits `user.updateUser`, whose data (id and name) then looks the
    /// same as before: the event says the user was changed, never the
    /// secret.
    #[tracing::instrument(skip(self, name, password_hash))]
    pub async fn update_user(
        &self,
        id: Uuid,
        name: UserName,
        password_hash: Option<PasswordHash>,
    ) -> Result<Option<Updated>, StoreError> {
        let now = Utc::now();
        let mut tx = self.begin().await?;
        let row = sqlx::query(
            "UPDATE users SET name = ?2, updated_at = ?3, \
             password_hash = COALESCE(?4, password_hash) \
             WHERE id = ?1 AND (name <> ?2 OR ?4 IS NOT NULL) \
             RETURNING id, name, created_at, updated_at",
        )
        .bind(id.to_string())
        .bind(name.as_str())
        .bind(now)
        .bind(password_hash.as_ref().map(PasswordHash::as_str))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            // Nothing changed, or there is no such user; either way nothing
            // was written.
            drop(tx);
            let user = self.get_user(id).await?;
            return Ok(user.map(|user| Updated {
                user,
                changed: false,
            }));
        };
        let user = user_from_row(&row)?;
        self.add_event(&mut tx, UserEvent::Updated(user.data()), now)
            .await?;
        tx.commit().await?;
        self.relay_wake.notify_one();
        Ok(Some(Updated {
            user,
            changed: true,
        }))
    }

    /// Deletes the user; `false` when there was none.
    #[tracing::instrument(skip(self))]
    pub async fn delete_user(&self, id: Uuid) -> Result<bool, StoreError> {
        let now = Utc::now();
        let mut tx = self.begin().await?;
        let name: Option<String> =
            sqlx::query_scalar("DELETE FROM users WHERE id = ?1 RETURNING name")
                .bind(id.to_string())
                .fetch_optional(&mut *tx)
                .await?;
        let Some(name) = name else {
            return Ok(false);
        };
        self.add_event(&mut tx, UserEvent::Deleted(UserData { id, name }), now)
            .await?;
        tx.commit().await?;
        self.relay_wake.notify_one();
        Ok(true)
    }

    /// Writes the change's CloudEvent into the outbox inside `tx`. The event
    /// gets a fresh id now, so a re-publish after a crash carries the same
    /// id and the audit service stores it once. The id is a UUID v7, ordered
    /// by time: receivers index events by (source, id), and time-ordered
    /// ids land at the end of that index instead of on a random page of it
    /// (measured in audit-service: 200,000 events stored with about half
    /// the writer's CPU of random v4 ids).
    async fn add_event(
        &self,
        tx: &mut Transaction<'static, Sqlite>,
        change: UserEvent,
        time: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let event_id = Uuid::now_v7();
        let mut event = change.to_cloudevent(event_id, &self.event_source, time)?;
        // The request's trace travels in its event (the distributed-tracing
        // extension), so the relay and the receivers can continue it.
        shared::tracecontext::set_on_event(&mut event, &shared::tracecontext::current());
        sqlx::query(
            "INSERT INTO outbox (event_id, user_id, event_type, event_json, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .bind(event_id.to_string())
        .bind(change.data().id.to_string())
        .bind(change.event_type())
        .bind(serde_json::to_string(&event)?)
        .bind(time)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

impl User {
    fn data(&self) -> UserData {
        UserData {
            id: self.id,
            name: self.name.clone(),
        }
    }
}

fn user_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<User, StoreError> {
    let id: String = row.try_get("id")?;
    Ok(User {
        id: Uuid::parse_str(&id).map_err(|_| StoreError::CorruptId(id))?,
        name: row.try_get("name")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}
