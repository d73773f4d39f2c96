//! The users API over HTTP: shapes, status codes and problem+json errors.

use crate::helpers::{spawn_app, FakeAudit, SEED_BODY, SEED_PASSWORD};
use serde_json::{json, Value};

async fn problem(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.expect("problem json");
    assert_eq!(body["status"], status);
    assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()));
    body
}

#[tokio::test]
async fn the_seed_curl_creates_a_user_with_location_and_no_password() {
    let audit = FakeAudit::start().await;
    let app = spawn_app(&audit.url).await;

    let response = app.post_raw(SEED_BODY, "application/json").await;

    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let text = response.text().await.unwrap();
    assert!(!text.contains(SEED_PASSWORD));
    let body: Value = serde_json::from_str(&text).unwrap();
    let id = body["id"].as_str().unwrap();
    assert_eq!(location, format!("/v1/users/{id}"));
    assert_eq!(body["name"], "Ozzy Osbourne");
    assert!(body["created_at"].is_string());
    assert_eq!(body.as_object().unwrap().len(), 3, "{body}");
    let id = uuid::Uuid::parse_str(id).unwrap();
    assert_eq!(id.get_version_num(), 7);
}

#[tokio::test]
async fn a_created_user_can_be_read_back() {
    let audit = FakeAudit::start().await;
    let app = spawn_app(&audit.url).await;
    let id = app.create_user("  Ronnie James Dio ").await;

    let response = app.get_user(&id).await;

    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(!text.contains("argon2"), "the hash must not leak: {text}");
    let user: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(user["id"], id);
    assert_eq!(user["name"], "Ronnie James Dio");
    assert_eq!(user["created_at"], user["updated_at"]);
}

#[tokio::test]
async fn an_unknown_user_is_a_404_problem() {
    let app = spawn_app(&FakeAudit::start().await.url).await;
    let body = problem(app.get_user(&uuid::Uuid::now_v7().to_string()).await, 404).await;
    assert!(body["detail"].as_str().unwrap().contains("no user"));
    problem(
        app.put_user(&uuid::Uuid::now_v7().to_string(), json!({"name": "x"}))
            .await,
        404,
    )
    .await;
    problem(
        app.delete_user(&uuid::Uuid::now_v7().to_string()).await,
        404,
    )
    .await;
}

#[tokio::test]
async fn a_user_id_that_is_not_a_uuid_is_a_400_problem() {
    let app = spawn_app(&FakeAudit::start().await.url).await;
    problem(app.get_user("not-a-uuid").await, 400).await;
    problem(app.delete_user("42").await, 400).await;
}

