//! The HTTP server both services run: plain TCP or TLS, deadlines for a
//! client to send its request headers and to read its answer, a cap on open
//! connections and on the size of a request's headers, and a graceful
//! shutdown.
//!
//! Written on hyper-util's connection builder because `axum::serve` has no
//! TLS, no header-read timeout and no connection cap; hyper-util is what
//! `axum::serve` itself runs on, so requests reach the router the same way.
//!
//! hyper's own header-read timeout starts only once hyper-util has read
//! enough to tell HTTP/1.1 from HTTP/2, and HTTP/2 has none, so this module
//! keeps its own clock per connection (`activity`): a connection with no
//! request in progress for the header-read timeout (from connecting, TLS
//! handshake included, or from its last response) is closed.

mod activity;
mod io;
mod tally;

use crate::problem::Problem;
use crate::tls::{TlsError, TlsFiles};
use activity::{Registry, TrackedBody};
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use io::Io;
use rustls::ServerConfig;
use settings::{env_parse, ConfigError};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tally::Tally;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// The most bytes of request headers (names and values, the request line
/// excluded) a request may carry; beyond it the answer is 431. The `ce-`
/// attributes of a binary-mode event travel here, and 64 KiB holds the
/// 64 KiB events the CloudEvents spec asks receivers to accept (their data
/// is in the body). HTTP/1.1's parser stops at its own read buffer
/// (~400 KiB), and HTTP/2's at twice this limit, with a bare 431.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// New connections at the cap that wait for an idle one to make room, or
/// are answered 503 when none is idle: enough for a burst to learn why,
/// few enough that the answers cost nothing. Beyond them a new connection
/// is closed at once.
const WAITING_CONNECTIONS: usize = 64;

/// How long a new connection at the cap waits for an idle one to make
/// room before it is answered 503.
const PLACE_WAIT: Duration = Duration::from_secs(1);

/// How long a connection must have been idle before it is closed to make
/// room: longer than a normal client takes to send its request once
/// connected (a TLS handshake included).
const EVICTABLE_AFTER: Duration = Duration::from_millis(200);

/// How often a new connection at the cap looks again for one to close.
const EVICTION_RETRY: Duration = Duration::from_millis(25);

/// How long a connection idle for the header-read timeout gets, once told
/// to close, to send its GOAWAY (and, for HTTP/2, have its last ping
/// answered) or to finish a request that began just then.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The same for a connection closed to make room for a new one, which
/// waits meanwhile.
const EVICTION_GRACE: Duration = Duration::from_millis(50);

/// How long an HTTP/2 connection may send nothing before it is pinged; it
/// is closed when the ping is not acknowledged within the write timeout.
const HTTP2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);

/// What one client can make the server hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// `MAX_CONNECTIONS`: open connections at once. At the cap a new one
    /// takes the place of the connection idle longest; when none is idle,
    /// it is answered 503 and closed.
    pub max_connections: usize,
    /// `HEADER_READ_TIMEOUT_MS`: how long a client has, from connecting (or
    /// from the end of its previous response on a kept-alive connection,
    /// HTTP/2 included), to finish sending a request's headers, the TLS
    /// handshake included. A slower client is disconnected: it holds a
    /// connection, not a request.
    pub header_read_timeout: Duration,
    /// `WRITE_TIMEOUT_MS`: how long writing to a client may make no
    /// progress (a client that stopped reading, such as a live-tail client
    /// whose socket is full) before its connection is closed.
    pub write_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
        }
    }
}

impl ServerLimits {
    pub fn from_env() -> Result<Self, ConfigError> {
        let defaults = ServerLimits::default();
        let max_connections = env_parse("MAX_CONNECTIONS", defaults.max_connections)?;
        let timeout_ms = env_parse(
            "HEADER_READ_TIMEOUT_MS",
            defaults.header_read_timeout.as_millis() as u64,
        )?;
        let write_timeout_ms = env_parse(
            "WRITE_TIMEOUT_MS",
            defaults.write_timeout.as_millis() as u64,
        )?;
        for (name, value) in [
            ("MAX_CONNECTIONS", max_connections as u64),
            ("HEADER_READ_TIMEOUT_MS", timeout_ms),
            ("WRITE_TIMEOUT_MS", write_timeout_ms),
        ] {
            if value == 0 {
                return Err(ConfigError {
                    name: name.into(),
                    value: "0".into(),
                    reason: "must be at least 1".into(),
                });
            }
        }
        Ok(ServerLimits {
            max_connections,
            header_read_timeout: Duration::from_millis(timeout_ms),
            write_timeout: Duration::from_millis(write_timeout_ms),
        })
    }
}

/// How a service listens, as configured: TLS files and limits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenSettings {
    /// `TLS_CERT_FILE` and `TLS_KEY_FILE`; plain HTTP without them.
    pub tls: Option<TlsFiles>,
    pub limits: ServerLimits,
}

