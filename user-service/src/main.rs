//! Entry point: the service by default, or an operator command.

use clap::Parser;
use service_kit::telemetry::{self, Spans};
use user_service::cli::{Cli, Command};
use user_service::config::{database_url_from_env, Settings};
use user_service::{dead_letters, Application};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // `--help`, `--version` and a wrong argument end here, before anything
    // is read or opened.
    let cli = Cli::parse();
    let result = match cli.command {
        None | Some(Command::Serve) => serve().await,
        Some(Command::DeadLetters(command)) => dead_letters_command(command).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // The whole cause chain, once.
        Err(e) => telemetry::report_fatal("user-service", e.as_ref()),
    }
}

async fn serve() -> anyhow::Result<()> {
    // The user service starts traces: a request without a traceparent gets a
    // new one, and its events carry it, exported or not.
    let telemetry = telemetry::init("user-service", Spans::Always)?;
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

async fn dead_letters_command(command: dead_letters::Command) -> anyhow::Result<()> {
    dead_letters::run(command, &database_url_from_env()?, &mut std::io::stdout()).await
}
