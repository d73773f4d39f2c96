//! The CESQL `filter` parameter: pushed down to SQL or evaluated in the service, paged exactly, refused with a position, and on the live tail.

use crate::helpers::{problem_detail, read_sse_items, spawn_app, TestApp};
use serde_json::{json, Value};
use std::collections::BTreeSet;

fn event(id: &str, ty: &str, subject: Option<&str>, extensions: Value) -> Value {
    let mut event = json!({"specversion": "1.0", "id": id, "source": "/filter", "type": ty});
    if let Some(subject) = subject {
        event["subject"] = subject.into();
    }
    if let Value::Object(extensions) = extensions {
        event.as_object_mut().unwrap().extend(extensions);
    }
    event
}

fn ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|i| i["event"]["id"].as_str().unwrap().to_owned())
        .collect()
}

fn encode(filter: &str) -> String {
    url::form_urlencoded::byte_serialize(filter.as_bytes()).collect()
}

/// The ids of one page of `GET /v1/events?filter=...`.
async fn filtered(app: &TestApp, filter: &str) -> Vec<String> {
    ids(&app.events(&format!("filter={}", encode(filter))).await)
}

async fn store_mixed_events(app: &TestApp) {
    let batch = json!([
        event("1", "user.storeUser", Some("u1"), json!({"tenant": "acme"})),
        event(
            "2",
            "user.updateUser",
            Some("u1"),
            json!({"tenant": "acme"})
        ),
        event(
            "3",
            "user.storeUser",
            Some("u2"),
            json!({"tenant": "globex"})
        ),
        event("4", "user.deleteUser", Some("u1"), json!({})),
        event(
            "5",
            "order.placed",
            None,
            json!({"tenant": "acme", "total": 120})
        ),
        event("6", "user.storeUser", Some("u3"), json!({})),
    ]);
    assert_eq!(app.post_batch(&batch).await.status(), 204);
}

#[tokio::test]
async fn a_filter_sql_runs_alone_selects_exactly_the_matching_events() {
    let app = spawn_app().await;
    store_mixed_events(&app).await;
    assert_eq!(
        filtered(&app, "type = 'user.storeUser'").await,
        ["1", "3", "6"]
    );
    assert_eq!(
        filtered(&app, "type = 'user.storeUser' AND subject IN ('u1', 'u3')").await,
        ["1", "6"]
    );
    assert_eq!(filtered(&app, "'u1' = subject AND id = '4'").await, ["4"]);
    // With the plain parameters too: all of them must hold.
    assert_eq!(
        ids(&app
            .events(&format!(
                "subject=u1&filter={}",
                encode("type = 'user.updateUser'")
            ))
            .await),
        ["2"]
    );
    app.stop().await;
}

#[tokio::test]
async fn a_filter_evaluated_in_the_service_selects_exactly_the_matching_events() {
    let app = spawn_app().await;
    store_mixed_events(&app).await;
    assert_eq!(
        filtered(&app, "type LIKE 'user.%User' AND subject != 'u1'").await,
        ["3", "6"]
    );
    assert_eq!(filtered(&app, "tenant = 'acme'").await, ["1", "2", "5"]);
    assert_eq!(filtered(&app, "EXISTS total AND total > 100").await, ["5"]);
    assert_eq!(
        filtered(&app, "type = 'user.storeUser' OR type = 'order.placed'").await,
        ["1", "3", "5", "6"]
    );
    // Part pushed down, part evaluated.
    assert_eq!(
        filtered(&app, "type = 'user.storeUser' AND UPPER(tenant) = 'GLOBEX'").await,
        ["3"]
    );
    // A runtime error (no `subject`, no `tenant`) is no match, even beside TRUE.
    assert_eq!(
        filtered(&app, "subject = 'none' OR TRUE").await,
        ["1", "2", "3", "4", "6"]
    );
    assert_eq!(filtered(&app, "NOT (tenant = 'acme')").await, ["3"]);
    assert!(filtered(&app, "FALSE").await.is_empty());
    app.stop().await;
}

