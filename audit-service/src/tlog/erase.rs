//! Erasure: an event's data and salt are removed, the event stays. It is
//! served with `"erased": true` and no data; its leaf (which commits to
//! the data by a salted digest, see `entry`) is unchanged, so every proof
//! still verifies, and without the salt the digest no longer confirms a
//! guess of what was erased.
//!
//! The bytes must leave the database files too, not only the rows: on
//! SQLite the erasing connection runs with `secure_delete` (freed space and
//! pages are zeroed) and the WAL, which still holds the old pages, is then
//! checkpointed and truncated; on PostgreSQL the old row versions are dead
//! tuples whose bytes even `VACUUM` leaves in the pages, so the tables are
//! rewritten (`VACUUM FULL`).
//!
//! Each erasure is recorded in the trail as an event of audit-service's own
//! (`audit.eraseData`, `audit.expireData`): what was erased, how many events
//! and who asked.

use super::entry::Members;
use crate::store::leaf_block::{self, BlockRow};
use crate::store::{Readers, Store, StoreError};
use chrono::{DateTime, SecondsFormat, Utc};
use cloudevents::{EventBuilder, EventBuilderV10};
use cloudevents_wire::Transport;
use std::time::Duration;

/// The source of audit-service's own events.
pub const SOURCE: &str = "/audit-service";
/// The type of the event recording an erasure by subject.
pub const ERASED_TYPE: &str = "audit.eraseData";
/// The type of the event recording a retention run.
pub const EXPIRED_TYPE: &str = "audit.expireData";
/// Events erased in one transaction.
const BATCH: i64 = 500;
/// How long scrubbing waits for readers of the rows as they were before
/// (SQLite's WAL truncation, PostgreSQL's older transactions).
const SCRUB_DEADLINE: Duration = Duration::from_secs(10);

/// Which events lose their data.
#[derive(Debug, Clone, Copy)]
pub enum Selector<'a> {
    Subject(&'a str),
    /// Events received before `before`, up to seq `up_to` (with the log on,
    /// the last one in the tree: data is erased only once committed to).
    ReceivedBefore {
        before: DateTime<Utc>,
        up_to: i64,
    },
}

impl Selector<'_> {
    fn reason(&self) -> String {
        match self {
            Selector::Subject(_) => "subject".to_owned(),
            Selector::ReceivedBefore { .. } => "retention".to_owned(),
        }
    }
}

