//! Dead letters, the same on every transport: a message that is not a
//! CloudEvent the store takes goes to the transport's dead-letter
//! destination with why (`dlq-error`) and where from (`dlq-origin`), and
//! the broker must acknowledge it before the original is acknowledged, so
//! transient failures (the broker away) are retried until they succeed or
//! the service stops.
//!
//! A dead letter can also be refused for what it is: larger than the
//! broker takes (it may have taken the original from another client, and
//! a copy with the reason added is larger). Retrying those would wedge the
//! consumer for good. So a permanent refusal is answered once with a
//! reduced dead letter: the two headers above and `dlq-dropped` saying
//! that the payload and the original headers were dropped and why. If even
//! that is refused, the message is logged and counted
//! (`audit_dead_letters_failed_total`) and consumption goes on.

use super::pipeline::Refusal;
use super::{Backoff, Stopped};
use cloudevents_wire::Transport;
use futures::future::{join_all, BoxFuture};
use tokio_util::sync::CancellationToken;

/// Where a transport's dead letters go.
pub trait DeadLetterSink: Send + Sync {
    /// A refused message, as the source kept it.
    type Rejected: Send + Sync;

    /// The destination's name, for logs.
    fn destination(&self) -> &str;

    /// Where the message came from, for `dlq-origin`.
    fn origin(&self, rejected: &Self::Rejected) -> String;

    /// Sends one dead letter and waits for the broker's acknowledgement:
    /// the message with `dlq-error: reason` and `dlq-origin: origin`, or,
    /// when `dropped` says why, only those and `dlq-dropped`.
    fn send<'a>(
        &'a self,
        letter: Letter<'a, Self::Rejected>,
    ) -> BoxFuture<'a, Result<(), SendError>>;
}

/// One dead letter to send.
pub struct Letter<'a, R> {
    pub rejected: &'a R,
    /// Why, cut by [`bounded`].
    pub reason: &'a str,
    pub origin: &'a str,
    /// Set for the reduced dead letter: why the payload and the original
    /// headers were dropped.
    pub dropped: Option<&'a str>,
}

/// Why a dead letter was not sent.
#[derive(Debug)]
pub struct SendError {
    /// The broker refuses this dead letter for what it is, every time.
    pub permanent: bool,
    pub error: String,
}

impl SendError {
    pub fn permanent(error: impl ToString) -> Self {
        SendError {
            permanent: true,
            error: error.to_string(),
        }
    }

    pub fn transient(error: impl ToString) -> Self {
        SendError {
            permanent: false,
            error: error.to_string(),
        }
    }
}

/// Dead-letters every refused message, all in flight together, and returns
/// once the broker has acknowledged (or permanently refused) each one.
pub async fn send_all<D: DeadLetterSink>(
    sink: &D,
    refused: &[Refusal<D::Rejected>],
    transport: Transport,
    shutdown: &CancellationToken,
) -> Result<(), Stopped> {
    let sent = join_all(
        refused
            .iter()
            .map(|refusal| send_one(sink, refusal, transport, shutdown)),
    )
    .await;
    sent.into_iter().collect()
}

async fn send_one<D: DeadLetterSink>(
    sink: &D,
    refusal: &Refusal<D::Rejected>,
    transport: Transport,
    shutdown: &CancellationToken,
) -> Result<(), Stopped> {
    let reason = bounded(&refusal.error.to_string());
    let origin = sink.origin(&refusal.rejected);
    tracing::warn!(error = %reason, origin = %origin, dlq = %sink.destination(), transport = transport.as_str(), "message is not a valid CloudEvent; dead-lettering it");
    metrics::counter!("audit_events_rejected_total", "transport" => transport.as_str())
        .increment(1);
    let mut letter = Letter {
        rejected: &refusal.rejected,
        reason: &reason,
        origin: &origin,
        dropped: None,
    };
    let error = match retried(sink, &letter, shutdown).await? {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    tracing::warn!(error = %error.error, origin = %origin, "the dead letter was refused; sending it without payload and headers");
    let dropped = format!("payload and original headers dropped: {}", error.error);
    letter.dropped = Some(&dropped);
    if let Err(e) = retried(sink, &letter, shutdown).await? {
        tracing::error!(error = %e.error, origin = %origin, dlq = %sink.destination(), "the dead letter was refused even without its payload; the message is skipped");
        metrics::counter!("audit_dead_letters_failed_total").increment(1);
    }
    Ok(())
}

/// Sends one dead letter, retrying transient failures. The inner result is
/// a permanent refusal.
async fn retried<D: DeadLetterSink>(
    sink: &D,
    letter: &Letter<'_, D::Rejected>,
    shutdown: &CancellationToken,
) -> Result<Result<(), SendError>, Stopped> {
    let mut backoff = Backoff::new();
    loop {
        let attempt = Letter { ..*letter };
        match sink.send(attempt).await {
            Ok(()) => return Ok(Ok(())),
            Err(e) if e.permanent => return Ok(Err(e)),
            Err(e) => {
                tracing::error!(error = %e.error, dlq = %sink.destination(), "dead-lettering failed; retrying");
                backoff.pause(shutdown).await?;
            }
        }
    }
}

/// The header of a dead letter that says why the message was refused.
pub const DLQ_ERROR_HEADER: &str = "dlq-error";
/// Where a dead letter came from (`topic/partition/offset` on Kafka).
pub const DLQ_ORIGIN_HEADER: &str = "dlq-origin";
/// Present when the payload and original headers could not be kept.
pub const DLQ_DROPPED_HEADER: &str = "dlq-dropped";
/// The longest reason kept in `dlq-error`: a reason can quote the bad value
/// (a 600 KB specversion), which must not make the dead letter too large.
pub const MAX_REASON_BYTES: usize = 1024;

/// `reason` cut to `MAX_REASON_BYTES` at a character boundary, saying so.
pub fn bounded(reason: &str) -> String {
    if reason.len() <= MAX_REASON_BYTES {
        return reason.to_owned();
    }
    let mut end = MAX_REASON_BYTES;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes, truncated)", &reason[..end], reason.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_reasons_are_cut_at_a_character_boundary() {
        assert_eq!(bounded("short"), "short");
        let long = "é".repeat(MAX_REASON_BYTES);
        let cut = bounded(&long);
        assert!(cut.len() < MAX_REASON_BYTES + 40, "{}", cut.len());
        assert!(cut.ends_with(&format!("({} bytes, truncated)", long.len())));
    }
}
