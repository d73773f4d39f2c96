//! End-to-end latency for `make bench`: from the moment user-service's
//! `201 Created` arrives to the moment audit-service's live tail shows the
//! stored `user.storeUser` event, matched by the event's `subject` (the
//! user id). It creates COUNT users through `POST /v1/user`, CONCURRENCY at
//! a time, and prints one JSON line with the percentiles in milliseconds.
//!
//!     cargo run --release -p e2e --example bench_latency -- \
//!         USER_URL AUDIT_URL [COUNT=300] [CONCURRENCY=4]
//!
//! The relay is woken by the commit, before the 201 leaves, so an event can
//! be stored before its 201 is read: that counts as 0 ms, and the output
//! says how many did (`before_201`).

use anyhow::{bail, ensure, Context};
use futures::StreamExt;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How long after the last 201 every event must have shown up.
const DEADLINE: Duration = Duration::from_secs(60);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(user_url), Some(audit_url)) = (args.first(), args.get(1)) else {
        bail!("usage: bench_latency USER_URL AUDIT_URL [COUNT] [CONCURRENCY]");
    };
    let count: usize = args.get(2).map_or(Ok(300), |a| a.parse())?;
    let concurrency: usize = args.get(3).map_or(Ok(4), |a| a.parse())?;
    let user_url = user_url.trim_end_matches('/');
    let audit_url = audit_url.trim_end_matches('/');
    let client = reqwest::Client::new();

    // Subscribed before the first create (the service subscribes before it
    // answers), so no event can slip past the tail.
    let tail = client
        .get(format!("{audit_url}/v1/events/stream"))
        .send()
        .await
        .context("Failed to open the live tail")?
        .error_for_status()?;
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel();
    tokio::spawn(read_tail(tail, seen_tx));

    let created: Vec<anyhow::Result<(String, Instant)>> = futures::stream::iter(0..count)
        .map(|i| {
            let request = client
                .post(format!("{user_url}/v1/user"))
                .json(&json!({"name": format!("latency {i}"), "password": "bench-password"}));
            async move {
                let response = request.send().await?;
                let at = Instant::now();
                ensure!(
                    response.status() == 201,
                    "create answered {}",
                    response.status()
                );
                let body: Value = response.json().await?;
                let id = body["id"].as_str().context("201 without an id")?;
                Ok((id.to_owned(), at))
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let created: HashMap<String, Instant> = created.into_iter().collect::<Result<_, _>>()?;

    // A few hundred samples: kept and sorted, the percentiles are exact.
    let mut latencies_us: Vec<u64> = Vec::with_capacity(created.len());
    let mut before_201 = 0;
    let mut pending = created;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !pending.is_empty() {
        let next = tokio::time::timeout_at(deadline, seen_rx.recv()).await;
        let Ok(Some((subject, stored_at))) = next else {
            bail!("{} events never reached the live tail", pending.len());
        };
        // Other subjects (none expected on a fresh store) are not ours.
        let Some(created_at) = pending.remove(&subject) else {
            continue;
        };
        let latency = stored_at.saturating_duration_since(created_at);
        if latency.is_zero() {
            before_201 += 1;
        }
        latencies_us.push(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
    }
    latencies_us.sort_unstable();
    let ms = |micros: u64| micros as f64 / 1000.0;
    // The nearest-rank percentile: the smallest sample with at least `q`
    // of the samples at or below it.
    let quantile = |q: f64| {
        let rank = ((q * latencies_us.len() as f64).ceil() as usize).max(1);
        latencies_us.get(rank - 1).copied().unwrap_or_default()
    };
    let mean_us = latencies_us.iter().sum::<u64>() as f64 / latencies_us.len().max(1) as f64;
    println!(
        "{}",
        json!({
            "count": count,
            "concurrency": concurrency,
            "p50_ms": ms(quantile(0.50)),
            "p99_ms": ms(quantile(0.99)),
            "max_ms": ms(latencies_us.last().copied().unwrap_or_default()),
            "mean_ms": mean_us / 1000.0,
            "before_201": before_201,
        })
    );
    Ok(())
}

/// Sends (subject, time seen) for every `audit` event of the SSE stream.
/// A `lagged` event means the tail skipped events; the missing subjects then
/// make the main task fail at its deadline, which is the honest outcome.
async fn read_tail(response: reqwest::Response, seen: mpsc::UnboundedSender<(String, Instant)>) {
    let mut body = response.bytes_stream();
    let mut buffer = Vec::new();
    while let Some(Ok(chunk)) = body.next().await {
        let at = Instant::now();
        buffer.extend_from_slice(&chunk);
        while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            let Some(data) = line.strip_prefix(b"data:") else {
                continue;
            };
            let Ok(item) = serde_json::from_slice::<Value>(data) else {
                continue;
            };
            if let Some(subject) = item["event"]["subject"].as_str() {
                if seen.send((subject.to_owned(), at)).is_err() {
                    return;
                }
            }
        }
    }
}
