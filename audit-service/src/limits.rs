//! What one request or one client can make the audit service hold, beyond
//! the server's own limits (`service_kit::serve`): the size of an attribute, the
//! events in a batch, how long a request may take and how many clients
//! follow the live tail at once.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use service_kit::openapi::{operations_mut, problem_response};
use service_kit::problem::Problem;
use settings::{env_parse, ConfigError};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::schema::{Object, Type};
use utoipa::openapi::OpenApi;

/// The path of the live tail.
const STREAM_PATH: &str = "/v1/events/stream";

/// Limits of the query side and of any request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiLimits {
    /// `REQUEST_TIMEOUT_MS`: the longest a request may take, body upload
    /// included, before it is answered 408 (a live tail counts until its
    /// stream starts).
    pub request_timeout: Duration,
    /// `MAX_STREAM_CLIENTS`: live-tail clients at once. Each holds a
    /// subscription to the feed and, while catching up, a page of events.
    pub max_stream_clients: usize,
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            request_timeout: Duration::from_secs(30),
            max_stream_clients: 256,
        }
    }
}

impl ApiLimits {
    pub fn from_env() -> Result<Self, ConfigError> {
        let defaults = ApiLimits::default();
        let timeout_ms: u64 = env_parse(
            "REQUEST_TIMEOUT_MS",
            defaults.request_timeout.as_millis() as u64,
        )?;
        let max_stream_clients = env_parse("MAX_STREAM_CLIENTS", defaults.max_stream_clients)?;
        for (name, value) in [
            ("REQUEST_TIMEOUT_MS", timeout_ms),
            ("MAX_STREAM_CLIENTS", max_stream_clients as u64),
        ] {
            if value == 0 {
                return Err(ConfigError {
                    name: name.into(),
                    value: "0".into(),
                    reason: "must be at least 1".into(),
                });
            }
        }
        Ok(ApiLimits {
            request_timeout: Duration::from_millis(timeout_ms),
            max_stream_clients,
        })
    }

    /// The places of the live tail: one per client following it.
    pub fn stream_places(&self) -> Arc<Semaphore> {
        Arc::new(Semaphore::new(self.max_stream_clients))
    }
}

/// What a live-tail client gets while every place is taken: 503 with
/// Retry-After. (The handler takes the places, rather than a middleware: a
/// layer on the router was one more for every request, some 3,000
/// instructions each on the sink.)
pub fn crowded() -> Response {
    let mut response = Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "too many clients follow the live tail; retry later",
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    response
}

/// Documents in `doc` what the limits answer, on the operations they
/// apply to: 503 with `Retry-After` on the live tail, and 431 on `POST /`,
/// whose attributes travel as headers in binary mode. (The request
/// timeout's answer is the service stack's: `service_kit::router`.)
pub fn document(doc: &mut OpenApi) {
    let crowded = problem_response("MAX_STREAM_CLIENTS clients follow the live tail already")
        .header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(Object::with_type(Type::Integer))
                .description(Some("Seconds to wait before trying again"))
                .build(),
        )
        .build();
    let headers_too_large = problem_response(
        "The request's headers (the ce- attributes in binary mode) are larger than 64 KiB in all",
    )
    .build();
    for (path, operation) in operations_mut(doc) {
        let responses = &mut operation.responses.responses;
        match path {
            STREAM_PATH => {
                responses.insert("503".to_owned(), crowded.clone().into());
            }
            "/" => {
                responses.insert("431".to_owned(), headers_too_large.clone().into());
            }
            _ => {}
        }
    }
}
