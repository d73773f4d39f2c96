//! `GET /v1/events` filters and pages; `GET /v1/events/stream` tails.

use crate::helpers::{read_sse_items, spawn_app, unique, within};
use serde_json::{json, Value};
use std::time::Duration;

fn event(id: &str, source: &str, ty: &str, subject: &str) -> Value {
    json!({"specversion": "1.0", "id": id, "source": source, "type": ty, "subject": subject})
}

fn ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|i| i["event"]["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn events_filter_by_source_type_and_subject() {
    let app = spawn_app().await;
    let batch = json!([
        event("1", "/a", "user.storeUser", "u1"),
        event("2", "/a", "user.updateUser", "u1"),
        event("3", "/b", "user.storeUser", "u2"),
        event("4", "/b", "user.deleteUser", "u1"),
    ]);
    assert_eq!(app.post_batch(&batch).await.status(), 204);

    assert_eq!(ids(&app.events("source=/a").await), ["1", "2"]);
    assert_eq!(ids(&app.events("type=user.storeUser").await), ["1", "3"]);
    assert_eq!(ids(&app.events("subject=u1").await), ["1", "2", "4"]);
    assert_eq!(ids(&app.events("source=/b&subject=u1").await), ["4"]);
    assert!(app.events("source=/c").await.is_empty());
}

#[tokio::test]
async fn events_page_by_seq_with_next_after() {
    let app = spawn_app().await;
    let batch: Vec<Value> = (0..5)
        .map(|i| event(&i.to_string(), "/p", "t", "s"))
        .collect();
    assert_eq!(app.post_batch(&json!(batch)).await.status(), 204);

    let mut seen = Vec::new();
    let mut after = 0;
    let mut pages = 0;
    loop {
        let page: Value = app
            .get_events(&format!("limit=2&after={after}"))
            .await
            .json()
            .await
            .unwrap();
        pages += 1;
        let items = page["events"].as_array().unwrap();
        seen.extend(ids(items));
        match page["next_after"].as_i64() {
            Some(next) => {
                assert_eq!(Some(next), items.last().and_then(|i| i["seq"].as_i64()));
                after = next;
            }
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(seen, ["0", "1", "2", "3", "4"]);
    assert_eq!(pages, 3);
    // Ordered by seq, increasing.
    let all = app.events("").await;
    let seqs: Vec<i64> = all.iter().map(|i| i["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
}

#[tokio::test]
async fn the_stream_delivers_a_newly_stored_event_that_matches_its_filter() {
    let app = spawn_app().await;
    let source = unique("/sse");
    let mut response = app.get(&format!("/v1/events/stream?source={source}")).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));

    // Not matching the filter, then matching.
    let other = event("x", "/other", "t", "s");
    assert_eq!(app.post_structured(&other).await.status(), 204);
    let wanted = event("y", &source, "t", "s");
    assert_eq!(app.post_structured(&wanted).await.status(), 204);

    let items = read_sse_items(&mut response, 1).await;
    assert_eq!(items.len(), 1, "no SSE event within 10 s");
    let item = &items[0];
    assert_eq!(item["event"]["id"], "y");
    assert_eq!(item["event"]["source"], source.as_str());
    assert_eq!(item["transport"], "http");
    assert!(item["seq"].as_i64().is_some() && item["received_at"].is_string());
    app.stop().await;
}

#[tokio::test]
async fn healthz_readyz_and_metrics_answer() {
    let app = spawn_app().await;
    assert_eq!(app.get("/healthz").await.status(), 200);
    assert_eq!(app.get("/readyz").await.status(), 200);
    let event = event("m1", "/metrics", "t", "s");
    assert_eq!(app.post_structured(&event).await.status(), 204);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("audit_events_stored_total"), "{metrics}");
    assert!(metrics.contains("audit_commit_batch_events"), "{metrics}");
    let families = service_kit::telemetry::metric_families(&metrics);
    for (name, kind) in [
        ("http_requests_total", "counter"),
        ("http_request_duration_seconds", "histogram"),
        ("audit_events_stored_total", "counter"),
        ("audit_events_duplicate_total", "counter"),
        ("audit_events_rejected_total", "counter"),
        ("audit_commit_batch_events", "histogram"),
        ("audit_commit_duration_seconds", "histogram"),
    ] {
        let (found, _) = families
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing: {metrics}"));
        assert_eq!(found, kind, "{name}");
    }
    for (name, (kind, help)) in &families {
        assert!(help, "{name} has no # HELP line");
        assert_ne!(kind, "summary", "{name} is a summary");
    }
    // The series count what happened (tests in this process share the
    // recorder, so at least what this test did).
    let sample = |series: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(series))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let posts = "http_requests_total{method=\"POST\",path=\"/\",status=\"204\"}";
    assert!(sample(posts) >= 1.0, "{posts}: {metrics}");
    assert!(
        sample("audit_commit_batch_events_count") >= 1.0,
        "{metrics}"
    );
    // Counted once the event's line is logged, just after the 204.
    let stored = "audit_events_stored_total{transport=\"http\"}";
    let counted = within(Duration::from_secs(10), || async {
        let metrics = app.get("/metrics").await.text().await.unwrap();
        metrics
            .lines()
            .filter(|l| l.starts_with(stored))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
            >= 1.0
    })
    .await;
    assert!(counted.is_some(), "{stored} never counted the event");
}

