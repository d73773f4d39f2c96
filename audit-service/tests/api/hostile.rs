//! Hostile clients against the real binary: sockets that say nothing or
//! half a request, an HTTP/2 preface and silence, a TLS handshake and
//! silence, live-tail clients that stop reading, invented methods, a client
//! over its rate limit. While each attack runs, a [`Probe`] (a normal
//! client) checks that the service still answers `GET /healthz` and stores
//! a `POST /` event within [`SERVED_WITHIN`], each on a new connection.
//!
//! To add an attack: start a service with [`Hostile::start`], then run the
//! attack inside [`Hostile::served_throughout`].

use crate::helpers::{audit_process, within, Service};
use serde_json::json;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The longest a normal client may wait for an answer while an attack runs.
/// Its POST waits for an fsync, and the suite runs debug builds on two
/// shared cores, where that alone has taken over half a second; a client
/// the attack starves waits for ever or for the attack's length (seconds).
pub const SERVED_WITHIN: Duration = Duration::from_secs(1);

/// How often the probe sends its pair of requests.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);

/// The address normal clients come from; attackers that must be told
/// apart by address use [`ATTACKER_IP`].
const PROBE_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const ATTACKER_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// Where and how a normal client reaches the service under attack.
#[derive(Clone)]
pub struct Target {
    pub base_url: String,
    pub addr: SocketAddr,
    /// The CA to trust when the service listens with TLS.
    pub ca_pem: Option<String>,
    /// The bearer token the probe sends with its events.
    pub ingest_token: Option<String>,
}

impl Target {
    /// A client that opens a new connection for every request, as a new
    /// client would: a pooled connection would get past a connection cap.
    pub fn client(&self, from: IpAddr) -> reqwest::Client {
        let mut builder = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .local_address(from)
            .timeout(Duration::from_secs(5));
        if let Some(ca) = &self.ca_pem {
            builder = builder
                .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap());
        }
        builder.build().unwrap()
    }
}

/// A normal client running beside an attack: every [`PROBE_INTERVAL`], a
/// `GET /healthz` and a `POST /` of a new event, each on a new connection.
pub struct Probe {
    stop: CancellationToken,
    task: JoinHandle<ProbeReport>,
}

/// What the probe saw: how many requests it sent, and each one that was
/// not answered 2xx within [`SERVED_WITHIN`].
#[derive(Debug, Default)]
pub struct ProbeReport {
    pub requests: usize,
    pub failures: Vec<String>,
    pub slowest: Duration,
}

impl Probe {
    pub fn start(target: &Target) -> Probe {
        let stop = CancellationToken::new();
        let target = target.clone();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let client = target.client(PROBE_IP);
                let mut report = ProbeReport::default();
                for round in 0.. {
                    let healthz = client.get(format!("{}/healthz", target.base_url));
                    report.record("GET /healthz", healthz).await;
                    let event = json!({
                        "specversion": "1.0",
                        "id": format!("probe-{round}-{}", uuid::Uuid::new_v4().simple()),
                        "source": "/probe",
                        "type": "probe",
                    });
                    let mut post = client
                        .post(format!("{}/", target.base_url))
                        .header("content-type", "application/cloudevents+json")
                        .body(event.to_string());
                    if let Some(token) = &target.ingest_token {
                        post = post.bearer_auth(token);
                    }
                    report.record("POST /", post).await;
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(PROBE_INTERVAL) => {}
                    }
                }
                report
            }
        });
        Probe { stop, task }
    }

    pub async fn finish(self) -> ProbeReport {
        self.stop.cancel();
        self.task.await.expect("the probe does not panic")
    }
}

impl ProbeReport {
    async fn record(&mut self, what: &str, request: reqwest::RequestBuilder) {
        self.requests += 1;
        let started = Instant::now();
        let answered = request.send().await;
        let took = started.elapsed();
        self.slowest = self.slowest.max(took);
        let failure = match answered {
            Err(e) => Some(format!("{what}: {e}")),
            Ok(r) if !r.status().is_success() => Some(format!("{what}: {}", r.status())),
            Ok(_) if took > SERVED_WITHIN => Some(format!("{what}: answered after {took:?}")),
            Ok(_) => None,
        };
        self.failures.extend(failure);
    }

