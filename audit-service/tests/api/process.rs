//! The real binary: its settings, signals, start-up and memory. What it
//! does on every broker (killed mid-stream, replicas sharing the work) is
//! in `conformance`.

use crate::helpers::{audit_process, create_topic, unique, within, Service, BROKERS};
use std::collections::HashSet;
use std::time::Duration;
use tempfile::TempDir;
use test_kit::database::Db;
use test_kit::Signal;

fn kafka_env(db: &str, topic: &str, group: &str) -> Vec<(&'static str, String)> {
    vec![
        ("EVENT_TRANSPORT", "kafka".into()),
        ("DATABASE_URL", db.into()),
        ("KAFKA_BROKERS", BROKERS.into()),
        ("KAFKA_TOPIC", topic.into()),
        ("KAFKA_GROUP_ID", group.into()),
        ("KAFKA_DLQ_TOPIC", format!("{topic}.dlq")),
    ]
}

async fn wait_listening(process: &mut Service) {
    let url = format!("http://127.0.0.1:{}/healthz", process.port);
    let up = within(Duration::from_secs(30), || async {
        reqwest::get(&url).await.is_ok_and(|r| r.status() == 200)
    })
    .await
    .is_some();
    assert!(up, "audit-service did not start:\n{}", process.logs());
}

/// (rows, distinct (source, id) pairs) in the store.
async fn counts(db: &Db) -> (i64, i64) {
    db.ints("SELECT COUNT(*), COUNT(DISTINCT source || '|' || id) FROM events")
        .await
}

#[tokio::test]
async fn a_bad_setting_stops_the_service_with_a_message_naming_it() {
    let dir = TempDir::new().unwrap();
    let db = test_kit::database::database_url(dir.path(), "audit.db").await;
    let env = [
        ("DATABASE_URL", db),
        ("EVENT_TRANSPORT", "carrier-pigeon".to_owned()),
    ];
    let mut process = audit_process(&env, dir.path().join("bad.log"));
    let status = process.wait_exit(Duration::from_secs(30)).await.unwrap();
    assert!(!status.success());
    assert!(
        process.logs().contains("EVENT_TRANSPORT"),
        "{}",
        process.logs()
    );
}

/// A bad MQTT setting stops the service at start with one line naming it.
#[tokio::test]
async fn a_bad_mqtt_setting_stops_the_service_with_one_line_naming_it() {
    let dir = TempDir::new().unwrap();
    let db = test_kit::database::database_url(dir.path(), "audit.db").await;
    let env = [
        ("DATABASE_URL", db),
        ("EVENT_TRANSPORT", "mqtt".to_owned()),
        ("MQTT_GROUP", "a/b".to_owned()),
    ];
    let mut process = audit_process(&env, dir.path().join("mqtt.log"));
    let status = process.wait_exit(Duration::from_secs(30)).await.unwrap();
    assert!(!status.success());
    let log = process.logs();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("MQTT_GROUP")).collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(lines[0].contains("share name"), "{log}");
}

/// Posts up to 5000 binary events with 64 in flight, sends `signal` to the
/// process once 200 are acknowledged, and goes on until every request is
/// answered or refused. Returns the ids acknowledged with a 204, and how
/// many requests got anything else.
async fn load_then_signal(process: &Service, signal: Signal) -> (HashSet<String>, usize) {
    use futures::StreamExt;
    let url = format!("http://127.0.0.1:{}/", process.port);
    let client = reqwest::Client::new();
    let sends = futures::stream::iter(0..5000)
        .map(|i| {
            let id = format!("t{i}");
            let request = client
                .post(&url)
                .header("ce-specversion", "1.0")
                .header("ce-id", &id)
                .header("ce-source", "/term")
                .header("ce-type", "t")
                .send();
            async move { (id, request.await.map(|r| r.status().as_u16()).ok()) }
        })
        .buffer_unordered(64);
    tokio::pin!(sends);
    let mut acknowledged = HashSet::new();
    let mut other = 0;
    let mut signalled = false;
    while let Some((id, status)) = sends.next().await {
        match status {
            Some(204) => {
                acknowledged.insert(id);
            }
            _ => other += 1,
        }
        if acknowledged.len() == 200 && !signalled {
            process.signal(signal).unwrap();
            signalled = true;
        }
    }
    (acknowledged, other)
}

