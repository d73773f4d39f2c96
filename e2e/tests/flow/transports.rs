//! Both services on each broker transport, the same tests for Kafka, NATS
//! JetStream and MQTT: a user's created, renamed and deleted events arrive
//! in order; either service killed mid-stream loses nothing and stores
//! nothing twice; users created while the broker is down all arrive once
//! after it returns (a broker of the test's own). A missing shared broker fails
//! these tests; it never skips them. What only one transport does (Kafka
//! over SASL, a start before the broker exists) is beside it.

use e2e::{Service, Stack};
use serde_json::Value;
use std::collections::HashSet;
use std::time::Duration;
use test_kit::servers::{require_shared, Kind, PrivateServer};

/// Environment variables, as `Stack` takes them.
type Env = Vec<(String, String)>;

/// One transport, as these tests run it.
trait Transport {
    /// `EVENT_TRANSPORT`'s value, which the store records.
    const NAME: &'static str;
    /// The script that runs its broker.
    const SERVER: Kind;
    /// Whether user-service sees publishes fail while the broker is down
    /// (and logs its recovery): librdkafka holds Kafka records and retries
    /// them itself within its delivery timeout.
    const OUTAGE_FAILS_PUBLISHES: bool = true;

    /// Both services' environment on the broker at `port`, with names of
    /// the test's own (`tag`); then what audit-service alone is given.
    fn env(port: u16, tag: &str) -> (Env, Env);
}

struct Kafka;
struct Nats;
struct Mqtt;

impl Transport for Kafka {
    const NAME: &'static str = "kafka";
    const SERVER: Kind = Kind::Kafka;
    const OUTAGE_FAILS_PUBLISHES: bool = false;

    fn env(port: u16, tag: &str) -> (Env, Env) {
        (
            crate::kafka::kafka_env(&format!("127.0.0.1:{port}"), tag),
            Vec::new(),
        )
    }
}

impl Transport for Nats {
    const NAME: &'static str = "nats";
    const SERVER: Kind = Kind::Nats;

    fn env(port: u16, tag: &str) -> (Env, Env) {
        (crate::nats::nats_env(port, tag), Vec::new())
    }
}

impl Transport for Mqtt {
    const NAME: &'static str = "mqtt";
    const SERVER: Kind = Kind::Mosquitto;

    fn env(port: u16, tag: &str) -> (Env, Env) {
        let both = vec![
            ("EVENT_TRANSPORT".into(), "mqtt".into()),
            ("MQTT_URL".into(), format!("mqtt://127.0.0.1:{port}")),
            ("MQTT_TOPIC".into(), format!("e2e/{tag}")),
        ];
        // The persistent session's name: one per test, since tests run
        // side by side on the shared broker.
        let audit = vec![
            ("MQTT_CLIENT_ID".into(), format!("audit-{tag}")),
            ("MQTT_GROUP".into(), format!("g{tag}")),
            ("MQTT_DLQ_TOPIC".into(), format!("e2e/{tag}/dlq")),
        ];
        (both, audit)
    }
}

async fn start_pair<T: Transport>(stack: &Stack, port: u16, tag: &str) -> (Service, Service) {
    let (both, audit_only) = T::env(port, tag);
    let mut audit_env = both.clone();
    audit_env.extend(audit_only);
    let audit_refs: Vec<(&str, &str)> = audit_env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let user_refs: Vec<(&str, &str)> = both.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let audit = stack.audit(&audit_refs).await.unwrap();
    let user = stack.user("http://127.0.0.1:9", &user_refs).await.unwrap();
    (audit, user)
}

async fn changes_arrive_in_order<T: Transport>() {
    require_shared(T::SERVER);
    let stack = Stack::new().unwrap();
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let (audit, user) = start_pair::<T>(&stack, T::SERVER.shared_port(), &tag).await;

    let id = stack
        .create_user(&user, "Ozzy Osbourne", "12345")
        .await
        .unwrap();
    stack
        .rename_user(&user, &id, "Prince of Darkness")
        .await
        .unwrap();
    stack.delete_user(&user, &id).await.unwrap();
    let items = stack
        .wait_for_events(
            &audit,
            &format!("subject={id}"),
            Duration::from_secs(30),
            |i| i.len() >= 3,
        )
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{e}\nuser-service:\n{}\naudit-service:\n{}",
                user.log_tail(30),
                audit.log_tail(30)
            )
        });
    let types: Vec<&str> = items
        .iter()
        .map(|i| i["event"]["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["user.storeUser", "user.updateUser", "user.deleteUser"]
    );
    assert!(items.iter().all(|i| i["transport"] == T::NAME), "{items:?}");
    assert_eq!(items[0]["event"]["data"]["name"], "Ozzy Osbourne");
    assert_eq!(items[1]["event"]["data"]["name"], "Prince of Darkness");
}

