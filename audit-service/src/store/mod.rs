//! The audit store: where every event ends, whatever brought it.
//!
//! Its unit of work is a batch. Ingest paths hand it whole requests (one
//! event, an HTTP batch, a Kafka poll); one writer takes everything queued,
//! writes it in ONE transaction with ONE fsync (group commit, see `writer`)
//! and answers each request only after that commit. Durability is
//! `synchronous=FULL`, so an answer means "on disk", and under load many
//! requests share one fsync.
//!
//! Each event is serialized once, by the task that decoded it (`EventRow`),
//! not by the writer: the writer is the one serial stage, so it does nothing
//! but insert and commit. Logging the stored events, counting them and
//! feeding the live tail happen after the commit on a thread of their own.
//!
//! The database is SQLite (`sqlite`, the embedded default) or PostgreSQL
//! (`postgres`, shared by every replica); each implements the writer's
//! [`writer::BatchWriter`], and reads go through [`Store::page`], one SQL
//! text for both (`page`). On PostgreSQL the live tail is fed by polling
//! the table (`tail_poll`), so it shows every replica's events.

mod annotate;
pub mod attributes;
pub(crate) mod compact_json;
pub mod leaf_block;
pub mod members;
mod page;
mod postgres;
mod sqlite;
pub mod tail;
mod tail_poll;
mod writer;

use chrono::SecondsFormat;
use cloudevents::event::ExtensionValue;
use cloudevents::{AttributesReader, Event};
use cloudevents_wire::decode::{AsReceived, Decoded};
use cloudevents_wire::tracecontext;
use cloudevents_wire::Transport;
use serde::ser::{SerializeStruct, Serializer};
use serde::Serialize;
use serde_json::value::RawValue;
use service_kit::db::Kind;
use std::collections::HashSet;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

pub use annotate::{Leaf, Trail};
pub use page::{Page, PageQuery};
pub use tail::{Received, Subscriber, Tail, Tapped, TAIL_MAX_BYTES};
pub use writer::WriterHandle;

/// Requests waiting for the writer. A full queue makes ingest wait: the
/// back-pressure HTTP clients and the Kafka consumer feel.
const QUEUE_CAPACITY: usize = 4096;

/// One event ready to be inserted: its key attributes and its JSON form,
/// serialized once by whoever decoded it.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub source: String,
    pub id: String,
    pub ty: String,
    pub subject: Option<String>,
    /// `time` as a UTC instant, so the column sorts; the JSON keeps the
    /// value as it was sent.
    pub time: Option<String>,
    /// The CloudEvent in the JSON event format, with its attribute values
    /// as they were received.
    pub json: String,
    /// The event's trace context (the distributed-tracing extension), for
    /// the log line and the store span after the commit.
    pub trace: Option<TraceContext>,
    /// A fingerprint of its extension names (`attributes::fingerprint`), so
    /// the writer records the names of a set it has not seen.
    pub extensions: u64,
}

/// An event's `traceparent`, and its `tracestate` when spans are exported
/// (only a span needs it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    pub traceparent: String,
    pub tracestate: Option<String>,
}

impl TraceContext {
    fn of(event: &Event) -> Option<Self> {
        let text = |name: &str| match event.extension(name) {
            Some(ExtensionValue::String(s)) => Some(s.clone()),
            _ => None,
        };
        let traceparent = text(tracecontext::TRACEPARENT)?;
        let tracestate = if service_kit::telemetry::traces_exported() {
            text(tracecontext::TRACESTATE)
        } else {
            None
        };
        Some(TraceContext {
            traceparent,
            tracestate,
        })
    }

    /// The trace id, for the log line.
    pub fn trace_id(&self) -> Option<&str> {
        tracecontext::trace_id_of(&self.traceparent)
    }
}

impl EventRow {
    pub fn from_event(event: &Event) -> Result<Self, serde_json::Error> {
        Self::new(event, &AsReceived::default())
    }

    /// The row of a decoded event: its JSON as the SDK writes it, with the
    /// attribute values it arrived with put back.
    pub fn from_decoded(decoded: &Decoded) -> Result<Self, serde_json::Error> {
        Self::new(&decoded.event, &decoded.as_received)
    }

