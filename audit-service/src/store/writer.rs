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
//!
//! A shared transaction must not make one client's bad event everybody's
//! failure. When the database refuses a batch for the data in it (a value
//! it cannot hold, a constraint: `StoreError::is_refusal`), the writer
//! splits the batch in halves and commits each on its own, down to the
//! rows it refuses: those, and only those, come back as `Refused`, and every
//! other row is stored. Ingest validation keeps such rows out (control
//! characters, indexed values over PostgreSQL's limit), so this is the
//! safety net for what it does not foresee; k refused rows among n cost
//! at most 2k * ceil(log2 n) more transactions. A failure that may pass on a
//! retry (the database away) still fails the whole batch for its senders
//! to retry.

use super::attributes::Recorded;
use super::{
    Command, EventRow, Refused, StoreError, StoredEvent, Tail, TraceContext, WriteFailed,
    WriteOutcome, WriteRequest, WriterJob,
};
use chrono::{SecondsFormat, Utc};
use cloudevents_wire::Transport;
use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::{Span as _, SpanKind, TraceContextExt, Tracer as _};
use opentelemetry::KeyValue;
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

    /// Adds extension names to the names stored events have had
    /// (`attributes`), keeping those already there; committed on its own.
    fn record_attributes(&mut self, names: &[String]) -> Result<(), StoreError>;
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
    /// Per request: its transport, rows stored and duplicates, for the
    /// counters.
    outcomes: Vec<(Transport, (usize, usize))>,
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
    let mut recorded = Recorded::default();
    // Handles made once: the macros look their series up on every call.
    // A handle belongs to the recorder installed when it is made, so the
    // recorder is installed first (the store opens before the app
    // describes its metrics).
    service_kit::telemetry::metrics_handle();
    let batch_events = metrics::histogram!("audit_commit_batch_events");
    let commit_duration = metrics::histogram!("audit_commit_duration_seconds");
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
        // Before the events, so no stored event has a name not recorded; a
        // failure only delays the names to a later batch.
        let (names, fingerprints) = recorded.new_names(rows.iter().map(|(row, _)| *row));
        if !fingerprints.is_empty() {
            match backend.record_attributes(&names) {
                Ok(()) => recorded.remember(fingerprints),
                Err(error) => {
                    tracing::warn!(error = ?error, "recording the attribute names of new events failed")
                }
            }
        }
        let mut results = Vec::with_capacity(rows.len());
        insert_splitting(&mut backend, &rows, &received_at, &mut results);
        drop(rows);
        batch_events.record(events as f64);
        commit_duration.record(started.elapsed().as_secs_f64());
        let mut done = answer(batch, results, &received_at);
        done.began = began;
        done.committed = SystemTime::now();
        let counted = done.outcomes.iter().any(|(_, (s, d))| s + d > 0);
        if counted {
            // Only fails when the logger thread is gone, i.e. panicked;
            // the events are stored and answered either way.
            let _ = committed.send(done);
        }
    }
}

/// What became of one row.
#[derive(Debug, Clone)]
enum RowResult {
    Stored(i64),
    Duplicate,
    /// The database refused the row for what it holds.
    Refused(Arc<StoreError>),
    /// Its transaction failed for a reason a retry may not meet.
    Failed(Arc<StoreError>),
}

/// Inserts `rows` in one transaction, or, when the database refuses them
/// for their data, each half on its own, recursively (see the module
/// header). Pushes one result per row, in order. Returns false once a
/// failure that is not a refusal has happened: the rows after it are then
/// failed with it rather than tried, since the database is likely away.
fn insert_splitting(
    backend: &mut impl BatchWriter,
    rows: &[(&EventRow, Transport)],
    received_at: &str,
    results: &mut Vec<RowResult>,
) -> bool {
    let error = match backend.insert_batch(rows, received_at) {
        Ok(seqs) => {
            results.extend(
                seqs.into_iter()
                    .map(|seq| seq.map_or(RowResult::Duplicate, RowResult::Stored)),
            );
            return true;
        }
        Err(error) => error,
    };
    if error.is_refusal() && rows.len() > 1 {
        let (first, second) = rows.split_at(rows.len() / 2);
        if insert_splitting(backend, first, received_at, results) {
            return insert_splitting(backend, second, received_at, results);
        }
        let failed = match results.last() {
            Some(RowResult::Failed(e)) => e.clone(),
            _ => Arc::new(StoreError::WriterGone),
        };
        results.extend(std::iter::repeat_n(RowResult::Failed(failed), second.len()));
        return false;
    }
    let error = Arc::new(error);
    if error.is_refusal() {
        let (row, _) = rows[0];
        tracing::warn!(
            error = ?error, source = %row.source, id = %row.id,
            "the database refused an event; only it fails, the events committed with it are stored"
        );
        results.push(RowResult::Refused(error));
        return true;
    }
    tracing::error!(error = ?error, events = rows.len(), "failed to commit audit events");
    results.extend(std::iter::repeat_n(RowResult::Failed(error), rows.len()));
    false
}

