//! Both services on EVENT_TRANSPORT=nats against a real NATS JetStream
//! server (scripts/nats.sh). A missing server fails these tests; it never
//! skips them.

use e2e::{Service, Stack};
use serde_json::Value;
use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

pub(crate) const SHARED_SERVER: u16 = 4222;

fn nats_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/nats.sh")
}

fn nats_sh(port: u16, command: &str) {
    let status = Command::new(nats_script())
        .arg(command)
        .env("NATSD_PORT", port.to_string())
        .status()
        .expect("scripts/nats.sh could not run");
    assert!(
        status.success(),
        "scripts/nats.sh {command} on port {port} failed"
    );
}

pub(crate) fn require_shared_server() {
    let up = Command::new(nats_script())
        .arg("status")
        .env("NATSD_PORT", SHARED_SERVER.to_string())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        up,
        "no NATS server with JetStream on 127.0.0.1:{SHARED_SERVER}: start one with `make nats-up` (make test does)"
    );
}

/// Both services on NATS with a stream, subject and consumer of their own,
/// so tests don't see each other's events.
pub(crate) fn nats_env(port: u16, tag: &str) -> Vec<(String, String)> {
    vec![
        ("EVENT_TRANSPORT".into(), "nats".into()),
        ("NATS_URL".into(), format!("nats://127.0.0.1:{port}")),
        ("NATS_STREAM".into(), format!("E2E_{tag}")),
        ("NATS_SUBJECT".into(), format!("e2e{tag}.events")),
        ("NATS_CONSUMER".into(), format!("audit-{tag}")),
        ("NATS_DLQ_SUBJECT".into(), format!("dlq{tag}")),
        ("NATS_DLQ_STREAM".into(), format!("E2E_{tag}_DLQ")),
    ]
}

async fn start_pair(stack: &Stack, env: &[(String, String)]) -> (Service, Service) {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let audit = stack.audit(&env).await.unwrap();
    let user = stack.user("http://127.0.0.1:9", &env).await.unwrap();
    (audit, user)
}

#[tokio::test]
async fn over_nats_create_update_and_delete_arrive_in_order() {
    require_shared_server();
    let stack = Stack::new().unwrap();
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let (audit, user) = start_pair(&stack, &nats_env(SHARED_SERVER, &tag)).await;

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
            Duration::from_secs(20),
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
    assert!(items.iter().all(|i| i["transport"] == "nats"), "{items:?}");
    assert_eq!(items[0]["event"]["data"]["name"], "Ozzy Osbourne");
    assert_eq!(items[1]["event"]["data"]["name"], "Prince of Darkness");
}

/// Stops its private server when dropped, even if the test fails.
struct PrivateServer(u16);

impl Drop for PrivateServer {
    fn drop(&mut self) {
        let _ = Command::new(nats_script())
            .arg("stop")
            .env("NATSD_PORT", self.0.to_string())
            .status();
    }
}

#[tokio::test]
async fn users_created_while_the_nats_server_is_down_all_arrive_once_after_it_returns() {
    // A server of its own, so stopping it disturbs no other test.
    let port = 14222;
    nats_sh(port, "start");
    let _server = PrivateServer(port);
    let stack = Stack::new().unwrap();
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let (audit, user) = start_pair(&stack, &nats_env(port, &tag)).await;

    // One event through first, so the stream and the consumer exist.
    let first = stack
        .create_user(&user, "before", "pw-12345")
        .await
        .unwrap();
    stack
        .wait_for_events(&audit, "", Duration::from_secs(30), |i| !i.is_empty())
        .await
        .unwrap();

    nats_sh(port, "stop");
    let mut ids = HashSet::from([first.clone()]);
    for n in 0..500 {
        let created = stack
            .create_user(&user, &format!("offline {n}"), "pw-12345")
            .await
            .unwrap();
        ids.insert(created);
    }
    nats_sh(port, "start");
    // The marker goes last; once it is stored, everything before it is.
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
    crate::http::assert_recovery_logged(&user, "nats");
}
