//! The HTTP stack both services serve their routes with: one order of
//! middleware, so both answer alike, and a timed-out request gets the same
//! status from either.
//!
//! From the outside in: the doors (`auth`: bearer tokens and rate limits,
//! per path); plain-text errors become problem+json; the request id is set
//! (before the span is made, so the span and every log line in it carry
//! it, and the response returns it); the request's span; metrics labelled
//! by `MatchedPath`; and, on the API routes only, the request timeout. The probes, `/metrics` and `/openapi.json` are outside the
//! timeout: a stuck database must not make `/healthz` hang.

use crate::auth::Doors;
use axum::http::StatusCode;
use axum::middleware;
use axum::Router;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceBuilder;
use tower_http::timeout::TimeoutLayer;
use utoipa::openapi::OpenApi;

/// What a request still unanswered after the request timeout gets, body
/// upload included: 408, which a client may retry (RFC 9110 15.5.9) and
/// every relay here does; nothing was done that a retry would repeat.
pub const TIMED_OUT: StatusCode = StatusCode::REQUEST_TIMEOUT;

/// A service's routes, split as the stack treats them.
pub struct Routes<S> {
    /// The API: under the request timeout.
    pub api: Router<S>,
    /// The operational routes (`/healthz`, `/metrics`): outside it.
    pub ops: Router<S>,
    /// The OpenAPI document of both, served at `/openapi.json`.
    pub doc: OpenApi,
}

/// The service's whole router: `routes` behind its `doors` and the
/// middleware every service has, in the one order (see the module's
/// comment).
pub fn router<S: Clone + Send + Sync + 'static>(
    routes: Routes<S>,
    state: S,
    request_timeout: Duration,
    doors: Doors,
) -> Router {
    routes
        .api
        .layer(TimeoutLayer::with_status_code(TIMED_OUT, request_timeout))
        .merge(routes.ops)
        .merge(crate::telemetry::openapi_route(&routes.doc))
        // One `layer` for the whole stack: each one wraps every route once
        // more, and a request then clones and boxes each level (some 3,000
        // instructions a level, a tenth of the single-event sink's work
        // when the stack was six).
        .layer(
            // Outermost first.
            ServiceBuilder::new()
                .layer(middleware::from_fn_with_state(
                    Arc::new(doors),
                    crate::auth::pass,
                ))
                .layer(middleware::map_response(
                    crate::problem::problem_for_plain_errors,
                ))
                .layer(middleware::from_fn(crate::telemetry::request_id))
                .layer(crate::http_log::trace_layer())
                .layer(middleware::from_fn(crate::telemetry::track_http_metrics)),
        )
        .with_state(state)
}

/// Documents the timeout's answer on every operation of `doc`; call it
/// before the operational routes' document joins (they are outside the
/// timeout).
pub fn document_timeout(doc: &mut OpenApi) {
    let timed_out = crate::openapi::problem(
        "The request took longer than the request timeout, body upload included; nothing was \
         done that a retry would repeat",
    );
    for (_, operation) in crate::openapi::operations_mut(doc) {
        operation
            .responses
            .responses
            .insert(TIMED_OUT.as_str().to_owned(), timed_out.clone().into());
    }
}
