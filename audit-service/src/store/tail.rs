//! The live tail on PostgreSQL: every replica's events, read back from the
//! shared table by seq and broadcast to this replica's subscribers.
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
use super::{postgres, StoredEvent};
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, Notify};
use tokio::task::JoinHandle;

const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Rows per read: a burst is read in pages of this many.
const PAGE: u32 = 1000;

/// Starts the poller; it runs until aborted (when the writer has finished).
pub(super) fn spawn(
    pool: PgPool,
    stored: broadcast::Sender<Arc<StoredEvent>>,
    committed: Arc<Notify>,
) -> JoinHandle<()> {
    tokio::spawn(run(pool, stored, committed))
}

async fn run(pool: PgPool, stored: broadcast::Sender<Arc<StoredEvent>>, committed: Arc<Notify>) {
    // From now on: the tail shows what is stored after it starts; a client
    // wanting older events asks for them (`after`, `Last-Event-ID`).
    let mut last: Option<i64> = None;
    loop {
        if let Err(e) = poll(&pool, &stored, &mut last).await {
            tracing::warn!(error = %e, "reading stored events for the live tail failed");
        }
        tokio::select! {
            _ = committed.notified() => {}
            _ = tokio::time::sleep(POLL_INTERVAL) => {}
        }
    }
}

async fn poll(
    pool: &PgPool,
    stored: &broadcast::Sender<Arc<StoredEvent>>,
    last: &mut Option<i64>,
) -> Result<(), super::StoreError> {
    let Some(after) = *last else {
        *last = Some(postgres::last_seq(pool).await?);
        return Ok(());
    };
    if stored.receiver_count() == 0 {
        // Nobody watches: only keep up, so that a subscriber arriving
        // later gets what is stored after it subscribed, not a backlog.
        // The newest seq is read before looking again: one who subscribed
        // meanwhile gets everything after it.
        let newest = postgres::last_seq(pool).await?;
        if stored.receiver_count() == 0 {
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
        let events = postgres::page(pool, &query).await?;
        let full = events.len() == PAGE as usize;
        for event in events {
            query.after = event.seq;
            *last = Some(event.seq);
            // No subscriber left is fine: the next poll only keeps up.
            let _ = stored.send(Arc::new(event));
        }
        if !full {
            return Ok(());
        }
    }
}
