//! The transparency log: every stored event is a leaf whose inclusion
//! proof verifies against the signed checkpoint, served as C2SP tiles;
//! tampering with the stored events is found by `audit-service verify`,
//! naming the seq; erasure removes the data (from the files too) and keeps
//! every proof valid. On SQLite, or on PostgreSQL with TEST_DATABASE.

use crate::helpers::{audit_process, spawn_app_with, Service, TestApp};
use audit_service::tlog::checkpoint::{self, SignedTree};
use audit_service::tlog::entry;
use audit_service::tlog::LogKey;
use base64::prelude::{Engine as _, BASE64_STANDARD};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use service_kit::db::Kind;
use settings::Tokens;
use std::sync::Arc;
use std::time::Duration;
use test_kit::database::{Db, Session};
use tlog_tiles::Hash;

const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";

pub struct LoggedApp {
    pub app: TestApp,
    pub signer: String,
    pub verifier: String,
}

pub async fn spawn_logged(
    customize: impl FnOnce(&mut audit_service::config::Settings),
) -> LoggedApp {
    let (signer, verifier) = LogKey::generate("audit.test/log").unwrap();
    let key = Arc::new(LogKey::parse(&signer).unwrap());
    let app = spawn_app_with(|settings| {
        settings.log.key = Some(key);
        settings.access.admin = Some(Tokens::new([ADMIN_TOKEN]));
        customize(settings);
    })
    .await;
    LoggedApp {
        app,
        signer,
        verifier,
    }
}

/// A user event with a name in its data.
pub fn user_event(id: &str, subject: &str, name: &str) -> Value {
    json!({
        "specversion": "1.0", "id": id, "source": "/user-service", "type": "user.storeUser",
        "subject": subject, "datacontenttype": "application/json",
        "time": "2026-11-26T10:30:00.1+01:00",
        "data": {"id": subject, "name": name}
    })
}

/// An item of `GET /v1/events`, with the event's exact served text.
#[derive(Deserialize)]
pub struct Item {
    pub seq: i64,
    pub received_at: String,
    pub transport: String,
    pub event: Box<RawValue>,
    #[serde(default)]
    pub erased: bool,
    pub log: Option<LogInfo>,
}

#[derive(Deserialize)]
pub struct LogInfo {
    pub index: u64,
    pub commitment: Option<String>,
    pub salt: Option<String>,
}

#[derive(Deserialize)]
struct ItemPage {
    events: Vec<Item>,
    next_after: Option<i64>,
}

impl LoggedApp {
    pub async fn checkpoint_text(&self) -> String {
        let response = self.app.get("/log/checkpoint").await;
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    }

