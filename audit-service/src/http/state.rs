//! What every handler of audit-service gets.

use crate::ingest::Probe;
use crate::store::Store;
use crate::tlog::LogKey;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What every handler gets; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub max_body_bytes: usize,
    /// The consumer's broker, when there is one.
    pub broker: Option<Arc<dyn Probe>>,
    /// Cancelled at shutdown; ends live-tail streams.
    pub shutdown: CancellationToken,
    /// The transparency log's key; `None` when the log is off.
    pub log: Option<Arc<LogKey>>,
    /// Wakes this replica's replay supervisor when a replay is created.
    pub replays: crate::replay::Wake,
}
