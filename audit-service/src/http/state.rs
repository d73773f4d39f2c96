//! What every handler of audit-service gets.

use crate::ingest::Probe;
use crate::store::Store;
use crate::tlog::LogKey;
use std::sync::Arc;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// What every handler gets: axum clones it for each request, so it is one
/// `Arc` (its parts behind it: the channel senders and the cancellation
/// token take atomics or a lock to clone and drop, about 4% of the
/// single-event sink's instructions when cloned one by one).
#[derive(Clone)]
pub struct AppState(Arc<Parts>);

impl AppState {
    pub fn new(parts: Parts) -> Self {
        AppState(Arc::new(parts))
    }
}

impl std::ops::Deref for AppState {
    type Target = Parts;
    fn deref(&self) -> &Parts {
        &self.0
    }
}

/// The parts of [`AppState`].
pub struct Parts {
    pub store: Store,
    pub max_body_bytes: usize,
    /// The consumer's broker, when there is one.
    pub broker: Option<Arc<dyn Probe>>,
    /// Cancelled at shutdown; ends live-tail streams.
    pub shutdown: CancellationToken,
    /// The live tail's places, one per client (`MAX_STREAM_CLIENTS`).
    pub stream_places: Arc<Semaphore>,
    /// The transparency log's key; `None` when the log is off.
    pub log: Option<Arc<LogKey>>,
    /// Wakes this replica's replay supervisor when a replay is created.
    pub replays: crate::replay::Wake,
}
