//! Who may write and read the audit trail, the limits on what one request
//! or client can make the service hold, and TLS: every refusal is a 4xx or
//! 503 problem+json saying why.

use crate::helpers::{problem_detail, spawn_app_with, TestApp};
use cloudevents_wire::limits::{MAX_ATTRIBUTE_BYTES, MAX_BATCH_EVENTS};
use reqwest::header::WWW_AUTHENTICATE;
use serde_json::{json, Value};
use service_kit::serve::MAX_HEADER_BYTES;
use settings::Tokens;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const INGEST: &str = "ingest-token-0123456789";
const READ: &str = "read-token-0123456789";
const METRICS: &str = "metrics-token-0123456789";

fn event(id: &str) -> Value {
    json!({"specversion": "1.0", "id": id, "source": "/s", "type": "t"})
}

async fn spawn_with_tokens() -> TestApp {
    spawn_app_with(|s| {
        s.access.ingest = Some(Tokens::new([INGEST]));
        s.access.read = Some(Tokens::new([READ]));
        s.access.metrics = Some(Tokens::new([METRICS]));
    })
    .await
}

fn post(app: &TestApp, token: Option<&str>) -> reqwest::RequestBuilder {
    let request = app
        .client
        .post(format!("{}/", app.address))
        .header("content-type", "application/cloudevents+json")
        .body(event("1").to_string());
    match token {
        Some(t) => request.bearer_auth(t),
        None => request,
    }
}

fn get(app: &TestApp, path: &str, token: Option<&str>) -> reqwest::RequestBuilder {
    let request = app.client.get(format!("{}{path}", app.address));
    match token {
        Some(t) => request.bearer_auth(t),
        None => request,
    }
}

/// A 401 problem with a Bearer challenge; returns the challenge.
async fn assert_unauthorized(response: reqwest::Response) -> String {
    let challenge = response
        .headers()
        .get(WWW_AUTHENTICATE)
        .expect("a WWW-Authenticate header")
        .to_str()
        .unwrap()
        .to_owned();
    assert!(challenge.starts_with("Bearer realm="), "{challenge}");
    problem_detail(response, 401).await;
    challenge
}

