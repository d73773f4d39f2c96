//! `GET /readyz`: whether this instance should receive traffic.

use super::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use shared::problem::Problem;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(readyz))
}

/// Ready when the database answers and, on a broker, the broker does. On HTTP
/// the audit service is deliberately not checked: events wait in the outbox
/// while it is down, and users can still be created.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Object, example = json!({"status": "ready"})),
        (status = 503, description = "The database or the broker does not answer", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn readyz(State(state): State<AppState>) -> Response {
    if let Err(e) = state.store.backend().ping().await {
        return Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("database unreachable: {e}"),
        )
        .into_response();
    }
    if let Err(e) = state.publisher.check_ready().await {
        return Problem::new(StatusCode::SERVICE_UNAVAILABLE, e).into_response();
    }
    Json(serde_json::json!({"status": "ready"})).into_response()
}