/// The ids of every stored event.
async fn stored_ids(db: &Db) -> HashSet<String> {
    db.texts("SELECT id FROM events")
        .await
        .into_iter()
        .collect()
}

/// Every acknowledged id is stored, and nothing is stored that was not sent.
fn assert_acknowledged_are_stored(acknowledged: &HashSet<String>, stored: &HashSet<String>) {
    let lost: Vec<&String> = acknowledged.difference(stored).collect();
    assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");
    let invented: Vec<&String> = stored
        .iter()
        .filter(|id| {
            id.strip_prefix('t')
                .and_then(|n| n.parse::<usize>().ok())
                .is_none_or(|n| n >= 5000)
        })
        .collect();
    assert!(invented.is_empty(), "stored but never sent: {invented:?}");
}

#[tokio::test]
async fn sigterm_exits_cleanly_and_every_acknowledged_event_is_stored() {
    let dir = TempDir::new().unwrap();
    let db_url = test_kit::database::database_url(dir.path(), "audit.db").await;
    let env = [("DATABASE_URL", db_url.clone())];
    let mut process = audit_process(&env, dir.path().join("term.log"));
    wait_listening(&mut process).await;
    let (acknowledged, other) = load_then_signal(&process, Signal::SIGTERM).await;
    let status = process.wait_exit(Duration::from_secs(30)).await.unwrap();
    assert!(status.success(), "exit {status}:\n{}", process.logs());
    assert!(other > 0, "the service never stopped accepting");
    // A request cut off by the shutdown may have been stored without its
    // answer arriving, which a sender's retry dedups: stored may be more.
    let stored = stored_ids(&Db::open(&db_url).await).await;
    assert_acknowledged_are_stored(&acknowledged, &stored);
    eprintln!(
        "{} acknowledged, {} stored, {other} refused at shutdown",
        acknowledged.len(),
        stored.len()
    );
}

#[tokio::test]
async fn sigkill_during_http_ingest_loses_no_acknowledged_event() {
    let dir = TempDir::new().unwrap();
    let db_url = test_kit::database::database_url(dir.path(), "audit.db").await;
    let env = [("DATABASE_URL", db_url)];
    let mut process = audit_process(&env, dir.path().join("kill.log"));
    wait_listening(&mut process).await;
    let (acknowledged, other) = load_then_signal(&process, Signal::SIGKILL).await;
    let status = process.wait_exit(Duration::from_secs(30)).await.unwrap();
    assert!(!status.success(), "SIGKILL did not land: exit {status}");
    assert!(other > 0 && acknowledged.len() < 5000, "killed after all");

    // After a restart (SQLite recovers its write-ahead log on open), every
    // 204 is there, read through the service's own API.
    let mut restarted = audit_process(&env, dir.path().join("restart.log"));
    wait_listening(&mut restarted).await;
    let mut stored = HashSet::new();
    let mut after = 0;
    loop {
        let url = format!(
            "http://127.0.0.1:{}/v1/events?limit=1000&after={after}",
            restarted.port
        );
        let page: serde_json::Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
        for item in page["events"].as_array().unwrap() {
            stored.insert(item["event"]["id"].as_str().unwrap().to_owned());
        }
        match page["next_after"].as_i64() {
            Some(next) => after = next,
            None => break,
        }
    }
    assert_acknowledged_are_stored(&acknowledged, &stored);
    eprintln!(
        "{} acknowledged before SIGKILL, {} stored after restart",
        acknowledged.len(),
        stored.len()
    );
    assert!(restarted.terminate().await.unwrap().success());
}