    fn new(event: &Event, as_received: &AsReceived) -> Result<Self, serde_json::Error> {
        let mut json = serde_json::to_string(event)?;
        as_received.restore(&mut json);
        Ok(EventRow {
            source: event.source().to_string(),
            id: event.id().to_owned(),
            ty: event.ty().to_owned(),
            subject: event.subject().map(str::to_owned),
            time: event
                .time()
                .map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
            json,
            trace: TraceContext::of(event),
            extensions: attributes::fingerprint(event.iter_extensions().map(|(name, _)| name)),
        })
    }
}

/// One stored event as the query API and the live tail serve it.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub seq: i64,
    pub received_at: Arc<str>,
    pub transport: Transport,
    pub source: String,
    pub id: String,
    pub ty: String,
    pub subject: Option<String>,
    /// The CloudEvent in the JSON format, exactly as stored.
    pub json: String,
    /// The event's trace context; set for events just stored, not for rows
    /// read back.
    pub trace: Option<TraceContext>,
    /// Its leaf in the transparency log and whether its data was erased;
    /// set for rows read back (`annotate`), not for events just stored.
    pub trail: Option<Box<Trail>>,
}

impl Serialize for StoredEvent {
    /// `{"seq", "received_at", "transport", "event"}` with the stored JSON
    /// written as it is, not parsed into a value and printed again; then
    /// `"erased": true` for an event whose data was erased, and `"log"`
    /// once the event is in the transparency log.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let event: &RawValue =
            serde_json::from_str(&self.json).map_err(serde::ser::Error::custom)?;
        let mut item = serializer.serialize_struct("StoredEvent", 6)?;
        item.serialize_field("seq", &self.seq)?;
        item.serialize_field("received_at", &*self.received_at)?;
        item.serialize_field("transport", self.transport.as_str())?;
        item.serialize_field("event", event)?;
        if let Some(trail) = &self.trail {
            if trail.erased {
                item.serialize_field("erased", &true)?;
            }
            if let Some(leaf) = &trail.leaf {
                item.serialize_field("log", leaf)?;
            }
        }
        item.end()
    }
}

/// What a write did: new rows, duplicates that were already there, and
/// rows the database refused for what they hold.
#[derive(Debug, Default)]
pub struct WriteOutcome {
    pub stored: usize,
    pub duplicates: usize,
    /// Rows the database refused for a value in them, in request order; the
    /// request's other rows are stored (see `writer`).
    pub refused: Vec<Refused>,
}

/// A row the database refused for a value in it: it would be refused
/// again, so a sender must not retry it, and a broker consumer
/// dead-letters it.
#[derive(Debug)]
pub struct Refused {
    /// Where the row was in its request.
    pub index: usize,
    pub row: EventRow,
    pub error: Arc<StoreError>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("database error")]
    Sqlite(#[from] rusqlite::Error),
    #[error("failed to serialize a CloudEvent")]
    Serialize(#[from] serde_json::Error),
    #[error("the store writer has stopped")]
    WriterGone,
    /// Recording an erasure as an event failed.
    #[error("failed to record an erasure: {0}")]
    Record(String),
}

impl StoreError {
    /// The error and its causes on one line (`database error: invalid byte
    /// sequence ...`), for a dead letter's reason.
    pub fn describe(&self) -> String {
        let mut text = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(error) = cause {
            text.push_str(": ");
            text.push_str(&error.to_string());
            cause = error.source();
        }
        text
    }

    /// True when the database refused the statement for the data in it (a
    /// value it cannot hold, a constraint), so the same rows would be
    /// refused again; false for everything that may pass on a retry (a
    /// connection lost, a lock timeout, the writer gone).
    pub fn is_refusal(&self) -> bool {
        match self {
            // SQLSTATE classes 22 (data exception: a NUL in text), 23
            // (integrity constraint violation) and 54 (program limit
            // exceeded: an index entry over the b-tree limit).
            StoreError::Database(sqlx::Error::Database(e)) => e
                .code()
                .is_some_and(|code| ["22", "23", "54"].iter().any(|c| code.starts_with(c))),
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                rusqlite::ErrorCode::ConstraintViolation
                    | rusqlite::ErrorCode::TooBig
                    | rusqlite::ErrorCode::TypeMismatch
            ),
            _ => false,
        }
    }
}

