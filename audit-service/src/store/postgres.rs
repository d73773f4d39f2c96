//! The audit store on PostgreSQL, shared by every audit-service replica:
//! sqlx for migrations and reads, and a one-connection pool for the writer.
//!
//! The writer thread drives its async connection with `Handle::block_on`
//! on the service's runtime: the writer stays one serial group-commit
//! stage on a thread of its own, and the connection's I/O is polled by the
//! runtime's reactor like any other.
//!
//! One batch is one statement and one round trip: the rows travel as
//! arrays, `UNNEST` turns them back into rows, `ON CONFLICT (source, id) DO
//! NOTHING` skips events any replica already stored, and `RETURNING` names
//! the rows inserted. (BEGIN, the lock, the INSERT and COMMIT as four
//! statements, on a connection checked out of the pool per batch, measured
//! a quarter of SQLite's rate for single-event requests.)
//!
//! Seq order is commit order, across replicas: a transaction takes the
//! store's advisory lock before its INSERT draws seqs and keeps it until it
//! has committed (the lock is released after the commit is visible), so no
//! replica can draw a seq while a smaller one is still uncommitted. Without
//! it, a reader paging by `seq > after` (the query API, the live tail)
//! could pass seq 10 while it is in flight, see 11 committed, and never
//! come back for 10. What it costs: replicas take turns for the INSERT and
//! its commit (one WAL flush per batch), so the database writes one batch
//! at a time; each replica still decodes, validates and batches in
//! parallel, and a batch of 1,000 events holds the lock for a few
//! milliseconds.

use super::page::{Bind, Dialect, Page, PageQuery};
use super::writer::BatchWriter;
use super::{EventRow, StoreError, StoredEvent};
use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use cloudevents_wire::Transport;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::{Query, QueryAs};
use sqlx::{PgConnection, PgPool, Postgres, Row};
use std::collections::HashMap;
use tokio::runtime::Handle;

/// Connections for queries, the live tail and readiness.
const READ_CONNECTIONS: u32 = 8;

/// The advisory lock that orders seqs (an arbitrary constant, distinct
/// from user-service's, as both may share one database).
const SEQ_LOCK: i64 = 0x0061_7564_6974_0001;

/// The whole batch in one statement, run as its own (implicit)
/// transaction: one round trip, whose answer comes after the commit (sqlx
/// reads to the server's ReadyForQuery, which follows the commit and, with
/// `synchronous_commit=on`, its WAL flush). The lock is taken before any
/// seq is drawn: every row the INSERT receives comes out of the sort, which
/// has read the whole join, which cannot yield a row before the `seq_lock`
/// CTE (materialized, its function volatile) has run; it is held until the
/// implicit commit.
const INSERT: &str = "WITH seq_lock AS MATERIALIZED (SELECT pg_advisory_xact_lock($9)) \
     INSERT INTO events \
     (source, id, type, subject, time, received_at, transport, event_json) \
     SELECT r.source, r.id, r.type, r.subject, r.time::timestamptz, $6::timestamptz, \
     r.transport, r.event_json \
     FROM seq_lock, UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
     $7::text[], $8::text[]) WITH ORDINALITY \
     AS r(source, id, type, subject, time, transport, event_json, n) \
     ORDER BY r.n \
     ON CONFLICT (source, id) DO NOTHING \
     RETURNING seq, source, id";

/// Opens the read pool (migrating the database) and the writer.
pub(super) async fn open(database_url: &str) -> anyhow::Result<(PgPool, PgWriter)> {
    let shown = settings::redact::url(database_url);
    let pool = service_kit::db::connect_postgres(database_url, READ_CONNECTIONS, "audit-service")
        .await
        .with_context(|| format!("Failed to connect to the audit database {shown}"))?;
    sqlx::migrate!("./migrations/postgres")
        .run(&pool)
        .await
        .context("Failed to migrate the audit database")?;
    let writer = service_kit::db::connect_postgres(database_url, 1, "audit-service writer")
        .await
        .with_context(|| format!("Failed to connect to the audit database {shown}"))?;
    Ok((
        pool,
        PgWriter {
            pool: writer,
            connection: None,
            runtime: Handle::current(),
        },
    ))
}

pub(super) struct PgWriter {
    /// Where the writer's connection comes from, again after the server
    /// restarted.
    pool: PgPool,
    /// Kept from one batch to the next (checking a connection out of the
    /// pool pings the server: a round trip per batch); dropped after an
    /// error, so the next batch starts on a new one.
    connection: Option<PoolConnection<Postgres>>,
    runtime: Handle,
}

impl Drop for PgWriter {
    /// Hands the connection back inside the runtime: sqlx returns a pooled
    /// connection by spawning a task, which panics on the writer thread,
    /// outside any runtime, when the writer ends at shutdown.
    fn drop(&mut self) {
        let _runtime = self.runtime.enter();
        drop(self.connection.take());
    }
}

impl BatchWriter for PgWriter {
    fn insert_batch(
        &mut self,
        rows: &[(&EventRow, Transport)],
        received_at: &str,
    ) -> Result<Vec<Option<i64>>, StoreError> {
        self.runtime.block_on(async {
            let mut connection = match self.connection.take() {
                Some(connection) => connection,
                None => self.pool.acquire().await?,
            };
            let inserted = insert(&mut connection, rows, received_at).await;
            // A refusal leaves the connection as it was (the statement's
            // implicit transaction rolled back); any other error may not.
            if inserted.as_ref().is_ok() || inserted.as_ref().is_err_and(StoreError::is_refusal) {
                self.connection = Some(connection);
            }
            inserted
        })
    }

