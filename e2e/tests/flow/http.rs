//! The embedded default stack: user-service -> HTTP -> audit-service, SQLite.

use e2e::{Service, Stack};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

const PASSWORD: &str = "correct horse battery staple 12345";

fn subjects(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|i| {
            i["event"]["subject"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn created_user_is_audited_within_5s_with_its_id_as_subject_and_no_password() {
    let stack = Stack::new().unwrap();
    let audit = stack.audit(&[]).await.unwrap();
    let user = stack.user(&audit.base_url, &[]).await.unwrap();

    let created = stack
        .create_user(&user, "Ozzy Osbourne", PASSWORD)
        .await
        .unwrap();
    let id = created;

    let items = stack
        .wait_for_events(
            &audit,
            &format!("subject={id}"),
            Duration::from_secs(5),
            |i| !i.is_empty(),
        )
        .await
        .unwrap();
    assert_eq!(items.len(), 1);
    let item = &items[0];
    assert_eq!(item["transport"], "http");
    let event = &item["event"];
    assert_eq!(event["type"], "user.storeUser");
    assert_eq!(event["specversion"], "1.0");
    assert_eq!(event["subject"], id.as_str());
    assert_eq!(event["datacontenttype"], "application/json");
    assert_eq!(
        event["data"],
        serde_json::json!({"id": id, "name": "Ozzy Osbourne"})
    );
    assert!(!item.to_string().contains(PASSWORD));
}

#[tokio::test]
async fn update_and_delete_emit_their_events_in_order() {
    let stack = Stack::new().unwrap();
    let audit = stack.audit(&[]).await.unwrap();
    let user = stack.user(&audit.base_url, &[]).await.unwrap();
    let id = stack.create_user(&user, "first", "pw-12345").await.unwrap();
    for name in ["second", "third"] {
        stack.rename_user(&user, &id, name).await.unwrap();
    }
    stack.delete_user(&user, &id).await.unwrap();

    let items = stack
        .wait_for_events(
            &audit,
            &format!("subject={id}"),
            Duration::from_secs(10),
            |i| i.len() >= 4,
        )
        .await
        .unwrap();
    let seen: Vec<(String, String)> = items
        .iter()
        .map(|i| {
            (
                i["event"]["type"].as_str().unwrap().to_owned(),
                i["event"]["data"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("user.storeUser".into(), "first".into()),
            ("user.updateUser".into(), "second".into()),
            ("user.updateUser".into(), "third".into()),
            ("user.deleteUser".into(), "third".into()),
        ]
    );
}

#[tokio::test]
async fn users_created_while_audit_is_down_are_each_delivered_once_when_it_starts() {
    let stack = Stack::new().unwrap();
    // Start the audit service once to learn a port, then stop it: the user
    // service is pointed at a port where nothing answers.
    let mut audit = stack.audit(&[]).await.unwrap();
    audit.terminate().await.unwrap();
    let user = stack.user(&audit.base_url, &[]).await.unwrap();

    let mut ids = HashSet::new();
    for n in 0..50 {
        let created = stack
            .create_user(&user, &format!("user {n}"), "pw-12345")
            .await
            .unwrap();
        ids.insert(created);
    }

    audit.restart().await.unwrap();
    stack
        .wait_for_events(
            &audit,
            "type=user.storeUser",
            Duration::from_secs(30),
            |i| i.len() >= 50,
        )
        .await
        .unwrap();
    // A duplicate could still be on its way: count only once an event
    // created after all the others has arrived.
    ids.insert(wait_for_marker(&stack, &user, &audit).await);
    let items = stack.events(&audit, "type=user.storeUser").await.unwrap();
    assert_eq!(items.len(), 51, "exactly one event per user");
    assert_eq!(subjects(&items).into_iter().collect::<HashSet<_>>(), ids);
    assert_recovery_logged(&user, "http");
}

/// user-service said, in one line or a few (not one per event), that
/// delivery recovered after the failed attempts of an outage.
pub(crate) fn assert_recovery_logged(user: &Service, transport: &str) {
    let lines = user.log_lines("delivery recovered");
    assert!(
        (1..=3).contains(&lines.len()),
        "{} recovery lines:\n{}",
        lines.len(),
        user.log_tail(40)
    );
    assert_eq!(lines[0]["transport"], transport, "{}", lines[0]);
    assert!(
        lines[0]["failed_attempts"].as_u64() >= Some(1),
        "{}",
        lines[0]
    );
    assert!(lines[0]["failing_for_ms"].is_u64(), "{}", lines[0]);
}

/// Creates one more user and waits for its event. The relay reads the
/// outbox in seq order, a batch at a time, and finishes a batch before it
/// reads the next, so this event, written last, is published together with
/// or after everything that was pending before it. Returns its id. On
/// PostgreSQL, after a kill, its bucket may still be held by the killed
/// process's lease for up to RELAY_LEASE_MS (30 s).
async fn wait_for_marker(stack: &Stack, user: &Service, audit: &Service) -> String {
    let marker = stack.create_user(user, "marker", "pw-12345").await.unwrap();
    stack
        .wait_for_events(
            audit,
            &format!("subject={marker}"),
            Duration::from_secs(60),
            |i| !i.is_empty(),
        )
        .await
        .unwrap();
    marker
}

#[tokio::test]
async fn user_service_killed_mid_load_loses_no_committed_event_and_invents_none() {
    let stack = Stack::new().unwrap();
    let audit = stack.audit(&[]).await.unwrap();
    let mut user = stack.user(&audit.base_url, &[]).await.unwrap();
    let stack = Arc::new(stack);
    let base = user.base_url.clone();

    // 200 creates from 8 concurrent clients; the service is killed midway.
    let accepted = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut clients = Vec::new();
    for c in 0..8 {
        let (stack, accepted, base) = (stack.clone(), accepted.clone(), base.clone());
        clients.push(tokio::spawn(async move {
            for n in 0..25 {
                let r = stack
                    .http
                    .post(format!("{base}/v1/user"))
                    .json(&serde_json::json!({"name": format!("load {c}-{n}"), "password": "pw-12345"}))
                    .send()
                    .await;
                if let Ok(r) = r {
                    if r.status() == 201 {
                        let body: Value = r.json().await.unwrap();
                        accepted.lock().unwrap().push(body["id"].as_str().unwrap().to_owned());
                    }
                }
            }
        }));
    }
    while accepted.lock().unwrap().len() < 60 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    user.kill();
    for c in clients {
        c.await.unwrap();
    }
    let accepted: HashSet<String> = accepted.lock().unwrap().iter().cloned().collect();
    assert!(accepted.len() < 200, "the kill landed after every create");

    user.restart().await.unwrap();
    // On PostgreSQL the killed process's outbox leases (RELAY_LEASE_MS,
    // 30 s) hold its buckets until they run out; only then does the
    // restarted one send what was committed but not yet delivered.
    let items = stack
        .wait_for_events(
            &audit,
            "type=user.storeUser",
            Duration::from_secs(60),
            |items| {
                let seen: HashSet<String> = subjects(items).into_iter().collect();
                accepted.is_subset(&seen)
            },
        )
        .await
        .unwrap();
    let marker = wait_for_marker(&stack, &user, &audit).await;
    let items_now = stack.events(&audit, "type=user.storeUser").await.unwrap();
    assert!(items_now.len() > items.len());
    assert!(subjects(&items_now).contains(&marker));

    let mut per_user: HashMap<String, usize> = HashMap::new();
    for s in subjects(&items_now) {
        *per_user.entry(s).or_default() += 1;
    }
    for id in &accepted {
        assert_eq!(
            per_user.get(id),
            Some(&1),
            "user {id} got a 201 but has {:?} events",
            per_user.get(id)
        );
    }
    // Users whose request died with the process may or may not have been
    // committed; an event may exist only for a user that really exists.
    for (id, count) in &per_user {
        assert_eq!(*count, 1, "user {id} has {count} events");
        let r = stack
            .http
            .get(format!("{}/v1/users/{id}", user.base_url))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            200,
            "event for user {id}, who was never committed"
        );
    }
}

#[tokio::test]
async fn the_password_never_reaches_the_audit_store_or_either_log() {
    let stack = Stack::new().unwrap();
    let audit = stack.audit(&[("RUST_LOG", "debug")]).await.unwrap();
    let user = stack
        .user(&audit.base_url, &[("RUST_LOG", "debug")])
        .await
        .unwrap();
    let secret = "s3cret-p@ssw0rd-that-must-not-leak";
    let id = stack.create_user(&user, "careful", secret).await.unwrap();
    let r = stack
        .http
        .put(format!("{}/v1/users/{id}", user.base_url))
        .json(&serde_json::json!({"name": "careful too", "password": format!("{secret}-2")}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    stack
        .wait_for_events(
            &audit,
            &format!("subject={id}"),
            Duration::from_secs(10),
            |i| i.len() >= 2,
        )
        .await
        .unwrap();

    let audit_log = audit.logs();
    let user_log = user.logs();
    assert!(
        audit_log.contains(&id),
        "audit-service logged no line for the event"
    );
    assert!(!audit_log.contains(secret), "password in audit-service log");
    assert!(!user_log.contains(secret), "password in user-service log");
    let url = stack.db_url("audit.db").await;
    let stored: Vec<Vec<u8>> = if url.starts_with("sqlite:") {
        // The file's bytes, write-ahead log included.
        let file = stack.dir.path().join("audit.db");
        let wal = stack.dir.path().join("audit.db-wal");
        vec![
            std::fs::read(file).unwrap(),
            std::fs::read(wal).unwrap_or_default(),
        ]
    } else {
        test_kit::database::Db::open(&url)
            .await
            .texts("SELECT concat_ws(' ', source, id, type, subject, event_json) FROM events")
            .await
            .into_iter()
            .map(String::into_bytes)
            .collect()
    };
    for bytes in stored {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "password in the audit database"
        );
    }
    let all = stack.events(&audit, "").await.unwrap();
    assert!(!serde_json::to_string(&all).unwrap().contains(secret));
}

#[tokio::test]
async fn both_services_stop_cleanly_on_sigterm() {
    let stack = Stack::new().unwrap();
    let mut audit = stack.audit(&[]).await.unwrap();
    let mut user = stack.user(&audit.base_url, &[]).await.unwrap();
    stack
        .create_user(&user, "before stop", "pw-12345")
        .await
        .unwrap();
    assert!(
        user.terminate().await.unwrap().success(),
        "user-service exit status"
    );
    assert!(
        audit.terminate().await.unwrap().success(),
        "audit-service exit status"
    );
}
