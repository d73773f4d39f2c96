//! Publishing to an MQTT 5 broker: each event to `MQTT_TOPIC` at QoS 1, in
//! binary mode (user properties, CloudEvents MQTT binding) or structured
//! mode (`MQTT_CONTENT_MODE`), and delivered only on its PUBACK.
//!
//! Which PUBACK is whose. rumqttc numbers a QoS 1 publish inside its event
//! loop and reports the number (`Outgoing::Publish(pkid)`) in the order
//! publishes were handed to it; a PUBACK names the number. So a session
//! keeps the acknowledgements it owes in hand-over order, one hand-over at
//! a time: each `Outgoing::Publish` gives the oldest its packet id, and the
//! PUBACK with that id settles it. That holds only while the event loop
//! neither sends a publish again (it does after reconnecting to a resumed
//! session) nor holds one back for a packet id still in flight (a
//! broker acknowledging out of order), so neither is allowed to happen: a
//! session starts clean and lasts one connection. When the connection
//! ends, or anything breaks the order, the session ends with it: every
//! acknowledgement it still owes fails (the relay sends those rows again,
//! in order, from the oldest pending one; the audit store keeps one copy
//! of what went twice), and a fresh session connects after a pause.
//!
//! Order. One connection, handed over in outbox order, and MQTT keeps the
//! order of one client's messages to a topic at one QoS (MQTT 5.0, 4.6).
//! A broken connection loses a tail of what was sent on it, never a gap.
//!
//! What a PUBACK's reason code means is [`report`]: in particular "no
//! matching subscribers" is not a delivery. The broker has dropped the
//! message because nobody (no session, connected or not) subscribes to the
//! topic, so the event stays in the outbox until an audit service has
//! subscribed, as over HTTP while the audit service is down.

use super::{Pending, Pipelined, Report};
use crate::config::{ContentMode, MqttSettings};
use bytes::Bytes;
use cloudevents::Event;
use cloudevents_wire::binding::mqtt::MqttMessage;
use cloudevents_wire::Transport;
use futures::future::BoxFuture;
use futures::FutureExt;
use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason, Publish, PublishProperties};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event as LoopEvent, EventLoop};
use rumqttc::Outgoing;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

/// Publishes waiting in the client's request channel, at most. The event
/// loop takes them as fast as the broker's Receive Maximum lets it; beyond
/// that, handing an event over waits (back-pressure on the relay).
const REQUESTS: usize = 1000;

/// The longest pause between two attempts to connect.
const MAX_RECONNECT_PAUSE: Duration = Duration::from_secs(4);

pub struct MqttPublisher {
    settings: MqttSettings,
    /// The session of the current connection, replaced by the supervisor
    /// when it ends; the lock is held only to clone or swap it.
    current: Arc<RwLock<Arc<Session>>>,
    /// Why the last session ended, for `/readyz` while the next connects.
    last_failure: Arc<Mutex<Option<String>>>,
    /// One hand-over at a time (see the module header).
    hand_over: tokio::sync::Mutex<()>,
    /// Cancelled at shutdown: no session after the current one.
    stopping: CancellationToken,
    _supervisor: AbortOnDropHandle<()>,
}

impl MqttPublisher {
    /// Connects in the background: a broker that is away delays events, it
    /// does not stop the service, and `/readyz` says so.
    pub fn new(settings: &MqttSettings) -> anyhow::Result<Self> {
        let options = settings.config.options()?;
        let first = Session::new(AsyncClient::new(options.clone(), REQUESTS));
        let current = Arc::new(RwLock::new(first.0.clone()));
        let last_failure = Arc::new(Mutex::new(None));
        let stopping = CancellationToken::new();
        let supervisor = Supervisor {
            options,
            describe: settings.config.describe(),
            current: current.clone(),
            last_failure: last_failure.clone(),
            stopping: stopping.clone(),
        };
        Ok(MqttPublisher {
            settings: settings.clone(),
            current,
            last_failure,
            hand_over: tokio::sync::Mutex::new(()),
            stopping,
            _supervisor: AbortOnDropHandle::new(tokio::spawn(supervisor.run(first))),
        })
    }

