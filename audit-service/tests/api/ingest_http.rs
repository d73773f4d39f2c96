//! `POST /` accepts the three content modes in both specversions and stores
//! each event once.

use crate::helpers::{spawn_app, unique};
use cloudevents::{Event, EventBuilder, EventBuilderV03, EventBuilderV10};
use cloudevents_wire::binding::to_http_binary;
use serde_json::{json, Value};

fn stored_event(item: &Value) -> Event {
    serde_json::from_value(item["event"].clone()).expect("stored event is a CloudEvent")
}

#[tokio::test]
async fn binary_mode_event_is_stored_and_served_back_unchanged() {
    let app = spawn_app().await;
    let source = unique("/binary");
    let sent = EventBuilderV10::new()
        .id("b-1")
        .source(source.as_str())
        .ty("user.storeUser")
        .subject("42")
        .time("2024-05-01T10:00:00.123Z")
        .extension("partitionkey", "42")
        .data("application/json", json!({"id": "42", "name": "alice"}))
        .build()
        .unwrap();
    let (headers, body) = to_http_binary(&sent);
    let response = app
        .client
        .post(format!("{}/", app.address))
        .headers(headers)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);

    let items = app.events(&format!("source={source}")).await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["transport"], "http");
    assert!(items[0]["seq"].as_i64().is_some());
    assert!(items[0]["received_at"].as_str().is_some());
    // The event is served as a JSON object (not a string), data as JSON.
    assert_eq!(
        items[0]["event"]["data"],
        json!({"id": "42", "name": "alice"})
    );
    assert_eq!(stored_event(&items[0]), sent);
}

#[tokio::test]
async fn percent_encoded_binary_headers_are_decoded() {
    let app = spawn_app().await;
    let source = unique("/percent");
    let response = app
        .post(
            &[
                ("ce-specversion", "1.0"),
                ("ce-id", "id%20with%25"),
                ("ce-source", source.as_str()),
                ("ce-type", "t"),
                ("ce-subject", "say%20%22hi%22%20Gr%C3%BC%C3%9Fe%20%E2%82%AC"),
                ("content-type", "text/plain"),
            ],
            "hello",
        )
        .await;
    assert_eq!(response.status(), 204);
    let items = app.events(&format!("source={source}")).await;
    assert_eq!(items[0]["event"]["id"], "id with%");
    assert_eq!(items[0]["event"]["subject"], "say \"hi\" Grüße €");
    assert_eq!(items[0]["event"]["data"], "hello");
}

#[tokio::test]
async fn structured_events_of_both_specversions_are_stored_unchanged() {
    let app = spawn_app().await;
    let source = unique("/structured");
    let v10 = json!({
        "specversion": "1.0", "id": "s-1", "source": source, "type": "t",
        "datacontenttype": "application/octet-stream", "data_base64": "AAECAw==",
        "comexampleext": "x", "count": 3, "flag": true
    });
    let v03 = json!({
        "specversion": "0.3", "id": "s-2", "source": source, "type": "t",
        "subject": "s", "time": "2024-05-01T10:00:00Z", "datacontenttype": "text/plain",
        "data": "plain text", "schemaurl": "https://example.com/schema"
    });
    for event in [&v10, &v03] {
        // Media type parameters and case don't change the mode.
        let response = app
            .post(
                &[(
                    "content-type",
                    "Application/CloudEvents+JSON; charset=utf-8",
                )],
                event.to_string(),
            )
            .await;
        assert_eq!(response.status(), 204, "{event}");
    }
    let items = app.events(&format!("source={source}")).await;
    assert_eq!(items.len(), 2);
    for (item, sent) in items.iter().zip([v10, v03]) {
        let sent: Event = serde_json::from_value(sent).unwrap();
        assert_eq!(stored_event(item), sent);
    }
}

