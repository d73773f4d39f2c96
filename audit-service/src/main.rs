//! Starts audit-service with settings from the environment.

use anyhow::Context;
use audit_service::app::{shutdown_signal, Application};
use audit_service::config::Settings;
use shared::telemetry::{self, Spans};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // The whole cause chain, once.
        Err(e) => telemetry::report_fatal("audit-service", format_args!("{e:#}")),
    }
}

async fn run() -> anyhow::Result<()> {
    // The audit service continues the traces its events carry; it makes
    // spans only when they are exported.
    let telemetry = telemetry::init("audit-service", Spans::WhenExported)?;
    let served = async {
        let settings = Settings::from_env().context("Failed to read the configuration")?;
        let app = Application::build(settings).await?;
        let shutdown = app.shutdown_token();
        tokio::spawn(async move {
            shutdown_signal().await;
            shutdown.cancel();
        });
        app.run_until_stopped().await
    }
    .await;
    telemetry.shutdown();
    served
}
