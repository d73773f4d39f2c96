//! Replays (`/v1/replays`): the filtered selection, in seq order and
//! unchanged, to Kafka, NATS and MQTT and to an HTTP endpoint that is down
//! for a minute; a dry run's count; erased events; a filter over its budget;
//! a replay that survives SIGKILL; and two replicas, one running a replay.

use crate::helpers::{
    audit_process, create_topic, header, nats, problem_detail, read_topic, spawn_app_with, unique,
    NatsNames, TestApp, BROKERS, NATS_URL,
};
use crate::mqtt::TestClient;
use crate::nats::read_stream;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use cloudevents::{AttributesReader, Data, Event};
use cloudevents_wire::binding::mqtt::MqttMessage;
use cloudevents_wire::decode;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use serde_json::{json, Value};
use settings::Tokens;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tempfile::TempDir;
use test_kit::process::Service;
use test_kit::{eventually, Signal};
use tokio::time::Instant;

const ADMIN_TOKEN: &str = "admin-token-replays-0123456789";
const MQTT_URL: &str = "mqtt://127.0.0.1:1883";

async fn spawn_admin_app() -> TestApp {
    spawn_app_with(|settings| {
        settings.access.admin = Some(Tokens::new([ADMIN_TOKEN]));
    })
    .await
}

fn event(n: usize, subject: &str) -> Value {
    json!({
        "specversion": "1.0", "id": format!("e{n:06}"), "source": "/replay-test",
        "type": "user.storeUser", "subject": subject,
        "datacontenttype": "application/json", "data": {"n": n}
    })
}

/// Stores events `from..to`, every third one with subject `picked` (the
/// selection the tests replay), a thousand to a request.
async fn store_events(address: &str, from: usize, to: usize) {
    let client = reqwest::Client::new();
    for start in (from..to).step_by(1000) {
        let batch: Vec<Value> = (start..to.min(start + 1000))
            .map(|n| event(n, if n % 3 == 0 { "picked" } else { "other" }))
            .collect();
        let response = client
            .post(format!("{address}/"))
            .header("content-type", "application/cloudevents-batch+json")
            .body(Value::Array(batch).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204);
    }
}

/// The ids the selection picks among `from..to`, in seq order.
fn picked(from: usize, to: usize) -> Vec<String> {
    (from..to)
        .filter(|n| n % 3 == 0)
        .map(|n| format!("e{n:06}"))
        .collect()
}

/// A filter that SQL cannot answer alone (the LIKE is evaluated by the
/// service), so the replay reads the pages `GET /v1/events` evaluates.
const FILTER: &str = "subject = 'picked' AND type LIKE 'user.%'";