    fn record_attributes(&mut self, names: &[String]) -> Result<(), StoreError> {
        self.runtime.block_on(async {
            let mut connection = match self.connection.take() {
                Some(connection) => connection,
                None => self.pool.acquire().await?,
            };
            sqlx::query(
                "INSERT INTO event_attributes (name) SELECT unnest($1::text[]) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(names)
            .execute(&mut *connection)
            .await?;
            self.connection = Some(connection);
            Ok(())
        })
    }

    /// Never sent on PostgreSQL (`Store::run_on_writer`); dropping the job
    /// drops its reply channel, which its caller sees as a failure.
    fn run_job(&mut self, job: super::WriterJob) {
        drop(job);
    }
}

async fn insert(
    connection: &mut PgConnection,
    rows: &[(&EventRow, Transport)],
    received_at: &str,
) -> Result<Vec<Option<i64>>, StoreError> {
    let column = |f: fn(&EventRow) -> Option<&str>| -> Vec<Option<&str>> {
        rows.iter().map(|(row, _)| f(row)).collect()
    };
    let transports: Vec<&str> = rows.iter().map(|(_, t)| t.as_str()).collect();
    let inserted: Vec<(i64, String, String)> = sqlx::query_as(INSERT)
        .bind(column(|r| Some(&r.source)))
        .bind(column(|r| Some(&r.id)))
        .bind(column(|r| Some(&r.ty)))
        .bind(column(|r| r.subject.as_deref()))
        .bind(column(|r| r.time.as_deref()))
        .bind(received_at)
        .bind(transports)
        .bind(column(|r| Some(&r.json)))
        .bind(SEQ_LOCK)
        .fetch_all(connection)
        .await?;
    // Each inserted key goes to its first row in the batch; a second row
    // with the same (source, id) is a duplicate, as on SQLite.
    let mut seqs: HashMap<(&str, &str), i64> = inserted
        .iter()
        .map(|(seq, source, id)| ((source.as_str(), id.as_str()), *seq))
        .collect();
    Ok(rows
        .iter()
        .map(|(row, _)| seqs.remove(&(row.source.as_str(), row.id.as_str())))
        .collect())
}

/// Reads a page of stored events for the live tail's poll: up to
/// `query.limit` events and `max_bytes` of their JSON, at least one (what
/// `Store::page` does, on the pool the poll holds).
pub(super) async fn page(
    pool: &PgPool,
    query: &PageQuery,
    max_bytes: usize,
) -> Result<Page, StoreError> {
    let sizes = sizes(pool, query, query.limit as usize + 1).await?;
    let Some((last, more)) = query.cut(&sizes, max_bytes) else {
        return Ok(Page::empty());
    };
    Ok(Page {
        events: events(pool, query, last).await?,
        next_after: more.then_some(last),
    })
}

/// The seqs and JSON sizes of the next `rows` events `query` selects.
pub(super) async fn sizes(
    pool: &PgPool,
    query: &PageQuery,
    rows: usize,
) -> Result<Vec<(i64, i64)>, StoreError> {
    let (sql, binds) = query.sizes_sql(Dialect::Postgres, rows);
    let sizes: Vec<(i64, i32)> = bind(sqlx::query_as(&sql), binds).fetch_all(pool).await?;
    Ok(sizes.into_iter().map(|(s, n)| (s, i64::from(n))).collect())
}

/// The events `query` selects, up to and including seq `last`.
pub(super) async fn events(
    pool: &PgPool,
    query: &PageQuery,
    last: i64,
) -> Result<Vec<StoredEvent>, StoreError> {
    let (sql, binds) = query.events_sql(Dialect::Postgres, last);
    let rows = bind(sqlx::query(&sql), binds).fetch_all(pool).await?;
    rows.iter().map(stored_event).collect()
}

fn bind<'q, Q: BindText<'q>>(mut query: Q, binds: Vec<Bind<'q>>) -> Q {
    for value in binds {
        query = match value {
            Bind::Int(i) => query.int(i),
            Bind::Text(t) => query.text(t),
        };
    }
    query
}

/// `bind` for both kinds of query sqlx builds.
trait BindText<'q> {
    fn int(self, value: i64) -> Self;
    fn text(self, value: &'q str) -> Self;
}

impl<'q, O> BindText<'q> for QueryAs<'q, Postgres, O, PgArguments> {
    fn int(self, value: i64) -> Self {
        self.bind(value)
    }
    fn text(self, value: &'q str) -> Self {
        self.bind(value)
    }
}

impl<'q> BindText<'q> for Query<'q, Postgres, PgArguments> {
    fn int(self, value: i64) -> Self {
        self.bind(value)
    }
    fn text(self, value: &'q str) -> Self {
        self.bind(value)
    }
}

/// The newest seq, 0 for an empty store.
pub(super) async fn last_seq(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COALESCE(max(seq), 0) FROM events")
        .fetch_one(pool)
        .await
}

fn stored_event(row: &PgRow) -> Result<StoredEvent, StoreError> {
    let transport: &str = row.try_get("transport")?;
    let received_at: DateTime<Utc> = row.try_get("received_at")?;
    Ok(StoredEvent {
        seq: row.try_get("seq")?,
        // The text the writer stamped, as SQLite keeps it.
        received_at: received_at
            .to_rfc3339_opts(SecondsFormat::Micros, true)
            .into(),
        transport: transport
            .parse()
            .map_err(|e: String| sqlx::Error::Decode(e.into()))?,
        json: row.try_get("event_json")?,
        source: row.try_get("source")?,
        id: row.try_get("id")?,
        ty: row.try_get("type")?,
        subject: row.try_get("subject")?,
        trace: None,
        trail: None,
    })
}