/// Answers every request of a batch and turns its new rows into stored
/// events, moving the rows rather than copying them (except those of a
/// request that failed, which go back to their sender for a retry).
fn answer(batch: Vec<WriteRequest>, results: Vec<RowResult>, received_at: &Arc<str>) -> Committed {
    let mut results = results.into_iter();
    let mut stored = Vec::new();
    let mut outcomes = Vec::with_capacity(batch.len());
    for request in batch {
        let mut outcome = WriteOutcome::default();
        let mut failed: Option<(Arc<StoreError>, Vec<EventRow>)> = None;
        let request_results: Vec<RowResult> = results.by_ref().take(request.rows.len()).collect();
        if let Some(error) = request_results.iter().find_map(|r| match r {
            RowResult::Failed(e) => Some(e.clone()),
            _ => None,
        }) {
            failed = Some((error, request.rows.clone()));
        }
        for (index, (row, result)) in request.rows.into_iter().zip(request_results).enumerate() {
            match result {
                RowResult::Stored(seq) => {
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
                RowResult::Duplicate => outcome.duplicates += 1,
                RowResult::Refused(error) => outcome.refused.push(Refused { index, row, error }),
                RowResult::Failed(_) => {}
            }
        }
        let counts = (outcome.stored, outcome.duplicates);
        // A waiter that gave up (its client went away) is no error.
        let _ = request.reply.send(match failed {
            None => Ok(outcome),
            Some((error, rows)) => Err(WriteFailed { error, rows }),
        });
        outcomes.push((request.transport, counts));
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
    let spans = service_kit::telemetry::traces_exported().then(StoreSpans::new);
    // Each transport's counters, made on its first batch and kept: the
    // macros look their series up on every call. (Made lazily, so /metrics
    // shows no series of a transport the service does not use; the
    // recorder is installed by then, see `run`.)
    let mut counters: Vec<(Transport, metrics::Counter, metrics::Counter)> = Vec::new();
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
        for (transport, (stored, duplicates)) in batch.outcomes {
            let index = match counters.iter().position(|(t, _, _)| *t == transport) {
                Some(index) => index,
                None => {
                    let label = transport.as_str();
                    counters.push((
                        transport,
                        metrics::counter!("audit_events_stored_total", "transport" => label),
                        metrics::counter!("audit_events_duplicate_total", "transport" => label),
                    ));
                    counters.len() - 1
                }
            };
            let (_, stored_total, duplicate_total) = &counters[index];
            stored_total.increment(stored as u64);
            if duplicates > 0 {
                duplicate_total.increment(duplicates as u64);
                let transport = transport.as_str();
                tracing::debug!(duplicates, transport, "duplicate audit events acknowledged");
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
        let parent = cloudevents_wire::tracecontext::from_values(
            &trace.traceparent,
            trace.tracestate.as_deref(),
        );
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    /// A database that refuses every batch holding a row whose id starts
    /// with `poison` (as PostgreSQL refuses a NUL), or fails every batch
    /// while `down`, and counts its transactions.
    #[derive(Default)]
    struct Fake {
        seq: i64,
        transactions: usize,
        down: bool,
    }

    impl BatchWriter for Fake {
        fn insert_batch(
            &mut self,
            rows: &[(&EventRow, Transport)],
            _: &str,
        ) -> Result<Vec<Option<i64>>, StoreError> {
            self.transactions += 1;
            if self.down {
                return Err(StoreError::WriterGone);
            }
            if rows.iter().any(|(row, _)| row.id.starts_with("poison")) {
                return Err(StoreError::Sqlite(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT),
                    Some("refused".into()),
                )));
            }
            Ok(rows
                .iter()
                .map(|_| {
                    self.seq += 1;
                    Some(self.seq)
                })
                .collect())
        }

        fn record_attributes(&mut self, _: &[String]) -> Result<(), StoreError> {
            Ok(())
        }

        fn run_job(&mut self, job: WriterJob) {
            drop(job);
        }
    }

    fn row(id: &str) -> EventRow {
        EventRow {
            source: "/s".into(),
            id: id.into(),
            ty: "t".into(),
            subject: None,
            time: None,
            json: "{}".into(),
            trace: None,
            extensions: 0,
        }
    }

    type Answer = oneshot::Receiver<Result<WriteOutcome, WriteFailed>>;

    fn request(ids: &[&str]) -> (WriteRequest, Answer) {
        let (reply, answer) = oneshot::channel();
        let request = WriteRequest {
            rows: ids.iter().map(|id| row(id)).collect(),
            transport: Transport::Http,
            reply,
        };
        (request, answer)
    }

    /// Runs one group commit of `requests` on `backend`.
    fn commit(backend: &mut Fake, requests: &[&[&str]]) -> (Committed, Vec<Answer>) {
        let (batch, answers): (Vec<_>, Vec<_>) = requests.iter().map(|ids| request(ids)).unzip();
        let rows: Vec<(&EventRow, Transport)> = batch
            .iter()
            .flat_map(|r| r.rows.iter().map(|row| (row, r.transport)))
            .collect();
        let mut results = Vec::new();
        insert_splitting(backend, &rows, "now", &mut results);
        drop(rows);
        (answer(batch, results, &"now".into()), answers)
    }

    #[test]
    fn a_refused_row_fails_alone_and_every_other_row_of_the_commit_is_stored() {
        let mut backend = Fake::default();
        let (committed, answers) = commit(
            &mut backend,
            &[
                &["a1", "a2"],
                &["poison-b"],
                &["c1", "poison-c", "c2"],
                &["d1"],
            ],
        );
        let outcomes: Vec<WriteOutcome> = answers
            .into_iter()
            .map(|mut a| a.try_recv().unwrap().unwrap())
            .collect();
        assert_eq!((outcomes[0].stored, outcomes[0].refused.len()), (2, 0));
        assert_eq!((outcomes[1].stored, outcomes[1].refused.len()), (0, 1));
        assert_eq!(outcomes[1].refused[0].row.id, "poison-b");
        assert_eq!((outcomes[2].stored, outcomes[2].refused.len()), (2, 1));
        assert_eq!(outcomes[2].refused[0].index, 1);
        assert!(outcomes[2].refused[0].error.is_refusal());
        assert_eq!((outcomes[3].stored, outcomes[3].refused.len()), (1, 0));
        // Stored in request order, seqs ascending.
        let stored: Vec<(&str, i64)> = committed
            .rows
            .iter()
            .map(|r| (r.id.as_str(), r.seq))
            .collect();
        assert_eq!(
            stored,
            [("a1", 1), ("a2", 2), ("c1", 3), ("c2", 4), ("d1", 5)]
        );
        // Seven rows, two refused: at most 1 + 2k * ceil(log2 n)
        // transactions, the bound the module header gives.
        assert!(
            backend.transactions <= 1 + 2 * 2 * 3,
            "{}",
            backend.transactions
        );
    }

    #[test]
    fn a_failure_that_may_pass_on_a_retry_fails_every_request_with_its_rows() {
        let mut backend = Fake {
            down: true,
            ..Fake::default()
        };
        let (committed, answers) = commit(&mut backend, &[&["a1"], &["poison", "b1"]]);
        assert!(committed.rows.is_empty());
        for (mut answer, ids) in answers.into_iter().zip([vec!["a1"], vec!["poison", "b1"]]) {
            let failed = answer.try_recv().unwrap().unwrap_err();
            assert!(!failed.error.is_refusal());
            let back: Vec<&str> = failed.rows.iter().map(|r| r.id.as_str()).collect();
            assert_eq!(back, ids);
        }
        assert_eq!(backend.transactions, 1, "no split for an outage");
    }
}
