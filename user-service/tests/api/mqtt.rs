//! Publishing to the shared Mosquitto broker on 127.0.0.1:1883
//! (`scripts/mosquitto.sh start`), and to private ones on free ports for
//! the outage test. These tests fail, loudly, when the broker does not
//! answer.

use crate::helpers::{
    assert_unready_but_serving, data_json, eventually, free_port, spawn_app_with,
    wait_until_all_delivered, RenameLoad,
};
use brokers::mqtt::MqttConfig;
use cloudevents::{AttributesReader, Event};
use cloudevents_wire::binding::mqtt::MqttMessage;
use rumqttc::v5::mqttbytes::v5::{Packet, Publish};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event as LoopEvent, MqttOptions};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use test_kit::database::Db;
use test_kit::servers::{Kind, PrivateServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;
use user_service::config::MqttSettings;
use user_service::config::{ContentMode, PublishSettings};

const SHARED_PORT: u16 = 1883;

/// A topic of this test's own.
fn topic() -> String {
    format!("test/{}", uuid::Uuid::new_v4().simple())
}

fn settings(port: u16, topic: &str, mode: ContentMode) -> PublishSettings {
    settings_from(&[
        ("MQTT_URL", &format!("mqtt://127.0.0.1:{port}")),
        ("MQTT_TOPIC", topic),
        ("MQTT_CONTENT_MODE", &format!("{mode:?}")),
    ])
}

/// The settings `vars` make, as the service reads them.
fn settings_from(vars: &[(&str, &str)]) -> PublishSettings {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let mode = vars
        .iter()
        .find(|(k, _)| k == "MQTT_CONTENT_MODE")
        .map_or(ContentMode::Binary, |(_, v)| v.parse().unwrap());
    PublishSettings::Mqtt(MqttSettings {
        config: MqttConfig::from_vars("user-service", vars).unwrap(),
        mode,
        timeout: Duration::from_secs(5),
    })
}

/// A QoS 1 subscriber to one topic, its messages in a channel. A
/// persistent one (clean start off, a session expiry) has the broker
/// queue messages for it while either of them is away.
struct Subscriber {
    messages: mpsc::UnboundedReceiver<Publish>,
    _task: AbortOnDropHandle<()>,
}

impl Subscriber {
    async fn start(port: u16, topic: &str, persistent: bool) -> Self {
        let id = format!(
            "test-sub-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(5));
        if persistent {
            options
                .set_clean_start(false)
                .set_session_expiry_interval(Some(600));
        }
        let (client, mut eventloop) = AsyncClient::new(options, 100);
        client.subscribe(topic, QoS::AtLeastOnce).await.unwrap();
        let (sender, messages) = mpsc::unbounded_channel();
        let (subscribed, suback) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let _client = client;
            let mut subscribed = Some(subscribed);
            loop {
                match eventloop.poll().await {
                    Ok(LoopEvent::Incoming(Packet::Publish(publish))) => {
                        let _ = sender.send(publish);
                    }
                    Ok(LoopEvent::Incoming(Packet::SubAck(_))) => {
                        if let Some(subscribed) = subscribed.take() {
                            let _ = subscribed.send(());
                        }
                    }
                    Ok(_) => {}
                    // The broker is away (the outage test): the next poll
                    // reconnects, resuming a persistent session.
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        if tokio::time::timeout(Duration::from_secs(10), suback)
            .await
            .is_err()
        {
            panic!(
                "no MQTT broker on 127.0.0.1:{port}: start one with `scripts/mosquitto.sh start`"
            );
        }
        Subscriber {
            messages,
            _task: AbortOnDropHandle::new(task),
        }
    }

    async fn next(&mut self) -> Publish {
        tokio::time::timeout(Duration::from_secs(30), self.messages.recv())
            .await
            .expect("a message within 30 s")
            .expect("the subscriber runs")
    }

    /// Messages until `n` distinct events have arrived (a copy sent again
    /// after a broken connection is dropped), in arrival order.
    async fn events(&mut self, n: usize) -> Vec<Event> {
        let mut events: Vec<Event> = Vec::new();
        while events.len() < n {
            let event = wire(&self.next().await).to_event().unwrap();
            if !events.iter().any(|e| e.id() == event.id()) {
                events.push(event);
            }
        }
        events
    }
}

/// The parts of a PUBLISH the CloudEvents binding reads.
fn wire(publish: &Publish) -> MqttMessage {
    let properties = publish.properties.clone().unwrap_or_default();
    MqttMessage {
        content_type: properties.content_type,
        user_properties: properties.user_properties,
        payload: publish.payload.to_vec(),
    }
}

async fn stored_events(db: &Db) -> Vec<Event> {
    db.texts("SELECT event_json FROM outbox ORDER BY seq")
        .await
        .iter()
        .map(|json| serde_json::from_str(json).unwrap())
        .collect()
}

/// Generous: a broker restart and reconnection on a loaded machine.
const DELIVERED_WITHIN: Duration = Duration::from_secs(60);

fn names(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| data_json(e)["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn one_users_events_arrive_in_order_in_binary_mode_as_the_binding_says() {
    let topic = topic();
    let mut subscriber = Subscriber::start(SHARED_PORT, &topic, false).await;
    let app = spawn_app_with("http://unused/", |s| {
        s.publish = settings(SHARED_PORT, &topic, ContentMode::Binary)
    })
    .await;

    let id = app.create_user("Zoë \"Q\" 100%").await;
    for round in 1..5 {
        let body = serde_json::json!({"name": format!("v{round}")});
        assert_eq!(app.put_user(&id, body).await.status(), 200);
    }
    assert_eq!(app.delete_user(&id).await.status(), 204);

    let first = subscriber.next().await;
    assert_eq!(first.qos, QoS::AtLeastOnce);
    assert!(!first.retain);
    let message = wire(&first);
    // datacontenttype is the MQTT 5 Content Type; every attribute is a user
    // property under its own name, unprefixed, its value as is.
    assert_eq!(message.content_type.as_deref(), Some("application/json"));
    assert_eq!(message.user_property("specversion"), Some("1.0"));
    assert_eq!(message.user_property("type"), Some("user.storeUser"));
    assert_eq!(message.user_property("source"), Some("/user-service"));
    assert_eq!(message.user_property("subject"), Some(id.as_str()));
    assert!(message
        .user_property("time")
        .is_some_and(|t| t.ends_with('Z')));
    assert!(
        message
            .user_properties
            .iter()
            .all(|(name, _)| !name.starts_with("ce-") && !name.starts_with("ce_")),
        "{:?}",
        message.user_properties
    );
    let data: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(
        data,
        serde_json::json!({"id": id, "name": "Zoë \"Q\" 100%"})
    );
    assert!(!String::from_utf8_lossy(&message.payload).contains("12345"));

    let mut events = vec![message.to_event().unwrap()];
    events.extend(subscriber.events(5).await);
    assert_eq!(
        names(&events),
        ["Zoë \"Q\" 100%", "v1", "v2", "v3", "v4", "v4"]
    );
    assert_eq!(events[5].ty(), "user.deleteUser");
    // What arrived is what the outbox holds, in its order.
    let db = Db::open(&app.database_url).await;
    wait_until_all_delivered(&db, DELIVERED_WITHIN).await;
    assert_eq!(events, stored_events(&db).await);
    assert_eq!(app.get("/readyz").await.status(), 200);
}

#[tokio::test]
async fn structured_mode_sends_the_json_event_with_its_content_type() {
    let topic = topic();
    let mut subscriber = Subscriber::start(SHARED_PORT, &topic, false).await;
    let app = spawn_app_with("http://unused/", |s| {
        s.publish = settings(SHARED_PORT, &topic, ContentMode::Structured)
    })
    .await;
    let id = app.create_user("structured").await;

    let message = wire(&subscriber.next().await);
    assert_eq!(
        message.content_type.as_deref(),
        Some("application/cloudevents+json")
    );
    assert!(message.user_properties.is_empty());
    // The payload alone is the event: what an MQTT 3.1.1 client gets.
    let event: Event = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(event.subject(), Some(id.as_str()));
    let db = Db::open(&app.database_url).await;
    wait_until_all_delivered(&db, DELIVERED_WITHIN).await;
    assert_eq!(vec![event], stored_events(&db).await);
}

/// The broker drops a message nobody subscribes to and says so in its
/// PUBACK ("no matching subscribers"): the event stays in the outbox and
/// goes once something subscribes.
#[tokio::test]
async fn an_event_waits_in_the_outbox_until_the_topic_has_a_subscriber() {
    let topic = topic();
    let app = spawn_app_with("http://unused/", |s| {
        s.publish = settings(SHARED_PORT, &topic, ContentMode::Binary)
    })
    .await;
    let db = Db::open(&app.database_url).await;
    let id = app.create_user("early").await;
    let reason = eventually("a refused attempt", Duration::from_secs(30), || async {
        // BIGINT on PostgreSQL as on SQLite.
        let attempts = db.int("SELECT CAST(attempts AS BIGINT) FROM outbox").await;
        let reason = db.text("SELECT coalesce(last_error, '') FROM outbox").await;
        (attempts > 0).then_some(reason)
    })
    .await;
    assert!(reason.contains("no matching subscribers"), "{reason}");
    assert_eq!(
        db.text("SELECT status FROM outbox").await,
        "pending",
        "not delivered"
    );

    let mut subscriber = Subscriber::start(SHARED_PORT, &topic, false).await;
    let event = subscriber.events(1).await.remove(0);
    assert_eq!(event.subject(), Some(id.as_str()));
    wait_until_all_delivered(&db, DELIVERED_WITHIN).await;
}

/// Between the client and the broker: passes everything, but holds what
/// the broker sends back (its PUBACKs) while `hold` is set.
struct AckGate {
    port: u16,
    hold: Arc<AtomicBool>,
    _task: AbortOnDropHandle<()>,
}

impl AckGate {
    async fn start(broker: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hold = Arc::new(AtomicBool::new(false));
        let held = hold.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", broker)).await else {
                    continue;
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                });
                let held = held.clone();
                tokio::spawn(async move {
                    let mut buffer = vec![0u8; 64 * 1024];
                    while let Ok(n) = server_read.read(&mut buffer).await {
                        if n == 0 {
                            return;
                        }
                        while held.load(Ordering::Acquire) {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                        if client_write.write_all(&buffer[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        AckGate {
            port,
            hold,
            _task: AbortOnDropHandle::new(task),
        }
    }
}

#[tokio::test]
async fn a_row_is_not_delivered_before_its_puback() {
    let topic = topic();
    let gate = AckGate::start(SHARED_PORT).await;
    let mut subscriber = Subscriber::start(SHARED_PORT, &topic, false).await;
    let app = spawn_app_with("http://unused/", |s| {
        s.publish = settings(gate.port, &topic, ContentMode::Binary)
    })
    .await;
    eventually("connected", Duration::from_secs(30), || async {
        (app.get("/readyz").await.status() == 200).then_some(())
    })
    .await;

    gate.hold.store(true, Ordering::Release);
    let id = app.create_user("held").await;
    // The broker has it: the subscriber got it.
    let event = subscriber.events(1).await.remove(0);
    assert_eq!(event.subject(), Some(id.as_str()));
    // Without its PUBACK, the row stays pending (watched for a second,
    // well within the 5 s publish timeout and the 15 s keep-alive).
    let db = Db::open(&app.database_url).await;
    for _ in 0..10 {
        assert_eq!(db.text("SELECT status FROM outbox").await, "pending");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gate.hold.store(false, Ordering::Release);
    wait_until_all_delivered(&db, DELIVERED_WITHIN).await;
}

#[tokio::test]
async fn a_broker_stopped_and_restarted_loses_nothing_and_keeps_each_users_order() {
    let broker = PrivateServer::start(Kind::Mosquitto);
    let port = broker.port;
    let topic = topic();
    // Persistent: the broker keeps its subscription and queue across the
    // restart, as it will for the audit service.
    let mut subscriber = Subscriber::start(port, &topic, true).await;
    let app = spawn_app_with("http://unused/", |s| {
        s.publish = settings(port, &topic, ContentMode::Binary)
    })
    .await;
    let db = Db::open(&app.database_url).await;

    let a = app.create_user("a0").await;
    let b = app.create_user("b0").await;
    let before = subscriber.events(2).await;
    wait_until_all_delivered(&db, DELIVERED_WITHIN).await;

    broker.stop_async().await;
    eventually(
        "/readyz says the broker is away",
        Duration::from_secs(30),
        || async { (app.get("/readyz").await.status() == 503).then_some(()) },
    )
    .await;
    // Users keep being served while the broker is away.
    for (id, name) in [(&a, "a1"), (&b, "b1"), (&a, "a2")] {
        let body = serde_json::json!({"name": name});
        assert_eq!(app.put_user(id, body).await.status(), 200);
    }
    let c = app.create_user("c0").await;
    assert!(
        db.int("SELECT count(*) FROM outbox WHERE status = 'pending'")
            .await
            >= 4
    );

    broker.start_again_async().await;
    let after = subscriber.events(4).await;
    wait_until_all_delivered(&db, DELIVERED_WITHIN).await;

    let mut per_user: HashMap<String, Vec<String>> = HashMap::new();
    for (event, name) in before
        .iter()
        .chain(&after)
        .zip(names(&before).into_iter().chain(names(&after)))
    {
        per_user
            .entry(event.subject().unwrap().to_owned())
            .or_default()
            .push(name);
    }
    assert_eq!(per_user[&a], ["a0", "a1", "a2"]);
    assert_eq!(per_user[&b], ["b0", "b1"]);
    assert_eq!(per_user[&c], ["c0"]);
    assert_eq!(app.get("/readyz").await.status(), 200);
}

/// The PUBACK bookkeeping under load: renames of every user at once, many
/// events in flight, while the broker is stopped and started under them.
/// Each user's events arrive in order, counting the first copy of each
/// (the one the audit store keeps), and none is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_in_flight_keep_each_users_order_across_a_broker_restart() {
    let broker = PrivateServer::start(Kind::Mosquitto);
    let port = broker.port;
    let topic = topic();
    let mut subscriber = Subscriber::start(port, &topic, true).await;
    let app = Arc::new(
        spawn_app_with("http://unused/", |s| {
            s.publish = settings(port, &topic, ContentMode::Binary)
        })
        .await,
    );
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
    assert!(pending_in_outage > 0, "events waited across the restart");

    let events = subscriber.events(total).await;
    wait_until_all_delivered(&db, DELIVERED_WITHIN).await;
    let mut per_user: HashMap<String, Vec<String>> = HashMap::new();
    for (event, name) in events.iter().zip(names(&events)) {
        per_user
            .entry(event.subject().unwrap().to_owned())
            .or_default()
            .push(name);
    }
    for (u, id) in ids.iter().enumerate() {
        assert_eq!(per_user[id], expected[u], "user {u}, in arrival order");
    }
}

/// `mqtts://` with `MQTT_CA_FILE` for a broker whose certificate a
/// private CA signed; without the CA file the broker is not trusted.
#[tokio::test]
async fn over_mqtts_events_arrive_and_a_broker_with_an_untrusted_certificate_is_not_ready() {
    let ca = test_kit::ca::test_ca();
    let tls_port = free_port();
    let tls_port_text = tls_port.to_string();
    let broker = PrivateServer::start_with(
        Kind::Mosquitto,
        &[
            ("MQTT_TLS_PORT", &tls_port_text),
            ("MQTT_TLS_CERT_FILE", ca.files.cert.to_str().unwrap()),
            ("MQTT_TLS_KEY_FILE", ca.files.key.to_str().unwrap()),
        ],
    );
    let topic = topic();
    let url = format!("mqtts://localhost:{tls_port}");
    let mut subscriber = Subscriber::start(broker.port, &topic, false).await;
    let app = spawn_app_with("http://unused/", |s| {
        s.publish = settings_from(&[
            ("MQTT_URL", &url),
            ("MQTT_TOPIC", &topic),
            ("MQTT_CA_FILE", ca.ca.to_str().unwrap()),
        ])
    })
    .await;
    let id = app.create_user("over tls").await;
    let event = subscriber.events(1).await.remove(0);
    assert_eq!(event.subject(), Some(id.as_str()));
    wait_until_all_delivered(&app.db().await, DELIVERED_WITHIN).await;
    assert_eq!(app.get("/readyz").await.status(), 200);

    let untrusting = spawn_app_with("http://unused/", |s| {
        s.publish = settings_from(&[("MQTT_URL", &url), ("MQTT_TOPIC", &topic)])
    })
    .await;
    let detail = eventually(
        "a TLS failure on /readyz",
        Duration::from_secs(30),
        || async {
            let response = untrusting.get("/readyz").await;
            assert_eq!(response.status(), 503);
            let body = response.text().await.unwrap();
            body.contains("certificate").then_some(body)
        },
    )
    .await;
    assert!(detail.contains(&url), "{detail}");
}

/// `MQTT_USERNAME` and `MQTT_PASSWORD` are what the broker checks: with
/// them the service connects; with a wrong password it is not ready, and
/// `/readyz` says the broker refused it, without the password.
#[tokio::test]
async fn credentials_from_the_environment_are_what_the_broker_checks() {
    let dir = tempfile::tempdir().unwrap();
    let passwords = dir.path().join("passwd");
    let made = std::process::Command::new("mosquitto_passwd")
        .args(["-c", "-b"])
        .arg(&passwords)
        .args(["svc", "s3cret-pw"])
        .status()
        .expect("mosquitto_passwd (Debian's mosquitto package) runs");
    assert!(made.success());
    let broker = PrivateServer::start_with(
        Kind::Mosquitto,
        &[("MQTT_PASSWORD_FILE", passwords.to_str().unwrap())],
    );
    let url = format!("mqtt://{}", broker.address());
    let with_password = |password: &str| {
        settings_from(&[
            ("MQTT_URL", &url),
            ("MQTT_TOPIC", "credentials"),
            ("MQTT_USERNAME", "svc"),
            ("MQTT_PASSWORD", password),
        ])
    };
    let app = spawn_app_with("http://unused/", |s| s.publish = with_password("s3cret-pw")).await;
    eventually(
        "connected with the password",
        Duration::from_secs(30),
        || async { (app.get("/readyz").await.status() == 200).then_some(()) },
    )
    .await;

    let refused = spawn_app_with("http://unused/", |s| s.publish = with_password("wrong-pw")).await;
    let detail = eventually(
        "the refusal on /readyz",
        Duration::from_secs(30),
        || async {
            let response = refused.get("/readyz").await;
            assert_eq!(response.status(), 503);
            let body = response.text().await.unwrap();
            body.contains("return code").then_some(body)
        },
    )
    .await;
    assert!(!detail.contains("wrong-pw"), "{detail}");
}

#[tokio::test]
async fn readiness_on_mqtt_fails_without_a_broker_and_users_can_still_be_created() {
    let app = spawn_app_with("http://unused/", |s| {
        // Nothing listens on port 9 of loopback.
        s.publish = settings(9, &topic(), ContentMode::Binary)
    })
    .await;
    assert_unready_but_serving(&app).await;
}
