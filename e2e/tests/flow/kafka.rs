//! Both services on EVENT_TRANSPORT=kafka against a real Apache Kafka broker
//! (scripts/kafka.sh). A missing broker fails these tests; it never skips them.

use e2e::{Service, Stack};
use serde_json::Value;
use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

pub(crate) const SHARED_BROKER: &str = "127.0.0.1:9092";

fn kafka_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/kafka.sh")
}

fn kafka_sh(port: u16, args: &[&str]) {
    let status = Command::new(kafka_script())
        .args(args)
        .env("BROKER_PORT", port.to_string())
        .env("BROKER_CONTROLLER_PORT", (port + 1).to_string())
        .status()
        .expect("scripts/kafka.sh could not run");
    assert!(
        status.success(),
        "scripts/kafka.sh {args:?} on port {port} failed"
    );
}

pub(crate) fn require_shared_broker() {
    let up = Command::new(kafka_script())
        .arg("status")
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        up,
        "no Kafka broker at {SHARED_BROKER}: start one with `make kafka-up` (make test does)"
    );
}

/// The environment putting both services on Kafka with their own topic and
/// consumer group, so tests don't see each other's events.
pub(crate) fn kafka_env(brokers: &str, tag: &str) -> Vec<(String, String)> {
    vec![
        ("EVENT_TRANSPORT".into(), "kafka".into()),
        ("KAFKA_BROKERS".into(), brokers.into()),
        ("KAFKA_TOPIC".into(), format!("e2e-{tag}")),
        ("KAFKA_GROUP_ID".into(), format!("e2e-{tag}-group")),
        ("KAFKA_DLQ_TOPIC".into(), format!("e2e-{tag}.dlq")),
    ]
}

async fn start_pair(stack: &Stack, env: &[(String, String)]) -> (Service, Service) {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let audit = stack.audit(&env).await.unwrap();
    let user = stack.user("http://127.0.0.1:9", &env).await.unwrap();
    (audit, user)
}

#[tokio::test]
async fn over_kafka_a_created_user_is_stored_within_10s_and_changes_arrive_in_order() {
    require_shared_broker();
    let stack = Stack::new().unwrap();
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let (audit, user) = start_pair(&stack, &kafka_env(SHARED_BROKER, &tag)).await;

    let id = stack
        .create_user(&user, "Ozzy Osbourne", "12345")
        .await
        .unwrap();
    let items = stack
        .wait_for_events(
            &audit,
            &format!("subject={id}"),
            Duration::from_secs(10),
            |i| !i.is_empty(),
        )
        .await
        .unwrap();
    assert_eq!(items[0]["transport"], "kafka");
    assert_eq!(items[0]["event"]["type"], "user.storeUser");
    assert_eq!(items[0]["event"]["data"]["name"], "Ozzy Osbourne");

    stack
        .rename_user(&user, &id, "Prince of Darkness")
        .await
        .unwrap();
    stack.delete_user(&user, &id).await.unwrap();
    let items = stack
        .wait_for_events(
            &audit,
            &format!("subject={id}"),
            Duration::from_secs(10),
            |i| i.len() >= 3,
        )
        .await
        .unwrap();
    let types: Vec<&str> = items
        .iter()
        .map(|i| i["event"]["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["user.storeUser", "user.updateUser", "user.deleteUser"]
    );
}

/// Stops its private broker when dropped, even if the test fails.
struct PrivateBroker(u16);

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        let _ = Command::new(kafka_script())
            .arg("stop")
            .env("BROKER_PORT", self.0.to_string())
            .env("BROKER_CONTROLLER_PORT", (self.0 + 1).to_string())
            .status();
    }
}

#[tokio::test]
async fn users_created_while_the_broker_is_down_all_arrive_once_after_it_returns() {
    // A broker of its own, so stopping it disturbs no other test.
    let port = 19092;
    kafka_sh(port, &["start"]);
    let _broker = PrivateBroker(port);
    let brokers = format!("127.0.0.1:{port}");
    let stack = Stack::new().unwrap();
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let (audit, user) = start_pair(&stack, &kafka_env(&brokers, &tag)).await;

    // One event through first, so the topic and the group exist.
    let first = stack
        .create_user(&user, "before", "pw-12345")
        .await
        .unwrap();
    stack
        .wait_for_events(&audit, "", Duration::from_secs(30), |i| !i.is_empty())
        .await
        .unwrap();

    kafka_sh(port, &["stop"]);
    let mut ids = HashSet::from([first]);
    for n in 0..500 {
        let created = stack
            .create_user(&user, &format!("offline {n}"), "pw-12345")
            .await
            .unwrap();
        ids.insert(created);
    }
    kafka_sh(port, &["start"]);

    stack
        .wait_for_events(
            &audit,
            "type=user.storeUser",
            Duration::from_secs(120),
            |i| i.len() >= 501,
        )
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{e}\nuser-service:\n{}\naudit-service:\n{}",
                user.log_tail(30),
                audit.log_tail(30)
            )
        });
    // A duplicate could still be on its way: count only once a user created
    // after all the others is stored. The topic has one partition
    // (num.partitions=1), which the consumer reads in order.
    let marker = stack
        .create_user(&user, "marker", "pw-12345")
        .await
        .unwrap();
    stack
        .wait_for_events(
            &audit,
            &format!("subject={marker}"),
            Duration::from_secs(60),
            |i| !i.is_empty(),
        )
        .await
        .unwrap();
    ids.insert(marker);
    let items: Vec<Value> = stack.events(&audit, "type=user.storeUser").await.unwrap();
    let subjects: HashSet<String> = items
        .iter()
        .map(|i| i["event"]["subject"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(items.len(), 502, "each event exactly once");
    assert_eq!(subjects, ids);
}
