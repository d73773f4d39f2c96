//! Writes a backlog of pending `user.storeUser` events into user-service's
//! database (SQLite or PostgreSQL), for the relay-drain benchmark of `make
//! bench`: N users, each with the outbox row the service itself would have
//! committed with it.
//!
//!     DATABASE_URL=sqlite:///tmp/users.db \
//!         cargo run --release -p user-service --example bench_backlog -- [COUNT=20000]
//!
//! Creating users through the API is bound by argon2id (about 50 a second
//! on two cores, on purpose), which would make a 20,000-event backlog take
//! minutes. The rows here are the real thing all the same: the database is
//! migrated by the service's migrations, the event is built by the one
//! mapping in `user_events` and serialized as the store serializes it, and
//! every user has a genuine argon2id hash (one, computed once, shared: no
//! row is ever checked against it). The benchmark also drains a backlog made
//! through the API, to show the two agree.

use anyhow::Context;
use chrono::{DateTime, Utc};
use service_kit::db::Kind;
use user_events::{UserData, UserEvent};
use user_service::domain::{Password, RawPassword};
use uuid::Uuid;

const INSERT_USER: &str = "INSERT INTO users (id, name, password_hash, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $4)";
const INSERT_EVENT: &str =
    "INSERT INTO outbox (event_id, user_id, event_type, event_json, created_at) \
     VALUES ($1, $2, $3, $4, $5)";

/// One user and its event, as the store writes them.
struct Row {
    user: Uuid,
    name: String,
    event: Uuid,
    event_type: &'static str,
    json: String,
    now: DateTime<Utc>,
}

/// Rows per transaction: few fsyncs, and no transaction so large that the
/// WAL balloons.
const CHUNK: usize = 5000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let count: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()
        .context("COUNT is not a number")?
        .unwrap_or(20_000);
    let url = user_service::config::database_url_from_env()?;
    let source = std::env::var("EVENT_SOURCE").unwrap_or_else(|_| "/user-service".into());

    // The service migrates the database as it always does.
    drop(user_service::store::open_with(&url, 1).await?);

    let raw: RawPassword = serde_json::from_str(r#""bench-password""#)?;
    let mut memory = vec![argon2::Block::default(); Password::memory_blocks()];
    let hash = Password::parse(raw)
        .map_err(anyhow::Error::msg)?
        .hash_with(&mut memory)
        .map_err(|e| anyhow::anyhow!("Failed to hash the password: {e:?}"))?;
    let hash = hash.as_str();

    let rows = |from: usize, to: usize| -> anyhow::Result<Vec<Row>> {
        (from..to)
            .map(|i| {
                let now = Utc::now();
                let user = UserData {
                    id: Uuid::now_v7(),
                    name: format!("bench user {i}"),
                };
                let (id, name) = (user.id, user.name.clone());
                let change = UserEvent::Stored(user);
                let event = Uuid::now_v7();
                let json = serde_json::to_string(&change.to_cloudevent(event, &source, now)?)?;
                Ok(Row {
                    user: id,
                    name,
                    event,
                    event_type: change.event_type(),
                    json,
                    now,
                })
            })
            .collect()
    };
    // Ids and times as each database keeps them: text on SQLite, uuid and
    // timestamptz on PostgreSQL.
    let mut written = 0;
    match Kind::of(&url)? {
        Kind::Sqlite => {
            let pool = service_kit::db::connect_sqlite(&url, 1).await?;
            while written < count {
                let next = count.min(written + CHUNK);
                let mut tx = pool.begin().await?;
                for row in rows(written, next)? {
                    sqlx::query(INSERT_USER)
                        .bind(row.user.to_string())
                        .bind(&row.name)
                        .bind(hash)
                        .bind(row.now)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query(INSERT_EVENT)
                        .bind(row.event.to_string())
                        .bind(row.user.to_string())
                        .bind(row.event_type)
                        .bind(&row.json)
                        .bind(row.now)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                written = next;
            }
        }
        Kind::Postgres => {
            let pool = service_kit::db::connect_postgres(&url, 1, "bench_backlog").await?;
            while written < count {
                let next = count.min(written + CHUNK);
                let mut tx = pool.begin().await?;
                for row in rows(written, next)? {
                    sqlx::query(INSERT_USER)
                        .bind(row.user)
                        .bind(&row.name)
                        .bind(hash)
                        .bind(row.now)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query(INSERT_EVENT)
                        .bind(row.event)
                        .bind(row.user)
                        .bind(row.event_type)
                        .bind(&row.json)
                        .bind(row.now)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                written = next;
            }
        }
    }
    println!(
        "{count} pending events written to {}",
        settings::redact::url(&url)
    );
    Ok(())
}
