//! What the audit service receives: the CloudEvents of user changes, their
//! encoding on the wire, and their order.

use crate::helpers::{data_json, spawn_app, spawn_app_with, FakeAudit, SEED_BODY, SEED_PASSWORD};
use cloudevents::{AttributesReader, EventBuilder, EventBuilderV10};
use publishers::{Outcome, Publisher};
use serde_json::json;
use std::time::Duration;
use user_service::config::{ContentMode, PublishSettings};

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
async fn an_update_that_changes_nothing_emits_no_event_and_a_new_password_does() {
    let audit = FakeAudit::start().await;
    let app = spawn_app(&audit.url).await;
    let id = app.create_user("Ozzy").await;
    audit.wait_for_accepted(1).await;
    let before: serde_json::Value = app.get_user(&id).await.json().await.unwrap();

    let same = app.put_user(&id, json!({"name": "Ozzy"})).await;
    assert_eq!(same.status(), 200);
    let same: serde_json::Value = same.json().await.unwrap();
    assert_eq!(same, before, "an unchanged user keeps its updated_at");
    let new_password = app
        .put_user(&id, json!({"name": "Ozzy", "password": "another one"}))
        .await;
    assert_eq!(new_password.status(), 200);

    // The password change is the second event, and the last: the no-op
    // before it emitted none.
    let events = audit.wait_for_accepted(2).await;
    assert_eq!(events[1].ty(), "user.updateUser");
    assert_eq!(data_json(&events[1]), json!({"id": id, "name": "Ozzy"}));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(audit.received().len(), 2);
}

#[tokio::test]
async fn the_traceparent_of_the_request_travels_in_the_event() {
    let audit = FakeAudit::start().await;
    // One event a request, so each arrives with its own ce- headers.
    let app = spawn_app_with(&audit.url, |s| s.relay.batch_max = 1).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller = format!("00-{trace_id}-00f067aa0ba902b7-01");

    let response = app
        .client
        .post(format!("{}/v1/user", app.address))
        .header("content-type", "application/json")
        .header("traceparent", &caller)
        .header("tracestate", "vendor=abc")
        .body(SEED_BODY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert!(response.headers().contains_key("x-request-id"));
    let traced: serde_json::Value = response.json().await.unwrap();
    // Without a traceparent a new trace starts, and its event carries it.
    let untraced = app.create_user("untraced").await;

    audit.wait_for_accepted(2).await;
    let received = audit.received();
    let of = |user: &str| {
        received
            .iter()
            .find(|r| r.event().subject() == Some(user))
            .expect("the user's event")
    };
    let first = of(traced["id"].as_str().unwrap());
    let traceparent = first
        .event()
        .extension("traceparent")
        .map(ToString::to_string);
    let traceparent = traceparent.expect("a traceparent");
    assert!(
        traceparent.starts_with(&format!("00-{trace_id}-")),
        "{traceparent}"
    );
    assert_ne!(traceparent, caller, "a span of ours is the event's parent");
    assert_eq!(
        first
            .event()
            .extension("tracestate")
            .map(ToString::to_string),
        Some("vendor=abc".to_owned())
    );
    // In binary mode the extension is a ce- header.
    assert_eq!(first.headers["ce-traceparent"], traceparent.as_str());
    let second = of(&untraced)
        .event()
        .extension("traceparent")
        .map(ToString::to_string)
        .expect("a traceparent");
    assert!(second.starts_with("00-") && second.len() == 55, "{second}");
    assert!(!second.contains(trace_id), "{second}");
}

#[tokio::test]
async fn structured_mode_sends_the_event_as_cloudevents_json() {
    let audit = FakeAudit::start().await;
    let app = spawn_app_with(&audit.url, |s| {
        s.publish = PublishSettings::Http {
            url: audit.url.clone(),
            mode: ContentMode::Structured,
            timeout: Duration::from_secs(2),
            client: Default::default(),
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
    let publisher = Publisher::new(
        &PublishSettings::Http {
            url: audit.url.clone(),
            mode: ContentMode::Binary,
            timeout: Duration::from_secs(2),
            client: Default::default(),
        },
        "user-service",
    )
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