    fn session(&self) -> Arc<Session> {
        // A poisoned lock still holds a valid Arc: the swap cannot half-happen.
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    async fn send(&self, event: Event) -> Result<Pending, Report> {
        let message = match self.settings.mode {
            ContentMode::Binary => MqttMessage::binary(&event),
            ContentMode::Structured => MqttMessage::structured(&event),
        }
        .map_err(|e| Report::Refused(e.to_string()))?;
        let properties = PublishProperties {
            content_type: message.content_type,
            user_properties: message.user_properties,
            ..PublishProperties::default()
        };
        let payload = Bytes::from(message.payload);
        let topic = &self.settings.config.topic;

        let _turn = self.hand_over.lock().await;
        let session = self.session();
        if let Some(max) = session.max_packet_size() {
            let mut publish = Publish::new(
                topic,
                QoS::AtLeastOnce,
                payload.clone(),
                Some(properties.clone()),
            );
            publish.pkid = 1;
            if publish.size() > max as usize {
                return Err(Report::Refused(format!(
                    "the MQTT message would be {} bytes; the broker takes at most {max}",
                    publish.size()
                )));
            }
        }
        let acknowledgement = session.owe()?;
        let handed = session
            .client
            .publish_with_properties(topic, QoS::AtLeastOnce, false, payload, properties)
            .await;
        if let Err(e) = handed {
            // The acknowledgement just owed has no publish behind it: the
            // order is broken, so the session ends.
            let reason = format!("the MQTT client took no publish: {e}");
            session.end(&reason);
            return Err(Report::Failed(reason));
        }
        Ok(async move {
            acknowledgement.await.unwrap_or_else(|_| {
                Report::Failed("the MQTT session ended before the PUBACK".into())
            })
        }
        .boxed())
    }
}

impl Pipelined for MqttPublisher {
    fn transport(&self) -> Transport {
        Transport::Mqtt
    }

    fn enqueue(&self, event: Event) -> BoxFuture<'_, Result<Pending, Report>> {
        self.send(event).boxed()
    }

    fn timeout(&self) -> Duration {
        self.settings.timeout
    }

    /// Ends the current session; the supervisor connects a fresh one.
    /// (Nothing reports `Fatal`: a broken session ends by itself.)
    fn rebuild(&self) -> anyhow::Result<()> {
        self.session().end("rebuilt on request");
        Ok(())
    }

    /// Ready while connected.
    fn check_ready(&self) -> BoxFuture<'_, Result<(), String>> {
        let session = self.session();
        async move {
            if session.is_connected() {
                return Ok(());
            }
            let why = lock(&self.last_failure)
                .clone()
                .unwrap_or_else(|| "connecting".into());
            Err(format!(
                "not connected to the MQTT broker {}: {why}",
                self.settings.config.url
            ))
        }
        .boxed()
    }

    /// The relay has awaited its reports by now: say goodbye to the broker
    /// (a clean DISCONNECT) and connect no more.
    fn flush(&self) -> BoxFuture<'_, ()> {
        async move {
            self.stopping.cancel();
            let session = self.session();
            if session.client.disconnect().await.is_ok() {
                let closed =
                    tokio::time::timeout(self.settings.timeout, session.closed.cancelled()).await;
                if closed.is_err() {
                    tracing::warn!("MQTT connection did not close before shutdown");
                }
            }
        }
        .boxed()
    }

    fn describe(&self) -> String {
        format!(
            "{} ({:?} mode)",
            self.settings.config.describe(),
            self.settings.mode
        )
    }
}

/// What a PUBACK's reason code means for the event (MQTT 5.0, 3.4.2.1).
/// Refused: the broker will never take it as sent (not authorised, a
/// topic or payload it refuses), as a 4xx over HTTP. Failed: worth another
/// try, including "no matching subscribers" (see the module header).
fn report(reason: PubAckReason, reason_string: Option<&str>) -> Report {
    let why = |code: &str| match reason_string {
        Some(text) => format!("the broker answered {code}: {text}"),
        None => format!("the broker answered {code}"),
    };
    match reason {
        PubAckReason::Success => Report::Delivered,
        PubAckReason::NoMatchingSubscribers => Report::Failed(why(
            "no matching subscribers (0x10): it dropped the message, as nothing subscribes to the topic",
        )),
        PubAckReason::NotAuthorized => Report::Refused(why("not authorized (0x87)")),
        PubAckReason::TopicNameInvalid => Report::Refused(why("topic name invalid (0x90)")),
        PubAckReason::PayloadFormatInvalid => Report::Refused(why("payload format invalid (0x99)")),
        PubAckReason::UnspecifiedError => Report::Failed(why("unspecified error (0x80)")),
        PubAckReason::ImplementationSpecificError => {
            Report::Failed(why("implementation specific error (0x83)"))
        }
        PubAckReason::PacketIdentifierInUse => {
            Report::Failed(why("packet identifier in use (0x91)"))
        }
        PubAckReason::QuotaExceeded => Report::Failed(why("quota exceeded (0x97)")),
    }
}

/// One connection's worth of publishing (see the module header).
struct Session {
    client: AsyncClient,
    state: Mutex<SessionState>,
    /// Cancelled when the session ends.
    closed: CancellationToken,
}

