//! The real binary: it serves, stops cleanly on SIGTERM, and runs the
//! operator command.

use crate::helpers::{eventually, free_port, FakeAudit, SEED_BODY};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;
use test_kit::process::send_signal;
use test_kit::Signal;

const BINARY: &str = env!("CARGO_BIN_EXE_user-service");

/// Sends SIGTERM and waits, with a deadline, for the exit status.
async fn terminate(child: &mut std::process::Child) -> std::process::ExitStatus {
    send_signal(child.id(), Signal::SIGTERM).expect("SIGTERM sent");
    eventually("an exit after SIGTERM", Duration::from_secs(10), || {
        let exited = child.try_wait().expect("exit status");
        async move { exited }
    })
    .await
}

#[tokio::test]
async fn the_binary_serves_the_seed_request_and_exits_cleanly_on_sigterm() {
    let audit = FakeAudit::start().await;
    let dir = tempfile::tempdir().unwrap();
    let database_url = test_kit::database::database_url(dir.path(), "users.db").await;
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
    let (created_tx, created_rx) = std::sync::mpsc::channel();
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
            if log["message"] == "user created" {
                let _ = created_tx.send(log);
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
        .header("x-request-id", "seed-curl-1")
        .body(SEED_BODY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["x-request-id"], "seed-curl-1");
    audit.wait_for_accepted(1).await;
    // The request's log line carries its request id and trace id.
    let created = created_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("a `user created` line");
    let request = created["spans"]
        .as_array()
        .and_then(|spans| spans.iter().find(|s| s["name"] == "request"))
        .unwrap_or_else(|| panic!("no request span in {created}"));
    assert_eq!(request["request_id"], "seed-curl-1", "{created}");
    assert_eq!(
        request["trace_id"].as_str().map(str::len),
        Some(32),
        "{created}"
    );

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
async fn a_zero_or_nonsense_setting_stops_the_binary_with_one_line_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let database_url = test_kit::database::database_url(dir.path(), "users.db").await;
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
        ("LISTEN_ADDR", "localhost"),
        ("LOG_FORMAT", "text"),
        // Not URLs the relay can send to: refused at start, not retried
        // for ever.
        ("AUDIT_URL", "localhost:18483"),
        ("AUDIT_URL", "ftp://x/"),
        ("AUDIT_URL", "http://"),
        ("DATABASE_URL", "data/users.db"),
    ] {
        let output = Command::new(BINARY)
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env("DATABASE_URL", &database_url)
            // A backtrace must not turn one error into forty lines.
            .env("RUST_BACKTRACE", "1")
            .env(name, value)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{name}={value} was accepted");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let naming: Vec<&str> = text.lines().filter(|l| l.contains(name)).collect();
        assert_eq!(naming.len(), 1, "{name}={value}: {text}");
        assert!(!text.contains("Error: "), "{name}={value}: {text}");
        assert!(!text.contains("backtrace"), "{name}={value}: {text}");
        assert_said_once(naming[0]);
        // The same words as audit-service's: the variable, its value, why.
        assert!(
            naming[0].contains(&format!("environment variable {name}=")),
            "{name}={value}: {text}"
        );
    }
}

/// A message that says each of its clauses once: no cause repeated after
/// the context that already quotes it.
fn assert_said_once(message: &str) {
    let clauses: Vec<&str> = message
        .split(": ")
        .map(str::trim)
        .filter(|c| c.len() > 12)
        .collect();
    for (i, clause) in clauses.iter().enumerate() {
        assert!(
            !clauses[i + 1..].contains(clause),
            "{clause:?} said twice in: {message}"
        );
    }
}

/// Runs the binary with `args` until it exits (see
/// `test_kit::process::run_to_exit`).
fn run_to_exit(args: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    test_kit::process::run_to_exit(BINARY, args, dir.path())
}

