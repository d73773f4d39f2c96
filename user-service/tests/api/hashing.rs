//! Password hashing under load: a bounded pool of argon2id threads behind
//! a bounded queue, so a flood of creates is refused politely instead of
//! growing the process.

use crate::helpers::{spawn_app_with, SEED_PASSWORD};
use std::sync::Arc;

#[tokio::test]
async fn a_create_flood_beyond_the_hashing_pool_gets_503_with_retry_after_and_later_creates_succeed(
) {
    let app = Arc::new(
        spawn_app_with("http://127.0.0.1:9/", |s| {
            s.hashing.workers = 1;
            s.hashing.queue = 2;
        })
        .await,
    );

    let flood: Vec<_> = (0..24)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move {
                app.post_user(
                    serde_json::json!({"name": format!("flood {i}"), "password": SEED_PASSWORD}),
                )
                .await
            })
        })
        .collect();
    let mut created = 0;
    let mut refused = 0;
    for response in flood {
        let response = response.await.unwrap();
        match response.status().as_u16() {
            201 => created += 1,
            503 => {
                refused += 1;
                assert_eq!(response.headers()["retry-after"], "1");
                assert_eq!(
                    response.headers()["content-type"],
                    "application/problem+json"
                );
                let problem: serde_json::Value = response.json().await.unwrap();
                assert_eq!(problem["status"], 503);
                assert!(!problem.to_string().contains(SEED_PASSWORD));
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(refused > 0, "24 at once exceed one thread and two places");
    assert!(created >= 1, "the pool still hashed some");
    // However many came, one thread held one working memory.
    assert_eq!(app.hasher.memories(), 1);

    // The flood is over: creates succeed again.
    for i in 0..3 {
        app.create_user(&format!("after {i}")).await;
    }
    assert_eq!(app.hasher.memories(), 1);
}
