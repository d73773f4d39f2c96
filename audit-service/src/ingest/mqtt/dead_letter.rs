//! The MQTT dead-letter topic `MQTT_DLQ_TOPIC`. A dead letter is the
//! message's payload, Content Type and user properties unchanged, plus the
//! user properties `ingest::dead_letter` names (`dlq-origin` is
//! `topic/packet id`), published at QoS 1 on a connection of its own and
//! sent once its PUBACK has come back.
//!
//! MQTT keeps a message only for the sessions subscribed to its topic: a
//! dead-letter topic nobody subscribes to (PUBACK "no matching
//! subscribers") drops the dead letter, which is then only in the log, at
//! error level, and counted (`audit_dead_letters_failed_total`). Operators
//! keep a persistent session subscribed to it. A dead letter larger than
//! the broker's Maximum Packet Size is refused for good, and the pipeline
//! sends the reduced one.

use crate::config::MqttSettings;
use crate::ingest::dead_letter::{
    DeadLetterSink, Letter, SendError, DLQ_DROPPED_HEADER, DLQ_ERROR_HEADER, DLQ_ORIGIN_HEADER,
};
use bytes::Bytes;
use futures::future::BoxFuture;
use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason, Publish, PublishProperties};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, EventLoop};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Mutex};

/// How long a PUBACK may take before the dead letter is sent again.
const PUBACK_TIMEOUT: Duration = Duration::from_secs(30);
/// Packet overhead beyond payload, topic and properties, generously.
const OVERHEAD: usize = 64;

/// A message the consumer refused.
pub struct Rejected {
    topic: String,
    packet_id: u16,
    content_type: Option<String>,
    user_properties: Vec<(String, String)>,
    payload: Bytes,
}

impl Rejected {
    pub fn new(publish: &Publish) -> Self {
        let properties = publish.properties.as_ref();
        Rejected {
            topic: String::from_utf8_lossy(&publish.topic).into_owned(),
            packet_id: publish.pkid,
            content_type: properties.and_then(|p| p.content_type.clone()),
            user_properties: properties
                .map(|p| p.user_properties.clone())
                .unwrap_or_default(),
            payload: publish.payload.clone(),
        }
    }
}

pub struct DeadLetters {
    client: AsyncClient,
    topic: String,
    /// One dead letter in flight at a time, so the next PUBACK is its own.
    acks: Mutex<mpsc::Receiver<PubAckReason>>,
    /// The broker's Maximum Packet Size from its CONNACK; 0 when it sets
    /// none.
    max_packet: Arc<AtomicU32>,
}

impl DeadLetters {
    pub fn new(settings: &MqttSettings, max_body_bytes: usize) -> anyhow::Result<Self> {
        let mut common = settings.common.clone();
        common.client_id = format!("{}-dlq", common.client_id);
        let mut options = common.options()?;
        options.set_max_packet_size(Some(
            u32::try_from(max_body_bytes.saturating_mul(2)).unwrap_or(u32::MAX),
        ));
        let (client, eventloop) = AsyncClient::new(options, 16);
        let (acks, received) = mpsc::channel(16);
        let max_packet = Arc::new(AtomicU32::new(0));
        tokio::spawn(drive(eventloop, acks, max_packet.clone()));
        Ok(DeadLetters {
            client,
            topic: settings.dlq_topic.clone(),
            acks: Mutex::new(received),
            max_packet,
        })
    }
}

/// Polls the dead letters' connection, handing each PUBACK's reason over.
/// Ends with the sink (the client's requests end).
async fn drive(
    mut eventloop: EventLoop,
    acks: mpsc::Sender<PubAckReason>,
    max_packet: Arc<AtomicU32>,
) {
    let mut failures: u32 = 0;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(connack))) => {
                failures = 0;
                let max = connack.properties.and_then(|p| p.max_packet_size);
                max_packet.store(max.unwrap_or(0), Ordering::Relaxed);
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                if acks.send(ack.reason).await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(rumqttc::v5::ConnectionError::RequestsDone) => return,
            Err(e) => {
                failures = failures.saturating_add(1);
                tracing::debug!(error = %e, failures, "MQTT dead-letter connection down");
                let pause = (Duration::from_millis(250) * failures).min(Duration::from_secs(4));
                tokio::time::sleep(pause).await;
            }
        }
    }
}

