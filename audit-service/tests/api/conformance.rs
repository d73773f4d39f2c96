//! What every broker transport promises, tested once and run on each:
//! Kafka (127.0.0.1:9092), NATS JetStream (127.0.0.1:4222) and MQTT
//! (Mosquitto on 127.0.0.1:1883), the shared brokers `make test` starts.
//! A transport is a [`Broker`]: how a test publishes to it and reads its
//! dead letters. Behaviour only one transport has (Kafka's oversized dead
//! letters, NATS's duplicate window, MQTT's reason codes) is tested
//! beside it, in `kafka`, `nats` and `mqtt`.
//!
//! - an invalid message goes to the dead-letter destination with the
//!   reason, and the next one is stored;
//! - each user's events are stored in the order they were published;
//! - a service killed mid-stream and started again loses nothing and
//!   stores nothing twice;
//! - two services on one consumer group share the work and store each
//!   event once;
//! - a broker restart is survived (a broker of the test's own): what is
//!   published once it is back is stored, each event once.

use crate::helpers::{
    audit_process, create_topic, nats, read_topic, spawn_app_with, unique, within, NatsNames,
    Service, TestApp, BROKERS, NATS_URL,
};
use crate::mqtt::{binary_properties, user_property, MqttNames, TestClient, MQTT_PORT};
use async_nats::jetstream;
use audit_service::config::{ConsumerSettings, KafkaSettings, Settings};
use futures::StreamExt;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use rumqttc::v5::mqttbytes::v5::PublishProperties;
use serde_json::json;
use std::collections::{BTreeSet, HashMap};
use std::ops::Range;
use std::path::Path;
use std::time::Duration;
use tempfile::TempDir;
use test_kit::database::Db;
use test_kit::servers::{Kind, PrivateServer};
use tokio::sync::Mutex;

const WAIT: Duration = Duration::from_secs(60);

/// One transport, as the tests see it.
pub trait Broker: Sized + Send + Sync + 'static {
    /// The `transport` the store records.
    const TRANSPORT: &'static str;

    /// A test's own names (topics, streams, groups) on the shared broker;
    /// fails loudly when the broker is not there.
    async fn new(tag: &str) -> Self;

    /// The script that runs a broker of the test's own, one a test may
    /// stop without disturbing the others.
    const SERVER: Kind;

    /// A test's own names on `broker`.
    async fn on(broker: &PrivateServer, tag: &str) -> Self;

    /// Points in-process settings at these names.
    fn apply(&self, settings: &mut Settings);

    /// The environment of a service process on these names.
    fn env(&self) -> Vec<(&'static str, String)>;

    /// Publishes the events `ids` from `source` in binary mode, in order,
    /// user `user-{i % users}`, and waits until the broker has taken all.
    async fn publish(&self, source: &str, ids: Range<usize>, users: usize);

    /// Publishes `payload` as a structured-mode message.
    async fn publish_structured(&self, payload: &[u8]);

    /// The first `n` dead letters: their `dlq-error` and payload.
    async fn dead_letters(&self, n: usize) -> Vec<(String, Vec<u8>)>;
}

