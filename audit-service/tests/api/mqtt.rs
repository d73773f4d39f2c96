//! MQTT 5 ingest against the shared Mosquitto on 127.0.0.1:1883
//! (`scripts/mosquitto.sh start`): binary and structured messages (MQTT 5
//! and 3.1.1) are stored, anything else goes to the dead-letter topic with
//! the reason; a session survives a restart of the service; the readiness
//! probe says when the broker is away. What every broker transport does
//! alike is in `conformance`.

use crate::helpers::{spawn_app_with, unique, within, TestApp};
use audit_service::config::{ConsumerSettings, MqttSettings, Settings};
use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason, Publish, PublishProperties};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use serde_json::json;
use service_kit::db::Kind;
use std::time::Duration;
use test_kit::database::{Db, Session};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub const MQTT_HOST: &str = "127.0.0.1";
pub const MQTT_PORT: u16 = 1883;
const WAIT: Duration = Duration::from_secs(60);

/// A test's own topic, group, dead-letter topic and client id on the
/// shared broker.
#[derive(Clone)]
pub struct MqttNames {
    /// The broker's port on 127.0.0.1: the shared one, or a test's own.
    pub port: u16,
    pub topic: String,
    pub group: String,
    pub dlq_topic: String,
    pub client_id: String,
}

impl MqttNames {
    pub fn new(tag: &str) -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        MqttNames {
            port: MQTT_PORT,
            topic: format!("t/{tag}/{id}"),
            group: format!("g{id}"),
            dlq_topic: format!("dlq/{tag}/{id}"),
            client_id: format!("audit-{tag}-{id}"),
        }
    }

    /// The service's environment for these names.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("EVENT_TRANSPORT", "mqtt".into()),
            ("MQTT_URL", format!("mqtt://{MQTT_HOST}:{}", self.port)),
            ("MQTT_TOPIC", self.topic.clone()),
            ("MQTT_GROUP", self.group.clone()),
            ("MQTT_DLQ_TOPIC", self.dlq_topic.clone()),
            ("MQTT_CLIENT_ID", self.client_id.clone()),
        ]
    }

    /// In-process settings for these names.
    pub fn apply(&self, settings: &mut Settings) {
        let mut mqtt = MqttSettings::default();
        mqtt.common.host = MQTT_HOST.into();
        mqtt.common.port = self.port;
        mqtt.common.url = format!("mqtt://{MQTT_HOST}:{}", self.port);
        mqtt.common.topic = self.topic.clone();
        mqtt.common.client_id = self.client_id.clone();
        mqtt.group = self.group.clone();
        mqtt.dlq_topic = self.dlq_topic.clone();
        settings.consumer = ConsumerSettings::Mqtt(mqtt);
    }
}

/// A test's MQTT client: publishes at QoS 1 and waits for each PUBACK;
/// receives what it subscribes to.
pub struct TestClient {
    pub client: AsyncClient,
    acks: mpsc::UnboundedReceiver<PubAckReason>,
    pub messages: mpsc::UnboundedReceiver<Publish>,
    driver: JoinHandle<()>,
}

impl TestClient {
    /// Connects with MQTT 5, or 3.1.1 when `v311` (then with rumqttc's
    /// 3.1.1 client, which has no properties). Fails the test loudly when
    /// no broker answers: MQTT tests must not pass by skipping.
    pub async fn connect() -> Self {
        Self::connect_to(MQTT_PORT).await
    }

    /// As `connect`, to the broker on `port`.
    pub async fn connect_to(port: u16) -> Self {
        let id = format!("test-{}", uuid::Uuid::new_v4().simple());
        let mut options = MqttOptions::new(id, MQTT_HOST, port);
        options.set_max_packet_size(Some(4 * 1024 * 1024));
        let (client, mut eventloop) = AsyncClient::new(options, 1000);
        let connected = tokio::time::timeout(Duration::from_secs(5), eventloop.poll()).await;
        match connected {
            Ok(Ok(_)) => {}
            other => panic!(
                "no MQTT broker on {MQTT_HOST}:{port} ({other:?}); start one with `scripts/mosquitto.sh start` (make test does)"
            ),
        }
        let (ack_tx, acks) = mpsc::unbounded_channel();
        let (message_tx, messages) = mpsc::unbounded_channel();
        let driver = tokio::spawn(drive(eventloop, ack_tx, message_tx));
        TestClient {
            client,
            acks,
            messages,
            driver,
        }
    }