#[tokio::test]
async fn kubernetes_service_link_variables_are_ignored_and_the_service_consumes() {
    let topic = unique("audit-k8s");
    create_topic(&topic, 1).await;
    let dir = TempDir::new().unwrap();
    let db_url = test_kit::database::database_url(dir.path(), "audit.db").await;
    let mut env = kafka_env(&db_url, &topic, &unique("audit-k8s-group"));
    // What Kubernetes injects for a Service named `kafka`. Nothing may
    // connect to these addresses: they are only parsed and ignored.
    env.push(("KAFKA_PORT", "tcp://10.0.0.1:9092".into()));
    env.push(("KAFKA_PORT_9092_TCP_ADDR", "10.0.0.1".into()));
    env.push(("KAFKA_SERVICE_HOST", "10.0.0.1".into()));
    env.push(("KAFKA_SERVICE_PORT", "9092".into()));
    let mut process = audit_process(&env, dir.path().join("k8s.log"));
    wait_listening(&mut process).await;

    let source = unique("/k8s");
    let (key, headers, payload) = crate::kafka::bulk_event(0, &source);
    let p = crate::helpers::producer();
    crate::helpers::produce(&p, &topic, Some(&key), headers, Some(&payload)).await;
    let url = format!(
        "http://127.0.0.1:{}/v1/events?source={source}",
        process.port
    );
    let stored = within(Duration::from_secs(60), || async {
        let page: serde_json::Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
        page["events"].as_array().is_some_and(|e| e.len() == 1)
    })
    .await
    .is_some();
    assert!(stored, "nothing consumed:\n{}", process.logs());
    let log = process.logs();
    for variable in ["KAFKA_PORT", "KAFKA_SERVICE_HOST"] {
        assert!(
            log.lines()
                .any(|l| l.contains("WARN") && l.contains(&format!("\"{variable}\""))),
            "no warning naming {variable}:\n{log}"
        );
    }
    assert!(
        process.terminate().await.unwrap().success(),
        "{}",
        process.logs()
    );
}

#[tokio::test]
async fn a_kafka_setting_that_breaks_a_guarantee_or_is_unknown_stops_the_service_naming_it() {
    let topic = unique("audit-refused");
    for (variable, value, needle) in [
        (
            "KAFKA_ENABLE_AUTO_COMMIT",
            "true",
            "KAFKA_ENABLE_AUTO_COMMIT=\\\"true\\\"",
        ),
        ("KAFKA_NO_SUCH_PROPERTY", "1", "no.such.property"),
    ] {
        let dir = TempDir::new().unwrap();
        let db = format!("sqlite://{}", dir.path().join("audit.db").display());
        let mut env = kafka_env(&db, &topic, &unique("g"));
        env.push((variable, value.into()));
        let mut process = audit_process(&env, dir.path().join("refused.log"));
        let exited = within(Duration::from_secs(30), || {
            let exited = process.try_wait().unwrap();
            async move { exited.is_some() }
        })
        .await
        .is_some();
        assert!(exited, "{variable} did not stop the service");
        let status = process.wait_exit(Duration::from_secs(30)).await.unwrap();
        assert!(!status.success(), "{variable}: exit {status}");
        let log = process.logs();
        assert!(log.contains(needle), "{variable}: {needle} not in:\n{log}");
    }
}

/// The service turns transparent huge pages off for itself, whatever the
/// machine's setting: with them its allocator's heaps were resident 2 MiB
/// at a time (see main.rs).
#[tokio::test]
async fn the_service_runs_without_transparent_huge_pages() {
    let dir = TempDir::new().unwrap();
    let db = test_kit::database::database_url(dir.path(), "audit.db").await;
    let mut process = audit_process(&[("DATABASE_URL", db)], dir.path().join("thp.log"));
    wait_listening(&mut process).await;
    assert_eq!(status_field(&process, "THP_enabled").as_deref(), Some("0"));
    assert!(process.terminate().await.unwrap().success());
}

/// The value of `field` in the process's /proc/PID/status.
fn status_field(process: &Service, field: &str) -> Option<String> {
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", process.pid().unwrap())).unwrap();
    status.lines().find_map(|l| {
        l.strip_prefix(field)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(|value| value.trim().to_owned())
    })
}

