//! Scale-out on PostgreSQL, with the real binaries: audit-service replicas
//! in one Kafka consumer group, user-service replicas on one database, and
//! a database server restarted under load. These always run on PostgreSQL
//! (the suite's shared server, or a private one for the restart) and fail
//! when it, or the Kafka broker, is missing.

use crate::kafka::SHARED_BROKER;
use e2e::{example, Service, Stack};
use futures::StreamExt;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use test_kit::database::Db;
use test_kit::servers::{require_shared, Kind, PrivateServer};

/// A folder of its own for one process's log.
fn home(stack: &Stack, name: &str) -> PathBuf {
    let dir = stack.dir.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Polls `check` every 200 ms until it returns `Some`, or fails saying
/// `what` after `timeout`.
async fn until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// (rows, distinct (source, id)) in the audit store.
async fn stored(db: &Db) -> (i64, i64) {
    db.ints("SELECT count(*), count(DISTINCT source || '|' || id) FROM events")
        .await
}

/// A counter's value on a service's /metrics, 0 when absent.
async fn counter(stack: &Stack, service: &Service, name: &str) -> f64 {
    let text = stack
        .http
        .get(format!("{}/metrics", service.base_url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn three_audit_replicas_store_100000_events_once_through_a_kill_and_a_join() {
    const N: i64 = 100_000;
    require_shared(Kind::Kafka);
    let stack = Stack::new().unwrap();
    let db_url = test_kit::database::fresh_postgres_database().await;
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let topic = format!("e2e-scale-{tag}");

    let produced = Command::new(example("bench_produce").unwrap())
        .args([SHARED_BROKER, &topic, &N.to_string(), "6"])
        .output()
        .unwrap();
    assert!(
        produced.status.success(),
        "bench_produce: {}",
        String::from_utf8_lossy(&produced.stderr)
    );

    let group = format!("{topic}-group");
    let dlq = format!("{topic}.dlq");
    let env = [
        ("DATABASE_URL", db_url.as_str()),
        ("EVENT_TRANSPORT", "kafka"),
        ("KAFKA_BROKERS", SHARED_BROKER),
        ("KAFKA_TOPIC", topic.as_str()),
        ("KAFKA_GROUP_ID", group.as_str()),
        ("KAFKA_DLQ_TOPIC", dlq.as_str()),
        // The killed member's partitions move on after this.
        ("KAFKA_SESSION_TIMEOUT_MS", "6000"),
        // 100,000 "stored" lines per run cost more than they tell here.
        ("RUST_LOG", "warn"),
    ];
    let mut replicas = Vec::new();
    for r in 0..3 {
        let dir = home(&stack, &format!("audit-{r}"));
        replicas.push(e2e::start("audit-service", &dir, &env).await.unwrap());
    }
    let db = Db::open(&db_url).await;

    until("a quarter stored", Duration::from_secs(120), || async {
        (stored(&db).await.0 >= N / 4).then_some(())
    })
    .await;
    replicas[0].kill();
    let at_kill = stored(&db).await.0;
    assert!(
        at_kill < N,
        "all stored before the kill: the test proves nothing"
    );
    until("half stored", Duration::from_secs(120), || async {
        (stored(&db).await.0 >= N / 2).then_some(())
    })
    .await;
    let dir = home(&stack, "audit-3");
    replicas.push(e2e::start("audit-service", &dir, &env).await.unwrap());
    let at_join = stored(&db).await.0;

    until("every event stored", Duration::from_secs(300), || async {
        (stored(&db).await.0 >= N).then_some(())
    })
    .await;
    // Let a duplicate show up, were dedup broken, before counting again.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(stored(&db).await, (N, N), "each event stored exactly once");
    eprintln!("killed one replica at {at_kill} stored, added one at {at_join}, {N} stored once");

    // Every live replica serves all of them, whichever stored them.
    for replica in &replicas[1..] {
        let items = stack.events(replica, "source=/user-service").await.unwrap();
        assert_eq!(items.len() as i64, N, "{}", replica.base_url);
        let seqs: Vec<i64> = items.iter().map(|i| i["seq"].as_i64().unwrap()).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    }
    for replica in &mut replicas[1..] {
        assert!(
            replica.terminate().await.unwrap().success(),
            "{}",
            replica.log_tail(20)
        );
    }
}

/// The user-service environment of the replica tests: fast retries, a
/// short lease so a killed replica's users move on within seconds.
fn user_env<'a>(db: &'a str, audit: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("DATABASE_URL", db),
        ("AUDIT_URL", audit),
        ("RELAY_BACKOFF_INITIAL_MS", "20"),
        ("RELAY_BACKOFF_MAX_MS", "500"),
        ("PUBLISH_TIMEOUT_MS", "2000"),
        ("RELAY_LEASE_MS", "6000"),
        ("RUST_LOG", "warn"),
    ]
}

/// Renames `ids` to `name(i)` through `replicas` in turn, 16 at a time.
async fn rename_all(
    stack: &Stack,
    replicas: &[&Service],
    ids: &[String],
    name: impl Fn(usize) -> String,
) {
    futures::stream::iter(ids.iter().enumerate())
        .map(|(i, id)| {
            let replica = replicas[i % replicas.len()];
            let name = name(i);
            async move { stack.rename_user(replica, id, &name).await.unwrap() }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
}

/// A TCP forwarder to `target` that can be cut, as a network partition
/// between one replica and the audit service: while cut, connections are
/// dropped, those open included.
struct Link {
    port: u16,
    open: Arc<AtomicBool>,
}

impl Link {
    async fn to(target: u16) -> Link {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new(AtomicBool::new(true));
        let is_open = open.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !is_open.load(Ordering::SeqCst) {
                    continue;
                }
                let is_open = is_open.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    else {
                        return;
                    };
                    let cut = async {
                        while is_open.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut => {}
                    }
                });
            }
        });
        Link { port, open }
    }

    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn two_user_replicas_deliver_2000_events_once_in_order_through_a_kill() {
    // 400 users created through both replicas at once (argon2 keeps
    // creates near 50/s per core), each renamed 4 times: 2,000 events.
    const USERS: usize = 400;
    const RENAMES: usize = 4;
    let stack = Stack::new().unwrap();
    let audit_db = test_kit::database::fresh_postgres_database().await;
    let users_db = test_kit::database::fresh_postgres_database().await;
    let audit = e2e::start(
        "audit-service",
        &home(&stack, "audit"),
        &[("DATABASE_URL", &audit_db), ("RUST_LOG", "warn")],
    )
    .await
    .unwrap();
    let audit_url = format!("{}/", audit.base_url);
    let audit_port: u16 = audit.base_url.rsplit(':').next().unwrap().parse().unwrap();
    // a reaches the audit service through a link the test cuts.
    let link = Link::to(audit_port).await;
    let a_audit_url = format!("http://127.0.0.1:{}/", link.port);
    let mut a = e2e::start(
        "user-service",
        &home(&stack, "a"),
        &user_env(&users_db, &a_audit_url),
    )
    .await
    .unwrap();
    let b = e2e::start(
        "user-service",
        &home(&stack, "b"),
        &user_env(&users_db, &audit_url),
    )
    .await
    .unwrap();

    let create = |replica: &'static str, service: &Service| {
        let stack = &stack;
        let url = service.base_url.clone();
        async move {
            futures::stream::iter(0..USERS / 2)
                .map(|i| {
                    let url = url.clone();
                    async move {
                        let response = stack
                            .http
                            .post(format!("{url}/v1/user"))
                            .json(&serde_json::json!({"name": format!("{replica}{i}"), "password": "12345"}))
                            .send()
                            .await
                            .unwrap();
                        assert_eq!(response.status(), 201);
                        let body: Value = response.json().await.unwrap();
                        body["id"].as_str().unwrap().to_owned()
                    }
                })
                .buffer_unordered(8)
                .collect::<Vec<String>>()
                .await
        }
    };
    let (from_a, from_b) = tokio::join!(create("a", &a), create("b", &b));
    let ids: Vec<String> = from_a.into_iter().chain(from_b).collect();
    rename_all(&stack, &[&a, &b], &ids, |i| format!("{i} r0")).await;
    let users_db_view = Db::open(&users_db).await;
    let audit_view = Db::open(&audit_db).await;
    // Both relays deliver, then a is cut off from the audit service: its
    // requests in flight are lost and its users' events pile up.
    until(
        "events delivered by both",
        Duration::from_secs(60),
        || async {
            let pending = users_db_view
                .int("SELECT count(*) FROM outbox WHERE status = 'pending'")
                .await;
            (pending == 0).then_some(())
        },
    )
    .await;
    link.cut();
    rename_all(&stack, &[&a, &b], &ids, |i| format!("{i} r1")).await;
    let pending_at_kill = users_db_view
        .int("SELECT count(*) FROM outbox WHERE status = 'pending'")
        .await;
    assert!(
        pending_at_kill > 0,
        "nothing pending at the kill: the test proves nothing"
    );
    // Killed with its users' events pending; its leases lapse after
    // RELAY_LEASE_MS and b sends what a left, from each user's oldest.
    a.kill();
    for round in 2..RENAMES {
        rename_all(&stack, &[&b], &ids, |i| format!("{i} r{round}")).await;
    }

    let total = (USERS * (1 + RENAMES)) as i64;
    let db = audit_view;
    until("2,000 events stored", Duration::from_secs(120), || async {
        (stored(&db).await.0 >= total).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(stored(&db).await, (total, total));

    // In order per user: the stored (seq) order of each user's names.
    let mut names: HashMap<String, Vec<String>> = HashMap::new();
    for json in db.texts("SELECT event_json FROM events ORDER BY seq").await {
        let event: Value = serde_json::from_str(&json).unwrap();
        names
            .entry(event["subject"].as_str().unwrap().to_owned())
            .or_default()
            .push(event["data"]["name"].as_str().unwrap().to_owned());
    }
    assert_eq!(names.len(), USERS);
    for (i, id) in ids.iter().enumerate() {
        let got = &names[id];
        assert_eq!(got.len(), 1 + RENAMES, "{id}: {got:?}");
        assert!(
            !got[0].contains(" r"),
            "{id}: created after a rename: {got:?}"
        );
        let expected: Vec<String> = (0..RENAMES).map(|r| format!("{i} r{r}")).collect();
        assert_eq!(&got[1..], expected.as_slice(), "{id} out of order");
    }
    assert_eq!(
        users_db_view
            .int("SELECT count(*) FROM outbox WHERE status <> 'delivered'")
            .await,
        0
    );
    // A request the link cut may have been stored without its answer
    // reaching a; b sent it again and the store kept one. At most a's
    // requests in flight: 32 of 100 events.
    let duplicates = counter(&stack, &audit, "audit_events_duplicate_total").await + 0.0;
    eprintln!(
        "{total} events stored once; {pending_at_kill} pending at the kill, \
         {duplicates:.0} duplicates received"
    );
    assert!(duplicates <= 3200.0, "{duplicates} duplicates");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_under_load_loses_nothing_acknowledged() {
    // A PostgreSQL server of its own, so that restarting it disturbs no
    // other test.
    let server = tokio::task::spawn_blocking(|| PrivateServer::start(Kind::Postgres))
        .await
        .unwrap();
    let admin_url = format!("postgres://postgres@{}/postgres", server.address());
    let audit_db = test_kit::database::fresh_postgres_database_on(&admin_url).await;
    let users_db = test_kit::database::fresh_postgres_database_on(&admin_url).await;
    let stack = Stack::new().unwrap();
    let mut audit = e2e::start(
        "audit-service",
        &home(&stack, "audit"),
        &[("DATABASE_URL", &audit_db), ("RUST_LOG", "warn")],
    )
    .await
    .unwrap();
    let audit_url = format!("{}/", audit.base_url);
    let mut user = e2e::start(
        "user-service",
        &home(&stack, "user"),
        &user_env(&users_db, &audit_url),
    )
    .await
    .unwrap();

    // Two loads until told to stop: users created through user-service
    // (201 = committed with its event), and events sent straight to
    // audit-service in batches (204 = committed).
    let running = Arc::new(AtomicBool::new(true));
    let created = Arc::new(Mutex::new(Vec::<String>::new()));
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut loads = Vec::new();
    for worker in 0..4 {
        let (running, created, http) = (running.clone(), created.clone(), stack.http.clone());
        let refused = refused.clone();
        let url = format!("{}/v1/user", user.base_url);
        loads.push(tokio::spawn(async move {
            let mut i = 0;
            while running.load(Ordering::SeqCst) {
                i += 1;
                let body =
                    serde_json::json!({"name": format!("w{worker} {i}"), "password": "12345"});
                if let Ok(r) = http.post(&url).json(&body).send().await {
                    if r.status() == 201 {
                        let body: Value = r.json().await.unwrap();
                        created
                            .lock()
                            .unwrap()
                            .push(body["id"].as_str().unwrap().to_owned());
                        continue;
                    }
                }
                refused.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }));
    }
    for worker in 0..2 {
        let (running, acknowledged, http) =
            (running.clone(), acknowledged.clone(), stack.http.clone());
        let refused = refused.clone();
        let url = audit_url.clone();
        loads.push(tokio::spawn(async move {
            let mut batch = 0;
            while running.load(Ordering::SeqCst) {
                batch += 1;
                let ids: Vec<String> = (0..20).map(|i| format!("w{worker}-{batch}-{i}")).collect();
                let events: Vec<Value> = ids
                    .iter()
                    .map(|id| serde_json::json!({"specversion": "1.0", "id": id, "source": "/direct", "type": "t"}))
                    .collect();
                let sent = http
                    .post(&url)
                    .header("content-type", "application/cloudevents-batch+json")
                    .body(serde_json::to_string(&events).unwrap())
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == 204 => acknowledged.lock().unwrap().extend(ids),
                    _ => {
                        refused.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await
                    }
                }
            }
        }));
    }

    let count = |v: &Arc<Mutex<Vec<String>>>| v.lock().unwrap().len();
    until("load under way", Duration::from_secs(30), || async {
        (count(&created) >= 20 && count(&acknowledged) >= 200).then_some(())
    })
    .await;
    let before = (count(&created), count(&acknowledged));
    server.restart_async().await;
    // The load goes on through the restart and after it.
    until(
        "load after the restart",
        Duration::from_secs(60),
        || async {
            (count(&created) >= before.0 + 20 && count(&acknowledged) >= before.1 + 200)
                .then_some(())
        },
    )
    .await;
    running.store(false, Ordering::SeqCst);
    for load in loads {
        load.await.unwrap();
    }
    assert!(audit.is_running() && user.is_running(), "a service exited");

    // Both recover by themselves: ready, and every acknowledged change is
    // there, and every created user's event reached the audit store.
    for service in [&audit, &user] {
        let url = format!("{}/readyz", service.base_url);
        until("ready again", Duration::from_secs(60), || async {
            let r = stack.http.get(&url).send().await.ok()?;
            (r.status() == 200).then_some(())
        })
        .await;
    }
    let db = Db::open(&audit_db).await;
    let acknowledged: HashSet<String> = acknowledged.lock().unwrap().iter().cloned().collect();
    let direct: HashSet<String> = db
        .texts("SELECT id FROM events WHERE source = '/direct'")
        .await
        .into_iter()
        .collect();
    let lost: Vec<&String> = acknowledged.difference(&direct).collect();
    assert!(lost.is_empty(), "{} acknowledged events lost", lost.len());
    let created: Vec<String> = created.lock().unwrap().clone();
    let subjects = until(
        "every created user's event",
        Duration::from_secs(60),
        || async {
            let subjects: HashSet<String> = db
                .texts("SELECT subject FROM events WHERE source = '/user-service'")
                .await
                .into_iter()
                .collect();
            created
                .iter()
                .all(|id| subjects.contains(id))
                .then_some(subjects)
        },
    )
    .await;
    for id in &created {
        let r = stack
            .http
            .get(format!("{}/v1/users/{id}", user.base_url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "user {id} acknowledged but gone");
    }
    eprintln!(
        "{} users and {} direct events acknowledged across the restart, all stored \
         ({} subjects); {} requests refused during it",
        created.len(),
        acknowledged.len(),
        subjects.len(),
        refused.load(Ordering::SeqCst)
    );
    assert!(
        user.terminate().await.unwrap().success(),
        "{}",
        user.log_tail(20)
    );
    assert!(
        audit.terminate().await.unwrap().success(),
        "{}",
        audit.log_tail(20)
    );
}
