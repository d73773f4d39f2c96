//! Starting audit-service for a test (in-process on port 0 with a fresh
//! database, SQLite or with `TEST_DATABASE=postgres` PostgreSQL, or as the
//! real binary) and talking to it and to Kafka.

use audit_service::app::Application;
use audit_service::config::{BatchLimits, ConsumerSettings, NatsSettings, Settings};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use reqwest::Response;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tempfile::TempDir;
pub use test_kit::process::{Service, Wait};
pub use test_kit::{free_port, within};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub const BROKERS: &str = "127.0.0.1:9092";

/// Logs go to the test output only with TEST_LOG set.
fn init_logs() {
    service_kit::telemetry::init_for_tests(
        "audit-service",
        service_kit::telemetry::Spans::WhenExported,
    );
}

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub shutdown: CancellationToken,
    /// The app's database (a SQLite file or a PostgreSQL database).
    pub database_url: String,
    // Held so the database outlives the app; removed on drop.
    _db_dir: TempDir,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Settings for a test: port 0, a fresh database (a file in `db_dir`, or a
/// PostgreSQL database of its own).
pub async fn test_settings(db_dir: &Path) -> Settings {
    Settings {
        listen_addr: "127.0.0.1:0".parse().expect("valid address"),
        database_url: test_kit::database::database_url(db_dir, "audit.db").await,
        consumer: ConsumerSettings::Http,
        max_body_bytes: 1024 * 1024,
        batch: BatchLimits::default(),
        shutdown_grace: Duration::from_secs(10),
        listen: Default::default(),
        access: Default::default(),
        limits: Default::default(),
        log: Default::default(),
        replay: Default::default(),
    }
}

pub async fn spawn_app_with(customize: impl FnOnce(&mut Settings)) -> TestApp {
    init_logs();
    let db_dir = TempDir::new().expect("temporary folder");
    let mut settings = test_settings(db_dir.path()).await;
    customize(&mut settings);
    // A TLS test's certificate is for localhost.
    let address = match settings.listen.tls {
        Some(_) => "https://localhost",
        None => "http://127.0.0.1",
    };
    let database_url = settings.database_url.clone();
    let app = Application::build(settings).await.expect("app builds");
    let address = format!("{address}:{}", app.port());
    let shutdown = app.shutdown_token();
    let task = tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        client: reqwest::Client::new(),
        shutdown,
        database_url,
        _db_dir: db_dir,
        task,
    }
}

impl TestApp {
    /// `POST /` with the given headers and body.
    pub async fn post(&self, headers: &[(&str, &str)], body: impl Into<reqwest::Body>) -> Response {
        let mut request = self.client.post(format!("{}/", self.address)).body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("POST / answered")
    }

    pub async fn post_structured(&self, event: &Value) -> Response {
        self.post(
            &[("content-type", "application/cloudevents+json")],
            event.to_string(),
        )
        .await
    }

    pub async fn post_batch(&self, events: &Value) -> Response {
        self.post(
            &[("content-type", "application/cloudevents-batch+json")],
            events.to_string(),
        )
        .await
    }

    /// `GET /v1/events?{query}`.
    pub async fn get_events(&self, query: &str) -> Response {
        self.client
            .get(format!("{}/v1/events?{query}", self.address))
            .send()
            .await
            .expect("GET /v1/events answered")
    }

    /// The items of one page of `GET /v1/events?{query}`.
    pub async fn events(&self, query: &str) -> Vec<Value> {
        let response = self.get_events(query).await;
        assert_eq!(response.status(), 200);
        let page: Value = response.json().await.expect("JSON page");
        page["events"].as_array().expect("events array").clone()
    }

    /// Polls until `GET /v1/events?{query}` has at least `n` items.
    pub async fn wait_for_events(&self, query: &str, n: usize, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let items = self.events(query).await;
            if items.len() >= n {
                return items;
            }
            assert!(
                Instant::now() < deadline,
                "expected {n} events for {query:?} within {timeout:?}, have {}",
                items.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("GET answered")
    }

    /// Stops the app gracefully and waits for it.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task
            .await
            .expect("app task joins")
            .expect("app stops cleanly");
    }
}

