//! Logs, metrics and the operational endpoints both services expose.

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Instant;
use tracing_subscriber::{fmt, EnvFilter};

/// Installs the global tracing subscriber: JSON lines by default, or
/// human-readable with `LOG_FORMAT=pretty`; the level comes from `RUST_LOG`
/// (default `info`). A second call is a no-op, so tests can call it freely.
pub fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let pretty = std::env::var("LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("pretty"));
    let builder = fmt()
        .with_env_filter(filter)
        .with_target(false)
        // By default a failed write (stdout a closed pipe) is reported with
        // `eprintln!`, which panics when stderr is closed too, killing
        // whichever task logged: the signal handler or a background loop.
        // A log line that cannot be written is dropped instead.
        .log_internal_errors(false);
    let _ = if pretty {
        builder.try_init()
    } else {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init()
    };
}

/// The process-wide Prometheus recorder. Installed on first use; tests that
/// build several apps in one process share it.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Fails only when another recorder is already installed; the
            // handle then renders nothing but the service still runs.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// `GET /healthz` (the process answers) and `GET /metrics` (Prometheus).
/// `/readyz` is each service's own: readiness depends on what it uses.
pub fn ops_router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let handle = metrics_handle();
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(move || std::future::ready(handle.render())))
}

/// Middleware counting requests and timing them, labelled by the route
/// template (`MatchedPath`) rather than the raw path so that ids don't make
/// a new time series each.
pub async fn track_http_metrics(request: Request, next: Next) -> Response {
    let start = Instant::now();
    let path = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().to_string();
    let response = next.run(request).await;
    let labels = [
        ("method", method),
        ("path", path),
        ("status", response.status().as_u16().to_string()),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels)
        .record(start.elapsed().as_secs_f64());
    response.into_response()
}
