//! What the operational endpoints say while events cannot be delivered:
//! `/delivery` is whether events reach the receiver, with why not; `/readyz`
//! follows it by default (`READINESS=delivery`), or is the database alone
//! (`READINESS=database`), on every transport.

use crate::helpers::{eventually, free_port, spawn_app_with, FakeAudit};
use serde_json::Value;
use std::time::Duration;

#[tokio::test]
async fn with_audit_down_readiness_and_delivery_fail_saying_why_until_it_is_back() {
    let port = free_port();
    let app = spawn_app_with(&format!("http://127.0.0.1:{port}/"), |s| {
        s.relay.lag_max = Duration::from_millis(300);
    })
    .await;
    let delivery = app.get("/delivery").await;
    assert_eq!(delivery.status(), 200, "nothing pending yet");
    let body: Value = delivery.json().await.unwrap();
    assert_eq!(body["state"], "delivering", "{body}");
    assert_eq!(body["transport"], "http", "{body}");

    app.create_user("waiting").await;
    let problem: Value = eventually("/delivery to fail", Duration::from_secs(10), || async {
        let response = app.get("/delivery").await;
        (response.status() == 503).then_some(())?;
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        response.json::<Value>().await.ok()
    })
    .await;
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("DELIVERY_LAG_MAX_MS"), "{problem}");
    // The relay's last reason: nothing listens on the port.
    assert!(detail.to_ascii_lowercase().contains("connect"), "{problem}");
    assert_eq!(problem["pending"], 1, "{problem}");
    assert!(problem["oldest_pending_age_seconds"].as_f64() > Some(0.2));
    // Not ready, saying why, while users are still served.
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 503);
    let problem: Value = ready.json().await.unwrap();
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("events do not get through"), "{problem}");
    assert!(detail.contains("READINESS=database"), "{problem}");
    app.create_user("still served").await;

    let _audit = FakeAudit::start_on(port).await;
    // Recovered once nothing is pending: a 200 alone may come while the
    // second user's event, younger than the lag limit, is still on its way.
    let body: Value = eventually("/delivery to recover", Duration::from_secs(10), || async {
        let response = app.get("/delivery").await;
        (response.status() == 200).then_some(())?;
        let body = response.json::<Value>().await.ok()?;
        (body["pending"] == 0).then_some(body)
    })
    .await;
    assert_eq!(body["state"], "delivering", "{body}");
    assert_eq!(app.get("/readyz").await.status(), 200);
}

#[tokio::test]
async fn with_readiness_on_the_database_alone_an_audit_outage_keeps_the_instance_ready() {
    let port = free_port();
    let app = spawn_app_with(&format!("http://127.0.0.1:{port}/"), |s| {
        s.relay.lag_max = Duration::from_millis(300);
        s.readiness = user_service::routes::health::Readiness::Database;
    })
    .await;
    app.create_user("waiting").await;
    eventually("/delivery to fail", Duration::from_secs(10), || async {
        (app.get("/delivery").await.status() == 503).then_some(())
    })
    .await;
    assert_eq!(app.get("/readyz").await.status(), 200);
}

#[tokio::test]
async fn dead_letters_are_counted_by_delivery() {
    let audit = FakeAudit::start().await;
    audit.respond_with(|_| {
        use axum::response::IntoResponse;
        axum::http::StatusCode::UNPROCESSABLE_ENTITY.into_response()
    });
    let app = spawn_app_with(&audit.url, |_| {}).await;
    app.create_user("refused").await;
    let body: Value = eventually("a dead letter", Duration::from_secs(10), || async {
        let body: Value = app.get("/delivery").await.json().await.ok()?;
        (body["dead_letters"] == 1).then_some(body)
    })
    .await;
    assert_eq!(body["state"], "delivering", "{body}");
}
