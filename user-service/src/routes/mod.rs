//! The HTTP routes: the users API, the readiness probe and the delivery
//! report.

pub mod health;
pub mod users;

use crate::hasher::Hasher;
use crate::store::Store;
use publishers::Publisher;
use std::sync::Arc;

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub publisher: Arc<Publisher>,
    /// The argon2id threads: bounded in number (each takes 12 MiB and a
    /// core) and in how many hashes may wait for them.
    pub hasher: Hasher,
    /// How long the oldest pending event may wait before `GET /delivery`
    /// says delivery is failing (`DELIVERY_LAG_MAX_MS`).
    pub lag_max: std::time::Duration,
    /// What `/readyz` follows (`READINESS`).
    pub readiness: health::Readiness,
}
