//! Writes a backlog of pending `user.storeUser` events into user-service's
//! SQLite database, for the relay-drain benchmark of `make bench`: N users,
//! each with the outbox row the service itself would have committed with it.
//!
//!     DATABASE_URL=sqlite:///tmp/users.db \
//!         cargo run --release -p user-service --example bench_backlog -- [COUNT=20000]
//!
//! Creating users through the API is bound by argon2id (about 50 a second
//! on two cores, on purpose), which would make a 20,000-event backlog take
//! minutes. The rows here are the real thing all the same: the database is
//! migrated by the service's migrations, the event is built by the one
//! mapping in `shared::event` and serialized as the store serializes it, and
//! every user has a genuine argon2id hash (one, computed once, shared: no
//! row is ever checked against it). The benchmark also drains a backlog made
//! through the API, to show the two agree.

use anyhow::Context;
use chrono::Utc;
use shared::event::{UserData, UserEvent};
use user_service::domain::{Password, RawPassword};
use uuid::Uuid;

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
    let url = user_service::config::database_url_from_env();
    let source = std::env::var("EVENT_SOURCE").unwrap_or_else(|_| "/user-service".into());

    let pool = shared::db::connect_sqlite(&url, 1)
        .await
        .with_context(|| format!("Failed to open {url}"))?;
    sqlx::migrate!("./migrations")
        .run(&pool)
        .await
        .context("Failed to migrate the database")?;

    let raw: RawPassword = serde_json::from_str(r#""bench-password""#)?;
    let mut memory = vec![argon2::Block::default(); Password::memory_blocks()];
    let hash = Password::parse(raw)
        .map_err(anyhow::Error::msg)?
        .hash_with(&mut memory)
        .map_err(|e| anyhow::anyhow!("Failed to hash the password: {e:?}"))?;

    let mut written = 0;
    while written < count {
        let mut tx = pool.begin().await?;
        for i in written..count.min(written + CHUNK) {
            let now = Utc::now();
            let user = UserData {
                id: Uuid::now_v7(),
                name: format!("bench user {i}"),
            };
            sqlx::query(
                "INSERT INTO users (id, name, password_hash, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?4)",
            )
            .bind(user.id.to_string())
            .bind(&user.name)
            .bind(hash.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let change = UserEvent::Stored(user);
            let event_id = Uuid::now_v7();
            let event = change.to_cloudevent(event_id, &source, now)?;
            sqlx::query(
                "INSERT INTO outbox (event_id, user_id, event_type, event_json, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .bind(event_id.to_string())
            .bind(change.data().id.to_string())
            .bind(change.event_type())
            .bind(serde_json::to_string(&event)?)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        written = count.min(written + CHUNK);
    }
    println!("{count} pending events written to {url}");
    Ok(())
}