/// Walks every page of `query` and returns the ids in order, the number
/// of pages, and the number of pages that came back with fewer events than
/// `limit` but a `next_after` to go on from.
async fn walk_pages(app: &TestApp, query: &str, limit: usize) -> (Vec<String>, usize, usize) {
    let mut seen = Vec::new();
    let mut after = 0;
    let mut pages = 0;
    let mut short = 0;
    loop {
        let response = app
            .get_events(&format!("{query}&limit={limit}&after={after}"))
            .await;
        assert_eq!(response.status(), 200);
        let page: Value = response.json().await.unwrap();
        pages += 1;
        let items = page["events"].as_array().unwrap();
        assert!(items.len() <= limit);
        seen.extend(ids(items));
        match page["next_after"].as_i64() {
            Some(next) => {
                // The last seq examined: at or past the last one returned.
                let last_returned = items.last().map_or(after, |i| i["seq"].as_i64().unwrap());
                assert!(
                    next >= last_returned && next > after,
                    "{next} after {after}"
                );
                if items.len() < limit {
                    short += 1;
                }
                after = next;
            }
            None => break,
        }
        assert!(pages < 1000, "paging does not end");
    }
    (seen, pages, short)
}

async fn store_numbered(app: &TestApp, count: usize) {
    for start in (0..count).step_by(1000) {
        let batch: Vec<Value> = (start..count.min(start + 1000))
            .map(|n| event(&format!("n{n}"), "page.item", Some("s"), json!({"n": n})))
            .collect();
        assert_eq!(app.post_batch(&json!(batch)).await.status(), 204);
    }
}

#[tokio::test]
async fn paging_with_an_evaluated_filter_is_exact_across_many_pages() {
    let app = spawn_app().await;
    store_numbered(&app, 700).await;
    let (seen, pages, _) = walk_pages(
        &app,
        &format!("filter={}", encode("n % 7 = 0 AND type LIKE 'page.%'")),
        9,
    )
    .await;
    let expected: Vec<String> = (0..700).step_by(7).map(|n| format!("n{n}")).collect();
    assert_eq!(seen, expected);
    assert!(pages >= 12, "{pages} pages");
    // Pushed down and complete: the same walk, answered by SQL.
    let (seen, _, short) = walk_pages(
        &app,
        &format!("filter={}", encode("type = 'page.item'")),
        64,
    )
    .await;
    assert_eq!(seen.len(), 700);
    assert_eq!(seen.iter().collect::<BTreeSet<_>>().len(), 700);
    assert_eq!(short, 0, "SQL pages are full until the last");
    app.stop().await;
}

