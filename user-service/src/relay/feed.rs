//! The relay's traffic with the outbox: it reads pending rows in seq order
//! behind a cursor, re-reads one user's rows on demand, and writes outcomes
//! back in batches; at most one read and one write at a time, side by side
//! (a write's fsync no longer holds up the next page).
//!
//! A row the relay holds (in memory, in flight, or done but not yet
//! written) is in `known`, and reads skip it. It leaves `known` only once
//! its outcome is committed, and, when a read was running meanwhile, only
//! after that read's result is taken in: the read may have looked before
//! the commit and seen the row still pending.

use crate::outbox::{self, Outcomes, PendingEvent};
use crate::store::{Backend, Scope};
use chrono::Utc;
use futures::future::BoxFuture;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

enum Job {
    /// A page read in scan pass `pass`.
    Read {
        pass: u64,
        rows: Result<Vec<PendingEvent>, sqlx::Error>,
    },
    Refill {
        user: String,
        limit: u32,
        rows: Result<Vec<PendingEvent>, sqlx::Error>,
    },
    Write(Outcomes, Result<(), sqlx::Error>),
    Lag(Result<outbox::Backlog, sqlx::Error>),
}

/// What a finished query brought.
pub enum Fed {
    /// Pending rows the relay did not hold yet, in seq order.
    Rows(Vec<PendingEvent>),
    /// One user's oldest pending rows not held yet; `complete` when the
    /// outbox had no more of them.
    Refill {
        user: String,
        rows: Vec<PendingEvent>,
        complete: bool,
    },
    /// Nothing for the relay to act on (outcomes written, a gauge set, or a
    /// failure logged and a pause begun).
    Nothing,
}

pub struct Feed {
    store: Arc<dyn Backend>,
    /// The rows this relay may send.
    scope: Arc<Scope>,
    page: u32,
    /// How long to wait before the next query after one failed.
    pause: Duration,
    /// The highest seq read so far in this pass.
    cursor: i64,
    /// Counts passes: a read that was running when a rescan began belongs
    /// to the pass before and is ignored, or its cursor would win.
    pass: u64,
    /// The last read found nothing after the cursor: wait for a wake-up.
    at_end: bool,
    known: HashSet<i64>,
    /// Committed while a read was running: leave `known` after it.
    release_after_read: Vec<i64>,
    writes: Outcomes,
    /// The read running (a page, a refill or the backlog gauges), if any.
    reading: Option<BoxFuture<'static, Job>>,
    /// The write running, if any.
    writing: Option<BoxFuture<'static, Job>>,
    paused_until: Option<Instant>,
    lag_due: bool,
    /// Shutting down: a write that fails is given up, not retried.
    stopping: bool,
}

impl Feed {
    pub fn new(store: Arc<dyn Backend>, scope: Scope, page: u32, pause: Duration) -> Self {
        Feed {
            store,
            scope: Arc::new(scope),
            page,
            pause,
            cursor: 0,
            pass: 0,
            at_end: false,
            known: HashSet::new(),
            release_after_read: Vec::new(),
            writes: Outcomes::default(),
            reading: None,
            writing: None,
            paused_until: None,
            lag_due: true,
            stopping: false,
        }
    }

    /// Rows the relay holds: in memory, in flight, or awaiting their write.
    pub fn held(&self) -> usize {
        self.known.len()
    }

    pub fn hold(&mut self, seq: i64) {
        self.known.insert(seq);
    }

    /// The relay let go of a row that is still pending; it will be read
    /// again.
    pub fn release(&mut self, seq: i64) {
        self.known.remove(&seq);
    }

    /// Outcomes to write with the next commit.
    pub fn outcomes(&mut self) -> &mut Outcomes {
        &mut self.writes
    }

    /// Nothing running and nothing left to write.
    pub fn is_idle(&self) -> bool {
        self.reading.is_none() && self.writing.is_none() && self.writes.is_empty()
    }

    fn paused(&self) -> bool {
        self.paused_until.is_some()
    }

    /// A read of some kind (refill, lag) may start now.
    pub fn can_query(&self) -> bool {
        self.reading.is_none() && !self.paused()
    }

    /// A page read may start now: no read is running and the last pass has
    /// not reached the end.
    pub fn can_read(&self) -> bool {
        self.can_query() && !self.at_end
    }

    /// A commit added rows: read on from the cursor.
    pub fn more(&mut self) {
        self.at_end = false;
    }

    /// The poll interval passed: when caught up, scan again from the start
    /// (for rows re-driven by an operator, which keep their old seq), and
    /// refresh the backlog gauges (depth and age).
    pub fn tick(&mut self) {
        if self.at_end {
            self.rescan();
        }
        self.lag_due = true;
    }

    /// Rescans from the start, whether or not the last pass ended.
    pub fn rescan(&mut self) {
        self.cursor = 0;
        self.pass += 1;
        self.at_end = false;
    }

    pub fn stop(&mut self) {
        self.stopping = true;
    }

    /// Starts writing the outcomes gathered so far, if there are any and
    /// no write is running.
    pub fn start_write(&mut self) {
        if self.writing.is_some() || self.paused() || self.writes.is_empty() {
            return;
        }
        let outcomes = std::mem::take(&mut self.writes);
        let store = self.store.clone();
        self.writing = Some(Box::pin(async move {
            let written = store.record(&outcomes).await;
            Job::Write(outcomes, written)
        }));
    }

