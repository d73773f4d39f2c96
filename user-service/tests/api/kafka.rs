//! Publishing to a real Kafka broker on 127.0.0.1:9092 (`scripts/kafka.sh
//! start`), to a private one this file starts and restarts, and to
//! librdkafka's mock cluster. These tests fail, loudly, when no broker
//! answers on 9092 or a private one cannot start.

use crate::helpers::{
    assert_unready_but_serving, eventually, spawn_app_with, wait_until_all_delivered, RenameLoad,
};
use brokers::kafka::KafkaConfig;
use cloudevents::{AttributesReader, Event};
use cloudevents_wire::binding::BinaryMessage;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::ClientConfig;
use std::time::Duration;
use test_kit::database::Db;
use test_kit::servers::{Kind, PrivateServer};
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
    create_topic(BROKER, &topic, partitions).await;
    topic
}

async fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("create topic");
    for result in results {
        result.expect("topic created");
    }
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
async fn wait_until_delivered(db: &Db) {
    eventually(
        "the row marked delivered",
        Duration::from_secs(10),
        || async {
            let status = db.text("SELECT status FROM outbox").await;
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
    let db = app.db().await;
    let stored = db.text("SELECT event_json FROM outbox").await;
    let mut expected: Event = serde_json::from_str(&stored).unwrap();
    expected.set_extension("partitionkey", id.clone());
    assert_eq!(decode(&record), expected);
    wait_until_delivered(&db).await;
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
async fn without_a_broker_readiness_and_delivery_fail_while_users_are_served() {
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
                // The operator's KAFKA_MESSAGE_TIMEOUT_MS wins over the
                // default of waiting forever.
                properties: vec![("message.timeout.ms".into(), "1000".into())],
            },
            timeout: Duration::from_secs(1),
        }
    })
    .await;
    let id = app.create_user("Ozzy").await;
    let db = app.db().await;

    // Failed attempts are recorded and the event stays pending.
    eventually("a failed attempt", Duration::from_secs(15), || async {
        let (attempts, status) = db
            .int_text("SELECT CAST(attempts AS BIGINT), status FROM outbox")
            .await;
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
    wait_until_delivered(&db).await;
}

/// Consumes everything on `topic` at `brokers` until `done` says so.
fn consume_until(
    brokers: &str,
    topic: &str,
    deadline: Duration,
    mut done: impl FnMut(&[Event]) -> bool,
) -> Vec<Event> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set(
            "group.id",
            format!("user-service-test-{}", uuid::Uuid::new_v4()),
        )
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let start = std::time::Instant::now();
    let mut events = Vec::new();
    while !done(&events) {
        assert!(
            start.elapsed() < deadline,
            "timed out consuming {topic}: {} events so far",
            events.len()
        );
        if let Some(record) = poll_one(&consumer) {
            events.push(decode(&record));
        }
    }
    events
}