    /// Waits for a signed checkpoint of at least `size` entries.
    pub async fn wait_size(&self, size: u64) -> SignedTree {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let response = self.app.get("/log/checkpoint").await;
            let tree = if response.status() == 200 {
                let text = response.text().await.unwrap();
                Some(checkpoint::open(text.as_bytes(), &self.verifier).unwrap())
            } else {
                None
            };
            match tree {
                Some(tree) if tree.size >= size => return tree,
                tree if tokio::time::Instant::now() >= deadline => {
                    panic!("the checkpoint did not reach {size}: {tree:?}")
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    pub async fn items(&self) -> Vec<Item> {
        let mut items = Vec::new();
        let mut after = 0;
        loop {
            let response = self
                .app
                .get_events(&format!("after={after}&limit=1000"))
                .await;
            assert_eq!(response.status(), 200);
            let page: ItemPage = response.json().await.unwrap();
            items.extend(page.events);
            match page.next_after {
                Some(next) => after = next,
                None => return items,
            }
        }
    }

    /// Checks `item`'s data against its commitment, rebuilds its entry and
    /// checks its inclusion proof against `tree`.
    pub async fn check_inclusion(&self, item: &Item, tree: &SignedTree) {
        let log = item.log.as_ref().expect("the item has its leaf");
        let commitment = log
            .commitment
            .as_ref()
            .map(|c| BASE64_STANDARD.decode(c).unwrap());
        let members = entry::Members::parse(item.event.get()).unwrap();
        if let (Some(data), Some(salt)) = (members.data(), &log.salt) {
            let salt = BASE64_STANDARD.decode(salt).unwrap();
            assert_eq!(
                entry::commitment(&salt, data).to_vec(),
                commitment.clone().unwrap(),
                "seq {}",
                item.seq
            );
        }
        assert_eq!(
            item.erased,
            members.data().is_none() && commitment.is_some() || item.erased
        );
        let bytes = entry::encode(
            &item.received_at,
            &item.transport,
            item.event.get(),
            commitment.as_deref(),
        )
        .unwrap();
        let response = self
            .app
            .get(&format!("/v1/events/{}/proof?size={}", item.seq, tree.size))
            .await;
        assert_eq!(response.status(), 200, "proof of seq {}", item.seq);
        let proof: Value = response.json().await.unwrap();
        assert_eq!(proof["index"], log.index);
        let path = hashes(&proof["proof"]);
        tlog_tiles::check_record(
            &path,
            tree.size,
            tree.root,
            log.index,
            tlog_tiles::record_hash(&bytes),
        )
        .unwrap_or_else(|e| panic!("seq {}: {e}", item.seq));
    }
}

/// The base64 hashes of a proof.
fn hashes(proof: &Value) -> Vec<Hash> {
    proof
        .as_array()
        .unwrap()
        .iter()
        .map(|h| Hash::parse_hash(h.as_str().unwrap()).unwrap())
        .collect()
}

/// Posts `n` user events in batches (subjects `{prefix}-{i % 10}`).
pub async fn post_users(app: &TestApp, prefix: &str, n: usize) {
    let events: Vec<Value> = (0..n)
        .map(|i| {
            user_event(
                &format!("{prefix}-e{i}"),
                &format!("{prefix}-u{}", i % 10),
                &format!("Name {prefix} {i}"),
            )
        })
        .collect();
    for chunk in events.chunks(500) {
        let response = app.post_batch(&json!(chunk)).await;
        assert_eq!(response.status(), 204);
    }
}

#[tokio::test]
async fn every_event_is_a_leaf_whose_proof_verifies_against_the_signed_checkpoint() {
    let logged = spawn_logged(|_| {}).await;
    post_users(&logged.app, "a", 300).await;
    let first = logged.wait_size(300).await;
    let first_note = logged.checkpoint_text().await;
    post_users(&logged.app, "b", 40).await;
    let tree = logged.wait_size(340).await;
    assert_eq!(tree.origin, "audit.test/log");
    // The key served is the key the checkpoint opens with.
    let key = logged.app.get("/log/key").await.text().await.unwrap();
    assert_eq!(key.trim(), logged.verifier);

    let items = logged.items().await;
    assert_eq!(items.len(), 340);
    for (i, item) in items.iter().enumerate() {
        assert_eq!(
            item.log.as_ref().unwrap().index,
            i as u64,
            "dense indexes in seq order"
        );
        logged.check_inclusion(item, &tree).await;
    }

    // The tiles: the full first tile of leaf hashes, the partial second,
    // and the entry bundles, immutable once full.
    let full = logged.app.get("/log/tile/0/000").await;
    assert_eq!(full.status(), 200);
    assert!(full.headers()["cache-control"]
        .to_str()
        .unwrap()
        .contains("immutable"));
    let full = full.bytes().await.unwrap();
    assert_eq!(full.len(), 256 * 32);
    let bundle = logged.app.get("/log/tile/entries/001.p/84").await;
    assert_eq!(bundle.status(), 200);
    let bundle = bundle.bytes().await.unwrap();
    let mut entries = Vec::new();
    let mut rest = &bundle[..];
    while !rest.is_empty() {
        let length = u16::from_be_bytes([rest[0], rest[1]]) as usize;
        entries.push(rest[2..2 + length].to_vec());
        rest = &rest[2 + length..];
    }
    assert_eq!(entries.len(), 84);
    let partial = logged
        .app
        .get("/log/tile/0/001.p/84")
        .await
        .bytes()
        .await
        .unwrap();
    for (i, entry) in entries.iter().enumerate() {
        assert_eq!(
            tlog_tiles::record_hash(entry).0.as_slice(),
            &partial[i * 32..(i + 1) * 32]
        );
    }
    assert_eq!(logged.app.get("/log/tile/0/002").await.status(), 404);
    assert_eq!(logged.app.get("/log/tile/0/0").await.status(), 400);

    // The first checkpoint is a prefix of the latest.
    let response = logged
        .app
        .get(&format!(
            "/log/consistency?from={}&to={}",
            first.size, tree.size
        ))
        .await;
    assert_eq!(response.status(), 200);
    let proof: Value = response.json().await.unwrap();
    let path = hashes(&proof["proof"]);
    tlog_tiles::check_tree(&path, tree.size, tree.root, first.size, first.root).unwrap();
    assert!(checkpoint::open(first_note.as_bytes(), &logged.verifier).is_ok());
    let bad = logged.app.get("/log/consistency?from=5&to=999999").await;
    assert_eq!(bad.status(), 400);
    let unknown = logged.app.get("/v1/events/999999/proof").await;
    assert_eq!(unknown.status(), 404);
}

#[tokio::test]
async fn with_the_log_off_the_log_endpoints_say_so_and_events_have_no_leaf() {
    let app = spawn_app_with(|_| {}).await;
    post_users(&app, "off", 3).await;
    let response = app.get("/log/checkpoint").await;
    let detail = crate::helpers::problem_detail(response, 404).await;
    assert!(detail.contains("LOG_SIGNING_KEY"), "{detail}");
    let items = app.events("").await;
    assert_eq!(items.len(), 3);
    assert!(items[0].get("log").is_none());
}

// ---------------------------------------------------------------- verify

/// Runs `audit-service verify` on `database_url`; (success, output).
pub fn run_verify(
    database_url: &str,
    signer: &str,
    saved: Option<&std::path::Path>,
) -> (bool, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_audit-service"));
    command
        .arg("verify")
        .env_clear()
        .env("DATABASE_URL", database_url)
        .env("LOG_SIGNING_KEY", signer);
    if let Some(saved) = saved {
        command.arg("--checkpoint").arg(saved);
    }
    let output = command.output().expect("audit-service verify runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// An app with 60 integrated events, its database, and the seq of its
/// 20th and 40th events.
async fn integrated() -> (LoggedApp, String, Db, i64, i64) {
    let logged = spawn_logged(|_| {}).await;
    post_users(&logged.app, "t", 60).await;
    logged.wait_size(60).await;
    let url = logged.app.database_url.clone();
    let db = Db::open(&url).await;
    let seqs = db
        .texts("SELECT CAST(seq AS TEXT) FROM events ORDER BY seq")
        .await;
    let (a, b) = (seqs[19].parse().unwrap(), seqs[39].parse().unwrap());
    (logged, url, db, a, b)
}

/// SQL that puts `text` in a string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[tokio::test]
async fn verify_accepts_an_untouched_log_and_names_the_seq_of_each_kind_of_tampering() {
    for case in ["data", "type", "subject", "deletion", "swap"] {
        // The app keeps running (and its database existing) meanwhile.
        let (logged, url, db, a, b) = integrated().await;
        let signer = &logged.signer;
        let (ok, output) = run_verify(&url, signer, None);
        assert!(ok, "{case}: the untouched log fails: {output}");
        let json_of = |seq: i64| format!("SELECT event_json FROM events WHERE seq = {seq}");
        let text_a = db.text(&json_of(a)).await;
        let statements = match case {
            "data" => vec![format!(
                "UPDATE events SET event_json = {} WHERE seq = {a}",
                literal(&text_a.replace("Name t", "Nome t"))
            )],
            "type" => vec![format!(
                "UPDATE events SET event_json = {}, type = 'user.other' WHERE seq = {a}",
                literal(&text_a.replace("user.storeUser", "user.other"))
            )],
            "subject" => vec![format!(
                "UPDATE events SET event_json = {}, subject = 'x' WHERE seq = {a}",
                literal(&text_a.replace("\"subject\":\"t-u", "\"subject\":\"x-u"))
            )],
            "deletion" => vec![format!("DELETE FROM events WHERE seq = {a}")],
            _ => {
                let text_b = db.text(&json_of(b)).await;
                vec![
                    format!(
                        "UPDATE events SET event_json = {} WHERE seq = {a}",
                        literal(&text_b)
                    ),
                    format!(
                        "UPDATE events SET event_json = {} WHERE seq = {b}",
                        literal(&text_a)
                    ),
                ]
            }
        };
        for statement in statements {
            db.execute(&statement).await;
        }
        let (ok, output) = run_verify(&url, signer, None);
        assert!(!ok, "{case}: tampering not found: {output}");
        assert!(
            output.contains(&format!("seq {a}")),
            "{case}: the output does not name seq {a}: {output}"
        );
    }
}

#[tokio::test]
async fn verify_finds_the_newest_events_cut_off_against_a_checkpoint_saved_before() {
    let (logged, url, db, _, _) = integrated().await;
    let saved = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(saved.path(), logged.checkpoint_text().await).unwrap();
    let signer = &logged.signer;
    let (ok, output) = run_verify(&url, signer, Some(saved.path()));
    assert!(ok, "{output}");
    assert!(
        output.contains("consistent with the saved checkpoint of 60"),
        "{output}"
    );
    let seqs = db
        .texts("SELECT CAST(seq AS TEXT) FROM events ORDER BY seq DESC LIMIT 5")
        .await;
    let first_cut = seqs[4].clone();
    db.execute(&format!("DELETE FROM events WHERE seq >= {first_cut}"))
        .await;
    let (ok, output) = run_verify(&url, signer, Some(saved.path()));
    assert!(!ok, "{output}");
    assert!(output.contains(&format!("seq {first_cut}")), "{output}");
    // The log rewound as well, to an empty tree with the checkpoint gone:
    // only the saved checkpoint tells.
    db.execute("UPDATE log_state SET size = 0, checkpoint = NULL")
        .await;
    let (ok, output) = run_verify(&url, signer, Some(saved.path()));
    assert!(!ok, "{output}");
}

// ---------------------------------------------------------------- erasure

const ERASABLE: &str = "Zyxwv Erasable";

/// Whether any file of the database holds `needle`: the SQLite file and
/// its WAL; on PostgreSQL, after a checkpoint writes the pages out, the
/// files of the events table, its TOAST table and the leaves.
async fn files_hold(database_url: &str, needle: &str) -> bool {
    let db = Db::open(database_url).await;
    let files: Vec<std::path::PathBuf> = match &db {
        Db::Sqlite(_) => {
            let path = service_kit::db::sqlite_path(database_url).unwrap();
            let wal = std::path::PathBuf::from(format!("{}-wal", path.display()));
            vec![path, wal]
        }
        Db::Postgres(_) => {
            db.execute("CHECKPOINT").await;
            let data = db.text("SHOW data_directory").await;
            let relations = db
                .texts(
                    "SELECT pg_relation_filepath(oid) FROM pg_class \
                     WHERE relname IN ('events', 'log_leaf_blocks') \
                     UNION ALL SELECT pg_relation_filepath(reltoastrelid) FROM pg_class \
                     WHERE relname = 'events' AND reltoastrelid <> 0",
                )
                .await;
            let mut files = Vec::new();
            for relation in relations {
                let base = std::path::Path::new(&data).join(relation);
                files.push(base.clone());
                for segment in 1..100 {
                    let next = std::path::PathBuf::from(format!("{}.{segment}", base.display()));
                    if !next.exists() {
                        break;
                    }
                    files.push(next);
                }
            }
            files
        }
    };
    let holding: Vec<&std::path::PathBuf> = files
        .iter()
        .filter(|file| {
            std::fs::read(file)
                .map(|bytes| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
                .unwrap_or(false)
        })
        .collect();
    if !holding.is_empty() {
        eprintln!("{needle:?} is in {holding:?}");
    }
    !holding.is_empty()
}

async fn erase(app: &TestApp, subject: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = app
        .client
        .delete(format!("{}/v1/subjects/{subject}/data", app.address));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

/// A service with the log on that has stored and logged one event of
/// `subject` holding [`ERASABLE`].
async fn logged_with_erasable(subject: &str) -> LoggedApp {
    let logged = spawn_logged(|_| {}).await;
    let event = user_event(&format!("{subject}-1"), subject, ERASABLE);
    assert_eq!(logged.app.post_batch(&json!([event])).await.status(), 204);
    logged.wait_size(1).await;
    logged
}

/// Starts `DELETE /v1/subjects/{subject}/data` as the admin; its answer
/// comes once the erasure has been scrubbed from the files.
fn erase_in_background(app: &TestApp, subject: &str) -> tokio::task::JoinHandle<reqwest::Response> {
    let request = app
        .client
        .delete(format!("{}/v1/subjects/{subject}/data", app.address))
        .bearer_auth(ADMIN_TOKEN);
    tokio::spawn(async move { request.send().await.unwrap() })
}

/// Every item's proof verifies against the latest checkpoint once it
/// covers `n` events.
async fn all_proofs_verify(logged: &LoggedApp, n: u64) -> Vec<Item> {
    let tree = logged.wait_size(n).await;
    let items = logged.items().await;
    for item in items
        .iter()
        .filter(|i| i.log.as_ref().is_some_and(|l| l.index < tree.size))
    {
        logged.check_inclusion(item, &tree).await;
    }
    items
}

#[tokio::test]
async fn erasing_a_subject_removes_its_data_from_the_events_and_the_files_and_keeps_every_proof() {
    let logged = spawn_logged(|_| {}).await;
    let app = &logged.app;
    let mut events = vec![
        user_event("v1", "victim", ERASABLE),
        json!({"specversion": "1.0", "id": "v2", "source": "/user-service", "type": "user.updateUser",
               "subject": "victim", "datacontenttype": "application/json",
               "data": {"id": "victim", "name": format!("{ERASABLE} II")}}),
    ];
    for i in 0..40 {
        events.push(user_event(
            &format!("o{i}"),
            &format!("other{i}"),
            "Someone Else",
        ));
    }
    assert_eq!(app.post_batch(&json!(events)).await.status(), 204);
    logged.wait_size(42).await;
    assert!(
        files_hold(&app.database_url, ERASABLE).await,
        "the test looks in the wrong files"
    );

    assert_eq!(erase(app, "victim", None).await.status(), 401);
    assert_eq!(
        erase(app, "victim", Some("wrong-token-0123456789"))
            .await
            .status(),
        401
    );
    let response = erase(app, "victim", Some(ADMIN_TOKEN)).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({"subject": "victim", "erased": 2}));

    // The record of the erasure is integrated too.
    let items = all_proofs_verify(&logged, 43).await;
    let victims: Vec<&Item> = items
        .iter()
        .filter(|i| serde_json::from_str::<Value>(i.event.get()).unwrap()["subject"] == "victim")
        .collect();
    assert_eq!(victims.len(), 2);
    for item in victims {
        assert!(item.erased);
        assert!(!item.event.get().contains(ERASABLE), "{}", item.event.get());
        let log = item.log.as_ref().unwrap();
        assert!(log.salt.is_none() && log.commitment.is_some());
    }
    // Every other event keeps its salt: the erasure rewrote the blocks
    // of leaves around them.
    for item in items.iter().filter(|i| !i.erased) {
        let has_data = entry::Members::parse(item.event.get())
            .unwrap()
            .data()
            .is_some();
        let log = item.log.as_ref().unwrap();
        assert_eq!(log.salt.is_some(), has_data, "seq {}", item.seq);
    }
    let record: Value = serde_json::from_str(items.last().unwrap().event.get()).unwrap();
    assert_eq!(record["type"], "audit.eraseData");
    assert_eq!(record["source"], "/audit-service");
    assert_eq!(record["data"]["subject"], "victim");
    assert_eq!(record["data"]["events"], 2);
    let by = record["data"]["requested_by"].as_str().unwrap();
    assert!(
        by.starts_with("admin token sha256:") && !by.contains(ADMIN_TOKEN),
        "{by}"
    );

    assert!(
        !files_hold(&app.database_url, ERASABLE).await,
        "the erased name is still in the files"
    );
    let (ok, output) = run_verify(&app.database_url, &logged.signer, None);
    assert!(ok, "{output}");
    let again: Value = erase(app, "victim", Some(ADMIN_TOKEN))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["erased"], 0);
}

/// A reader whose snapshot began before an erasure still sees the rows as
/// they were; the old versions must not be copied into the rewritten files.
#[tokio::test]
async fn an_erasure_waits_for_older_readers_and_leaves_no_erased_byte_behind_them() {
    let logged = spawn_logged(|_| {}).await;
    let app = &logged.app;
    let events = vec![
        user_event("w1", "victim", ERASABLE),
        user_event("w2", "bystander", "Someone Else"),
    ];
    assert_eq!(app.post_batch(&json!(events)).await.status(), 204);
    logged.wait_size(2).await;

    let reader = older_reader(&app.database_url).await;
    let erasing = erase_in_background(app, "victim");
    tokio::time::sleep(Duration::from_millis(500)).await;
    reader.close().await;
    assert_eq!(erasing.await.unwrap().status(), 200);

    assert!(
        !files_hold(&app.database_url, ERASABLE).await,
        "the erased name was kept for a reader that has ended"
    );
}

#[tokio::test]
async fn an_erasure_waits_for_a_later_reader_that_an_older_writer_held_back() {
    let logged = logged_with_erasable("held").await;
    let app = &logged.app;

    // A transaction holding an xid from before the erasure makes every
    // snapshot taken while it runs keep the erased row's old version
    // (their xmin is that xid), even snapshots taken after the erasure.
    let writer = older_writer(&app.database_url).await;
    let erasing = erase_in_background(app, "held");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let later = older_reader(&app.database_url).await;
    writer.close().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    later.close().await;
    assert_eq!(erasing.await.unwrap().status(), 200);

    assert!(
        !files_hold(&app.database_url, ERASABLE).await,
        "the erased name was kept for a reader that has ended"
    );
}

/// On PostgreSQL a transaction older than the erasure on *another*
/// database of the server holds back the xmin of every snapshot taken here
/// while it runs, even one taken between scrubbing's check and VACUUM FULL,
/// so scrubbing waits for it too. (On SQLite another database is another
/// file: the erasure only has to leave nothing behind.)
#[tokio::test]
async fn an_erasure_waits_for_an_older_writer_on_another_database() {
    let logged = logged_with_erasable("elsewhere").await;
    let app = &logged.app;

    let dir = tempfile::tempdir().unwrap();
    let elsewhere = test_kit::database::database_url(dir.path(), "elsewhere.db").await;
    let writer = writer_elsewhere(&elsewhere).await;
    let erasing = erase_in_background(app, "elsewhere");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let waited = !erasing.is_finished();
    writer.close().await;
    assert_eq!(erasing.await.unwrap().status(), 200);

    if test_kit::database::database() == Kind::Postgres {
        assert!(
            waited,
            "the erasure was scrubbed while a transaction older than it ran on another database"
        );
    }
    assert!(
        !files_hold(&app.database_url, ERASABLE).await,
        "the erased name was kept for a transaction that has ended"
    );
}

/// A session in a transaction that has taken its snapshot and reads
/// nothing the erasure locks.
async fn older_reader(database_url: &str) -> Session {
    let mut session = Session::open(database_url).await;
    match session.kind() {
        Kind::Sqlite => {
            session.run("BEGIN").await;
            // A read marks the WAL position this reader stays on.
            session.run("SELECT count(*) FROM events").await;
        }
        Kind::Postgres => {
            session.run("BEGIN ISOLATION LEVEL REPEATABLE READ").await;
            // The snapshot is taken at the first statement.
            session.run("SELECT 1").await;
        }
    }
    session
}

/// Like [`older_reader`], and on PostgreSQL the transaction also holds an
/// xid, as a writer does.
async fn older_writer(database_url: &str) -> Session {
    let mut session = older_reader(database_url).await;
    if session.kind() == Kind::Postgres {
        session.run("SELECT pg_current_xact_id()").await;
    }
    session
}

/// A write transaction left open on the database `url` (its own SQLite
/// file, or another PostgreSQL database of the same server).
async fn writer_elsewhere(url: &str) -> Session {
    let mut session = Session::open(url).await;
    session.run("BEGIN").await;
    // DDL takes an xid, as any writer does.
    session.run("CREATE TABLE elsewhere (x integer)").await;
    session
}

#[tokio::test]
async fn the_admin_door_is_closed_without_admin_tokens() {
    let app = crate::helpers::spawn_app().await;
    let detail =
        crate::helpers::problem_detail(erase(&app, "u1", Some(ADMIN_TOKEN)).await, 401).await;
    assert!(detail.contains("admin"), "{detail}");
}

#[tokio::test]
async fn a_deleted_users_data_is_erased_once_its_deletion_is_stored() {
    let logged = spawn_logged(|settings| {
        settings.log.erase_on_types = vec!["user.deleteUser".into()];
    })
    .await;
    let app = &logged.app;
    let stored = user_event("d1", "leaver", ERASABLE);
    let kept = user_event("d2", "stayer", "Kept Name");
    assert_eq!(app.post_batch(&json!([stored, kept])).await.status(), 204);
    logged.wait_size(2).await;
    let deleted = json!({"specversion": "1.0", "id": "d3", "source": "/user-service",
        "type": "user.deleteUser", "subject": "leaver", "datacontenttype": "application/json",
        "data": {"id": "leaver", "name": ERASABLE}});
    assert_eq!(app.post_structured(&deleted).await.status(), 204);
    let mut items = Vec::new();
    for _ in 0..200 {
        items = logged.items().await;
        if items.len() > 3 && items.iter().filter(|i| i.erased).count() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let erased: Vec<bool> = items.iter().map(|i| i.erased).collect();
    assert_eq!(&erased[..3], [true, false, true], "leaver's two events");
    let record: Value = serde_json::from_str(items[3].event.get()).unwrap();
    assert_eq!(record["type"], "audit.eraseData");
    assert!(record["data"]["requested_by"]
        .as_str()
        .unwrap()
        .contains("ERASE_ON_TYPES"));
    all_proofs_verify(&logged, 4).await;
    assert!(!files_hold(&app.database_url, ERASABLE).await);
}

#[tokio::test]
async fn retention_erases_old_data_and_every_proof_still_verifies() {
    let logged = spawn_logged(|settings| {
        settings.log.retention = Some(Duration::from_secs(2));
    })
    .await;
    let app = &logged.app;
    // Enough events for page splits, whose moved cells must not linger.
    post_users(app, "old", 300).await;
    logged.wait_size(300).await;
    let mut items = Vec::new();
    for _ in 0..200 {
        items = logged.items().await;
        // The record follows the erasure, after the files are scrubbed.
        if items.len() > 300 && items.iter().filter(|i| i.erased).count() >= 300 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        items[..300].iter().all(|i| i.erased),
        "old events not erased"
    );
    let record: Value = serde_json::from_str(items[300].event.get()).unwrap();
    assert_eq!(record["type"], "audit.expireData");
    assert_eq!(record["data"]["events"], 300);
    all_proofs_verify(&logged, 301).await;
    assert!(!files_hold(&app.database_url, "Name old").await);
}

#[tokio::test]
async fn the_erase_command_erases_a_subject_and_records_it() {
    let logged = spawn_logged(|_| {}).await;
    let app = &logged.app;
    assert_eq!(
        app.post_batch(&json!([user_event("c1", "cli-user", ERASABLE)]))
            .await
            .status(),
        204
    );
    logged.wait_size(1).await;
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_audit-service"))
        .args(["erase", "--subject", "cli-user"])
        .env_clear()
        .env("DATABASE_URL", &app.database_url)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.contains("erased the data of 1 events"), "{text}");
    let items = all_proofs_verify(&logged, 2).await;
    assert!(items[0].erased);
    let record: Value = serde_json::from_str(items[1].event.get()).unwrap();
    assert!(record["data"]["requested_by"]
        .as_str()
        .unwrap()
        .starts_with("audit-service erase"));
    // The command's log says whether scrubbing waited out a reader.
    assert!(
        !files_hold(&app.database_url, ERASABLE).await,
        "erased data left in the files; the command said: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

// ------------------------------------------------------------- sequencer

/// The real binary with the log on, on `database_url`.
pub fn logged_process(database_url: &str, signer: &str, log: std::path::PathBuf) -> Service {
    audit_process(
        &[
            ("DATABASE_URL", database_url.to_owned()),
            ("LOG_SIGNING_KEY", signer.to_owned()),
        ],
        log,
    )
}

pub async fn wait_listening(process: &Service) {
    let url = format!("http://127.0.0.1:{}/healthz", process.port);
    let up = crate::helpers::within(Duration::from_secs(30), || async {
        reqwest::get(&url).await.is_ok_and(|r| r.status() == 200)
    })
    .await
    .is_some();
    assert!(up, "audit-service did not start:\n{}", process.logs());
}

/// Posts batches of 100 user events to `port` until `stop`, or until a
/// post fails (the process was killed); returns how many were accepted.
pub async fn post_until(
    port: u16,
    prefix: String,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> usize {
    let client = reqwest::Client::new();
    let mut accepted = 0;
    for batch in 0.. {
        if stop.load(std::sync::atomic::Ordering::SeqCst) {
            break;
        }
        let events: Vec<Value> = (0..100)
            .map(|i| {
                user_event(
                    &format!("{prefix}-{batch}-{i}"),
                    &format!("{prefix}-u{i}"),
                    "Someone",
                )
            })
            .collect();
        let sent = client
            .post(format!("http://127.0.0.1:{port}/"))
            .header("content-type", "application/cloudevents-batch+json")
            .body(json!(events).to_string())
            .send()
            .await;
        match sent {
            Ok(response) if response.status() == 204 => accepted += 100,
            _ => break,
        }
    }
    accepted
}

/// Waits until the checkpoint at `port` covers every stored event.
pub async fn wait_all_integrated(port: u16, verifier: &str, db: &Db) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let events = db.int("SELECT COUNT(*) FROM events").await as u64;
        let text = reqwest::get(format!("http://127.0.0.1:{port}/log/checkpoint"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if let Ok(tree) = checkpoint::open(text.as_bytes(), verifier) {
            if tree.size == events {
                return events;
            }
            assert!(
                tree.size < events,
                "more leaves ({}) than events ({events})",
                tree.size
            );
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the tree did not catch up with {events} events"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_sequencer_killed_mid_way_is_restarted_and_the_tree_goes_on_without_a_gap() {
    let dir = tempfile::TempDir::new().unwrap();
    let url = test_kit::database::database_url(dir.path(), "audit.db").await;
    let (signer, verifier) = LogKey::generate("audit.test/kill").unwrap();
    let mut first = logged_process(&url, &signer, dir.path().join("first.log"));
    wait_listening(&first).await;
    let db = Db::open(&url).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let posting = tokio::spawn(post_until(first.port, "k1".into(), stop.clone()));
    // Killed once the tree has grown, while events keep coming.
    let grown = crate::helpers::within(Duration::from_secs(60), || async {
        db.int("SELECT size FROM log_state").await >= 1000
    })
    .await
    .is_some();
    assert!(grown, "the tree did not grow:\n{}", first.logs());
    first.kill();
    let accepted = posting.await.unwrap();
    let size_at_kill = db.int("SELECT size FROM log_state").await;
    let events_at_kill = db.int("SELECT COUNT(*) FROM events").await;
    assert!(accepted as i64 <= events_at_kill);

    let second = logged_process(&url, &signer, dir.path().join("second.log"));
    wait_listening(&second).await;
    let more = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let posting = tokio::spawn(post_until(second.port, "k2".into(), more.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    more.store(true, std::sync::atomic::Ordering::SeqCst);
    posting.await.unwrap();
    let events = wait_all_integrated(second.port, &verifier, &db).await;
    assert!(events as i64 > events_at_kill && size_at_kill > 0);
    let (ok, output) = run_verify(&url, &signer, None);
    assert!(ok, "{output}");
}
