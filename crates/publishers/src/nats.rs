//! Publishing to NATS JetStream: each event to `NATS_SUBJECT` in binary mode
//! (`ce-` headers, NATS binding 1.0.3) or structured mode
//! (`NATS_CONTENT_MODE`), with `Nats-Msg-Id` set to the event id so the
//! stream's duplicate window drops a re-publish after a crash, and
//! delivered only on the server's publish acknowledgement.
//!
//! Order. Publishes go out on one connection in the order they are handed
//! over, and the server stores them in that order, so one user's events
//! keep their order with thousands in flight, as long as the connection
//! holds. When it breaks, what sat in its write buffer is lost, while what
//! was still queued in the client goes out after the reconnect: a user's
//! later event can then be stored before an earlier one that the relay
//! sends again (the relay's window module stops, drains and re-reads from
//! the oldest pending row on the first failed acknowledgement). To keep
//! that window small, no event is handed to the client while it reports
//! itself disconnected. What closes it for good (per-user subjects with
//! `Nats-Expected-Last-Subject-Sequence`, which costs one acknowledgement
//! round trip per user event) is not done: Kafka's idempotent producer has
//! no such gap.
//!
//! The stream is created if it is missing (`brokers::nats`), by `GET
//! /delivery` or the first publish, and again whenever the server says it has none.

use super::{Pending, Pipelined, Report};
use crate::config::ContentMode;
use anyhow::Context as _;
use async_nats::connection::State;
use async_nats::header::{HeaderMap, HeaderName, HeaderValue, NATS_MESSAGE_ID};
use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::{self, ErrorCode};
use brokers::nats::{ensure_stream, NatsConfig, StreamProbe};
use cloudevents::{AttributesReader, Event};
use cloudevents_wire::binding::{to_nats_binary, STRUCTURED_JSON};
use cloudevents_wire::Transport;
use futures::future::BoxFuture;
use futures::FutureExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Publishes awaiting their acknowledgement, at most; above the relay's
/// window, so handing an event over never waits for a slot (the relay
/// polls the acknowledgements only between hand-overs).
const ACKS_IN_FLIGHT: usize = 20_000;

/// Longest wait of one `GET /delivery` request to the server.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long the first publish waits for the client's first connection,
/// which it makes in the background (`NatsConfig::connect`), and how often
/// it looks. Without it a relay that starts with a backlog failed its first
/// publishes in the few milliseconds the connection took, logged a warning
/// for each, and backed off before sending anything.
const FIRST_CONNECT_WAIT: Duration = Duration::from_secs(1);
const FIRST_CONNECT_POLL: Duration = Duration::from_millis(2);

pub struct NatsPublisher {
    js: jetstream::Context,
    config: NatsConfig,
    mode: ContentMode,
    timeout: Duration,
    probe: StreamProbe,
    /// Whether the stream is known to exist; cleared when the server says
    /// it has none.
    stream_ready: Arc<AtomicBool>,
}

