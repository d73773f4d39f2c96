//! The MQTT 5 source: subscribes to `$share/<MQTT_GROUP>/<MQTT_TOPIC>` at
//! QoS 1 in a persistent session, and acknowledges each message (PUBACK,
//! rumqttc's manual acknowledgements) only after it is stored or
//! dead-lettered (`ingest::pipeline` runs the batches).
//!
//! Delivery. The session starts with clean start off and lasts
//! `MQTT_SESSION_EXPIRY_SECS`, so the broker keeps the subscription and
//! queues what arrives while the service is away; what was delivered and
//! not acknowledged is delivered again on the next connection, and the
//! store's UNIQUE(source, id) absorbs the duplicates. The session is named
//! by the client id, which therefore stays the same across restarts.
//! Acknowledgements are sent in the order the messages arrived, as MQTT
//! requires; those of a connection that has ended are dropped, since the
//! broker delivers their messages again on the next one (their packet ids
//! may name other messages by then).
//!
//! Flow. The connection's Receive Maximum asks the broker to deliver at
//! most three batches not yet acknowledged. Not every broker keeps to it:
//! Mosquitto 2.0 sent a resumed session's 20,000-event backlog to this
//! client with up to 13,500 PUBLISHes unacknowledged against a Receive
//! Maximum of 3,000 (counted on the wire); held in memory, a 100,000-event
//! backlog took the service to 90 MiB. So at most Receive Maximum messages
//! wait for the pipeline: beyond that the event loop waits, stops reading
//! the socket, and the backlog stays with the broker. Acknowledgements
//! never wait for that hand-over (they go through a task of their own), so
//! a batch being acknowledged cannot hold up the event loop that sends
//! them. While the hand-over is full the event loop sends nothing, pings
//! included, so a broker may close the connection if the store stays
//! unavailable for longer than 1.5 keep-alives; it then delivers what was
//! not acknowledged again on the next one.
//!
//! Order. With one consumer in the group, the broker delivers in the order
//! published. Replicas in one group share the messages (each event is
//! still stored once) but, as on NATS, a user's events may then be stored
//! in the order the replicas commit.

mod dead_letter;
pub mod message;

use self::dead_letter::{DeadLetters, Rejected};
use super::pipeline::{Delivery, Pipeline, Received, Source};
use super::{ConsumerTask, Probe};
use crate::config::{BatchLimits, MqttSettings};
use crate::store::{Refused, Store};
use cloudevents_wire::Transport;
use futures::future::BoxFuture;
use rumqttc::v5::mqttbytes::v5::SubscribeReasonCode;
use rumqttc::v5::mqttbytes::v5::{Packet, Publish};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use rumqttc::Outgoing;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The longest pause between two attempts to connect.
const MAX_RECONNECT_PAUSE: Duration = Duration::from_secs(4);
/// How long the event loop gets at shutdown to send the last
/// acknowledgements and the DISCONNECT.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Topic, properties and packet overhead allowed in a PUBLISH beyond
/// `MAX_BODY_BYTES` of payload: attributes as user properties are at most
/// a few KiB each (`crate::limits`).
const PROPERTIES_ALLOWANCE: usize = 256 * 1024;

/// The connection's state, for `/readyz`.
#[derive(Debug, Clone)]
enum Connection {
    Connecting,
    Subscribed,
    Down(String),
}

/// A message, with the connection that delivered it.
pub struct Incoming {
    connection: u64,
    publish: Publish,
}

