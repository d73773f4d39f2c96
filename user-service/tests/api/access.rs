//! Bearer tokens on the users API (`API_TOKENS`) and on `/metrics`
//! (`METRICS_TOKENS`), through the same doors as audit-service's.

use crate::helpers::{spawn_app_with, FakeAudit, SEED_BODY};
use serde_json::Value;
use settings::Tokens;

const API: &str = "api-token-0123456789";
const METRICS: &str = "metrics-token-0123456789";

/// A 401 problem with a Bearer challenge of user-service's realm.
async fn assert_unauthorized(response: reqwest::Response) -> String {
    assert_eq!(response.status(), 401);
    let challenge = response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.starts_with(r#"Bearer realm="user-service""#),
        "{challenge}"
    );
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["status"], 401);
    challenge
}

#[tokio::test]
async fn with_api_tokens_set_the_users_api_needs_one_and_the_probes_do_not() {
    let audit = FakeAudit::start().await;
    let app = spawn_app_with(&audit.url, |s| {
        s.access.api = Some(Tokens::new([API]));
        s.access.metrics = Some(Tokens::new([METRICS]));
    })
    .await;
    let post = || {
        app.client
            .post(format!("{}/v1/user", app.address))
            .header("content-type", "application/json")
            .body(SEED_BODY)
    };
    assert_unauthorized(post().send().await.unwrap()).await;
    let wrong = assert_unauthorized(post().bearer_auth(METRICS).send().await.unwrap()).await;
    assert!(wrong.contains(r#"error="invalid_token""#), "{wrong}");
    let created = post().bearer_auth(API).send().await.unwrap();
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for path in [format!("/v1/users/{id}"), "/v1/users".to_owned()] {
        assert_unauthorized(app.get(&path).await).await;
        let read = app
            .client
            .get(format!("{}{path}", app.address))
            .bearer_auth(API)
            .send()
            .await
            .unwrap();
        assert_eq!(read.status(), 200, "{path}");
    }
    // A route nobody has yet is closed too.
    assert_unauthorized(app.get("/v2/anything").await).await;
    assert_unauthorized(app.get("/metrics").await).await;
    let scraped = app
        .client
        .get(format!("{}/metrics", app.address))
        .bearer_auth(METRICS)
        .send()
        .await
        .unwrap();
    assert_eq!(scraped.status(), 200);
    for open in ["/healthz", "/readyz", "/openapi.json"] {
        assert_eq!(app.get(open).await.status(), 200, "{open}");
    }
}

#[tokio::test]
async fn without_tokens_the_users_api_is_open_as_before() {
    let audit = FakeAudit::start().await;
    let app = spawn_app_with(&audit.url, |_| {}).await;
    assert_eq!(
        app.post_raw(SEED_BODY, "application/json").await.status(),
        201
    );
    assert_eq!(app.get("/metrics").await.status(), 200);
}

#[test]
fn the_document_shows_the_bearer_scheme_on_the_users_api_only() {
    let doc = serde_json::to_value(user_service::app::openapi()).unwrap();
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert!(doc["paths"]["/v1/user"]["post"]["responses"]["401"].is_object());
    assert!(doc["paths"]["/healthz"]["get"]["responses"]["401"].is_null());
}