impl NatsPublisher {
    /// Connects in the background (see `NatsConfig::connect`): a server
    /// that is away delays events, it does not stop the service.
    pub async fn new(
        config: &NatsConfig,
        mode: ContentMode,
        timeout: Duration,
        name: &str,
    ) -> anyhow::Result<Self> {
        let client = config
            .connect(name)
            .await
            .context("Failed to set up the NATS connection")?;
        let js = jetstream::ContextBuilder::new()
            .timeout(timeout)
            .max_ack_inflight(ACKS_IN_FLIGHT)
            .build(client);
        Ok(NatsPublisher {
            probe: StreamProbe::new(js.clone(), &config.stream),
            js,
            config: config.clone(),
            mode,
            timeout,
            stream_ready: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The connection's state, once the client has made its first
    /// connection (`Pending` until then) or `FIRST_CONNECT_WAIT` passed.
    /// async_nats offers no way to await that, only the state: so it is
    /// looked at every `FIRST_CONNECT_POLL`. A connection that was made and
    /// lost (`Disconnected`) is answered at once.
    async fn first_connection(&self) -> State {
        let client = self.js.client();
        let mut state = client.connection_state();
        // Once connected (every event but the first few), no clock is read.
        if state != State::Pending {
            return state;
        }
        let deadline = tokio::time::Instant::now() + FIRST_CONNECT_WAIT;
        while state == State::Pending && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(FIRST_CONNECT_POLL).await;
            state = client.connection_state();
        }
        state
    }

    /// The headers and payload of `event` in the configured content mode.
    fn message(&self, event: &Event) -> Result<(HeaderMap, Vec<u8>), Report> {
        let mut headers = HeaderMap::new();
        let payload = match self.mode {
            ContentMode::Binary => {
                let (attributes, body) = to_nats_binary(event);
                for (name, value) in attributes {
                    // Attribute names are lower-case alphanumerics (the SDK
                    // enforces it) and encoded values printable ASCII, so
                    // both convert; a failure is an event we cannot send.
                    let name: HeaderName = name
                        .parse()
                        .map_err(|_| Report::Refused(format!("no NATS header for {name:?}")))?;
                    let value: HeaderValue = value
                        .parse()
                        .map_err(|_| Report::Refused(format!("no NATS header value for {name}")))?;
                    headers.insert(name, value);
                }
                body
            }
            ContentMode::Structured => {
                headers.insert("Content-Type", STRUCTURED_JSON);
                serde_json::to_vec(event)
                    .map_err(|e| Report::Refused(format!("event does not serialize: {e}")))?
            }
        };
        let id: HeaderValue = event
            .id()
            .parse()
            .map_err(|_| Report::Refused("the event id cannot be a NATS header".into()))?;
        headers.insert(NATS_MESSAGE_ID, id);
        Ok((headers, payload))
    }

    async fn send(&self, event: Event) -> Result<Pending, Report> {
        let state = self.first_connection().await;
        if state != State::Connected {
            return Err(Report::Failed(format!("not connected to NATS ({state:?})")));
        }
        if !self.stream_ready.load(Ordering::Acquire) {
            ensure_stream(&self.js, self.config.stream_config())
                .await
                .map_err(Report::Failed)?;
            self.stream_ready.store(true, Ordering::Release);
        }
        let (headers, payload) = self.message(&event)?;
        let ack = self
            .js
            .publish_with_headers(self.config.subject.clone(), headers, payload.into())
            .await
            .map_err(|e| self.classify(&e))?;
        let stream_ready = self.stream_ready.clone();
        Ok(async move {
            match ack.await {
                Ok(_) => Report::Delivered,
                Err(e) => {
                    if e.kind() == PublishErrorKind::StreamNotFound {
                        stream_ready.store(false, Ordering::Release);
                    }
                    classify(&e)
                }
            }
        }
        .boxed())
    }

    fn classify(&self, error: &PublishError) -> Report {
        if error.kind() == PublishErrorKind::StreamNotFound {
            self.stream_ready.store(false, Ordering::Release);
        }
        classify(error)
    }
}

/// A message the server refuses for its size will be refused again; every
/// other failure (no acknowledgement in time, no stream yet, a broken
/// connection, stream limits) is worth another try.
fn classify(error: &PublishError) -> Report {
    let too_large = error.kind() == PublishErrorKind::MaxPayloadExceeded
        || std::error::Error::source(error)
            .and_then(|source| source.downcast_ref::<jetstream::Error>())
            .is_some_and(|e| e.error_code() == ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM);
    if too_large {
        Report::Refused(format!("NATS refuses the message for its size: {error}"))
    } else {
        Report::Failed(format!("{error:#}"))
    }
}

impl Pipelined for NatsPublisher {
    fn transport(&self) -> Transport {
        Transport::Nats
    }

    fn enqueue(&self, event: Event) -> BoxFuture<'_, Result<Pending, Report>> {
        self.send(event).boxed()
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Nothing to rebuild: the client reconnects by itself, and no failure
    /// leaves it unusable.
    fn rebuild(&self) -> anyhow::Result<()> {
        Ok(())
    }

    /// Ready when connected and the stream exists; the stream is created
    /// here if it is missing, so a service that has published nothing yet
    /// (and the audit service that waits for the stream) need not wait for
    /// a first user.
    fn check_ready(&self) -> BoxFuture<'_, Result<(), String>> {
        async move {
            let timeout = self.timeout.min(PROBE_TIMEOUT);
            let connected = self.js.client().connection_state() == State::Connected;
            if connected && !self.stream_ready.load(Ordering::Acquire) {
                let created = tokio::time::timeout(
                    timeout,
                    ensure_stream(&self.js, self.config.stream_config()),
                )
                .await;
                if matches!(created, Ok(Ok(()))) {
                    self.stream_ready.store(true, Ordering::Release);
                }
            }
            self.probe.check(timeout).await
        }
        .boxed()
    }

    fn flush(&self) -> BoxFuture<'_, ()> {
        async move {
            let flushed = tokio::time::timeout(self.timeout, self.js.client().flush()).await;
            if !matches!(flushed, Ok(Ok(()))) {
                tracing::warn!("NATS connection did not flush before shutdown");
            }
        }
        .boxed()
    }

    fn describe(&self) -> String {
        format!("{} ({:?} mode)", self.config.describe(), self.mode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_size_refusals_park_an_event() {
        let refused = classify(&PublishError::new(PublishErrorKind::MaxPayloadExceeded));
        assert!(matches!(refused, Report::Refused(_)), "{refused:?}");
        for kind in [
            PublishErrorKind::TimedOut,
            PublishErrorKind::StreamNotFound,
            PublishErrorKind::BrokenPipe,
            PublishErrorKind::MaxAckPending,
            PublishErrorKind::Other,
        ] {
            let report = classify(&PublishError::new(kind));
            assert!(matches!(report, Report::Failed(_)), "{kind:?}: {report:?}");
        }
    }
}
