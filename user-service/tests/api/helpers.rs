//! Starting the real application on port 0 with a fresh database (SQLite,
//! or PostgreSQL with `TEST_DATABASE=postgres`), and a fake audit service
//! that records what it receives and answers as a test tells it to.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use cloudevents::Event;
use cloudevents_wire::binding::{is_cloudevents_media_type, BinaryMessage, BATCH_JSON};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};
pub use test_kit::{eventually, free_port};
use tokio_util::sync::CancellationToken;
use user_service::config::{ContentMode, HashSettings, PublishSettings, RelaySettings, Settings};
use user_service::hasher::Hasher;
use user_service::outbox::DeadLetter;
use user_service::Application;

/// Spans as the binary makes them (so events carry a trace context); logs
/// only when TEST_LOG is set, so test output stays readable.
static TRACING: LazyLock<()> = LazyLock::new(|| {
    service_kit::telemetry::init_for_tests("user-service", service_kit::telemetry::Spans::Always);
});

pub const SEED_PASSWORD: &str = "12345";

/// The seed article's curl body, byte for byte.
pub const SEED_BODY: &str = "{\n  \"name\": \"Ozzy Osbourne\",\n  \"password\": \"12345\"\n}";

pub struct TestApp {
    pub address: String,
    pub database_url: String,
    pub client: reqwest::Client,
    pub shutdown: CancellationToken,
    pub hasher: Hasher,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    db: Arc<TestDb>,
}

/// A test's database, kept across restarts of its app: a SQLite file in a
/// temporary folder, or a PostgreSQL database of its own.
pub struct TestDb {
    /// Holds the SQLite file; removed when the last handle goes.
    _dir: tempfile::TempDir,
    pub url: String,
}

impl TestDb {
    pub fn new(dir: tempfile::TempDir, url: String) -> Self {
        TestDb { _dir: dir, url }
    }
}

pub async fn test_db() -> Arc<TestDb> {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = test_kit::database::database_url(dir.path(), "users.db").await;
    Arc::new(TestDb { _dir: dir, url })
}

/// Settings for a test: fast retries and polling, an HTTP audit URL.
pub fn test_settings(audit_url: &str, db: &TestDb) -> Settings {
    Settings {
        listen_addr: "127.0.0.1:0".parse().expect("valid address"),
        database_url: db.url.clone(),
        event_source: "/user-service".into(),
        publish: PublishSettings::Http {
            url: audit_url.to_owned(),
            mode: ContentMode::Binary,
            timeout: Duration::from_secs(2),
            client: Default::default(),
        },
        relay: RelaySettings {
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_millis(100),
            retry_after_max: Duration::from_secs(600),
            max_attempts: None,
            poll_interval: Duration::from_millis(100),
            concurrency: 32,
            batch_max: 100,
            lease_term: Duration::from_secs(6),
            lease_margin: Duration::from_secs(3),
            lag_max: Duration::from_secs(60),
            stall_after: user_service::config::PUBLISHER_STALL,
        },
        hashing: HashSettings {
            workers: 2,
            queue: 64,
        },
        request_timeout: Duration::from_secs(10),
        outbox_retention: Duration::from_secs(7 * 24 * 3600),
        listen: Default::default(),
        access: Default::default(),
        readiness: user_service::routes::health::Readiness::Delivery,
    }
}

pub async fn spawn_app(audit_url: &str) -> TestApp {
    spawn_app_with(audit_url, |_| {}).await
}

pub async fn spawn_app_with(audit_url: &str, customize: impl FnOnce(&mut Settings)) -> TestApp {
    let db = test_db().await;
    let mut settings = test_settings(audit_url, &db);
    customize(&mut settings);
    spawn_app_in(db, settings).await
}

/// Starts the app on `settings`, keeping `db` alive.
pub async fn spawn_app_in(db: Arc<TestDb>, settings: Settings) -> TestApp {
    LazyLock::force(&TRACING);
    let database_url = settings.database_url.clone();
    let app = Application::build(settings).await.expect("app builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let shutdown = app.shutdown_token();
    let hasher = app.hasher();
    let task = tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        database_url,
        client: reqwest::Client::new(),
        shutdown,
        hasher,
        task,
        db,
    }
}

impl TestApp {
    pub async fn post_user(&self, body: serde_json::Value) -> reqwest::Response {
        self.post_raw(&body.to_string(), "application/json").await
    }

    pub async fn post_raw(&self, body: &str, content_type: &str) -> reqwest::Response {
        self.client
            .post(format!("{}/v1/user", self.address))
            .header("content-type", content_type)
            .body(body.to_owned())
            .send()
            .await
            .expect("request")
    }

    /// Creates a user and returns its id.
    pub async fn create_user(&self, name: &str) -> String {
        let response = self
            .post_user(serde_json::json!({"name": name, "password": SEED_PASSWORD}))
            .await;
        assert_eq!(response.status(), 201);
        let body: serde_json::Value = response.json().await.expect("json");
        body["id"].as_str().expect("id").to_owned()
    }

