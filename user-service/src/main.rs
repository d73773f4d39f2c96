//! Entry point: the service by default, or an operator command.

use user_service::config::{database_url_from_env, Settings};
use user_service::{dead_letters, Application};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        None | Some("serve") => {
            shared::telemetry::init_tracing();
            serve().await
        }
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
        Err(e) => {
            // The whole cause chain, on stderr and in the log.
            tracing::error!(error = format!("{e:#}"), "user-service failed");
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    let app = Application::build(settings).await?;
    app.run_until_stopped().await
}
