//! The outbox relay's delivery rules: retries, dead letters, re-drive, and
//! an audit service that is down.

use crate::helpers::{eventually, free_port, spawn_app, spawn_app_in, spawn_app_with, FakeAudit};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use cloudevents::AttributesReader;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use user_service::config::PublishSettings;

#[tokio::test]
async fn a_rejected_event_is_parked_as_a_dead_letter_and_later_events_still_arrive() {
    let audit = FakeAudit::start().await;
    // The audit service refuses the first user's event for good (and any
    // batch holding it).
    audit.respond_with(|r| {
        if r.names().iter().any(|n| n == "rejected") {
            return (StatusCode::BAD_REQUEST, "name not allowed").into_response();
        }
        StatusCode::ACCEPTED.into_response()
    });
    let app = spawn_app(&audit.url).await;

    let rejected = app.create_user("rejected").await;
    let later = app.create_user("later").await;

    let accepted = audit.wait_for_accepted(1).await;
    assert_eq!(accepted[0].subject(), Some(later.as_str()));
    let dead = eventually("a dead letter", Duration::from_secs(10), || async {
        let dead = app.dead_letters().await;
        (!dead.is_empty()).then_some(dead)
    })
    .await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].user_id, rejected);
    assert_eq!(dead[0].event_type, "user.storeUser");
    assert_eq!(dead[0].status, Some(400));
    assert!(dead[0]
        .reason
        .as_deref()
        .unwrap()
        .contains("name not allowed"));
    let listing = app.dead_letters_command(&["list"]).await;
    assert!(
        listing.contains(&dead[0].event_id) && listing.contains("400"),
        "{listing}"
    );

    // Once the audit service accepts it, a re-drive delivers it.
    audit.respond_with(|_| StatusCode::OK.into_response());
    let out = app
        .dead_letters_command(&["redrive", &dead[0].seq.to_string()])
        .await;
    assert!(out.starts_with("1 "), "{out}");

    let accepted = audit.wait_for_accepted(2).await;
    assert_eq!(accepted[1].subject(), Some(rejected.as_str()));
    assert_eq!(accepted[1].id(), dead[0].event_id);
    assert!(app.dead_letters().await.is_empty());
}

#[tokio::test]
async fn an_event_refused_with_503_three_times_arrives_exactly_once() {
    let audit = FakeAudit::start().await;
    let mut attempts = 0;
    audit.respond_with(move |_| {
        attempts += 1;
        if attempts <= 3 {
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        } else {
            StatusCode::OK.into_response()
        }
    });
    let app = spawn_app(&audit.url).await;

    let id = app.create_user("Ozzy").await;

    let accepted = audit.wait_for_accepted(1).await;
    assert_eq!(accepted[0].subject(), Some(id.as_str()));
    // Give a wrong duplicate a chance to show up before counting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let received = audit.received();
    assert_eq!(received.len(), 4);
    assert!(received.iter().all(|r| r.event().id() == accepted[0].id()));
    assert_eq!(audit.accepted().len(), 1);
}

#[tokio::test]
async fn an_audit_service_down_delays_events_but_not_users_and_each_arrives_once() {
    let port = free_port();
    let app = spawn_app(&format!("http://127.0.0.1:{port}/")).await;

    let mut ids = Vec::new();
    for i in 0..50 {
        let id = app.create_user(&format!("user {i}")).await;
        let renamed = serde_json::json!({"name": format!("user {i} renamed")});
        assert_eq!(app.put_user(&id, renamed).await.status(), 200);
        ids.push(id);
    }
    let audit = FakeAudit::start_on(port).await;

    audit.wait_for_accepted(100).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let accepted = audit.accepted();
    assert_eq!(accepted.len(), 100, "no event may arrive twice");
    let event_ids: HashSet<&str> = accepted.iter().map(|e| e.id()).collect();
    assert_eq!(event_ids.len(), 100);
    // Different users' events may interleave any way; each user's arrive
    // in the order they were committed.
    let mut per_user: HashMap<&str, Vec<&str>> = HashMap::new();
    for e in &accepted {
        per_user
            .entry(e.subject().unwrap())
            .or_default()
            .push(e.ty());
    }
    assert_eq!(per_user.len(), 50);
    for id in &ids {
        assert_eq!(
            per_user[id.as_str()],
            ["user.storeUser", "user.updateUser"],
            "user {id}"
        );
    }
}