/// The attributes of the `i`th test event, and its data.
fn event(i: usize, source: &str, users: usize) -> (Vec<(&'static str, String)>, Vec<u8>) {
    let attributes = vec![
        ("specversion", "1.0".to_owned()),
        ("id", format!("e{i}")),
        ("source", source.to_owned()),
        ("type", "user.updateUser".to_owned()),
        ("subject", format!("user-{}", i % users)),
    ];
    (attributes, json!({"n": i}).to_string().into_bytes())
}

// ------------------------------------------------------------------ Kafka

pub struct Kafka {
    brokers: String,
    topic: String,
    dlq: String,
    group: String,
    producer: FutureProducer,
}

impl Broker for Kafka {
    const TRANSPORT: &'static str = "kafka";

    async fn new(tag: &str) -> Self {
        Kafka::at(BROKERS, tag).await
    }

    const SERVER: Kind = Kind::Kafka;

    async fn on(broker: &PrivateServer, tag: &str) -> Self {
        Kafka::at(&format!("127.0.0.1:{}", broker.port), tag).await
    }

    fn apply(&self, settings: &mut Settings) {
        let mut kafka = KafkaSettings::default();
        kafka.common.brokers = self.brokers.clone();
        kafka.common.topic = self.topic.clone();
        kafka.dlq_topic = self.dlq.clone();
        kafka.group_id = self.group.clone();
        // As `env` says, for the in-process service.
        kafka
            .common
            .properties
            .push(("session.timeout.ms".into(), "6000".into()));
        settings.consumer = ConsumerSettings::Kafka(kafka);
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("EVENT_TRANSPORT", "kafka".into()),
            ("KAFKA_BROKERS", self.brokers.clone()),
            ("KAFKA_TOPIC", self.topic.clone()),
            ("KAFKA_DLQ_TOPIC", self.dlq.clone()),
            ("KAFKA_GROUP_ID", self.group.clone()),
            // A killed member holds its partitions until its session
            // expires; a short one keeps the tests quick.
            ("KAFKA_SESSION_TIMEOUT_MS", "6000".into()),
        ]
    }

    async fn publish(&self, source: &str, ids: Range<usize>, users: usize) {
        let mut deliveries = Vec::with_capacity(ids.len());
        for i in ids {
            let (attributes, payload) = event(i, source, users);
            let mut headers = OwnedHeaders::new().insert(Header {
                key: "content-type",
                value: Some("application/json"),
            });
            let mut key = String::new();
            for (name, value) in &attributes {
                if *name == "subject" {
                    key = value.clone();
                }
                headers = headers.insert(Header {
                    key: &format!("ce_{name}"),
                    value: Some(value.as_str()),
                });
            }
            let record = FutureRecord::to(&self.topic)
                .key(&key)
                .headers(headers)
                .payload(&payload);
            // Queued in call order, which librdkafka keeps per partition.
            let delivery = self
                .producer
                .send_result(record)
                .map_err(|(e, _)| e)
                .expect("record queued");
            deliveries.push(delivery);
        }
        for delivery in deliveries {
            delivery
                .await
                .expect("delivery reported")
                .map_err(|(e, _)| e)
                .expect("record produced");
        }
    }

    async fn publish_structured(&self, payload: &[u8]) {
        let headers = OwnedHeaders::new().insert(Header {
            key: "content-type",
            value: Some("application/cloudevents+json"),
        });
        let record: FutureRecord<'_, str, [u8]> = FutureRecord::to(&self.topic)
            .key("garbage")
            .headers(headers)
            .payload(payload);
        self.producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)
            .expect("record produced");
    }

    async fn dead_letters(&self, n: usize) -> Vec<(String, Vec<u8>)> {
        assert_eq!(
            self.brokers, BROKERS,
            "dead letters are read from the shared broker"
        );
        read_topic(&self.dlq, n, WAIT)
            .await
            .iter()
            .map(|record| {
                (
                    crate::helpers::header(record, "dlq-error").unwrap_or_default(),
                    record.payload().unwrap_or_default().to_vec(),
                )
            })
            .collect()
    }
}

impl Kafka {
    async fn at(brokers: &str, tag: &str) -> Self {
        let topic = unique(&format!("conformance-{tag}"));
        let dlq = format!("{topic}-dlq");
        // Several partitions: order is per user (the record key).
        if brokers == BROKERS {
            create_topic(&topic, 3).await;
            create_topic(&dlq, 1).await;
        } else {
            create_topics_on(brokers, &[(&topic, 3), (&dlq, 1)]).await;
        }
        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .create()
            .expect("producer");
        Kafka {
            brokers: brokers.to_owned(),
            group: format!("{topic}-group"),
            topic,
            dlq,
            producer,
        }
    }
}

async fn create_topics_on(brokers: &str, topics: &[(&str, i32)]) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, partitions)| NewTopic::new(name, *partitions, TopicReplication::Fixed(1)))
        .collect();
    let results = admin
        .create_topics(&new, &AdminOptions::new().operation_timeout(Some(WAIT)))
        .await
        .expect("create topics");
    for result in results {
        result.unwrap_or_else(|(topic, e)| panic!("creating topic {topic}: {e}"));
    }
}

// ------------------------------------------------------------------- NATS

pub struct Nats {
    url: String,
    names: NatsNames,
    js: jetstream::Context,
}