    pub async fn get_user(&self, id: &str) -> reqwest::Response {
        self.client
            .get(format!("{}/v1/users/{id}", self.address))
            .send()
            .await
            .expect("request")
    }

    pub async fn list_users(&self, query: &str) -> reqwest::Response {
        self.client
            .get(format!("{}/v1/users{query}", self.address))
            .send()
            .await
            .expect("request")
    }

    pub async fn put_user(&self, id: &str, body: serde_json::Value) -> reqwest::Response {
        self.client
            .put(format!("{}/v1/users/{id}", self.address))
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    pub async fn delete_user(&self, id: &str) -> reqwest::Response {
        self.client
            .delete(format!("{}/v1/users/{id}", self.address))
            .send()
            .await
            .expect("request")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("request")
    }

    /// `user-service dead-letters <args>` against this app's database.
    pub async fn dead_letters_command(&self, args: &[&str]) -> String {
        let command = user_service::dead_letters::Command::from_args(args.iter().copied())
            .expect("dead-letters arguments");
        let mut out = Vec::new();
        user_service::dead_letters::run(command, &self.database_url, &mut out)
            .await
            .expect("dead-letters command");
        String::from_utf8(out).expect("utf-8")
    }

    pub async fn dead_letters(&self) -> Vec<DeadLetter> {
        let json = self.dead_letters_command(&["list", "--json"]).await;
        serde_json::from_str(&json).expect("dead letters as JSON")
    }

    /// Stops the app as SIGTERM would and waits until it has; its database
    /// is kept for a restart.
    pub async fn stop(self) -> Arc<TestDb> {
        self.shutdown.cancel();
        self.task
            .await
            .expect("app task")
            .expect("app stops cleanly");
        self.db
    }

    /// A connection to this app's database, for looking at the outbox.
    pub async fn db(&self) -> test_kit::database::Db {
        test_kit::database::Db::open(&self.database_url).await
    }
}

/// Waits until no outbox row is pending or dead, failing the test at
/// `deadline`.
pub async fn wait_until_all_delivered(db: &test_kit::database::Db, deadline: Duration) {
    eventually("every row delivered", deadline, || async {
        let pending = db
            .int("SELECT count(*) FROM outbox WHERE status <> 'delivered'")
            .await;
        (pending == 0).then_some(())
    })
    .await;
}

/// What a broker that is away looks like from outside: `/readyz` answers
/// 503 in problem+json, and users can still be created (their events wait
/// in the outbox).
pub async fn assert_unready_but_serving(app: &TestApp) {
    let response = app.get("/readyz").await;
    assert_eq!(response.status(), 503);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    app.create_user("x").await;
}

/// Renames of several users at once, each as fast as the app takes them,
/// until stopped: the load the broker-restart tests put on the relay. User
/// `u` is created as `u{u} v0`, then renamed `u{u} v1`, `u{u} v2`...
pub struct RenameLoad {
    pub ids: Vec<String>,
    writing: Arc<std::sync::atomic::AtomicBool>,
    writers: Vec<tokio::task::JoinHandle<usize>>,
}

impl RenameLoad {
    pub async fn start(app: &Arc<TestApp>, users: usize) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        let mut ids = Vec::new();
        for u in 0..users {
            ids.push(app.create_user(&format!("u{u} v0")).await);
        }
        let writing = Arc::new(AtomicBool::new(true));
        let writers = ids
            .iter()
            .enumerate()
            .map(|(u, id)| {
                let (app, id, writing) = (app.clone(), id.clone(), writing.clone());
                tokio::spawn(async move {
                    let mut v = 0;
                    while writing.load(Ordering::SeqCst) || v < 20 {
                        v += 1;
                        let body = serde_json::json!({"name": format!("u{u} v{v}")});
                        assert_eq!(app.put_user(&id, body).await.status(), 200);
                    }
                    v
                })
            })
            .collect();
        RenameLoad {
            ids,
            writing,
            writers,
        }
    }

    /// Stops the renames (each user has had at least 20) and returns, per
    /// user, the names it went through, in order.
    pub async fn stop(self) -> Vec<Vec<String>> {
        self.writing
            .store(false, std::sync::atomic::Ordering::SeqCst);
        let mut names = Vec::new();
        for (u, writer) in self.writers.into_iter().enumerate() {
            let last = writer.await.expect("a writer");
            names.push((0..=last).map(|v| format!("u{u} v{v}")).collect());
        }
        names
    }
}

/// One request the fake audit service received.
#[derive(Clone, Debug)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The decoded events: one for a single event, several for a batch,
    /// none when the request held no valid CloudEvent.
    pub events: Vec<Event>,
    /// What the fake answered.
    pub status: StatusCode,
    pub at: Instant,
}

