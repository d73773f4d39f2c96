//! Publishing over HTTP, classified as Knative's data plane does (README,
//! "Delivery, and what happens when things fail").

use super::Outcome;
use crate::config::{ContentMode, HttpClientSettings};
use anyhow::Context;
use cloudevents::{AttributesReader, Event};
use cloudevents_wire::binding::{to_http_binary, BATCH_JSON, STRUCTURED_JSON};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub struct HttpPublisher {
    client: reqwest::Client,
    url: reqwest::Url,
    mode: ContentMode,
}

/// How much of a rejecting receiver's body is kept as the reason.
const REASON_BYTES: usize = 300;

impl HttpPublisher {
    pub fn new(
        url: &str,
        mode: ContentMode,
        timeout: Duration,
        security: &HttpClientSettings,
    ) -> anyhow::Result<Self> {
        let url = reqwest::Url::parse(url)
            .with_context(|| format!("AUDIT_URL {:?} is not a URL", settings::redact::url(url)))?;
        let mut builder = reqwest::Client::builder();
        if let Some(token) = &security.token {
            if url.scheme() != "https" {
                tracing::warn!("AUDIT_TOKEN is sent over plain HTTP: anyone on the path can read it; use an https AUDIT_URL");
            }
            let mut value = HeaderValue::try_from(token.header_value())
                .context("AUDIT_TOKEN is not a valid header value")?;
            // Marked sensitive: HTTP/2 never indexes it and Debug hides it.
            value.set_sensitive(true);
            builder = builder.default_headers(HeaderMap::from_iter([(AUTHORIZATION, value)]));
        }
        if let Some(path) = &security.ca_file {
            let pem = std::fs::read(path)
                .with_context(|| format!("Failed to read AUDIT_CA_FILE {}", path.display()))?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem).with_context(|| {
                format!("AUDIT_CA_FILE {} is not PEM certificates", path.display())
            })?;
            if certificates.is_empty() {
                anyhow::bail!("AUDIT_CA_FILE {} holds no certificate", path.display());
            }
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let client = builder
            .timeout(timeout)
            .connect_timeout(timeout)
            // A redirect is "a status not listed", i.e. retried; following it
            // would send events somewhere nobody configured.
            .redirect(reqwest::redirect::Policy::none())
            // audit-service closes a keep-alive connection idle for its
            // HEADER_READ_TIMEOUT_MS (10 s by default); an event sent on one
            // at that moment fails unanswered and waits for its retry. A
            // connection idle for half that is not reused.
            .pool_idle_timeout(Duration::from_secs(5))
            .build()
            .context("Failed to build the HTTP client")?;
        Ok(HttpPublisher { client, url, mode })
    }

    pub fn describe(&self) -> String {
        // The URL may carry credentials (https://user:password@host/).
        format!(
            "http {} ({:?} mode)",
            settings::redact::url(self.url.as_str()),
            self.mode
        )
    }

    /// Sends one event in the configured content mode.
    #[tracing::instrument(skip_all, fields(event_id = event.id(), event_type = event.ty()))]
    pub async fn publish(&self, event: &Event) -> Outcome {
        let request = match self.mode {
            ContentMode::Binary => {
                let (headers, body) = to_http_binary(event);
                self.client
                    .post(self.url.clone())
                    .headers(headers)
                    .body(body)
            }
            ContentMode::Structured => match serde_json::to_vec(event) {
                Ok(body) => self
                    .client
                    .post(self.url.clone())
                    .header(CONTENT_TYPE, STRUCTURED_JSON)
                    .body(body),
                Err(e) => {
                    return Outcome::Nack {
                        status: None,
                        reason: format!("event does not serialize: {e}"),
                    }
                }
            },
        };
        send(request).await
    }

    /// Sends events in batch mode (`application/cloudevents-batch+json`):
    /// one JSON array of the events as the outbox holds them, in the JSON
    /// event format already, so they are joined, not re-encoded.
    #[tracing::instrument(skip_all, fields(events = events.len()))]
    pub async fn publish_batch(&self, events: &[Arc<str>]) -> Outcome {
        let size = events.iter().map(|e| e.len() + 1).sum::<usize>() + 2;
        let mut body = String::with_capacity(size);
        body.push('[');
        for (i, event) in events.iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            body.push_str(event);
        }
        body.push(']');
        let request = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, BATCH_JSON)
            .body(body);
        send(request).await
    }
}