impl Broker for Nats {
    const TRANSPORT: &'static str = "nats";

    async fn new(tag: &str) -> Self {
        let names = NatsNames::new(tag);
        let js = nats().await;
        names.create_stream(&js).await;
        Nats {
            url: NATS_URL.into(),
            names,
            js,
        }
    }

    const SERVER: Kind = Kind::Nats;

    async fn on(broker: &PrivateServer, tag: &str) -> Self {
        let url = format!("nats://127.0.0.1:{}", broker.port);
        let client = async_nats::connect(&url)
            .await
            .expect("the private NATS server");
        let js = jetstream::new(client);
        let names = NatsNames::new(tag);
        names.create_stream(&js).await;
        Nats { url, names, js }
    }

    fn apply(&self, settings: &mut Settings) {
        self.names.apply(settings);
        if let ConsumerSettings::Nats(nats) = &mut settings.consumer {
            nats.common.url = self.url.clone();
        }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = self.names.env();
        for (name, value) in &mut env {
            if *name == "NATS_URL" {
                *value = self.url.clone();
            }
        }
        // Redeliver what a killed process held soon, to keep tests short.
        env.push(("NATS_ACK_WAIT_MS", "3000".into()));
        env
    }

    async fn publish(&self, source: &str, ids: Range<usize>, users: usize) {
        let mut acks = Vec::with_capacity(1000);
        for i in ids {
            if acks.len() == 1000 {
                for ack in acks.drain(..) {
                    let ack: jetstream::context::PublishAckFuture = ack;
                    ack.await.expect("acknowledged by the stream");
                }
            }
            let (attributes, payload) = event(i, source, users);
            let mut headers = async_nats::HeaderMap::new();
            for (name, value) in &attributes {
                headers.insert(format!("ce-{name}").as_str(), value.as_str());
            }
            headers.insert("ce-datacontenttype", "application/json");
            acks.push(
                self.js
                    .publish_with_headers(self.names.subject.clone(), headers, payload.into())
                    .await
                    .expect("published"),
            );
        }
        for ack in acks {
            ack.await.expect("acknowledged by the stream");
        }
    }

    async fn publish_structured(&self, payload: &[u8]) {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Content-Type", "application/cloudevents+json");
        self.js
            .publish_with_headers(self.names.subject.clone(), headers, payload.to_vec().into())
            .await
            .expect("published")
            .await
            .expect("acknowledged");
    }

    async fn dead_letters(&self, n: usize) -> Vec<(String, Vec<u8>)> {
        let stream = self
            .js
            .get_stream(&self.names.dlq_stream)
            .await
            .expect("dead-letter stream exists");
        let consumer: jetstream::consumer::PullConsumer = stream
            .create_consumer(jetstream::consumer::pull::Config::default())
            .await
            .expect("reader");
        let mut messages = consumer.messages().await.expect("messages");
        let mut out = Vec::new();
        while out.len() < n {
            let message = tokio::time::timeout(WAIT, messages.next())
                .await
                .unwrap_or_else(|_| panic!("read {} of {n} dead letters", out.len()))
                .expect("message stream open")
                .expect("message")
                .message;
            let error = message
                .headers
                .as_ref()
                .and_then(|h| h.get("dlq-error"))
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default();
            out.push((error, message.payload.to_vec()));
        }
        out
    }
}

// ------------------------------------------------------------------- MQTT

pub struct Mqtt {
    names: MqttNames,
    /// Subscribed to the dead-letter topic from the start: MQTT keeps a
    /// message only for the sessions subscribed when it is published.
    dead_letters: Mutex<TestClient>,
    publisher: Mutex<TestClient>,
}

impl Broker for Mqtt {
    const TRANSPORT: &'static str = "mqtt";

    async fn new(tag: &str) -> Self {
        Mqtt::at(MQTT_PORT, tag).await
    }

    const SERVER: Kind = Kind::Mosquitto;

    async fn on(broker: &PrivateServer, tag: &str) -> Self {
        Mqtt::at(broker.port, tag).await
    }

    fn apply(&self, settings: &mut Settings) {
        self.names.apply(settings);
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        self.names.env()
    }

