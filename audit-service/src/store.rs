//! The audit store: SQLite with one writer task that group-commits whatever
//! the ingest paths have queued, and a broadcast of every newly stored event.
//!
//! Durability is `synchronous=FULL` (shared::db), so every commit is an
//! fsync. Giving each request its own transaction would cap throughput at
//! the disk's fsync rate; instead one task owns all writes, takes every
//! request waiting in its queue, writes them in ONE transaction and answers
//! all the waiters after the commit. Under load many events share one fsync,
//! and an answer still means "on disk".

use chrono::{SecondsFormat, Utc};
use cloudevents::{AttributesReader, Event};
use serde::Serialize;
use serde_json::value::RawValue;
use shared::cloudevents;
use shared::config::Transport;
use sqlx::{Sqlite, SqlitePool, Transaction};
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

/// Requests waiting for the writer; a full queue makes ingest wait, which is
/// the back-pressure HTTP clients and the Kafka consumer feel.
const QUEUE_CAPACITY: usize = 1024;
/// The most events one transaction takes, so a flood of requests still gets
/// answers in bounded time.
const MAX_EVENTS_PER_COMMIT: usize = 5000;
/// Live-tail subscribers that fall further behind than this miss events
/// (they are told so) rather than holding memory.
const BROADCAST_CAPACITY: usize = 4096;

/// One stored event as the query API and the live tail serve it.
#[derive(Debug, Clone, Serialize)]
pub struct StoredEvent {
    pub seq: i64,
    pub received_at: String,
    pub transport: &'static str,
    /// The CloudEvent in JSON format exactly as stored.
    pub event: Box<RawValue>,
    #[serde(skip)]
    pub source: String,
    #[serde(skip)]
    pub id: String,
    #[serde(skip)]
    pub ty: String,
    #[serde(skip)]
    pub subject: Option<String>,
}

/// What a write did: new rows and duplicates that were already there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteOutcome {
    pub stored: usize,
    pub duplicates: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("failed to serialize a CloudEvent")]
    Serialize(#[from] serde_json::Error),
    #[error("the store writer has stopped")]
    WriterGone,
}

struct WriteRequest {
    events: Vec<Event>,
    transport: Transport,
    reply: oneshot::Sender<Result<WriteOutcome, Arc<StoreError>>>,
}

/// A cheap handle to the store: clone it into every task that writes or reads.
#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
    writes: mpsc::Sender<WriteRequest>,
    stored: broadcast::Sender<Arc<StoredEvent>>,
}

impl Store {
    /// Opens the database, applies the migrations and starts the writer task.
    /// The writer runs until every `Store` handle is dropped, so requests
    /// already queued at shutdown are still committed and answered.
    pub async fn open(database_url: &str) -> anyhow::Result<(Store, JoinHandle<()>)> {
        use anyhow::Context;
        // Readers (queries, readiness) get their own connections; writes go
        // through one connection owned by the writer.
        let pool = shared::db::connect_sqlite(database_url, 8)
            .await
            .with_context(|| format!("Failed to open the audit database {database_url}"))?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .context("Failed to migrate the audit database")?;
        let (writes, queue) = mpsc::channel(QUEUE_CAPACITY);
        let (stored, _) = broadcast::channel(BROADCAST_CAPACITY);
        let writer = tokio::spawn(run_writer(pool.clone(), queue, stored.clone()));
        Ok((
            Store {
                pool,
                writes,
                stored,
            },
            writer,
        ))
    }

    /// Stores `events` (duplicates by (source, id) are acknowledged, not
    /// stored again) and returns once they are committed to disk.
    #[tracing::instrument(name = "store_write", skip_all, fields(events = events.len(), transport = transport.as_str()))]
    pub async fn write(
        &self,
        events: Vec<Event>,
        transport: Transport,
    ) -> Result<WriteOutcome, Arc<StoreError>> {
        if events.is_empty() {
            return Ok(WriteOutcome::default());
        }
        let (reply, answer) = oneshot::channel();
        let request = WriteRequest {
            events,
            transport,
            reply,
        };
        self.writes
            .send(request)
            .await
            .map_err(|_| Arc::new(StoreError::WriterGone))?;
        answer.await.map_err(|_| Arc::new(StoreError::WriterGone))?
    }

