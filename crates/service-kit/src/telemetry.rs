//! Logs, traces and metrics, set up the same way in both services, and the
//! operational endpoints they expose.
//!
//! Logs are JSON lines (or text for humans with `LOG_FORMAT=pretty`, coloured
//! only on a terminal), on stdout through a writer thread ([`log_writer`]).
//! A log line inside spans carries their fields, so every line of a
//! request has its `trace_id` and `request_id`.
//!
//! Traces are OpenTelemetry spans exported over OTLP (HTTP/protobuf) when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is
//! set; nothing is exported otherwise. A service that starts traces (the
//! user service, whose requests may arrive without a `traceparent`) makes
//! spans either way, so that every event it emits carries a trace context;
//! one that only continues them (the audit service) makes no OpenTelemetry
//! spans unless they are exported, keeping its ingest path free of that
//! cost.

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use settings::ConfigError;
use std::collections::HashMap;
use std::io::IsTerminal;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{OnceLock, RwLock};
use std::time::{Duration, Instant};
use tracing::field::Empty;
use tracing::{Level, Span};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{filter_fn, FilterExt, LevelFilter, Targets};
use tracing_subscriber::fmt::writer::{BoxMakeWriter, MakeWriter, MakeWriterExt};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// How log lines are written (`LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, for log pipelines (the default).
    Json,
    /// Text for people; coloured only when stdout is a terminal.
    Pretty,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "json" => Ok(LogFormat::Json),
            "pretty" => Ok(LogFormat::Pretty),
            _ => Err("expected `json` or `pretty`".to_owned()),
        }
    }
}

impl LogFormat {
    pub fn from_env() -> Result<Self, ConfigError> {
        settings::env_parse("LOG_FORMAT", LogFormat::Json)
    }
}

/// Whether a service makes OpenTelemetry spans when none are exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spans {
    /// Always: the service starts traces, and what it emits must carry one.
    Always,
    /// Only while exporting: the service continues traces that arrive.
    WhenExported,
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("Failed to set up the OTLP trace exporter: {0}")]
    Exporter(String),
}

/// Set once spans go to an OTLP endpoint: code that would make spans only
/// for export (one per event) asks [`traces_exported`] first.
static EXPORTING: AtomicBool = AtomicBool::new(false);
/// Set once an OpenTelemetry layer is installed, so spans have contexts.
static SPANS: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported (`OTEL_EXPORTER_OTLP_ENDPOINT` was set).
pub fn traces_exported() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Spans of background tasks that run for the life of the process.
const TASK_SPANS: &[&str] = &["outbox_relay"];

/// Keeps the trace exporter and the log writer's thread;
/// [`Telemetry::shutdown`] sends what they hold.
#[must_use = "shut it down at exit, or the last spans and log lines are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    log_writer: Option<WorkerGuard>,
}

impl Telemetry {
    /// Exports the spans still buffered and stops the exporter; writes the
    /// log lines still queued, and sends later ones (an error that stops
    /// the service) straight to stdout.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(e) = provider.shutdown() {
                tracing::warn!(error = %e, "the trace exporter did not shut down cleanly");
            }
        }
        if let Some(guard) = self.log_writer {
            LOG_WRITER_CLOSED.store(true, Ordering::Release);
            // Dropping the guard waits until the writer thread has written
            // what was queued.
            drop(guard);
        }
    }
}

/// Set once the log writer's thread is stopped: lines go straight to stdout.
static LOG_WRITER_CLOSED: AtomicBool = AtomicBool::new(false);

/// Log lines this many at most wait for the writer thread; a thread that
/// logs while the queue is full waits (no line is dropped).
const LOG_QUEUE_LINES: usize = 64 * 1024;

/// Where the service's log lines go: stdout, through a thread of their own
/// (tracing-appender's non-blocking writer, not lossy). The thread that
/// logs formats its line once, into memory, and goes on; the writer thread
/// writes what has queued up through a buffer, so a burst of lines (one
/// per stored event at 100,000 a second) is a few large writes to stdout
/// instead of one write system call per line on the logging thread.
fn log_writer() -> (
    impl for<'w> MakeWriter<'w> + Send + Sync + 'static,
    WorkerGuard,
) {
    let (queued, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .thread_name("log-writer")
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stdout(),
        ));
    let writer = queued
        .with_filter(|_: &tracing::Metadata<'_>| !LOG_WRITER_CLOSED.load(Ordering::Acquire))
        .or_else(std::io::stdout);
    (writer, guard)
}

