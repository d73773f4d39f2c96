//! The group-commit writer: one thread owns every write to the audit store.
//!
//! Giving each request its own transaction would cap throughput at the
//! disk's fsync rate. Instead the writer takes every request waiting in its
//! queue, inserts them all in ONE transaction and answers each waiter after
//! the commit: under load many requests share one fsync, and an idle store
//! commits a lone event at once (it never waits for more to arrive).
//!
//! The writer is a dedicated OS thread rather than a task: inserting is
//! blocking work on a database connection, and a thread that does nothing
//! else keeps the one serial stage of the ingest path free of scheduling
//! hops. What happens after a commit (the log line per event, metrics, the
//! live tail's feed, `tail`) runs on a second thread, so the writer goes back
//! to its queue as soon as the waiters have their answers.

use super::{
    Command, EventRow, StoreError, StoredEvent, Tail, TraceContext, WriteFailed, WriteOutcome,
    WriteRequest, WriterJob,
};
use chrono::{SecondsFormat, Utc};
use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::{Span as _, SpanKind, TraceContextExt, Tracer as _};
use opentelemetry::KeyValue;
use shared::config::Transport;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime};
use tokio::sync::mpsc;

/// The most events one transaction takes, so a flood of requests still gets
/// answers in bounded time.
const MAX_EVENTS_PER_COMMIT: usize = 5000;
/// Committed batches waiting to be logged and handed to the live tail. When logging falls
/// this far behind, the writer waits for it: log lines are not dropped, and
/// memory holds at most this many committed batches (64 held up to 140 MiB
/// under a Kafka backlog).
const COMMITTED_CAPACITY: usize = 2;

/// What a database backend does for the writer: insert a batch of rows in
/// one transaction and commit it durably.
pub trait BatchWriter: Send + 'static {
    /// Inserts `rows` in order in one transaction, skipping rows whose
    /// (source, id) is already stored, and commits. Returns each row's new
    /// seq, or `None` for a duplicate, in the order of `rows`. Nothing is
    /// visible to readers before it returns `Ok`.
    fn insert_batch(
        &mut self,
        rows: &[(&EventRow, Transport)],
        received_at: &str,
    ) -> Result<Vec<Option<i64>>, StoreError>;

    /// Runs a job on the writer's connection (`Store::run_on_writer`; sent
    /// on SQLite only).
    fn run_job(&mut self, job: WriterJob);
}

/// Where committed events go besides the log.
pub(super) enum Feed {
    /// Straight to the live tail (one process writes the database).
    Tail(Tail),
    /// A wake-up for the task that reads the shared table back for the
    /// live tail (several replicas write it, see `tail_poll`).
    Wake(Arc<tokio::sync::Notify>),
}

/// The writer and logger threads.
pub struct WriterHandle {
    writer: JoinHandle<()>,
    logger: JoinHandle<()>,
    queue: mpsc::Sender<Command>,
    /// A task that lives as long as the writer (the PostgreSQL tail poll).
    task: Option<tokio::task::JoinHandle<()>>,
}

impl WriterHandle {
    pub(super) fn with_task(mut self, task: tokio::task::JoinHandle<()>) -> Self {
        self.task = Some(task);
        self
    }

    /// Stops the writer and waits for it: what is queued now is committed,
    /// answered and logged; writes sent after are refused (`WriterGone`).
    /// Closing, rather than waiting for the last `Store` handle to go, lets
    /// shutdown end even while a connection that outlived the grace period
    /// still holds one.
    pub async fn close(self) {
        // Fails only when the writer has stopped already.
        let _ = self.queue.send(Command::Close).await;
        drop(self.queue);
        let joined = tokio::task::spawn_blocking(move || {
            let writer = self.writer.join();
            let logger = self.logger.join();
            writer.is_ok() && logger.is_ok()
        })
        .await;
        if let Some(task) = self.task {
            task.abort();
        }
        if !matches!(joined, Ok(true)) {
            tracing::error!("the audit store writer failed");
        }
    }
}