#[tokio::test]
async fn readyz_is_503_when_the_brokers_are_unreachable() {
    let app = crate::helpers::spawn_app_with(|s| {
        let mut kafka = audit_service::config::KafkaSettings::default();
        // Nothing listens on port 1.
        kafka.common.brokers = "127.0.0.1:1".into();
        kafka.common.topic = unique("unreachable");
        s.consumer = audit_service::config::ConsumerSettings::Kafka(kafka);
    })
    .await;
    let detail = crate::helpers::problem_detail(app.get("/readyz").await, 503).await;
    assert!(detail.contains("Kafka"), "{detail}");
    // HTTP ingest still works without the broker.
    let event = event("r1", "/r", "t", "s");
    assert_eq!(app.post_structured(&event).await.status(), 204);
    app.stop().await;
}

#[tokio::test]
async fn the_stream_replays_after_last_event_id_then_goes_live_without_gap_or_repeat() {
    let app = spawn_app().await;
    let batch: Vec<Value> = (0..5)
        .map(|i| event(&format!("r{i}"), "/replay", "t", "s"))
        .collect();
    assert_eq!(app.post_batch(&json!(batch)).await.status(), 204);
    let stored = app.events("").await;
    let second_seq = stored[1]["seq"].as_i64().unwrap();

    // Resume after the second event, as a reconnecting EventSource does.
    let mut response = app
        .client
        .get(format!("{}/v1/events/stream?source=/replay", app.address))
        .header("Last-Event-ID", second_seq.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let live = event("r5", "/replay", "t", "s");
    assert_eq!(app.post_structured(&live).await.status(), 204);

    let items = read_sse_items(&mut response, 4).await;
    assert_eq!(ids(&items), ["r2", "r3", "r4", "r5"]);
    app.stop().await;
}

#[tokio::test]
async fn a_page_stops_at_its_byte_budget_and_next_after_continues_exactly() {
    let app = spawn_app().await;
    let large = "x".repeat(500_000);
    for i in 0..12 {
        let event = json!({"specversion": "1.0", "id": format!("big{i}"), "source": "/big", "type": "t", "data": large});
        assert_eq!(app.post_structured(&event).await.status(), 204);
    }
    let mut seen = Vec::new();
    let mut after = 0;
    let mut pages = 0;
    loop {
        let response = app.get_events(&format!("limit=1000&after={after}")).await;
        assert_eq!(response.status(), 200);
        let body = response.bytes().await.unwrap();
        // 4 MiB of events, and the page's own few bytes around them.
        assert!(
            body.len() <= 4 * 1024 * 1024 + 4096,
            "a page of {} bytes",
            body.len()
        );
        let page: Value = serde_json::from_slice(&body).unwrap();
        let items = page["events"].as_array().unwrap();
        assert!(!items.is_empty());
        seen.extend(ids(items));
        pages += 1;
        match page["next_after"].as_i64() {
            Some(next) => {
                assert_eq!(Some(next), items.last().and_then(|i| i["seq"].as_i64()));
                after = next;
            }
            None => break,
        }
        assert!(pages < 12, "paging does not end");
    }
    let expected: Vec<String> = (0..12).map(|i| format!("big{i}")).collect();
    assert_eq!(seen, expected);
    assert!(pages >= 2, "one page held all 6 MB");
    app.stop().await;
}

#[tokio::test]
async fn next_after_is_null_on_the_last_page_even_when_it_is_full() {
    let app = spawn_app().await;
    let batch: Vec<Value> = (0..4)
        .map(|i| event(&i.to_string(), "/full", "t", "s"))
        .collect();
    assert_eq!(app.post_batch(&json!(batch)).await.status(), 204);
    let page: Value = app.get_events("limit=2").await.json().await.unwrap();
    assert!(page["next_after"].is_i64());
    let after = page["next_after"].as_i64().unwrap();
    let page: Value = app
        .get_events(&format!("limit=2&after={after}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ids(page["events"].as_array().unwrap()), ["2", "3"]);
    assert!(page["next_after"].is_null(), "{page}");
    app.stop().await;
}
