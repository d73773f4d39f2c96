//! The verifiable audit trail: every stored event is a leaf of a Merkle
//! tree (RFC 6962 hashing), served as a C2SP tlog-tiles log under `/log/`
//! with signed C2SP checkpoints, so that clients check proofs instead of
//! trusting the service; and erasure (by subject, by type, by age) that
//! removes an event's data without changing its leaf.
//!
//! - `entry`: the canonical bytes of an event's leaf, from the stored JSON's
//!   members (`store::members`);
//! - `tiles`: tile paths, the tree's right edge, hash readers for proofs;
//! - `checkpoint`: the signing key and signed checkpoints;
//! - `db`: the log's tables;
//! - `sequencer`: the one task that appends committed events to the tree
//!   and signs checkpoints, off the ingest path, reading them as `leaf`s
//!   through its `inbox`;
//! - `erase`: erasure and retention;
//! - `routes`: the HTTP API; `verify` and `commands`: `audit-service verify`,
//!   `erase` and `log-key`.

pub mod checkpoint;
pub mod commands;
pub mod db;
pub mod entry;
pub mod erase;
mod inbox;
mod leaf;
pub mod routes;
pub mod sequencer;
pub mod tiles;
pub mod verify;

pub use checkpoint::LogKey;

use settings::{env_or, ConfigError};
use std::sync::Arc;
use std::time::Duration;

/// How the trail is kept: the log (on when it has a key), erasure on
/// event types and retention.
#[derive(Debug, Clone, Default)]
pub struct LogSettings {
    /// The signing key; `None` when the transparency log is off.
    pub key: Option<Arc<LogKey>>,
    /// `ERASE_ON_TYPES`: an event of one of these types erases its
    /// subject's data once stored.
    pub erase_on_types: Vec<String>,
    /// `RETENTION`: events received longer ago than this lose their data.
    pub retention: Option<Duration>,
}

impl LogSettings {
    /// `TRANSPARENCY_LOG` (`on`, `off`; unset: on when a key is set),
    /// `LOG_SIGNING_KEY` or `LOG_SIGNING_KEY_FILE`, `LOG_ORIGIN` (must be
    /// the key's name), `ERASE_ON_TYPES`, `RETENTION`. The key is never
    /// quoted in an error.
    pub fn from_env() -> Result<Self, ConfigError> {
        let error = |name: &str, value: &str, reason: String| ConfigError {
            name: name.to_owned(),
            value: value.to_owned(),
            reason,
        };
        let key_text = match (
            non_empty(env_or("LOG_SIGNING_KEY", "")),
            non_empty(env_or("LOG_SIGNING_KEY_FILE", "")),
        ) {
            (Some(key), _) => Some(("LOG_SIGNING_KEY", key)),
            (None, Some(path)) => Some((
                "LOG_SIGNING_KEY_FILE",
                std::fs::read_to_string(&path).map_err(|e| {
                    error(
                        "LOG_SIGNING_KEY_FILE",
                        &path,
                        format!("cannot read the file: {e}"),
                    )
                })?,
            )),
            (None, None) => None,
        };
        let wanted = match non_empty(env_or("TRANSPARENCY_LOG", "")).as_deref() {
            None => key_text.is_some(),
            Some("on") => true,
            Some("off") => false,
            Some(other) => {
                return Err(error(
                    "TRANSPARENCY_LOG",
                    other,
                    "expected `on` or `off`".into(),
                ))
            }
        };
        let key = match (wanted, key_text) {
            (false, _) => None,
            (true, None) => {
                return Err(error(
                    "TRANSPARENCY_LOG",
                    "on",
                    "the transparency log needs a signing key: set LOG_SIGNING_KEY or \
                     LOG_SIGNING_KEY_FILE (`audit-service log-key NAME` makes one)"
                        .into(),
                ))
            }
            (true, Some((name, text))) => {
                let key = LogKey::parse(&text).map_err(|reason| error(name, "***", reason))?;
                Some(Arc::new(key))
            }
        };
        if let (Some(origin), Some(key)) = (non_empty(env_or("LOG_ORIGIN", "")), &key) {
            if origin != key.origin() {
                return Err(error(
                    "LOG_ORIGIN",
                    &origin,
                    format!("is not the signing key's name {:?}", key.origin()),
                ));
            }
        }
        let erase_on_types = env_or("ERASE_ON_TYPES", "")
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect();
        let retention = match non_empty(env_or("RETENTION", "")) {
            None => None,
            Some(text) => match humantime::parse_duration(text.trim()) {
                Ok(d) if !d.is_zero() => Some(d),
                Ok(_) => return Err(error("RETENTION", &text, "must be longer than zero".into())),
                Err(e) => {
                    return Err(error(
                        "RETENTION",
                        &text,
                        format!("{e} (write e.g. 90d, 36h)"),
                    ))
                }
            },
        };
        Ok(LogSettings {
            key,
            erase_on_types,
            retention,
        })
    }

    /// Says at start how the trail is kept, and the verifier key.
    pub fn announce(&self) {
        match &self.key {
            Some(key) => tracing::info!(
                origin = key.origin(),
                verifier_key = key.verifier_key(),
                "transparency log on: checkpoints at /log/checkpoint, verifier key at /log/key"
            ),
            None => tracing::info!(
                "transparency log off: set LOG_SIGNING_KEY (or LOG_SIGNING_KEY_FILE) to turn it on"
            ),
        }
    }
}

fn non_empty(value: String) -> Option<String> {
    Some(value).filter(|v| !v.trim().is_empty())
}