    async fn publish(&self, source: &str, ids: Range<usize>, users: usize) {
        let mut publisher = self.publisher.lock().await;
        let n = ids.len();
        for i in ids {
            let (attributes, payload) = event(i, source, users);
            let list: Vec<(&str, &str)> =
                attributes.iter().map(|(n, v)| (*n, v.as_str())).collect();
            publisher
                .send(&self.names.topic, binary_properties(&list), payload)
                .await;
        }
        publisher.expect_acks(n).await;
    }

    async fn publish_structured(&self, payload: &[u8]) {
        let properties = PublishProperties {
            content_type: Some("application/cloudevents+json".into()),
            ..Default::default()
        };
        let mut publisher = self.publisher.lock().await;
        publisher
            .send(&self.names.topic, properties, payload.to_vec())
            .await;
        publisher.expect_acks(1).await;
    }

    async fn dead_letters(&self, n: usize) -> Vec<(String, Vec<u8>)> {
        let mut client = self.dead_letters.lock().await;
        client
            .receive(n, WAIT)
            .await
            .iter()
            .map(|letter| {
                (
                    user_property(letter, "dlq-error").unwrap_or_default(),
                    letter.payload.to_vec(),
                )
            })
            .collect()
    }
}

impl Mqtt {
    async fn at(port: u16, tag: &str) -> Self {
        let mut names = MqttNames::new(tag);
        names.port = port;
        let dead_letters = TestClient::connect_to(port).await;
        dead_letters.subscribe(&names.dlq_topic).await;
        Mqtt {
            names,
            dead_letters: Mutex::new(dead_letters),
            publisher: Mutex::new(TestClient::connect_to(port).await),
        }
    }
}

// ------------------------------------------------------------------ tests

/// An audit service on `broker`, ready (`/readyz`: the broker answers and,
/// on MQTT, the subscription is made).
async fn spawn<B: Broker>(broker: &B) -> TestApp {
    let app = spawn_app_with(|s| broker.apply(s)).await;
    let ready = within(WAIT, || async { readyz(&app).await == Some(200) })
        .await
        .is_some();
    assert!(ready, "the audit service on {} is not ready", B::TRANSPORT);
    app
}

/// `/readyz`'s status; `None` when the request failed (a probe that
/// outlasts the server's request timeout, a pooled connection closed).
async fn readyz(app: &TestApp) -> Option<u16> {
    let url = format!("{}/readyz", app.address);
    reqwest::get(&url).await.ok().map(|r| r.status().as_u16())
}

async fn start_process<B: Broker>(broker: &B, db_url: &str, log: &Path) -> Service {
    let mut env = broker.env();
    env.push(("DATABASE_URL", db_url.to_owned()));
    let process = audit_process(&env, log.to_owned());
    let url = format!("http://127.0.0.1:{}/readyz", process.port);
    let ready = within(WAIT, || async {
        reqwest::get(&url).await.is_ok_and(|r| r.status() == 200)
    })
    .await
    .is_some();
    assert!(
        ready,
        "audit-service did not get ready:\n{}",
        process.logs()
    );
    process
}

async fn stored_ids(db: &Db, source: &str) -> Vec<String> {
    db.texts(&format!(
        "SELECT id FROM events WHERE source = '{source}' ORDER BY seq"
    ))
    .await
}

pub async fn an_invalid_message_is_dead_lettered_and_the_next_one_is_stored<B: Broker>() {
    let broker = B::new("dlq").await;
    let app = spawn(&broker).await;
    let source = unique("/conformance");
    broker.publish_structured(b"garbage").await;
    broker.publish(&source, 0..1, 1).await;
    let items = app
        .wait_for_events(&format!("source={source}"), 1, WAIT)
        .await;
    assert_eq!(items[0]["transport"], B::TRANSPORT);
    let letters = broker.dead_letters(1).await;
    let (error, payload) = &letters[0];
    assert!(error.contains("JSON"), "the reason: {error}");
    assert_eq!(
        payload, b"garbage",
        "the dead letter holds the message as sent"
    );
    app.stop().await;
}

