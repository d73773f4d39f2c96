//! Who may write and read the audit trail, and how often: bearer tokens and
//! per-client rate limits for ingest (`POST /`) and for reading (the query
//! API, the live tail, the console and any route added later), optionally
//! tokens for `/metrics`, and the admin door for erasure, closed unless its
//! tokens are set. The doors themselves are
//! `service_kit::auth`'s; this module says which path goes through which, so
//! that a route added later is a reading route, closed by default.

use service_kit::auth::{Door, Doors};
use service_kit::rate_limit::{RateLimiter, RateSettings};
use settings::ConfigError;
use settings::Tokens;
use utoipa::openapi::OpenApi;

/// The token sets, and the rate limits of the doors that have one; a door
/// whose set is `None` is open, one whose limit is `None` unlimited.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// `INGEST_TOKENS` (or `INGEST_TOKENS_FILE`): who may send events.
    pub ingest: Option<Tokens>,
    /// `READ_TOKENS` (or `READ_TOKENS_FILE`): who may read them.
    pub read: Option<Tokens>,
    /// `METRICS_TOKENS` (or `METRICS_TOKENS_FILE`): who may scrape `/metrics`.
    pub metrics: Option<Tokens>,
    /// `INGEST_RATE_LIMIT`, `INGEST_RATE_BURST`: requests to `POST /` per
    /// client (token, or address without tokens).
    pub ingest_rate: Option<RateSettings>,
    /// `READ_RATE_LIMIT`, `READ_RATE_BURST`: reading requests per client.
    pub read_rate: Option<RateSettings>,
    /// `ADMIN_TOKENS` (or `ADMIN_TOKENS_FILE`): who may erase data and
    /// replay the trail. Unlike
    /// the other doors this one is closed while it has no tokens: erasure
    /// cannot be undone.
    pub admin: Option<Tokens>,
}

/// What a request asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Ingest,
    Read,
    Metrics,
    /// Erasure (`/v1/subjects/...`) and replays (`/v1/replays`).
    Admin,
    /// Liveness, readiness, the API description and the console's static
    /// page: probes, tools and browsers reach them without a token, and
    /// they show no event.
    Open,
}

impl Scope {
    pub fn of(path: &str) -> Scope {
        match path {
            "/" => Scope::Ingest,
            "/metrics" => Scope::Metrics,
            "/healthz" | "/readyz" | "/openapi.json" => Scope::Open,
            // A checkpoint and its key show no event: anyone may check the
            // log's size and root, and publish them elsewhere.
            "/log/checkpoint" | "/log/key" => Scope::Open,
            _ if path.starts_with("/v1/subjects/") => Scope::Admin,
            // A replay sends the trail wherever it is told.
            "/v1/replays" => Scope::Admin,
            _ if path.starts_with("/v1/replays/") => Scope::Admin,
            // The console's page and files show no event: the page asks
            // for a read token when its fetches of the API get a 401, so
            // it must load without one.
            "/console"
            | "/console/console.js"
            | "/console/console.css"
            | "/console/favicon.svg" => Scope::Open,
            _ => Scope::Read,
        }
    }

    /// The door of `path`, by name; `None` for the open paths.
    fn door_of(path: &str) -> Option<&'static str> {
        match Scope::of(path) {
            Scope::Open => None,
            scope => Some(scope.name()),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Read => "read",
            Scope::Metrics => "metrics",
            Scope::Admin => "admin",
            Scope::Open => "open",
        }
    }
}

