//! Publishing to a real Kafka broker on 127.0.0.1:9092 (`scripts/kafka.sh
//! start`). These tests fail, loudly, when no broker answers there.

use crate::helpers::{eventually, spawn_app_with};
use cloudevents::{AttributesReader, Event};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::ClientConfig;
use shared::binding::BinaryMessage;
use shared::config::KafkaConfig;
use std::time::Duration;
use user_service::config::PublishSettings;

const BROKER: &str = "127.0.0.1:9092";

/// A fresh topic with `partitions` partitions; panics if the broker is absent.
async fn fresh_topic(partitions: i32) -> String {
    assert!(
        std::net::TcpStream::connect_timeout(
            &BROKER.parse().expect("broker address"),
            Duration::from_secs(2)
        )
        .is_ok(),
        "no Kafka broker at {BROKER}: start one with `scripts/kafka.sh start`"
    );
    let topic = format!("user-service-test-{}", uuid::Uuid::new_v4());
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", BROKER)
        .create()
        .expect("admin client");
    let results = admin
        .create_topics(
            &[NewTopic::new(
                &topic,
                partitions,
                TopicReplication::Fixed(1),
            )],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("create topic");
    for result in results {
        result.expect("topic created");
    }
    topic
}

fn kafka_settings(topic: &str) -> PublishSettings {
    PublishSettings::Kafka {
        config: KafkaConfig {
            brokers: BROKER.into(),
            topic: topic.into(),
            properties: vec![],
        },
        timeout: Duration::from_secs(10),
    }
}

/// Everything on `topic` so far: (key, headers, payload).
type Record = (Option<String>, Vec<(String, Option<Vec<u8>>)>, Vec<u8>);

fn consumer(topic: &str) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", BROKER)
        .set(
            "group.id",
            format!("user-service-test-{}", uuid::Uuid::new_v4()),
        )
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    consumer
}

fn poll_one(consumer: &BaseConsumer) -> Option<Record> {
    let message = consumer.poll(Duration::from_millis(100))?.expect("consume");
    let headers = message
        .headers()
        .map(|hs| {
            hs.iter()
                .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                .collect()
        })
        .unwrap_or_default();
    Some((
        message
            .key()
            .map(|k| String::from_utf8(k.to_vec()).expect("utf-8 key")),
        headers,
        message.payload().unwrap_or_default().to_vec(),
    ))
}

/// Waits until the only outbox row is marked delivered.
async fn wait_until_delivered(pool: &sqlx::SqlitePool) {
    eventually(
        "the row marked delivered",
        Duration::from_secs(10),
        || async {
            let status: String = sqlx::query_scalar("SELECT status FROM outbox")
                .fetch_one(pool)
                .await
                .unwrap();
            (status == "delivered").then_some(())
        },
    )
    .await;
}

fn decode(record: &Record) -> Event {
    let headers = record.1.iter().map(|(k, v)| (k.as_str(), v.as_deref()));
    BinaryMessage::from_kafka(headers, record.2.clone())
        .expect("valid binary record")
        .expect("binary mode")
        .into_event()
        .expect("an event")
}

#[tokio::test]
async fn a_created_users_event_lands_on_the_topic_keyed_by_user_id_in_binary_mode() {
    let topic = fresh_topic(3).await;
    let app = spawn_app_with("http://unused/", |s| s.publish = kafka_settings(&topic)).await;

    let id = app.create_user("Ozzy Osbourne").await;

    let consumer = consumer(&topic);
    let record = eventually(
        "the event on the topic",
        Duration::from_secs(30),
        || async { poll_one(&consumer) },
    )
    .await;
    assert_eq!(record.0.as_deref(), Some(id.as_str()));
    let header = |name: &str| {
        record
            .1
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.clone())
            .map(|v| String::from_utf8(v).unwrap())
    };
    assert_eq!(header("ce_specversion").as_deref(), Some("1.0"));
    assert_eq!(header("ce_type").as_deref(), Some("user.storeUser"));
    assert_eq!(header("ce_subject").as_deref(), Some(id.as_str()));
    assert_eq!(header("ce_partitionkey").as_deref(), Some(id.as_str()));
    assert_eq!(header("content-type").as_deref(), Some("application/json"));
    assert!(!String::from_utf8_lossy(&record.2).contains("12345"));

    // What arrived is what the outbox holds, plus the partition key.
    let pool = shared::db::connect_sqlite(&app.database_url, 1)
        .await
        .unwrap();
    let stored: String = sqlx::query_scalar("SELECT event_json FROM outbox")
        .fetch_one(&pool)
        .await
        .unwrap();
    let mut expected: Event = serde_json::from_str(&stored).unwrap();
    expected.set_extension("partitionkey", id.clone());
    assert_eq!(decode(&record), expected);
    wait_until_delivered(&pool).await;
}

