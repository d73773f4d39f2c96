//! The one error type of the HTTP API, answered as application/problem+json.

use crate::filter::FilterError;
use crate::store::StoreError;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use cloudevents_wire::decode::DecodeError;
use serde::Serialize;
use service_kit::problem::Problem;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is not a valid CloudEvent; the text says why.
    #[error(transparent)]
    InvalidEvent(#[from] DecodeError),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("the request body is larger than the limit of {0} bytes")]
    PayloadTooLarge(usize),
    #[error("{0}")]
    BadRequest(String),
    /// A `filter` that is too long or not CESQL; answered with where.
    #[error(transparent)]
    BadFilter(#[from] FilterError),
    /// Not the client's fault: logged in full, answered without details.
    #[error("the audit store failed")]
    Store(#[source] Arc<StoreError>),
    #[error("{0}")]
    NotReady(String),
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the resource's state (a replay that has
    /// already ended cannot be cancelled).
    #[error("{0}")]
    Conflict(String),
    /// A valid event the database refused for a value in it: sending it
    /// again would meet the same refusal.
    #[error("{0}")]
    Unstorable(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::InvalidEvent(DecodeError::TooManyEvents { .. }) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ApiError::InvalidEvent(_) | ApiError::BadRequest(_) | ApiError::BadFilter(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unstorable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Store(_) | ApiError::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
        };
        let detail = match &self {
            ApiError::Store(e) => {
                tracing::error!(error = ?e, "audit store failure answered with 503");
                // A sender retries a 503; the event was not stored.
                "the audit store is unavailable, retry later".to_owned()
            }
            ApiError::BadFilter(FilterError::Invalid(error)) => {
                return filter_problem(Problem::new(status, self.to_string()), error);
            }
            other => other.to_string(),
        };
        Problem::new(status, detail).into_response()
    }
}

/// The 400 of a query: a problem, and for a bad filter where it went
/// wrong, as extension members (RFC 9457 section 3.2) that a client can
/// point at.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "type": "about:blank",
    "title": "Bad Request",
    "status": 400,
    "detail": "filter: expected an expression at column 9",
    "column": 9,
    "offset": 8
}))]
pub struct FilterProblem {
    /// Always `about:blank`.
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    kind: &'static str,
    /// The HTTP status phrase.
    title: String,
    /// The HTTP status code.
    status: u16,
    /// What was wrong, in words.
    detail: String,
    /// A bad filter only: where the mistake is, in characters from 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    column: Option<usize>,
    /// A bad filter only: where the mistake is, as a byte offset in the
    /// filter's UTF-8 text.
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<usize>,
}

/// A bad filter's problem (see [`FilterProblem`]).
fn filter_problem(problem: Problem, error: &cesql::ParseError) -> Response {
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::BAD_REQUEST);
    let body = FilterProblem {
        kind: problem.kind,
        title: problem.title,
        status: problem.status,
        detail: problem.detail,
        column: Some(error.column),
        offset: Some(error.offset),
    };
    (
        status,
        [(header::CONTENT_TYPE, service_kit::problem::CONTENT_TYPE)],
        axum::Json(body),
    )
        .into_response()
}
