//! Publishing to the shared NATS JetStream server on 127.0.0.1:4222
//! (`scripts/nats.sh start`). These tests fail, loudly, when it does not
//! answer.

use crate::helpers::{
    assert_unready_but_serving, data_json, eventually, spawn_app_with, wait_until_all_delivered,
};
use async_nats::jetstream::{self, consumer::pull};
use brokers::nats::NatsConfig;
use cloudevents::{AttributesReader, Event};
use cloudevents_wire::binding::BinaryMessage;
use futures::StreamExt;
use publishers::{Outcome, Publisher, Report};
use std::time::Duration;
use test_kit::database::Db;
use user_service::config::{ContentMode, PublishSettings};

const URL: &str = "nats://127.0.0.1:4222";

async fn nats() -> jetstream::Context {
    match tokio::time::timeout(Duration::from_secs(5), async_nats::connect(URL)).await {
        Ok(Ok(client)) => jetstream::new(client),
        _ => panic!("no NATS server on {URL}: start one with `scripts/nats.sh start`"),
    }
}

/// A stream and subject of this test's own.
fn config() -> NatsConfig {
    let id = uuid::Uuid::new_v4().simple().to_string();
    NatsConfig {
        url: URL.into(),
        stream: format!("US_{id}"),
        subject: format!("u{id}.events"),
        ..NatsConfig::default()
    }
}

fn settings(config: &NatsConfig, mode: ContentMode) -> PublishSettings {
    PublishSettings::Nats {
        config: config.clone(),
        mode,
        timeout: Duration::from_secs(5),
    }
}

/// A publisher of this test's stream in binary mode, made as the service
/// makes it (the connection is made in the background).
async fn binary_publisher(config: &NatsConfig) -> Publisher {
    Publisher::new(&settings(config, ContentMode::Binary), "user-service")
        .await
        .unwrap()
}

/// A `user.storeUser` event with an id of its own.
fn new_event() -> Event {
    serde_json::from_value(serde_json::json!({
        "specversion": "1.0", "id": uuid::Uuid::new_v4().to_string(),
        "source": "/user-service", "type": "user.storeUser"
    }))
    .unwrap()
}

/// The first `n` messages of the stream, in stream order.
async fn read(js: &jetstream::Context, stream: &str, n: usize) -> Vec<async_nats::Message> {
    let stream = eventually("the stream", Duration::from_secs(30), || async {
        js.get_stream(stream).await.ok()
    })
    .await;
    let consumer: jetstream::consumer::PullConsumer = stream
        .create_consumer(pull::Config::default())
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut out = Vec::new();
    while out.len() < n {
        let next = tokio::time::timeout(Duration::from_secs(30), messages.next())
            .await
            .unwrap_or_else(|_| panic!("read {} of {n} messages", out.len()))
            .unwrap()
            .unwrap();
        out.push(next.message);
    }
    out
}

fn header(message: &async_nats::Message, name: &str) -> Option<String> {
    message
        .headers
        .as_ref()
        .and_then(|h| h.get(name))
        .map(|v| v.as_str().to_owned())
}

fn decode(message: &async_nats::Message) -> Event {
    let headers: Vec<(&str, &str)> = message
        .headers
        .iter()
        .flat_map(|h| h.iter())
        .filter_map(|(k, v)| v.first().map(|v| (k.as_ref(), v.as_str())))
        .collect();
    BinaryMessage::from_nats(headers, message.payload.to_vec())
        .unwrap()
        .expect("binary mode")
        .into_event()
        .unwrap()
}