/// Erases the data of the events `selector` picks and, when there were
/// any, records the erasure as an event; returns how many were erased.
pub async fn erase_and_record(
    store: &Store,
    selector: Selector<'_>,
    requested_by: &str,
) -> Result<u64, StoreError> {
    let erased = erase(store.readers(), selector).await?;
    let data = match selector {
        Selector::Subject(subject) => serde_json::json!({
            "subject": subject, "events": erased, "requested_by": requested_by,
        }),
        Selector::ReceivedBefore { before, .. } => {
            if erased == 0 {
                return Ok(0);
            }
            serde_json::json!({
                "received_before": before.to_rfc3339_opts(SecondsFormat::Secs, true),
                "events": erased, "requested_by": requested_by,
            })
        }
    };
    let ty = match selector {
        Selector::Subject(_) => ERASED_TYPE,
        Selector::ReceivedBefore { .. } => EXPIRED_TYPE,
    };
    // The record carries the erased subject in its data, not as its own
    // subject, so that erasing the subject again does not erase the record.
    let record = EventBuilderV10::new()
        .id(uuid::Uuid::now_v7().to_string())
        .source(SOURCE)
        .ty(ty)
        .time(Utc::now())
        .data("application/json", data)
        .build()
        .map_err(|e| StoreError::Record(e.to_string()))?;
    store
        .write(&[record], Transport::Http)
        .await
        .map_err(|e| StoreError::Record(e.to_string()))?;
    tracing::info!(erased, requested_by, r#type = ty, "erased event data");
    Ok(erased)
}

/// Erases, then scrubs the files.
async fn erase(readers: &Readers, selector: Selector<'_>) -> Result<u64, StoreError> {
    let mut erased = 0u64;
    loop {
        let n = erase_batch(readers, selector).await?;
        erased += n;
        if n < BATCH as u64 {
            break;
        }
    }
    if erased > 0 {
        scrub(readers).await?;
    }
    Ok(erased)
}

type Row = (i64, String);

/// One transaction: bumps the erasure epoch first (a sequencer round that
/// read these events before this commits is then read again, see
/// `db::commit_round`), rewrites up to `BATCH` events without their data,
/// marks them erased and keeps, in place of each salt, the commitment it made.
async fn erase_batch(readers: &Readers, selector: Selector<'_>) -> Result<u64, StoreError> {
    const EPOCH: &str = "UPDATE log_state SET erasure_epoch = erasure_epoch + 1 WHERE id = 1";
    const UNERASED: &str = "NOT EXISTS (SELECT 1 FROM event_erasures x WHERE x.seq = events.seq)";
    const REWRITE: &str = "UPDATE events SET event_json = $1 WHERE seq = $2";
    const MARK: &str = "INSERT INTO event_erasures (seq, erased_at, reason) VALUES ($1, $2, $3)";
    const UNSALT: &str = "UPDATE log_leaf_blocks SET leaves = $1 WHERE first_idx = $2";
    let now = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
    let reason = selector.reason();
    let (select, value) = match (readers, selector) {
        (_, Selector::Subject(subject)) => (
            format!("SELECT seq, event_json FROM events WHERE subject = $1 AND {UNERASED} ORDER BY seq LIMIT {BATCH}"),
            subject.to_owned(),
        ),
        (Readers::Sqlite(_), Selector::ReceivedBefore { before, up_to }) => (
            format!("SELECT seq, event_json FROM events WHERE received_at < $1 AND seq <= {up_to} AND {UNERASED} ORDER BY seq LIMIT {BATCH}"),
            before.to_rfc3339_opts(SecondsFormat::Micros, true),
        ),
        (Readers::Postgres(_), Selector::ReceivedBefore { before, up_to }) => (
            format!("SELECT seq, event_json FROM events WHERE received_at < $1::timestamptz AND seq <= {up_to} AND {UNERASED} ORDER BY seq LIMIT {BATCH}"),
            before.to_rfc3339_opts(SecondsFormat::Micros, true),
        ),
    };
    macro_rules! run {
        ($connection:expr) => {{
            let mut tx = sqlx::Connection::begin($connection).await?;
            sqlx::query(EPOCH).execute(&mut *tx).await?;
            let rows: Vec<Row> = sqlx::query_as(&select)
                .bind(&value)
                .fetch_all(&mut *tx)
                .await?;
            let mut unsalted: Vec<BlockRow> = Vec::new();
            for (seq, json) in &rows {
                // A row that is not a JSON object (which the store never
                // writes) keeps its text; it is still marked erased.
                let data = Members::parse(json).ok().and_then(|members| {
                    let data = members.data()?;
                    Some((members.without_data(), data))
                });
                if let Some((without_data, _)) = &data {
                    sqlx::query(REWRITE)
                        .bind(without_data)
                        .bind(seq)
                        .execute(&mut *tx)
                        .await?;
                }
                sqlx::query(MARK)
                    .bind(seq)
                    .bind(&now)
                    .bind(&reason)
                    .execute(&mut *tx)
                    .await?;
                // The salt leaves its block for the commitment it made (an
                // event not yet in the tree has neither). Seqs ascend, so an
                // event's block is the last one changed or one not read yet:
                // each is read and written once.
                let Some((_, data)) = data else { continue };
                let in_last = match unsalted.last_mut() {
                    Some((first, block)) if leaf_block::holds(*first, block, *seq) => {
                        if let Some(erased) = leaf_block::erase(*first, block, *seq, data) {
                            *block = erased;
                        }
                        true
                    }
                    _ => false,
                };
                if !in_last {
                    let block: Option<BlockRow> = sqlx::query_as(leaf_block::BY_SEQ)
                        .bind(seq)
                        .bind(seq)
                        .fetch_optional(&mut *tx)
                        .await?;
                    if let Some((first, block)) = block {
                        if let Some(erased) = leaf_block::erase(first, &block, *seq, data) {
                            unsalted.push((first, erased));
                        }
                    }
                }
            }
            for (first, block) in &unsalted {
                sqlx::query(UNSALT)
                    .bind(block)
                    .bind(first)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            rows.len() as u64
        }};
    }
    Ok(match readers {
        Readers::Sqlite(pool) => {
            let mut connection = pool.acquire().await?;
            // Zero what the UPDATE frees, in the page and in freed pages.
            sqlx::query("PRAGMA secure_delete = ON")
                .execute(&mut *connection)
                .await?;
            run!(&mut *connection)
        }
        Readers::Postgres(pool) => {
            let mut connection = pool.acquire().await?;
            run!(&mut *connection)
        }
    })
}

/// Removes the old versions of erased rows from the files.
async fn scrub(readers: &Readers) -> Result<(), StoreError> {
    match readers {
        Readers::Sqlite(pool) => {
            // The WAL still holds the pages as they were before the
            // erasure; TRUNCATE copies the current pages into the database
            // and empties it, once no reader is on an older snapshot.
            let deadline = tokio::time::Instant::now() + SCRUB_DEADLINE;
            loop {
                let (busy, _, _): (i64, i64, i64) =
                    sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
                        .fetch_one(pool)
                        .await?;
                if busy == 0 {
                    return Ok(());
                }
                if tokio::time::Instant::now() >= deadline {
                    tracing::warn!(
                        "the WAL could not be truncated after an erasure (readers kept it busy); \
                         the erased data leaves the WAL at its next checkpoint"
                    );
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Readers::Postgres(pool) => {
            // A plain VACUUM removes the dead row versions but leaves their
            // bytes in the pages' free space (measured: 57 of 300 erased
            // names still in the file). VACUUM FULL writes the tables anew
            // and truncates the old files; it holds an exclusive lock
            // meanwhile, so ingest and reads wait (about 0.25 s for 200,000
            // events here). Outside a transaction, as VACUUM must be.
            //
            // VACUUM FULL copies a dead row version that some snapshot may
            // still see: it keeps every version whose deleting transaction
            // is not older than the oldest xmin (or xid) of the backends on
            // this database. So it first waits (boundedly) until no
            // snapshot on this database can be older than the erasure: the
            // xids handed out so far (`pg_current_snapshot()`'s xmax)
            // include every erasing transaction.
            //
            // Two kinds of backend hold that horizon back:
            // - one on this database whose snapshot is older (its xmin);
            // - one on *any* database still running a transaction older
            //   than the erasure (its xid): a snapshot taken here while it
            //   runs gets that xid as its xmin, even one taken after this
            //   check and before VACUUM FULL looks, which would keep the
            //   erased bytes (seen under a busy shared server).
            // Once neither is left, every new snapshot's xmin is past the
            // erasure.
            let past: String =
                sqlx::query_scalar("SELECT pg_snapshot_xmax(pg_current_snapshot())::xid::text")
                    .fetch_one(pool)
                    .await?;
            let deadline = tokio::time::Instant::now() + SCRUB_DEADLINE;
            loop {
                let older: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE pid <> pg_backend_pid() AND (age(backend_xid) > age($1::xid) \
                     OR (datname = current_database() AND age(backend_xmin) > age($1::xid)))",
                )
                .bind(&past)
                .fetch_one(pool)
                .await?;
                if older == 0 {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    tracing::warn!(
                        "{older} backend(s) still run or see transactions older than an erasure; \
                         the old versions of the erased rows leave the files \
                         at the next erasure or VACUUM FULL"
                    );
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            for table in ["events", "log_leaf_blocks"] {
                sqlx::query(&format!("VACUUM FULL {table}"))
                    .execute(pool)
                    .await?;
            }
            Ok(())
        }
    }
}
