//! The NATS dead-letter subject `NATS_DLQ_SUBJECT`, kept by the stream
//! `NATS_DLQ_STREAM`. A dead letter is the message's payload and headers
//! unchanged, except the JetStream control headers (`Nats-*`, which the
//! dead-letter stream would act on), plus the headers `ingest::dead_letter`
//! names (`dlq-origin` is `stream/consumer/stream sequence`) and a
//! `Nats-Msg-Id` made from the origin, so a message redelivered before its
//! acknowledgement landed is dead-lettered once. A dead letter over the
//! server's payload limit is refused for good, and the pipeline sends the
//! reduced one.

use crate::config::NatsSettings;
use crate::ingest::dead_letter::{
    DeadLetterSink, Letter, SendError, DLQ_DROPPED_HEADER, DLQ_ERROR_HEADER, DLQ_ORIGIN_HEADER,
};
use async_nats::header::{HeaderMap, HeaderValue, NATS_MESSAGE_ID};
use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::{self, stream, ErrorCode, Message};
use bytes::Bytes;
use futures::future::BoxFuture;

/// A message the consumer refused.
pub struct Rejected {
    headers: Option<HeaderMap>,
    payload: Bytes,
    /// `stream/consumer/stream sequence`.
    origin: String,
}

impl Rejected {
    pub fn new(delivered: &Message) -> Self {
        let message = &delivered.message;
        Rejected {
            origin: delivered
                .info()
                .map(|i| format!("{}/{}/{}", i.stream, i.consumer, i.stream_sequence))
                .unwrap_or_else(|_| message.reply.as_deref().unwrap_or_default().to_owned()),
            headers: message.headers.clone(),
            payload: message.payload.clone(),
        }
    }
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
}

impl DeadLetterSink for DeadLetters {
    type Rejected = Rejected;

    fn destination(&self) -> &str {
        &self.subject
    }

    fn origin(&self, rejected: &Rejected) -> String {
        rejected.origin.clone()
    }

    fn send<'a>(&'a self, letter: Letter<'a, Rejected>) -> BoxFuture<'a, Result<(), SendError>> {
        let rejected = letter.rejected;
        let mut headers = HeaderMap::new();
        let payload = match letter.dropped {
            None => {
                if let Some(original) = &rejected.headers {
                    for (name, values) in original.iter() {
                        let name_text: &str = name.as_ref();
                        if name_text.len() >= 5 && name_text[..5].eq_ignore_ascii_case("nats-") {
                            continue;
                        }
                        for value in values {
                            headers.append(name.clone(), value.clone());
                        }
                    }
                }
                rejected.payload.clone()
            }
            Some(dropped) => {
                insert(&mut headers, DLQ_DROPPED_HEADER, &header_text(dropped));
                Bytes::new()
            }
        };
        let headers = with_reason(headers, &header_text(letter.reason), letter.origin);
        Box::pin(async move {
            let sent = match self
                .js
                .publish_with_headers(self.subject.clone(), headers, payload)
                .await
            {
                Ok(ack) => ack.await.map(|_| ()),
                Err(e) => Err(e),
            };
            match sent {
                Ok(()) => Ok(()),
                Err(e) if is_permanent(&e) => Err(SendError::permanent(e)),
                Err(e) => Err(SendError::transient(e)),
            }
        })
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