#[tokio::test]
async fn a_receiver_that_does_not_answer_gets_one_probe_at_a_time_not_a_retry_per_waiting_user() {
    // A receiver that takes each connection and closes it unanswered.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    let silent = tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            counted.fetch_add(1, Ordering::Relaxed);
            drop(stream);
        }
    });
    let app = spawn_app(&format!("http://127.0.0.1:{port}/")).await;

    for i in 0..20 {
        app.create_user(&format!("user {i}")).await;
    }
    let window = Duration::from_secs(3);
    let before = connections.load(Ordering::Relaxed);
    tokio::time::sleep(window).await;
    let during = connections.load(Ordering::Relaxed) - before;
    // The pause grows to a uniform draw up to 100 ms (the test's
    // RELAY_BACKOFF_MAX_MS), about 60 probes in 3 s. A retry of its own
    // for each of the 20 waiting users would be about 1,200.
    assert!(
        during > 0 && during < 200,
        "{during} connections in {window:?}"
    );

    // It answers again: every event arrives, each once.
    silent.abort();
    let _ = silent.await;
    let audit = FakeAudit::start_on(port).await;
    audit.wait_for_accepted(20).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ids: HashSet<String> = audit.accepted().iter().map(|e| e.id().to_owned()).collect();
    assert_eq!(ids.len(), 20);
    assert_eq!(audit.accepted().len(), 20);
}

#[tokio::test]
async fn events_still_pending_at_shutdown_are_delivered_after_a_restart() {
    let port = free_port();
    let app = spawn_app(&format!("http://127.0.0.1:{port}/")).await;
    let id = app.create_user("Ozzy").await;
    let settings_dir = app.stop().await;

    let audit = FakeAudit::start_on(port).await;
    let mut settings = crate::helpers::test_settings(&audit.url, &settings_dir);
    settings.relay.poll_interval = Duration::from_millis(50);
    let _restarted = spawn_app_in(settings_dir, settings).await;

    let accepted = audit.wait_for_accepted(1).await;
    assert_eq!(accepted[0].subject(), Some(id.as_str()));
}