    /// Starts reading `user`'s oldest pending rows after `after`, up to
    /// `limit`.
    pub fn start_refill(&mut self, user: String, after: i64, limit: u32) {
        let store = self.store.clone();
        self.reading = Some(Box::pin(async move {
            let rows = store.pending_for_user(&user, after, limit).await;
            Job::Refill { user, limit, rows }
        }));
    }

    /// Starts reading the next page, leaving out `held_back` users, unless
    /// the last read found the end.
    pub fn start_read(&mut self, held_back: Vec<String>) -> bool {
        if !self.can_read() {
            return false;
        }
        let (store, scope) = (self.store.clone(), self.scope.clone());
        let (after, limit, pass) = (self.cursor, self.page, self.pass);
        self.reading = Some(Box::pin(async move {
            let held_back: Vec<&str> = held_back.iter().map(String::as_str).collect();
            let rows = store.pending_after(&scope, after, limit, &held_back).await;
            Job::Read { pass, rows }
        }));
        true
    }

    /// Starts refreshing the backlog gauges if they are due.
    pub fn start_lag(&mut self) {
        if !self.can_query() || !self.lag_due {
            return;
        }
        self.lag_due = false;
        let store = self.store.clone();
        self.reading = Some(Box::pin(async move { Job::Lag(store.backlog().await) }));
    }

    /// Waits for a running query (or the end of a pause) and takes its
    /// result in. Never resolves when there is neither. Cancel-safe: a
    /// query interrupted here goes on at the next call.
    pub async fn next(&mut self) -> Fed {
        let done = tokio::select! {
            // Writes first: they free rows.
            biased;
            done = run(&mut self.writing) => {
                self.writing = None;
                done
            }
            done = run(&mut self.reading) => {
                self.reading = None;
                let fed = self.take(done);
                for seq in std::mem::take(&mut self.release_after_read) {
                    self.known.remove(&seq);
                }
                return fed;
            }
            _ = pause(self.paused_until) => {
                self.paused_until = None;
                return Fed::Nothing;
            }
        };
        self.take(done)
    }

    /// Rows whose outcome is committed leave `known`, after the running
    /// read if there is one.
    fn release_settled(&mut self, outcomes: &Outcomes) {
        if self.reading.is_some() {
            self.release_after_read.extend(outcomes.settled());
        } else {
            for seq in outcomes.settled() {
                self.known.remove(&seq);
            }
        }
    }

    fn take(&mut self, done: Job) -> Fed {
        match done {
            Job::Read { pass, .. } if pass != self.pass => Fed::Nothing,
            Job::Read { rows: Ok(rows), .. } => {
                if let Some(last) = rows.last() {
                    self.cursor = last.seq;
                }
                self.at_end = rows.len() < self.page as usize;
                Fed::Rows(
                    rows.into_iter()
                        .filter(|r| !self.known.contains(&r.seq))
                        .collect(),
                )
            }
            Job::Refill {
                user,
                limit,
                rows: Ok(rows),
            } => {
                let complete = rows.len() < limit as usize;
                let rows = rows
                    .into_iter()
                    .filter(|r| !self.known.contains(&r.seq))
                    .collect();
                Fed::Refill {
                    user,
                    rows,
                    complete,
                }
            }
            Job::Refill {
                user, rows: Err(e), ..
            } => {
                self.failed("read a user's pending events", &e);
                // Nothing taken, more to come: the lane asks again.
                Fed::Refill {
                    user,
                    rows: Vec::new(),
                    complete: false,
                }
            }
            Job::Read { rows: Err(e), .. } => {
                self.failed("read the outbox", &e);
                Fed::Nothing
            }
            Job::Write(outcomes, Ok(())) => {
                self.release_settled(&outcomes);
                Fed::Nothing
            }
            Job::Write(outcomes, Err(e)) => {
                self.failed("record delivery outcomes", &e);
                if self.stopping {
                    // The rows stay pending and go again after a restart;
                    // the receiver stores each once.
                    self.release_settled(&outcomes);
                } else {
                    let newer = std::mem::replace(&mut self.writes, outcomes);
                    self.writes.merge(newer);
                }
                Fed::Nothing
            }
            Job::Lag(Ok(backlog)) => {
                let lag = backlog.oldest.map_or(0.0, |created| {
                    (Utc::now() - created).num_milliseconds().max(0) as f64 / 1000.0
                });
                metrics::gauge!("outbox_oldest_pending_age_seconds").set(lag);
                metrics::gauge!("outbox_pending_events").set(backlog.pending as f64);
                Fed::Nothing
            }
            Job::Lag(Err(e)) => {
                self.failed("read the outbox lag", &e);
                Fed::Nothing
            }
        }
    }

    fn failed(&mut self, what: &str, error: &sqlx::Error) {
        tracing::error!(error = %error, "failed to {what}");
        self.paused_until = Some(Instant::now() + self.pause);
    }
}

async fn run(job: &mut Option<BoxFuture<'static, Job>>) -> Job {
    match job {
        Some(job) => job.await,
        None => std::future::pending().await,
    }
}

async fn pause(until: Option<Instant>) {
    match until {
        Some(until) => tokio::time::sleep_until(until).await,
        None => std::future::pending().await,
    }
}