    /// Subscribes at QoS 1 and waits a moment for the SUBACK.
    pub async fn subscribe(&self, filter: &str) {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .expect("subscribe sent");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    /// Publishes one message at QoS 1 and returns the PUBACK's reason.
    pub async fn publish(
        &mut self,
        topic: &str,
        properties: PublishProperties,
        payload: impl Into<Bytes>,
    ) -> PubAckReason {
        self.send(topic, properties, payload).await;
        tokio::time::timeout(Duration::from_secs(10), self.acks.recv())
            .await
            .expect("PUBACK within 10 s")
            .expect("connection open")
    }

    /// Hands one message over at QoS 1, without waiting for its PUBACK.
    pub async fn send(
        &self,
        topic: &str,
        properties: PublishProperties,
        payload: impl Into<Bytes>,
    ) {
        self.client
            .publish_with_properties(topic, QoS::AtLeastOnce, false, payload.into(), properties)
            .await
            .expect("publish handed over");
    }

    /// Publishes `n` binary-mode events `e0`..`e{n-1}` of `source` at QoS 1
    /// and waits for every PUBACK.
    pub async fn send_events(&mut self, topic: &str, source: &str, n: usize) {
        for i in 0..n {
            let properties = binary_properties(&[
                ("specversion", "1.0"),
                ("id", &format!("e{i}")),
                ("source", source),
                ("type", "t"),
            ]);
            self.send(topic, properties, "{}").await;
        }
        self.expect_acks(n).await;
    }

    /// Waits for the PUBACKs of `n` messages sent, each a success (an
    /// audit service subscribes).
    pub async fn expect_acks(&mut self, n: usize) {
        for _ in 0..n {
            let reason = tokio::time::timeout(Duration::from_secs(30), self.acks.recv())
                .await
                .expect("PUBACK within 30 s")
                .expect("connection open");
            assert_eq!(
                reason,
                PubAckReason::Success,
                "the audit service subscribes"
            );
        }
    }

    /// The next `n` messages received, within `timeout`.
    pub async fn receive(&mut self, n: usize, timeout: Duration) -> Vec<Publish> {
        let mut received = Vec::new();
        let deadline = tokio::time::Instant::now() + timeout;
        while received.len() < n {
            match tokio::time::timeout_at(deadline, self.messages.recv()).await {
                Ok(Some(message)) => received.push(message),
                _ => break,
            }
        }
        received
    }
}

impl Drop for TestClient {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

async fn drive(
    mut eventloop: EventLoop,
    acks: mpsc::UnboundedSender<PubAckReason>,
    messages: mpsc::UnboundedSender<Publish>,
) {
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                let _ = acks.send(ack.reason);
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let _ = messages.send(publish);
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Binary-mode properties: `datacontenttype` as the Content Type, the
/// other attributes as user properties.
pub fn binary_properties(attributes: &[(&str, &str)]) -> PublishProperties {
    PublishProperties {
        content_type: Some("application/json".into()),
        user_properties: attributes
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect(),
        ..Default::default()
    }
}

pub fn user_property(message: &Publish, name: &str) -> Option<String> {
    message
        .properties
        .as_ref()?
        .user_properties
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
}

/// An audit service on `names`, subscribed (its `/readyz` says so).
pub async fn spawn_mqtt_app(names: &MqttNames) -> TestApp {
    spawn_mqtt_app_with(names, |_| {}).await
}

/// As `spawn_mqtt_app`, with `customize` applied to its settings.
pub async fn spawn_mqtt_app_with(
    names: &MqttNames,
    customize: impl FnOnce(&mut Settings),
) -> TestApp {
    TestClient::connect().await;
    let names = names.clone();
    let app = spawn_app_with(move |s| {
        names.apply(s);
        customize(s);
    })
    .await;
    let ready = within(Duration::from_secs(30), || async {
        app.get("/readyz").await.status() == 200
    })
    .await
    .is_some();
    assert!(ready, "the audit service did not subscribe");
    app
}

#[tokio::test]
async fn binary_structured_and_mqtt_3_1_1_messages_are_stored_as_mqtt() {
    let names = MqttNames::new("modes");
    let app = spawn_mqtt_app(&names).await;
    let mut client = TestClient::connect().await;
    let source = unique("/mqtt");
    let binary = binary_properties(&[
        ("specversion", "1.0"),
        ("id", "m1"),
        ("source", &source),
        ("type", "user.storeUser"),
        ("subject", "Grüße du"),
    ]);
    let reason = client
        .publish(&names.topic, binary, r#"{"name":"alice"}"#)
        .await;
    assert_eq!(reason, PubAckReason::Success);
    let structured =
        json!({"specversion": "1.0", "id": "m2", "source": source, "type": "t", "data": {"n": 2}});
    let properties = PublishProperties {
        content_type: Some("application/cloudevents+json".into()),
        ..Default::default()
    };
    client
        .publish(&names.topic, properties, structured.to_string())
        .await;
    // MQTT 3.1.1 has no properties: structured mode, the JSON format implied.
    let mut options = rumqttc::MqttOptions::new(unique("v311"), MQTT_HOST, MQTT_PORT);
    options.set_max_packet_size(1024 * 1024, 1024 * 1024);
    let (v311, mut eventloop) = rumqttc::AsyncClient::new(options, 10);
    let bare = json!({"specversion": "0.3", "id": "m3", "source": source, "type": "t"});
    v311.publish(
        &names.topic,
        rumqttc::QoS::AtLeastOnce,
        false,
        bare.to_string(),
    )
    .await
    .unwrap();
    let acked = tokio::time::timeout(Duration::from_secs(10), async {
        while !matches!(
            eventloop.poll().await,
            Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)))
        ) {}
    })
    .await;
    assert!(acked.is_ok(), "the 3.1.1 publish was acknowledged");