impl DeadLetterSink for DeadLetters {
    type Rejected = Rejected;

    fn destination(&self) -> &str {
        &self.topic
    }

    fn origin(&self, rejected: &Rejected) -> String {
        format!("{}/{}", rejected.topic, rejected.packet_id)
    }

    fn send<'a>(&'a self, letter: Letter<'a, Rejected>) -> BoxFuture<'a, Result<(), SendError>> {
        let rejected = letter.rejected;
        let mut properties = PublishProperties::default();
        let payload = match letter.dropped {
            None => {
                properties.content_type = rejected.content_type.clone();
                properties.user_properties = rejected.user_properties.clone();
                rejected.payload.clone()
            }
            Some(dropped) => {
                properties
                    .user_properties
                    .push((DLQ_DROPPED_HEADER.into(), dropped.into()));
                Bytes::new()
            }
        };
        properties
            .user_properties
            .push((DLQ_ERROR_HEADER.into(), letter.reason.into()));
        properties
            .user_properties
            .push((DLQ_ORIGIN_HEADER.into(), letter.origin.into()));
        let size = payload.len()
            + self.topic.len()
            + properties.content_type.as_ref().map_or(0, String::len)
            + properties
                .user_properties
                .iter()
                .map(|(n, v)| n.len() + v.len() + 4)
                .sum::<usize>()
            + OVERHEAD;
        Box::pin(async move {
            let max = self.max_packet.load(Ordering::Relaxed) as usize;
            if max > 0 && size > max {
                return Err(SendError::permanent(format!(
                    "the dead letter ({size} bytes) is larger than the broker's maximum packet size ({max} bytes)"
                )));
            }
            let mut acks = self.acks.lock().await;
            // A PUBACK that came after its publish timed out.
            while acks.try_recv().is_ok() {}
            self.client
                .publish_with_properties(&self.topic, QoS::AtLeastOnce, false, payload, properties)
                .await
                .map_err(SendError::transient)?;
            match tokio::time::timeout(PUBACK_TIMEOUT, acks.recv()).await {
                Ok(Some(reason)) => outcome(reason, &self.topic),
                Ok(None) => Err(SendError::transient(
                    "the MQTT dead-letter connection has stopped",
                )),
                Err(_) => Err(SendError::transient("no PUBACK within 30 s")),
            }
        })
    }
}

/// What a PUBACK's reason code means for a dead letter.
fn outcome(reason: PubAckReason, topic: &str) -> Result<(), SendError> {
    match reason {
        PubAckReason::Success => Ok(()),
        PubAckReason::NoMatchingSubscribers => {
            tracing::error!(dlq = %topic, "nobody subscribes to the MQTT dead-letter topic: the broker dropped the dead letter");
            metrics::counter!("audit_dead_letters_failed_total").increment(1);
            Ok(())
        }
        PubAckReason::TopicNameInvalid | PubAckReason::PayloadFormatInvalid => {
            Err(SendError::permanent(format!("{reason:?}")))
        }
        other => Err(SendError::transient(format!("{other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn puback_reasons_say_what_happened_to_the_dead_letter() {
        assert!(outcome(PubAckReason::Success, "d").is_ok());
        assert!(outcome(PubAckReason::NoMatchingSubscribers, "d").is_ok());
        assert!(
            outcome(PubAckReason::PayloadFormatInvalid, "d")
                .unwrap_err()
                .permanent
        );
        assert!(
            !outcome(PubAckReason::QuotaExceeded, "d")
                .unwrap_err()
                .permanent
        );
        assert!(
            !outcome(PubAckReason::NotAuthorized, "d")
                .unwrap_err()
                .permanent
        );
    }
}
