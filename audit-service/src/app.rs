//! Building and running the service: the store, the HTTP server, the Kafka
//! consumer when configured, and a graceful shutdown of all three.

use crate::config::Settings;
use crate::error::ApiError;
use crate::store::{Store, WriterHandle};
use crate::{ingest, query};
use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Router;
use shared::config::Transport;
use shared::kafka::BrokerProbe;
use shared::problem::Problem;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::openapi::OpenApi;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// A request that takes longer than this (a stuck store) is answered 408,
/// so a graceful shutdown can't hang on it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long start-up waits for the brokers to create the topics.
const TOPIC_CREATE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `/readyz` waits for the brokers.
const BROKER_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What every handler gets; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub max_body_bytes: usize,
    pub broker: Option<BrokerProbe>,
    /// Cancelled at shutdown; ends live-tail streams.
    pub shutdown: CancellationToken,
}

pub struct Application {
    listener: TcpListener,
    port: u16,
    router: Router,
    store: Store,
    writer: WriterHandle,
    consumer: Option<JoinHandle<()>>,
    shutdown: CancellationToken,
}

impl Application {
    /// Opens the store, binds the listener (port 0 picks a free port, which
    /// `port()` reports) and, on Kafka, starts consuming.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let (store, writer) = Store::open(&settings.database_url).await?;
        if settings.transport == Transport::Kafka {
            // Before subscribing: a consumer of a topic that does not exist
            // waits for it, and a fresh cluster has none.
            let kafka = &settings.kafka;
            shared::kafka::create_topics(
                &kafka.common,
                &[&kafka.common.topic, &kafka.dlq_topic],
                TOPIC_CREATE_TIMEOUT,
            )
            .await;
        }
        let shutdown = CancellationToken::new();
        crate::metrics::describe(settings.transport);
        let (broker, consumer) = match settings.transport {
            Transport::Http => (None, None),
            Transport::Kafka => (
                Some(BrokerProbe::new(&settings.kafka.common)?),
                Some(ingest::kafka::spawn(
                    &settings.kafka,
                    settings.batch,
                    store.clone(),
                    shutdown.clone(),
                )?),
            ),
        };
        let state = AppState {
            store: store.clone(),
            max_body_bytes: settings.max_body_bytes,
            broker,
            shutdown: shutdown.clone(),
        };
        let listener = TcpListener::bind(settings.listen_addr)
            .await
            .with_context(|| format!("Failed to listen on {}", settings.listen_addr))?;
        let address = listener
            .local_addr()
            .context("Failed to read the bound address")?;
        tracing::info!(%address, transport = settings.transport.as_str(), "audit-service listening");
        Ok(Application {
            listener,
            port: address.port(),
            router: router(state),
            store,
            writer,
            consumer,
            shutdown,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Cancel it to stop the service gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves until the shutdown token is cancelled, then stops accepting,
    /// lets in-flight requests and the Kafka batch in hand finish, and waits
    /// for the store writer to commit what they queued.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let shutdown = self.shutdown.clone();
        let served = axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .await;
        // If the server failed on its own, stop the consumer too.
        shutdown.cancel();
        let consumed = match self.consumer {
            Some(consumer) => consumer.await.context("The Kafka consumer failed"),
            None => Ok(()),
        };
        // The writer ends once the last store handle is gone, after
        // answering everything queued.
        drop(self.store);
        self.writer.join().await;
        served.context("The HTTP server failed")?;
        consumed
    }
}

/// The OpenAPI 3.1 document of the service's HTTP API, generated from the
/// handlers' annotations; served at `GET /openapi.json`.
pub fn openapi() -> OpenApi {
    api_routes(1024).2
}

/// The documented routes (the API, then the operational ones) and their
/// document.
fn api_routes(max_body_bytes: usize) -> (Router<AppState>, Router<AppState>, OpenApi) {
    let (api, mut doc) = OpenApiRouter::with_openapi(crate::openapi::ApiDoc::openapi())
        .merge(ingest::http::router(max_body_bytes))
        .merge(query::router())
        .routes(routes!(readyz))
        .split_for_parts();
    let (ops, ops_doc) = shared::telemetry::ops_router().split_for_parts();
    doc.merge(ops_doc);
    (api, ops, doc)
}

fn router(state: AppState) -> Router {
    let (api, ops, doc) = api_routes(state.max_body_bytes);
    let api = api.layer(TimeoutLayer::with_status_code(
        StatusCode::REQUEST_TIMEOUT,
        REQUEST_TIMEOUT,
    ));
    api.merge(ops)
        .merge(shared::telemetry::openapi_route(&doc))
        .layer(axum::middleware::from_fn(
            shared::telemetry::track_http_metrics,
        ))
        // The request id is set before the span is made, so the span (and
        // every log line in it) carries it, and the response returns it.
        .layer(TraceLayer::new_for_http().make_span_with(shared::telemetry::request_span))
        .layer(axum::middleware::from_fn(shared::telemetry::request_id))
        .layer(axum::middleware::map_response(
            shared::problem::problem_for_plain_errors,
        ))
        .with_state(state)
}

/// Ready when the database answers and, on Kafka, the brokers do.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Object, example = json!({"status": "ready"})),
        (status = 503, description = "The database or the brokers do not answer", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn readyz(State(state): State<AppState>) -> Result<axum::Json<serde_json::Value>, ApiError> {
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

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let signal = shared::shutdown::signal().await;
    tracing::info!(signal, "shutting down");
}
