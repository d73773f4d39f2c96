//! Starts audit-service with settings from the environment, or runs an
//! operator command (`erase`, `verify`, `log-key`, `replay`, `replays`).

use audit_service::app::Application;
use audit_service::cli::{Cli, Command};
use audit_service::config::Settings;
use audit_service::tlog::commands;
use clap::Parser;
use service_kit::telemetry::{self, Spans};

#[global_allocator]
static ALLOCATOR: allocator::MiMalloc = allocator::MiMalloc;

fn main() -> std::process::ExitCode {
    // First, while no other thread runs.
    allocator::return_freed_memory_promptly();
    match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(run()),
        Err(e) => telemetry::report_fatal("audit-service", &e),
    }
}

async fn run() -> std::process::ExitCode {
    // Small pages only. With transparent huge pages each region of the
    // allocator's heaps a thread touches becomes resident 2 MiB at a time:
    // peak RSS was 68 MiB idle on MQTT (46 MiB of it huge pages) and 85-88
    // MiB under batch ingest, against 53 and 61-66 MiB without, at the same
    // rate within noise. mimalloc is built not to ask for them (`no_thp`);
    // this also refuses what a machine set to `always` would give. Where the
    // kernel refuses the call, the service runs as before.
    #[cfg(target_os = "linux")]
    let _ = rustix::thread::disable_transparent_huge_pages(true);
    // `--help`, `--version` and a wrong argument end here, before anything
    // is read or opened.
    let cli = Cli::parse();
    let result = match cli.command {
        None | Some(Command::Serve) => serve().await,
        Some(Command::Erase { subject }) => commands::erase(&subject, &mut std::io::stdout()).await,
        Some(Command::Verify { checkpoint, key }) => {
            commands::verify(checkpoint.as_deref(), key, &mut std::io::stdout()).await
        }
        Some(Command::LogKey { origin }) => commands::log_key(&origin, &mut std::io::stdout()),
        Some(Command::Replay(args)) => replay(args).await,
        Some(Command::Replays { json }) => {
            audit_service::replay::command::list(json, &mut std::io::stdout()).await
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // The whole cause chain, once.
        Err(e) => telemetry::report_fatal("audit-service", e.as_ref()),
    }
}

/// `audit-service replay ...`.
async fn replay(args: audit_service::replay::command::ReplayArgs) -> anyhow::Result<()> {
    let settings = audit_service::replay::ReplaySettings::from_env()?;
    audit_service::replay::command::replay(args, settings).await
}

async fn serve() -> anyhow::Result<()> {
    // The audit service continues the traces its events carry; it makes
    // spans only when they are exported.
    let telemetry = telemetry::init("audit-service", Spans::WhenExported)?;
    let served = async {
        let settings = Settings::from_env()?;
        let app = Application::build(settings).await?;
        service_kit::shutdown::cancel_on_signal(app.shutdown_token());
        app.run_until_stopped().await
    }
    .await;
    telemetry.shutdown();
    served
}
