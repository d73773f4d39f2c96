//! Starts audit-service with settings from the environment, or runs an
//! operator command (`erase`, `verify`, `log-key`).

use anyhow::Context;
use audit_service::app::{shutdown_signal, Application};
use audit_service::config::Settings;
use shared::telemetry::{self, Spans};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        None | Some("serve") => run().await,
        Some("help" | "-h" | "--help") => {
            println!("{}", audit_service::tlog::commands::USAGE);
            Ok(())
        }
        Some(command) => {
            audit_service::tlog::commands::run(command, &args[1..], &mut std::io::stdout()).await
        }
    };
    match result {
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