impl Access {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Access {
            ingest: Tokens::from_env("INGEST_TOKENS")?,
            read: Tokens::from_env("READ_TOKENS")?,
            metrics: Tokens::from_env("METRICS_TOKENS")?,
            ingest_rate: RateSettings::from_env("INGEST_RATE_LIMIT", "INGEST_RATE_BURST")?,
            read_rate: RateSettings::from_env("READ_RATE_LIMIT", "READ_RATE_BURST")?,
            admin: Tokens::from_env("ADMIN_TOKENS")?,
        })
    }

    /// Says at start which doors are open, so an unprotected production
    /// service is seen in its first log lines.
    pub fn warn_if_open(&self) {
        if self.ingest.is_none() {
            tracing::warn!(
                "POST / accepts events from anyone: set INGEST_TOKENS to require a bearer token"
            );
        }
        if self.read.is_none() {
            tracing::warn!(
                "the stored events can be read by anyone: set READ_TOKENS to require a bearer token"
            );
        }
    }

    /// Says at start when tokens are set on a service without TLS: they
    /// travel in clear, as user-service says of its AUDIT_TOKEN.
    pub fn warn_if_plain_http(&self, tls: bool) {
        let set: Vec<&str> = [
            ("INGEST_TOKENS", &self.ingest),
            ("READ_TOKENS", &self.read),
            ("METRICS_TOKENS", &self.metrics),
        ]
        .into_iter()
        .filter_map(|(name, tokens)| tokens.as_ref().map(|_| name))
        .collect();
        if !tls && !set.is_empty() {
            tracing::warn!(
                tokens = set.join(","),
                "bearer tokens travel over plain HTTP: anyone on the path can read them; set \
                 TLS_CERT_FILE and TLS_KEY_FILE, or keep the service on a private network"
            );
        }
    }

    /// The doors: every request outside the open paths needs a token of
    /// its scope's set, when that set is configured, and counts against its
    /// client's rate limit, when the scope has one.
    pub fn doors(self) -> Doors {
        let door = |scope: Scope, tokens, rate: Option<RateSettings>| Door {
            name: scope.name(),
            tokens,
            rate: rate.map(RateLimiter::new),
            closed_without_tokens: scope == Scope::Admin,
        };
        Doors {
            realm: "audit-service",
            door_of: Scope::door_of,
            doors: vec![
                door(Scope::Ingest, self.ingest, self.ingest_rate),
                door(Scope::Read, self.read, self.read_rate),
                door(Scope::Metrics, self.metrics, None),
                door(Scope::Admin, self.admin, None),
            ],
        }
    }
}

/// Documents the bearer scheme in `doc`, and on every operation outside the
/// open paths its optional security, its 401 and, for ingest and reading,
/// its 429.
pub fn document(doc: &mut OpenApi) {
    service_kit::auth::document(
        doc,
        Scope::door_of,
        "A token of the operation's door: INGEST_TOKENS for POST /, METRICS_TOKENS for \
         /metrics, ADMIN_TOKENS for /v1/subjects/... (erasure) and /v1/replays, READ_TOKENS for the rest. A \
         door whose tokens are not configured is open, but for the admin door, which is closed.",
        &[Scope::Ingest.name(), Scope::Read.name()],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_but_the_probes_needs_a_scope() {
        assert_eq!(Scope::of("/"), Scope::Ingest);
        assert_eq!(Scope::of("/v1/events"), Scope::Read);
        assert_eq!(Scope::of("/v1/events/stream"), Scope::Read);
        assert_eq!(Scope::of("/console/anything-else"), Scope::Read);
        assert_eq!(Scope::of("/anything/new"), Scope::Read);
        assert_eq!(Scope::of("/metrics"), Scope::Metrics);
        assert_eq!(Scope::of("/v1/subjects/u1/data"), Scope::Admin);
        assert_eq!(Scope::of("/v1/replays"), Scope::Admin);
        assert_eq!(Scope::of("/v1/replays/r1"), Scope::Admin);
        assert_eq!(Scope::of("/v1/replayss"), Scope::Read);
        assert_eq!(Scope::of("/log/tile/0/000"), Scope::Read);
        assert_eq!(Scope::of("/log/checkpoint"), Scope::Open);
        for open in [
            "/healthz",
            "/readyz",
            "/openapi.json",
            "/console",
            "/console/console.js",
        ] {
            assert_eq!(Scope::of(open), Scope::Open);
        }
    }

    #[test]
    fn the_document_shows_the_bearer_scheme_and_the_401s() {
        let doc = serde_json::to_value(crate::http::openapi()).unwrap();
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        for (path, method) in [("/", "post"), ("/v1/events", "get"), ("/metrics", "get")] {
            let operation = &doc["paths"][path][method];
            assert!(operation["responses"]["401"].is_object(), "{path}");
            assert_eq!(
                operation["responses"]["429"].is_object(),
                path != "/metrics",
                "{path}"
            );
            assert_eq!(operation["security"][1]["bearer"], serde_json::json!([]));
        }
        assert!(doc["paths"]["/healthz"]["get"]["responses"]["401"].is_null());
    }
}