#[tokio::test]
async fn a_rare_match_is_found_through_pages_that_each_examine_a_bounded_number_of_rows() {
    let app = spawn_app().await;
    store_numbered(&app, 25_000).await;
    let query = format!("filter={}", encode("n IN (3, 24990)"));
    let (seen, pages, short) = walk_pages(&app, &query, 100).await;
    assert_eq!(seen, ["n3", "n24990"]);
    // 10,000 rows a page: rows 1-10,000, 10,001-20,000 (no match: an empty
    // page that says where to go on), then the rest.
    assert_eq!(pages, 3);
    assert_eq!(short, 2);
    let page: Value = app
        .get_events(&format!("{query}&after=10000"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["events"], json!([]));
    assert_eq!(page["next_after"], 20_000);
    app.stop().await;
}

#[tokio::test]
async fn a_bad_filter_is_a_400_that_points_at_the_position() {
    let app = spawn_app().await;
    for path in ["/v1/events", "/v1/events/stream", "/v1/filters/validate"] {
        let response = app
            .get(&format!("{path}?filter={}", encode("type = 'a' AND (")))
            .await;
        assert_eq!(response.status(), 400, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["column"], 17, "{problem}");
        assert_eq!(problem["offset"], 16, "{problem}");
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            detail.contains("`filter`") && detail.contains("expected an expression"),
            "{detail}"
        );
    }
    // Unknown functions and wrong arities are refused up front, at the call.
    let response = app
        .get(&format!(
            "/v1/events?filter={}",
            encode("tenant = 'a' OR nope(type)")
        ))
        .await;
    let problem: Value = {
        assert_eq!(response.status(), 400);
        response.json().await.unwrap()
    };
    assert_eq!(problem["column"], 17);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("no function NOPE"),
        "{problem}"
    );
    let response = app
        .get(&format!(
            "/v1/filters/validate?filter={}",
            encode("LEFT(id) = 'a'")
        ))
        .await;
    let detail = problem_detail(response, 400).await;
    assert!(detail.contains("LEFT takes 2 arguments, not 1"), "{detail}");
    // Columns count characters.
    let response = app
        .get(&format!(
            "/v1/filters/validate?filter={}",
            encode("'é' = 'e' AND ?")
        ))
        .await;
    let problem: Value = response.json().await.unwrap();
    assert_eq!(
        (problem["column"].clone(), problem["offset"].clone()),
        (json!(15), json!(15))
    );
    let long = format!("type = '{}'", "x".repeat(5000));
    let detail = problem_detail(
        app.get(&format!("/v1/events?filter={}", encode(&long)))
            .await,
        400,
    )
    .await;
    assert!(detail.contains("longer than 4096 bytes"), "{detail}");
    app.stop().await;
}

#[tokio::test]
async fn a_valid_or_empty_filter_validates_with_204_and_reads_nothing() {
    let app = spawn_app().await;
    for filter in ["type LIKE 'user.%' AND subject IN ('a', 'b')", ""] {
        let response = app
            .get(&format!("/v1/filters/validate?filter={}", encode(filter)))
            .await;
        assert_eq!(response.status(), 204, "{filter:?}");
    }
    let detail = problem_detail(app.get("/v1/filters/validate").await, 400).await;
    assert!(detail.contains("filter"), "{detail}");
    app.stop().await;
}

#[tokio::test]
async fn the_stream_sends_only_events_matching_its_filter() {
    let app = spawn_app().await;
    let filter = encode("type LIKE 'sse.%' AND tenant = 'acme'");
    let mut response = app.get(&format!("/v1/events/stream?filter={filter}")).await;
    assert_eq!(response.status(), 200);
    let batch = json!([
        event("a1", "sse.one", Some("s"), json!({"tenant": "acme"})),
        event("x1", "sse.one", Some("s"), json!({"tenant": "globex"})),
        event("x2", "other", Some("s"), json!({"tenant": "acme"})),
        event("x3", "sse.one", None, json!({})),
        event("a2", "sse.two", None, json!({"tenant": "acme"})),
    ]);
    assert_eq!(app.post_batch(&batch).await.status(), 204);
    let marker = event("a3", "sse.marker", Some("s"), json!({"tenant": "acme"}));
    assert_eq!(app.post_structured(&marker).await.status(), 204);
    // In seq order: had a non-matching event been sent, it would come
    // before the marker.
    let items = read_sse_items(&mut response, 3).await;
    assert_eq!(ids(&items), ["a1", "a2", "a3"]);
    app.stop().await;
}

#[tokio::test]
async fn the_stream_replays_the_newest_events_through_its_filter_then_goes_live() {
    let app = spawn_app().await;
    store_numbered(&app, 50).await;
    let filter = encode("n % 10 = 0");
    // The newest 25 stored events are n25..n49, of which n30 and n40 match.
    let mut response = app
        .get(&format!("/v1/events/stream?tail=25&filter={filter}"))
        .await;
    assert_eq!(response.status(), 200);
    let live = event("n50", "page.item", Some("s"), json!({"n": 50}));
    assert_eq!(app.post_structured(&live).await.status(), 204);
    let items = read_sse_items(&mut response, 3).await;
    assert_eq!(ids(&items), ["n30", "n40", "n50"]);

    let detail = problem_detail(app.get("/v1/events/stream?tail=5&after=1").await, 400).await;
    assert!(detail.contains("`tail`"), "{detail}");
    let detail = problem_detail(app.get("/v1/events?tail=5").await, 400).await;
    assert!(detail.contains("`tail`"), "{detail}");
    app.stop().await;
}