#[test]
fn help_and_version_answer_and_exit_and_unknown_arguments_are_refused() {
    for help in [&["--help"][..], &["-h"], &["help"]] {
        let output = run_to_exit(help);
        assert!(output.status.success(), "{help:?}: {output:?}");
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.contains("Usage: user-service"), "{help:?}: {text}");
        // The commands, and the settings with what they are for.
        for word in ["dead-letters", "serve", "AUDIT_URL", "DATABASE_URL"] {
            assert!(text.contains(word), "{help:?} lacks {word}: {text}");
        }
    }
    let output = run_to_exit(&["--version"]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("user-service {}", env!("CARGO_PKG_VERSION"))
    );
    let output = run_to_exit(&["dead-letters", "--help"]);
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("redrive"));

    for wrong in [
        &["--bogus"][..],
        &["bogus"],
        &["serve", "extra"],
        &["dead-letters", "redrive"],
        &["dead-letters", "redrive", "x"],
        &["dead-letters", "list", "--all"],
    ] {
        let output = run_to_exit(wrong);
        assert_eq!(output.status.code(), Some(2), "{wrong:?}: {output:?}");
        let text = String::from_utf8_lossy(&output.stderr);
        assert!(text.starts_with("error: "), "{wrong:?}: {text}");
        assert!(text.contains("--help"), "{wrong:?}: {text}");
    }
    // A command without its action shows what the actions are.
    let output = run_to_exit(&["dead-letters"]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(text.contains("list") && text.contains("redrive"), "{text}");
}

#[tokio::test]
async fn listen_addr_takes_a_host_name() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Command::new(BINARY)
        .env("LISTEN_ADDR", format!("localhost:{port}"))
        .env(
            "DATABASE_URL",
            format!("sqlite://{}", dir.path().join("users.db").display()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    eventually("the service answers", Duration::from_secs(20), || async {
        let health = client
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await;
        health.is_ok_and(|r| r.status() == 200).then_some(())
    })
    .await;
    let status = terminate(&mut child).await;
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn dead_letter_commands_need_an_existing_database_and_say_when_a_seq_is_not_dead() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere").join("users.db");
    let listing = Command::new(BINARY)
        .args(["dead-letters", "list"])
        .env("DATABASE_URL", format!("sqlite://{}", missing.display()))
        .output()
        .unwrap();
    assert!(!listing.status.success());
    let stderr = String::from_utf8_lossy(&listing.stderr);
    assert!(stderr.contains("there is no database at"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        !dir.path().join("nowhere").exists(),
        "the command made a folder"
    );

    // A database that is not the service's is refused too.
    let other = dir.path().join("other.db");
    drop(
        service_kit::db::connect_sqlite(&format!("sqlite://{}", other.display()), 1)
            .await
            .unwrap(),
    );
    let listing = Command::new(BINARY)
        .args(["dead-letters", "list"])
        .env("DATABASE_URL", format!("sqlite://{}", other.display()))
        .output()
        .unwrap();
    assert!(!listing.status.success());
    let stderr = String::from_utf8_lossy(&listing.stderr);
    assert!(stderr.contains("no outbox table"), "{stderr}");

    // The service's own database, with no dead letter 42.
    let app = crate::helpers::spawn_app(&format!("http://127.0.0.1:{}/", free_port())).await;
    let database_url = app.database_url.clone();
    let _dir = app.stop().await;
    let redrive = Command::new(BINARY)
        .args(["dead-letters", "redrive", "42"])
        .env("DATABASE_URL", &database_url)
        .output()
        .unwrap();
    assert!(!redrive.status.success());
    let stderr = String::from_utf8_lossy(&redrive.stderr);
    assert!(
        stderr.contains("there is no dead letter with seq 42"),
        "{stderr}"
    );
    let all = Command::new(BINARY)
        .args(["dead-letters", "redrive", "--all"])
        .env("DATABASE_URL", &database_url)
        .output()
        .unwrap();
    assert!(all.status.success());
    assert_eq!(
        String::from_utf8_lossy(&all.stdout).trim(),
        "there are no dead letters to re-drive"
    );
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
            test_kit::database::database_url(dir.path(), "users.db").await,
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
