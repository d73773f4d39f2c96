//! The one error type of the HTTP API, answered as problem+json.

use axum::extract::rejection::QueryRejection;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use service_kit::json_body::JsonRejection;
use service_kit::problem::Problem;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request was understood but a value in it is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// The body or query could not be read as the endpoint expects; the
    /// rejection carries its own status (400, 413 or 415).
    #[error("{detail}")]
    Rejected { status: StatusCode, detail: String },
    #[error("no user with id {0}")]
    UserNotFound(uuid::Uuid),
    /// Too many passwords are being hashed already; the client should come
    /// back in a moment.
    #[error("too many requests are hashing passwords; retry in a moment")]
    Overloaded,
    /// Anything that is our fault. Logged in full, answered without detail.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::Rejected {
            status: rejection.status(),
            detail: rejection.body_text(),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        ApiError::Rejected {
            status: rejection.status,
            detail: rejection.detail,
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::Internal(anyhow::Error::new(e).context("database query failed"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Invalid(detail) => Problem::new(StatusCode::BAD_REQUEST, detail),
            ApiError::Rejected { status, detail } => Problem::new(status, detail),
            e @ ApiError::UserNotFound(_) => Problem::new(StatusCode::NOT_FOUND, e.to_string()),
            e @ ApiError::Overloaded => {
                let mut response =
                    Problem::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response();
                // One hash takes tens of milliseconds; a second is plenty
                // for a queue's worth to clear.
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                return response;
            }
            ApiError::Internal(e) => {
                tracing::error!(error = format!("{e:#}"), "request failed");
                Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error; see the service log",
                )
            }
        }
        .into_response()
    }
}
