//! Users and the outbox: every change to a user and the event describing it
//! are written in ONE transaction, so neither exists without the other, even
//! if the process is killed right after the commit.
//!
//! The database is SQLite (one process, the embedded default) or PostgreSQL
//! (what several replicas share), behind one trait, [`Backend`]: `sqlite`
//! and `postgres` implement it, and `sql` holds the statements whose text is
//! the same on both. This module builds the events and hands each backend
//! rows ready to insert.

mod postgres;
mod sql;
mod sqlite;

use crate::domain::{PasswordHash, UserName};
use crate::outbox::{Backlog, DeadLetter, Outcomes, PendingEvent, Redrive, RedriveError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use service_kit::db::Kind;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use user_events::{UserData, UserEvent, UserEventError};
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

/// An outbox row to insert with a user change.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub user_id: Uuid,
    pub event_type: &'static str,
    /// The CloudEvent in the JSON event format.
    pub json: String,
    pub created_at: DateTime<Utc>,
}

/// Builds the event of a deletion once the deleted row's name is known.
pub type DeletedEvent<'a> = &'a (dyn Fn(String) -> Result<NewEvent, StoreError> + Send + Sync);

/// Which outbox rows a relay may send: all of them (SQLite: one process owns
/// the database), or the rows of the buckets whose leases it holds
/// (PostgreSQL, see `relay::leases`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    All,
    Buckets(Vec<i16>),
}

impl Scope {
    pub fn is_empty(&self) -> bool {
        matches!(self, Scope::Buckets(b) if b.is_empty())
    }
}

/// What one lease round trip found: the buckets this relay holds now, and
/// how many it should hold (its fair share among the relays alive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseState {
    pub held: Vec<i16>,
    pub fair_share: usize,
}

