//! The HTTP routes: the users API and the readiness probe.

pub mod health;
pub mod users;

use crate::publish::Publisher;
use crate::store::Store;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub publisher: Arc<Publisher>,
    /// Bounds concurrent argon2 hashes: each takes ~19 MiB and a core, so an
    /// unbounded burst of sign-ups could exhaust memory.
    pub hashing: Arc<Semaphore>,
}