impl Received {
    /// The event of a single-event request.
    pub fn event(&self) -> &Event {
        assert_eq!(self.events.len(), 1, "one CloudEvent in {self:?}");
        &self.events[0]
    }

    pub fn is_batch(&self) -> bool {
        self.headers
            .get("content-type")
            .is_some_and(|ct| ct.as_bytes().starts_with(BATCH_JSON.as_bytes()))
    }

    /// The `name` in the data of each event of the request.
    pub fn names(&self) -> Vec<String> {
        self.events
            .iter()
            .map(|e| data_json(e)["name"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    pub fn accepted(&self) -> bool {
        self.status.is_success()
    }

    /// Every header name and value plus the body, for leak checks.
    pub fn raw_bytes(&self) -> Vec<u8> {
        let mut raw = Vec::new();
        for (name, value) in &self.headers {
            raw.extend_from_slice(name.as_str().as_bytes());
            raw.extend_from_slice(b": ");
            raw.extend_from_slice(value.as_bytes());
            raw.push(b'\n');
        }
        raw.extend_from_slice(&self.body);
        raw
    }
}

type Responder = Box<dyn FnMut(&Received) -> Response + Send>;

#[derive(Clone)]
struct FakeState {
    received: Arc<Mutex<Vec<Received>>>,
    responder: Arc<Mutex<Responder>>,
    /// How long to hold each of the next requests before answering.
    delays: Arc<Mutex<Vec<Duration>>>,
}

/// A stand-in for the audit service: records every request and answers
/// 200 unless told otherwise.
pub struct FakeAudit {
    pub url: String,
    state: FakeState,
    shutdown: CancellationToken,
}

impl FakeAudit {
    pub async fn start() -> Self {
        Self::start_on(0).await
    }

    pub async fn start_on(port: u16) -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind fake audit");
        let port = listener.local_addr().expect("addr").port();
        let state = FakeState {
            received: Arc::default(),
            responder: Arc::new(Mutex::new(Box::new(|_| StatusCode::OK.into_response()))),
            delays: Arc::default(),
        };
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(state.clone());
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
                .expect("fake audit serves");
        });
        FakeAudit {
            url: format!("http://127.0.0.1:{port}/"),
            state,
            shutdown,
        }
    }

    /// Answers each request with what `respond` returns.
    pub fn respond_with(&self, respond: impl FnMut(&Received) -> Response + Send + 'static) {
        *self.state.responder.lock().expect("lock") = Box::new(respond);
    }

    /// Holds the next request for `by` before answering it.
    pub fn delay_next(&self, by: Duration) {
        self.state.delays.lock().expect("lock").push(by);
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().expect("lock").clone()
    }

    /// The events answered with a 2xx, in arrival order (a batch's in
    /// its order).
    pub fn accepted(&self) -> Vec<Event> {
        self.received()
            .into_iter()
            .filter(Received::accepted)
            .flat_map(|r| r.events)
            .collect()
    }

    /// Waits until at least `n` events were accepted, and returns them.
    pub async fn wait_for_accepted(&self, n: usize) -> Vec<Event> {
        eventually(
            &format!("{n} accepted events"),
            Duration::from_secs(20),
            || async {
                let accepted = self.accepted();
                (accepted.len() >= n).then_some(accepted)
            },
        )
        .await
    }
}

impl Drop for FakeAudit {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn receive(State(state): State<FakeState>, headers: HeaderMap, body: Bytes) -> Response {
    let delay = {
        let mut delays = state.delays.lock().expect("lock");
        (!delays.is_empty()).then(|| delays.remove(0))
    };
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    let events = decode(&headers, &body);
    let mut received = Received {
        headers,
        body,
        events,
        status: StatusCode::OK,
        at: Instant::now(),
    };
    let response = (state.responder.lock().expect("lock"))(&received);
    received.status = response.status();
    state.received.lock().expect("lock").push(received);
    response
}

fn decode(headers: &HeaderMap, body: &Bytes) -> Vec<Event> {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if content_type.starts_with(BATCH_JSON) {
        return serde_json::from_slice(body).unwrap_or_default();
    }
    if is_cloudevents_media_type(content_type) {
        return serde_json::from_slice(body).ok().into_iter().collect();
    }
    BinaryMessage::from_http(headers, body.to_vec())
        .ok()
        .flatten()
        .and_then(|m| m.into_event().ok())
        .into_iter()
        .collect()
}

/// The `data` of a user event as JSON.
pub fn data_json(event: &Event) -> serde_json::Value {
    match event.data() {
        Some(cloudevents::Data::Json(v)) => v.clone(),
        Some(cloudevents::Data::Binary(b)) => serde_json::from_slice(b).expect("json data"),
        Some(cloudevents::Data::String(s)) => serde_json::from_str(s).expect("json data"),
        None => panic!("event has no data"),
    }
}