/// A database the service can keep its users and outbox in.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    async fn create_user(
        &self,
        user: &User,
        password_hash: &str,
        event: NewEvent,
    ) -> Result<(), StoreError>;
    async fn get_user(&self, id: Uuid) -> Result<Option<User>, StoreError>;
    async fn list_users(&self, limit: u32, after: Option<Uuid>) -> Result<Vec<User>, StoreError>;
    /// Renames the user (and rehashes its password when given) and inserts
    /// `event`, or does nothing and returns `None` when there is no such
    /// user or the update would change nothing (the same name, no password).
    async fn update_user(
        &self,
        id: Uuid,
        name: &str,
        password_hash: Option<&str>,
        now: DateTime<Utc>,
        event: NewEvent,
    ) -> Result<Option<User>, StoreError>;
    /// Deletes the user and inserts the event `event` builds from its name;
    /// `false` when there was none.
    async fn delete_user(&self, id: Uuid, event: DeletedEvent<'_>) -> Result<bool, StoreError>;

    /// Pending rows of `scope` after `after` in seq (= commit) order,
    /// leaving out the users in `held_back`: the relay holds their rows in
    /// order itself and reads them with [`Backend::pending_for_user`].
    async fn pending_after(
        &self,
        scope: &Scope,
        after: i64,
        limit: u32,
        held_back: &[&str],
    ) -> Result<Vec<PendingEvent>, sqlx::Error>;
    /// One user's oldest pending rows after `after`, in seq order.
    async fn pending_for_user(
        &self,
        user_id: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<PendingEvent>, sqlx::Error>;
    /// The outbox's depth and the age of its oldest pending row.
    async fn backlog(&self) -> Result<Backlog, sqlx::Error>;
    /// Writes a batch of delivery outcomes in one transaction: one commit
    /// (one fsync) for many rows is what lets the relay go faster than one
    /// event per fsync.
    async fn record(&self, outcomes: &Outcomes) -> Result<(), sqlx::Error>;
    /// Deletes up to `limit` delivered rows delivered before `before`;
    /// returns how many.
    async fn prune_delivered(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, sqlx::Error>;

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, sqlx::Error>;
    /// Sets dead letters back to pending with a fresh attempt count, all of
    /// them or the ones named; the running relay's poll picks them up.
    /// Returns how many rows changed.
    ///
    /// Named seqs are set back together or not at all: when one of them is
    /// not a dead letter (no such row, or it is pending or delivered),
    /// nothing changes and the error says which.
    async fn redrive(&self, which: &Redrive) -> Result<u64, RedriveError>;

    /// Whether several processes may share this database, so that relays
    /// must hold leases to send (PostgreSQL); SQLite has one.
    fn is_shared(&self) -> bool;
    /// One lease round trip for relay `owner`: heartbeat, give back
    /// `release`, renew what it holds for `term`, and take free or expired
    /// buckets up to its fair share. Only for a shared database.
    async fn lease(
        &self,
        owner: &str,
        term: Duration,
        release: &[i16],
    ) -> Result<LeaseState, sqlx::Error>;
    /// Gives back `buckets` and leaves the relays alive (at shutdown), so
    /// the others take them at once instead of after the term.
    async fn leave(&self, owner: &str, buckets: &[i16]) -> Result<(), sqlx::Error>;

    /// True when the database answers a query.
    async fn ping(&self) -> Result<(), sqlx::Error>;
}

/// Connections per process. SQLite has one writer at a time, so a few
/// serve the readers; on PostgreSQL this is also what each replica takes
/// of the server's `max_connections`.
const DB_CONNECTIONS: u32 = 8;

/// Opens the database `url` names and brings its schema up to date.
pub async fn open(url: &str) -> anyhow::Result<Arc<dyn Backend>> {
    open_with(url, DB_CONNECTIONS).await
}

/// As [`open`], with at most `connections` connections (the operator
/// commands need one).
pub async fn open_with(url: &str, connections: u32) -> anyhow::Result<Arc<dyn Backend>> {
    Ok(match Kind::of(url)? {
        Kind::Sqlite => Arc::new(sqlite::SqliteBackend::open(url, connections).await?),
        Kind::Postgres => Arc::new(postgres::PgBackend::open(url, connections).await?),
    })
}

/// Opens the service's database for an operator command, with one
/// connection: a SQLite file must already exist and be the service's (see
/// [`sqlite::SqliteBackend::open_existing`]); a PostgreSQL database that
/// does not exist fails to connect by itself.
pub async fn open_existing(url: &str) -> anyhow::Result<Arc<dyn Backend>> {
    Ok(match Kind::of(url)? {
        Kind::Sqlite => Arc::new(sqlite::SqliteBackend::open_existing(url, 1).await?),
        Kind::Postgres => Arc::new(postgres::PgBackend::open(url, 1).await?),
    })
}

/// The users and the outbox's write side, with the events built here once
/// for both databases. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
    event_source: String,
    /// Wakes the relay after each commit, so an event leaves within
    /// milliseconds instead of at the relay's next poll.
    relay_wake: Arc<Notify>,
}

impl Store {
    pub fn new(backend: Arc<dyn Backend>, event_source: String, relay_wake: Arc<Notify>) -> Self {
        Store {
            backend,
            event_source,
            relay_wake,
        }
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
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
        let user = User {
            id,
            name: name.into_inner(),
            created_at: now,
            updated_at: now,
        };
        let event = self.event(UserEvent::Stored(user.data()), now)?;
        self.backend
            .create_user(&user, password_hash.as_str(), event)
            .await?;
        self.relay_wake.notify_one();
        Ok(user)
    }

    #[tracing::instrument(skip(self))]
    pub async fn get_user(&self, id: Uuid) -> Result<Option<User>, StoreError> {
        self.backend.get_user(id).await
    }

    /// Up to `limit` users in id (= creation) order, after `after` if given.
    #[tracing::instrument(skip(self))]
    pub async fn list_users(
        &self,
        limit: u32,
        after: Option<Uuid>,
    ) -> Result<Vec<User>, StoreError> {
        self.backend.list_users(limit, after).await
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
        let data = UserData {
            id,
            name: name.as_str().to_owned(),
        };
        let event = self.event(UserEvent::Updated(data), now)?;
        let user = self
            .backend
            .update_user(
                id,
                name.as_str(),
                password_hash.as_ref().map(PasswordHash::as_str),
                now,
                event,
            )
            .await?;
        match user {
            Some(user) => {
                self.relay_wake.notify_one();
                Ok(Some(Updated {
                    user,
                    changed: true,
                }))
            }
            // Nothing changed, or there is no such user; either way nothing
            // was written.
            None => Ok(self.get_user(id).await?.map(|user| Updated {
                user,
                changed: false,
            })),
        }
    }

    /// Deletes the user; `false` when there was none.
    #[tracing::instrument(skip(self))]
    pub async fn delete_user(&self, id: Uuid) -> Result<bool, StoreError> {
        let now = Utc::now();
        let event = |name: String| self.event(UserEvent::Deleted(UserData { id, name }), now);
        let deleted = self.backend.delete_user(id, &event).await?;
        if deleted {
            self.relay_wake.notify_one();
        }
        Ok(deleted)
    }

    /// The change's CloudEvent as an outbox row. The event gets a fresh id
    /// now, so a re-publish after a crash carries the same id and the audit
    /// service stores it once. The id is a UUID v7, ordered by time:
    /// receivers index events by (source, id), and time-ordered ids land at
    /// the end of that index instead of on a random page of it (measured in
    /// audit-service: 200,000 events stored with about half the writer's
    /// CPU of random v4 ids).
    fn event(&self, change: UserEvent, time: DateTime<Utc>) -> Result<NewEvent, StoreError> {
        let event_id = Uuid::now_v7();
        let mut event = change.to_cloudevent(event_id, &self.event_source, time)?;
        // The request's trace travels in its event (the distributed-tracing
        // extension), so the relay and the receivers can continue it.
        cloudevents_wire::tracecontext::set_on_event(
            &mut event,
            &cloudevents_wire::tracecontext::current(),
        );
        Ok(NewEvent {
            event_id,
            user_id: change.data().id,
            event_type: change.event_type(),
            json: serde_json::to_string(&event)?,
            created_at: time,
        })
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
