//! Replays of the audit trail: a selection of stored events (a CESQL
//! filter and a seq or time range) sent again, in seq order and unchanged
//! (same `id` and `source`, so receivers deduplicate them), to one target
//! (an HTTP endpoint, a Kafka topic, a NATS subject, an MQTT topic) through
//! the publishers and delivery rules of user-service's relay (`publishers`).
//!
//! - [`spec`]: what a replay is asked to do, checked when it is created
//!   ([`create`]);
//! - [`db`]: the replays' table, their progress and their leases;
//! - [`run`]: one replay running; [`pace`]: its rate limit;
//! - [`routes`]: `/v1/replays`, behind the admin door.
//!
//! This module's task (the [`Replays`] supervisor) looks for replays to run
//! every `POLL_INTERVAL`, or at once when one is created here, and runs
//! each one whose lease it takes. With several replicas on one database
//! each replay runs on exactly one: the one holding its lease, which it
//! renews with every write of its progress. A replica that dies holding a
//! lease has its replays taken over once the lease term has passed, from
//! their stored position.

pub mod command;
mod create;
pub mod db;
mod pace;
pub mod routes;
mod run;
pub mod spec;

pub use create::{create, describe, CreateError};

use crate::store::Store;
use settings::{env_parse, ConfigError};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

/// How often the supervisor looks for replays nobody runs.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// How replays run.
#[derive(Debug, Clone)]
pub struct ReplaySettings {
    /// `REPLAY_LEASE_MS`: how long a replica's hold on a replay lasts
    /// without a renewal. A replica that dies mid-replay has its replay
    /// resumed elsewhere (or after its restart) this long after.
    pub lease_term: Duration,
}

impl ReplaySettings {
    pub fn from_env() -> Result<Self, ConfigError> {
        let default = ReplaySettings::default().lease_term.as_millis() as u64;
        match env_parse("REPLAY_LEASE_MS", default)? {
            0 => Err(ConfigError {
                name: "REPLAY_LEASE_MS".to_owned(),
                value: "0".to_owned(),
                reason: "must be at least 1 (milliseconds)".to_owned(),
            }),
            ms => Ok(ReplaySettings {
                lease_term: Duration::from_millis(ms),
            }),
        }
    }
}

impl Default for ReplaySettings {
    fn default() -> Self {
        ReplaySettings {
            lease_term: Duration::from_secs(15),
        }
    }
}

/// Wakes the supervisor when a replay is created on this replica.
#[derive(Clone, Default)]
pub struct Wake(Arc<Notify>);

impl Wake {
    pub fn now(&self) {
        self.0.notify_one();
    }
}

/// The supervisor of this replica's replays.
pub struct Replays {
    store: Store,
    settings: ReplaySettings,
    wake: Wake,
    shutdown: CancellationToken,
    /// This replica's name in the leases.
    owner: String,
}

impl Replays {
    pub fn new(
        store: Store,
        settings: ReplaySettings,
        wake: Wake,
        shutdown: CancellationToken,
    ) -> Self {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "audit-service".to_owned());
        let owner = format!(
            "{host}/{}/{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        Replays {
            store,
            settings,
            wake,
            shutdown,
            owner,
        }
    }

    pub fn spawn(self) -> JoinHandle<()> {
        tokio::spawn(self.supervise())
    }

    /// Takes and runs replays until shutdown; then the running ones store
    /// their position and give their leases back.
    async fn supervise(self) {
        // The replays running here, by their task (a task that panics is
        // known only by its id).
        let mut running: HashMap<tokio::task::Id, String> = HashMap::new();
        let mut tasks: JoinSet<()> = JoinSet::new();
        loop {
            match db::unclaimed(self.store.readers()).await {
                Ok(ids) => {
                    for id in ids {
                        if running.values().any(|r| *r == id) {
                            continue;
                        }
                        match db::claim(
                            self.store.readers(),
                            &id,
                            &self.owner,
                            self.settings.lease_term,
                        )
                        .await
                        {
                            Ok(true) => {
                                let task = tasks.spawn(run::run(
                                    self.store.clone(),
                                    self.settings.clone(),
                                    id.clone(),
                                    self.owner.clone(),
                                    self.shutdown.child_token(),
                                ));
                                running.insert(task.id(), id);
                            }
                            Ok(false) => {}
                            Err(error) => {
                                tracing::warn!(replay = %id, error = ?error, "taking a replay failed")
                            }
                        }
                    }
                }
                Err(error) => tracing::warn!(error = ?error, "looking for replays failed"),
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                Some(ended) = tasks.join_next_with_id() => {
                    let task = match ended {
                        Ok((task, ())) => task,
                        Err(error) => {
                            tracing::error!(error = %error, "a replay's task failed");
                            error.id()
                        }
                    };
                    running.remove(&task);
                }
                _ = self.wake.0.notified() => {}
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
            }
        }
        while tasks.join_next().await.is_some() {}
    }
}