async fn send(request: reqwest::RequestBuilder) -> Outcome {
    // While spans are exported the request continues the current one (the
    // event's publish span, for a single event), so the receiver's request
    // span joins that trace. The event's own context is in the event.
    let request = if service_kit::telemetry::traces_exported() {
        let mut headers = reqwest::header::HeaderMap::new();
        cloudevents_wire::tracecontext::to_headers(
            &cloudevents_wire::tracecontext::current(),
            &mut headers,
        );
        request.headers(headers)
    } else {
        request
    };
    let response = match request.send().await {
        Ok(r) => r,
        Err(e) => {
            let advice = certificate_advice(&e);
            // Without the URL: it may carry credentials, and the
            // publisher's description names the target already.
            let chain = service_kit::telemetry::one_line(&e.without_url());
            let reason = match advice {
                Some(advice) => format!("{advice} ({chain})"),
                None => chain,
            };
            return Outcome::Retry {
                after: None,
                status: None,
                reason,
            };
        }
    };
    let status = response.status();
    if status.is_success() {
        return Outcome::Ack;
    }
    let after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(parse_retry_after);
    let reason = format!("{status}: {}", reason_of(response).await.trim());
    classify(status, after, reason)
}

/// What to change when audit-service's certificate was refused, in words.
/// rustls names the problem (`CaUsedAsEndEntity`, `NotValidForName`) but
/// not what to do about it, and a relay that retries for ever with only
/// that in its log leaves the operator guessing; the first two are what
/// `openssl req -x509` makes without extensions.
fn certificate_advice(error: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    use rustls::CertificateError as Problem;
    let problem = std::iter::successors(Some(error), |e| e.source()).find_map(|e| {
        // rustls' error arrives inside io::Errors (two of them, from
        // tokio-rustls and hyper-util), whose `source` skips what they hold.
        let mut inner: &(dyn std::error::Error + 'static) = e;
        while let Some(io) = inner.downcast_ref::<std::io::Error>() {
            inner = io.get_ref()?;
        }
        match inner.downcast_ref::<rustls::Error>()? {
            rustls::Error::InvalidCertificate(problem) => Some(problem),
            _ => None,
        }
    })?;
    Some(match problem {
        // webpki's reason comes only as text through rustls' `Other`.
        Problem::Other(other) if other.to_string().contains("CaUsedAsEndEntity") => {
            "audit-service's certificate is a CA certificate (basicConstraints CA:TRUE, what \
             `openssl req -x509` makes by default), which TLS clients refuse as a server's: make \
             it with -addext \"basicConstraints=critical,CA:FALSE\" -addext \
             \"subjectAltName=DNS:<host>\", or sign a server certificate with a CA and trust \
             that CA (README, \"TLS\")"
        }
        Problem::NotValidForName | Problem::NotValidForNameContext { .. } => {
            "audit-service's certificate does not name AUDIT_URL's host: give it a \
             subjectAltName with that name (-addext \"subjectAltName=DNS:<host>\"; the CN alone \
             is not read)"
        }
        Problem::UnknownIssuer => {
            "audit-service's certificate is not signed by a CA user-service trusts: set \
             AUDIT_CA_FILE to the certificate of the CA that signed it (for a self-signed \
             certificate, to the certificate itself)"
        }
        Problem::Expired
        | Problem::ExpiredContext { .. }
        | Problem::NotValidYet
        | Problem::NotValidYetContext { .. } => {
            "audit-service's certificate is expired or not valid yet: renew it (or check the \
             clocks of both machines)"
        }
        Problem::InvalidPurpose | Problem::InvalidPurposeContext { .. } => {
            "audit-service's certificate is not for TLS servers: give it extendedKeyUsage \
             serverAuth, or none"
        }
        _ => return None,
    })
}

/// The start of a rejecting receiver's body, as the reason to record. Only
/// what is kept is read: a receiver answering with a huge (or endless)
/// body costs us `REASON_BYTES`, not the body. The rest is abandoned with
/// the connection.
async fn reason_of(mut response: reqwest::Response) -> String {
    let mut kept = Vec::with_capacity(REASON_BYTES);
    while kept.len() < REASON_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let take = chunk.len().min(REASON_BYTES - kept.len());
                kept.extend_from_slice(&chunk[..take]);
            }
            // The end, or a body that broke off: keep what came.
            Ok(None) | Err(_) => break,
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// The delivery rules. Every status not named as permanent is retried.
fn classify(status: StatusCode, after: Option<Duration>, reason: String) -> Outcome {
    let retryable = matches!(status.as_u16(), 404 | 408 | 409 | 429);
    if status.is_client_error() && !retryable {
        Outcome::Nack {
            status: Some(status.as_u16()),
            reason,
        }
    } else {
        Outcome::Retry {
            after,
            status: Some(status.as_u16()),
            reason,
        }
    }
}

/// `Retry-After` as delay-seconds or an HTTP date (RFC 9110, 10.2.3).
fn parse_retry_after(value: &HeaderValue) -> Option<Duration> {
    let value = value.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    // A date in the past means "now".
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(code: u16) -> &'static str {
        match classify(StatusCode::from_u16(code).unwrap(), None, String::new()) {
            Outcome::Ack => "ack",
            Outcome::Retry { .. } => "retry",
            Outcome::Nack { .. } => "nack",
        }
    }

    #[test]
    fn statuses_are_classified_as_knative_does() {
        for code in [404, 408, 409, 429, 500, 502, 503, 504, 300, 307, 100] {
            assert_eq!(class(code), "retry", "{code}");
        }
        for code in [400, 401, 403, 405, 410, 413, 415, 422, 451] {
            assert_eq!(class(code), "nack", "{code}");
        }
    }

    #[test]
    fn retry_after_is_read_as_seconds_or_a_date() {
        assert_eq!(
            parse_retry_after(&HeaderValue::from_static("7")),
            Some(Duration::from_secs(7))
        );
        let soon = SystemTime::now() + Duration::from_secs(60);
        let date = HeaderValue::from_str(&httpdate::fmt_http_date(soon)).unwrap();
        let parsed = parse_retry_after(&date).unwrap();
        assert!(parsed > Duration::from_secs(55) && parsed <= Duration::from_secs(60));
        assert_eq!(
            parse_retry_after(&HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT")),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after(&HeaderValue::from_static("soon")), None);
    }

    #[test]
    fn credentials_in_audit_url_are_never_shown() {
        let publisher = HttpPublisher::new(
            "https://relay:s3cret@audit.example:8443/",
            ContentMode::Binary,
            Duration::from_secs(1),
            &HttpClientSettings::default(),
        )
        .unwrap();
        let shown = publisher.describe();
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("relay:***@audit.example"), "{shown}");
        let Err(error) = HttpPublisher::new(
            "http://relay:s3cret@[bad",
            ContentMode::Binary,
            Duration::from_secs(1),
            &HttpClientSettings::default(),
        ) else {
            panic!("a bad URL was accepted");
        };
        let shown = format!("{error:#}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[tokio::test]
    async fn a_rejecting_receivers_endless_body_is_read_only_as_far_as_the_reason_keeps() {
        use axum::body::{Body, Bytes};
        use futures::stream;
        // 400 with a body that never ends: reading it whole would never
        // finish (and time out into a retry, with no reason kept).
        let app = axum::Router::new().fallback(|| async {
            let endless = stream::repeat_with(|| {
                Ok::<_, std::convert::Infallible>(Bytes::from(vec![b'x'; 4096]))
            });
            (StatusCode::BAD_REQUEST, Body::from_stream(endless))
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let publisher = HttpPublisher::new(
            &url,
            ContentMode::Binary,
            Duration::from_secs(30),
            &HttpClientSettings::default(),
        )
        .unwrap();

        let outcome = publisher
            .publish_batch(&[Arc::from("{}"), Arc::from("{}")])
            .await;

        let Outcome::Nack { status, reason } = outcome else {
            panic!("{outcome:?}");
        };
        assert_eq!(status, Some(400));
        assert!(reason.ends_with(&"x".repeat(REASON_BYTES)), "{reason}");
        assert!(reason.len() <= REASON_BYTES + 40, "{}", reason.len());
    }
}
