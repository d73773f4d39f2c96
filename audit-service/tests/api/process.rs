//! The real binary on Kafka: killed mid-stream it loses and duplicates
//! nothing, and two replicas in one group share the partitions.

use crate::helpers::{create_topic, poll_until, unique, ServiceProcess, BROKERS};
use crate::kafka::produce_bulk;
use sqlx::SqlitePool;
use std::path::Path;
use std::time::Duration;
use tempfile::TempDir;

fn kafka_env(db: &Path, topic: &str, group: &str) -> Vec<(&'static str, String)> {
    vec![
        ("EVENT_TRANSPORT", "kafka".into()),
        ("DATABASE_URL", format!("sqlite://{}", db.display())),
        ("KAFKA_BROKERS", BROKERS.into()),
        ("KAFKA_TOPIC", topic.into()),
        ("KAFKA_GROUP_ID", group.into()),
        ("KAFKA_DLQ_TOPIC", format!("{topic}.dlq")),
    ]
}

async fn wait_listening(process: &mut ServiceProcess) {
    let url = format!("http://127.0.0.1:{}/healthz", process.port);
    let up = poll_until(Duration::from_secs(30), || async {
        reqwest::get(&url).await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(up, "audit-service did not start:\n{}", process.log_text());
}

/// (rows, distinct (source, id) pairs) in the store.
async fn counts(db: &SqlitePool) -> (i64, i64) {
    sqlx::query_as("SELECT COUNT(*), COUNT(DISTINCT source || char(0) || id) FROM events")
        .fetch_one(db)
        .await
        .unwrap()
}

async fn open(db: &Path) -> SqlitePool {
    shared::db::connect_sqlite(&format!("sqlite://{}", db.display()), 1)
        .await
        .unwrap()
}

#[tokio::test]
async fn sigkill_while_consuming_then_restart_stores_each_event_exactly_once() {
    const N: usize = 20_000;
    let topic = unique("audit-kill");
    let group = unique("audit-kill-group");
    let source = unique("/kill");
    create_topic(&topic, 3).await;
    produce_bulk(&topic, &source, N).await;

    let dir = TempDir::new().unwrap();
    let db_path = dir.path().join("audit.db");
    let mut env = kafka_env(&db_path, &topic, &group);
    // The killed member holds its partitions until its session expires;
    // a short session (passed as a KAFKA_<PROPERTY>) keeps the test quick.
    env.push(("KAFKA_SESSION_TIMEOUT_MS", "6000".into()));
    let mut first = ServiceProcess::start(&env, dir.path().join("first.log"));
    wait_listening(&mut first).await;
    let db = open(&db_path).await;

    // Kill it as soon as some events are stored, well before all are.
    let started = poll_until(Duration::from_secs(60), || async {
        counts(&db).await.0 > 0
    })
    .await;
    assert!(started, "nothing consumed:\n{}", first.log_text());
    first.kill();
    let (at_kill, _) = counts(&db).await;
    assert!(
        at_kill < N as i64,
        "all {N} events were stored before the kill; the test proves nothing"
    );

    let mut second = ServiceProcess::start(&env, dir.path().join("second.log"));
    wait_listening(&mut second).await;
    let done = poll_until(Duration::from_secs(180), || async {
        counts(&db).await.0 >= N as i64
    })
    .await;
    let (rows, _) = counts(&db).await;
    assert!(
        done,
        "only {rows} of {N} stored after restart:\n{}",
        second.log_text()
    );
    // Let a duplicate show up, were dedup broken, before counting again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(counts(&db).await, (N as i64, N as i64));
    eprintln!("killed after {at_kill} of {N} stored; the restart stored the rest");
    assert!(second.terminate().success(), "{}", second.log_text());
}

#[tokio::test]
async fn two_processes_in_one_group_share_partitions_and_store_each_event_once() {
    const N: usize = 3000;
    let topic = unique("audit-group");
    let group = unique("audit-group-group");
    let source = unique("/group");
    create_topic(&topic, 4).await;

    let dir = TempDir::new().unwrap();
    let db_path = dir.path().join("audit.db");
    let env = kafka_env(&db_path, &topic, &group);
    let mut a = ServiceProcess::start(&env, dir.path().join("a.log"));
    wait_listening(&mut a).await;
    let mut b = ServiceProcess::start(&env, dir.path().join("b.log"));
    wait_listening(&mut b).await;

    // Produce only once both hold partitions, so neither takes everything.
    let shared = poll_until(Duration::from_secs(60), || async {
        has_partitions(&a) && has_partitions(&b)
    })
    .await;
    assert!(
        shared,
        "both should get partitions:\nA:\n{}\nB:\n{}",
        a.log_text(),
        b.log_text()
    );
    produce_bulk(&topic, &source, N).await;

    let db = open(&db_path).await;
    let done = poll_until(Duration::from_secs(120), || async {
        counts(&db).await.0 >= N as i64
    })
    .await;
    assert!(done, "stored {:?} of {N}", counts(&db).await);
    let (rows, distinct) = counts(&db).await;
    assert_eq!((rows, distinct), (N as i64, N as i64));
    // Each stored row is logged by the process that inserted it.
    let poll_logs = poll_until(Duration::from_secs(10), || async {
        a.log_count("audit event stored") + b.log_count("audit event stored") == N
    })
    .await;
    let (by_a, by_b) = (
        a.log_count("audit event stored"),
        b.log_count("audit event stored"),
    );
    assert!(poll_logs, "log lines: {by_a} + {by_b} != {N}");
    assert!(
        by_a > 0 && by_b > 0,
        "one replica did all the work: {by_a} / {by_b}"
    );
    eprintln!("replica A stored {by_a}, replica B stored {by_b}");
    assert!(a.terminate().success());
    assert!(b.terminate().success());
}

/// True when the last assignment the process logged is not empty.
fn has_partitions(process: &ServiceProcess) -> bool {
    process
        .log_text()
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| {
            l["message"] == "kafka partitions assigned"
                || l["message"] == "kafka partitions revoked"
        })
        .is_some_and(|l| {
            l["message"] == "kafka partitions assigned"
                && l["partitions"].as_str().is_some_and(|p| !p.is_empty())
        })
}

#[tokio::test]
async fn a_bad_setting_stops_the_service_with_a_message_naming_it() {
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("audit.db");
    let env = [
        ("DATABASE_URL", format!("sqlite://{}", db.display())),
        ("EVENT_TRANSPORT", "nats".to_owned()),
    ];
    let mut process = ServiceProcess::start(&env, dir.path().join("bad.log"));
    let status = process.child.wait().unwrap();
    assert!(!status.success());
    assert!(
        process.log_text().contains("EVENT_TRANSPORT"),
        "{}",
        process.log_text()
    );
}

#[tokio::test]
async fn sigterm_exits_cleanly_and_every_acknowledged_event_is_stored() {
    use futures::StreamExt;
    let dir = TempDir::new().unwrap();
    let db_path = dir.path().join("audit.db");
    let env = [("DATABASE_URL", format!("sqlite://{}", db_path.display()))];
    let mut process = ServiceProcess::start(&env, dir.path().join("term.log"));
    wait_listening(&mut process).await;
    let url = format!("http://127.0.0.1:{}/", process.port);
    let client = reqwest::Client::new();

    // Keep 64 requests in flight, and send SIGTERM once some are answered.
    let sends = futures::stream::iter(0..5000)
        .map(|i| {
            let request = client
                .post(&url)
                .header("ce-specversion", "1.0")
                .header("ce-id", format!("t{i}"))
                .header("ce-source", "/term")
                .header("ce-type", "t")
                .send();
            async move { request.await.map(|r| r.status().as_u16()).ok() }
        })
        .buffer_unordered(64);
    tokio::pin!(sends);
    let mut acknowledged = 0;
    let mut other = 0;
    let mut terminated = false;
    while let Some(status) = sends.next().await {
        match status {
            Some(204) => acknowledged += 1,
            _ => other += 1,
        }
        if acknowledged == 200 && !terminated {
            let pid = process.child.id().to_string();
            std::process::Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap();
            terminated = true;
        }
    }
    let status = process.child.wait().unwrap();
    assert!(status.success(), "exit {status}:\n{}", process.log_text());
    assert!(other > 0, "the service never stopped accepting");
    let db = open(&db_path).await;
    let (stored, _) = counts(&db).await;
    // Every 204 is on disk; a request cut off by the shutdown may have been
    // stored without its answer arriving, which a sender's retry dedups.
    assert!(
        stored >= acknowledged,
        "{stored} stored < {acknowledged} acknowledged"
    );
    eprintln!("{acknowledged} acknowledged, {stored} stored, {other} refused at shutdown");
}

#[tokio::test]
async fn a_fresh_start_creates_the_topics_and_logs_no_error_or_warning() {
    let topic = unique("audit-fresh");
    let dir = TempDir::new().unwrap();
    let db_path = dir.path().join("audit.db");
    let env = kafka_env(&db_path, &topic, &unique("audit-fresh-group"));
    let mut service = ServiceProcess::start(&env, dir.path().join("fresh.log"));
    wait_listening(&mut service).await;

    // The topic exists: an event produced to it now is stored.
    let source = unique("/fresh");
    crate::kafka::produce_bulk(&topic, &source, 1).await;
    let db = open(&db_path).await;
    let stored = poll_until(Duration::from_secs(60), || async {
        counts(&db).await.0 == 1
    })
    .await;
    assert!(stored, "not stored:\n{}", service.log_text());
    let status = service.terminate();
    assert!(status.success(), "{status}");

    let log = service.log_text();
    assert!(log.contains("created Kafka topic"), "{log}");
    for line in log.lines() {
        assert!(
            !line.contains("\"level\":\"ERROR\"") && !line.contains("\"level\":\"WARN\""),
            "{line}\n{log}"
        );
    }
}

#[tokio::test]
async fn listen_addr_takes_a_host_name_and_a_bad_one_stops_it_with_one_line() {
    let dir = TempDir::new().unwrap();
    let port = crate::helpers::free_port();
    let db = format!("sqlite://{}", dir.path().join("audit.db").display());
    let mut service = ServiceProcess::start(
        &[
            ("DATABASE_URL", db.clone()),
            ("LISTEN_ADDR", format!("localhost:{port}")),
        ],
        dir.path().join("named.log"),
    );
    service.port = port;
    wait_listening(&mut service).await;
    assert!(service.terminate().success());

    for (name, value) in [("LISTEN_ADDR", "localhost"), ("LOG_FORMAT", "text")] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_audit-service"))
            .env("DATABASE_URL", &db)
            .env("RUST_BACKTRACE", "1")
            .env(name, value)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{name}={value} accepted");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let naming: Vec<&str> = text.lines().filter(|l| l.contains(name)).collect();
        assert_eq!(naming.len(), 1, "{name}={value}: {text}");
        assert!(!text.contains("Error: "), "{text}");
        assert!(!text.contains("backtrace"), "{text}");
    }
}