/// Installs logging (`LOG_FORMAT`, `RUST_LOG`) and tracing (`OTEL_*`) for
/// `service`. A `LOG_FORMAT` that is neither `json` nor `pretty` is an error.
pub fn init(service: &'static str, spans: Spans) -> Result<Telemetry, TelemetryError> {
    let format = LogFormat::from_env()?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = log_writer();
    let mut telemetry = install(
        service,
        spans,
        Some((format, BoxMakeWriter::new(writer), filter)),
    )?;
    telemetry.log_writer = Some(guard);
    Ok(telemetry)
}

/// For tests: logs only when `TEST_LOG` is set; spans as `spans` says, never
/// exported. A second call (many tests share a process) does nothing.
pub fn init_for_tests(service: &'static str, spans: Spans) {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let logs = std::env::var_os("TEST_LOG").map(|_| {
            let filter =
                EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
            (LogFormat::Json, BoxMakeWriter::new(std::io::stdout), filter)
        });
        // Only the test process's own environment could make this fail.
        let _ = install_with(service, spans, logs, None);
    });
}

/// How log lines are written, where to, and which.
type Logs = (LogFormat, BoxMakeWriter, EnvFilter);

fn install(
    service: &'static str,
    spans: Spans,
    logs: Option<Logs>,
) -> Result<Telemetry, TelemetryError> {
    let exporter = if otlp_endpoint_set() {
        Some(
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .build()
                .map_err(|e| TelemetryError::Exporter(e.to_string()))?,
        )
    } else {
        None
    };
    install_with(service, spans, logs, exporter)
}

fn otlp_endpoint_set() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|name| std::env::var(name).is_ok_and(|v| !v.trim().is_empty()))
}

fn install_with(
    service: &'static str,
    spans: Spans,
    logs: Option<Logs>,
    exporter: Option<opentelemetry_otlp::SpanExporter>,
) -> Result<Telemetry, TelemetryError> {
    let exporting = exporter.is_some();
    if !exporting && spans == Spans::WhenExported {
        // Logs only: RUST_LOG filters globally, so a span or event it does
        // not enable costs nothing at all (a filter per layer is paid on
        // every callsite, measurable per request on the audit ingest path).
        let (format, writer, filter) = match logs {
            Some(logs) => logs,
            None => (
                LogFormat::Json,
                BoxMakeWriter::new(std::io::sink),
                EnvFilter::new("off"),
            ),
        };
        let installed = tracing_subscriber::registry()
            .with(filter)
            .with(RecordDeferredFields)
            .with(log_layer(format, writer))
            .try_init();
        if installed.is_ok() {
            SPANS.store(false, Ordering::Relaxed);
            EXPORTING.store(false, Ordering::Relaxed);
            LAZY_FIELDS.store(true, Ordering::Relaxed);
        }
        return Ok(Telemetry {
            provider: None,
            log_writer: None,
        });
    }
    // What the log's filter lets through at most, for the global filter
    // below.
    let log_max = logs
        .as_ref()
        .and_then(|(_, _, filter)| filter.max_level_hint())
        .unwrap_or(LevelFilter::OFF);
    let log_layer =
        logs.map(|(format, writer, filter)| log_layer(format, writer).with_filter(filter));
    let provider = (exporting || spans == Spans::Always).then(|| {
        let mut builder = SdkTracerProvider::builder().with_resource(resource(service));
        if let Some(exporter) = exporter {
            builder = builder.with_batch_exporter(exporter);
        }
        builder.build()
    });
    let traced = provider.is_some();
    let otel_layer = if let Some(provider) = &provider {
        // Spans of the services' own code, whatever RUST_LOG lets into the
        // log: a quiet log must not break the trace. A background task's
        // span lives as long as the process; as a trace it would be one
        // endless root holding every publish, so it is left out and each
        // publish joins the trace of its event instead.
        let own_code =
            Targets::new().with_targets(OWN_CRATES.iter().map(|own| (*own, LevelFilter::INFO)));
        let not_a_task = filter_fn(|meta| !(meta.is_span() && TASK_SPANS.contains(&meta.name())));
        opentelemetry::global::set_tracer_provider(provider.clone());
        Some(
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer(service))
                .with_filter(own_code.and(not_a_task)),
        )
    } else {
        None
    };
    // A global filter, outermost, that refuses what neither layer takes.
    // Without it, an `enabled!` check that both per-layer filters refuse
    // (sqlx makes one per statement, to decide whether to log it) leaves
    // the filters' per-thread state dirty, and the next line logged on that
    // thread is dropped: seen as user-service on PostgreSQL losing its
    // "listening" line and its request spans at RUST_LOG=info. A refusal by
    // a global filter clears that state.
    let wanted = filter_fn(move |meta| {
        meta.level() <= &log_max
            || (traced && is_own_code(meta.target()) && meta.level() <= &Level::INFO)
    });
    if tracing_subscriber::registry()
        .with(log_layer)
        .with(otel_layer)
        .with(wanted)
        .try_init()
        .is_ok()
    {
        SPANS.store(provider.is_some(), Ordering::Relaxed);
        EXPORTING.store(exporting, Ordering::Relaxed);
    }
    Ok(Telemetry {
        provider,
        log_writer: None,
    })
}

