//! Every kind of bad input gets its 4xx problem+json naming the problem, and
//! nothing is stored for it.

use crate::helpers::{problem_detail, spawn_app, spawn_app_with, TestApp};
use serde_json::{json, Value};

fn valid() -> Value {
    json!({"specversion": "1.0", "id": "1", "source": "/s", "type": "t"})
}

fn with(changes: &[(&str, Value)]) -> Value {
    let mut event = valid();
    for (key, value) in changes {
        if value.is_null() {
            event.as_object_mut().unwrap().remove(*key);
        } else {
            event[*key] = value.clone();
        }
    }
    event
}

async fn assert_nothing_stored(app: &TestApp) {
    assert_eq!(app.events("").await.len(), 0, "something was stored");
}

/// Posts a structured event and expects a 400 whose detail contains `needle`.
async fn assert_rejected(app: &TestApp, event: Value, needle: &str) {
    let response = app.post_structured(&event).await;
    let detail = problem_detail(response, 400).await;
    assert!(
        detail.contains(needle),
        "detail {detail:?} should mention {needle:?} for {event}"
    );
}

#[tokio::test]
async fn malformed_json_is_400() {
    let app = spawn_app().await;
    let response = app
        .post(
            &[("content-type", "application/cloudevents+json")],
            "{\"specversion\": ",
        )
        .await;
    let detail = problem_detail(response, 400).await;
    assert!(detail.contains("malformed JSON"), "{detail}");
    let response = app
        .post(
            &[("content-type", "application/cloudevents-batch+json")],
            "[{]",
        )
        .await;
    assert!(problem_detail(response, 400)
        .await
        .contains("malformed JSON"));
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn missing_required_attributes_are_named() {
    let app = spawn_app().await;
    for name in ["id", "source", "type", "specversion"] {
        assert_rejected(&app, with(&[(name, Value::Null)]), &format!("`{name}`")).await;
    }
    // Binary mode without ce-id.
    let response = app
        .post(
            &[
                ("ce-specversion", "1.0"),
                ("ce-source", "/s"),
                ("ce-type", "t"),
            ],
            "",
        )
        .await;
    assert!(problem_detail(response, 400).await.contains("`id`"));
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn empty_required_attributes_are_named() {
    let app = spawn_app().await;
    for name in ["id", "source", "type"] {
        assert_rejected(
            &app,
            with(&[(name, json!(""))]),
            &format!("`{name}` is empty"),
        )
        .await;
    }
    let response = app
        .post(
            &[
                ("ce-specversion", "1.0"),
                ("ce-id", "1"),
                ("ce-source", "/s"),
                ("ce-type", ""),
            ],
            "",
        )
        .await;
    assert!(problem_detail(response, 400)
        .await
        .contains("`type` is empty"));
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn unknown_specversion_is_400() {
    let app = spawn_app().await;
    assert_rejected(&app, with(&[("specversion", json!("2.0"))]), "specversion").await;
    let response = app
        .post(
            &[
                ("ce-specversion", "0.2"),
                ("ce-id", "1"),
                ("ce-source", "/s"),
                ("ce-type", "t"),
            ],
            "",
        )
        .await;
    assert!(problem_detail(response, 400).await.contains("specversion"));
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn a_bad_time_is_named() {
    let app = spawn_app().await;
    assert_rejected(&app, with(&[("time", json!("last tuesday"))]), "`time`").await;
    assert_rejected(&app, with(&[("time", json!(12))]), "`time`").await;
    let response = app
        .post(
            &[
                ("ce-specversion", "1.0"),
                ("ce-id", "1"),
                ("ce-source", "/s"),
                ("ce-type", "t"),
                ("ce-time", "noon"),
            ],
            "",
        )
        .await;
    assert!(problem_detail(response, 400).await.contains("`time`"));
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn a_binary_header_that_is_not_percent_encoded_utf8_is_named() {
    let app = spawn_app().await;
    let response = app
        .post(
            &[
                ("ce-specversion", "1.0"),
                ("ce-id", "1"),
                ("ce-source", "/s"),
                ("ce-type", "t"),
                ("ce-subject", "bad%FFbyte"),
            ],
            "",
        )
        .await;
    let detail = problem_detail(response, 400).await;
    assert!(detail.contains("`subject`"), "{detail}");
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn data_and_data_base64_together_are_400() {
    let app = spawn_app().await;
    let event = with(&[("data", json!("x")), ("data_base64", json!("eA=="))]);
    assert_rejected(&app, event, "data_base64").await;
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn other_invalid_attributes_are_named() {
    let app = spawn_app().await;
    assert_rejected(&app, with(&[("id", json!(7))]), "`id`").await;
    assert_rejected(
        &app,
        with(&[("dataschema", json!("not a uri"))]),
        "`dataschema`",
    )
    .await;
    assert_rejected(&app, with(&[("Bad_Ext", json!("v"))]), "Bad_Ext").await;
    assert_rejected(&app, with(&[("ext", json!([1]))]), "`ext`").await;
    assert_rejected(&app, json!(["not", "an", "object"]), "JSON object").await;
    let response = app
        .post(
            &[("content-type", "application/cloudevents-batch+json")],
            "{}",
        )
        .await;
    assert!(problem_detail(response, 400).await.contains("array"));
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn a_mixed_specversion_batch_is_400_and_stores_nothing() {
    let app = spawn_app().await;
    let batch = json!([
        valid(),
        with(&[("id", json!("2")), ("specversion", json!("0.3"))])
    ]);
    let detail = problem_detail(app.post_batch(&batch).await, 400).await;
    assert!(detail.contains("one specversion"), "{detail}");
    // One bad event spoils the whole batch: nothing of it is stored.
    let batch = json!([valid(), with(&[("id", json!("2")), ("type", Value::Null)])]);
    let detail = problem_detail(app.post_batch(&batch).await, 400).await;
    assert!(
        detail.contains("batch event 1") && detail.contains("`type`"),
        "{detail}"
    );
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn a_request_that_is_no_cloudevent_is_415_naming_the_modes() {
    let app = spawn_app().await;
    let response = app
        .post(&[("content-type", "application/json")], valid().to_string())
        .await;
    let detail = problem_detail(response, 415).await;
    assert!(
        detail.contains("ce-specversion") && detail.contains("application/cloudevents+json"),
        "{detail}"
    );
    let response = app.post(&[], "").await;
    problem_detail(response, 415).await;
    let response = app
        .post(&[("content-type", "application/cloudevents+avro")], "x")
        .await;
    assert!(problem_detail(response, 415)
        .await
        .contains("not supported"));
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn an_oversized_body_is_413() {
    let app = spawn_app_with(|s| s.max_body_bytes = 1000).await;
    let big = with(&[("data", json!("x".repeat(2000)))]);
    let detail = problem_detail(app.post_structured(&big).await, 413).await;
    assert!(detail.contains("1000 bytes"), "{detail}");
    // Chunked, without a Content-Length, it is refused as well.
    let stream = futures::stream::iter(vec![Ok::<_, std::io::Error>(big.to_string())]);
    let response = app
        .post(
            &[("content-type", "application/cloudevents+json")],
            reqwest::Body::wrap_stream(stream),
        )
        .await;
    problem_detail(response, 413).await;
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn bad_query_parameters_are_400() {
    let app = spawn_app().await;
    for (query, needle) in [
        ("limit=0", "`limit`"),
        ("limit=1001", "`limit`"),
        ("limit=x", "`limit`"),
        ("after=-1", "`after`"),
        ("after=abc", "`after`"),
    ] {
        let detail = problem_detail(app.get_events(query).await, 400).await;
        assert!(detail.contains(needle), "{query}: {detail}");
    }
}

#[tokio::test]
async fn unknown_paths_and_methods_are_problem_json() {
    let app = spawn_app().await;
    problem_detail(app.get("/nope").await, 404).await;
    problem_detail(app.get("/").await, 405).await;
}

#[tokio::test]
async fn a_ce_data_header_cannot_replace_the_body_and_nothing_is_stored() {
    let app = spawn_app().await;
    // Were `data` accepted as an extension name, the stored JSON would hold
    // `data` twice and readers would keep the header's value.
    let response = app
        .post(
            &[
                ("ce-specversion", "1.0"),
                ("ce-id", "forged-1"),
                ("ce-source", "/forger"),
                ("ce-type", "t"),
                ("ce-data", "forged"),
                ("content-type", "application/json"),
            ],
            r#"{"real":1}"#,
        )
        .await;
    let detail = problem_detail(response, 400).await;
    assert!(detail.contains("`data`"), "{detail}");
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn unknown_query_parameters_are_400_naming_them() {
    let app = spawn_app().await;
    for (path, name) in [
        ("/v1/events?filtre=type%20%3D%20%27x%27", "filtre"),
        ("/v1/events?limit=5&sourcee=/a", "sourcee"),
        ("/v1/events/stream?where=true", "where"),
        ("/v1/events/stream?after=0&nope=1", "nope"),
        ("/v1/filters/validate?filter=true&limit=1", "limit"),
    ] {
        let detail = problem_detail(app.get(path).await, 400).await;
        assert!(detail.contains(&format!("`{name}`")), "{path}: {detail}");
    }
}

/// The CloudEvents type system forbids control characters in Strings;
/// PostgreSQL cannot store a NUL at all, so letting one through failed the
/// store's whole group commit.
#[tokio::test]
async fn control_characters_in_attribute_values_are_refused_in_every_mode() {
    let app = spawn_app().await;
    for (name, value) in [
        ("subject", "a\u{0}b"),
        ("id", "\u{1}"),
        ("source", "/s\u{7f}"),
        ("type", "t\u{9f}"),
        ("datacontenttype", "text/plain; x=\u{0}"),
        ("myext", "two\nlines"),
    ] {
        assert_rejected(&app, with(&[(name, json!(value))]), &format!("`{name}`")).await;
    }
    let binary = |subject: &'static str| {
        [
            ("ce-specversion", "1.0"),
            ("ce-id", "b1"),
            ("ce-source", "/s"),
            ("ce-type", "t"),
            ("ce-subject", subject),
        ]
    };
    let detail = problem_detail(app.post(&binary("a%00b"), "").await, 400).await;
    assert!(
        detail.contains("`subject`") && detail.contains("U+0000"),
        "{detail}"
    );
    let detail = problem_detail(app.post(&binary("%C2%85"), "").await, 400).await;
    assert!(detail.contains("U+0085"), "{detail}");
    let poisoned = with(&[("id", json!("2")), ("subject", json!("\u{0}"))]);
    let detail = problem_detail(app.post_batch(&json!([valid(), poisoned])).await, 400).await;
    assert!(detail.contains("batch event 1"), "{detail}");
    assert_nothing_stored(&app).await;
    // What is allowed stays allowed.
    let fine = with(&[("subject", json!("Grüße \u{a0} 日本 😀"))]);
    assert_eq!(app.post_structured(&fine).await.status(), 204);
}

/// Hex digits of random UUIDs: text PostgreSQL cannot compress into an
/// index entry, so a test at the limit is one.
fn incompressible(len: usize) -> String {
    let mut text = String::new();
    while text.len() < len {
        text.push_str(&uuid::Uuid::new_v4().simple().to_string());
    }
    text.truncate(len);
    text
}

/// PostgreSQL refuses a b-tree index entry over 2,704 bytes; both
/// databases refuse (and accept) the same events, on ingest.
#[tokio::test]
async fn indexed_attributes_longer_than_the_index_limit_are_refused_on_both_databases() {
    let app = spawn_app().await;
    let long_subject = with(&[("subject", json!(incompressible(2049)))]);
    let detail = problem_detail(app.post_structured(&long_subject).await, 400).await;
    assert!(
        detail.contains("`subject`") && detail.contains("2048"),
        "{detail}"
    );
    let long_key = with(&[
        ("id", json!(incompressible(1024))),
        ("source", json!(format!("/{}", incompressible(1024)))),
    ]);
    let detail = problem_detail(app.post_structured(&long_key).await, 400).await;
    assert!(detail.contains("`source` and `id`"), "{detail}");
    assert_nothing_stored(&app).await;
    // At the limit: stored, on PostgreSQL too.
    let at_limit = with(&[
        ("id", json!(incompressible(1024))),
        ("source", json!(format!("/{}", incompressible(1023)))),
        ("subject", json!(incompressible(2048))),
    ]);
    assert_eq!(app.post_structured(&at_limit).await.status(), 204);
    assert_eq!(app.events("").await.len(), 1);
}

/// `?subject=%00` reached PostgreSQL, which cannot compare a NUL: a 503.
#[tokio::test]
async fn query_parameters_with_control_characters_are_400() {
    let app = spawn_app().await;
    assert_eq!(app.post_structured(&valid()).await.status(), 204);
    for query in [
        "subject=%00",
        "source=%2Fs%01",
        "type=t%7F",
        "filter=subject%20%3D%20%27a%00%27",
        "filter=subject%20%3D%20%27a%C2%9F%27",
    ] {
        let detail = problem_detail(app.get_events(query).await, 400).await;
        assert!(detail.contains("U+00"), "{query}: {detail}");
        let stream = app.get(&format!("/v1/events/stream?{query}")).await;
        problem_detail(stream, 400).await;
    }
    let detail = problem_detail(
        app.get("/v1/filters/validate?filter=type%20%3D%20%27%00%27")
            .await,
        400,
    )
    .await;
    assert!(detail.contains("U+0000"), "{detail}");
    // White space between tokens is not a value.
    assert_eq!(
        app.events("filter=type%20%3D%20%27t%27%0A%09AND%0D%0Aid%20%3D%20%271%27")
            .await
            .len(),
        1
    );
}
