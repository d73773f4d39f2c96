//! The one error type of the HTTP API, answered as application/problem+json.

use crate::ingest::decode::DecodeError;
use crate::store::StoreError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use shared::problem::Problem;
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
    /// Not the client's fault: logged in full, answered without details.
    #[error("the audit store failed")]
    Store(#[source] Arc<StoreError>),
    #[error("{0}")]
    NotReady(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::InvalidEvent(DecodeError::TooManyEvents { .. }) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ApiError::InvalidEvent(_) | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Store(_) | ApiError::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        let detail = match &self {
            ApiError::Store(e) => {
                tracing::error!(error = ?e, "audit store failure answered with 503");
                // A sender retries a 503; the event was not stored.
                "the audit store is unavailable, retry later".to_owned()
            }
            other => other.to_string(),
        };
        Problem::new(status, detail).into_response()
    }
}