#[tokio::test]
async fn a_retried_event_is_parked_when_the_attempt_limit_is_reached() {
    let audit = FakeAudit::start().await;
    audit.respond_with(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
    let app = spawn_app_with(&audit.url, |s| {
        s.relay.max_attempts = Some(3);
        // Every attempt must reach the fake audit and be answered 500: a
        // request that times out on a loaded machine would count as an
        // attempt the fake never saw.
        let PublishSettings::Http { timeout, .. } = &mut s.publish else {
            panic!("the test settings publish over HTTP");
        };
        *timeout = Duration::from_secs(30);
    })
    .await;

    let id = app.create_user("Ozzy").await;

    let dead = eventually("a dead letter", Duration::from_secs(30), || async {
        let dead = app.dead_letters().await;
        (!dead.is_empty()).then_some(dead)
    })
    .await;
    assert_eq!(dead[0].user_id, id);
    assert_eq!(dead[0].attempts, 3);
    assert_eq!(dead[0].status, Some(500));
    let received = audit.received();
    assert_eq!(received.len(), 3);
    assert!(received
        .iter()
        .all(|r| r.status == StatusCode::INTERNAL_SERVER_ERROR));
    // Parked means no fourth attempt follows.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(audit.received().len(), 3);
}

#[tokio::test]
async fn retry_after_from_the_audit_service_is_honoured() {
    let audit = FakeAudit::start().await;
    let mut first = true;
    audit.respond_with(move |_| {
        if std::mem::take(&mut first) {
            (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")]).into_response()
        } else {
            StatusCode::OK.into_response()
        }
    });
    let app = spawn_app_with(&audit.url, |s| s.relay.backoff_max = Duration::from_secs(5)).await;

    let start = Instant::now();
    app.create_user("Ozzy").await;
    audit.wait_for_accepted(1).await;

    assert!(
        start.elapsed() >= Duration::from_millis(950),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(audit.received().len(), 2);
}

#[tokio::test]
async fn each_users_events_keep_their_order_under_concurrent_changes() {
    let audit = FakeAudit::start().await;
    let app = std::sync::Arc::new(spawn_app(&audit.url).await);

    let mut tasks = Vec::new();
    for i in 0..10 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let id = app.create_user(&format!("user {i}")).await;
            for round in 0..3 {
                let body = serde_json::json!({"name": format!("user {i} v{round}")});
                assert_eq!(app.put_user(&id, body).await.status(), 200);
            }
            assert_eq!(app.delete_user(&id).await.status(), 204);
            id
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }

    let events = audit.wait_for_accepted(50).await;
    let mut per_user: HashMap<&str, Vec<String>> = HashMap::new();
    for e in &events {
        let name = crate::helpers::data_json(e)["name"]
            .as_str()
            .unwrap()
            .to_owned();
        per_user
            .entry(e.subject().unwrap())
            .or_default()
            .push(format!("{} {name}", e.ty()));
    }
    assert_eq!(per_user.len(), 10);
    for changes in per_user.values() {
        let base = changes[0].trim_start_matches("user.storeUser ").to_owned();
        let expected = vec![
            format!("user.storeUser {base}"),
            format!("user.updateUser {base} v0"),
            format!("user.updateUser {base} v1"),
            format!("user.updateUser {base} v2"),
            format!("user.deleteUser {base} v2"),
        ];
        assert_eq!(changes, &expected);
    }
}

#[tokio::test]
async fn a_publish_that_times_out_is_retried() {
    let audit = FakeAudit::start().await;
    // Longer than the app's 2 s publish timeout: the relay gives up on
    // the request (the fake never gets to record it) and retries.
    audit.delay_next(Duration::from_secs(4));
    let app = spawn_app(&audit.url).await;

    let start = Instant::now();
    let id = app.create_user("Ozzy").await;
    let accepted = audit.wait_for_accepted(1).await;

    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(accepted[0].subject(), Some(id.as_str()));
}

#[tokio::test]
async fn a_commit_wakes_the_relay_without_waiting_for_its_poll() {
    let audit = FakeAudit::start().await;
    let app = spawn_app_with(&audit.url, |s| {
        s.relay.poll_interval = Duration::from_secs(60)
    })
    .await;
    // Let the relay reach its idle wait first.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let start = Instant::now();
    app.create_user("Ozzy").await;
    audit.wait_for_accepted(1).await;

    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn retry_after_longer_than_the_backoff_cap_is_honoured_up_to_its_own_bound() {
    let audit = FakeAudit::start().await;
    let mut first = true;
    audit.respond_with(move |_| {
        if std::mem::take(&mut first) {
            (StatusCode::SERVICE_UNAVAILABLE, [("retry-after", "2")]).into_response()
        } else {
            StatusCode::OK.into_response()
        }
    });
    // Our own backoff stops at 100 ms; the receiver asks for 2 s, within
    // RELAY_RETRY_AFTER_MAX_MS.
    let app = spawn_app_with(&audit.url, |s| {
        s.relay.backoff_max = Duration::from_millis(100);
        s.relay.retry_after_max = Duration::from_secs(60);
    })
    .await;

    app.create_user("Ozzy").await;
    audit.wait_for_accepted(1).await;

    let received = audit.received();
    assert_eq!(received.len(), 2);
    let waited = received[1].at - received[0].at;
    assert!(waited >= Duration::from_millis(1900), "{waited:?}");
}

#[tokio::test]
async fn one_users_refused_event_holds_back_only_that_user_while_others_flow() {
    let audit = FakeAudit::start().await;
    let blocked = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let refusals = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    {
        let (blocked, refusals) = (blocked.clone(), refusals.clone());
        // 503 for any request holding the stuck user's events while
        // blocked (a batch with it too); everything else is accepted.
        audit.respond_with(move |r| {
            let stuck = r.names().iter().any(|n| n.starts_with("stuck"));
            if stuck && blocked.load(std::sync::atomic::Ordering::SeqCst) {
                refusals.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                return StatusCode::SERVICE_UNAVAILABLE.into_response();
            }
            StatusCode::OK.into_response()
        });
    }
    let app = std::sync::Arc::new(spawn_app(&audit.url).await);
    let refused_since = Instant::now();
    let stuck = app.create_user("stuck").await;
    let renamed = serde_json::json!({"name": "stuck again"});
    assert_eq!(app.put_user(&stuck, renamed).await.status(), 200);
    eventually(
        "the stuck user refused",
        Duration::from_secs(10),
        || async { (refusals.load(std::sync::atomic::Ordering::SeqCst) >= 2).then_some(()) },
    )
    .await;

    // Others come and go while the stuck user is refused.
    let mut others = Vec::new();
    for i in 0..20 {
        let id = app.create_user(&format!("other {i}")).await;
        let renamed = serde_json::json!({"name": format!("other {i} renamed")});
        assert_eq!(app.put_user(&id, renamed).await.status(), 200);
        others.push(id);
    }
    let accepted = audit.wait_for_accepted(40).await;
    assert!(
        accepted.iter().all(|e| e.subject() != Some(stuck.as_str())),
        "the stuck user's events are held back"
    );
    let subjects: HashSet<&str> = accepted.iter().map(|e| e.subject().unwrap()).collect();
    assert_eq!(subjects.len(), 20);

    // Held for a while (5 s here, to keep the suite short), then let
    // through: its two events arrive, in order, once each.
    let held = Duration::from_secs(5);
    tokio::time::sleep(held.saturating_sub(refused_since.elapsed())).await;
    assert!(audit
        .accepted()
        .iter()
        .all(|e| e.subject() != Some(stuck.as_str())));
    blocked.store(false, std::sync::atomic::Ordering::SeqCst);
    let accepted = audit.wait_for_accepted(42).await;
    let stuck_events: Vec<String> = accepted
        .iter()
        .filter(|e| e.subject() == Some(stuck.as_str()))
        .map(|e| {
            crate::helpers::data_json(e)["name"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(stuck_events, ["stuck", "stuck again"]);
    assert!(app.dead_letters().await.is_empty());
}

#[tokio::test]
async fn delivered_rows_past_retention_are_deleted_and_dead_letters_are_kept() {
    let audit = FakeAudit::start().await;
    audit.respond_with(|r| {
        if r.names().iter().any(|n| n == "refused") {
            return (StatusCode::BAD_REQUEST, "no").into_response();
        }
        StatusCode::OK.into_response()
    });
    let app = spawn_app_with(&audit.url, |s| {
        s.outbox_retention = Duration::from_secs(1);
    })
    .await;
    app.create_user("refused").await;
    for i in 0..3 {
        app.create_user(&format!("kept {i}")).await;
    }
    audit.wait_for_accepted(3).await;
    let db = app.db().await;
    eventually(
        "delivered rows deleted",
        Duration::from_secs(20),
        || async {
            let rows = db.int("SELECT count(*) FROM outbox").await;
            (rows == 1).then_some(())
        },
    )
    .await;
    assert_eq!(
        db.text("SELECT status FROM outbox").await,
        "dead",
        "only the dead letter is left"
    );
    assert_eq!(app.dead_letters().await.len(), 1);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("outbox_pruned_total"), "{metrics}");
}