#[derive(Default)]
struct SessionState {
    /// The broker accepted the connection (CONNACK).
    connected: bool,
    /// Why the session ended; `None` while it lasts.
    ended: Option<String>,
    /// The broker's Maximum Packet Size, when its CONNACK gave one.
    max_packet_size: Option<u32>,
    /// Acknowledgements owed, in hand-over order, not numbered yet.
    unnumbered: VecDeque<oneshot::Sender<Report>>,
    /// Acknowledgements owed, by packet id.
    numbered: HashMap<u16, oneshot::Sender<Report>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section below leaves the state whole: a panic in one
    // (there is no code that panics) would not leave it half-changed.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Session {
    fn new((client, eventloop): (AsyncClient, EventLoop)) -> (Arc<Self>, EventLoop) {
        let session = Session {
            client,
            state: Mutex::new(SessionState::default()),
            closed: CancellationToken::new(),
        };
        (Arc::new(session), eventloop)
    }

    fn is_connected(&self) -> bool {
        let state = lock(&self.state);
        state.connected && state.ended.is_none()
    }

    fn max_packet_size(&self) -> Option<u32> {
        lock(&self.state).max_packet_size
    }

    /// Owes an acknowledgement for the publish about to be handed over.
    fn owe(&self) -> Result<oneshot::Receiver<Report>, Report> {
        let mut state = lock(&self.state);
        if let Some(reason) = &state.ended {
            return Err(Report::Failed(format!("MQTT session ended: {reason}")));
        }
        if !state.connected {
            return Err(Report::Failed(
                "not connected to the MQTT broker yet".into(),
            ));
        }
        let (sender, receiver) = oneshot::channel();
        state.unnumbered.push_back(sender);
        Ok(receiver)
    }

    fn connected(&self, max_packet_size: Option<u32>) {
        let mut state = lock(&self.state);
        state.connected = true;
        state.max_packet_size = max_packet_size;
    }

    /// The event loop numbered the oldest publish not numbered yet.
    fn numbered(&self, pkid: u16) -> Result<(), String> {
        let mut state = lock(&self.state);
        let Some(sender) = state.unnumbered.pop_front() else {
            return Err(format!(
                "the client sent publish {pkid}, which no event awaits"
            ));
        };
        if state.numbered.insert(pkid, sender).is_some() {
            return Err(format!("packet id {pkid} was reused while still in flight"));
        }
        Ok(())
    }

    fn acknowledged(&self, pkid: u16, report: Report) -> Result<(), String> {
        let Some(sender) = lock(&self.state).numbered.remove(&pkid) else {
            return Err(format!(
                "a PUBACK for packet id {pkid}, which is not in flight"
            ));
        };
        // The receiver is gone when the relay gave up waiting: nothing to tell.
        let _ = sender.send(report);
        Ok(())
    }

    /// Ends the session (once): every acknowledgement still owed fails.
    /// Returns whether it had been connected.
    fn end(&self, reason: &str) -> bool {
        let (owed, connected) = {
            let mut state = lock(&self.state);
            if state.ended.is_some() {
                return state.connected;
            }
            state.ended = Some(reason.to_owned());
            let mut owed: Vec<_> = state.unnumbered.drain(..).collect();
            // Oldest first is not needed: the relay re-reads in seq order.
            owed.extend(state.numbered.drain().map(|(_, sender)| sender));
            (owed, state.connected)
        };
        for sender in owed {
            let _ = sender.send(Report::Failed(format!(
                "MQTT session ended before the PUBACK: {reason}"
            )));
        }
        self.closed.cancel();
        connected
    }
}

/// Runs one session after another until the publisher stops.
struct Supervisor {
    options: rumqttc::v5::MqttOptions,
    describe: String,
    current: Arc<RwLock<Arc<Session>>>,
    last_failure: Arc<Mutex<Option<String>>>,
    stopping: CancellationToken,
}

impl Supervisor {
    async fn run(self, first: (Arc<Session>, EventLoop)) {
        let (mut session, mut eventloop) = first;
        let mut failures: u32 = 0;
        loop {
            let reason = drive(&session, &mut eventloop).await;
            let had_connected = session.end(&reason);
            drop(eventloop);
            *lock(&self.last_failure) = Some(reason.clone());
            if self.stopping.is_cancelled() {
                return;
            }
            if had_connected {
                failures = 0;
                tracing::warn!(%reason, broker = %self.describe, "MQTT connection lost; reconnecting");
            } else {
                failures = failures.saturating_add(1);
                if failures == 1 {
                    tracing::warn!(%reason, broker = %self.describe, "cannot connect to the MQTT broker; trying again");
                } else {
                    tracing::debug!(%reason, failures, "cannot connect to the MQTT broker");
                }
            }
            let pause = (Duration::from_millis(250) * failures).min(MAX_RECONNECT_PAUSE);
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = self.stopping.cancelled() => return,
            }
            (session, eventloop) = Session::new(AsyncClient::new(self.options.clone(), REQUESTS));
            *self
                .current
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = session.clone();
        }
    }
}