impl ListenSettings {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(ListenSettings {
            tls: TlsFiles::from_env()?,
            limits: ServerLimits::from_env()?,
        })
    }

    /// Reads the certificate and key, so a bad file stops the service at
    /// start rather than at its first client.
    pub fn options(&self) -> Result<ServeOptions, TlsError> {
        Ok(ServeOptions {
            limits: self.limits,
            tls: self.tls.as_ref().map(TlsFiles::server_config).transpose()?,
        })
    }
}

/// How a service listens: its limits, and TLS when configured.
#[derive(Clone, Default)]
pub struct ServeOptions {
    pub limits: ServerLimits,
    pub tls: Option<Arc<ServerConfig>>,
}

impl ServeOptions {
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }
}

/// Serves `router` on `listener` until `signal` resolves, then stops
/// accepting, asks every connection to finish its request in hand, and
/// resolves when all have closed. Dropping the returned future drops every
/// connection still open.
///
/// Each request carries the client's address as an axum `ConnectInfo`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    options: ServeOptions,
    signal: impl Future<Output = ()>,
) {
    let limits = options.limits;
    let tls = options.tls.map(TlsAcceptor::from);
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(2 * MAX_HEADER_BYTES as u32)
        // A client that no longer reads its socket never acknowledges a
        // ping: found even while its streams wait on flow control, where
        // no write to the socket would ever time out.
        .keep_alive_interval(HTTP2_KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(limits.write_timeout);
    let mut refuse_builder = builder.clone();
    refuse_builder.http1().keep_alive(false);
    let server = Arc::new(Server {
        tls,
        limits,
        builder,
        refuse_builder,
        router,
        open: Arc::new(Semaphore::new(limits.max_connections)),
        registry: Registry::default(),
        tls_failures: Tally::new(tally::LOG_PERIOD),
        refusals: Tally::new(tally::LOG_PERIOD),
    });
    let waiting = Arc::new(Semaphore::new(WAITING_CONNECTIONS));
    let (close, closing) = watch::channel(false);
    // Owned here, so dropping this future aborts every connection.
    let mut connections = JoinSet::new();
    tokio::pin!(signal);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut signal => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before
                    // it was accepted: neither ends the server. The pause
                    // keeps a full descriptor table from spinning the loop.
                    tracing::warn!(error = %e, "failed to accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        let connection = Connection {
            server: server.clone(),
            stream,
            peer,
            accepted: Instant::now(),
        };
        if let Ok(place) = server.open.clone().try_acquire_owned() {
            connections.spawn(connection.serve(place, closing.clone()));
        } else if let Ok(waiting) = waiting.clone().try_acquire_owned() {
            connections.spawn(connection.wait_for_place(waiting, closing.clone()));
        }
        // Beyond both, `stream` is dropped: closed unanswered.
    }
    drop(listener);
    let _ = close.send(true);
    while connections.join_next().await.is_some() {}
}

/// What every connection of one server shares.
struct Server {
    tls: Option<TlsAcceptor>,
    limits: ServerLimits,
    builder: Builder<TokioExecutor>,
    refuse_builder: Builder<TokioExecutor>,
    router: Router,
    /// A place per connection served (`MAX_CONNECTIONS`).
    open: Arc<Semaphore>,
    registry: Registry,
    tls_failures: Tally,
    refusals: Tally,
}

/// One accepted connection, not yet served.
struct Connection {
    server: Arc<Server>,
    stream: TcpStream,
    peer: SocketAddr,
    accepted: Instant,
}

impl Connection {
    /// Serves the connection in `place`: requests until the client closes
    /// it, the server shuts down, it has been idle for the header-read
    /// timeout (from connecting, or from the end of its last response), or
    /// a new client needs its place while it is idle. Idle HTTP/2
    /// connections are sent a GOAWAY; HTTP/1.1 ones are closed.
    async fn serve(self, place: OwnedSemaphorePermit, mut closing: watch::Receiver<bool>) {
        let _place = place;
        let server = self.server.clone();
        let limits = server.limits;
        let registration = server.registry.register();
        let activity = registration.activity.clone();
        let deadline = self.accepted + limits.header_read_timeout;
        let peer = self.peer;
        let io = tokio::select! {
            io = self.handshake(deadline) => io,
            () = activity.evicted.cancelled() => None,
        };
        let Some(io) = io else {
            return;
        };
        let service = hyper::service::service_fn({
            let activity = activity.clone();
            let router = server.router.clone();
            move |mut request: Request<Incoming>| {
                let busy = activity.begin();
                request.extensions_mut().insert(ConnectInfo(peer));
                let router = router.clone();
                async move {
                    let response = match check_headers(&request) {
                        Some(refused) => refused,
                        None => match router.oneshot(request.map(Body::new)).await {
                            Ok(response) => response,
                            Err(never) => match never {},
                        },
                    };
                    Ok::<_, Infallible>(response.map(|body| TrackedBody { body, _busy: busy }))
                }
            }
        });
        let connection = server.builder.serve_connection_with_upgrades(io, service);
        tokio::pin!(connection);
        let server_closing = tokio::select! {
            _ = connection.as_mut() => return,
            _ = closing.wait_for(|closing| *closing) => true,
            () = activity.evicted.cancelled() => false,
            () = activity.idle_for(limits.header_read_timeout) => false,
        };
        connection.as_mut().graceful_shutdown();
        if server_closing {
            // The requests in hand finish; the caller bounds the wait.
            let _ = connection.await;
            return;
        }
        // Time to send the GOAWAY, or to finish a request that began just
        // now; a client that sent half its headers is dropped after it.
        // Making room for a new client, which waits, the time is short.
        let grace = match activity.evicted.is_cancelled() {
            true => EVICTION_GRACE,
            false => CLOSE_GRACE,
        };
        activity.restart_idle_clock();
        tokio::select! {
            _ = connection => {}
            () = activity.idle_for(grace) => {}
        }
    }

