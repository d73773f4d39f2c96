//! The real binary: it serves, stops cleanly on SIGTERM, and runs the
//! operator command.

use crate::helpers::{eventually, free_port, FakeAudit, SEED_BODY};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_user-service");

/// Sends SIGTERM and waits, with a deadline, for the exit status.
async fn terminate(child: &mut std::process::Child) -> std::process::ExitStatus {
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("exit status") {
            return status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_binary_serves_the_seed_request_and_exits_cleanly_on_sigterm() {
    let audit = FakeAudit::start().await;
    let dir = tempfile::tempdir().unwrap();
    let database_url = shared::testing::database_url(dir.path(), "users.db").await;
    let mut child = Command::new(BINARY)
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("DATABASE_URL", &database_url)
        .env("AUDIT_URL", &audit.url)
        .env("RUST_LOG", "info")
        .env("LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    // The address is in the first log line; keep draining the pipe after it
    // so the service never blocks on a full one.
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let Ok(log) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if log["message"] == "user-service listening" {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(log["address"].as_str().unwrap_or_default().to_owned());
                }
            }
        }
    });
    let address = tokio::time::timeout(Duration::from_secs(20), rx)
        .await
        .expect("the service logs where it listens")
        .unwrap();

    let response = reqwest::Client::new()
        .post(format!("http://{address}/v1/user"))
        .header("content-type", "application/json")
        .body(SEED_BODY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    audit.wait_for_accepted(1).await;

    let status = terminate(&mut child).await;
    assert!(status.success(), "{status}");

    let listing = Command::new(BINARY)
        .args(["dead-letters", "list"])
        .env("DATABASE_URL", &database_url)
        .output()
        .unwrap();
    assert!(listing.status.success());
    let text = String::from_utf8(listing.stdout).unwrap();
    assert_eq!(text.lines().count(), 1, "only the header: {text}");
    assert!(text.starts_with("seq\tevent_id\ttype"));

    let usage = Command::new(BINARY).arg("bogus").output().unwrap();
    assert!(!usage.status.success());
}

#[tokio::test]
async fn sigterm_stops_the_binary_even_when_its_log_output_is_a_closed_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Command::new(BINARY)
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env(
            "DATABASE_URL",
            format!("sqlite://{}", dir.path().join("u.db").display()),
        )
        // Nobody listens there, so the relay keeps logging failed attempts.
        .env("AUDIT_URL", format!("http://127.0.0.1:{}/", free_port()))
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Close the reading ends: every log line now fails to be written.
    drop(child.stdout.take());
    drop(child.stderr.take());
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    eventually("the service answers", Duration::from_secs(20), || async {
        let health = client.get(format!("{base}/healthz")).send().await;
        health.is_ok_and(|r| r.status() == 200).then_some(())
    })
    .await;
    let created = client
        .post(format!("{base}/v1/user"))
        .header("content-type", "application/json")
        .body(SEED_BODY)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let status = terminate(&mut child).await;

    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn a_zero_or_nonsense_setting_stops_the_binary_with_a_message_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let database_url = shared::testing::database_url(dir.path(), "users.db").await;
    for (name, value) in [
        ("HTTP_BATCH_MAX", "0"),
        ("HTTP_BATCH_MAX", "lots"),
        ("RELAY_RETRY_AFTER_MAX_MS", "0"),
        ("HASH_CONCURRENCY", "0"),
        ("HASH_QUEUE_MAX", "-1"),
        ("RELAY_CONCURRENCY", "1000000"),
        ("OUTBOX_RETENTION", "0s"),
        ("OUTBOX_RETENTION", "a week"),
        // Shorter than twice the publish timeout (10 s) plus a second.
        ("RELAY_LEASE_MS", "5000"),
    ] {
        let output = Command::new(BINARY)
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env("DATABASE_URL", &database_url)
            .env(name, value)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{name}={value} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(name), "{name}={value}: {stderr}");
    }
}

#[tokio::test]
async fn a_dead_letter_is_logged_with_its_status_as_a_number() {
    let audit = FakeAudit::start().await;
    audit.respond_with(|_| {
        use axum::response::IntoResponse;
        axum::http::StatusCode::METHOD_NOT_ALLOWED.into_response()
    });
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Command::new(BINARY)
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env(
            "DATABASE_URL",
            shared::testing::database_url(dir.path(), "users.db").await,
        )
        .env("AUDIT_URL", &audit.url)
        .env("RUST_LOG", "warn")
        .env("LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let Ok(log) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if log["message"] == "event parked as a dead letter" {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(log);
                }
            }
        }
    });
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    eventually("the service answers", Duration::from_secs(20), || async {
        let health = client.get(format!("{base}/healthz")).send().await;
        health.is_ok_and(|r| r.status() == 200).then_some(())
    })
    .await;
    let created = client
        .post(format!("{base}/v1/user"))
        .header("content-type", "application/json")
        .body(SEED_BODY)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);

    let log = tokio::time::timeout(Duration::from_secs(20), rx)
        .await
        .expect("a dead-letter log line")
        .unwrap();
    assert_eq!(log["status"], 405, "{log}");

    let status = terminate(&mut child).await;
    assert!(status.success(), "{status}");
}