#[tokio::test]
async fn an_evaluated_page_stops_at_its_byte_budget_and_goes_on_from_there() {
    let app = spawn_app().await;
    let padding = "x".repeat(900 * 1024);
    for n in 0..20 {
        let mut big = event(&format!("big{n}"), "big", Some("s"), json!({"n": n}));
        big["data"] = json!({ "pad": padding });
        assert_eq!(app.post_structured(&big).await.status(), 204);
    }
    // Each event is about 0.9 MiB of JSON, so the 16 MiB a page may examine
    // hold 18 of them: the first page is empty and says to go on after 18.
    let query = format!("filter={}", encode("n = 19"));
    let page: Value = app.get_events(&query).await.json().await.unwrap();
    assert_eq!(page["events"], json!([]));
    assert_eq!(page["next_after"], 18);
    let (seen, pages, _) = walk_pages(&app, &query, 10).await;
    assert_eq!(seen, ["big19"]);
    assert_eq!(pages, 2);
    app.stop().await;
}

/// A filter sees attributes as they were received and are served: `time`
/// with its offset and digits, the schema URL unparsed (1.0 and 0.3).
#[tokio::test]
async fn a_filter_sees_time_and_the_schema_url_as_stored() {
    let app = spawn_app().await;
    let mut sent = event("t1", "user.storeUser", None, json!({}));
    sent["time"] = "2024-05-01T10:00:00.5+02:00".into();
    sent["dataschema"] = "https://example.com".into();
    let v03 = json!({"specversion": "0.3", "id": "t2", "source": "/filter", "type": "t",
        "schemaurl": "HTTP://Example.com"});
    assert_eq!(app.post_structured(&sent).await.status(), 204);
    assert_eq!(app.post_structured(&v03).await.status(), 204);
    assert_eq!(
        filtered(&app, "time = '2024-05-01T10:00:00.5+02:00'").await,
        ["t1"]
    );
    assert!(filtered(&app, "time = '2024-05-01T08:00:00.500Z'")
        .await
        .is_empty());
    assert_eq!(
        filtered(&app, "dataschema = 'https://example.com'").await,
        ["t1"]
    );
    assert_eq!(
        filtered(&app, "schemaurl = 'HTTP://Example.com'").await,
        ["t2"]
    );
    // What the filter matched is what the API serves.
    let served = app.events("").await;
    assert_eq!(served[0]["event"]["time"], "2024-05-01T10:00:00.5+02:00");
    app.stop().await;
}

/// The filter, 4,096 bytes: CONCAT of 680 ids, matched against a
/// LIKE pattern of 2,039 `_`. The one below keeps its shape but puts the
/// run of `_` between two `%` (the linear matcher's most expensive case),
/// so every event costs tens of thousands of work units.
fn hostile_filter() -> String {
    let filter = format!(
        "CONCAT({}id) LIKE '%{}X%'",
        "id,".repeat(679),
        "_".repeat(2038)
    );
    assert_eq!(filter.len(), 4096);
    filter
}