    /// At the cap: the connection idle longest (a client between requests,
    /// or one that never sent any) makes room, so idle sockets cannot keep
    /// a new client out. Only connections idle for `EVICTABLE_AFTER` are
    /// closed so, which gives a new client time to send its request (a
    /// flood of new connections would otherwise close each other, and a
    /// normal client's among them, before any sent one); when none is
    /// within `PLACE_WAIT`, the answer is 503.
    async fn wait_for_place(self, waiting: OwnedSemaphorePermit, closing: watch::Receiver<bool>) {
        let server = self.server.clone();
        let deadline = Instant::now() + PLACE_WAIT;
        let place = loop {
            let wait_until = match server.registry.evict_longest_idle(EVICTABLE_AFTER) {
                true => deadline,
                false => deadline.min(Instant::now() + EVICTION_RETRY),
            };
            match tokio::time::timeout_at(wait_until, server.open.clone().acquire_owned()).await {
                Ok(Ok(place)) => break Some(place),
                // The semaphore is never closed.
                Ok(Err(_)) => break None,
                Err(_) if Instant::now() >= deadline => break None,
                Err(_) => {}
            }
        };
        match place {
            Some(place) => {
                drop(waiting);
                self.serve(place, closing).await;
            }
            None => self.refuse(waiting).await,
        }
    }

    /// Answers every request on the connection 503 and closes it.
    async fn refuse(self, _waiting: OwnedSemaphorePermit) {
        let server = self.server.clone();
        if let Some(refused) = server.refusals.record() {
            tracing::warn!(
                refused,
                peer = %self.peer,
                max = server.limits.max_connections,
                "connections refused: too many open connections, none of them idle"
            );
        }
        let deadline = self.accepted + server.limits.header_read_timeout;
        let Some(io) = self.handshake(deadline).await else {
            return;
        };
        let service = hyper::service::service_fn(|_: Request<Incoming>| async {
            let mut response = Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server has too many open connections; retry later",
            )
            .into_response();
            let headers = response.headers_mut();
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            Ok::<_, Infallible>(response)
        });
        let _ = tokio::time::timeout_at(
            deadline,
            server.refuse_builder.serve_connection(io, service),
        )
        .await;
    }

    /// The connection's byte stream, after the TLS handshake when there is
    /// one. The handshake must finish by `deadline`, or a client that never
    /// completes it would hold the connection for ever. Failures are logged
    /// as warnings, a line at a time with their count (any client can make
    /// as many as it likes).
    async fn handshake(self, deadline: Instant) -> Option<TokioIo<Io>> {
        let server = self.server;
        let tcp = io::with_write_timeout(self.stream, server.limits.write_timeout);
        let Some(tls) = &server.tls else {
            return Some(TokioIo::new(Io::Plain(tcp)));
        };
        let error = match tokio::time::timeout_at(deadline, tls.accept(tcp)).await {
            Ok(Ok(stream)) => return Some(TokioIo::new(Io::Tls(Box::new(stream)))),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no handshake within the header-read timeout".to_owned(),
        };
        if let Some(failed) = server.tls_failures.record() {
            tracing::warn!(
                failed,
                peer = %self.peer,
                error,
                "TLS handshakes failed"
            );
        }
        None
    }
}

/// A 431 problem for a request whose headers are larger than
/// `MAX_HEADER_BYTES`.
fn check_headers<B>(request: &Request<B>) -> Option<Response> {
    let size: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    (size > MAX_HEADER_BYTES).then(|| {
        Problem::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!(
                "the request headers are {size} bytes, more than the limit of {MAX_HEADER_BYTES}"
            ),
        )
        .into_response()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_over_the_limit_are_refused_with_a_problem() {
        let small = Request::builder().header("ce-id", "1").body(()).unwrap();
        assert!(check_headers(&small).is_none());
        let big = Request::builder()
            .header("ce-a", "x".repeat(MAX_HEADER_BYTES / 2))
            .header("ce-b", "x".repeat(MAX_HEADER_BYTES / 2))
            .body(())
            .unwrap();
        let refused = check_headers(&big).expect("refused");
        assert_eq!(
            refused.status(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        assert_eq!(
            refused.headers()[header::CONTENT_TYPE],
            crate::problem::CONTENT_TYPE
        );
    }
}