#[tokio::test]
async fn time_and_dataschema_are_served_as_they_were_sent_in_every_mode() {
    let app = spawn_app().await;
    let source = unique("/as-sent");
    let structured = json!({
        "specversion": "1.0", "id": "t-1", "source": source, "type": "t",
        "time": "2026-11-26T10:30:00.1+01:00", "dataschema": "HTTP://Example.com"
    });
    assert_eq!(app.post_structured(&structured).await.status(), 204);
    let batch = json!([{
        "specversion": "1.0", "id": "t-2", "source": source, "type": "t",
        "time": "2026-11-26T09:30:00.1Z"
    }]);
    assert_eq!(app.post_batch(&batch).await.status(), 204);
    let binary = app
        .post(
            &[
                ("ce-specversion", "1.0"),
                ("ce-id", "t-3"),
                ("ce-source", source.as_str()),
                ("ce-type", "t"),
                ("ce-time", "2026-11-26T04:30:00-05:00"),
            ],
            "",
        )
        .await;
    assert_eq!(binary.status(), 204);

    let items = app.events(&format!("source={source}")).await;
    let sent: Vec<(&str, &str)> = items
        .iter()
        .map(|i| {
            (
                i["event"]["id"].as_str().unwrap(),
                i["event"]["time"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        sent,
        [
            ("t-1", "2026-11-26T10:30:00.1+01:00"),
            ("t-2", "2026-11-26T09:30:00.1Z"),
            ("t-3", "2026-11-26T04:30:00-05:00"),
        ]
    );
    assert_eq!(items[0]["event"]["dataschema"], "HTTP://Example.com");
}

#[tokio::test]
async fn a_batch_is_stored_in_order_and_an_empty_batch_stores_nothing() {
    let app = spawn_app().await;
    let source = unique("/batch");
    let batch: Vec<Value> = (0..3)
        .map(|i| json!({"specversion": "1.0", "id": format!("e{i}"), "source": source, "type": "t", "data": {"n": i}}))
        .collect();
    assert_eq!(app.post_batch(&json!(batch)).await.status(), 204);
    assert_eq!(app.post_batch(&json!([])).await.status(), 204);

    let items = app.events(&format!("source={source}")).await;
    let ids: Vec<&str> = items
        .iter()
        .map(|i| i["event"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["e0", "e1", "e2"]);
    assert_eq!(items[2]["event"]["data"], json!({"n": 2}));
    assert_eq!(app.events("").await.len(), 3);
}

#[tokio::test]
async fn a_v03_binary_event_is_stored() {
    let app = spawn_app().await;
    let source = unique("/v03");
    let sent = EventBuilderV03::new()
        .id("v03-1")
        .source(source.as_str())
        .ty("t")
        .data("application/json", json!({"a": 1}))
        .build()
        .unwrap();
    let (headers, body) = to_http_binary(&sent);
    let response = app
        .client
        .post(format!("{}/", app.address))
        .headers(headers)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let items = app.events(&format!("source={source}")).await;
    assert_eq!(items[0]["event"]["specversion"], "0.3");
    assert_eq!(stored_event(&items[0]), sent);
}

#[tokio::test]
async fn a_duplicate_is_acknowledged_and_stored_once() {
    let app = spawn_app().await;
    let source = unique("/dup");
    let event = json!({"specversion": "1.0", "id": "same", "source": source, "type": "t"});
    for _ in 0..3 {
        assert_eq!(app.post_structured(&event).await.status(), 204);
    }
    // The same (source, id) in binary mode and inside a batch, too.
    let response = app
        .post(
            &[
                ("ce-specversion", "1.0"),
                ("ce-id", "same"),
                ("ce-source", source.as_str()),
                ("ce-type", "t"),
            ],
            "",
        )
        .await;
    assert_eq!(response.status(), 204);
    assert_eq!(app.post_batch(&json!([event, event])).await.status(), 204);

    assert_eq!(app.events(&format!("source={source}")).await.len(), 1);
    // The same id from another source is another event.
    let other =
        json!({"specversion": "1.0", "id": "same", "source": format!("{source}-2"), "type": "t"});
    assert_eq!(app.post_structured(&other).await.status(), 204);
    assert_eq!(app.events("").await.len(), 2);
}

#[tokio::test]
async fn two_hundred_concurrent_requests_are_all_stored() {
    let app = spawn_app().await;
    let source = unique("/concurrent");
    let requests = (0..200).map(|i| {
        let event =
            json!({"specversion": "1.0", "id": format!("c{i}"), "source": source, "type": "t"});
        let app = &app;
        async move { app.post_structured(&event).await.status() }
    });
    let statuses = futures::future::join_all(requests).await;
    assert!(statuses.iter().all(|s| *s == 204), "{statuses:?}");
    let items = app.events(&format!("source={source}&limit=1000")).await;
    assert_eq!(items.len(), 200);
}

/// One INSERT per group commit: an event the database refused used to fail
/// every request sharing the commit with 503. Now only its own request
/// fails, with 422, and a batch's other events are stored.
#[tokio::test]
async fn an_event_the_database_refuses_fails_alone_and_the_requests_sharing_its_commit_are_stored()
{
    let app = spawn_app().await;
    crate::helpers::refuse_poison_ids(&app.database_url).await;
    let source = unique("/shared-commit");
    let event = |id: String| json!({"specversion": "1.0", "id": id, "source": source, "type": "t"});
    // Many at once, so that they share commits with the refused ones.
    let requests = (0..80).map(|i| {
        let id = if i % 10 == 3 {
            format!("poison-{i}")
        } else {
            format!("ok-{i}")
        };
        let body = event(id.clone());
        let app = &app;
        async move { (id, app.post_structured(&body).await.status().as_u16()) }
    });
    for (id, status) in futures::future::join_all(requests).await {
        let expected = if id.starts_with("poison") { 422 } else { 204 };
        assert_eq!(status, expected, "{id}");
    }
    let batch = json!([
        event("b-0".into()),
        event("poison-b".into()),
        event("b-2".into())
    ]);
    let response = app.post_batch(&batch).await;
    let detail = crate::helpers::problem_detail(response, 422).await;
    assert!(detail.contains("batch event 1"), "{detail}");
    let stored = app.events(&format!("source={source}&limit=1000")).await;
    assert_eq!(stored.len(), 72 + 2);
    assert!(stored
        .iter()
        .all(|item| !item["event"]["id"].as_str().unwrap().starts_with("poison")));
}