/// Each user's event names in topic order, the first copy of each event
/// only (a re-send after a producer rebuild may add a later copy, which
/// the audit service stores once).
fn names_per_user(events: &[Event]) -> std::collections::HashMap<String, Vec<String>> {
    let mut seen = std::collections::HashSet::new();
    let mut per_user: std::collections::HashMap<String, Vec<String>> = Default::default();
    for e in events {
        if seen.insert(e.id().to_owned()) {
            per_user
                .entry(e.subject().unwrap().to_owned())
                .or_default()
                .push(
                    crate::helpers::data_json(e)["name"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                );
        }
    }
    per_user
}

fn distinct(events: &[Event]) -> usize {
    events
        .iter()
        .map(|e| e.id())
        .collect::<std::collections::HashSet<_>>()
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_in_flight_keep_each_users_order_across_a_broker_restart() {
    // A broker of its own, so stopping it disturbs no other test.
    let broker = PrivateServer::start(Kind::Kafka);
    let brokers = broker.address();
    let topic = format!("user-service-restart-{}", uuid::Uuid::new_v4());
    create_topic(&brokers, &topic, 3).await;
    let app = std::sync::Arc::new(
        spawn_app_with("http://unused/", |s| {
            s.publish = PublishSettings::Kafka {
                config: KafkaConfig {
                    brokers: brokers.clone(),
                    topic: topic.clone(),
                    properties: vec![],
                },
                timeout: Duration::from_secs(5),
            }
        })
        .await,
    );
    // Renames keep coming, every user at once, while the broker is
    // stopped and started again under them.
    let load = RenameLoad::start(&app, 8).await;
    let ids = load.ids.clone();
    tokio::time::sleep(Duration::from_millis(500)).await;
    broker.stop_async().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let db = app.db().await;
    let pending_in_outage = db
        .int("SELECT count(*) FROM outbox WHERE status = 'pending'")
        .await;
    broker.start_again_async().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let expected = load.stop().await;
    let total: usize = expected.iter().map(Vec::len).sum();
    eprintln!("{total} events, {pending_in_outage} pending while the broker was down");
    assert!(
        pending_in_outage > 0,
        "events were waiting in the relay and the producer across the restart"
    );

    let start = std::time::Instant::now();
    loop {
        let pending = db
            .int("SELECT count(*) FROM outbox WHERE status <> 'delivered'")
            .await;
        if pending == 0 {
            break;
        }
        // Generous: on a loaded machine the restarted broker and the
        // producer's reconnection have taken over a minute.
        if start.elapsed() > Duration::from_secs(180) {
            let metrics = app.get("/metrics").await.text().await.unwrap();
            let relay: Vec<&str> = metrics
                .lines()
                .filter(|l| l.starts_with("outbox_") || l.starts_with("kafka_"))
                .collect();
            // Why the relay says events do not get through.
            let delivery = app.get("/delivery").await.text().await.unwrap();
            panic!(
                "{pending} of {total} events not delivered after 180 s; readyz {}; /delivery {delivery}; {relay:#?}",
                app.get("/readyz").await.status()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let events = consume_until(&brokers, &topic, Duration::from_secs(60), |events| {
        distinct(events) >= total
    });
    let per_user = names_per_user(&events);
    for (u, id) in ids.iter().enumerate() {
        assert_eq!(per_user[id], expected[u], "user {u}, in topic order");
    }
    let Ok(app) = std::sync::Arc::try_unwrap(app) else {
        panic!("the writers are done with the app");
    };
    app.stop().await;
    drop(broker);
}

#[tokio::test]
async fn a_fatal_producer_error_rebuilds_the_producer_and_loses_nothing() {
    use rdkafka::mocking::MockCluster;
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

    let mock = MockCluster::new(1).expect("mock cluster");
    let topic = "user-service-mock";
    mock.create_topic(topic, 1, 1).expect("mock topic");
    // The broker answers the first produce request with a sequence error
    // for the head of the line, which the idempotent producer cannot
    // recover from: librdkafka raises a fatal error, and every later send
    // of that producer would fail.
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER],
    );
    let brokers = mock.bootstrap_servers();
    let app = spawn_app_with("http://unused/", |s| {
        s.publish = PublishSettings::Kafka {
            config: KafkaConfig {
                brokers: brokers.clone(),
                topic: topic.into(),
                properties: vec![],
            },
            timeout: Duration::from_secs(5),
        }
    })
    .await;

    let id = app.create_user("v0").await;
    for v in 1..=3 {
        let body = serde_json::json!({"name": format!("v{v}")});
        assert_eq!(app.put_user(&id, body).await.status(), 200);
    }

    let db = app.db().await;
    wait_until_all_delivered(&db, Duration::from_secs(30)).await;
    let metrics = app.get("/metrics").await.text().await.unwrap();
    let rebuilds = metrics
        .lines()
        .find(|l| l.starts_with("publisher_rebuilds_total{transport=\"kafka\"}"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|n| n.parse::<f64>().ok());
    assert!(
        rebuilds.is_some_and(|n| n >= 1.0),
        "a fatal error was hit and the producer rebuilt:\n{metrics}"
    );
    // The new producer works, and readiness says so.
    assert_eq!(app.get("/readyz").await.status(), 200);
    let events = consume_until(&brokers, topic, Duration::from_secs(30), |events| {
        distinct(events) >= 4
    });
    assert_eq!(names_per_user(&events)[&id], ["v0", "v1", "v2", "v3"]);
    app.stop().await;
}