#[tokio::test]
async fn ingest_needs_an_ingest_token() {
    let app = spawn_with_tokens().await;
    let missing = assert_unauthorized(post(&app, None).send().await.unwrap()).await;
    assert!(!missing.contains("error="), "{missing}");
    let wrong = assert_unauthorized(
        post(&app, Some("not-the-token-0123456"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(wrong.contains(r#"error="invalid_token""#), "{wrong}");
    // A reader's token does not open the ingest door.
    assert_unauthorized(post(&app, Some(READ)).send().await.unwrap()).await;
    let basic = app
        .client
        .post(format!("{}/", app.address))
        .basic_auth("user", Some(INGEST))
        .send()
        .await
        .unwrap();
    assert_unauthorized(basic).await;
    assert_eq!(post(&app, Some(INGEST)).send().await.unwrap().status(), 204);
    let stored = get(&app, "/v1/events", Some(READ)).send().await.unwrap();
    assert_eq!(stored.status(), 200);
    let body: Value = stored.json().await.unwrap();
    assert_eq!(body["events"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn reading_needs_a_read_token_and_the_probes_need_none() {
    let app = spawn_with_tokens().await;
    for path in [
        "/v1/events",
        "/v1/events/stream",
        "/v1/filters/validate",
        "/no/such/route",
    ] {
        assert_unauthorized(get(&app, path, None).send().await.unwrap()).await;
        assert_unauthorized(get(&app, path, Some(INGEST)).send().await.unwrap()).await;
    }
    assert_eq!(
        get(&app, "/v1/events", Some(READ))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let stream = get(&app, "/v1/events/stream", Some(READ))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    drop(stream);
    assert_unauthorized(get(&app, "/metrics", Some(READ)).send().await.unwrap()).await;
    assert_eq!(
        get(&app, "/metrics", Some(METRICS))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // The console's page loads, then asks for a token when the API says 401.
    for open in ["/healthz", "/readyz", "/console", "/console/console.js"] {
        assert_eq!(
            get(&app, open, None).send().await.unwrap().status(),
            200,
            "{open}"
        );
    }
}

#[tokio::test]
async fn an_attribute_longer_than_the_limit_is_refused_naming_it() {
    let app = spawn_app_with(|_| {}).await;
    let long = "x".repeat(MAX_ATTRIBUTE_BYTES + 1);
    let binary = app
        .post(
            &[
                ("ce-specversion", "1.0"),
                ("ce-id", &long),
                ("ce-source", "/s"),
                ("ce-type", "t"),
            ],
            "",
        )
        .await;
    let detail = problem_detail(binary, 400).await;
    assert!(
        detail.contains("`id`") && detail.contains("limit"),
        "{detail}"
    );
    let mut structured = event("1");
    structured["subject"] = json!(long);
    let detail = problem_detail(app.post_structured(&structured).await, 400).await;
    assert!(detail.contains("`subject`"), "{detail}");
    let mut in_batch = event("2");
    in_batch["comexample"] = json!(long);
    let detail = problem_detail(app.post_batch(&json!([event("3"), in_batch])).await, 400).await;
    assert!(detail.contains("`comexample`"), "{detail}");
    // At the limit is fine (for an attribute that is not indexed: `id`,
    // `source` and `subject` have a lower one), and data is not an attribute.
    let mut at_limit = event("4");
    at_limit["comexample"] = json!("y".repeat(MAX_ATTRIBUTE_BYTES));
    at_limit["data"] = json!("z".repeat(4 * MAX_ATTRIBUTE_BYTES));
    assert_eq!(app.post_structured(&at_limit).await.status(), 204);
    assert_eq!(app.events("").await.len(), 1);
}

#[tokio::test]
async fn request_headers_over_the_limit_are_431() {
    let app = spawn_app_with(|_| {}).await;
    let half = "x".repeat(MAX_HEADER_BYTES / 2);
    let response = app
        .post(
            &[
                ("ce-specversion", "1.0"),
                ("ce-id", "1"),
                ("ce-source", "/s"),
                ("ce-type", "t"),
                ("x-padding-a", &half),
                ("x-padding-b", &half),
            ],
            "",
        )
        .await;
    let detail = problem_detail(response, 431).await;
    assert!(detail.contains("headers"), "{detail}");
    assert_eq!(app.events("").await.len(), 0);
}

#[tokio::test]
async fn a_batch_over_the_limit_is_413_and_at_the_limit_is_stored() {
    let app = spawn_app_with(|_| {}).await;
    let batch = |n: usize| Value::Array((0..n).map(|i| event(&i.to_string())).collect());
    let detail = problem_detail(app.post_batch(&batch(MAX_BATCH_EVENTS + 1)).await, 413).await;
    assert!(detail.contains(&MAX_BATCH_EVENTS.to_string()), "{detail}");
    assert_eq!(app.post_batch(&batch(MAX_BATCH_EVENTS)).await.status(), 204);
}

/// Opens a raw connection and sends `bytes`.
async fn connect(app: &TestApp, bytes: &[u8]) -> TcpStream {
    let address = app.address.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    stream
}

/// Reads until the peer closes or the head of a response has arrived.
async fn read_response_head(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let read = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .expect("an answer or a close within 10 s")
            .unwrap_or(0);
        received.extend_from_slice(&buf[..read]);
        if read == 0 || received.windows(4).any(|w| w == b"\r\n\r\n") {
            return String::from_utf8_lossy(&received).into_owned();
        }
    }
}

#[tokio::test]
async fn a_client_slow_to_send_its_headers_is_disconnected() {
    let app = spawn_app_with(|s| {
        s.listen.limits.header_read_timeout = Duration::from_millis(300);
    })
    .await;
    let mut slow = connect(&app, b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await;
    let started = Instant::now();
    let answer = read_response_head(&mut slow).await;
    assert_eq!(answer, "", "the connection is closed unanswered");
    assert!(started.elapsed() >= Duration::from_millis(250));
    // Clients that send their request in time are still served.
    assert_eq!(
        get(&app, "/healthz", None).send().await.unwrap().status(),
        200
    );
}

#[tokio::test]
async fn a_request_slower_than_the_timeout_is_408() {
    let app = spawn_app_with(|s| {
        s.limits.request_timeout = Duration::from_millis(300);
    })
    .await;
    // The headers promise a body that never comes.
    let mut stream = connect(
        &app,
        b"POST / HTTP/1.1\r\nHost: x\r\ncontent-type: application/cloudevents+json\r\ncontent-length: 100\r\n\r\n{",
    )
    .await;
    let answer = read_response_head(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
}

#[tokio::test]
async fn a_connection_over_the_cap_takes_the_place_of_an_idle_one_or_gets_503() {
    let app = spawn_app_with(|s| s.listen.limits.max_connections = 2).await;
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let stream = b"GET /v1/events/stream HTTP/1.1\r\nHost: x\r\n\r\n";
    // A live tail keeps its connection busy; a client between requests
    // leaves its own idle.
    let mut busy = connect(&app, stream).await;
    assert!(read_response_head(&mut busy)
        .await
        .starts_with("HTTP/1.1 200"));
    let mut idle = connect(&app, request).await;
    assert!(read_response_head(&mut idle)
        .await
        .starts_with("HTTP/1.1 200"));
    let mut newcomer = connect(&app, request).await;
    assert!(read_response_head(&mut newcomer)
        .await
        .starts_with("HTTP/1.1 200"));
    assert_eq!(
        read_response_head(&mut idle).await,
        "",
        "the idle connection was closed to make room"
    );
    // With every connection busy, a new one is answered 503.
    drop(newcomer);
    let mut second_busy = connect(&app, stream).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !read_response_head(&mut second_busy)
        .await
        .starts_with("HTTP/1.1 200")
    {
        assert!(Instant::now() < deadline, "no place for a second live tail");
        second_busy = connect(&app, stream).await;
    }
    let mut third = connect(&app, request).await;
    let refused = read_response_head(&mut third).await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("application/problem+json"), "{refused}");
    assert!(
        refused.to_ascii_lowercase().contains("retry-after"),
        "{refused}"
    );
    drop(busy);
    // The closed connection's place is free once the server has seen it go.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut next = connect(&app, request).await;
        if read_response_head(&mut next)
            .await
            .starts_with("HTTP/1.1 200")
        {
            break;
        }
        assert!(Instant::now() < deadline, "no place freed within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn live_tail_clients_over_the_cap_are_503_until_one_leaves() {
    let app = spawn_app_with(|s| s.limits.max_stream_clients = 1).await;
    let first = get(&app, "/v1/events/stream", None).send().await.unwrap();
    assert_eq!(first.status(), 200);
    let second = get(&app, "/v1/events/stream", None).send().await.unwrap();
    assert!(second.headers().contains_key("retry-after"));
    let detail = problem_detail(second, 503).await;
    assert!(detail.contains("live tail"), "{detail}");
    // Other reads are not counted.
    assert_eq!(
        get(&app, "/v1/events", None).send().await.unwrap().status(),
        200
    );
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let next = get(&app, "/v1/events/stream", None).send().await.unwrap();
        if next.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "no place freed within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub use test_kit::ca::test_ca;

#[tokio::test]
async fn over_tls_events_are_stored_and_plain_http_is_not_served() {
    let ca = test_ca();
    let app = spawn_app_with(|s| s.listen.tls = Some(ca.files.clone())).await;
    assert!(
        app.address.starts_with("https://localhost:"),
        "{}",
        app.address
    );
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let stored = client
        .post(format!("{}/", app.address))
        .header("content-type", "application/cloudevents+json")
        .body(event("tls-1").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(stored.status(), 204);
    let page: Value = client
        .get(format!("{}/v1/events", app.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["events"][0]["event"]["id"], "tls-1");
    // A client that doesn't trust the CA can't connect, nor can plain HTTP.
    assert!(app
        .client
        .get(format!("{}/healthz", app.address))
        .send()
        .await
        .is_err());
    let plain = app.address.replace("https://", "http://");
    assert!(app
        .client
        .get(format!("{plain}/healthz"))
        .send()
        .await
        .is_err());
    drop(ca.dir);
}