/// A committed batch on its way to the log and the live tail.
struct Committed {
    rows: Vec<StoredEvent>,
    /// Per request: its transport and outcome, for the counters.
    outcomes: Vec<(Transport, WriteOutcome)>,
    /// When its transaction began and committed: the store spans' times.
    began: SystemTime,
    committed: SystemTime,
}

pub(super) fn spawn(
    backend: impl BatchWriter,
    sender: mpsc::Sender<Command>,
    queue: mpsc::Receiver<Command>,
    jobs: std::sync::mpsc::Receiver<WriterJob>,
    feed: Feed,
) -> std::io::Result<WriterHandle> {
    let (committed_tx, committed_rx) = std::sync::mpsc::sync_channel(COMMITTED_CAPACITY);
    let writer = std::thread::Builder::new()
        .name("audit-writer".into())
        .spawn(move || run(backend, queue, jobs, committed_tx))?;
    let logger = std::thread::Builder::new()
        .name("audit-log".into())
        .spawn(move || log_committed(committed_rx, feed))?;
    Ok(WriterHandle {
        writer,
        logger,
        queue: sender,
        task: None,
    })
}

fn run(
    mut backend: impl BatchWriter,
    mut queue: mpsc::Receiver<Command>,
    jobs: std::sync::mpsc::Receiver<WriterJob>,
    committed: std::sync::mpsc::SyncSender<Committed>,
) {
    // After `close` the queue still yields what it holds, then `None`.
    loop {
        // Jobs first: each waits for one batch at most.
        while let Ok(job) = jobs.try_recv() {
            backend.run_job(job);
        }
        let Some(command) = queue.blocking_recv() else {
            break;
        };
        let first = match command {
            Command::Write(first) => first,
            Command::Wake => continue,
            Command::Close => {
                queue.close();
                continue;
            }
        };
        let mut batch = vec![first];
        let mut events = batch[0].rows.len();
        // Take what is already waiting, without waiting for more.
        while events < MAX_EVENTS_PER_COMMIT {
            match queue.try_recv() {
                Ok(Command::Write(request)) => {
                    events += request.rows.len();
                    batch.push(request);
                }
                Ok(Command::Close) => queue.close(),
                Ok(Command::Wake) => {}
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let began = SystemTime::now();
        let received_at: Arc<str> = Utc::now()
            .to_rfc3339_opts(SecondsFormat::Micros, true)
            .into();
        let rows: Vec<(&EventRow, Transport)> = batch
            .iter()
            .flat_map(|r| r.rows.iter().map(|row| (row, r.transport)))
            .collect();
        let result = backend.insert_batch(&rows, &received_at);
        drop(rows);
        metrics::histogram!("audit_commit_batch_events").record(events as f64);
        metrics::histogram!("audit_commit_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok(seqs) => {
                let mut done = answer(batch, seqs, &received_at);
                done.began = began;
                done.committed = SystemTime::now();
                // Only fails when the logger thread is gone, i.e. panicked;
                // the events are stored and answered either way.
                let _ = committed.send(done);
            }
            Err(e) => {
                tracing::error!(error = ?e, events, "failed to commit audit events");
                let e = Arc::new(e);
                for request in batch {
                    let _ = request.reply.send(Err(WriteFailed {
                        error: e.clone(),
                        rows: request.rows,
                    }));
                }
            }
        }
    }
}

/// Answers every request of a committed batch and turns its new rows into
/// stored events, moving the rows rather than copying them.
fn answer(batch: Vec<WriteRequest>, seqs: Vec<Option<i64>>, received_at: &Arc<str>) -> Committed {
    let mut seqs = seqs.into_iter();
    let mut stored = Vec::new();
    let mut outcomes = Vec::with_capacity(batch.len());
    for request in batch {
        let mut outcome = WriteOutcome::default();
        for row in request.rows {
            match seqs.next().flatten() {
                Some(seq) => {
                    outcome.stored += 1;
                    stored.push(StoredEvent {
                        seq,
                        received_at: received_at.clone(),
                        transport: request.transport,
                        source: row.source,
                        id: row.id,
                        ty: row.ty,
                        subject: row.subject,
                        json: row.json,
                        trace: row.trace,
                        trail: None,
                    });
                }
                None => outcome.duplicates += 1,
            }
        }
        // A waiter that gave up (its client went away) is no error.
        let _ = request.reply.send(Ok(outcome));
        outcomes.push((request.transport, outcome));
    }
    Committed {
        rows: stored,
        outcomes,
        began: SystemTime::UNIX_EPOCH,
        committed: SystemTime::UNIX_EPOCH,
    }
}

/// One log line per stored event, the counters, and the live tail, in
/// commit (seq) order.
///
/// While spans are exported, each stored event that carries a trace
/// context also gets a span `audit.store` in that trace, from the start of
/// its transaction to the commit. It is made here, after the commit and off
/// the writer thread, and only then: at 100,000 events a second a span per
/// event is work the writer must not do, nor the logger when nobody
/// collects it.
fn log_committed(committed: std::sync::mpsc::Receiver<Committed>, feed: Feed) {
    let spans = shared::telemetry::traces_exported().then(StoreSpans::new);
    for batch in committed {
        for row in &batch.rows {
            let trace_id = row.trace.as_ref().and_then(TraceContext::trace_id);
            tracing::info!(
                r#type = %row.ty,
                source = %row.source,
                id = %row.id,
                subject = row.subject.as_deref().map(display),
                transport = %row.transport.as_str(),
                seq = row.seq,
                trace_id = trace_id.map(display),
                "audit event stored"
            );
            if let Some(spans) = &spans {
                spans.record(row, batch.began, batch.committed);
            }
        }
        match &feed {
            Feed::Tail(tail) => tail.publish(batch.rows),
            Feed::Wake(poll) => poll.notify_one(),
        }
        for (transport, outcome) in batch.outcomes {
            let transport = transport.as_str();
            metrics::counter!("audit_events_stored_total", "transport" => transport)
                .increment(outcome.stored as u64);
            if outcome.duplicates > 0 {
                metrics::counter!("audit_events_duplicate_total", "transport" => transport)
                    .increment(outcome.duplicates as u64);
                tracing::debug!(
                    duplicates = outcome.duplicates,
                    transport,
                    "duplicate audit events acknowledged"
                );
            }
        }
    }
}

/// Makes the `audit.store` spans (see [`log_committed`]).
struct StoreSpans {
    tracer: BoxedTracer,
}

impl StoreSpans {
    fn new() -> Self {
        StoreSpans {
            tracer: opentelemetry::global::tracer("audit-service"),
        }
    }

    /// One span for `row`, child of the context its event carries.
    fn record(&self, row: &StoredEvent, began: SystemTime, committed: SystemTime) {
        let Some(trace) = &row.trace else {
            return;
        };
        let parent =
            shared::tracecontext::from_values(&trace.traceparent, trace.tracestate.as_deref());
        if !parent.span().span_context().is_valid() {
            return;
        }
        let mut span = self
            .tracer
            .span_builder("audit.store")
            .with_kind(SpanKind::Consumer)
            .with_start_time(began)
            .with_attributes([
                KeyValue::new("cloudevents.event_id", row.id.clone()),
                KeyValue::new("cloudevents.event_source", row.source.clone()),
                KeyValue::new("cloudevents.event_type", row.ty.clone()),
                KeyValue::new("audit.transport", row.transport.as_str()),
                KeyValue::new("audit.seq", row.seq),
            ])
            .start_with_context(&self.tracer, &parent);
        span.end_with_timestamp(committed);
    }
}
