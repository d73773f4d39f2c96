//! `GET /readyz`: whether this instance should receive traffic.

use super::state::AppState;
use crate::error::ApiError;
use axum::extract::State;
use service_kit::problem::Problem;
use std::time::Duration;

/// How long `/readyz` waits for the brokers.
const BROKER_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Ready when the database answers and, on a broker transport, the broker
/// does.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Object, example = json!({"status": "ready"})),
        (status = 503, description = "The database or the broker does not answer", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn readyz(
    State(state): State<AppState>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    if !state.store.is_reachable().await {
        return Err(ApiError::NotReady(
            "the audit database is unreachable".into(),
        ));
    }
    if let Some(broker) = &state.broker {
        broker
            .check(BROKER_PROBE_TIMEOUT)
            .await
            .map_err(ApiError::NotReady)?;
    }
    Ok(axum::Json(serde_json::json!({"status": "ready"})))
}