/// The workspace's crates whose spans are traced whatever the log level:
/// the services and the libraries that act for them.
const OWN_CRATES: &[&str] = &[
    "user_service",
    "audit_service",
    "publishers",
    "service_kit",
    "brokers",
    "cloudevents_wire",
];

/// Whether `target` is in one of [`OWN_CRATES`].
fn is_own_code(target: &str) -> bool {
    OWN_CRATES.iter().any(|own| {
        target
            .strip_prefix(own)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    })
}

fn log_layer<S>(format: LogFormat, writer: BoxMakeWriter) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_target(false)
        // A line that cannot be written (stdout a closed pipe) is dropped:
        // reporting it with eprintln! panics when stderr is closed too,
        // killing whichever task logged.
        .log_internal_errors(false);
    match format {
        // A line inside spans lists them, root first, with their fields:
        // the request span's `trace_id` and `request_id` among them. (Lines
        // outside any span, such as one per stored audit event, pay
        // nothing for it.)
        LogFormat::Json => layer
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(crate::json_log::JsonLines)
            .boxed(),
        LogFormat::Pretty => layer.with_ansi(std::io::stdout().is_terminal()).boxed(),
    }
}

/// `service.name` is the service's own unless `OTEL_SERVICE_NAME` says
/// otherwise (the SDK reads it, and `OTEL_RESOURCE_ATTRIBUTES`).
fn resource(service: &'static str) -> Resource {
    let builder = Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.trim().is_empty()) {
        builder.build()
    } else {
        builder.with_service_name(service).build()
    }
}

