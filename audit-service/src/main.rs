//! Starts audit-service with settings from the environment.

use anyhow::Context;
use audit_service::app::{shutdown_signal, Application};
use audit_service::config::Settings;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shared::telemetry::init_tracing();
    let result = run().await;
    if let Err(e) = &result {
        tracing::error!(error = ?e, "audit-service failed");
    }
    result
}

async fn run() -> anyhow::Result<()> {
    let settings = Settings::from_env().context("Failed to read the configuration")?;
    let app = Application::build(settings).await?;
    let shutdown = app.shutdown_token();
    tokio::spawn(async move {
        shutdown_signal().await;
        shutdown.cancel();
    });
    app.run_until_stopped().await
}
