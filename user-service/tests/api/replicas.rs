//! Two user-service replicas on one PostgreSQL database: their relays share
//! the outbox through leases on buckets of users, each event goes out once,
//! and each user's events keep their order. These always run on
//! PostgreSQL, whatever TEST_DATABASE says, and fail when it is not running.

use crate::helpers::{
    data_json, eventually, spawn_app_in, test_settings, FakeAudit, TestApp, TestDb,
};
use cloudevents::AttributesReader;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

async fn pg_db() -> Arc<TestDb> {
    let dir = tempfile::tempdir().unwrap();
    let url = test_kit::database::fresh_postgres_database().await;
    Arc::new(TestDb::new(dir, url))
}

/// Live leases per relay, most first.
async fn leases(pool: &sqlx::PgPool) -> Vec<i64> {
    sqlx::query_scalar(
        "SELECT count(*) FROM outbox_leases WHERE expires_at > now() \
         GROUP BY owner ORDER BY count(*) DESC",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Every accepted event of both fakes in the order they arrived, a batch's
/// in its order.
fn arrivals(fakes: &[&FakeAudit]) -> Vec<(std::time::Instant, usize, cloudevents::Event)> {
    let mut all = Vec::new();
    for fake in fakes {
        for request in fake.received().into_iter().filter(|r| r.accepted()) {
            for (i, event) in request.events.into_iter().enumerate() {
                all.push((request.at, i, event));
            }
        }
    }
    all.sort_by_key(|(at, i, _)| (*at, *i));
    all
}

/// Creates `users` users alternately through the apps, renames each
/// `renames` times through alternate apps; returns the expected names per
/// user id.
async fn changes(apps: &[&TestApp], users: usize, renames: usize) -> HashMap<String, Vec<String>> {
    let tasks = (0..users).map(|u| {
        let apps: Vec<&TestApp> = apps.to_vec();
        async move {
            let first = apps[u % apps.len()];
            let id = first.create_user(&format!("u{u}")).await;
            let mut names = vec![format!("u{u}")];
            for r in 0..renames {
                let app = apps[(u + r + 1) % apps.len()];
                let name = format!("u{u} r{r}");
                let body = serde_json::json!({"name": name});
                assert_eq!(app.put_user(&id, body).await.status(), 200);
                names.push(name);
            }
            (id, names)
        }
    });
    futures::future::join_all(tasks).await.into_iter().collect()
}

#[tokio::test]
async fn two_replicas_share_the_buckets_and_send_each_event_once_in_order_per_user() {
    let db = pg_db().await;
    let (audit_a, audit_b) = (FakeAudit::start().await, FakeAudit::start().await);
    let a = spawn_app_in(db.clone(), test_settings(&audit_a.url, &db)).await;
    let b = spawn_app_in(db.clone(), test_settings(&audit_b.url, &db)).await;
    let pool = test_kit::database::postgres_pool(&db.url).await;

    // The first to start takes every bucket; the second's heartbeat makes
    // it give half back.
    eventually("both relays hold half", Duration::from_secs(30), || async {
        (leases(&pool).await == [32, 32]).then_some(())
    })
    .await;

    let expected = changes(&[&a, &b], 30, 4).await;
    let total: usize = expected.values().map(Vec::len).sum();
    let events = eventually("every event", Duration::from_secs(30), || async {
        let all = arrivals(&[&audit_a, &audit_b]);
        (all.len() >= total).then_some(all)
    })
    .await;
    // Let a duplicate show up, were one on its way, before counting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = arrivals(&[&audit_a, &audit_b]).len().max(events.len());
    assert_eq!(events, total, "an event was sent twice");

    let mut per_user: HashMap<String, Vec<String>> = HashMap::new();
    for (_, _, event) in arrivals(&[&audit_a, &audit_b]) {
        per_user
            .entry(event.subject().unwrap().to_owned())
            .or_default()
            .push(data_json(&event)["name"].as_str().unwrap().to_owned());
    }
    assert_eq!(per_user, expected);
    // Both relays sent: each has its own users.
    let senders = |fake: &FakeAudit| -> HashSet<String> {
        fake.accepted()
            .iter()
            .map(|e| e.subject().unwrap().to_owned())
            .collect()
    };
    let (by_a, by_b) = (senders(&audit_a), senders(&audit_b));
    assert!(
        !by_a.is_empty() && !by_b.is_empty(),
        "one relay sent everything"
    );
    assert!(
        by_a.is_disjoint(&by_b),
        "a user's events went through both relays"
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_replica_that_stops_gives_its_buckets_back_at_once() {
    let db = pg_db().await;
    let (audit_a, audit_b) = (FakeAudit::start().await, FakeAudit::start().await);
    let slow = |audit: &FakeAudit| {
        let mut settings = test_settings(&audit.url, &db);
        // A term far longer than the test: only giving back frees them.
        settings.relay.lease_term = Duration::from_secs(600);
        settings
    };
    let a = spawn_app_in(db.clone(), slow(&audit_a)).await;
    let b = spawn_app_in(db.clone(), slow(&audit_b)).await;
    let pool = test_kit::database::postgres_pool(&db.url).await;
    eventually("both relays hold half", Duration::from_secs(30), || async {
        (leases(&pool).await == [32, 32]).then_some(())
    })
    .await;

    a.stop().await;
    eventually("b holds every bucket", Duration::from_secs(30), || async {
        (leases(&pool).await == [64]).then_some(())
    })
    .await;
    let expected = changes(&[&b], 10, 1).await;
    let accepted = audit_b.wait_for_accepted(20).await;
    let users: HashSet<&str> = accepted.iter().map(|e| e.subject().unwrap()).collect();
    assert_eq!(users.len(), expected.len());
    assert!(audit_a.accepted().is_empty());
    b.stop().await;
}
