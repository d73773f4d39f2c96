//! The NATS dead-letter subject: where messages that are not valid
//! CloudEvents go, with the reason, before they are acknowledged.
//!
//! A dead letter is the message's payload and headers unchanged, except the
//! JetStream control headers (`Nats-*`, which the dead-letter stream would
//! act on), plus `dlq-error` (why it was refused, cut by
//! `ingest::dead_letter::bounded`), `dlq-origin` (`stream/consumer/stream
//! sequence`) and a `Nats-Msg-Id` made from the origin, so a message
//! redelivered before its acknowledgement landed is dead-lettered once.
//! It is published to JetStream (the stream `NATS_DLQ_STREAM` keeps it) and
//! the server must acknowledge it before the original is acknowledged, so
//! transient failures are retried until they succeed or the service stops.
//! A dead letter refused for its size is sent once more without payload and
//! original headers, saying so in `dlq-dropped`; if even that is refused,
//! the message is logged, counted (`audit_dead_letters_failed_total`) and
//! acknowledged, and consumption goes on, as on Kafka.

use crate::config::NatsSettings;
use crate::ingest::dead_letter::{
    bounded, DLQ_DROPPED_HEADER, DLQ_ERROR_HEADER, DLQ_ORIGIN_HEADER,
};
use crate::ingest::decode::DecodeError;
use crate::ingest::{Backoff, Stopped};
use async_nats::header::{HeaderMap, HeaderValue, NATS_MESSAGE_ID};
use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::{self, stream, ErrorCode};
use bytes::Bytes;
use cloudevents_wire::Transport;
use futures::future::join_all;
use tokio_util::sync::CancellationToken;

/// A message the consumer refused, and why.
pub struct Rejected {
    pub headers: Option<HeaderMap>,
    pub payload: Bytes,
    /// `stream/consumer/stream sequence`.
    pub origin: String,
    pub error: DecodeError,
}

pub struct DeadLetters {
    js: jetstream::Context,
    subject: String,
    stream: String,
}

impl DeadLetters {
    pub fn new(js: jetstream::Context, settings: &NatsSettings) -> Self {
        DeadLetters {
            js,
            subject: settings.dlq_subject.clone(),
            stream: settings.dlq_stream.clone(),
        }
    }

    /// Creates the dead-letter stream unless it exists: file-backed,
    /// capturing the dead-letter subject, keeping what it holds (an operator
    /// reads and clears it).
    pub async fn ensure_stream(&self) -> Result<(), String> {
        brokers::nats::ensure_stream(
            &self.js,
            stream::Config {
                name: self.stream.clone(),
                subjects: vec![self.subject.clone()],
                storage: stream::StorageType::File,
                ..Default::default()
            },
        )
        .await
    }

    /// Dead-letters every message, all in flight together, and returns once
    /// the server has acknowledged (or permanently refused) each one.
    pub async fn send_all(
        &self,
        rejected: &[Rejected],
        shutdown: &CancellationToken,
    ) -> Result<(), Stopped> {
        let sent = join_all(rejected.iter().map(|r| self.send(r, shutdown))).await;
        sent.into_iter().collect()
    }

    async fn send(&self, rejected: &Rejected, shutdown: &CancellationToken) -> Result<(), Stopped> {
        let reason = header_text(&bounded(&rejected.error.to_string()));
        let origin = &rejected.origin;
        tracing::warn!(error = %reason, origin = %origin, dlq = %self.subject, "NATS message is not a valid CloudEvent; dead-lettering it");
        metrics::counter!("audit_events_rejected_total", "transport" => Transport::Nats.as_str())
            .increment(1);
        let mut full = HeaderMap::new();
        if let Some(original) = &rejected.headers {
            for (name, values) in original.iter() {
                let name_text: &str = name.as_ref();
                if name_text.len() >= 5 && name_text[..5].eq_ignore_ascii_case("nats-") {
                    continue;
                }
                for value in values {
                    full.append(name.clone(), value.clone());
                }
            }
        }
        let full = with_reason(full, &reason, origin);
        let error = match self
            .publish(full, rejected.payload.clone(), shutdown)
            .await?
        {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        tracing::warn!(error = %error, origin = %origin, "the dead letter was refused; sending it without payload and headers");
        let mut reduced = with_reason(HeaderMap::new(), &reason, origin);
        insert(
            &mut reduced,
            DLQ_DROPPED_HEADER,
            &header_text(&format!("payload and original headers dropped: {error}")),
        );
        if let Err(e) = self.publish(reduced, Bytes::new(), shutdown).await? {
            tracing::error!(error = %e, origin = %origin, dlq = %self.subject, "the dead letter was refused even without its payload; the message is skipped");
            metrics::counter!("audit_dead_letters_failed_total").increment(1);
        }
        Ok(())
    }

    /// Publishes one dead letter and waits for the server's acknowledgement,
    /// retrying transient failures. The inner result is a permanent refusal.
    async fn publish(
        &self,
        headers: HeaderMap,
        payload: Bytes,
        shutdown: &CancellationToken,
    ) -> Result<Result<(), PublishError>, Stopped> {
        let mut backoff = Backoff::new();
        loop {
            let sent = match self
                .js
                .publish_with_headers(self.subject.clone(), headers.clone(), payload.clone())
                .await
            {
                Ok(ack) => ack.await.map(|_| ()),
                Err(e) => Err(e),
            };
            match sent {
                Ok(()) => return Ok(Ok(())),
                Err(e) if is_permanent(&e) => return Ok(Err(e)),
                Err(e) => {
                    tracing::error!(error = %e, dlq = %self.subject, "dead-lettering failed; retrying");
                    backoff.pause(shutdown).await?;
                }
            }
        }
    }
}

fn with_reason(mut headers: HeaderMap, reason: &str, origin: &str) -> HeaderMap {
    insert(&mut headers, DLQ_ERROR_HEADER, reason);
    insert(&mut headers, DLQ_ORIGIN_HEADER, origin);
    if let Ok(id) = format!("dlq:{origin}").parse::<HeaderValue>() {
        headers.insert(NATS_MESSAGE_ID, id);
    }
    headers
}

/// Sets a header whose value `header_text` made safe; a value that still
/// does not convert is left out rather than failing the dead letter.
fn insert(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(value) = value.parse::<HeaderValue>() {
        headers.insert(name, value);
    }
}

/// A header value holds no line breaks or other control characters (they
/// would end the header); a reason can quote a value that has them.
fn header_text(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Refusals that the same message will meet on every try: its size.
fn is_permanent(error: &PublishError) -> bool {
    error.kind() == PublishErrorKind::MaxPayloadExceeded
        || std::error::Error::source(error)
            .and_then(|source| source.downcast_ref::<jetstream::Error>())
            .is_some_and(|e| e.error_code() == ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_become_single_line_header_values() {
        let text = header_text("bad value \"a\r\nb\"\tc");
        assert_eq!(text, "bad value \"a  b\" c");
        assert!(text.parse::<HeaderValue>().is_ok());
    }

    #[test]
    fn size_refusals_are_permanent_and_timeouts_are_not() {
        assert!(is_permanent(&PublishError::new(
            PublishErrorKind::MaxPayloadExceeded
        )));
        assert!(!is_permanent(&PublishError::new(
            PublishErrorKind::TimedOut
        )));
        assert!(!is_permanent(&PublishError::new(
            PublishErrorKind::StreamNotFound
        )));
    }
}