/// Reads SSE `audit` events from `response` until `n` arrived (or 10 s).
pub async fn read_sse_items(response: &mut reqwest::Response, n: usize) -> Vec<Value> {
    let mut text = String::new();
    let mut items = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while items.len() < n {
            let Some(chunk) = response.chunk().await.unwrap() else {
                break;
            };
            text.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = text.find("\n\n") {
                let frame: String = text.drain(..end + 2).collect();
                if let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data:")) {
                    if frame.contains("event: audit") {
                        items.push(serde_json::from_str(data.trim()).unwrap());
                    }
                }
            }
        }
    })
    .await;
    items
}

/// Checks a response is problem+json with `status`, returning its detail.
pub async fn problem_detail(response: Response, status: u16) -> String {
    assert_eq!(response.status(), status, "status");
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = response.json().await.expect("problem JSON");
    assert_eq!(problem["status"], status);
    problem["detail"].as_str().expect("detail").to_owned()
}

/// Makes the store of `database_url` refuse, for good, every event whose
/// id starts with `poison`, as a database refuses a value it cannot hold:
/// a CHECK constraint on PostgreSQL (SQLSTATE 23514), a trigger that
/// aborts on SQLite (SQLITE_CONSTRAINT). Call it once the service has
/// created its tables.
pub async fn refuse_poison_ids(database_url: &str) {
    match test_kit::database::Db::open(database_url).await {
        test_kit::database::Db::Postgres(pool) => {
            sqlx::query(
                "ALTER TABLE events ADD CONSTRAINT no_poison CHECK (id NOT LIKE 'poison%')",
            )
            .execute(&pool)
            .await
            .expect("constraint added");
        }
        test_kit::database::Db::Sqlite(pool) => {
            sqlx::query(
                "CREATE TRIGGER no_poison BEFORE INSERT ON events WHEN NEW.id LIKE 'poison%' \
                 BEGIN SELECT RAISE(ABORT, 'poisoned'); END",
            )
            .execute(&pool)
            .await
            .expect("trigger created");
        }
    }
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

// ------------------------------------------------------------------ Kafka

/// Fails the test loudly when the broker is not running: Kafka tests must
/// not pass by skipping.
pub fn require_broker() {
    let client: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", BROKERS)
        .create()
        .expect("kafka client");
    if let Err(e) = client.fetch_metadata(None, Duration::from_secs(10)) {
        panic!("no Kafka broker on {BROKERS} ({e}); start one with `scripts/kafka.sh start`");
    }
}

pub async fn create_topic(name: &str, partitions: i32) {
    create_topic_with(name, partitions, &[]).await;
}

/// Creates a topic with topic-level settings, e.g. a larger `max.message.bytes`.
pub async fn create_topic_with(name: &str, partitions: i32, config: &[(&str, &str)]) {
    require_broker();
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", BROKERS)
        .create()
        .expect("admin client");
    let results = admin
        .create_topics(
            &[config.iter().fold(
                NewTopic::new(name, partitions, TopicReplication::Fixed(1)),
                |topic, (key, value)| topic.set(key, value),
            )],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .expect("create topics");
    for result in results {
        result.unwrap_or_else(|(topic, e)| panic!("creating topic {topic}: {e}"));
    }
}

pub fn producer() -> FutureProducer {
    producer_with(&[])
}

/// A producer with extra librdkafka properties, e.g. a larger `message.max.bytes`.
pub fn producer_with(properties: &[(&str, &str)]) -> FutureProducer {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", BROKERS)
        .set("acks", "all")
        .set("linger.ms", "5");
    for (key, value) in properties {
        config.set(*key, *value);
    }
    config.create().expect("producer")
}

/// Produces one record and waits for the ack.
pub async fn produce(
    producer: &FutureProducer,
    topic: &str,
    key: Option<&str>,
    headers: OwnedHeaders,
    payload: Option<&[u8]>,
) {
    let mut record: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic).headers(headers);
    if let Some(key) = key {
        record = record.key(key);
    }
    if let Some(payload) = payload {
        record = record.payload(payload);
    }
    producer
        .send(record, Duration::from_secs(30))
        .await
        .map_err(|(e, _)| e)
        .expect("record produced");
}

/// Reads `n` records from the start of `topic`, or fails after `timeout`.
pub async fn read_topic(topic: &str, n: usize, timeout: Duration) -> Vec<OwnedMessage> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", BROKERS)
        .set("group.id", unique("test-reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut records = Vec::new();
    let deadline = Instant::now() + timeout;
    while records.len() < n {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(m)) => records.push(m.detach()),
            Ok(Err(e)) => panic!("reading {topic}: {e}"),
            Err(_) => panic!(
                "read {} of {n} records from {topic} within {timeout:?}",
                records.len()
            ),
        }
    }
    records
}