    /// Fails the test unless every request was served in time (and there
    /// were enough of them to mean something).
    pub fn assert_served(&self, attack: &str) {
        assert!(
            self.requests >= 6,
            "{attack}: the probe sent only {} requests",
            self.requests
        );
        assert!(
            self.failures.is_empty(),
            "{attack}: {} of {} requests of a normal client were not served within {SERVED_WITHIN:?}: {:?}",
            self.failures.len(),
            self.requests,
            &self.failures[..self.failures.len().min(10)]
        );
        eprintln!(
            "{attack}: {} requests of a normal client served, the slowest in {:?}",
            self.requests, self.slowest
        );
    }
}

/// audit-service as a process, with its own database and log.
pub struct Hostile {
    pub process: Service,
    pub target: Target,
    _dir: TempDir,
}

impl Hostile {
    /// Starts the binary with `env` (plus a fresh database) and waits until
    /// it answers.
    pub async fn start(env: &[(&str, &str)]) -> Hostile {
        Hostile::start_with(env, None).await
    }

    /// The same over TLS, with a certificate for localhost from a test CA.
    pub async fn start_tls(env: &[(&str, &str)]) -> Hostile {
        let ca = crate::security::test_ca();
        let mut env: Vec<(&str, String)> = env.iter().map(|(k, v)| (*k, v.to_string())).collect();
        env.push(("TLS_CERT_FILE", ca.files.cert.display().to_string()));
        env.push(("TLS_KEY_FILE", ca.files.key.display().to_string()));
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut hostile = Hostile::start_with(&env, Some(ca.ca_pem.clone())).await;
        // The key files are read at start; the folder can go.
        drop(ca.dir);
        hostile.target.ca_pem = Some(ca.ca_pem);
        hostile
    }

