//! The whole HTTP path over TLS with a private CA: user-service sends its
//! events to an https audit-service with its bearer token, and they are
//! stored; without the token they are refused. The README's certificate
//! recipes work as written, and a certificate the relay refuses is
//! explained in its log.

use e2e::{Service, Stack};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const INGEST: &str = "e2e-ingest-token-0123456789";
const READ: &str = "e2e-read-token-0123456789";

#[tokio::test]
async fn user_service_delivers_to_an_https_audit_service_with_its_token() {
    let stack = Stack::new().unwrap();
    let test_ca = test_kit::ca::test_ca();
    let ca = test_ca.ca.display().to_string();
    let cert = test_ca.files.cert.display().to_string();
    let key = test_ca.files.key.display().to_string();
    let audit = stack
        .audit(&[
            ("TLS_CERT_FILE", &cert),
            ("TLS_KEY_FILE", &key),
            ("INGEST_TOKENS", INGEST),
            ("READ_TOKENS", READ),
        ])
        .await
        .unwrap();
    assert!(audit.base_url.starts_with("https://"), "{}", audit.base_url);
    // user-service listens with TLS too, with the same certificate.
    let user = stack
        .user(
            &audit.base_url,
            &[
                ("AUDIT_TOKEN", INGEST),
                ("AUDIT_CA_FILE", &ca),
                ("TLS_CERT_FILE", &cert),
                ("TLS_KEY_FILE", &key),
            ],
        )
        .await
        .unwrap();
    let client = client_trusting(&ca);
    let created = client
        .post(format!("{}/v1/user", user.base_url))
        .json(&serde_json::json!({"name": "Ozzy Osbourne", "password": "12345 over TLS"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let item = wait_stored(&client, &audit, &id, Some(READ), &user).await;
    assert_eq!(item["event"]["type"], "user.storeUser");
    assert_eq!(item["transport"], "http");
    // The audit service says who may not read.
    let refused = client
        .get(format!("{}/v1/events", audit.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    // No token was logged by either service.
    for logs in [audit.logs(), user.logs()] {
        assert!(!logs.contains(INGEST) && !logs.contains(READ));
    }
}

/// Runs shell `commands` (bash) in `dir`, failing the test with their
/// output if one fails.
fn run_in(dir: &Path, commands: &str) {
    let output = Command::new("bash")
        .args(["-euo", "pipefail", "-c", commands])
        .current_dir(dir)
        .output()
        .expect("bash runs");
    assert!(
        output.status.success(),
        "{commands}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The variables of the README's `cargo run -p <package>` line, a file
/// name made a path in `dir` when the recipe made that file.
fn variables_of(commands: &[String], package: &str, dir: &Path) -> Vec<(String, String)> {
    crate::readme::variables_of(commands, package)
        .into_iter()
        .map(|(name, value)| match dir.join(&value).exists() {
            true => (name, dir.join(value).display().to_string()),
            false => (name, value),
        })
        .collect()
}

/// Polls `audit` over TLS, with `token` if given, until user `id`'s event
/// is stored (20 s at most); returns its item.
async fn wait_stored(
    client: &reqwest::Client,
    audit: &Service,
    id: &str,
    token: Option<&str>,
    user: &Service,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut request = client.get(format!("{}/v1/events?subject={id}", audit.base_url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let page: Value = request.send().await.unwrap().json().await.unwrap();
        if let Some(item) = page["events"].as_array().and_then(|e| e.first()) {
            return item.clone();
        }
        assert!(
            Instant::now() < deadline,
            "the event was not stored within 20 s; user-service log:\n{}",
            user.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A client that trusts the PEM certificates in `ca`.
fn client_trusting(ca: &str) -> reqwest::Client {
    let pem = std::fs::read(ca).unwrap();
    let mut builder = reqwest::Client::builder();
    for certificate in reqwest::Certificate::from_pem_bundle(&pem).unwrap() {
        builder = builder.add_root_certificate(certificate);
    }
    builder.build().unwrap()
}

#[tokio::test]
async fn the_readmes_tls_recipes_deliver_events_over_tls() {
    let readme = crate::readme::readme();
    let recipes: Vec<Vec<String>> = crate::readme::blocks(&readme, "sh")
        .iter()
        .filter(|b| b.contains("openssl req"))
        .map(|b| crate::readme::commands(b))
        .collect();
    assert_eq!(
        recipes.len(),
        2,
        "the self-signed and the private CA recipes"
    );
    for recipe in recipes {
        let stack = Stack::new().unwrap();
        let dir = stack.dir.path();
        let openssl: Vec<&str> = recipe
            .iter()
            .filter(|c| c.starts_with("openssl "))
            .map(String::as_str)
            .collect();
        run_in(dir, &openssl.join("\n"));
        let audit_env = variables_of(&recipe, "audit-service", dir);
        let mut user_env = variables_of(&recipe, "user-service", dir);
        // The README's AUDIT_URL names the default port; the test's
        // audit-service listens on a free one, on the same host.
        let (_, readme_url) = user_env.remove(
            user_env
                .iter()
                .position(|(name, _)| name == "AUDIT_URL")
                .expect("the recipe sets AUDIT_URL"),
        );
        assert!(readme_url.starts_with("https://localhost:"), "{readme_url}");
        let ca = user_env
            .iter()
            .find(|(name, _)| name == "AUDIT_CA_FILE")
            .map(|(_, path)| path.clone())
            .expect("the recipe sets AUDIT_CA_FILE");
        let audit_env: Vec<(&str, &str)> = audit_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let user_env: Vec<(&str, &str)> = user_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let audit = stack.audit(&audit_env).await.unwrap();
        assert!(audit.base_url.starts_with("https://localhost:"));
        let user = stack.user(&audit.base_url, &user_env).await.unwrap();
        let id = stack
            .create_user(&user, "Ozzy Osbourne", "12345 over TLS")
            .await
            .unwrap();

        wait_stored(&client_trusting(&ca), &audit, &id, None, &user).await;
    }
}

#[tokio::test]
async fn a_certificate_the_relay_refuses_is_explained_in_its_log() {
    let subject = r#"-subj "/CN=localhost""#;
    let ok_extensions =
        r#"-addext "subjectAltName=DNS:localhost" -addext "basicConstraints=critical,CA:FALSE""#;
    let cases = [
        // What `openssl req -x509` makes by default: a CA certificate,
        // no subjectAltName.
        ("", true, "basicConstraints=critical,CA:FALSE"),
        // Not a CA, but no name the client can check.
        (
            r#"-addext "basicConstraints=critical,CA:FALSE""#,
            true,
            "subjectAltName",
        ),
        // A good certificate nobody told user-service to trust.
        (ok_extensions, false, "AUDIT_CA_FILE"),
    ];
    for (extensions, trusted, advice) in cases {
        let stack = Stack::new().unwrap();
        let dir = stack.dir.path();
        run_in(
            dir,
            &format!(
                "openssl req -x509 -newkey rsa:2048 -nodes -keyout key.pem -out cert.pem \
                 -days 1 {subject} {extensions}"
            ),
        );
        let cert = dir.join("cert.pem").display().to_string();
        let key = dir.join("key.pem").display().to_string();
        let audit = stack
            .audit(&[("TLS_CERT_FILE", &cert), ("TLS_KEY_FILE", &key)])
            .await
            .unwrap();
        let mut user_env = vec![("LOG_FORMAT", "json")];
        if trusted {
            user_env.push(("AUDIT_CA_FILE", &cert));
        }
        let user = stack.user(&audit.base_url, &user_env).await.unwrap();
        stack
            .create_user(&user, "Ozzy Osbourne", "12345678")
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let failure = loop {
            if let Some(line) = user.log_lines("publish failed, will retry").pop() {
                break line;
            }
            assert!(
                Instant::now() < deadline,
                "no failed publish in 20 s:\n{}",
                user.log_tail(20)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let reason = failure["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains(advice),
            "{extensions:?}: the reason does not say {advice:?}: {reason}"
        );
    }
}