/// The process's peak resident memory (VmHWM), in bytes.
fn peak_rss(process: &Service) -> u64 {
    let kib: u64 = status_field(process, "VmHWM")
        .and_then(|v| v.trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status");
    kib * 1024
}

/// Reads `n` `event: audit` frames from an SSE response: (seq, event id).
async fn read_audit_frames(response: &mut reqwest::Response, n: usize) -> Vec<(i64, String)> {
    let mut buffer = String::new();
    let mut frames = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(120), async {
        while frames.len() < n {
            let Some(chunk) = response.chunk().await.unwrap() else {
                break;
            };
            buffer.push_str(std::str::from_utf8(&chunk).unwrap());
            while let Some(end) = buffer.find("\n\n") {
                let frame: String = buffer.drain(..end + 2).collect();
                if !frame.lines().any(|l| l == "event: audit") {
                    continue;
                }
                let seq = frame
                    .lines()
                    .find_map(|l| l.strip_prefix("id: "))
                    .and_then(|s| s.parse().ok())
                    .expect("an id: line");
                // The stored event is written with `id` right after
                // `specversion`: its first "id" after "event".
                let event = &frame[frame.find("\"event\":").expect("an event")..];
                let id = event["\"event\":".len()..]
                    .split("\"id\":\"")
                    .nth(1)
                    .and_then(|rest| rest.split('"').next())
                    .expect("an event id")
                    .to_owned();
                frames.push((seq, id));
            }
        }
    })
    .await;
    assert!(read.is_ok(), "read {} of {n} frames in 120 s", frames.len());
    frames
}

#[tokio::test]
async fn a_live_tail_client_that_stops_reading_holds_bounded_memory_then_gets_every_event() {
    // 2000 events of 50 KB: 100 MB pass by a client that does not read
    // (a buffer bounded by count only, 4096 events, kept them all).
    const N: usize = 2000;
    const DATA_BYTES: usize = 50_000;
    // The store's tail buffer is 16 MiB; the rest is the service itself.
    const PEAK_RSS_BOUND: u64 = 120 * 1024 * 1024;
    use futures::StreamExt;
    let dir = TempDir::new().unwrap();
    let db_url = test_kit::database::database_url(dir.path(), "audit.db").await;
    // The client stops reading for as long as the posting takes; on a
    // loaded machine that can pass the write timeout, which would close
    // its connection (tested in `hostile`) before it reads again.
    let env = [
        ("DATABASE_URL", db_url.clone()),
        ("WRITE_TIMEOUT_MS", "600000".into()),
    ];
    let mut process = audit_process(&env, dir.path().join("slow.log"));
    wait_listening(&mut process).await;
    let base = format!("http://127.0.0.1:{}", process.port);
    let client = reqwest::Client::new();
    let mut stream = client
        .get(format!("{base}/v1/events/stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);

    let data = "x".repeat(DATA_BYTES);
    let statuses: Vec<u16> = futures::stream::iter(0..N)
        .map(|i| {
            let event = serde_json::json!({"specversion": "1.0", "id": format!("slow{i}"),
                "source": "/slow", "type": "t", "data": data});
            let request = client
                .post(format!("{base}/"))
                .header("content-type", "application/cloudevents+json")
                .body(event.to_string())
                .send();
            async move { request.await.unwrap().status().as_u16() }
        })
        .buffer_unordered(4)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == 204), "{statuses:?}");
    let peak = peak_rss(&process);
    eprintln!(
        "peak RSS {} MiB with {} MiB of events past a client that did not read",
        peak >> 20,
        (N * DATA_BYTES) >> 20
    );
    assert!(
        peak < PEAK_RSS_BOUND,
        "peak RSS {} MiB, bound {} MiB",
        peak >> 20,
        PEAK_RSS_BOUND >> 20
    );

    // Now it reads: every event, in seq order, none twice, the ones that
    // left the live buffer read back from the store.
    let frames = read_audit_frames(&mut stream, N).await;
    assert!(
        frames.windows(2).all(|w| w[0].0 < w[1].0),
        "not in seq order"
    );
    let ids: HashSet<String> = frames.iter().map(|(_, id)| id.clone()).collect();
    let sent: HashSet<String> = (0..N).map(|i| format!("slow{i}")).collect();
    assert_eq!(ids, sent);
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("audit_stream_catch_ups_total"),
        "the client never fell behind, so the test proves nothing"
    );
    drop(stream);
    assert!(
        process.terminate().await.unwrap().success(),
        "{}",
        process.logs()
    );
}