pub async fn each_users_events_are_stored_in_the_order_published<B: Broker>() {
    const N: usize = 1000;
    let broker = B::new("order").await;
    let app = spawn(&broker).await;
    let source = unique("/order");
    broker.publish(&source, 0..N, 10).await;
    let db = Db::open(&app.database_url).await;
    let count_sql = format!("SELECT COUNT(*) FROM events WHERE source = '{source}'");
    let stored = || db.int(&count_sql);
    let done = within(WAIT, || async { stored().await >= N as i64 })
        .await
        .is_some();
    assert!(done, "stored {} of {N}", stored().await);
    let rows = db
        .texts(&format!(
            "SELECT subject || ' ' || id FROM events WHERE source = '{source}' ORDER BY seq"
        ))
        .await;
    let mut per_user: HashMap<String, Vec<usize>> = HashMap::new();
    for row in rows {
        let (subject, id) = row.split_once(' ').expect("subject and id");
        per_user
            .entry(subject.to_owned())
            .or_default()
            .push(id[1..].parse().expect("numbered id"));
    }
    assert_eq!(per_user.len(), 10);
    for (user, ids) in per_user {
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        assert_eq!(ids, sorted, "{user}'s events out of order");
    }
    app.stop().await;
}

pub async fn a_service_killed_mid_stream_loses_nothing_and_stores_nothing_twice<B: Broker>() {
    const N: usize = 10_000;
    let broker = B::new("kill").await;
    let dir = TempDir::new().unwrap();
    let db_url = test_kit::database::database_url(dir.path(), "audit.db").await;
    let mut first = start_process(&broker, &db_url, &dir.path().join("first.log")).await;
    let source = unique("/kill");
    let db = Db::open(&db_url).await;
    let count = || db.int("SELECT COUNT(*) FROM events");
    // Killed while the events are still being published.
    let publishing = broker.publish(&source, 0..N, 10);
    let killing = async {
        let started = within(WAIT, || async { count().await > 0 }).await.is_some();
        assert!(started, "nothing consumed:\n{}", first.logs());
        first.kill();
        count().await
    };
    let ((), at_kill) = tokio::join!(publishing, killing);
    assert!(
        at_kill < N as i64,
        "all {N} events were stored before the kill; the test proves nothing"
    );
    let mut second = start_process(&broker, &db_url, &dir.path().join("second.log")).await;
    let done = within(Duration::from_secs(120), || async {
        count().await >= N as i64
    })
    .await
    .is_some();
    assert!(
        done,
        "only {} of {N} stored after the restart:\n{}",
        count().await,
        second.logs()
    );
    let ids: BTreeSet<String> = stored_ids(&db, &source).await.into_iter().collect();
    let expected: BTreeSet<String> = (0..N).map(|i| format!("e{i}")).collect();
    assert_eq!(ids, expected, "the stored ids are exactly the sent ones");
    assert_eq!(count().await, N as i64, "no event stored twice");
    eprintln!("{}: killed after {at_kill} of {N} stored", B::TRANSPORT);
    assert!(
        second.terminate().await.unwrap().success(),
        "{}",
        second.logs()
    );
}

