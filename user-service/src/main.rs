//! Entry point: the service by default, or an operator command.

use shared::telemetry::{self, Spans};
use user_service::config::{database_url_from_env, Settings};
use user_service::{dead_letters, Application};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        None | Some("serve") => serve().await,
        Some("dead-letters") => {
            dead_letters::run(&args[1..], &database_url_from_env(), &mut std::io::stdout()).await
        }
        Some("help" | "-h" | "--help") => {
            println!("{}", dead_letters::USAGE);
            Ok(())
        }
        Some(other) => Err(anyhow::anyhow!(
            "unknown command {other:?}\n{}",
            dead_letters::USAGE
        )),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // The whole cause chain, once.
        Err(e) => telemetry::report_fatal("user-service", format_args!("{e:#}")),
    }
}

async fn serve() -> anyhow::Result<()> {
    // The user service starts traces: a request without a traceparent gets a
    // new one, and its events carry it, exported or not.
    let telemetry = telemetry::init("user-service", Spans::Always)?;
    let served = async {
        let settings = Settings::from_env()?;
        let app = Application::build(settings).await?;
        app.run_until_stopped().await
    }
    .await;
    telemetry.shutdown();
    served
}
