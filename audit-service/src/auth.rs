//! Who may write and read the audit trail: bearer tokens for ingest
//! (`POST /`), for reading (the query API, the live tail, the console and
//! any route added later) and, optionally, for `/metrics`.
//!
//! One middleware classifies requests by path rather than one layer per
//! router, so that a route added later is a reading route, closed by
//! default, instead of an open one.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use shared::auth::{bearer_token, Tokens};
use shared::config::ConfigError;
use shared::problem::Problem;
use std::sync::Arc;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, ResponseBuilder};

/// The token sets; a door whose set is `None` is open.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// `INGEST_TOKENS` (or `INGEST_TOKENS_FILE`): who may send events.
    pub ingest: Option<Tokens>,
    /// `READ_TOKENS` (or `READ_TOKENS_FILE`): who may read them.
    pub read: Option<Tokens>,
    /// `METRICS_TOKENS` (or `METRICS_TOKENS_FILE`): who may scrape `/metrics`.
    pub metrics: Option<Tokens>,
}

/// What a request asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Ingest,
    Read,
    Metrics,
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

    fn name(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Read => "read",
            Scope::Metrics => "metrics",
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
        })
    }

    fn tokens(&self, scope: Scope) -> Option<&Tokens> {
        match scope {
            Scope::Ingest => self.ingest.as_ref(),
            Scope::Read => self.read.as_ref(),
            Scope::Metrics => self.metrics.as_ref(),
            Scope::Open => None,
        }
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

    /// Wraps `router` so every request outside the open paths needs a token
    /// of its scope's set, when that set is configured.
    pub fn guard(self, router: Router) -> Router {
        router.layer(axum::middleware::from_fn_with_state(
            Arc::new(self),
            require_token,
        ))
    }
}

async fn require_token(
    State(access): State<Arc<Access>>,
    request: Request,
    next: Next,
) -> Response {
    let scope = Scope::of(request.uri().path());
    let Some(tokens) = access.tokens(scope) else {
        return next.run(request).await;
    };
    match bearer_token(request.headers()) {
        Some(token) if tokens.accepts(token) => next.run(request).await,
        Some(_) => {
            tracing::info!(
                scope = scope.name(),
                path = request.uri().path(),
                "refused a request with a wrong bearer token"
            );
            unauthorized(scope, true)
        }
        None => unauthorized(scope, false),
    }
}

/// 401 with the challenge RFC 6750 describes: the realm and scope always,
/// `error="invalid_token"` only when a token was sent (section 3.1: a
/// request without credentials gets no error code).
fn unauthorized(scope: Scope, token_sent: bool) -> Response {
    let (challenge, detail) = if token_sent {
        (
            format!(
                r#"Bearer realm="audit-service", scope="{}", error="invalid_token""#,
                scope.name()
            ),
            format!("the bearer token is not valid for {}", scope.name()),
        )
    } else {
        (
            format!(r#"Bearer realm="audit-service", scope="{}""#, scope.name()),
            format!("{} needs an Authorization: Bearer token", scope.name()),
        )
    };
    let mut response = Problem::new(StatusCode::UNAUTHORIZED, detail).into_response();
    if let Ok(value) = HeaderValue::try_from(challenge) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// Documents the bearer scheme in `doc`, and on every operation outside the
/// open paths its optional security (a door may be left open by
/// configuration) and its 401.
pub fn document(doc: &mut OpenApi) {
    let mut scheme = Http::new(HttpAuthScheme::Bearer);
    scheme.description = Some(
        "A token of the operation's door: INGEST_TOKENS for POST /, METRICS_TOKENS for \
         /metrics, READ_TOKENS for the rest. A door whose tokens are not configured is open."
            .to_owned(),
    );
    doc.components
        .get_or_insert_with(Default::default)
        .add_security_scheme("bearer", SecurityScheme::Http(scheme));
    let unauthorized = ResponseBuilder::new()
        .description("No bearer token, or not one of this door's (`WWW-Authenticate: Bearer ...`)")
        .content(
            shared::problem::CONTENT_TYPE,
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .build();
    for (path, item) in doc.paths.paths.iter_mut() {
        if Scope::of(path) == Scope::Open {
            continue;
        }
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ];
        for operation in operations.into_iter().flatten() {
            operation.security = Some(vec![
                SecurityRequirement::default(),
                SecurityRequirement::new("bearer", Vec::<String>::new()),
            ]);
            operation
                .responses
                .responses
                .insert("401".to_owned(), unauthorized.clone().into());
        }
    }
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
        let doc = serde_json::to_value(crate::app::openapi()).unwrap();
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        for (path, method) in [("/", "post"), ("/v1/events", "get"), ("/metrics", "get")] {
            let operation = &doc["paths"][path][method];
            assert!(operation["responses"]["401"].is_object(), "{path}");
            assert_eq!(operation["security"][1]["bearer"], serde_json::json!([]));
        }
        assert!(doc["paths"]["/healthz"]["get"]["responses"]["401"].is_null());
    }
}