    async fn start_with(env: &[(&str, &str)], ca_pem: Option<String>) -> Hostile {
        let dir = TempDir::new().unwrap();
        let db = test_kit::database::database_url(dir.path(), "audit.db").await;
        let mut vars: Vec<(&str, String)> = vec![("DATABASE_URL", db)];
        vars.extend(env.iter().map(|(k, v)| (*k, v.to_string())));
        let process = audit_process(&vars, dir.path().join("audit.log"));
        let addr = SocketAddr::from(([127, 0, 0, 1], process.port));
        let base_url = match ca_pem {
            Some(_) => format!("https://localhost:{}", process.port),
            None => format!("http://{addr}"),
        };
        let target = Target {
            base_url,
            addr,
            ca_pem,
            ingest_token: None,
        };
        let client = target.client(PROBE_IP);
        let url = format!("{}/healthz", target.base_url);
        let up = within(Duration::from_secs(30), || async {
            client
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await
        .is_some();
        assert!(up, "audit-service did not start:\n{}", process.logs());
        Hostile {
            process,
            target,
            _dir: dir,
        }
    }

    /// Runs `attack` while a [`Probe`] checks that a normal client is served
    /// within [`SERVED_WITHIN`] all along; fails the test if it was not.
    pub async fn served_throughout<T>(&self, attack: &str, run: impl Future<Output = T>) -> T {
        let probe = Probe::start(&self.target);
        let out = run.await;
        probe.finish().await.assert_served(attack);
        out
    }
}

// --------------------------------------------------------------- attackers

/// What a socket of the attacker sends before it falls silent.
#[derive(Clone, Copy)]
enum Opening {
    Nothing,
    HalfHeaders,
    Http2Preface,
}

impl Opening {
    fn bytes(self) -> &'static [u8] {
        match self {
            Opening::Nothing => b"",
            Opening::HalfHeaders => b"GET /healthz HTTP/1.1\r\nHost: x\r\nAccept: */",
            // The connection preface and an empty SETTINGS frame.
            Opening::Http2Preface => {
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"
            }
        }
    }
}

/// How the server treated the attacker's sockets.
#[derive(Debug, Default)]
struct Held {
    /// Sockets the server closed.
    closed: usize,
    /// The longest one stayed open before the server closed it.
    longest: Duration,
}

/// Keeps `n` sockets open on `target` for `duration`, each sending
/// `opening` and then nothing, and opens a new one whenever the server
/// closes one.
async fn hold_sockets(target: &Target, n: usize, opening: Opening, duration: Duration) -> Held {
    let until = Instant::now() + duration;
    let held = Arc::new(std::sync::Mutex::new(Held::default()));
    let mut sockets = Vec::new();
    for _ in 0..n {
        let (target, held) = (target.clone(), held.clone());
        sockets.push(tokio::spawn(async move {
            while Instant::now() < until {
                let Ok(mut stream) = TcpStream::connect(target.addr).await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let opened = Instant::now();
                let _ = stream.write_all(opening.bytes()).await;
                if read_until_closed(&mut stream, until).await {
                    let mut held = held.lock().unwrap();
                    held.closed += 1;
                    held.longest = held.longest.max(opened.elapsed());
                }
            }
        }));
    }
    for socket in sockets {
        socket.await.unwrap();
    }
    Arc::into_inner(held).unwrap().into_inner().unwrap()
}

/// Reads (and drops) whatever arrives until the peer closes (true) or
/// `until` passes (false).
async fn read_until_closed(stream: &mut (impl AsyncRead + Unpin), until: Instant) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(until, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// Reads up to the end of a response's head (and perhaps a little more).
async fn read_head(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + Duration::from_secs(5);
    while !received.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => received.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&received).into_owned()
}

/// The frame types the server sends on an HTTP/2 connection until it closes
/// it, or `until` passes.
async fn http2_frames_until_closed(stream: &mut TcpStream, until: Instant) -> (Vec<u8>, bool) {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match tokio::time::timeout_at(until, stream.read(&mut buf)).await {
            Err(_) => break false,
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    };
    let mut types = Vec::new();
    let mut rest = &received[..];
    while rest.len() >= 9 {
        let length = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
        types.push(rest[3]);
        rest = &rest[(9 + length).min(rest.len())..];
    }
    (types, closed)
}

const GOAWAY: u8 = 0x7;

/// A TLS client that trusts `ca_pem`.
fn tls_connector(ca_pem: &str) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    let mut pem = ca_pem.as_bytes();
    for cert in rustls_pemfile_certs(&mut pem) {
        roots.add(cert).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

fn rustls_pemfile_certs(pem: &mut &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_reader_iter(pem)
        .map(|c| c.unwrap())
        .collect()
}

/// A socket bound to `from` with a small receive buffer, so that it fills
/// after a few kilobytes when nobody reads it.
async fn small_window_socket(from: IpAddr, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    socket.connect(to).await.unwrap()
}

/// A structured event with a new id and `data_bytes` of data.
fn event_with_data(data_bytes: usize) -> String {
    json!({
        "specversion": "1.0",
        "id": uuid::Uuid::new_v4().to_string(),
        "source": "/hostile",
        "type": "big",
        "data": "x".repeat(data_bytes),
    })
    .to_string()
}

// ------------------------------------------------------------------ attacks

const SMALL_CAP: [(&str, &str); 2] = [("MAX_CONNECTIONS", "8"), ("HEADER_READ_TIMEOUT_MS", "1000")];

/// The attack of the report, `MAX_CONNECTIONS=8` and 8 sockets that send
/// `opening` and then nothing, here each opened again as soon as the
/// server closes it, so that every place is always wanted by one of them:
/// the server closes each within about the header-read timeout (1 s), and
/// a normal client is served throughout.
async fn sockets_at_the_cap(service: &Hostile, attack: &str, opening: Opening) {
    let held = service
        .served_throughout(
            attack,
            hold_sockets(&service.target, 8, opening, Duration::from_secs(4)),
        )
        .await;
    assert!(
        held.closed >= 8,
        "{attack}: the server closed only {held:?}"
    );
    assert!(
        held.longest < Duration::from_millis(2500),
        "{attack}: a socket stayed open {held:?}"
    );
}

#[tokio::test]
async fn sockets_that_send_nothing_neither_stay_open_nor_keep_a_new_client_out() {
    let service = Hostile::start(&SMALL_CAP).await;
    sockets_at_the_cap(&service, "8 silent sockets", Opening::Nothing).await;
}

#[tokio::test]
async fn half_sent_headers_do_not_keep_a_new_client_out() {
    let service = Hostile::start(&SMALL_CAP).await;
    sockets_at_the_cap(
        &service,
        "8 sockets with half their headers sent",
        Opening::HalfHeaders,
    )
    .await;
}

#[tokio::test]
async fn an_http2_preface_then_silence_gets_a_goaway_and_is_closed() {
    let service = Hostile::start(&SMALL_CAP).await;
    let mut lone = TcpStream::connect(service.target.addr).await.unwrap();
    lone.write_all(Opening::Http2Preface.bytes()).await.unwrap();
    let started = Instant::now();
    let (frames, closed) =
        http2_frames_until_closed(&mut lone, Instant::now() + Duration::from_secs(5)).await;
    assert!(closed, "still open after 5 s (frames received: {frames:?})");
    assert!(
        frames.contains(&GOAWAY),
        "closed without a GOAWAY: {frames:?}"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_millis(2500),
        "closed after {took:?}, with a header-read timeout of 1 s"
    );
    sockets_at_the_cap(
        &service,
        "8 HTTP/2 connections that open no stream",
        Opening::Http2Preface,
    )
    .await;
}

#[tokio::test]
async fn a_tls_client_that_handshakes_then_says_nothing_is_closed() {
    let service = Hostile::start_tls(&SMALL_CAP).await;
    let connector = tls_connector(service.target.ca_pem.as_deref().unwrap());
    let addr = service.target.addr;
    let handshake = move |connector: tokio_rustls::TlsConnector| async move {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        connector.connect(name, tcp).await
    };
    let mut lone = handshake(connector.clone())
        .await
        .expect("the handshake succeeds");
    let started = Instant::now();
    assert!(
        read_until_closed(&mut lone, Instant::now() + Duration::from_secs(5)).await,
        "a TLS connection that sends no request is still open after 5 s"
    );
    let took = started.elapsed();
    assert!(took < Duration::from_millis(2500), "closed after {took:?}");
    let until = Instant::now() + Duration::from_secs(4);
    let closed = service
        .served_throughout("8 TLS connections that send no request", async {
            let mut sockets = Vec::new();
            for _ in 0..8 {
                let connector = connector.clone();
                sockets.push(tokio::spawn(async move {
                    let mut closed = 0;
                    while Instant::now() < until {
                        if let Ok(mut tls) = handshake(connector.clone()).await {
                            closed += usize::from(read_until_closed(&mut tls, until).await);
                        }
                    }
                    closed
                }));
            }
            let mut closed = 0;
            for socket in sockets {
                closed += socket.await.unwrap();
            }
            closed
        })
        .await;
    assert!(
        closed >= 8,
        "the server closed only {closed} TLS connections"
    );
}

/// Two clients open the live tail and never read it while large events
/// arrive: once their sockets are full they are dropped after
/// `WRITE_TIMEOUT_MS`, and their places go to new clients.
#[tokio::test]
async fn live_tail_clients_that_stop_reading_give_their_places_back() {
    let service =
        Hostile::start(&[("MAX_STREAM_CLIENTS", "2"), ("WRITE_TIMEOUT_MS", "1000")]).await;
    let target = service.target.clone();
    service
        .served_throughout("2 live-tail clients that never read", async {
            let mut silent = Vec::new();
            for _ in 0..2 {
                let mut stream = small_window_socket(ATTACKER_IP, target.addr).await;
                stream
                    .write_all(b"GET /v1/events/stream HTTP/1.1\r\nHost: x\r\n\r\n")
                    .await
                    .unwrap();
                // It reads the head of the answer, then nothing more.
                let head = read_head(&mut stream).await;
                assert!(head.starts_with("HTTP/1.1 200"), "{head}");
                silent.push(stream);
            }
            let client = target.client(ATTACKER_IP);
            let stream_url = format!("{}/v1/events/stream", target.base_url);
            let refused = client.get(&stream_url).send().await.unwrap();
            assert_eq!(
                refused.status(),
                503,
                "the two silent clients hold both places"
            );
            let header = |name| refused.headers().get(name).and_then(|v| v.to_str().ok());
            assert_eq!(header("retry-after"), Some("5"));
            assert_eq!(header("content-type"), Some("application/problem+json"));
            // 12 MiB of events: more than a socket's buffers hold.
            for _ in 0..24 {
                let stored = client
                    .post(format!("{}/", target.base_url))
                    .header("content-type", "application/cloudevents+json")
                    .body(event_with_data(512 * 1024))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(stored.status(), 204);
            }
            let started = Instant::now();
            let freed = within(Duration::from_secs(20), || async {
                client
                    .get(&stream_url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200)
            })
            .await
            .is_some();
            assert!(
                freed,
                "clients that stopped reading still hold every live-tail place after 20 s"
            );
            eprintln!("a place was free {:?} after the events", started.elapsed());
            drop(silent);
        })
        .await;
}

/// 2,000 requests with methods nobody defined: `/metrics` keeps one series
/// for all of them, not one each.
#[tokio::test]
async fn invented_methods_do_not_grow_the_metrics() {
    let service = Hostile::start(&[]).await;
    let target = service.target.clone();
    let client = reqwest::Client::new();
    let metrics_url = format!("{}/metrics", target.base_url);
    let metrics = || async {
        client
            .get(&metrics_url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let before = metrics().await.len();
    service
        .served_throughout("2,000 invented methods", async {
            for i in 0..2000 {
                let method = reqwest::Method::from_bytes(format!("M{i:05}X").as_bytes()).unwrap();
                let answered = client
                    .request(method, format!("{}/healthz", target.base_url))
                    .send()
                    .await
                    .unwrap();
                assert!(answered.status().is_client_error(), "{}", answered.status());
            }
        })
        .await;
    let after = metrics().await;
    eprintln!("/metrics: {before} bytes before, {} after", after.len());
    assert!(!after.contains("M00001X"), "an invented method is a label");
    assert!(after.contains(r#"method="other""#), "{after}");
    let grown = after.len().saturating_sub(before);
    assert!(grown < 16 * 1024, "/metrics grew by {grown} bytes");
}

/// Over its rate limit a client gets 429 with Retry-After; others,
/// told apart by address when no tokens are set, are served.
#[tokio::test]
async fn a_client_over_its_rate_limit_by_address_gets_429_and_others_are_served() {
    let service = Hostile::start(&[
        ("READ_RATE_LIMIT", "1"),
        ("READ_RATE_BURST", "5"),
        ("INGEST_RATE_LIMIT", "5"),
        ("INGEST_RATE_BURST", "50"),
    ])
    .await;
    let target = service.target.clone();
    let attacker = target.client(ATTACKER_IP);
    let (reads, posts) = service
        .served_throughout("a flood of reads and events from one address", async {
            let reads = flood(&attacker, 40, |c| {
                c.get(format!("{}/v1/events", target.base_url))
            })
            .await;
            let posts = flood(&attacker, 200, |c| {
                c.post(format!("{}/", target.base_url))
                    .header("content-type", "application/cloudevents+json")
                    .body(event_with_data(10))
            })
            .await;
            (reads, posts)
        })
        .await;
    assert_limited("reads", &reads, 5, 1);
    assert_limited("events", &posts, 50, 5);
}

#[tokio::test]
async fn a_client_over_its_rate_limit_by_token_gets_429_and_other_tokens_are_served() {
    const FLOODER: &str = "flooding-token-0123456789";
    const NORMAL: &str = "normal-token-0123456789";
    let tokens = format!("{FLOODER},{NORMAL}");
    let mut service = Hostile::start(&[
        ("INGEST_TOKENS", &tokens),
        ("INGEST_RATE_LIMIT", "5"),
        ("INGEST_RATE_BURST", "50"),
    ])
    .await;
    service.target.ingest_token = Some(NORMAL.to_owned());
    let target = service.target.clone();
    // From the probe's own address: only the token tells them apart.
    let attacker = target.client(PROBE_IP);
    let posts = service
        .served_throughout("a flood of events with one token", async {
            flood(&attacker, 200, |c| {
                c.post(format!("{}/", target.base_url))
                    .bearer_auth(FLOODER)
                    .header("content-type", "application/cloudevents+json")
                    .body(event_with_data(10))
            })
            .await
        })
        .await;
    assert_limited("events", &posts, 50, 5);
}

/// A flood's answers: each one's status, Retry-After and body; and how
/// long the flood took.
struct Flood {
    answers: Vec<(u16, Option<String>, String)>,
    took: Duration,
}

/// How long a flood lasts at the least: long enough for the probe beside
/// it to be answered several times (a fast machine refuses a round of 200
/// requests in a fraction of a second).
const FLOOD_LASTS: Duration = Duration::from_millis(1500);

/// Sends requests 8 at a time, in rounds of `n`, until [`FLOOD_LASTS`]
/// has passed.
async fn flood(
    client: &reqwest::Client,
    n: usize,
    request: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
) -> Flood {
    use futures::StreamExt;
    let started = Instant::now();
    let mut answers = Vec::new();
    while answers.is_empty() || started.elapsed() < FLOOD_LASTS {
        let round: Vec<_> = futures::stream::iter((0..n).map(|_| request(client).send()))
            .buffer_unordered(8)
            .then(|answered| async move {
                let r = answered.unwrap();
                let status = r.status().as_u16();
                let retry_after = r
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_owned());
                let content_type = r
                    .headers()
                    .get("content-type")
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default();
                let body = r.text().await.unwrap_or_default();
                (status, retry_after, format!("{content_type} {body}"))
            })
            .collect()
            .await;
        answers.extend(round);
    }
    Flood {
        answers,
        took: started.elapsed(),
    }
}

/// Some answers were 429 problem+json with a Retry-After of at least one
/// second, and no more succeeded than the bucket holds (`burst`) plus what
/// it refilled (`per_second`) while the flood lasted: on a slow machine the
/// flood takes longer and more are rightly served.
fn assert_limited(what: &str, flood: &Flood, burst: usize, per_second: usize) {
    let answers = &flood.answers;
    let ok = answers.iter().filter(|a| (200..300).contains(&a.0)).count();
    let limited: Vec<_> = answers.iter().filter(|a| a.0 == 429).collect();
    let refilled = (flood.took.as_secs_f64() * per_second as f64).ceil() as usize;
    eprintln!(
        "{what}: {ok} served, {} answered 429, of {} in {:?}",
        limited.len(),
        answers.len(),
        flood.took
    );
    assert_eq!(ok + limited.len(), answers.len(), "{answers:?}");
    assert!(!limited.is_empty(), "no {what} refused: {ok} served");
    assert!(
        ok >= burst / 2 && ok <= burst + refilled + 1,
        "{ok} {what} served; the bucket holds {burst} and refilled {refilled}"
    );
    for (_, retry_after, body) in limited {
        let seconds: u64 = retry_after
            .as_deref()
            .expect("a 429 has Retry-After")
            .parse()
            .unwrap();
        assert!(seconds >= 1, "Retry-After: {seconds}");
        assert!(body.starts_with("application/problem+json"), "{body}");
        assert!(body.contains("\"status\":429"), "{body}");
    }
}

/// Failed TLS handshakes are logged, but not one line each: a client that
/// fails 20 in a row makes one warning, which names the reason.
#[tokio::test]
async fn failed_tls_handshakes_are_logged_a_line_at_a_time() {
    let service = Hostile::start_tls(&[]).await;
    for _ in 0..20 {
        // Plain HTTP to the TLS port: the handshake fails at once.
        let mut stream = TcpStream::connect(service.target.addr).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        read_until_closed(&mut stream, Instant::now() + Duration::from_secs(5)).await;
    }
    let logged = within(Duration::from_secs(5), || async {
        service.process.log_count("TLS handshakes failed") >= 1
    })
    .await
    .is_some();
    let log = service.process.logs();
    assert!(logged, "no line about the failed handshakes:\n{log}");
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("TLS handshakes failed"))
        .collect();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(lines[0].contains("\"level\":\"WARN\""), "{}", lines[0]);
    assert!(lines[0].contains("\"error\":"), "{}", lines[0]);
    assert!(lines[0].contains("\"peer\":"), "{}", lines[0]);
}