/// Starts the consumer task. It runs until `shutdown` is cancelled, then
/// finishes the batches in hand (dead letters, store, acknowledgements)
/// and disconnects, keeping the session.
pub fn start(
    settings: &MqttSettings,
    max_body_bytes: usize,
    limits: BatchLimits,
    store: Store,
    shutdown: CancellationToken,
) -> anyhow::Result<ConsumerTask> {
    // Three batches delivered and not yet acknowledged, at most.
    let receive_maximum = u16::try_from(limits.max_events.saturating_mul(3)).unwrap_or(u16::MAX);
    let mut options: MqttOptions = settings.common.options()?;
    options
        .set_clean_start(false)
        .set_session_expiry_interval(Some(
            u32::try_from(settings.session_expiry.as_secs()).unwrap_or(u32::MAX),
        ))
        .set_manual_acks(true)
        .set_receive_maximum(Some(receive_maximum))
        // rumqttc refuses PUBLISHes over 10 KiB by default; the broker
        // is told what this service takes, and drops larger ones for it.
        .set_max_packet_size(Some(
            u32::try_from(max_body_bytes.saturating_add(PROPERTIES_ALLOWANCE)).unwrap_or(u32::MAX),
        ));
    // Acknowledgements for every message in flight fit, for a broker that
    // keeps to Receive Maximum; past it, the acknowledger waits for room,
    // never the pipeline.
    let (client, eventloop) = AsyncClient::new(options, usize::from(receive_maximum) + 16);
    // Bounded (see "Flow" above). The pipeline never waits on the event
    // loop (acknowledgements are queued for the acknowledger), so a full
    // hand-over always empties: test
    // `mqtt::a_backlog_queued_for_the_session_is_drained_whole`.
    let (incoming, received) = mpsc::channel(usize::from(receive_maximum));
    let (acks, to_acknowledge) = mpsc::unbounded_channel();
    let (state, watched) = watch::channel(Connection::Connecting);
    let connection = Arc::new(AtomicU64::new(0));
    let driver = Driver {
        client: client.clone(),
        filter: settings.filter(),
        incoming,
        state,
        connection: connection.clone(),
    };
    let dead_letters = DeadLetters::new(settings, max_body_bytes)?;
    tracing::info!(
        broker = %settings::redact::url(&settings.common.url),
        filter = %settings.filter(),
        client_id = %settings.common.client_id,
        dlq = %settings.dlq_topic,
        batch_max = limits.max_events,
        batch_wait_ms = limits.max_wait.as_millis() as u64,
        "consuming CloudEvents from MQTT"
    );
    let acknowledger = tokio::spawn(acknowledge_in_order(
        client.clone(),
        connection.clone(),
        to_acknowledge,
    ));
    let pipeline = Pipeline {
        source: MqttSource {
            client,
            received: Mutex::new(Some(received)),
            event_loop: Mutex::new(Some(tokio::spawn(driver.run(eventloop)))),
            acknowledger: Mutex::new(Some(acknowledger)),
            acks: Mutex::new(Some(acks)),
        },
        dead_letters,
        store,
        limits,
        shutdown,
    };
    Ok(ConsumerTask {
        task: tokio::spawn(pipeline.run()),
        probe: Arc::new(ConnectionProbe(watched)),
    })
}

struct ConnectionProbe(watch::Receiver<Connection>);

impl Probe for ConnectionProbe {
    fn check(&self, _: Duration) -> BoxFuture<'_, Result<(), String>> {
        let state = self.0.borrow().clone();
        Box::pin(async move {
            match state {
                Connection::Subscribed => Ok(()),
                Connection::Connecting => Err("not connected to the MQTT broker yet".into()),
                Connection::Down(reason) => Err(format!("MQTT broker unreachable: {reason}")),
            }
        })
    }
}

/// Polls the event loop: connects, subscribes on every connection (a
/// resumed session keeps the subscription; subscribing again is harmless),
/// and hands each message over.
struct Driver {
    client: AsyncClient,
    filter: String,
    incoming: mpsc::Sender<Incoming>,
    state: watch::Sender<Connection>,
    /// Counts connections, so acknowledgements of an earlier one are known.
    connection: Arc<AtomicU64>,
}

impl Driver {
    async fn run(self, mut eventloop: EventLoop) {
        let mut failures: u32 = 0;
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(connack))) => {
                    failures = 0;
                    self.connection.fetch_add(1, Ordering::SeqCst);
                    tracing::info!(
                        session_present = connack.session_present,
                        "connected to the MQTT broker"
                    );
                    if let Err(e) = self.client.try_subscribe(&self.filter, QoS::AtLeastOnce) {
                        tracing::error!(error = %e, "MQTT subscribe not sent");
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(suback))) => {
                    self.subscribed(&suback.return_codes)
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    let connection = self.connection.load(Ordering::SeqCst);
                    // Gone only once the pipeline has stopped: the message
                    // stays unacknowledged and is delivered again.
                    let _ = self
                        .incoming
                        .send(Incoming {
                            connection,
                            publish,
                        })
                        .await;
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
                Ok(_) => {}
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let reason = e.to_string();
                    if failures == 1 {
                        tracing::warn!(%reason, "MQTT connection lost; reconnecting");
                    } else {
                        tracing::debug!(%reason, failures, "cannot connect to the MQTT broker");
                    }
                    self.state.send_replace(Connection::Down(reason));
                    let pause = (Duration::from_millis(250) * failures).min(MAX_RECONNECT_PAUSE);
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    /// A refused subscription is an operator's problem (an ACL, a broker
    /// without shared subscriptions): said loudly, and `/readyz` fails.
    fn subscribed(&self, codes: &[SubscribeReasonCode]) {
        match codes.first() {
            Some(SubscribeReasonCode::Success(_)) => {
                tracing::info!(filter = %self.filter, "subscribed");
                self.state.send_replace(Connection::Subscribed);
            }
            other => {
                let reason = format!(
                    "the broker refused the subscription to {}: {other:?}",
                    self.filter
                );
                tracing::error!(%reason);
                self.state.send_replace(Connection::Down(reason));
            }
        }
    }
}