async fn create(address: &str, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{address}/v1/replays"))
        .bearer_auth(ADMIN_TOKEN)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// Creates a replay and returns its id.
async fn start(address: &str, body: Value) -> String {
    let response = create(address, &body).await;
    assert_eq!(response.status(), 202, "{body}");
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let created: Value = response.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/v1/replays/{id}"));
    id
}

async fn status(address: &str, id: &str) -> Value {
    let response = reqwest::Client::new()
        .get(format!("{address}/v1/replays/{id}"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn wait_done(address: &str, id: &str, deadline: Duration) -> Value {
    eventually("the replay to be done", deadline, || async {
        let status = status(address, id).await;
        assert_ne!(status["state"], "failed", "{status}");
        (status["state"] == "done").then_some(status)
    })
    .await
}

/// One event as an HTTP receiver got it.
#[derive(Debug, Clone)]
struct Received {
    id: String,
    at: Instant,
    has_data: bool,
    replayid: Option<String>,
}

/// An HTTP endpoint that records what it is sent, and answers 503 until
/// `down_until`.
#[derive(Clone)]
struct Receiver {
    url: String,
    received: Arc<Mutex<Vec<Received>>>,
    down_until: Arc<Mutex<Instant>>,
    refused: Arc<Mutex<usize>>,
}

impl Receiver {
    async fn start() -> Self {
        let received = Arc::new(Mutex::new(Vec::new()));
        let down_until = Arc::new(Mutex::new(Instant::now()));
        let refused = Arc::new(Mutex::new(0));
        let state = (received.clone(), down_until.clone(), refused.clone());
        let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
            let (received, down_until, refused) = state.clone();
            async move {
                if Instant::now() < *down_until.lock().unwrap() {
                    *refused.lock().unwrap() += 1;
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
                let content_type = headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let mut received = received.lock().unwrap();
                let batch = content_type.starts_with("application/cloudevents-batch+json");
                if batch || content_type.starts_with("application/cloudevents+json") {
                    let events: Vec<Value> = if batch {
                        serde_json::from_slice(&body).unwrap()
                    } else {
                        vec![serde_json::from_slice(&body).unwrap()]
                    };
                    for event in events {
                        received.push(Received {
                            id: event["id"].as_str().unwrap().to_owned(),
                            at: Instant::now(),
                            has_data: event.get("data").is_some(),
                            replayid: event["replayid"].as_str().map(str::to_owned),
                        });
                    }
                } else {
                    let text = |name: &str| {
                        headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned)
                    };
                    received.push(Received {
                        id: text("ce-id").expect("binary mode"),
                        at: Instant::now(),
                        has_data: !body.is_empty(),
                        replayid: text("ce-replayid"),
                    });
                }
                StatusCode::NO_CONTENT
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver {
            url,
            received,
            down_until,
            refused,
        }
    }

    fn down_for(&self, outage: Duration) {
        *self.down_until.lock().unwrap() = Instant::now() + outage;
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    fn ids(&self) -> Vec<String> {
        self.received().into_iter().map(|r| r.id).collect()
    }
}

/// The record count of a one-partition topic.
fn records_in(topic: &str) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", BROKERS)
        .create()
        .unwrap();
    let (low, high) = consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .unwrap();
    high - low
}

/// 100,000 events, every third one selected by a filter SQL cannot answer
/// alone: the topic gets each selected event once, in seq order, and
/// nothing else. The events are stored a thousand to a request (the fast
/// path of batch mode).
#[tokio::test]
async fn a_replay_to_kafka_sends_each_selected_event_and_only_those() {
    const EVENTS: usize = 100_000;
    let app = spawn_admin_app().await;
    store_events(&app.address, 0, EVENTS).await;
    let topic = unique("replay");
    create_topic(&topic, 1).await;

    let id = start(
        &app.address,
        json!({"filter": FILTER, "target": {"kind": "kafka", "topic": topic}}),
    )
    .await;
    let done = wait_done(&app.address, &id, Duration::from_secs(300)).await;

    let expected = picked(0, EVENTS);
    assert_eq!(done["sent"], expected.len(), "{done}");
    assert_eq!(done["dead_lettered"], 0);
    let records = read_topic(&topic, expected.len(), Duration::from_secs(120)).await;
    let ids: Vec<String> = records
        .iter()
        .map(|r| header(r, "ce_id").expect("binary mode"))
        .collect();
    assert_eq!(ids, expected, "each selected event, in seq order");
    assert_eq!(
        records_in(&topic),
        expected.len() as i64,
        "nothing else on the topic"
    );
    // Unchanged: same source, no replayid unless asked for.
    assert_eq!(header(&records[0], "ce_source").unwrap(), "/replay-test");
    assert!(header(&records[0], "ce_replayid").is_none());
    app.stop().await;
}

/// The longest an endpoint that recovered waits for the replay to send it
/// everything: the replay's backoff cap (5 s) and the 200 events, with
/// room for a loaded machine. With the relay's 30 s cap it would wait up
/// to 30 s.
const RESUMED_WITHIN: Duration = Duration::from_secs(20);

/// What a receiver must see of a replayed event: unchanged.
#[derive(Debug, PartialEq)]
struct Seen {
    id: String,
    source: String,
    ty: String,
    data: Option<Value>,
}

impl Seen {
    fn of(event: &Event) -> Self {
        let data = event.data().map(|data| match data {
            Data::Json(value) => value.clone(),
            Data::Binary(bytes) => serde_json::from_slice(bytes).unwrap(),
            Data::String(text) => serde_json::from_str(text).unwrap(),
        });
        Seen {
            id: event.id().to_owned(),
            source: event.source().to_string(),
            ty: event.ty().to_owned(),
            data,
        }
    }
}

/// The selected events among `from..to` as `store_events` stored them.
fn picked_events(from: usize, to: usize) -> Vec<Seen> {
    (from..to)
        .filter(|n| n % 3 == 0)
        .map(|n| Seen {
            id: format!("e{n:06}"),
            source: "/replay-test".to_owned(),
            ty: "user.storeUser".to_owned(),
            data: Some(json!({"n": n})),
        })
        .collect()
}

/// A JetStream subject gets exactly the selected events, in seq order,
/// unchanged, in either content mode.
#[tokio::test]
async fn a_replay_to_nats_sends_each_selected_event_unchanged_and_only_those() {
    const EVENTS: usize = 900;
    let app = spawn_admin_app().await;
    store_events(&app.address, 0, EVENTS).await;
    let js = nats().await;
    let expected = picked_events(0, EVENTS);
    for mode in ["binary", "structured"] {
        let names = NatsNames::new("replay");
        let id = start(
            &app.address,
            json!({"filter": FILTER, "target": {"kind": "nats", "url": NATS_URL, "stream": names.stream, "subject": names.subject, "mode": mode}}),
        )
        .await;
        let done = wait_done(&app.address, &id, Duration::from_secs(120)).await;
        assert_eq!(done["sent"], expected.len(), "{mode}: {done}");

        let messages = read_stream(&js, &names.stream, expected.len()).await;
        let seen: Vec<Seen> = messages
            .iter()
            .map(|message| {
                let headers: Vec<(&str, &str)> = message
                    .headers
                    .iter()
                    .flat_map(|h| h.iter())
                    .filter_map(|(name, values)| {
                        values.first().map(|v| (name.as_ref(), v.as_str()))
                    })
                    .collect();
                let decoded = decode::nats_message(&headers, &message.payload)
                    .unwrap_or_else(|e| panic!("{mode}: not a CloudEvent: {e}"));
                Seen::of(&decoded.event)
            })
            .collect();
        assert_eq!(seen, expected, "{mode}: each selected event, in seq order");
        let stored = js
            .get_stream(&names.stream)
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .state
            .messages;
        assert_eq!(stored, expected.len() as u64, "{mode}: nothing else");
    }
    app.stop().await;
}

/// An MQTT subscriber gets exactly the selected events, in seq order,
/// unchanged, in either content mode.
#[tokio::test]
async fn a_replay_to_mqtt_sends_each_selected_event_unchanged_and_only_those() {
    const EVENTS: usize = 900;
    let app = spawn_admin_app().await;
    store_events(&app.address, 0, EVENTS).await;
    let expected = picked_events(0, EVENTS);
    for mode in ["binary", "structured"] {
        let topic = format!("replay/{mode}/{}", uuid::Uuid::new_v4().simple());
        let mut subscriber = TestClient::connect().await;
        subscriber.subscribe(&topic).await;
        let id = start(
            &app.address,
            json!({"filter": FILTER, "target": {"kind": "mqtt", "url": MQTT_URL, "topic": topic, "mode": mode}}),
        )
        .await;
        let done = wait_done(&app.address, &id, Duration::from_secs(120)).await;
        assert_eq!(done["sent"], expected.len(), "{mode}: {done}");

        let messages = subscriber
            .receive(expected.len(), Duration::from_secs(60))
            .await;
        let seen: Vec<Seen> = messages
            .into_iter()
            .map(|publish| {
                let properties = publish.properties.unwrap_or_default();
                let message = MqttMessage {
                    content_type: properties.content_type,
                    user_properties: properties.user_properties,
                    payload: publish.payload.to_vec(),
                };
                let event = message
                    .to_event()
                    .unwrap_or_else(|e| panic!("{mode}: not a CloudEvent: {e}"));
                Seen::of(&event)
            })
            .collect();
        assert_eq!(seen, expected, "{mode}: each selected event, in seq order");
        let more = subscriber.receive(1, Duration::from_secs(2)).await;
        assert!(more.is_empty(), "{mode}: nothing else: {more:?}");
    }
    app.stop().await;
}

/// Sends the selection to an endpoint that answers 503 for `outage`: every
/// event arrives once it recovers, in seq order, none twice, promptly, and
/// the replay counts the failed attempts.
async fn replay_through_an_outage(outage: Duration, mode: &str) {
    let app = spawn_admin_app().await;
    store_events(&app.address, 0, 600).await;
    let receiver = Receiver::start().await;
    receiver.down_for(outage);
    let recovered_at = Instant::now() + outage;

    let id = start(
        &app.address,
        json!({"filter": FILTER, "target": {"kind": "http", "url": receiver.url, "mode": mode, "batch_size": 20}, "replayid": true}),
    )
    .await;
    let done = wait_done(&app.address, &id, outage + Duration::from_secs(90)).await;

    assert!(*receiver.refused.lock().unwrap() > 0, "the outage was seen");
    assert!(done["failed"].as_i64().unwrap() > 0, "{done}");
    assert_eq!(receiver.ids(), picked(0, 600), "all, in order, once");
    let last = receiver.received().last().unwrap().at;
    eprintln!(
        "{mode}: the last event arrived {:?} after the endpoint recovered",
        last - recovered_at
    );
    assert!(
        last <= recovered_at + RESUMED_WITHIN,
        "the last event arrived {:?} after the endpoint recovered",
        last - recovered_at
    );
    assert!(receiver
        .received()
        .iter()
        .all(|r| r.replayid.as_deref() == Some(id.as_str())));
    app.stop().await;
}

#[tokio::test]
async fn an_endpoint_down_for_a_minute_gets_every_event_in_order_once_it_recovers() {
    replay_through_an_outage(Duration::from_secs(60), "binary").await;
}

#[tokio::test]
async fn an_endpoint_down_for_a_minute_gets_every_batch_in_order_once_it_recovers() {
    replay_through_an_outage(Duration::from_secs(60), "batch").await;
}

/// A dry run sends nothing and counts exactly what the real replay sends.
#[tokio::test]
async fn a_dry_run_counts_what_the_replay_sends() {
    let app = spawn_admin_app().await;
    store_events(&app.address, 0, 2500).await;
    let receiver = Receiver::start().await;
    let target = json!({"kind": "http", "url": receiver.url, "mode": "structured"});

    let dry = start(
        &app.address,
        json!({"filter": FILTER, "target": target, "dry_run": true}),
    )
    .await;
    let counted = wait_done(&app.address, &dry, Duration::from_secs(60)).await;
    assert!(receiver.ids().is_empty(), "a dry run sends nothing");

    let real = start(&app.address, json!({"filter": FILTER, "target": target})).await;
    let sent = wait_done(&app.address, &real, Duration::from_secs(120)).await;
    assert_eq!(counted["sent"], sent["sent"]);
    assert_eq!(sent["sent"], receiver.ids().len());
    assert_eq!(receiver.ids(), picked(0, 2500));
    app.stop().await;
}

/// Erased events go without their data, or not at all, as the replay asks.
#[tokio::test]
async fn erased_events_are_sent_without_data_or_skipped_as_asked() {
    let app = spawn_admin_app().await;
    store_events(&app.address, 0, 30).await;
    let erased = app
        .client
        .delete(format!("{}/v1/subjects/picked/data", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(erased.status(), 200);
    let selection = "source = '/replay-test'";

    let receiver = Receiver::start().await;
    let id = start(
        &app.address,
        json!({"filter": selection, "target": {"kind": "http", "url": receiver.url}}),
    )
    .await;
    wait_done(&app.address, &id, Duration::from_secs(60)).await;
    let received = receiver.received();
    assert_eq!(received.len(), 30);
    for event in &received {
        let n: usize = event.id[1..].parse().unwrap();
        assert_eq!(event.has_data, n % 3 != 0, "{event:?}");
    }

    let receiver = Receiver::start().await;
    let id = start(
        &app.address,
        json!({"filter": selection, "target": {"kind": "http", "url": receiver.url}, "erased": "skip"}),
    )
    .await;
    let done = wait_done(&app.address, &id, Duration::from_secs(60)).await;
    assert_eq!(done["skipped"], 10, "{done}");
    assert_eq!(done["sent"], 20, "{done}");
    assert!(receiver.received().iter().all(|e| e.has_data));
    assert_eq!(receiver.ids().len(), 20);
    app.stop().await;
}

/// A filter that needs more work on one event than a page may spend is
/// refused when the replay is made, as a query with it is, though the
/// event is not the first of the selection but among hundreds it takes
/// little work on; so are bad requests, each with what is wrong; and the
/// admin door guards it all.
#[tokio::test]
async fn a_filter_over_its_budget_and_bad_requests_are_refused_with_a_4xx() {
    let app = spawn_admin_app().await;
    store_events(&app.address, 0, 300).await;
    let subject = "s".repeat(2048);
    let over_budget = |depth: usize| {
        let clause = format!(
            "{}CONCAT({}subject){} = 'x'",
            "LOWER(".repeat(depth),
            "subject,".repeat(30),
            ")".repeat(depth)
        );
        vec![clause; 5].join(" OR ")
    };
    let filter = over_budget(60);
    let big = json!({"specversion": "1.0", "id": "big", "source": "/s", "type": "big", "subject": subject});
    assert_eq!(app.post_structured(&big).await.status(), 204);
    store_events(&app.address, 300, 600).await;

    let target = json!({"kind": "kafka", "topic": "never-used"});
    let detail = problem_detail(
        create(&app.address, &json!({"filter": filter, "target": target})).await,
        400,
    )
    .await;
    assert!(
        detail.contains("more work on one event (seq 301)"),
        "{detail}"
    );
    // The same filter on the events before it is affordable, also when the
    // database alone would skip straight to it (a condition on `type` is
    // answered by SQL): the range bounds what is read.
    let skipping = format!("type = 'big' AND ({})", over_budget(56));
    let detail = problem_detail(
        create(&app.address, &json!({"filter": skipping, "target": target})).await,
        400,
    )
    .await;
    assert!(
        detail.contains("more work on one event (seq 301)"),
        "{detail}"
    );
    for filter in [filter, skipping] {
        let id = start(
            &app.address,
            json!({"filter": filter, "to_seq": 300, "dry_run": true}),
        )
        .await;
        let done = wait_done(&app.address, &id, Duration::from_secs(60)).await;
        assert_eq!(done["sent"], 0, "{done}");
    }

    for (body, says) in [
        (json!({"filter": "type =", "target": target}), "CESQL"),
        (json!({"target": {"kind": "http", "url": "nope"}}), "url"),
        (
            json!({"from_seq": 5, "to_seq": 1, "target": target}),
            "from_seq",
        ),
        (json!({"target": target, "rate": 0}), "rate"),
        (json!({"target": target, "speed": 1}), "unknown field"),
        (json!([1]), "JSON object"),
    ] {
        let detail = problem_detail(create(&app.address, &body).await, 400).await;
        assert!(detail.contains(says), "{body}: {detail}");
    }
    let not_json = app
        .client
        .post(format!("{}/v1/replays", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .body("{}")
        .send()
        .await
        .unwrap();
    problem_detail(not_json, 415).await;
    let unknown = app
        .client
        .get(format!("{}/v1/replays/nope", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    problem_detail(unknown, 404).await;
    let no_token = app
        .client
        .get(format!("{}/v1/replays", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(no_token.status(), 401);
    app.stop().await;
}

/// A replay can be listed and cancelled; a cancelled one stops where it is.
#[tokio::test]
async fn a_replay_is_listed_and_can_be_cancelled() {
    let app = spawn_admin_app().await;
    store_events(&app.address, 0, 300).await;
    let receiver = Receiver::start().await;
    let id = start(
        &app.address,
        json!({"target": {"kind": "http", "url": receiver.url}, "rate": 20}),
    )
    .await;
    let listed: Value = app
        .client
        .get(format!("{}/v1/replays", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["replays"][0]["id"], id.as_str());
    eventually("some events sent", Duration::from_secs(30), || async {
        !receiver.ids().is_empty()
    })
    .await;
    let cancelled = app
        .client
        .delete(format!("{}/v1/replays/{id}", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), 200);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after_cancel = receiver.ids().len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receiver.ids().len(), after_cancel, "it stopped");
    assert!(after_cancel < 300);
    let status = status(&app.address, &id).await;
    assert_eq!(status["state"], "cancelled");
    let again = app
        .client
        .delete(format!("{}/v1/replays/{id}", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    problem_detail(again, 409).await;
    app.stop().await;
}

/// audit-service SIGKILLed mid-replay and started again: the replay goes
/// on from its stored position. Every selected event arrives at least
/// once, and deduplicated by id exactly once, with nothing else.
#[tokio::test]
async fn a_replay_killed_mid_way_resumes_after_a_restart() {
    let dir = TempDir::new().unwrap();
    let db_url = test_kit::database::database_url(dir.path(), "audit.db").await;
    let env = [
        ("DATABASE_URL", db_url),
        ("ADMIN_TOKENS", ADMIN_TOKEN.to_owned()),
        ("REPLAY_LEASE_MS", "2000".to_owned()),
    ];
    let mut process = audit_process(&env, dir.path().join("audit.log"));
    let address = process.base_url.clone();
    answering(&address).await;
    store_events(&address, 0, 6000).await;
    let receiver = Receiver::start().await;
    let id = start(
        &address,
        json!({"filter": FILTER, "target": {"kind": "http", "url": receiver.url}, "rate": 400}),
    )
    .await;
    eventually(
        "a part of the replay sent",
        Duration::from_secs(60),
        || async { receiver.ids().len() >= 500 },
    )
    .await;
    process.signal(Signal::SIGKILL).unwrap();
    let exit = process.wait_exit(Duration::from_secs(30)).await.unwrap();
    assert!(!exit.success(), "SIGKILL did not land: {exit}");
    let before_restart = receiver.ids().len();
    assert!(before_restart < 2000, "killed after the end");

    process.restart().await.unwrap();
    wait_done(&address, &id, Duration::from_secs(120)).await;
    let ids = receiver.ids();
    let expected = picked(0, 6000);
    assert_each_at_least_once_and_by_id_once_in_order(&ids, &expected);
    eprintln!(
        "{before_restart} sent before SIGKILL, {} received in all for {} selected",
        ids.len(),
        expected.len()
    );
    assert!(process.terminate().await.unwrap().success());
}

/// Waits until the service at `address` answers `/healthz`.
async fn answering(address: &str) {
    eventually(
        "audit-service to answer",
        Duration::from_secs(30),
        || async {
            reqwest::get(format!("{address}/healthz"))
                .await
                .is_ok_and(|r| r.status() == 200)
        },
    )
    .await;
}

/// What a replay that was interrupted must have sent: every expected event
/// at least once and nothing else; deduplicated by id, each once, in order.
fn assert_each_at_least_once_and_by_id_once_in_order(ids: &[String], expected: &[String]) {
    let unique_ids: HashSet<&String> = ids.iter().collect();
    assert_eq!(
        unique_ids,
        expected.iter().collect(),
        "each at least once, nothing else"
    );
    let mut first_seen = Vec::new();
    let mut seen = HashSet::new();
    for id in ids {
        if seen.insert(id) {
            first_seen.push(id.clone());
        }
    }
    assert_eq!(
        first_seen, expected,
        "deduplicated by id, once each, in order"
    );
}

/// Two replicas on one PostgreSQL database (always PostgreSQL, whatever
/// TEST_DATABASE says, as in `replicas`): exactly one runs a replay, as
/// the lease holder both report, the other replica's log (it never starts
/// it) and the receiver (no event twice while it runs) show. SIGKILLed,
/// the runner's replay is taken over by the other replica once its lease
/// has run out, from the stored position, and finished: every selected
/// event at least once, in order, and by id exactly once.
#[tokio::test]
async fn of_two_replicas_one_runs_a_replay_and_the_other_finishes_it_when_the_first_is_killed() {
    const LEASE: Duration = Duration::from_secs(3);
    let dir = TempDir::new().unwrap();
    let db_url = test_kit::database::fresh_postgres_database().await;
    let replica = |name: &str| {
        let env = [
            ("DATABASE_URL", db_url.clone()),
            ("ADMIN_TOKENS", ADMIN_TOKEN.to_owned()),
            ("REPLAY_LEASE_MS", LEASE.as_millis().to_string()),
            ("HOSTNAME", name.to_owned()),
        ];
        audit_process(&env, dir.path().join(format!("{name}.log")))
    };
    let mut replicas = [replica("replica-a"), replica("replica-b")];
    for replica in &replicas {
        answering(&replica.base_url).await;
    }
    store_events(&replicas[0].base_url, 0, 6000).await;
    let receiver = Receiver::start().await;
    let id = start(
        &replicas[0].base_url,
        json!({"filter": FILTER, "target": {"kind": "http", "url": receiver.url}, "rate": 400}),
    )
    .await;
    let started_it = |replica: &Service| {
        replica
            .log_lines("replay running")
            .iter()
            .filter(|line| line["replay"] == id.as_str())
            .count()
    };

    // While a part is sent, both replicas name the same holder.
    let mut holders = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while receiver.ids().len() < 500 {
        assert!(
            Instant::now() < deadline,
            "{} of the replay sent in 60 s",
            receiver.ids().len()
        );
        for replica in &replicas {
            if let Some(holder) = status(&replica.base_url, &id).await["holder"].as_str() {
                holders.insert(holder.to_owned());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(holders.len(), 1, "one replica holds it: {holders:?}");
    let holder = holders.into_iter().next().unwrap();
    let runner = match holder.split('/').next() {
        Some("replica-a") => 0,
        Some("replica-b") => 1,
        _ => panic!("a holder names its replica: {holder}"),
    };
    let other = 1 - runner;
    assert!(holder.contains(&format!("/{}/", replicas[runner].pid().unwrap())));
    assert_eq!(started_it(&replicas[runner]), 1);
    assert_eq!(
        started_it(&replicas[other]),
        0,
        "the other never started it"
    );

    replicas[runner].signal(Signal::SIGKILL).unwrap();
    let exit = replicas[runner]
        .wait_exit(Duration::from_secs(30))
        .await
        .unwrap();
    assert!(!exit.success(), "SIGKILL did not land: {exit}");
    let killed_at = Instant::now();
    // A request the runner wrote just before it died may still be read by
    // the receiver a moment later: it counts as the runner's, so wait for
    // the receiver to go quiet before taking what the runner sent.
    let mut by_runner = receiver.ids();
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = receiver.ids();
        if now.len() == by_runner.len() {
            break;
        }
        by_runner = now;
    }
    let expected = picked(0, 6000);
    assert!(by_runner.len() < expected.len(), "killed after the end");
    assert_eq!(
        by_runner,
        expected[..by_runner.len()],
        "while one replica ran it: in order, none twice"
    );

    let survivor = &replicas[other];
    let done = wait_done(&survivor.base_url, &id, Duration::from_secs(120)).await;
    assert_eq!(started_it(survivor), 1, "the survivor took it over");
    assert!(done["holder"].is_null(), "{done}");
    let received = receiver.received();
    let taken_over_after = received[by_runner.len()].at - killed_at;
    // The runner renewed its lease at most a second (its save interval)
    // before it was killed; the survivor looks for free replays every
    // second.
    assert!(
        taken_over_after >= LEASE - Duration::from_millis(1500),
        "taken over {taken_over_after:?} after the kill, before the lease ran out"
    );
    assert!(
        taken_over_after <= LEASE + Duration::from_secs(15),
        "taken over {taken_over_after:?} after the kill"
    );
    let ids = receiver.ids();
    assert_each_at_least_once_and_by_id_once_in_order(&ids, &expected);
    eprintln!(
        "{} sent by the replica killed, {} by the one that took over {taken_over_after:?} after the kill, for {} selected",
        by_runner.len(),
        ids.len() - by_runner.len(),
        expected.len()
    );
    assert!(replicas[other].terminate().await.unwrap().success());
}
