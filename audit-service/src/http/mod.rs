//! audit-service's HTTP layer: the state its handlers share ([`state`]),
//! its routes and their OpenAPI document, behind the stack both services
//! serve with (`service_kit::router`).

mod health;
pub mod state;

use crate::{console, ingest, query, replay, tlog};
use axum::Router;
use service_kit::auth::Doors;
use service_kit::router::Routes;
use state::AppState;
use std::time::Duration;
use utoipa::openapi::OpenApi;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The OpenAPI 3.1 document of the service's HTTP API, generated from the
/// handlers' annotations; served at `GET /openapi.json`.
pub fn openapi() -> OpenApi {
    routes().doc
}

/// The documented routes (the API, then the operational ones) and their
/// document.
fn routes() -> Routes<AppState> {
    let (api, mut doc) = OpenApiRouter::with_openapi(crate::openapi::ApiDoc::openapi())
        .merge(ingest::http::router())
        .merge(query::router())
        .merge(console::router())
        .merge(tlog::routes::router())
        .merge(replay::routes::router())
        .routes(routes!(health::readyz))
        .split_for_parts();
    // Before the probes join: they are outside the request timeout.
    service_kit::router::document_timeout(&mut doc);
    crate::limits::document(&mut doc);
    let (ops, ops_doc) = service_kit::telemetry::ops_router().split_for_parts();
    doc.merge(ops_doc);
    crate::auth::document(&mut doc);
    Routes { api, ops, doc }
}

/// Every route behind `doors` and the service stack; a request that takes
/// longer than `request_timeout` (a stuck store) is answered
/// `service_kit::router::TIMED_OUT`, so a graceful shutdown can't hang on it.
pub fn router(state: AppState, request_timeout: Duration, doors: Doors) -> Router {
    let routes = routes();
    service_kit::router::router(routes, state, request_timeout, doors)
}