async fn users_created_while_the_broker_is_down_arrive_once<T: Transport>() {
    // A broker of its own, so stopping it disturbs no other test.
    let broker = PrivateServer::start(T::SERVER);
    let stack = Stack::new().unwrap();
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let (audit, user) = start_pair::<T>(&stack, broker.port, &tag).await;

    // One event through first, so the topic, stream or subscription exists.
    let first = stack
        .create_user(&user, "before", "pw-12345")
        .await
        .unwrap();
    stack
        .wait_for_events(&audit, "", Duration::from_secs(30), |i| !i.is_empty())
        .await
        .unwrap();

    broker.stop_async().await;
    let mut ids = HashSet::from([first.clone()]);
    for n in 0..500 {
        let created = stack
            .create_user(&user, &format!("offline {n}"), "pw-12345")
            .await
            .unwrap();
        ids.insert(created);
    }
    broker.start_again_async().await;
    // The marker goes last; once it is stored, everything before it is
    // (one user-service publishes in outbox order, one audit-service
    // stores in the order received).
    stack.rename_user(&user, &first, "marker").await.unwrap();
    stack
        .wait_for_events(
            &audit,
            "type=user.updateUser",
            Duration::from_secs(120),
            |i| !i.is_empty(),
        )
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{e}\nuser-service:\n{}\naudit-service:\n{}",
                user.log_tail(30),
                audit.log_tail(30)
            )
        });
    let items: Vec<Value> = stack.events(&audit, "type=user.storeUser").await.unwrap();
    let subjects: HashSet<String> = items
        .iter()
        .map(|i| i["event"]["subject"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(items.len(), 501, "each event exactly once");
    assert_eq!(subjects, ids);
    if T::OUTAGE_FAILS_PUBLISHES {
        crate::http::assert_recovery_logged(&user, T::NAME);
    }
}

/// Kills (SIGKILL) user-service right after a burst of users, with events
/// still in its outbox or on their way, and audit-service while it stores
/// them; started again, the two store every user's event once.
async fn killing_either_service_mid_stream_loses_nothing<T: Transport>() {
    const N: usize = 300;
    require_shared(T::SERVER);
    let stack = Stack::new().unwrap();
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let (mut audit, mut user) = start_pair::<T>(&stack, T::SERVER.shared_port(), &tag).await;
    // The subscription, stream or group exists before the burst.
    stack
        .create_user_and_wait(&user, &audit, Duration::from_secs(30))
        .await
        .unwrap();

    let mut ids = HashSet::new();
    for n in 0..N {
        ids.insert(
            stack
                .create_user(&user, &format!("burst {n}"), "pw-12345")
                .await
                .unwrap(),
        );
        if n == N / 2 {
            audit.kill();
        }
    }
    user.kill();
    audit.restart().await.unwrap();
    user.restart().await.unwrap();

    let stored = stack
        .wait_for_events(
            &audit,
            "type=user.storeUser",
            Duration::from_secs(120),
            |i| i.len() > N,
        )
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{e}\nuser-service:\n{}\naudit-service:\n{}",
                user.log_tail(30),
                audit.log_tail(30)
            )
        });
    // A late copy would be stored by the time a user created after the
    // restart is (one publisher, in outbox order; one consumer, in order).
    let marker = stack
        .create_user_and_wait(&user, &audit, Duration::from_secs(60))
        .await
        .unwrap();
    let items: Vec<Value> = stack.events(&audit, "type=user.storeUser").await.unwrap();
    let subjects: HashSet<String> = items
        .iter()
        .map(|i| i["event"]["subject"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        items.len(),
        N + 2,
        "each event exactly once ({} before the marker)",
        stored.len()
    );
    assert!(ids.is_subset(&subjects), "every burst user stored");
    assert!(subjects.contains(&marker));
}

/// The tests, for one transport.
macro_rules! transport_tests {
    ($module:ident, $transport:ty) => {
        mod $module {
            #[tokio::test]
            async fn a_users_created_renamed_and_deleted_events_arrive_in_order() {
                super::changes_arrive_in_order::<$transport>().await;
            }

            #[tokio::test]
            async fn killing_either_service_mid_stream_loses_nothing_and_stores_nothing_twice() {
                super::killing_either_service_mid_stream_loses_nothing::<$transport>().await;
            }

            #[tokio::test]
            async fn users_created_while_the_broker_is_down_all_arrive_once_after_it_returns() {
                super::users_created_while_the_broker_is_down_arrive_once::<$transport>().await;
            }
        }
    };
}

transport_tests!(kafka, super::Kafka);
transport_tests!(nats, super::Nats);
transport_tests!(mqtt, super::Mqtt);
