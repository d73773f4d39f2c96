//! The ceiling for `make bench`: an axum server on the same runtime as
//! audit-service whose `POST /` reads the body and answers 204 without
//! decoding, storing or logging anything. Whatever audit-service does per
//! request costs the difference between this figure and its own.
//!
//!     LISTEN_ADDR=127.0.0.1:8090 cargo run --release -p audit-service --example bench_null_sink

use anyhow::Context;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::var("LISTEN_ADDR").unwrap_or_else(|_| "127.0.0.1:8090".into());
    let app = Router::new()
        // Taking the body as `Bytes` reads it in full, as the real sink must.
        .route("/", post(|_body: Bytes| async { StatusCode::NO_CONTENT }))
        .route("/healthz", get(|| async { StatusCode::OK }));
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("Failed to listen on {addr}"))?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    service_kit::shutdown::cancel_on_signal(shutdown.clone());
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .context("HTTP server failed")
}