    /// Every event stored from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<StoredEvent>> {
        self.stored.subscribe()
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// True when the database answers a query.
    pub async fn is_reachable(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }
}

async fn run_writer(
    pool: SqlitePool,
    mut queue: mpsc::Receiver<WriteRequest>,
    stored: broadcast::Sender<Arc<StoredEvent>>,
) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        let mut events = batch[0].events.len();
        // Take what is already waiting, without waiting for more: an idle
        // service commits a lone event at once.
        while events < MAX_EVENTS_PER_COMMIT {
            match queue.try_recv() {
                Ok(request) => {
                    events += request.events.len();
                    batch.push(request);
                }
                Err(_) => break,
            }
        }
        metrics::histogram!("audit_commit_batch_events").record(events as f64);
        let started = std::time::Instant::now();
        let result = write_batch(&pool, &batch).await;
        metrics::histogram!("audit_commit_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok((outcomes, new_rows)) => {
                for row in new_rows {
                    // No subscribers is normal; the store does not depend on them.
                    let _ = stored.send(Arc::new(row));
                }
                for (request, outcome) in batch.into_iter().zip(outcomes) {
                    let _ = request.reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                tracing::error!(error = ?e, events, "failed to commit audit events");
                let e = Arc::new(e);
                for request in batch {
                    let _ = request.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Writes every request of `batch` in one transaction. Logs and counts only
/// after the commit, so a rolled-back batch leaves no trace of "stored".
async fn write_batch(
    pool: &SqlitePool,
    batch: &[WriteRequest],
) -> Result<(Vec<WriteOutcome>, Vec<StoredEvent>), StoreError> {
    // IMMEDIATE takes the write lock up front, so two processes sharing the
    // file queue on the busy timeout instead of failing on a lock upgrade.
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let received_at = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut new_rows = Vec::new();
    for request in batch {
        let mut outcome = WriteOutcome::default();
        for event in &request.events {
            match insert(&mut tx, event, request.transport, &received_at).await? {
                Some(row) => {
                    outcome.stored += 1;
                    new_rows.push(row);
                }
                None => outcome.duplicates += 1,
            }
        }
        outcomes.push(outcome);
    }
    tx.commit().await?;

    for row in &new_rows {
        tracing::info!(
            r#type = %row.ty,
            source = %row.source,
            id = %row.id,
            subject = row.subject.as_deref(),
            transport = row.transport,
            seq = row.seq,
            "audit event stored"
        );
    }
    for (request, outcome) in batch.iter().zip(&outcomes) {
        let transport = request.transport.as_str();
        metrics::counter!("audit_events_stored_total", "transport" => transport)
            .increment(outcome.stored as u64);
        metrics::counter!("audit_events_duplicate_total", "transport" => transport)
            .increment(outcome.duplicates as u64);
        if outcome.duplicates > 0 {
            tracing::debug!(
                duplicates = outcome.duplicates,
                transport,
                "duplicate audit events acknowledged"
            );
        }
    }
    Ok((outcomes, new_rows))
}

/// Inserts one event; `None` when (source, id) is already stored.
async fn insert(
    tx: &mut Transaction<'static, Sqlite>,
    event: &Event,
    transport: Transport,
    received_at: &str,
) -> Result<Option<StoredEvent>, StoreError> {
    let json = serde_json::to_string(event)?;
    let time = event
        .time()
        .map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true));
    let seq: Option<i64> = sqlx::query_scalar(
        "INSERT INTO events (source, id, type, subject, time, received_at, transport, event_json)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (source, id) DO NOTHING
         RETURNING seq",
    )
    .bind(event.source())
    .bind(event.id())
    .bind(event.ty())
    .bind(event.subject())
    .bind(time)
    .bind(received_at)
    .bind(transport.as_str())
    .bind(&json)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(seq) = seq else {
        return Ok(None);
    };
    Ok(Some(StoredEvent {
        seq,
        received_at: received_at.to_owned(),
        transport: transport.as_str(),
        event: RawValue::from_string(json)?,
        source: event.source().to_owned(),
        id: event.id().to_owned(),
        ty: event.ty().to_owned(),
        subject: event.subject().map(str::to_owned),
    }))
}
