//! The live tail on PostgreSQL: every replica's events, read back from the
//! shared table by seq and handed to this replica's live-tail feed (`tail`).
//!
//! Polling, not LISTEN/NOTIFY: a poll is one indexed range read
//! (`seq > last`) and needs no connection held per replica, no NOTIFY
//! payload written inside every writer transaction (NOTIFY also takes a
//! lock at commit that would serialise the replicas' commits once more),
//! and nothing to redo after the server restarts. Seq order is commit
//! order (see `postgres`), so reading `seq > last` never passes an event.
//! What it costs: an event stored by another replica reaches this one's
//! tail up to `POLL_INTERVAL` later (this replica's own commits wake the
//! poll at once), and while nobody watches, one `max(seq)` lookup per
//! interval; while someone does, each stored event is read once more per
//! replica with subscribers.

use super::page::PageQuery;
use super::{postgres, Tail};
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Rows per read: a burst is read in pages of this many, or of this many
/// bytes of event JSON.
const PAGE: u32 = 1000;
const PAGE_MAX_BYTES: usize = 4 * 1024 * 1024;

/// Starts the poller; it runs until aborted (when the writer has finished).
pub(super) fn spawn(pool: PgPool, tail: Tail, committed: Arc<Notify>) -> JoinHandle<()> {
    tokio::spawn(run(pool, tail, committed))
}

async fn run(pool: PgPool, tail: Tail, committed: Arc<Notify>) {
    // From now on: the tail shows what is stored after it starts; a client
    // wanting older events asks for them (`after`, `Last-Event-ID`).
    let mut last: Option<i64> = None;
    loop {
        if let Err(e) = poll(&pool, &tail, &mut last).await {
            tracing::warn!(error = %e, "reading stored events for the live tail failed");
        }
        tokio::select! {
            _ = committed.notified() => {}
            _ = tokio::time::sleep(POLL_INTERVAL) => {}
        }
    }
}

async fn poll(pool: &PgPool, tail: &Tail, last: &mut Option<i64>) -> Result<(), super::StoreError> {
    let Some(after) = *last else {
        *last = Some(postgres::last_seq(pool).await?);
        return Ok(());
    };
    if !tail.has_subscribers() {
        // Nobody watches: only keep up, so that a subscriber arriving
        // later gets what is stored after it subscribed, not a backlog.
        // The newest seq is read before looking again: one who subscribed
        // meanwhile gets everything after it.
        let newest = postgres::last_seq(pool).await?;
        if !tail.has_subscribers() {
            *last = Some(newest.max(after));
            return Ok(());
        }
    }
    let mut query = PageQuery {
        after,
        limit: PAGE,
        ..PageQuery::default()
    };
    loop {
        let page = postgres::page(pool, &query, PAGE_MAX_BYTES).await?;
        if let Some(newest) = page.events.last() {
            query.after = newest.seq;
            *last = Some(newest.seq);
        }
        // No subscriber left is fine: the next poll only keeps up.
        tail.publish(page.events);
        if page.next_after.is_none() {
            return Ok(());
        }
    }
}