/// A write that did not commit. The rows come back so that a caller that
/// retries (the Kafka consumer) needs no copy of its own.
#[derive(Debug)]
pub struct WriteFailed {
    pub error: Arc<StoreError>,
    pub rows: Vec<EventRow>,
}

/// Work the writer runs on its own SQLite connection, before the next
/// batch: another writer of the same file would contend with ingest for
/// the write lock (SQLite's busy wait starved the transparency log's
/// sequencer). Jobs jump the queue of ingest requests, so a job waits for
/// one batch at most. The job answers its caller itself.
pub type WriterJob = Box<dyn FnOnce(&mut rusqlite::Connection) + Send>;

/// What the writer's queue carries.
enum Command {
    Write(WriteRequest),
    /// A job is waiting (`Store::run_on_writer`): wakes an idle writer.
    Wake,
    /// Refuse what comes after; commit and answer what is queued, then stop.
    Close,
}

/// One ingest request waiting for the writer.
struct WriteRequest {
    rows: Vec<EventRow>,
    transport: Transport,
    reply: oneshot::Sender<Result<WriteOutcome, WriteFailed>>,
}

/// Connections for queries, the live tail and readiness; the writer has
/// its own.
#[derive(Clone)]
pub enum Readers {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

/// A cheap handle to the store: clone it into every task that writes or reads.
#[derive(Clone)]
pub struct Store {
    readers: Readers,
    writes: mpsc::Sender<Command>,
    /// Jobs for the writer, ahead of `writes` (SQLite only).
    jobs: std::sync::mpsc::Sender<WriterJob>,
    tail: Tail,
}

impl Store {
    /// Opens the database, applies the migrations and starts the writer.
    /// The writer runs until the returned handle closes it (or every handle
    /// is dropped); requests already queued then are still committed and
    /// answered.
    pub async fn open(database_url: &str) -> anyhow::Result<(Store, WriterHandle)> {
        let (writes, queue) = mpsc::channel(QUEUE_CAPACITY);
        let (jobs, job_queue) = std::sync::mpsc::channel();
        let tail = Tail::new(TAIL_MAX_BYTES);
        let (readers, writer) = match Kind::of(database_url)? {
            Kind::Sqlite => {
                let (pool, backend) = sqlite::open(database_url).await?;
                // One process writes the file: the writer feeds the tail.
                let feed = writer::Feed::Tail(tail.clone());
                let writer = writer::spawn(backend, writes.clone(), queue, job_queue, feed)?;
                (Readers::Sqlite(pool), writer)
            }
            Kind::Postgres => {
                let (pool, backend) = postgres::open(database_url).await?;
                // Every replica writes the table: the tail reads it back,
                // woken at once by this replica's commits.
                let committed = Arc::new(tokio::sync::Notify::new());
                let poll = tail_poll::spawn(pool.clone(), tail.clone(), committed.clone());
                let feed = writer::Feed::Wake(committed);
                let writer =
                    writer::spawn(backend, writes.clone(), queue, job_queue, feed)?.with_task(poll);
                (Readers::Postgres(pool), writer)
            }
        };
        Ok((
            Store {
                readers,
                writes,
                jobs,
                tail,
            },
            writer,
        ))
    }

    /// Stores `events` (duplicates by (source, id) are acknowledged, not
    /// stored again) and returns once they are committed to disk.
    pub async fn write(
        &self,
        events: &[Event],
        transport: Transport,
    ) -> Result<WriteOutcome, Arc<StoreError>> {
        let rows = events
            .iter()
            .map(EventRow::from_event)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Arc::new(e.into()))?;
        self.write_rows(rows, transport)
            .await
            .map_err(|failed| failed.error)
    }

    /// As `write`, for events already serialized.
    pub async fn write_rows(
        &self,
        rows: Vec<EventRow>,
        transport: Transport,
    ) -> Result<WriteOutcome, WriteFailed> {
        if rows.is_empty() {
            return Ok(WriteOutcome::default());
        }
        let (reply, answer) = oneshot::channel();
        let request = WriteRequest {
            rows,
            transport,
            reply,
        };
        if let Err(refused) = self.writes.send(Command::Write(request)).await {
            let rows = match refused.0 {
                Command::Write(request) => request.rows,
                Command::Close | Command::Wake => Vec::new(),
            };
            return Err(WriteFailed {
                error: Arc::new(StoreError::WriterGone),
                rows,
            });
        }
        // The writer answers every request it took; no answer means its
        // thread died with the rows.
        answer.await.unwrap_or_else(|_| {
            Err(WriteFailed {
                error: Arc::new(StoreError::WriterGone),
                rows: Vec::new(),
            })
        })
    }

