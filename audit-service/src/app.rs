//! Building and running the service: the store, the HTTP server, the broker
//! consumer when configured, and a graceful shutdown of all three that ends
//! within its grace period whatever the clients do.

use crate::config::Settings;
use crate::error::ApiError;
use crate::store::{Store, WriterHandle};
use crate::{console, ingest, query};
use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

/// A request that takes longer than this (a stuck store) is answered 408,
/// so a graceful shutdown can't hang on it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `/readyz` waits for the brokers.
const BROKER_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What every handler gets; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub max_body_bytes: usize,
    /// The consumer's broker, when there is one.
    pub broker: Option<Arc<dyn ingest::Probe>>,
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
    shutdown_grace: Duration,
}

impl Application {
    /// Opens the store, binds the listener (port 0 picks a free port, which
    /// `port()` reports) and, on a broker transport, starts consuming.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let (store, writer) = Store::open(&settings.database_url).await?;
        let shutdown = CancellationToken::new();
        let (broker, consumer) =
            match ingest::start(&settings, store.clone(), shutdown.clone()).await? {
                Some(consumer) => (Some(consumer.probe), Some(consumer.task)),
                None => (None, None),
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
            shutdown_grace: settings.shutdown_grace,
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
    /// lets in-flight requests and the broker batches in hand finish, and
    /// has the store writer commit what they queued.
    ///
    /// Waiting for every connection to end could take for ever: a live-tail
    /// client that stopped reading never lets its response finish, and one
    /// that sent half a request never sends the rest (measured: still
    /// running minutes after SIGTERM). So after `shutdown_grace` the
    /// connections still open are dropped, and so is a broker batch not yet
    /// committed (its records are re-delivered and deduplicated). What a
    /// client got a 2xx for is on disk whatever happens here.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let shutdown = self.shutdown.clone();
        let server = axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .into_future();
        tokio::pin!(server);
        let ended_early = tokio::select! {
            served = &mut server => Some(served),
            _ = shutdown.cancelled() => None,
        };
        // If the server failed on its own, stop the consumer too.
        shutdown.cancel();
        let deadline = tokio::time::Instant::now() + self.shutdown_grace;
        let grace_ms = self.shutdown_grace.as_millis() as u64;
        let served = match ended_early {
            Some(served) => served,
            None => match tokio::time::timeout_at(deadline, &mut server).await {
                Ok(served) => served,
                Err(_) => {
                    tracing::warn!(
                        grace_ms,
                        "connections still open at the end of the shutdown grace period are dropped"
                    );
                    Ok(())
                }
            },
        };
        let consumed = match self.consumer {
            None => Ok(()),
            Some(mut consumer) => match tokio::time::timeout_at(deadline, &mut consumer).await {
                Ok(joined) => joined.context("The broker consumer failed"),
                Err(_) => {
                    tracing::warn!(
                        grace_ms,
                        "the broker consumer did not finish within the shutdown grace period; \
                         its uncommitted records will be delivered again"
                    );
                    consumer.abort();
                    Ok(())
                }
            },
        };
        drop(self.store);
        self.writer.close().await;
        served.context("The HTTP server failed")?;
        consumed
    }
}

fn router(state: AppState) -> Router {
    let api = Router::new()
        .merge(ingest::http::router(state.max_body_bytes))
        .merge(query::router())
        .merge(console::router())
        .route("/readyz", get(readyz))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ));
    api.merge(shared::telemetry::ops_router())
        .layer(axum::middleware::from_fn(
            shared::telemetry::track_http_metrics,
        ))
        .layer(TraceLayer::new_for_http())
        .layer(axum::middleware::map_response(
            shared::problem::problem_for_plain_errors,
        ))
        .with_state(state)
}

/// Ready when the database answers and, on a broker transport, the broker
/// does.
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
