//! `GET /readyz`: whether this instance should receive traffic; and
//! `GET /delivery`: whether its events reach the receiver, and why not.
//!
//! By default readiness follows delivery (`READINESS=delivery`): an
//! instance whose events do not get through (the oldest pending event has
//! waited longer than `DELIVERY_LAG_MAX_MS`, or the broker does not answer)
//! is not ready, so an orchestrator and a new user see at once what the
//! outbox would otherwise hide. The price: every replica shares the
//! receiver, so an audit or broker outage takes every replica out of its
//! load balancer together, although the API itself still works (users are
//! created; their events wait in the outbox). `READINESS=database` makes
//! readiness the database alone, for deployments that would rather keep
//! serving users through such an outage and watch `/delivery` (or the
//! `outbox_oldest_pending_age_seconds` gauge) instead.

use super::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde::Serialize;
use service_kit::problem::Problem;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(readyz))
        .routes(routes!(delivery))
}

/// What `/readyz` follows (`READINESS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// The database answers and events get through (the default).
    Delivery,
    /// The database answers.
    Database,
}

impl Readiness {
    pub fn from_env() -> Result<Self, settings::ConfigError> {
        match std::env::var("READINESS").ok().as_deref() {
            None | Some("") | Some("delivery") => Ok(Readiness::Delivery),
            Some("database") => Ok(Readiness::Database),
            Some(other) => Err(settings::ConfigError {
                name: "READINESS".into(),
                value: other.into(),
                reason: "expected delivery or database".into(),
            }),
        }
    }
}

/// Ready when the database answers and, with `READINESS=delivery` (the
/// default), events get through (see the module header).
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Object, example = json!({"status": "ready"})),
        (status = 503, description = "The database does not answer, or (READINESS=delivery, the default) events do not get through: the oldest pending event has waited longer than DELIVERY_LAG_MAX_MS, or the broker does not answer", body = Problem, content_type = "application/problem+json"),
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
    if state.readiness == Readiness::Delivery {
        if let Ok((_, Some(detail))) = delivery_verdict(&state).await {
            return Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "events do not get through: {detail} (GET /delivery says more; \
                     READINESS=database makes readiness the database alone)"
                ),
            )
            .into_response();
        }
    }
    Json(serde_json::json!({"status": "ready"})).into_response()
}

/// How delivery stands, read from the outbox all replicas share.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct DeliveryReport {
    /// `delivering`, or `failing` (then answered as a 503 problem with
    /// these members beside `detail`).
    state: &'static str,
    /// `http`, `kafka` or `nats`.
    transport: &'static str,
    /// Events not delivered yet.
    pending: i64,
    /// How long the oldest of them has waited; 0 when there is none.
    oldest_pending_age_seconds: f64,
    /// Why the last attempt to send the oldest pending event failed.
    last_error: Option<String>,
    /// Events the receiver refused for good, parked for an operator
    /// (`user-service dead-letters list`).
    dead_letters: i64,
}

/// The delivery report, and why delivery is failing when it is; an error
/// when the database does not answer.
async fn delivery_verdict(state: &AppState) -> Result<(DeliveryReport, Option<String>), Response> {
    let backlog = match state.store.backend().backlog().await {
        Ok(backlog) => backlog,
        Err(e) => {
            return Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("database unreachable: {e}"),
            )
            .into_response())
        }
    };
    let age = backlog.oldest.map_or(0.0, |created| {
        (Utc::now() - created).num_milliseconds().max(0) as f64 / 1000.0
    });
    let report = DeliveryReport {
        state: "delivering",
        transport: state.publisher.transport().as_str(),
        pending: backlog.pending,
        oldest_pending_age_seconds: age,
        last_error: backlog.oldest_error,
        dead_letters: backlog.dead,
    };
    let failing = match state.publisher.check_ready().await {
        Err(broker) => Some(format!("the broker does not answer: {broker}")),
        Ok(()) if age > state.lag_max.as_secs_f64() => Some(format!(
            "the oldest pending event has waited {age:.1} s, longer than DELIVERY_LAG_MAX_MS \
             ({} ms); last error: {}",
            state.lag_max.as_millis(),
            report.last_error.as_deref().unwrap_or("none yet")
        )),
        Ok(()) => None,
    };
    Ok((report, failing))
}

/// Whether events reach the receiver: 503 when the oldest pending event
/// has waited longer than `DELIVERY_LAG_MAX_MS`, or the broker does not
/// answer, with the relay's last reason.
#[utoipa::path(
    get,
    path = "/delivery",
    tag = "operations",
    responses(
        (status = 200, description = "Events are being delivered", body = DeliveryReport,
         example = json!({"state": "delivering", "transport": "http", "pending": 0,
                          "oldest_pending_age_seconds": 0.0, "last_error": null, "dead_letters": 0})),
        (status = 503, description = "Delivery is failing, or the database does not answer: a problem whose members are those of the report", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn delivery(State(state): State<AppState>) -> Response {
    let (mut report, failing) = match delivery_verdict(&state).await {
        Ok(verdict) => verdict,
        Err(response) => return response,
    };
    let Some(detail) = failing else {
        return Json(report).into_response();
    };
    report.state = "failing";
    let mut body = serde_json::json!(Problem::new(StatusCode::SERVICE_UNAVAILABLE, detail));
    if let (Some(body), Ok(serde_json::Value::Object(members))) =
        (body.as_object_mut(), serde_json::to_value(&report))
    {
        body.extend(members);
    }
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(
            axum::http::header::CONTENT_TYPE,
            service_kit::problem::CONTENT_TYPE,
        )],
        Json(body),
    )
        .into_response()
}
