//! Who may use the users API: optional bearer tokens for the API
//! (`API_TOKENS`) and for `/metrics` (`METRICS_TOKENS`), through the same
//! doors as audit-service's (`service_kit::auth`). Probes and the API
//! description stay open; any other path, a route added later included,
//! is the API's.

use service_kit::auth::{Door, Doors};
use settings::ConfigError;
use settings::Tokens;
use utoipa::openapi::OpenApi;

/// The token sets; a door whose set is `None` is open.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// `API_TOKENS` (or `API_TOKENS_FILE`): who may create, read, change
    /// and delete users.
    pub api: Option<Tokens>,
    /// `METRICS_TOKENS` (or `METRICS_TOKENS_FILE`): who may scrape `/metrics`.
    pub metrics: Option<Tokens>,
}

impl Access {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Access {
            api: Tokens::from_env("API_TOKENS")?,
            metrics: Tokens::from_env("METRICS_TOKENS")?,
        })
    }

    /// Says at start when the API is open, so an unprotected deployment is
    /// seen in its first log lines.
    pub fn warn_if_open(&self) {
        if self.api.is_none() {
            tracing::warn!(
                "the users API accepts requests from anyone: set API_TOKENS to require a bearer token"
            );
        }
    }

    /// The doors: every request outside the open paths needs a token of
    /// its door, when that door has tokens.
    pub fn doors(self) -> Doors {
        let door = |name, tokens| Door {
            name,
            tokens,
            rate: None,
            closed_without_tokens: false,
        };
        Doors {
            realm: "user-service",
            door_of,
            doors: vec![door("api", self.api), door("metrics", self.metrics)],
        }
    }
}

/// The door of `path`; `None` for the probes and the API description.
fn door_of(path: &str) -> Option<&'static str> {
    match path {
        "/healthz" | "/readyz" | "/openapi.json" => None,
        "/metrics" => Some("metrics"),
        _ => Some("api"),
    }
}

/// Documents the bearer scheme in `doc`, and on every operation behind a
/// door its optional security and its 401.
pub fn document(doc: &mut OpenApi) {
    service_kit::auth::document(
        doc,
        door_of,
        "A token of the operation's door: METRICS_TOKENS for /metrics, API_TOKENS for the \
         rest. A door whose tokens are not configured is open.",
        &[],
    );
}