#[tokio::test]
async fn a_created_users_event_lands_on_the_stream_in_binary_mode_with_its_id_as_msg_id() {
    let js = nats().await;
    let config = config();
    let app = spawn_app_with("http://unused/", |s| {
        s.publish = settings(&config, ContentMode::Binary)
    })
    .await;

    let id = app.create_user("Zoë \"Q\" 100%").await;

    let message = read(&js, &config.stream, 1).await.remove(0);
    assert_eq!(message.subject.as_str(), config.subject);
    assert_eq!(header(&message, "ce-specversion").as_deref(), Some("1.0"));
    assert_eq!(
        header(&message, "ce-type").as_deref(),
        Some("user.storeUser")
    );
    assert_eq!(header(&message, "ce-subject").as_deref(), Some(id.as_str()));
    assert_eq!(
        header(&message, "ce-datacontenttype").as_deref(),
        Some("application/json")
    );
    assert!(!String::from_utf8_lossy(&message.payload).contains("12345"));
    // What arrived is what the outbox holds; the event id is the message id.
    // The app's own database, SQLite or PostgreSQL.
    let db = Db::open(&app.database_url).await;
    wait_until_all_delivered(&db, Duration::from_secs(30)).await;
    let stored = db.text("SELECT event_json FROM outbox").await;
    let expected: Event = serde_json::from_str(&stored).unwrap();
    assert_eq!(decode(&message), expected);
    assert_eq!(
        header(&message, "Nats-Msg-Id").as_deref(),
        Some(expected.id())
    );
    assert_eq!(app.get("/readyz").await.status(), 200);
}

#[tokio::test]
async fn structured_mode_sends_the_json_event_with_its_content_type() {
    let js = nats().await;
    let config = config();
    let app = spawn_app_with("http://unused/", |s| {
        s.publish = settings(&config, ContentMode::Structured)
    })
    .await;
    let id = app.create_user("structured").await;
    let message = read(&js, &config.stream, 1).await.remove(0);
    assert_eq!(
        header(&message, "Content-Type").as_deref(),
        Some("application/cloudevents+json")
    );
    let event: Event = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(event.subject(), Some(id.as_str()));
    assert_eq!(header(&message, "Nats-Msg-Id").as_deref(), Some(event.id()));
}

#[tokio::test]
async fn one_users_events_arrive_in_order_on_the_stream() {
    let js = nats().await;
    let config = config();
    let app = spawn_app_with("http://unused/", |s| {
        s.publish = settings(&config, ContentMode::Binary)
    })
    .await;
    let id = app.create_user("v0").await;
    for round in 1..5 {
        let body = serde_json::json!({"name": format!("v{round}")});
        assert_eq!(app.put_user(&id, body).await.status(), 200);
    }
    assert_eq!(app.delete_user(&id).await.status(), 204);

    let events: Vec<Event> = read(&js, &config.stream, 6)
        .await
        .iter()
        .map(decode)
        .collect();
    let names: Vec<String> = events
        .iter()
        .map(|e| data_json(e)["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["v0", "v1", "v2", "v3", "v4", "v4"]);
    assert_eq!(events[5].ty(), "user.deleteUser");
}

#[tokio::test]
async fn a_republished_event_is_dropped_by_the_streams_duplicate_window() {
    let js = nats().await;
    let config = config();
    let publisher = binary_publisher(&config).await;
    let event = new_event();
    assert_eq!(publisher.publish(&event).await, Outcome::Ack);
    assert_eq!(publisher.publish(&event).await, Outcome::Ack);
    let info = js
        .get_stream(&config.stream)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .clone();
    assert_eq!(info.state.messages, 1, "the second copy was a duplicate");
}

#[tokio::test]
async fn the_first_publish_waits_for_the_connection_made_in_the_background() {
    nats().await;
    let config = config();
    let publisher = binary_publisher(&config).await;
    let event = new_event();
    // Handed over at once, as the relay does, while the client is still
    // connecting: it used to be refused with "not connected to NATS
    // (Pending)", and a relay starting with a backlog logged a warning and
    // backed off before sending anything.
    let Publisher::Pipelined(pipelined) = &publisher else {
        panic!("NATS publishes pipelined");
    };
    let pending = pipelined
        .enqueue(event)
        .await
        .expect("the first event is taken, not refused");
    assert_eq!(pending.await, Report::Delivered);
}

#[tokio::test]
async fn without_a_server_readiness_and_delivery_fail_while_users_are_served() {
    let app = spawn_app_with("http://unused/", |s| {
        let mut config = config();
        // Nothing listens on port 9 of loopback.
        config.url = "nats://127.0.0.1:9".into();
        s.publish = settings(&config, ContentMode::Binary);
    })
    .await;
    // Readiness follows delivery (READINESS=delivery, the default), while
    // the API is served and users' events wait in the outbox.
    assert_unready_but_serving(&app).await;
    let response = app.get("/delivery").await;
    assert_eq!(response.status(), 503);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
}