/// The value of header `key` of a record, as text.
pub fn header(record: &OwnedMessage, key: &str) -> Option<String> {
    record.headers().and_then(|h| {
        h.iter()
            .find(|h| h.key == key)
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    })
}

// -------------------------------------------------------------- processes

/// The real binary, started with `env` (and nothing else of the test's
/// environment) on a free port, its output in `log`; not waited for.
pub fn audit_process(env: &[(&str, String)], log: PathBuf) -> Service {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Service::spawn(env!("CARGO_BIN_EXE_audit-service"), log, &env, Wait::Live)
        .expect("audit-service starts")
}

// ------------------------------------------------------------------- NATS

pub const NATS_URL: &str = "nats://127.0.0.1:4222";

/// A client of the shared NATS server; fails the test loudly when there is
/// none: NATS tests must not pass by skipping.
pub async fn nats() -> async_nats::jetstream::Context {
    let connected =
        tokio::time::timeout(Duration::from_secs(5), async_nats::connect(NATS_URL)).await;
    match connected {
        Ok(Ok(client)) => async_nats::jetstream::new(client),
        Ok(Err(e)) => panic!(
            "no NATS server on {NATS_URL} ({e}); start one with `scripts/nats.sh start` (make test does)"
        ),
        Err(_) => panic!(
            "no NATS server answered on {NATS_URL} within 5 s; start one with `scripts/nats.sh start`"
        ),
    }
}

/// Names of a test's own stream, subjects and consumer on the shared
/// server, so tests don't see each other's messages.
#[derive(Clone)]
pub struct NatsNames {
    pub stream: String,
    pub subject: String,
    pub consumer: String,
    pub dlq_subject: String,
    pub dlq_stream: String,
}

impl NatsNames {
    pub fn new(tag: &str) -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        NatsNames {
            stream: format!("T_{tag}_{id}"),
            subject: format!("t{id}.events"),
            consumer: format!("c{id}"),
            dlq_subject: format!("dlq{id}"),
            dlq_stream: format!("T_{tag}_{id}_DLQ"),
        }
    }

    /// The services' environment for these names.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("EVENT_TRANSPORT", "nats".into()),
            ("NATS_URL", NATS_URL.into()),
            ("NATS_STREAM", self.stream.clone()),
            ("NATS_SUBJECT", self.subject.clone()),
            ("NATS_CONSUMER", self.consumer.clone()),
            ("NATS_DLQ_SUBJECT", self.dlq_subject.clone()),
            ("NATS_DLQ_STREAM", self.dlq_stream.clone()),
        ]
    }

    /// In-process settings for these names.
    pub fn apply(&self, settings: &mut Settings) {
        let mut nats = NatsSettings::default();
        nats.common.url = NATS_URL.into();
        nats.common.stream = self.stream.clone();
        nats.common.subject = self.subject.clone();
        nats.consumer = self.consumer.clone();
        nats.dlq_subject = self.dlq_subject.clone();
        nats.dlq_stream = self.dlq_stream.clone();
        settings.consumer = ConsumerSettings::Nats(nats);
    }

    /// Creates the stream as the services would, so a test can publish
    /// before any service runs.
    pub async fn create_stream(&self, js: &async_nats::jetstream::Context) {
        let config = brokers::nats::NatsConfig {
            stream: self.stream.clone(),
            subject: self.subject.clone(),
            ..Default::default()
        };
        js.get_or_create_stream(config.stream_config())
            .await
            .expect("test stream created");
    }
}