    let items = app
        .wait_for_events(&format!("source={source}"), 3, WAIT)
        .await;
    assert!(items.iter().all(|i| i["transport"] == "mqtt"), "{items:?}");
    assert_eq!(items[0]["event"]["id"], "m1");
    assert_eq!(items[0]["event"]["subject"], "Grüße du");
    assert_eq!(items[0]["event"]["data"], json!({"name": "alice"}));
    let event = |n: usize| -> cloudevents::Event {
        serde_json::from_value(items[n]["event"].clone()).unwrap()
    };
    assert_eq!(event(1), serde_json::from_value(structured).unwrap());
    assert_eq!(event(2), serde_json::from_value(bare).unwrap());
    app.stop().await;
}

#[tokio::test]
async fn invalid_attributes_are_dead_lettered_as_on_every_transport() {
    let names = MqttNames::new("checks");
    let app = spawn_mqtt_app(&names).await;
    let mut dlq = TestClient::connect().await;
    dlq.subscribe(&names.dlq_topic).await;
    let mut client = TestClient::connect().await;
    let source = unique("/checks");
    let attributes = |name: &'static str, value: String| {
        let mut attributes = vec![
            ("specversion", "1.0".to_owned()),
            ("id", "bad".to_owned()),
            ("source", source.clone()),
            ("type", "t".to_owned()),
        ];
        attributes.retain(|(n, _)| *n != name);
        attributes.push((name, value));
        let list: Vec<(&str, &str)> = attributes.iter().map(|(n, v)| (*n, v.as_str())).collect();
        binary_properties(&list)
    };
    let structured = PublishProperties {
        content_type: Some("application/cloudevents+json".into()),
        ..Default::default()
    };
    // Mosquitto refuses control characters in MQTT strings (user
    // properties) itself; in a JSON payload they arrive escaped.
    let control = json!({"specversion": "1.0", "id": "a\u{7}b", "source": source, "type": "t"});
    let cases = [
        (structured, control.to_string(), "U+0007"),
        (
            attributes("subject", "x".repeat(3000)),
            "{}".to_owned(),
            "subject",
        ),
        (attributes("ext", "y".repeat(5000)), "{}".to_owned(), "ext"),
    ];
    for (properties, payload, _) in &cases {
        let reason = client
            .publish(&names.topic, properties.clone(), payload.clone())
            .await;
        assert_eq!(reason, PubAckReason::Success);
    }
    let letters = dlq.receive(cases.len(), WAIT).await;
    assert_eq!(letters.len(), cases.len());
    for (letter, (_, payload, says)) in letters.iter().zip(&cases) {
        let error = user_property(letter, "dlq-error").unwrap();
        assert!(error.contains(says), "{says}: {error}");
        assert_eq!(letter.payload, payload.as_bytes(), "the payload as it came");
        assert!(user_property(letter, "dlq-origin")
            .unwrap()
            .starts_with(&names.topic));
    }
    assert!(app.events(&format!("source={source}")).await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn a_message_larger_than_rumqttc_s_default_limit_is_stored() {
    let names = MqttNames::new("large");
    let app = spawn_mqtt_app(&names).await;
    let mut client = TestClient::connect().await;
    let source = unique("/large");
    let data = "z".repeat(200 * 1024);
    let event =
        json!({"specversion": "1.0", "id": "big", "source": source, "type": "t", "data": data});
    let properties = PublishProperties {
        content_type: Some("application/cloudevents+json".into()),
        ..Default::default()
    };
    client
        .publish(&names.topic, properties, event.to_string())
        .await;
    let items = app
        .wait_for_events(&format!("source={source}"), 1, WAIT)
        .await;
    assert_eq!(items[0]["event"]["data"], json!(data));
    app.stop().await;
}

/// A session's backlog a hundred times the hand-over (Receive Maximum, 30
/// here), which Mosquitto sends past: the event loop waits on the
/// hand-over while acknowledgements reach it through their own task (when
/// the pipeline itself waited to acknowledge, the two waited on each other,
/// and the broker dropped the silent connection).
#[tokio::test]
async fn a_backlog_queued_for_the_session_is_drained_whole() {
    const N: usize = 3000;
    let names = MqttNames::new("backlog");
    let small_batches = |s: &mut Settings| s.batch.max_events = 10;
    let first = {
        let names = names.clone();
        spawn_mqtt_app_with(&names, small_batches).await
    };
    // Stopped cleanly: the session and its subscription stay.
    first.stop().await;
    let mut client = TestClient::connect().await;
    let source = unique("/backlog");
    client.send_events(&names.topic, &source, N).await;

    let second = spawn_mqtt_app_with(&names, small_batches).await;
    let db = Db::open(&second.database_url).await;
    let stored = within(WAIT, || async {
        db.int("SELECT COUNT(*) FROM events").await >= N as i64
    })
    .await
    .is_some();
    assert!(
        stored,
        "stored {} of {N}",
        db.int("SELECT COUNT(*) FROM events").await
    );
    second.stop().await;
}

/// The store refusing writes for longer than its busy timeout (10 s) while
/// events arrive: the pipeline retries the batch in hand, the broker holds
/// the rest, and once the store is back every event is stored, each once.
#[tokio::test]
async fn a_store_refusing_writes_for_a_while_loses_nothing() {
    const N: usize = 300;
    let names = MqttNames::new("stall");
    let app = spawn_mqtt_app_with(&names, |s| s.batch.max_events = 10).await;
    let db = Db::open(&app.database_url).await;
    let writes_held = hold_writes(&app.database_url).await;
    let mut client = TestClient::connect().await;
    let source = unique("/stall");
    client.send_events(&names.topic, &source, N).await;
    tokio::time::sleep(Duration::from_secs(15)).await;
    let query = format!("SELECT COUNT(DISTINCT id) FROM events WHERE source = '{source}'");
    assert_eq!(db.int(&query).await, 0, "stored while writes were held");
    writes_held.close().await;

    let stored = within(WAIT, || async { db.int(&query).await >= N as i64 })
        .await
        .is_some();
    assert!(stored, "stored {} of {N}", db.int(&query).await);
    let rows = db
        .int(&format!(
            "SELECT COUNT(*) FROM events WHERE source = '{source}'"
        ))
        .await;
    assert_eq!(rows, N as i64, "each event stored once");
    app.stop().await;
}

/// Keeps every other writer out of the store until closed: SQLite's write
/// lock, or an EXCLUSIVE lock on PostgreSQL's events table (reads go on).
async fn hold_writes(database_url: &str) -> Session {
    let mut session = Session::open(database_url).await;
    match session.kind() {
        Kind::Sqlite => session.run("BEGIN EXCLUSIVE").await,
        Kind::Postgres => {
            session.run("BEGIN").await;
            session.run("LOCK TABLE events IN EXCLUSIVE MODE").await;
        }
    }
    session
}

#[tokio::test]
async fn readiness_on_mqtt_fails_without_a_broker_and_the_service_still_serves() {
    let names = MqttNames::new("away");
    let app = spawn_app_with(move |s| {
        names.apply(s);
        if let ConsumerSettings::Mqtt(mqtt) = &mut s.consumer {
            mqtt.common.port = 9;
            mqtt.common.url = "mqtt://127.0.0.1:9".into();
        }
    })
    .await;
    let response = app.get("/readyz").await;
    assert_eq!(response.status(), 503);
    let body = response.text().await.unwrap();
    assert!(body.contains("MQTT") || body.contains("mqtt"), "{body}");
    assert_eq!(app.get("/healthz").await.status(), 200);
    app.stop().await;
}
