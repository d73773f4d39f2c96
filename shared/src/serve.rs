//! The HTTP server both services run: plain TCP or TLS, a deadline for a
//! client to send its request headers, a cap on open connections and on the
//! size of a request's headers, and a graceful shutdown.
//!
//! Written on hyper-util's connection builder because `axum::serve` has no
//! TLS, no header-read timeout and no connection cap; hyper-util is what
//! `axum::serve` itself runs on, so requests reach the router the same way.

use crate::config::{env_parse, ConfigError};
use crate::problem::Problem;
use crate::tls::{TlsError, TlsFiles};
use axum::body::Body;
use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use rustls::ServerConfig;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// The most bytes of request headers (names and values, the request line
/// excluded) a request may carry; beyond it the answer is 431. The `ce-`
/// attributes of a binary-mode event travel here, and 64 KiB holds the
/// 64 KiB events the CloudEvents spec asks receivers to accept (their data
/// is in the body). HTTP/1.1's parser stops at its own read buffer
/// (~400 KiB), and HTTP/2's at twice this limit, with a bare 431.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Connections beyond the cap that are still answered (with a 503) rather
/// than closed at once: enough for a burst to learn why, few enough that
/// the answers cost nothing.
const REFUSED_CONNECTIONS: usize = 64;

/// What one client can make the server hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// `MAX_CONNECTIONS`: open connections at once. The next ones are
    /// answered 503 and closed.
    pub max_connections: usize,
    /// `HEADER_READ_TIMEOUT_MS`: how long a client has, from connecting (or
    /// from its previous request on a kept-alive connection), to finish
    /// sending a request's headers, the TLS handshake included. A slower
    /// client is disconnected: it holds a connection, not a request.
    pub header_read_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
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
        for (name, value) in [
            ("MAX_CONNECTIONS", max_connections as u64),
            ("HEADER_READ_TIMEOUT_MS", timeout_ms),
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
        .max_header_list_size(2 * MAX_HEADER_BYTES as u32);
    let mut refuse_builder = builder.clone();
    refuse_builder.http1().keep_alive(false);
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let refusing = Arc::new(Semaphore::new(REFUSED_CONNECTIONS));
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
            tls: tls.clone(),
            header_read_timeout: limits.header_read_timeout,
        };
        if let Ok(permit) = open.clone().try_acquire_owned() {
            connections.spawn(connection.serve(
                stream,
                builder.clone(),
                router.clone(),
                closing.clone(),
                permit,
            ));
        } else if let Ok(permit) = refusing.clone().try_acquire_owned() {
            tracing::warn!(%peer, max = limits.max_connections, "connection refused: too many open connections");
            connections.spawn(connection.refuse(stream, refuse_builder.clone(), permit));
        }
        // Beyond both, `stream` is dropped here: closed unanswered.
    }
    drop(listener);
    let _ = close.send(true);
    while connections.join_next().await.is_some() {}
}

struct Connection {
    tls: Option<TlsAcceptor>,
    header_read_timeout: Duration,
}

impl Connection {
    async fn serve(
        self,
        stream: TcpStream,
        builder: Builder<TokioExecutor>,
        router: Router,
        mut closing: watch::Receiver<bool>,
        _permit: OwnedSemaphorePermit,
    ) {
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let router = router.clone();
            async move {
                if let Some(refused) = check_headers(&request) {
                    return Ok::<_, Infallible>(refused);
                }
                router.oneshot(request.map(Body::new)).await
            }
        });
        let Some(io) = self.handshake(stream).await else {
            return;
        };
        let connection = builder.serve_connection_with_upgrades(io, service);
        tokio::pin!(connection);
        tokio::select! {
            _ = connection.as_mut() => return,
            _ = closing.wait_for(|closing| *closing) => {}
        }
        connection.as_mut().graceful_shutdown();
        let _ = connection.await;
    }

    /// Answers every request on the connection 503 and closes it.
    async fn refuse(
        self,
        stream: TcpStream,
        builder: Builder<TokioExecutor>,
        _permit: OwnedSemaphorePermit,
    ) {
        let deadline = self.header_read_timeout;
        let Some(io) = self.handshake(stream).await else {
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
        let _ = tokio::time::timeout(deadline, builder.serve_connection(io, service)).await;
    }

    /// The connection's byte stream, after the TLS handshake when there is
    /// one. A handshake must finish within the header-read timeout, or a
    /// client that never completes it would hold the connection for ever.
    async fn handshake(&self, stream: TcpStream) -> Option<TokioIo<Io>> {
        let Some(tls) = &self.tls else {
            return Some(TokioIo::new(Io::Plain(stream)));
        };
        match tokio::time::timeout(self.header_read_timeout, tls.accept(stream)).await {
            Ok(Ok(stream)) => Some(TokioIo::new(Io::Tls(Box::new(stream)))),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!("TLS handshake timed out");
                None
            }
        }
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

/// A plain or a TLS connection, one type for the connection builder.
enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl tokio::io::AsyncRead for Io {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => std::pin::Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for Io {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => std::pin::Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => std::pin::Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => std::pin::Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            Io::Tls(s) => std::pin::Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => std::pin::Pin::new(s).poll_shutdown(cx),
        }
    }
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