/// Reports the error that stops a service, once: as a log line when logging
/// is set up (a JSON pipeline then sees it like any other line), else as one
/// line on stderr. Never a second copy, never a backtrace.
pub fn report_fatal(
    service: &str,
    error: &(dyn std::error::Error + 'static),
) -> std::process::ExitCode {
    let error = one_line(error);
    if tracing::dispatcher::has_been_set() {
        tracing::error!(error = %error, "{service} failed");
    } else {
        eprintln!("{service}: error: {error}");
    }
    std::process::ExitCode::FAILURE
}

/// An error and its causes on one line, outermost first, joined by `: `,
/// each said once. Many errors (sqlx's among them) print their cause in
/// their own message and return it as their source too; printed as a plain
/// chain, such a cause would be said twice.
pub fn one_line(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(current) = cause {
        let text = current.to_string();
        if !text.is_empty() && !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = current.source();
    }
    line
}

/// The span of one HTTP request, as `tower_http::trace::TraceLayer` makes
/// it: named `request`, with the route template (not the raw path, so ids
/// don't make a new name each), the `x-request-id` the request-id layer
/// set, and the `trace_id`. The trace continues the caller's `traceparent`
/// when there is one; otherwise, where spans are made, it starts here.
///
/// Where no OpenTelemetry spans are made, the fields are recorded only
/// when a line is written in the span ([`RequestFields`]): most requests
/// write none, and the log layer formats a span's fields as it is made.
pub fn request_span<B>(request: &http::Request<B>) -> Span {
    let matched = request.extensions().get::<MatchedPath>();
    let route = matched.map_or_else(|| request.uri().path(), MatchedPath::as_str);
    // Probes and scrapes (every few seconds, from every replica) are no
    // one's request: at debug level they make no span, log line or trace
    // unless asked for.
    let span = if OPS_ROUTES.contains(&route) {
        tracing::debug_span!(
            "request",
            method = Empty,
            route = Empty,
            request_id = Empty,
            trace_id = Empty,
        )
    } else {
        tracing::info_span!(
            "request",
            method = Empty,
            route = Empty,
            request_id = Empty,
            trace_id = Empty,
        )
    };
    if span.is_disabled() {
        // Nothing records it: no trace context to read.
        return span;
    }
    let header = |name| request.headers().get(name).cloned();
    let fields = RequestFields {
        method: request.method().clone(),
        route: match matched {
            Some(matched) => Route::Matched(matched.clone()),
            None => Route::Raw(request.uri().path().into()),
        },
        request_id: header(REQUEST_ID),
        traceparent: header("traceparent"),
    };
    let (fields, trace_id) = if SPANS.load(Ordering::Relaxed) {
        let remote = cloudevents_wire::tracecontext::from_headers(request.headers());
        cloudevents_wire::tracecontext::set_parent(&span, remote);
        let trace_id = cloudevents_wire::tracecontext::trace_id_hex(&span.context());
        (fields, trace_id)
    } else {
        let fields = if LAZY_FIELDS.load(Ordering::Relaxed) {
            match fields.defer(&span) {
                None => return span,
                Some(not_deferred) => not_deferred,
            }
        } else {
            fields
        };
        let trace_id = fields.remote_trace_id();
        (fields, trace_id)
    };
    if let Some(meta) = span.metadata() {
        fields.with_values(meta.fields(), trace_id.as_ref(), |values| {
            span.record_all(values);
        });
    }
    span
}

/// Set once [`RecordDeferredFields`] is installed: request spans may then
/// leave their fields to it.
static LAZY_FIELDS: AtomicBool = AtomicBool::new(false);

/// A request's span fields, kept with the span until a line is written in
/// it (then recorded by [`RecordDeferredFields`]), or recorded at once.
struct RequestFields {
    method: http::Method,
    route: Route,
    request_id: Option<http::HeaderValue>,
    traceparent: Option<http::HeaderValue>,
}

enum Route {
    Matched(MatchedPath),
    /// A path no route matched (a 404): the path itself.
    Raw(Box<str>),
}

impl RequestFields {
    /// The trace id of the caller's `traceparent`, if it sent a valid one.
    fn remote_trace_id(&self) -> Option<String> {
        let traceparent = self.traceparent.as_ref()?.to_str().ok()?;
        cloudevents_wire::tracecontext::trace_id_hex(&cloudevents_wire::tracecontext::from_values(
            traceparent,
            None,
        ))
    }

    /// Hands the four fields, as one set of values of the request span's
    /// `fields`, to `record`: one set, so the log layer merges them into
    /// its copy of the span's fields once.
    fn with_values(
        &self,
        fields: &tracing::field::FieldSet,
        trace_id: Option<&String>,
        record: impl FnOnce(&tracing::field::ValueSet<'_>),
    ) {
        let (Some(method), Some(route), Some(request_id), Some(trace)) = (
            fields.field("method"),
            fields.field("route"),
            fields.field("request_id"),
            fields.field("trace_id"),
        ) else {
            return;
        };
        let method_value = tracing::field::display(&self.method);
        let route_value = self.route();
        let request_id_value = self.request_id();
        let values = [
            (&method, Some(&method_value as &dyn tracing::Value)),
            (&route, Some(&route_value as &dyn tracing::Value)),
            (&request_id, Some(&request_id_value as &dyn tracing::Value)),
            (&trace, trace_id.map(|t| t as &dyn tracing::Value)),
        ];
        record(&fields.value_set(&values));
    }

    fn route(&self) -> &str {
        match &self.route {
            Route::Matched(matched) => matched.as_str(),
            Route::Raw(path) => path,
        }
    }

    fn request_id(&self) -> &str {
        self.request_id
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// Leaves the fields with `span`, in the registry's record of it; gives
    /// them back when the subscriber is not one built on a `Registry`.
    fn defer(self, span: &Span) -> Option<RequestFields> {
        let mut fields = Some(self);
        span.with_subscriber(|(id, dispatch)| {
            if let Some(data) = dispatch
                .downcast_ref::<tracing_subscriber::Registry>()
                .and_then(|registry| registry.span(id))
            {
                data.extensions_mut().insert(Deferred(fields.take()));
            }
        });
        fields
    }
}

/// A request span's fields not recorded yet; taken when they are.
struct Deferred(Option<RequestFields>);

/// Records a request span's deferred [`RequestFields`] as the first line
/// inside it is written: installed inside the log layer, it sees each
/// line first.
struct RecordDeferredFields;

impl<S> Layer<S> for RecordDeferredFields
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_event(&self, event: &tracing::Event<'_>, ctx: tracing_subscriber::layer::Context<'_, S>) {
        let Some(scope) = ctx.event_scope(event) else {
            return;
        };
        for span in scope {
            let deferred = span
                .extensions_mut()
                .get_mut::<Deferred>()
                .and_then(|deferred| deferred.0.take());
            let Some(fields) = deferred else {
                continue;
            };
            let trace_id = fields.remote_trace_id();
            let id = span.id();
            fields.with_values(span.metadata().fields(), trace_id.as_ref(), |values| {
                // Recorded through the process-wide subscriber (the one
                // this layer is part of), so that the log layer's copy of
                // the span's fields has them before it formats this line.
                tracing::dispatcher::get_default(|dispatch| {
                    dispatch.record(&id, &tracing::span::Record::new(values))
                })
            });
        }
    }
}

/// Middleware giving every request an `x-request-id`: the client's own
/// when it is a short token (at most 64 of `A-Z a-z 0-9 . _ -`), so a
/// caller's id follows its request into our logs; otherwise a new UUID, so
/// a client cannot put a megabyte (or a line break) into every log line of
/// its request. The response carries the id back. Placed outside the trace
/// layer, so the request's span records it.
pub async fn request_id(mut request: Request, next: Next) -> Response {
    let from_client = request
        .headers()
        .get(REQUEST_ID)
        .filter(|v| {
            let v = v.as_bytes();
            !v.is_empty()
                && v.len() <= 64
                && v.iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        })
        .cloned();
    let id = match from_client {
        Some(id) => id,
        // A hyphenated UUID is always a valid header value.
        None => http::HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
            .unwrap_or_else(|_| http::HeaderValue::from_static("none")),
    };
    request.headers_mut().insert(REQUEST_ID, id.clone());
    let mut response = next.run(request).await;
    response.headers_mut().insert(REQUEST_ID, id);
    response
}

/// Routes that operators' tools call, not users.
pub(crate) const OPS_ROUTES: &[&str] = &["/healthz", "/readyz", "/metrics", "/openapi.json"];

/// The header that carries a request's id (see [`request_id`]).
pub const REQUEST_ID: &str = "x-request-id";

/// Latency buckets in seconds: from a cached read (a millisecond) to an
/// argon2 hash under load or a slow fsync (seconds).
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Events per store commit: one (an idle service) to the writer's cap.
const BATCH_BUCKETS: &[f64] = &[1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0];

/// The process-wide Prometheus recorder. Installed on first use; tests that
/// build several apps in one process share it. Histograms have buckets
/// (`_seconds` ones and the store's batch sizes), never summaries: a
/// summary's quantiles cover a recent window while its `_sum` and `_count`
/// are cumulative, so they contradict each other.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            // The bucket lists are constants and not empty, the only thing
            // set_buckets_for_metric refuses.
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("audit_commit_batch_events".into()),
                        BATCH_BUCKETS,
                    )
                })
                .expect("bucket lists are non-empty constants")
                .build_recorder();
            let handle = recorder.handle();
            // Fails only when another recorder is already installed; the
            // handle then renders nothing but the service still runs.
            let _ = metrics::set_global_recorder(recorder);
            // Histogram samples wait in the recorder until upkeep folds them
            // into the buckets; without it they pile up between scrapes (or
            // forever, with no scraper).
            let upkeep = handle.clone();
            let _ = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(Duration::from_secs(5));
                    upkeep.run_upkeep();
                });
            describe_http_metrics();
            handle
        })
        .clone()
}