/// Polls the event loop, settling acknowledgements, until the session
/// ends; returns why.
async fn drive(session: &Session, eventloop: &mut EventLoop) -> String {
    loop {
        let event = tokio::select! {
            event = eventloop.poll() => event,
            // Ended from the hand-over side (or by `rebuild`).
            _ = session.closed.cancelled() => {
                return "the session was ended".into();
            }
        };
        let step = match event {
            Err(e) => Err(e.to_string()),
            Ok(LoopEvent::Incoming(Packet::ConnAck(connack))) => {
                tracing::info!("connected to the MQTT broker");
                session.connected(connack.properties.and_then(|p| p.max_packet_size));
                Ok(())
            }
            Ok(LoopEvent::Outgoing(Outgoing::Publish(pkid))) => session.numbered(pkid),
            Ok(LoopEvent::Incoming(Packet::PubAck(ack))) => {
                let reason_string = ack
                    .properties
                    .as_ref()
                    .and_then(|p| p.reason_string.as_deref());
                session.acknowledged(ack.pkid, report(ack.reason, reason_string))
            }
            Ok(LoopEvent::Outgoing(Outgoing::AwaitAck(pkid))) => Err(format!(
                "packet id {pkid} is still in flight: the broker acknowledges out of order"
            )),
            Ok(_) => Ok(()),
        };
        if let Err(reason) = step {
            return reason;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_puback_is_a_delivery_only_on_success() {
        assert_eq!(report(PubAckReason::Success, None), Report::Delivered);
        for refused in [
            PubAckReason::NotAuthorized,
            PubAckReason::TopicNameInvalid,
            PubAckReason::PayloadFormatInvalid,
        ] {
            assert!(
                matches!(report(refused, None), Report::Refused(_)),
                "{refused:?}"
            );
        }
        for retried in [
            PubAckReason::NoMatchingSubscribers,
            PubAckReason::UnspecifiedError,
            PubAckReason::ImplementationSpecificError,
            PubAckReason::PacketIdentifierInUse,
            PubAckReason::QuotaExceeded,
        ] {
            assert!(
                matches!(report(retried, None), Report::Failed(_)),
                "{retried:?}"
            );
        }
        let Report::Refused(why) = report(PubAckReason::NotAuthorized, Some("acl says no")) else {
            panic!("not refused");
        };
        assert!(why.contains("acl says no"), "{why}");
    }

    fn session() -> Arc<Session> {
        let options = rumqttc::v5::MqttOptions::new("test", "127.0.0.1", 9);
        Session::new(AsyncClient::new(options, 10)).0
    }

    #[tokio::test]
    async fn acknowledgements_are_settled_by_packet_id_in_hand_over_order() {
        let session = session();
        assert!(
            matches!(session.owe(), Err(Report::Failed(_))),
            "not connected yet"
        );
        session.connected(None);
        let first = session.owe().unwrap();
        let second = session.owe().unwrap();
        let third = session.owe().unwrap();
        session.numbered(7).unwrap();
        session.numbered(8).unwrap();
        session.numbered(9).unwrap();
        session.acknowledged(8, Report::Delivered).unwrap();
        session
            .acknowledged(7, Report::Refused("no".into()))
            .unwrap();
        assert_eq!(second.await.unwrap(), Report::Delivered);
        assert_eq!(first.await.unwrap(), Report::Refused("no".into()));
        assert!(
            session.acknowledged(8, Report::Delivered).is_err(),
            "settled twice"
        );
        assert!(session.numbered(10).is_err(), "a publish nobody awaits");
        assert!(session.end("gone"), "it had connected");
        assert!(matches!(third.await.unwrap(), Report::Failed(r) if r.contains("gone")));
        assert!(matches!(session.owe(), Err(Report::Failed(_))), "ended");
        assert!(session.closed.is_cancelled());
    }

    #[tokio::test]
    async fn a_packet_id_reused_while_in_flight_breaks_the_session() {
        let session = session();
        session.connected(None);
        let _a = session.owe().unwrap();
        let _b = session.owe().unwrap();
        session.numbered(1).unwrap();
        assert!(session.numbered(1).is_err());
    }
}