struct MqttSource {
    client: AsyncClient,
    /// What the event loop hands over; taken by the pipeline once.
    received: Mutex<Option<mpsc::Receiver<Incoming>>>,
    event_loop: Mutex<Option<JoinHandle<()>>>,
    /// Sends the acknowledgements queued on `acks`, in order.
    acknowledger: Mutex<Option<JoinHandle<()>>>,
    /// Dropped at close, which ends the acknowledger once it has sent
    /// what is queued.
    acks: Mutex<Option<mpsc::UnboundedSender<Ack>>>,
}

/// What an acknowledgement needs of a message: its packet id and QoS,
/// without the payload, which is freed as soon as the batch is stored.
struct Ack {
    connection: u64,
    publish: Publish,
}

impl Ack {
    fn of(incoming: Incoming) -> Ack {
        let Publish { qos, pkid, .. } = incoming.publish;
        let mut publish = Publish::new("", qos, "", None);
        publish.pkid = pkid;
        Ack {
            connection: incoming.connection,
            publish,
        }
    }
}

/// Hands each acknowledgement to the event loop, waiting for room in its
/// request queue when it is full, so that the pipeline never waits on the
/// event loop. Those of a connection that has ended are dropped (see the
/// module docs).
async fn acknowledge_in_order(
    client: AsyncClient,
    connection: Arc<AtomicU64>,
    mut queued: mpsc::UnboundedReceiver<Ack>,
) {
    while let Some(ack) = queued.recv().await {
        if ack.connection != connection.load(Ordering::SeqCst) {
            continue;
        }
        if let Err(e) = client.ack(&ack.publish).await {
            tracing::debug!(error = %e, "MQTT acknowledgement not sent");
        }
    }
}

impl Source for MqttSource {
    type Subscription = mpsc::Receiver<Incoming>;
    type Message<'a> = Incoming;
    type Ack = Incoming;
    type Rejected = Rejected;

    fn transport(&self) -> Transport {
        Transport::Mqtt
    }

    /// The subscription is made by the event loop on every connection;
    /// this hands its messages to the pipeline.
    fn provision(&self) -> BoxFuture<'_, Result<Self::Subscription, String>> {
        let received = self.received.lock().ok().and_then(|mut r| r.take());
        Box::pin(
            async move { received.ok_or_else(|| "the MQTT event loop has stopped".to_owned()) },
        )
    }

    fn receive<'a>(
        &'a self,
        received: &'a mut Self::Subscription,
    ) -> BoxFuture<'a, Received<Incoming>> {
        Box::pin(async move {
            match received.recv().await {
                Some(incoming) => Received::Message(incoming),
                None => Received::Broken("the MQTT event loop has stopped".into()),
            }
        })
    }

    fn decode(&self, incoming: Incoming) -> Option<Delivery<Self>> {
        let binding = message::binding_message(&incoming.publish);
        let bytes = incoming.publish.payload.len()
            + binding
                .user_properties
                .iter()
                .map(|(n, v)| n.len() + v.len())
                .sum::<usize>();
        let decoded = message::decode(binding);
        let rejected = |incoming: &Incoming| Rejected::new(&incoming.publish);
        Some(Delivery::new(bytes, incoming, decoded, rejected))
    }

    fn unstorable(&self, incoming: &Incoming, _: Refused) -> Rejected {
        Rejected::new(&incoming.publish)
    }

    /// Queues the acknowledgements for the acknowledger; never waits.
    fn acknowledge(&self, acks: Vec<Incoming>) -> BoxFuture<'_, ()> {
        if let Some(queue) = self.acks.lock().ok().and_then(|q| q.clone()) {
            for incoming in acks {
                // Gone only after close: the message is delivered again.
                let _ = queue.send(Ack::of(incoming));
            }
        }
        Box::pin(async {})
    }

    /// Sends the DISCONNECT after the last acknowledgements (the client's
    /// requests go out in order) and waits for the event loop to send it.
    /// The session is kept for the next start.
    fn close(&self) -> BoxFuture<'_, ()> {
        let event_loop = self.event_loop.lock().ok().and_then(|mut e| e.take());
        let acknowledger = self.acknowledger.lock().ok().and_then(|mut a| a.take());
        drop(self.acks.lock().ok().and_then(|mut q| q.take()));
        Box::pin(async move {
            // The last acknowledgements are in the event loop's queue
            // before the DISCONNECT, which follows them on the wire.
            if let Some(acknowledger) = acknowledger {
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, acknowledger).await;
            }
            if let Err(e) = self.client.disconnect().await {
                tracing::debug!(error = %e, "MQTT disconnect not sent");
            }
            if let Some(mut event_loop) = event_loop {
                if tokio::time::timeout(CLOSE_TIMEOUT, &mut event_loop)
                    .await
                    .is_err()
                {
                    tracing::warn!("MQTT acknowledgements not all sent at shutdown; those messages will be delivered again and deduplicated");
                    event_loop.abort();
                }
            }
        })
    }
}