fn describe_http_metrics() {
    metrics::describe_counter!(
        "http_requests_total",
        "HTTP requests answered, by method, route template and status"
    );
    metrics::describe_histogram!(
        "http_request_duration_seconds",
        metrics::Unit::Seconds,
        "Time to answer an HTTP request, by method, route template and status"
    );
}

/// `GET /healthz` (the process answers) and `GET /metrics` (Prometheus),
/// documented. `/readyz` is each service's own: readiness depends on what
/// it uses.
pub fn ops_router<S: Clone + Send + Sync + 'static>() -> OpenApiRouter<S> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(metrics))
}

/// Whether the process answers at all (liveness). It checks nothing else.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "The process answers", body = String, content_type = "text/plain"))
)]
async fn healthz() -> &'static str {
    "ok"
}

/// The service's metrics in the Prometheus text format: latencies as
/// histograms, and a `# HELP` line for every metric.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text exposition format", body = String, content_type = "text/plain"))
)]
async fn metrics() -> String {
    metrics_handle().render()
}

/// Serves `api`, the OpenAPI document, at `GET /openapi.json`, serialized
/// once.
pub fn openapi_route<S: Clone + Send + Sync + 'static>(
    api: &utoipa::openapi::OpenApi,
) -> Router<S> {
    // A document built from our own types always serializes.
    let json = api.to_json().unwrap_or_else(|_| "{}".to_owned());
    Router::new().route(
        "/openapi.json",
        get(move || {
            let json = json.clone();
            async move { ([(http::header::CONTENT_TYPE, "application/json")], json) }
        }),
    )
}