#[tokio::test]
async fn one_users_events_arrive_in_order_on_kafka() {
    let topic = fresh_topic(3).await;
    let app = spawn_app_with("http://unused/", |s| s.publish = kafka_settings(&topic)).await;

    let id = app.create_user("v0").await;
    for round in 1..5 {
        let body = serde_json::json!({"name": format!("v{round}")});
        assert_eq!(app.put_user(&id, body).await.status(), 200);
    }
    assert_eq!(app.delete_user(&id).await.status(), 204);

    let consumer = consumer(&topic);
    let mut events = Vec::new();
    eventually("six events", Duration::from_secs(30), || {
        if let Some(record) = poll_one(&consumer) {
            events.push(decode(&record));
        }
        let done = events.len() >= 6;
        async move { done.then_some(()) }
    })
    .await;
    let types: Vec<&str> = events.iter().map(|e| e.ty()).collect();
    assert_eq!(
        types,
        [
            "user.storeUser",
            "user.updateUser",
            "user.updateUser",
            "user.updateUser",
            "user.updateUser",
            "user.deleteUser"
        ]
    );
    let names: Vec<String> = events
        .iter()
        .map(|e| {
            crate::helpers::data_json(e)["name"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(names, ["v0", "v1", "v2", "v3", "v4", "v4"]);
}

#[tokio::test]
async fn readiness_on_kafka_fails_without_a_reachable_broker() {
    let app = spawn_app_with("http://unused/", |s| {
        s.publish = PublishSettings::Kafka {
            config: KafkaConfig {
                // Nothing listens on port 9 of loopback.
                brokers: "127.0.0.1:9".into(),
                topic: "audit".into(),
                properties: vec![],
            },
            timeout: Duration::from_secs(1),
        }
    })
    .await;

    let response = app.get("/readyz").await;

    assert_eq!(response.status(), 503);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    // Users can still be created: their events wait in the outbox.
    app.create_user("x").await;
}

#[tokio::test]
async fn readiness_on_kafka_succeeds_with_the_broker_up() {
    let topic = fresh_topic(1).await;
    let app = spawn_app_with("http://unused/", |s| s.publish = kafka_settings(&topic)).await;
    assert_eq!(app.get("/readyz").await.status(), 200);
}

/// Forwards every connection on `listener` to the real broker: a broker
/// that "comes back" on a port the app was told about.
async fn forward_to_broker(listener: tokio::net::TcpListener) {
    while let Ok((mut inbound, _)) = listener.accept().await {
        tokio::spawn(async move {
            if let Ok(mut outbound) = tokio::net::TcpStream::connect(BROKER).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

#[tokio::test]
async fn a_broker_outage_delays_events_until_the_broker_is_back() {
    let topic = fresh_topic(1).await;
    let port = crate::helpers::free_port();
    let app = spawn_app_with("http://unused/", |s| {
        s.publish = PublishSettings::Kafka {
            config: KafkaConfig {
                brokers: format!("127.0.0.1:{port}"),
                topic: topic.clone(),
                properties: vec![],
            },
            timeout: Duration::from_secs(1),
        }
    })
    .await;
    let id = app.create_user("Ozzy").await;
    let pool = shared::db::connect_sqlite(&app.database_url, 1)
        .await
        .unwrap();

    // Failed attempts are recorded and the event stays pending.
    eventually("a failed attempt", Duration::from_secs(15), || async {
        let (attempts, status): (i64, String) =
            sqlx::query_as("SELECT attempts, status FROM outbox")
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(status, "pending");
        (attempts >= 1).then_some(())
    })
    .await;

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(forward_to_broker(listener));

    let consumer = consumer(&topic);
    let record = eventually(
        "the event on the topic",
        Duration::from_secs(40),
        || async { poll_one(&consumer) },
    )
    .await;
    assert_eq!(record.0.as_deref(), Some(id.as_str()));
    wait_until_delivered(&pool).await;
}
