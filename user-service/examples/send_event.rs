//! Reads ONE structured-mode CloudEvent (JSON) from stdin and publishes it
//! through the publisher the service's relay uses, configured from the same
//! environment (EVENT_TRANSPORT, AUDIT_URL, HTTP_CONTENT_MODE,
//! PUBLISH_TIMEOUT_MS, KAFKA_*). Exits 0 when the receiver acknowledged it,
//! non-zero with the reason otherwise. The interop suite uses it to check
//! our wire encoding against other SDKs' receivers.
//!
//!     echo '{"specversion":"1.0","id":"1","source":"/s","type":"t"}' \
//!       | cargo run -p user-service --example send_event

use publishers::{Outcome, Publisher};
use std::io::Read;
use std::process::ExitCode;
use user_service::config::publish_from_env;

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("send_event: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input)?;
    let event: cloudevents::Event = serde_json::from_str(&input)
        .map_err(|e| anyhow::anyhow!("stdin is not a structured-mode CloudEvent: {e}"))?;
    let publisher = Publisher::new(&publish_from_env()?, "user-service").await?;
    let outcome = publisher.publish(&event).await;
    publisher.flush().await;
    match outcome {
        Outcome::Ack => Ok(()),
        Outcome::Retry { status, reason, .. } => {
            anyhow::bail!("not delivered (retryable, status {status:?}): {reason}")
        }
        Outcome::Nack { status, reason } => {
            anyhow::bail!("rejected (status {status:?}): {reason}")
        }
    }
}
