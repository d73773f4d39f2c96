//! The HTTP relay's batch mode (`application/cloudevents-batch+json`):
//! a backlog goes out many events to a request, each user's in order, and
//! a refused batch loses none of its good events.

use crate::helpers::{
    data_json, free_port, spawn_app, spawn_app_in, test_settings, FakeAudit, TestApp,
};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use cloudevents::{AttributesReader, Event};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// Each user's event names, in arrival order.
fn names_per_user(events: &[Event]) -> HashMap<String, Vec<String>> {
    let mut per_user: HashMap<String, Vec<String>> = HashMap::new();
    for e in events {
        per_user
            .entry(e.subject().unwrap().to_owned())
            .or_default()
            .push(data_json(e)["name"].as_str().unwrap().to_owned());
    }
    per_user
}

/// Creates `users` users, each renamed `renames` times: users * (1 +
/// renames) events.
async fn changes(app: &TestApp, users: usize, renames: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for u in 0..users {
        let id = app.create_user(&format!("u{u} v0")).await;
        for v in 1..=renames {
            let body = serde_json::json!({"name": format!("u{u} v{v}")});
            assert_eq!(app.put_user(&id, body).await.status(), 200);
        }
        ids.push(id);
    }
    ids
}

/// A backlog of pending events the relay meets fresh: made while the audit
/// service is down, then the service restarts towards `audit` with
/// `HTTP_BATCH_MAX` = `batch_max`.
async fn backlog(
    audit: &FakeAudit,
    batch_max: usize,
    make: impl AsyncFnOnce(&TestApp) -> Vec<String>,
) -> (TestApp, Vec<String>) {
    let down = format!("http://127.0.0.1:{}/", free_port());
    let app = spawn_app(&down).await;
    let ids = make(&app).await;
    let dir = app.stop().await;
    let mut settings = test_settings(&audit.url, &dir);
    settings.relay.batch_max = batch_max;
    (spawn_app_in(dir, settings).await, ids)
}

#[tokio::test]
async fn a_backlog_goes_out_in_batches_and_each_users_events_keep_their_order() {
    let audit = FakeAudit::start().await;
    let (_app, ids) = backlog(&audit, 100, async |app| changes(app, 30, 4).await).await;

    audit.wait_for_accepted(150).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let received = audit.received();
    assert!(
        received.iter().any(|r| r.is_batch() && r.events.len() > 1),
        "a backlog is sent in batches"
    );
    assert!(received.iter().all(|r| r.events.len() <= 100));
    let accepted = audit.accepted();
    assert_eq!(accepted.len(), 150, "each event once");
    let per_user = names_per_user(&accepted);
    for (u, id) in ids.iter().enumerate() {
        let expected: Vec<String> = (0..=4).map(|v| format!("u{u} v{v}")).collect();
        assert_eq!(per_user[id], expected);
    }
}

#[tokio::test]
async fn a_batch_refused_for_one_event_delivers_the_others_and_parks_only_that_one() {
    let audit = FakeAudit::start().await;
    audit.respond_with(|r| {
        if r.names().iter().any(|n| n == "poison") {
            (StatusCode::BAD_REQUEST, "invalid event in request").into_response()
        } else {
            StatusCode::NO_CONTENT.into_response()
        }
    });
    let (app, ids, poisoned) = {
        let mut poisoned = String::new();
        let (app, ids) = backlog(&audit, 100, async |app| {
            let mut ids = changes(app, 10, 2).await;
            // The poison: a user whose first event the receiver refuses,
            // alone or in a batch; its later event is fine.
            poisoned = app.create_user("poison").await;
            let body = serde_json::json!({"name": "cured"});
            assert_eq!(app.put_user(&poisoned, body).await.status(), 200);
            ids.extend(changes(app, 5, 2).await);
            ids
        })
        .await;
        (app, ids, poisoned)
    };
    let good = 15 * 3 + 1;
    audit.wait_for_accepted(good).await;
    let dead = crate::helpers::eventually("the dead letter", Duration::from_secs(10), || async {
        let dead = app.dead_letters().await;
        (!dead.is_empty()).then_some(dead)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let received = audit.received();
    assert!(
        received
            .iter()
            .any(|r| r.is_batch() && r.events.len() > 1 && !r.accepted()),
        "the poison was first refused inside a batch"
    );
    assert!(
        received
            .iter()
            .any(|r| !r.is_batch() && r.names() == ["poison"] && !r.accepted()),
        "then refused alone"
    );
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].user_id, poisoned);
    assert_eq!(dead[0].status, Some(400));
    assert!(dead[0]
        .reason
        .as_deref()
        .unwrap()
        .contains("invalid event in request"));

    let accepted = audit.accepted();
    assert_eq!(accepted.len(), good, "every good event once");
    let ids_seen: HashSet<&str> = accepted.iter().map(|e| e.id()).collect();
    assert_eq!(ids_seen.len(), good);
    let per_user = names_per_user(&accepted);
    assert_eq!(per_user[&poisoned], ["cured"]);
    for id in &ids {
        let names = &per_user[id];
        let prefix = names[0].split(' ').next().unwrap().to_owned();
        let expected: Vec<String> = (0..=2).map(|v| format!("{prefix} v{v}")).collect();
        assert_eq!(names, &expected);
    }
}

#[tokio::test]
async fn a_batch_max_of_one_sends_every_event_alone_in_binary_mode() {
    let audit = FakeAudit::start().await;
    let (_app, ids) = backlog(&audit, 1, async |app| changes(app, 5, 2).await).await;

    audit.wait_for_accepted(15).await;

    let received = audit.received();
    assert!(received.iter().all(|r| !r.is_batch()));
    assert!(received.iter().all(|r| r.headers.contains_key("ce-id")));
    let per_user = names_per_user(&audit.accepted());
    for (u, id) in ids.iter().enumerate() {
        let expected: Vec<String> = (0..=2).map(|v| format!("u{u} v{v}")).collect();
        assert_eq!(per_user[id], expected);
    }
}

#[tokio::test]
async fn a_user_with_a_long_backlog_goes_in_order_without_holding_others_back() {
    let audit = FakeAudit::start().await;
    // 600 events of one user: more than its lane keeps (two batches), so
    // the rest is read again, in order, as the lane drains.
    let (_app, ids) = backlog(&audit, 100, async |app| {
        let mut ids = changes(app, 1, 599).await;
        ids.extend(changes(app, 10, 1).await);
        ids
    })
    .await;

    let accepted = audit.wait_for_accepted(620).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(audit.accepted().len(), 620, "each event once");
    let per_user = names_per_user(&accepted);
    let heavy: Vec<String> = (0..600).map(|v| format!("u0 v{v}")).collect();
    assert_eq!(per_user[&ids[0]], heavy);
    for (u, id) in ids.iter().enumerate().skip(1) {
        let expected = [format!("u{} v0", u - 1), format!("u{} v1", u - 1)];
        assert_eq!(per_user[id], expected);
    }
    // The others did not wait for the long backlog to be through.
    let last_heavy = accepted
        .iter()
        .rposition(|e| e.subject() == Some(ids[0].as_str()))
        .unwrap();
    let last_other = accepted
        .iter()
        .rposition(|e| e.subject() != Some(ids[0].as_str()))
        .unwrap();
    assert!(last_other < last_heavy, "{last_other} vs {last_heavy}");
}
