//! How both services log an HTTP response: by what it means, not by its
//! status class alone.
//!
//! tower-http's default counts every 5xx as a failure and logs it at ERROR.
//! Many of ours are answers the service chose: `/readyz` saying "not yet"
//! while a broker connects, 503 with `Retry-After` when too many passwords
//! are being hashed or too many clients follow the live tail, the audit
//! store's 503 that tells a sender to come back. Logged as errors, a
//! normal start and any busy minute look like outages. So:
//! - a probe's answer (`/healthz`, `/readyz`, `/metrics`, `/openapi.json`)
//!   is its content, whatever the status: it is logged like any other
//!   response (at DEBUG), and whoever changed the state it reports logs
//!   that;
//! - 503 elsewhere is a refusal: one WARN line ("request refused"), since a
//!   client was turned away, but nothing is broken;
//! - any other 5xx, or a response that broke off, is a failure: ERROR.
//!   (The handler that answered 500 has logged the cause already.)

use crate::telemetry::{request_span, OPS_ROUTES};
use axum::body::Body;
use axum::extract::MatchedPath;
use http::{Request, Response, StatusCode};
use std::time::Duration;
use tower_http::classify::{
    ClassifiedResponse, ClassifyResponse, MakeClassifier, NeverClassifyEos,
};
use tower_http::trace::{
    DefaultOnBodyChunk, DefaultOnEos, DefaultOnRequest, DefaultOnResponse, TraceLayer,
};
use tracing::Span;

/// What a response that is not plainly fine means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The service turned the request away on purpose (503).
    Refused(StatusCode),
    /// The service failed to answer it (500 and the other 5xx).
    Failed(StatusCode),
    /// The response broke off: the inner service or the body failed.
    Broken(String),
}

/// Classifies each request's response by its route and status (see the
/// module's rules).
#[derive(Debug, Clone, Copy, Default)]
pub struct ByMeaning;

/// The classifier of one request: whether it is a probe.
#[derive(Debug, Clone, Copy)]
pub struct ResponseMeaning {
    probe: bool,
}

impl MakeClassifier for ByMeaning {
    type Classifier = ResponseMeaning;
    type FailureClass = Failure;
    type ClassifyEos = NeverClassifyEos<Failure>;

    fn make_classifier<B>(&self, request: &Request<B>) -> ResponseMeaning {
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map_or_else(|| request.uri().path(), MatchedPath::as_str);
        ResponseMeaning {
            probe: OPS_ROUTES.contains(&route),
        }
    }
}

impl ClassifyResponse for ResponseMeaning {
    type FailureClass = Failure;
    type ClassifyEos = NeverClassifyEos<Failure>;

    fn classify_response<B>(
        self,
        response: &Response<B>,
    ) -> ClassifiedResponse<Failure, NeverClassifyEos<Failure>> {
        ClassifiedResponse::Ready(meaning(response.status(), self.probe))
    }

    fn classify_error<E>(self, error: &E) -> Failure
    where
        E: std::fmt::Display + 'static,
    {
        Failure::Broken(error.to_string())
    }
}

/// The rules of this module as a pure function.
fn meaning(status: StatusCode, probe: bool) -> Result<(), Failure> {
    if probe || !status.is_server_error() {
        Ok(())
    } else if status == StatusCode::SERVICE_UNAVAILABLE {
        Err(Failure::Refused(status))
    } else {
        Err(Failure::Failed(status))
    }
}

/// Logs a refusal or a failure, inside the request's span (so with its
/// `request_id` and `trace_id`).
pub fn log_failure(failure: Failure, latency: Duration, _span: &Span) {
    let latency_ms = latency.as_millis() as u64;
    match failure {
        Failure::Refused(status) => {
            tracing::warn!(status = status.as_u16(), latency_ms, "request refused")
        }
        Failure::Failed(status) => {
            tracing::error!(status = status.as_u16(), latency_ms, "response failed")
        }
        Failure::Broken(error) => tracing::error!(%error, latency_ms, "response failed"),
    }
}

/// The trace layer both services put around their routes: a span per
/// request ([`request_span`]), responses logged by meaning.
pub type HttpTraceLayer = TraceLayer<
    ByMeaning,
    fn(&Request<Body>) -> Span,
    DefaultOnRequest,
    DefaultOnResponse,
    DefaultOnBodyChunk,
    DefaultOnEos,
    fn(Failure, Duration, &Span),
>;

/// See [`HttpTraceLayer`].
pub fn trace_layer() -> HttpTraceLayer {
    TraceLayer::new(ByMeaning)
        .make_span_with(request_span::<Body> as fn(&Request<Body>) -> Span)
        .on_failure(log_failure as fn(Failure, Duration, &Span))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_and_probes_are_not_failures() {
        let unavailable = StatusCode::SERVICE_UNAVAILABLE;
        // /readyz answering 503 while a broker connects is its answer.
        assert_eq!(meaning(unavailable, true), Ok(()));
        assert_eq!(meaning(StatusCode::INTERNAL_SERVER_ERROR, true), Ok(()));
        // A full hashing queue, the live tail's cap, the store's 503.
        assert_eq!(
            meaning(unavailable, false),
            Err(Failure::Refused(unavailable))
        );
        for status in [500, 502, 504] {
            let status = StatusCode::from_u16(status).unwrap();
            assert_eq!(meaning(status, false), Err(Failure::Failed(status)));
        }
        for status in [200, 204, 400, 401, 404, 408, 413, 429] {
            assert_eq!(
                meaning(StatusCode::from_u16(status).unwrap(), false),
                Ok(())
            );
        }
    }

    #[test]
    fn probes_are_told_apart_by_their_route() {
        let classify = |path: &str| {
            let request = Request::builder().uri(path).body(()).unwrap();
            ByMeaning.make_classifier(&request).probe
        };
        assert!(classify("/readyz"));
        assert!(classify("/healthz"));
        assert!(!classify("/v1/user"));
        assert!(!classify("/"));
    }
}
