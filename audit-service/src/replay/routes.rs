//! `/v1/replays`: create, read, list and cancel replays. Behind the admin
//! door (`crate::auth`): a replay sends the trail to wherever it is told.

use super::create::CreateError;
use super::db::{self, ReplayRow, ReplayState};
use super::spec::{ReplayRequest, SpecError};
use crate::error::{ApiError, FilterProblem};
use crate::http::state::AppState;
use crate::store::StoreError;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Serialize;
use service_kit::json_body::JsonBody;
use service_kit::problem::Problem;
use std::sync::Arc;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Replays listed at most.
const LIST_MAX: i64 = 1000;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(status, cancel))
}

/// A replay as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayStatus {
    pub id: String,
    pub state: ReplayState,
    /// The request as it was accepted.
    pub request: ReplayRequest,
    /// The seqs the replay covers, inclusive (a time range resolved).
    pub from_seq: i64,
    pub to_seq: i64,
    /// The last seq done with: every selected event up to it was sent
    /// (acknowledged), dead-lettered or skipped.
    pub position: i64,
    /// Events the target acknowledged (counted, in a dry run).
    pub sent: i64,
    /// Failed attempts, each retried.
    pub failed: i64,
    /// Events the target refused for good.
    pub dead_lettered: i64,
    /// Erased events left out (`"erased": "skip"`).
    pub skipped: i64,
    /// Events sent a second since the replay started.
    pub rate: f64,
    /// Seconds left, estimated from the progress through the seq range so
    /// far; null before there is any.
    pub eta_seconds: Option<f64>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// The replica running it (`HOSTNAME/pid/tag`, its lease holder); null
    /// before a replica takes it and once it has ended. A replica that
    /// died holds it until `REPLAY_LEASE_MS` has passed.
    pub holder: Option<String>,
}

impl ReplayStatus {
    pub fn of(row: ReplayRow) -> Self {
        let started = row
            .started_at
            .as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc));
        let ended = row
            .finished_at
            .as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc));
        let elapsed = started
            .map(|s| (ended.unwrap_or_else(Utc::now) - s).num_milliseconds() as f64 / 1000.0)
            .filter(|e| *e > 0.0);
        let rate = elapsed.map_or(0.0, |e| row.counts.sent as f64 / e);
        let done = row.position - (row.from_seq - 1);
        let left = (row.to_seq - row.position).max(0);
        let eta_seconds = match (row.state, elapsed) {
            (ReplayState::Done, _) => Some(0.0),
            (ReplayState::Running, Some(e)) if done > 0 => Some(left as f64 * e / done as f64),
            _ => None,
        };
        ReplayStatus {
            id: row.id,
            state: row.state,
            request: row.request,
            from_seq: row.from_seq,
            to_seq: row.to_seq,
            position: row.position,
            sent: row.counts.sent,
            failed: row.counts.failed,
            dead_lettered: row.counts.dead_lettered,
            skipped: row.counts.skipped,
            rate,
            eta_seconds,
            created_at: row.created_at,
            started_at: row.started_at,
            finished_at: row.finished_at,
            error: row.error,
            holder: row.holder,
        }
    }
}

/// `GET /v1/replays`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayList {
    /// Newest first, at most 1000.
    pub replays: Vec<ReplayStatus>,
}

/// Creates a replay: the stored events the selection picks, in seq order,
/// sent again to the target, unchanged (same `id` and `source`; the
/// `replayid` extension only when asked for). It runs in the background on
/// one replica, resumes from its position after a restart (events
/// acknowledged since the last stored position may be sent twice, none is
/// left out), and `GET /v1/replays/{id}` follows it. Needs a token of
/// `ADMIN_TOKENS`.
#[utoipa::path(
    post,
    path = "/v1/replays",
    tag = "replays",
    request_body(content = ReplayRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "Accepted: the replay runs in the background",
            body = ReplayStatus,
            headers(("Location" = String, description = "The replay, `/v1/replays/{id}`"))),
        (status = 400, description = "The request is not a valid replay; a bad `filter` has `column` and `offset` members. A filter that needs more work on one event than a page may spend is refused here too", body = FilterProblem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not `application/json`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn create(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<ReplayRequest>,
) -> Result<Response, ApiError> {
    let row = super::create(&state.store, request)
        .await
        .map_err(|e| match e {
            CreateError::Spec(SpecError::Filter(e)) => ApiError::BadFilter(e),
            CreateError::Spec(SpecError::Invalid(e)) => ApiError::BadRequest(e),
            CreateError::Store(e) => store_error(e),
            CreateError::ShuttingDown => ApiError::NotReady("the service is shutting down".into()),
        })?;
    let id = row.id.clone();
    state.replays.now();
    let location = format!("/v1/replays/{id}");
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(ReplayStatus::of(row)),
    )
        .into_response())
}

/// The replays, newest first.
#[utoipa::path(
    get,
    path = "/v1/replays",
    tag = "replays",
    responses(
        (status = 200, description = "The replays, newest first", body = ReplayList),
        (status = 503, description = "The store is unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list(State(state): State<AppState>) -> Result<Json<ReplayList>, ApiError> {
    let rows = db::list(state.store.readers(), LIST_MAX)
        .await
        .map_err(store_error)?;
    Ok(Json(ReplayList {
        replays: rows.into_iter().map(ReplayStatus::of).collect(),
    }))
}

/// A replay's state and progress.
#[utoipa::path(
    get,
    path = "/v1/replays/{id}",
    tag = "replays",
    params(("id" = String, Path, description = "The replay's id")),
    responses(
        (status = 200, description = "The replay", body = ReplayStatus),
        (status = 404, description = "No such replay", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn status(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ReplayStatus>, ApiError> {
    let row = db::get(state.store.readers(), &id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| not_found(&id))?;
    Ok(Json(ReplayStatus::of(row)))
}

/// Cancels a replay: it stops within about a second, where it is; what it
/// sent stays sent.
#[utoipa::path(
    delete,
    path = "/v1/replays/{id}",
    tag = "replays",
    params(("id" = String, Path, description = "The replay's id")),
    responses(
        (status = 200, description = "Cancelled", body = ReplayStatus),
        (status = 404, description = "No such replay", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The replay has already ended", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ReplayStatus>, ApiError> {
    let readers = state.store.readers();
    let cancelled = db::cancel(readers, &id).await.map_err(store_error)?;
    let row = db::get(readers, &id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| not_found(&id))?;
    if !cancelled {
        return Err(ApiError::Conflict(format!(
            "replay {id} has already ended ({})",
            row.state.as_str()
        )));
    }
    Ok(Json(ReplayStatus::of(row)))
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("there is no replay {id}"))
}

fn store_error(error: StoreError) -> ApiError {
    ApiError::Store(Arc::new(error))
}
