//! Outbox retention: delivered rows older than `OUTBOX_RETENTION` are
//! deleted, a few hundred per transaction, so the table holds about a
//! retention period of history however long the service runs.
//!
//! Small batches because each one is a write transaction: on SQLite it holds
//! the one write lock, on PostgreSQL it locks the rows it deletes; a batch of
//! 500 takes milliseconds, so user changes and the relay's outcome writes
//! slip in between. Every replica on a shared database prunes; two deleting
//! the same rows is harmless (the second finds them gone). Pending and dead
//! rows are never deleted.

use crate::store::Backend;
use chrono::Utc;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Rows deleted per transaction.
const BATCH: u32 = 500;
/// How often to look for expired rows, at most: a tenth of the retention
/// period (so rows outlive it by at most ~10%), between 1 s and 10 min.
const MAX_INTERVAL: Duration = Duration::from_secs(600);
const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// Runs until `shutdown`; a failed delete is logged and tried again at the
/// next interval.
pub async fn run(store: Arc<dyn Backend>, retention: Duration, shutdown: CancellationToken) {
    let interval = (retention / 10).clamp(MIN_INTERVAL, MAX_INTERVAL);
    let Ok(retention) = chrono::Duration::from_std(retention) else {
        tracing::warn!(
            ?retention,
            "outbox retention too long to compute; nothing is pruned"
        );
        return;
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let before = Utc::now() - retention;
        let mut pruned = 0;
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            match store.prune_delivered(before, BATCH).await {
                Ok(n) => {
                    pruned += n;
                    metrics::counter!("outbox_pruned_total").increment(n);
                    if n < u64::from(BATCH) {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "pruning delivered outbox rows failed");
                    break;
                }
            }
        }
        if pruned > 0 {
            tracing::info!(pruned, "delivered outbox rows past retention deleted");
        }
    }
}