#[tokio::test]
async fn users_are_listed_in_creation_order_in_pages() {
    let app = spawn_app(&FakeAudit::start().await.url).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(app.create_user(&format!("user {i}")).await);
    }

    let first: Value = app.list_users("?limit=2").await.json().await.unwrap();
    let after = first["next_after"].as_str().unwrap();
    let second: Value = app
        .list_users(&format!("?limit=2&after={after}"))
        .await
        .json()
        .await
        .unwrap();
    let third: Value = app
        .list_users(&format!(
            "?limit=2&after={}",
            second["next_after"].as_str().unwrap()
        ))
        .await
        .json()
        .await
        .unwrap();

    let page_ids = |page: &Value| -> Vec<String> {
        page["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let mut listed = page_ids(&first);
    listed.extend(page_ids(&second));
    listed.extend(page_ids(&third));
    assert_eq!(listed, ids);
    assert!(third["next_after"].is_null());
    let all: Value = app.list_users("").await.json().await.unwrap();
    assert_eq!(page_ids(&all), ids);
}

#[tokio::test]
async fn bad_paging_parameters_are_400_problems() {
    let app = spawn_app(&FakeAudit::start().await.url).await;
    for query in [
        "?limit=0",
        "?limit=501",
        "?limit=ten",
        "?limit=-1",
        "?after=nope",
    ] {
        problem(app.list_users(query).await, 400).await;
    }
    assert_eq!(app.list_users("?limit=500").await.status(), 200);
}

#[tokio::test]
async fn a_user_can_be_renamed_and_given_a_new_password() {
    let app = spawn_app(&FakeAudit::start().await.url).await;
    let id = app.create_user("Ozzy").await;

    let response = app
        .put_user(
            &id,
            json!({"name": "Ozzy Osbourne", "password": "a new one"}),
        )
        .await;

    assert_eq!(response.status(), 200);
    let user: Value = response.json().await.unwrap();
    assert_eq!(user["name"], "Ozzy Osbourne");
    assert_ne!(user["updated_at"], user["created_at"]);
    let read: Value = app.get_user(&id).await.json().await.unwrap();
    assert_eq!(read["name"], "Ozzy Osbourne");
    problem(app.put_user(&id, json!({"name": "   "})).await, 400).await;
    problem(
        app.put_user(&id, json!({"name": "x", "password": "1"}))
            .await,
        400,
    )
    .await;
    let wrong = problem(app.put_user(&id, json!({"name": ["x"]})).await, 400).await;
    assert!(wrong["detail"].as_str().unwrap().contains("name"));
}

#[tokio::test]
async fn a_deleted_user_is_gone() {
    let app = spawn_app(&FakeAudit::start().await.url).await;
    let id = app.create_user("Ozzy").await;

    let response = app.delete_user(&id).await;

    assert_eq!(response.status(), 204);
    problem(app.get_user(&id).await, 404).await;
    problem(app.delete_user(&id).await, 404).await;
}

#[tokio::test]
async fn bad_create_requests_are_problems_naming_what_is_wrong() {
    let app = spawn_app(&FakeAudit::start().await.url).await;

    problem(app.post_raw("{\"name\": ", "application/json").await, 400).await;
    problem(app.post_raw(SEED_BODY, "text/plain").await, 415).await;
    // A body of the wrong shape is a 400 naming the field, as other bad
    // input, and says nothing of the service's own types.
    for (body, field) in [
        (r#"{"name": "x"}"#, "password"),
        (r#"{"password": "x"}"#, "name"),
        (r#"{"name": 5, "password": "12345"}"#, "name"),
        ("[]", "name"),
        ("\"Ozzy\"", "name"),
    ] {
        let wrong = problem(app.post_raw(body, "application/json").await, 400).await;
        let detail = wrong["detail"].as_str().unwrap();
        assert!(detail.contains(field), "{body}: {detail}");
        assert!(!detail.contains("struct"), "{body}: {detail}");
        assert!(!detail.contains("CreateUser"), "{body}: {detail}");
    }
    let short = problem(
        app.post_user(json!({"name": "x", "password": "1234"}))
            .await,
        400,
    )
    .await;
    assert!(short["detail"].as_str().unwrap().contains("password"));
    let empty = problem(
        app.post_user(json!({"name": " ", "password": "12345"}))
            .await,
        400,
    )
    .await;
    assert!(empty["detail"].as_str().unwrap().contains("name"));
    problem(
        app.post_user(json!({"name": "a\u{7}b", "password": "12345"}))
            .await,
        400,
    )
    .await;
    problem(
        app.post_user(json!({"name": "x".repeat(257), "password": "12345"}))
            .await,
        400,
    )
    .await;
}

#[tokio::test]
async fn a_password_of_the_wrong_type_is_rejected_without_echoing_it() {
    let app = spawn_app(&FakeAudit::start().await.url).await;
    let response = app
        .post_raw(
            "{\"name\": \"x\", \"password\": 987654321}",
            "application/json",
        )
        .await;
    let body = problem(response, 400).await;
    assert!(!body.to_string().contains("987654321"));
    assert!(body["detail"].as_str().unwrap().contains("password"));
}

#[tokio::test]
async fn an_oversized_body_is_a_413_problem() {
    let app = spawn_app(&FakeAudit::start().await.url).await;
    let huge = json!({"name": "x", "password": "p".repeat(100 * 1024)}).to_string();
    problem(app.post_raw(&huge, "application/json").await, 413).await;
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let app = spawn_app(&FakeAudit::start().await.url).await;
    problem(app.get("/v2/nothing").await, 404).await;
    let response = app
        .client
        .patch(format!("{}/v1/user", app.address))
        .send()
        .await
        .unwrap();
    problem(response, 405).await;
}

#[tokio::test]
async fn health_readiness_and_metrics_answer() {
    // The audit service is down: readiness must not depend on it.
    let app = spawn_app(&format!(
        "http://127.0.0.1:{}/",
        crate::helpers::free_port()
    ))
    .await;
    assert_eq!(app.get("/healthz").await.status(), 200);
    assert_eq!(app.get("/readyz").await.status(), 200);
    app.create_user("x").await;
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("path=\"/v1/user\""), "{metrics}");
}

#[tokio::test]
async fn every_metric_is_described_and_latencies_are_histograms() {
    let app = spawn_app(&format!(
        "http://127.0.0.1:{}/",
        crate::helpers::free_port()
    ))
    .await;
    app.create_user("x").await;
    // The backlog gauges come with the relay's first poll.
    let families = crate::helpers::eventually(
        "the backlog gauges",
        std::time::Duration::from_secs(10),
        || async {
            let metrics = app.get("/metrics").await.text().await.unwrap();
            let families = service_kit::telemetry::metric_families(&metrics);
            families
                .contains_key("outbox_pending_events")
                .then_some(families)
        },
    )
    .await;
    let expected = [
        ("http_requests_total", "counter"),
        ("http_request_duration_seconds", "histogram"),
        ("outbox_pending_events", "gauge"),
        ("outbox_oldest_pending_age_seconds", "gauge"),
        ("outbox_events_published_total", "counter"),
        ("outbox_events_retried_total", "counter"),
        ("outbox_events_dead_lettered_total", "counter"),
    ];
    for (name, kind) in expected {
        let (found, _) = families
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing: {families:?}"));
        assert_eq!(found, kind, "{name}");
    }
    for (name, (kind, help)) in &families {
        assert!(help, "{name} has no # HELP line");
        assert_ne!(kind, "summary", "{name} is a summary");
    }
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics
            .contains("outbox_events_published_total{type=\"user.storeUser\",transport=\"http\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("http_request_duration_seconds_bucket{"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_request_slower_than_the_timeout_is_408_as_in_the_audit_service() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let audit = FakeAudit::start().await;
    let app = crate::helpers::spawn_app_with(&audit.url, |s| {
        s.request_timeout = std::time::Duration::from_millis(300);
    })
    .await;
    // The headers promise a body that never comes.
    let address = app.address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream
        .write_all(
            b"POST /v1/user HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{",
        )
        .await
        .unwrap();
    let mut answer = vec![0; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut answer))
        .await
        .expect("an answer before the test's deadline")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
}

#[test]
fn the_openapi_document_gives_the_timeout_answer_on_every_api_operation() {
    let doc = serde_json::to_value(user_service::app::openapi()).unwrap();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let outside = matches!(path.as_str(), "/healthz" | "/metrics");
            assert_eq!(
                operation["responses"]["408"].is_object(),
                !outside,
                "{method} {path}"
            );
        }
    }
}