#[tokio::test]
async fn sigterm_stops_the_service_within_its_grace_period_whatever_its_clients_do() {
    use tokio::io::AsyncWriteExt;
    let dir = TempDir::new().unwrap();
    let db_url = test_kit::database::database_url(dir.path(), "audit.db").await;
    let env = [
        ("DATABASE_URL", db_url.clone()),
        ("SHUTDOWN_GRACE_MS", "2000".to_owned()),
    ];
    let mut process = audit_process(&env, dir.path().join("grace.log"));
    wait_listening(&mut process).await;
    let address = format!("127.0.0.1:{}", process.port);

    // A live-tail client that never reads, with a small receive buffer, so
    // the events below fill it and the server cannot finish the response.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(address.parse().unwrap()).await.unwrap();
    stalled
        .write_all(b"GET /v1/events/stream HTTP/1.1\r\nHost: audit\r\n\r\n")
        .await
        .unwrap();
    // A client that sent half a request and went quiet.
    let mut half = tokio::net::TcpStream::connect(&address).await.unwrap();
    half.write_all(b"POST / HTTP/1.1\r\nHost: audit\r\nce-specversion: 1.0\r\n")
        .await
        .unwrap();
    let client = reqwest::Client::new();
    let data = "x".repeat(100_000);
    for i in 0..100 {
        let event = serde_json::json!({"specversion": "1.0", "id": format!("g{i}"),
            "source": "/grace", "type": "t", "data": data});
        let response = client
            .post(format!("http://{address}/"))
            .header("content-type", "application/cloudevents+json")
            .body(event.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204);
    }

    process.signal(Signal::SIGTERM).unwrap();
    // The grace is 2 s; 30 s is only how long the test waits for a hang.
    let exited = within(Duration::from_secs(30), || {
        let exited = process.try_wait().unwrap();
        async move { exited.is_some() }
    })
    .await
    .is_some();
    assert!(
        exited,
        "still running 30 s after SIGTERM:\n{}",
        process.logs()
    );
    let status = process.wait_exit(Duration::from_secs(30)).await.unwrap();
    assert!(status.success(), "exit {status}:\n{}", process.logs());
    let db = Db::open(&db_url).await;
    assert_eq!(counts(&db).await.0, 100);
    drop((stalled, half));
}

#[tokio::test]
async fn a_refused_setting_with_credentials_stops_the_service_without_logging_them() {
    let secret = "s3cret-never-logged";
    let dir = TempDir::new().unwrap();
    let topic = unique("audit-secret");
    let cases = [
        // A database nothing answers for (port 9 is discard, never
        // PostgreSQL): refused, the URL quoted with its password masked.
        vec![(
            "DATABASE_URL",
            format!("postgres://audit:{secret}@127.0.0.1:9/audit"),
        )],
        // A misspelt property: librdkafka's error quotes the value.
        {
            let db = format!("sqlite://{}", dir.path().join("audit.db").display());
            let mut env = kafka_env(&db, &topic, &unique("g"));
            env.push(("KAFKA_SASL_PASWORD", secret.to_owned()));
            env
        },
    ];
    for (n, env) in cases.iter().enumerate() {
        let log = dir.path().join(format!("secret{n}.log"));
        let mut process = audit_process(env, log);
        let exited = within(Duration::from_secs(30), || {
            let exited = process.try_wait().unwrap();
            async move { exited.is_some() }
        })
        .await
        .is_some();
        assert!(exited, "case {n} did not stop the service");
        assert!(!process
            .wait_exit(Duration::from_secs(30))
            .await
            .unwrap()
            .success());
        let text = process.logs();
        assert!(
            !text.contains(secret),
            "case {n} logged the secret:\n{text}"
        );
        let named = ["postgres://audit:***@127.0.0.1:9/audit", "sasl.paswo"][n];
        assert!(
            text.contains(named),
            "case {n} does not name {named}:\n{text}"
        );
    }
}

