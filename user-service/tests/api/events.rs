//! What the audit service receives: the CloudEvents of user changes, their
//! encoding on the wire, and their order.

use crate::helpers::{data_json, spawn_app, spawn_app_with, FakeAudit, SEED_BODY, SEED_PASSWORD};
use cloudevents::{AttributesReader, EventBuilder, EventBuilderV10};
use serde_json::json;
use std::time::Duration;
use user_service::config::{ContentMode, PublishSettings};
use user_service::publish::{Outcome, Publisher};

#[tokio::test]
async fn a_created_user_arrives_as_user_store_user_in_binary_mode_without_the_password() {
    let audit = FakeAudit::start().await;
    let app = spawn_app(&audit.url).await;

    let response = app.post_raw(SEED_BODY, "application/json").await;
    let user: serde_json::Value = response.json().await.unwrap();
    let id = user["id"].as_str().unwrap();

    audit.wait_for_accepted(1).await;
    let received = audit.received().remove(0);
    assert_eq!(received.headers["ce-specversion"], "1.0");
    assert_eq!(received.headers["ce-type"], "user.storeUser");
    assert_eq!(received.headers["ce-source"], "/user-service");
    assert_eq!(received.headers["ce-subject"], id);
    assert_eq!(received.headers["content-type"], "application/json");
    assert!(received.headers.contains_key("ce-id"));
    assert!(received.headers.contains_key("ce-time"));
    let event = received.event();
    assert_eq!(data_json(event), json!({"id": id, "name": "Ozzy Osbourne"}));
    let raw = String::from_utf8_lossy(&received.raw_bytes()).into_owned();
    assert!(!raw.contains(SEED_PASSWORD), "password leaked: {raw}");
    assert!(!raw.contains("argon2"), "hash leaked: {raw}");
}

#[tokio::test]
async fn update_and_delete_arrive_after_create_in_order() {
    let audit = FakeAudit::start().await;
    let app = spawn_app(&audit.url).await;

    let id = app.create_user("Ozzy").await;
    let response = app
        .put_user(
            &id,
            json!({"name": "Ozzy Osbourne", "password": "secret-2"}),
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(app.delete_user(&id).await.status(), 204);

    let events = audit.wait_for_accepted(3).await;
    let types: Vec<&str> = events.iter().map(|e| e.ty()).collect();
    assert_eq!(
        types,
        ["user.storeUser", "user.updateUser", "user.deleteUser"]
    );
    assert!(events.iter().all(|e| e.subject() == Some(id.as_str())));
    assert_eq!(
        data_json(&events[1]),
        json!({"id": id, "name": "Ozzy Osbourne"})
    );
    assert_eq!(
        data_json(&events[2]),
        json!({"id": id, "name": "Ozzy Osbourne"})
    );
    for received in audit.received() {
        let raw = String::from_utf8_lossy(&received.raw_bytes()).into_owned();
        assert!(!raw.contains("secret-2") && !raw.contains(SEED_PASSWORD));
    }
}

#[tokio::test]
async fn structured_mode_sends_the_event_as_cloudevents_json() {
    let audit = FakeAudit::start().await;
    let app = spawn_app_with(&audit.url, |s| {
        s.publish = PublishSettings::Http {
            url: audit.url.clone(),
            mode: ContentMode::Structured,
            timeout: Duration::from_secs(2),
        };
    })
    .await;

    let id = app.create_user("Ozzy").await;

    audit.wait_for_accepted(1).await;
    let received = audit.received().remove(0);
    assert_eq!(
        received.headers["content-type"],
        "application/cloudevents+json"
    );
    assert!(!received.headers.contains_key("ce-id"));
    let json: serde_json::Value = serde_json::from_slice(&received.body).unwrap();
    assert_eq!(json["specversion"], "1.0");
    assert_eq!(json["type"], "user.storeUser");
    assert_eq!(json["subject"], id.as_str());
    assert_eq!(json["data"], json!({"id": id, "name": "Ozzy"}));
}

#[tokio::test]
async fn attribute_values_are_percent_encoded_in_binary_mode_headers() {
    let audit = FakeAudit::start().await;
    let publisher = Publisher::new(&PublishSettings::Http {
        url: audit.url.clone(),
        mode: ContentMode::Binary,
        timeout: Duration::from_secs(2),
    })
    .await
    .unwrap();
    let event = EventBuilderV10::new()
        .id("id with space")
        .source("/user-service")
        .ty("user.storeUser")
        .subject("100% \"Grüße\" €")
        .extension("comment", "a b")
        .data("application/json", json!({"id": "x", "name": "Dvořák"}))
        .build()
        .unwrap();

    assert_eq!(publisher.publish(&event).await, Outcome::Ack);

    let received = audit.received().remove(0);
    assert_eq!(
        received.headers["ce-subject"],
        "100%25%20%22Gr%C3%BC%C3%9Fe%22%20%E2%82%AC"
    );
    assert_eq!(received.headers["ce-id"], "id%20with%20space");
    assert_eq!(received.headers["ce-comment"], "a%20b");
    assert_eq!(received.event(), &event);
}
