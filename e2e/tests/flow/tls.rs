//! The whole HTTP path over TLS with a private CA: user-service sends its
//! events to an https audit-service with its bearer token, and they are
//! stored; without the token they are refused.

use e2e::Stack;
use serde_json::Value;
use std::time::{Duration, Instant};

const INGEST: &str = "e2e-ingest-token-0123456789";
const READ: &str = "e2e-read-token-0123456789";

#[tokio::test]
async fn user_service_delivers_to_an_https_audit_service_with_its_token() {
    let stack = Stack::new().unwrap();
    let test_ca = shared::test_ca::test_ca();
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
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap())
        .build()
        .unwrap();
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

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let page: Value = client
            .get(format!("{}/v1/events?subject={id}", audit.base_url))
            .bearer_auth(READ)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if let Some(item) = page["events"].as_array().and_then(|e| e.first()) {
            assert_eq!(item["event"]["type"], "user.storeUser");
            assert_eq!(item["transport"], "http");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the event was not stored within 10 s; user-service log:\n{}",
            user.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