#[tokio::test]
async fn a_fresh_start_creates_the_topics_and_logs_no_error_or_warning() {
    let topic = unique("audit-fresh");
    let dir = TempDir::new().unwrap();
    let db_url = test_kit::database::database_url(dir.path(), "audit.db").await;
    let mut env = kafka_env(&db_url, &topic, &unique("audit-fresh-group"));
    // Without tokens the service warns that its doors are open, on purpose.
    env.push(("INGEST_TOKENS", "fresh-ingest-token-0123456789".into()));
    env.push(("READ_TOKENS", "fresh-read-token-0123456789".into()));
    let mut service = audit_process(&env, dir.path().join("fresh.log"));
    wait_listening(&mut service).await;

    // The topic exists: an event produced to it now is stored.
    let source = unique("/fresh");
    crate::kafka::produce_bulk(&topic, &source, 1).await;
    let db = Db::open(&db_url).await;
    let stored = within(Duration::from_secs(60), || async {
        counts(&db).await.0 == 1
    })
    .await
    .is_some();
    assert!(stored, "not stored:\n{}", service.logs());
    let status = service.terminate().await.unwrap();
    assert!(status.success(), "{status}");

    let log = service.logs();
    assert!(log.contains("created Kafka topic"), "{log}");
    for line in log.lines() {
        // Tokens over plain HTTP are warned about by design, as open doors.
        if line.contains("plain HTTP") {
            continue;
        }
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
    let mut service = audit_process(
        &[
            ("DATABASE_URL", db.clone()),
            ("LISTEN_ADDR", format!("localhost:{port}")),
        ],
        dir.path().join("named.log"),
    );
    service.port = port;
    wait_listening(&mut service).await;
    assert!(service.terminate().await.unwrap().success());

    let short_token = dir.path().join("short-token");
    std::fs::write(&short_token, "short\n").unwrap();
    let good_tokens = dir.path().join("tokens");
    std::fs::write(&good_tokens, "a-long-enough-token-0123456789\n").unwrap();
    let short_token = short_token.display().to_string();
    let good_tokens = good_tokens.display().to_string();
    // (the variable the line must name, the variables set)
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("LISTEN_ADDR", vec![("LISTEN_ADDR", "localhost")]),
        ("LOG_FORMAT", vec![("LOG_FORMAT", "text")]),
        ("DATABASE_URL", vec![("DATABASE_URL", "data/audit.db")]),
        ("MAX_BODY_BYTES", vec![("MAX_BODY_BYTES", "a lot")]),
        // The file's token is short: the file's variable is named.
        (
            "INGEST_TOKENS_FILE",
            vec![("INGEST_TOKENS_FILE", short_token.as_str())],
        ),
        // Both of a pair: which one would win is not guessed.
        (
            "READ_TOKENS_FILE",
            vec![
                ("READ_TOKENS", "a-long-enough-token-9876543210"),
                ("READ_TOKENS_FILE", good_tokens.as_str()),
            ],
        ),
    ];
    for (name, vars) in cases {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_audit-service"))
            .env("DATABASE_URL", &db)
            .env("RUST_BACKTRACE", "1")
            .envs(vars.iter().copied())
            .output()
            .unwrap();
        assert!(!output.status.success(), "{vars:?} accepted");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let naming: Vec<&str> = text.lines().filter(|l| l.contains(name)).collect();
        assert_eq!(naming.len(), 1, "{vars:?}: {text}");
        assert!(!text.contains("Error: "), "{vars:?}: {text}");
        assert!(!text.contains("backtrace"), "{vars:?}: {text}");
        // The same words as user-service's: the variable, its value, why.
        assert!(
            naming[0].contains(&format!("environment variable {name}=")),
            "{vars:?}: {text}"
        );
    }
}

/// Runs the binary with `args` until it exits (see
/// `test_kit::process::run_to_exit`).
fn run_to_exit(args: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    test_kit::process::run_to_exit(env!("CARGO_BIN_EXE_audit-service"), args, dir.path())
}

#[test]
fn help_and_version_answer_and_exit_and_unknown_arguments_are_refused() {
    for help in [&["--help"][..], &["-h"], &["help"]] {
        let output = run_to_exit(help);
        assert!(output.status.success(), "{help:?}: {output:?}");
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.contains("Usage: audit-service"), "{help:?}: {text}");
        for word in ["serve", "DATABASE_URL", "INGEST_TOKENS", "EVENT_TRANSPORT"] {
            assert!(text.contains(word), "{help:?} lacks {word}: {text}");
        }
    }
    let output = run_to_exit(&["--version"]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("audit-service {}", env!("CARGO_PKG_VERSION"))
    );
    for wrong in [&["--bogus"][..], &["bogus"], &["serve", "extra"]] {
        let output = run_to_exit(wrong);
        assert_eq!(output.status.code(), Some(2), "{wrong:?}: {output:?}");
        let text = String::from_utf8_lossy(&output.stderr);
        assert!(text.starts_with("error: "), "{wrong:?}: {text}");
        assert!(text.contains("--help"), "{wrong:?}: {text}");
    }
}

