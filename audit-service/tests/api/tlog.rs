//! The transparency log: every stored event is a leaf whose inclusion
//! proof verifies against the signed checkpoint, served as C2SP tiles;
//! tampering with the stored events is found by `audit-service verify`,
//! naming the seq; erasure removes the data (from the files too) and keeps
//! every proof valid. On SQLite, or on PostgreSQL with TEST_DATABASE.

use crate::helpers::{spawn_app_with, TestApp};
use audit_service::tlog::checkpoint::{self, SignedTree};
use audit_service::tlog::entry;
use audit_service::tlog::LogKey;
use base64::prelude::{Engine as _, BASE64_STANDARD};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use shared::auth::Tokens;
use shared::testing::Db;
use std::sync::Arc;
use std::time::Duration;
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
        let path: Vec<Hash> = proof["proof"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| Hash::parse_hash(h.as_str().unwrap()).unwrap())
            .collect();
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
    let path: Vec<Hash> = proof["proof"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| Hash::parse_hash(h.as_str().unwrap()).unwrap())
        .collect();
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
