//! NATS JetStream ingest against the shared server on 127.0.0.1:4222
//! (`scripts/nats.sh start`): binary and structured messages (and the Go
//! SDK's bare payload) are stored, each malformed form goes to the
//! dead-letter subject with the reason, and a dead letter redelivered is
//! kept once. What every broker does alike is in `conformance`.

use crate::helpers::{nats, spawn_app_with, unique, NatsNames, TestApp};
use async_nats::jetstream;
use async_nats::HeaderMap;
use cloudevents::Event;
use futures::StreamExt;
use serde_json::json;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

async fn spawn_nats_app(names: &NatsNames) -> TestApp {
    nats().await;
    let names = names.clone();
    spawn_app_with(move |s| names.apply(s)).await
}

async fn publish(js: &jetstream::Context, subject: &str, headers: HeaderMap, payload: &[u8]) {
    js.publish_with_headers(subject.to_owned(), headers, payload.to_vec().into())
        .await
        .expect("published")
        .await
        .expect("acknowledged");
}

fn headers(list: &[(&str, &str)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in list {
        headers.insert(*name, *value);
    }
    headers
}

#[tokio::test]
async fn binary_and_structured_messages_are_stored_as_nats() {
    let names = NatsNames::new("modes");
    let app = spawn_nats_app(&names).await;
    let js = nats().await;
    names.create_stream(&js).await;
    let source = unique("/nats");
    let binary = headers(&[
        ("ce-specversion", "1.0"),
        ("ce-id", "n1"),
        ("ce-source", &source),
        ("ce-type", "user.storeUser"),
        ("ce-subject", "Gr%C3%BC%C3%9Fe%20du"),
        ("ce-datacontenttype", "application/json"),
    ]);
    publish(&js, &names.subject, binary, br#"{"name":"alice"}"#).await;
    let structured =
        json!({"specversion": "1.0", "id": "n2", "source": source, "type": "t", "data": {"n": 2}});
    publish(
        &js,
        &names.subject,
        headers(&[("Content-Type", "application/cloudevents+json")]),
        structured.to_string().as_bytes(),
    )
    .await;
    // As the Go SDK sends structured mode: the payload, no header at all.
    let bare = json!({"specversion": "0.3", "id": "n3", "source": source, "type": "t"});
    js.publish(names.subject.clone(), bare.to_string().into())
        .await
        .unwrap()
        .await
        .unwrap();

    let items = app
        .wait_for_events(&format!("source={source}"), 3, WAIT)
        .await;
    assert!(items.iter().all(|i| i["transport"] == "nats"), "{items:?}");
    assert_eq!(items[0]["event"]["id"], "n1");
    assert_eq!(items[0]["event"]["subject"], "Grüße du");
    assert_eq!(items[0]["event"]["data"], json!({"name": "alice"}));
    let event = |n: usize| -> Event { serde_json::from_value(items[n]["event"].clone()).unwrap() };
    assert_eq!(
        event(1),
        serde_json::from_value::<Event>(structured).unwrap()
    );
    assert_eq!(event(2), serde_json::from_value::<Event>(bare).unwrap());
    assert_eq!(app.get("/readyz").await.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn invalid_messages_are_dead_lettered_with_the_reason_and_the_next_event_is_stored() {
    let names = NatsNames::new("dlq");
    let app = spawn_nats_app(&names).await;
    let js = nats().await;
    names.create_stream(&js).await;
    let source = unique("/dlq");
    // Garbage: says structured mode, is not JSON.
    publish(
        &js,
        &names.subject,
        headers(&[
            ("Content-Type", "application/cloudevents+json"),
            ("mark", "garbage"),
        ]),
        b"garbage",
    )
    .await;
    // A headerless message: not binary mode, and not a structured event.
    js.publish(names.subject.clone(), r#"{"hello":"world"}"#.into())
        .await
        .unwrap()
        .await
        .unwrap();
    // A null body in structured mode.
    publish(
        &js,
        &names.subject,
        headers(&[
            ("Content-Type", "application/cloudevents+json"),
            ("mark", "null-body"),
        ]),
        b"",
    )
    .await;
    // Binary mode without ce-type, with an original header to keep.
    publish(
        &js,
        &names.subject,
        headers(&[
            ("ce-specversion", "1.0"),
            ("ce-id", "x"),
            ("ce-source", &source),
            ("mark", "no-type"),
        ]),
        b"{}",
    )
    .await;
    // And then a valid event, which must still be stored.
    publish(
        &js,
        &names.subject,
        headers(&[
            ("ce-specversion", "1.0"),
            ("ce-id", "after-bad"),
            ("ce-source", &source),
            ("ce-type", "t"),
        ]),
        b"{}",
    )
    .await;

    let items = app
        .wait_for_events(&format!("source={source}"), 1, WAIT)
        .await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["event"]["id"], "after-bad");

    let dead = read_stream(&js, &names.dlq_stream, 4).await;
    let mark = |m: &async_nats::Message| header(m, "mark");
    let by_mark = |wanted: Option<&str>| {
        dead.iter()
            .find(|m| mark(m).as_deref() == wanted)
            .unwrap_or_else(|| panic!("no dead letter marked {wanted:?}"))
    };
    let garbage = by_mark(Some("garbage"));
    assert_eq!(&garbage.payload[..], b"garbage");
    assert!(header(garbage, "dlq-error")
        .unwrap()
        .contains("malformed JSON"));
    assert!(header(garbage, "dlq-origin")
        .unwrap()
        .starts_with(&format!("{}/{}/", names.stream, names.consumer)));
    let headerless = by_mark(None);
    assert_eq!(&headerless.payload[..], br#"{"hello":"world"}"#);
    assert!(
        header(headerless, "dlq-error")
            .unwrap()
            .contains("specversion"),
        "{:?}",
        header(headerless, "dlq-error")
    );
    let null_body = by_mark(Some("null-body"));
    assert!(null_body.payload.is_empty());
    assert!(header(null_body, "dlq-error").unwrap().contains("payload"));
    let no_type = by_mark(Some("no-type"));
    assert!(header(no_type, "dlq-error").unwrap().contains("`type`"));
    assert_eq!(header(no_type, "ce-id").as_deref(), Some("x"));

    assert_eq!(app.get("/healthz").await.status(), 200);
    // The recorder is the test process's: other NATS tests running at the
    // same time count their dead letters in it too.
    let metrics = app.get("/metrics").await.text().await.unwrap();
    let rejected: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("audit_events_rejected_total{transport=\"nats\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no NATS rejection counter:\n{metrics}"));
    assert!(rejected >= 4, "{metrics}");
    app.stop().await;
}

/// Every message on `stream` from the start, until `n` have come.
pub async fn read_stream(
    js: &jetstream::Context,
    stream: &str,
    n: usize,
) -> Vec<async_nats::Message> {
    let stream = js.get_stream(stream).await.expect("the stream exists");
    let consumer: jetstream::consumer::PullConsumer = stream
        .create_consumer(jetstream::consumer::pull::Config::default())
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut out = Vec::new();
    while out.len() < n {
        let next = tokio::time::timeout(WAIT, messages.next())
            .await
            .unwrap_or_else(|_| panic!("read {} of {n} messages", out.len()))
            .expect("message stream open")
            .expect("message");
        out.push(next.message);
    }
    out
}

fn header(message: &async_nats::Message, name: &str) -> Option<String> {
    message
        .headers
        .as_ref()
        .and_then(|h| h.get(name))
        .map(|v| v.as_str().to_owned())
}

#[tokio::test]
async fn readiness_on_nats_fails_without_a_server_and_the_service_still_serves() {
    let names = NatsNames::new("down");
    let app = spawn_app_with(move |s| {
        names.apply(s);
        // Nothing listens on port 9 of loopback.
        if let audit_service::config::ConsumerSettings::Nats(nats) = &mut s.consumer {
            nats.common.url = "nats://127.0.0.1:9".into();
        }
    })
    .await;
    let response = app.get("/readyz").await;
    assert_eq!(response.status(), 503);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert_eq!(app.get("/healthz").await.status(), 200);
    app.stop().await;
}

/// A message with a control character in an attribute, and one the
/// database refuses (here a constraint), used to be retried for ever on
/// PostgreSQL. Now both are dead-lettered as they arrived, and the messages
/// after them are stored.
#[tokio::test]
async fn messages_the_store_cannot_hold_are_dead_lettered_and_consumption_goes_on() {
    let names = NatsNames::new("poison");
    let app = spawn_nats_app(&names).await;
    let db = app.database_url.clone();
    // The service has migrated its database once it answers.
    crate::helpers::refuse_poison_ids(&db).await;
    let js = nats().await;
    names.create_stream(&js).await;
    let source = unique("/poison");
    let binary = |id: &str, subject: &str| {
        headers(&[
            ("ce-specversion", "1.0"),
            ("ce-id", id),
            ("ce-source", &source),
            ("ce-type", "t"),
            ("ce-subject", subject),
            ("mark", id),
        ])
    };
    publish(&js, &names.subject, binary("nul", "a%00b"), b"{}").await;
    publish(&js, &names.subject, binary("poison-1", "u"), b"{}").await;
    publish(&js, &names.subject, binary("after", "u"), b"{}").await;

    let items = app
        .wait_for_events(&format!("source={source}"), 1, WAIT)
        .await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["event"]["id"], "after");
    let dead = read_stream(&js, &names.dlq_stream, 2).await;
    let by_mark = |wanted: &str| {
        dead.iter()
            .find(|m| header(m, "mark").as_deref() == Some(wanted))
            .unwrap_or_else(|| panic!("no dead letter marked {wanted}"))
    };
    let nul = by_mark("nul");
    assert!(header(nul, "dlq-error").unwrap().contains("U+0000"));
    let refused = by_mark("poison-1");
    assert!(header(refused, "dlq-error").unwrap().contains("refused"));
    assert_eq!(header(refused, "ce-id").as_deref(), Some("poison-1"));
    assert!(header(refused, "dlq-origin")
        .unwrap()
        .starts_with(&format!("{}/{}/", names.stream, names.consumer)));
    app.stop().await;
}