/// A filter that costs a lot per event gets a short page with a
/// `next_after` (its work budget is spent), never a page that holds a
/// worker for seconds, and paging through it still loses nothing.
#[tokio::test]
async fn an_expensive_filter_gets_short_pages_bounded_by_its_work_budget() {
    let app = spawn_app().await;
    let batch: Vec<Value> = (0..200)
        .map(|n| event(&format!("{n:036}"), "page.item", Some("s"), json!({})))
        .collect();
    assert_eq!(app.post_batch(&json!(batch)).await.status(), 204);
    let query = format!("filter={}", encode(&hostile_filter()));
    let started = std::time::Instant::now();
    let page: Value = app
        .get_events(&format!("{query}&limit=1000"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["events"], json!([]));
    let next = page["next_after"].as_i64().expect("a short page goes on");
    assert!(next > 0 && next < 200, "examined {next} of 200 rows");
    eprintln!("one page: {next} rows examined in {:?}", started.elapsed());
    let (seen, pages, _) = walk_pages(&app, &query, 1000).await;
    assert!(seen.is_empty());
    assert!(pages > 1, "{pages}");
    app.stop().await;
}

/// One event that alone needs more than a page's budget is a 400 on the
/// API and an `event: error` that ends the live tail.
#[tokio::test]
async fn a_filter_too_expensive_for_one_event_is_refused() {
    let app = spawn_app().await;
    // 2 KiB subjects: a CONCAT of 31 of them stays under CESQL's 64 KiB
    // string bound, and LOWER applied to it 60 times over reads and builds
    // 64 KiB each time: five such clauses need more than a page's budget.
    let subject = "s".repeat(2048);
    let clause = format!(
        "{}CONCAT({}subject){} = 'x'",
        "LOWER(".repeat(60),
        "subject,".repeat(30),
        ")".repeat(60)
    );
    let filter = vec![clause; 5].join(" OR ");
    assert!(filter.len() <= 4096, "{}", filter.len());
    let mut response = app
        .get(&format!("/v1/events/stream?filter={}", encode(&filter)))
        .await;
    assert_eq!(response.status(), 200);
    let poisoned = event("big", "t", Some(&subject), json!({}));
    assert_eq!(app.post_structured(&poisoned).await.status(), 204);
    let detail = problem_detail(
        app.get_events(&format!("filter={}", encode(&filter))).await,
        400,
    )
    .await;
    assert!(
        detail.contains("more work on one event (seq 1)"),
        "{detail}"
    );
    let mut text = String::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        while let Ok(Some(chunk)) = response.chunk().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await;
    assert!(
        text.contains("event: error") && text.contains("more work on one event"),
        "{text}"
    );
    app.stop().await;
}

/// `subjekt = 'x'` is valid CESQL that matches nothing: the answer says
/// which names no stored event has had, and the closest one that exists.
#[tokio::test]
async fn a_filter_naming_an_attribute_no_event_has_gets_a_warning() {
    let app = spawn_app().await;
    store_mixed_events(&app).await;
    let warnings = |response: &reqwest::Response| -> Vec<String> {
        response
            .headers()
            .get_all("warning")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    };
    let app = &app;
    let validate = |filter: &str| {
        let path = format!("/v1/filters/validate?filter={}", encode(filter));
        async move { app.get(&path).await }
    };
    let response = validate("subjekt = 'u1' AND tennant = 'acme' AND nosuch = 1").await;
    assert_eq!(response.status(), 204);
    assert_eq!(
        warnings(&response),
        [
            "199 audit-service \"no stored event has the attribute `subjekt`; did you mean `subject`?\"",
            "199 audit-service \"no stored event has the attribute `tennant`; did you mean `tenant`?\"",
            "199 audit-service \"no stored event has the attribute `nosuch`\"",
        ]
    );
    // Context attributes and extensions stored events have: no warning.
    let response = validate("subject = 'u1' AND tenant = 'acme' AND EXISTS dataschema").await;
    assert!(warnings(&response).is_empty(), "{:?}", warnings(&response));
    // The same on the query itself, and on the stream.
    let response = app
        .get_events(&format!("filter={}", encode("subjekt = 'u1'")))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(warnings(&response).len(), 1);
    let response = app
        .get(&format!(
            "/v1/events/stream?filter={}",
            encode("colour = 'red'")
        ))
        .await;
    assert_eq!(warnings(&response).len(), 1);
    // A name recorded once the first event with it is stored.
    let colourful = event("c1", "t", None, json!({"colour": "red"}));
    assert_eq!(app.post_structured(&colourful).await.status(), 204);
    assert!(warnings(&validate("colour = 'red'").await).is_empty());
}