/// Middleware counting requests and timing them, labelled by the route
/// template (`MatchedPath`) rather than the raw path, and by the method's
/// name only when HTTP defines it, so that neither ids nor invented
/// methods make a new time series each (2,000 requests with methods such as
/// `M00000X` grew `/metrics` from 2.4 KB to 3.1 MB when they did).
pub async fn track_http_metrics(request: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let method = method_label(request.method());
    let response = next.run(request).await;
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    HttpSeries::get().record(
        route,
        method,
        response.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    response.into_response()
}

/// The handles of the HTTP request series, made once per route, method and
/// status and kept: `metrics::counter!` with labels looks its series up in
/// the recorder on every call (labels built, hashed, compared), a cost paid
/// per request that a handle pays once.
struct HttpSeries {
    /// Route template to the series of its methods and statuses: a route
    /// sees a handful, so a short list is searched.
    routes: RwLock<HashMap<Box<str>, Vec<RouteSeries>>>,
}

/// One route's series for one method and status.
struct RouteSeries {
    method: &'static str,
    status: u16,
    requests: metrics::Counter,
    duration: metrics::Histogram,
}

impl HttpSeries {
    fn get() -> &'static HttpSeries {
        static SERIES: OnceLock<HttpSeries> = OnceLock::new();
        SERIES.get_or_init(|| {
            // Handles belong to the recorder installed when they are made:
            // it is installed first.
            metrics_handle();
            HttpSeries {
                routes: RwLock::new(HashMap::new()),
            }
        })
    }

    fn record(&self, route: &str, method: &'static str, status: u16, seconds: f64) {
        let found = |series: &RouteSeries| series.method == method && series.status == status;
        {
            // A poisoned lock only means a panic elsewhere while it was
            // held; the map itself is always whole.
            let routes = self.routes.read().unwrap_or_else(|e| e.into_inner());
            if let Some(series) = routes.get(route).and_then(|s| s.iter().find(|s| found(s))) {
                series.requests.increment(1);
                series.duration.record(seconds);
                return;
            }
        }
        let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
        let series = routes.entry(route.into()).or_default();
        let index = match series.iter().position(found) {
            Some(index) => index,
            None => {
                let labels = [
                    ("method", method.to_owned()),
                    ("path", route.to_owned()),
                    ("status", status.to_string()),
                ];
                series.push(RouteSeries {
                    method,
                    status,
                    requests: metrics::counter!("http_requests_total", &labels),
                    duration: metrics::histogram!("http_request_duration_seconds", &labels),
                });
                series.len() - 1
            }
        };
        series[index].requests.increment(1);
        series[index].duration.record(seconds);
    }
}