pub async fn two_services_share_the_work_and_store_each_event_once<B: Broker>() {
    const N: usize = 5000;
    let broker = B::new("share").await;
    let dir = TempDir::new().unwrap();
    let db_url = test_kit::database::database_url(dir.path(), "audit.db").await;
    let a = start_process(&broker, &db_url, &dir.path().join("a.log")).await;
    // The second replica needs its own MQTT session; Kafka and NATS name
    // none per process.
    let mut env_b = broker.env();
    for (name, value) in &mut env_b {
        if *name == "MQTT_CLIENT_ID" {
            value.push_str("-b");
        }
    }
    env_b.push(("DATABASE_URL", db_url.clone()));
    let b = audit_process(&env_b, dir.path().join("b.log"));
    let url = format!("http://127.0.0.1:{}/readyz", b.port);
    let ready = within(WAIT, || async {
        reqwest::get(&url).await.is_ok_and(|r| r.status() == 200)
    })
    .await
    .is_some();
    assert!(ready, "{}", b.logs());
    // Kafka shares the partitions once the group has settled with both.
    let settled = within(WAIT, || async {
        B::TRANSPORT != "kafka" || (has_partitions(&a) && has_partitions(&b))
    })
    .await
    .is_some();
    assert!(
        settled,
        "the group never settled:\n{}\n{}",
        a.logs(),
        b.logs()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let source = unique("/share");
    broker.publish(&source, 0..N, 50).await;
    let db = Db::open(&db_url).await;
    let count = || db.int("SELECT COUNT(*) FROM events");
    let done = within(Duration::from_secs(120), || async {
        count().await >= N as i64
    })
    .await
    .is_some();
    assert!(done, "stored {} of {N}", count().await);
    let ids: BTreeSet<String> = stored_ids(&db, &source).await.into_iter().collect();
    assert_eq!(ids.len(), N);
    assert_eq!(count().await, N as i64, "no event stored twice");
    let stored_by = |p: &Service| p.log_count("audit event stored");
    let logged = within(Duration::from_secs(10), || async {
        stored_by(&a) + stored_by(&b) == N
    })
    .await
    .is_some();
    let (by_a, by_b) = (stored_by(&a), stored_by(&b));
    assert!(logged, "log lines: {by_a} + {by_b} != {N}");
    assert!(
        by_a > 0 && by_b > 0,
        "one replica did all the work: {by_a} / {by_b}"
    );
    eprintln!(
        "{}: replica A stored {by_a}, replica B {by_b}",
        B::TRANSPORT
    );
}

pub async fn a_broker_restart_is_survived<B: Broker>() {
    let private = PrivateServer::start(B::SERVER);
    let broker = B::on(&private, "restart").await;
    let app = spawn(&broker).await;
    let source = unique("/restart");
    broker.publish(&source, 0..100, 10).await;
    app.wait_for_events(&format!("source={source}"), 100, WAIT)
        .await;

    private.stop_async().await;
    let noticed = within(WAIT, || async { readyz(&app).await == Some(503) })
        .await
        .is_some();
    assert!(noticed, "/readyz did not notice the broker was away");
    private.start_again_async().await;
    let back = within(WAIT, || async { readyz(&app).await == Some(200) })
        .await
        .is_some();
    assert!(back, "/readyz did not come back with the broker");
    broker.publish(&source, 100..200, 10).await;

    let db = Db::open(&app.database_url).await;
    let count_sql = format!("SELECT COUNT(*) FROM events WHERE source = '{source}'");
    let done = within(WAIT, || async { db.int(&count_sql).await >= 200 })
        .await
        .is_some();
    assert!(
        done,
        "stored {} of 200 after the restart",
        db.int(&count_sql).await
    );
    let ids: BTreeSet<String> = stored_ids(&db, &source).await.into_iter().collect();
    let expected: BTreeSet<String> = (0..200).map(|i| format!("e{i}")).collect();
    assert_eq!(ids, expected);
    assert_eq!(db.int(&count_sql).await, 200, "no event stored twice");
    app.stop().await;
}

/// True when the last assignment the process logged is not empty.
fn has_partitions(process: &Service) -> bool {
    process
        .logs()
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

/// The suite, for one transport.
macro_rules! conformance {
    ($transport:ident, $broker:ty) => {
        mod $transport {
            use super::*;

            #[tokio::test]
            async fn an_invalid_message_is_dead_lettered_and_the_next_one_is_stored() {
                super::an_invalid_message_is_dead_lettered_and_the_next_one_is_stored::<$broker>()
                    .await;
            }

            #[tokio::test]
            async fn each_users_events_are_stored_in_the_order_published() {
                super::each_users_events_are_stored_in_the_order_published::<$broker>().await;
            }

            #[tokio::test]
            async fn a_service_killed_mid_stream_loses_nothing_and_stores_nothing_twice() {
                super::a_service_killed_mid_stream_loses_nothing_and_stores_nothing_twice::<$broker>()
                    .await;
            }

            #[tokio::test]
            async fn two_services_share_the_work_and_store_each_event_once() {
                super::two_services_share_the_work_and_store_each_event_once::<$broker>().await;
            }

            #[tokio::test]
            async fn a_broker_restart_is_survived() {
                super::a_broker_restart_is_survived::<$broker>().await;
            }
        }
    };
}

conformance!(kafka, Kafka);
conformance!(nats, Nats);
conformance!(mqtt, Mqtt);