    /// Runs `job` on the writer's connection between two batches, on
    /// SQLite; `None` on PostgreSQL, where writers do not contend so. The
    /// job's own channel carries its result; `WriterGone` when the writer
    /// has stopped.
    pub async fn run_on_writer(&self, job: WriterJob) -> Option<Result<(), StoreError>> {
        if !matches!(self.readers, Readers::Sqlite(_)) {
            return None;
        }
        if self.jobs.send(job).is_err() {
            return Some(Err(StoreError::WriterGone));
        }
        // A full queue means a busy writer, which takes the job after its
        // batch anyway.
        match self.writes.try_send(Command::Wake) {
            Err(mpsc::error::TrySendError::Closed(_)) => Some(Err(StoreError::WriterGone)),
            _ => Some(Ok(())),
        }
    }

    /// The read pool, for the transparency log's own tables (`tlog`).
    pub fn readers(&self) -> &Readers {
        &self.readers
    }

    /// Every event stored from now on, for the live tail.
    pub fn subscribe(&self) -> Subscriber {
        self.tail.subscribe()
    }

    /// The feed the live tail subscribes to, for the transparency log's
    /// sequencer to tap (`Tail::tap`).
    pub fn feed(&self) -> &Tail {
        &self.tail
    }

    /// The next page of stored events in seq order, as `query` asks: up
    /// to `query.limit` events and `max_bytes` of their JSON, at least one.
    /// Two queries: the sizes first, to find where the page ends, then the
    /// events up to there.
    pub async fn page(&self, query: &PageQuery, max_bytes: usize) -> Result<Page, StoreError> {
        let sizes = self.sizes(query, query.limit as usize + 1).await?;
        let Some((last, more)) = query.cut(&sizes, max_bytes) else {
            return Ok(Page::empty());
        };
        Ok(Page {
            events: self.events(query, last).await?,
            next_after: more.then_some(last),
        })
    }

    /// The seqs and JSON sizes of the next `rows` events `query` selects
    /// (its `limit` aside), in seq order, without reading the events.
    pub async fn sizes(
        &self,
        query: &PageQuery,
        rows: usize,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        match &self.readers {
            Readers::Sqlite(pool) => sqlite::sizes(pool, query, rows).await,
            Readers::Postgres(pool) => postgres::sizes(pool, query, rows).await,
        }
    }

    /// The events `query` selects (its `limit` aside) up to and including
    /// seq `last`, in seq order: what a `sizes` answer measured, since no
    /// event appears later with a seq at or below one already committed.
    pub async fn events(
        &self,
        query: &PageQuery,
        last: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let mut events = match &self.readers {
            Readers::Sqlite(pool) => sqlite::events(pool, query, last).await?,
            Readers::Postgres(pool) => postgres::events(pool, query, last).await?,
        };
        annotate::annotate(&self.readers, &mut events).await?;
        Ok(events)
    }

    /// Every extension name a stored event has had (`attributes`).
    pub async fn attribute_names(&self) -> Result<HashSet<String>, StoreError> {
        const SQL: &str = "SELECT name FROM event_attributes";
        let names: Vec<String> = match &self.readers {
            Readers::Sqlite(pool) => sqlx::query_scalar(SQL).fetch_all(pool).await?,
            Readers::Postgres(pool) => sqlx::query_scalar(SQL).fetch_all(pool).await?,
        };
        Ok(names.into_iter().collect())
    }

    /// The newest seq, 0 for an empty store.
    pub async fn last_seq(&self) -> Result<i64, StoreError> {
        Ok(match &self.readers {
            Readers::Sqlite(pool) => sqlite::last_seq(pool).await?,
            Readers::Postgres(pool) => postgres::last_seq(pool).await?,
        })
    }

    /// True when the database answers a query.
    pub async fn is_reachable(&self) -> bool {
        match &self.readers {
            Readers::Sqlite(pool) => sqlx::query("SELECT 1").execute(pool).await.is_ok(),
            Readers::Postgres(pool) => sqlx::query("SELECT 1").execute(pool).await.is_ok(),
        }
    }
}