/// A request method as a metric label: the methods of RFC 9110 and PATCH
/// by name, `other` for any other token a client sends.
fn method_label(method: &http::Method) -> &'static str {
    use http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::CONNECT => "CONNECT",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// The metric families in a Prometheus text rendering, each with its
/// `# TYPE` (`counter`, `gauge`, `histogram`, ...) and whether it has a
/// `# HELP` line; for tests that hold the services to describing every
/// metric they export.
pub fn metric_families(rendered: &str) -> std::collections::BTreeMap<String, (String, bool)> {
    let mut families = std::collections::BTreeMap::<String, (String, bool)>::new();
    for line in rendered.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or_default();
            families.entry(name.to_owned()).or_default().1 = true;
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split(' ');
            let name = words.next().unwrap_or_default();
            families.entry(name.to_owned()).or_default().0 =
                words.next().unwrap_or_default().to_owned();
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let sample = line.split(['{', ' ']).next().unwrap_or_default();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| {
                    let base = sample.strip_suffix(suffix)?;
                    families.contains_key(base).then_some(base)
                })
                .unwrap_or(sample);
            families.entry(family.to_owned()).or_default();
        }
    }
    families
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_families_are_read_with_their_type_and_help() {
        let rendered = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 3\n\
                        # TYPE b_seconds histogram\nb_seconds_bucket{le=\"1\"} 1\nb_seconds_sum 0.5\n\
                        b_seconds_count 1\nc 1\n";
        let families = metric_families(rendered);
        assert_eq!(families["a_total"], ("counter".to_owned(), true));
        assert_eq!(families["b_seconds"], ("histogram".to_owned(), false));
        assert_eq!(families["c"], (String::new(), false));
        assert_eq!(families.len(), 3);
    }

    #[tokio::test]
    async fn a_request_keeps_a_short_client_id_and_gets_a_uuid_for_anything_else() {
        use tower::ServiceExt;
        let app = Router::new()
            .route(
                "/",
                get(|headers: http::HeaderMap| async move {
                    headers[REQUEST_ID].to_str().unwrap_or_default().to_owned()
                }),
            )
            .layer(axum::middleware::from_fn(request_id));
        let call = |id: Option<&str>| {
            let app = app.clone();
            let mut request = http::Request::builder().uri("/");
            if let Some(id) = id {
                request = request.header(REQUEST_ID, id);
            }
            let request = request.body(axum::body::Body::empty()).unwrap();
            async move {
                let response = app.oneshot(request).await.unwrap();
                let echoed = response.headers()[REQUEST_ID].to_str().unwrap().to_owned();
                let body = axum::body::to_bytes(response.into_body(), 1024)
                    .await
                    .unwrap();
                assert_eq!(body, echoed.as_bytes(), "the handler saw the same id");
                echoed
            }
        };
        assert_eq!(call(Some("abc-123_x.y")).await, "abc-123_x.y");
        for replaced in [None, Some(""), Some("a b"), Some(&*"x".repeat(65))] {
            let id = call(replaced).await;
            assert!(uuid::Uuid::parse_str(&id).is_ok(), "{replaced:?} -> {id}");
        }
    }

    #[test]
    fn only_defined_methods_are_metric_labels() {
        assert_eq!(method_label(&http::Method::GET), "GET");
        assert_eq!(method_label(&http::Method::PATCH), "PATCH");
        for invented in ["M00000X", "get", "PROPFIND"] {
            let method = http::Method::from_bytes(invented.as_bytes()).unwrap();
            assert_eq!(method_label(&method), "other", "{invented}");
        }
    }

    #[test]
    fn a_cause_already_in_its_message_is_not_said_again() {
        #[derive(Debug, thiserror::Error)]
        #[error("error with configuration: {0}")]
        struct Quoting(#[source] std::io::Error);
        #[derive(Debug, thiserror::Error)]
        #[error("Failed to open the database")]
        struct Context(#[source] Quoting);
        let error = Context(Quoting(std::io::Error::other("there is no database at x")));
        assert_eq!(
            one_line(&error),
            "Failed to open the database: error with configuration: there is no database at x"
        );
    }

    #[test]
    fn log_formats_parse_and_others_are_refused() {
        assert_eq!("JSON".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!("pretty".parse::<LogFormat>(), Ok(LogFormat::Pretty));
        assert!("text".parse::<LogFormat>().is_err());
    }
}
