//! Load generator for `POST /`: sends binary-mode events from many concurrent
//! clients and reports the acknowledged rate, which shows group commit at
//! work (each 204 is a durable, fsynced commit).
//!
//!     cargo run --release -p audit-service --example bench_http -- \
//!         [URL=http://127.0.0.1:8080/] [EVENTS=20000] [CONCURRENCY=64]

use futures::StreamExt;
use std::time::Instant;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:8080/".into());
    let events: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(20_000);
    let concurrency: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(64);
    let client = reqwest::Client::new();
    let source = format!("/bench/{}", uuid::Uuid::new_v4());

    let start = Instant::now();
    let failures = futures::stream::iter(0..events)
        .map(|i| {
            let request = client
                .post(&url)
                .header("ce-specversion", "1.0")
                .header("ce-id", i.to_string())
                .header("ce-source", &source)
                .header("ce-type", "user.storeUser")
                .header("ce-subject", i.to_string())
                .header("content-type", "application/json")
                .body(format!(r#"{{"id":"{i}","name":"bench"}}"#));
            async move {
                match request.send().await {
                    Ok(r) if r.status().is_success() => 0,
                    _ => 1,
                }
            }
        })
        .buffer_unordered(concurrency)
        .fold(0usize, |n, f| async move { n + f })
        .await;
    let elapsed = start.elapsed();
    println!(
        "{events} events, concurrency {concurrency}: {:.2} s, {:.0} events/s, {failures} failed",
        elapsed.as_secs_f64(),
        events as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}