/// The log lines of a start with `env`, once the service listens.
async fn start_log(env: &[(&str, String)], dir: &std::path::Path, name: &str) -> String {
    let mut service = audit_process(env, dir.join(name));
    let listening = within(Duration::from_secs(30), || {
        let text = service.logs();
        async move { text.contains("audit-service listening") }
    })
    .await
    .is_some();
    assert!(listening, "did not start:\n{}", service.logs());
    // Only its start is wanted: a SIGTERM this early may come before the
    // service listens for it, so its exit status says nothing.
    service.terminate().await.unwrap();
    service.logs()
}

#[tokio::test]
async fn tokens_over_plain_http_are_warned_about_and_over_tls_they_are_not() {
    let dir = TempDir::new().unwrap();
    let db = format!("sqlite://{}", dir.path().join("audit.db").display());
    let token = "plain-http-read-token-0123456789";
    let mut env = vec![
        ("DATABASE_URL", db),
        (
            "INGEST_TOKENS",
            "plain-http-ingest-token-0123456789".to_owned(),
        ),
        ("READ_TOKENS", token.to_owned()),
    ];
    let plain = start_log(&env, dir.path(), "plain.log").await;
    let warned: Vec<&str> = plain
        .lines()
        .filter(|l| l.contains("\"level\":\"WARN\"") && l.contains("plain HTTP"))
        .collect();
    assert_eq!(warned.len(), 1, "{plain}");
    assert!(warned[0].contains("TLS_CERT_FILE"), "{}", warned[0]);
    assert!(!plain.contains(token), "{plain}");

    let ca = crate::security::test_ca();
    env.push(("TLS_CERT_FILE", ca.files.cert.display().to_string()));
    env.push(("TLS_KEY_FILE", ca.files.key.display().to_string()));
    let tls = start_log(&env, dir.path(), "tls.log").await;
    assert!(tls.contains("\"scheme\":\"https\""), "{tls}");
    assert!(!tls.contains("plain HTTP"), "{tls}");
}

#[tokio::test]
async fn a_line_written_in_a_request_carries_its_method_route_request_id_and_trace_id() {
    let dir = TempDir::new().unwrap();
    let db = format!("sqlite://{}", dir.path().join("audit.db").display());
    // tower-http's line for each response, written inside the request's
    // span, is at debug level.
    let mut service = audit_process(
        &[
            ("DATABASE_URL", db),
            ("RUST_LOG", "info,tower_http=debug".to_owned()),
        ],
        dir.path().join("audit.log"),
    );
    wait_listening(&mut service).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let response = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/", service.port))
        .header("x-request-id", "span-fields-probe-1")
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .header("ce-specversion", "1.0")
        .header("ce-id", "span-fields-1")
        .header("ce-source", "/tests")
        .header("ce-type", "test.span")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let line = within(Duration::from_secs(10), || {
        let logs = service.logs();
        async move {
            logs.lines()
                .find(|l| l.contains("finished processing request") && l.contains("\"status\":204"))
                .map(str::to_owned)
        }
    })
    .await
    .unwrap_or_else(|| panic!("no line for the request:\n{}", service.logs()));
    let line: serde_json::Value = serde_json::from_str(&line).unwrap();
    let spans = line["spans"]
        .as_array()
        .unwrap_or_else(|| panic!("the line lists no spans: {line}"));
    let request = spans
        .iter()
        .find(|s| s["name"] == "request")
        .unwrap_or_else(|| panic!("no request span in {line}"));
    assert_eq!(request["method"], "POST", "{line}");
    assert_eq!(request["route"], "/", "{line}");
    assert_eq!(request["request_id"], "span-fields-probe-1", "{line}");
    assert_eq!(request["trace_id"], trace_id, "{line}");
    service.terminate().await.unwrap();
}
