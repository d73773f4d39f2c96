//! Kafka ingest against the real broker on 127.0.0.1:9092: binary and
//! structured records are stored, anything else goes to the dead-letter
//! topic and consumption goes on.

use crate::helpers::{
    create_topic, create_topic_with, header, produce, producer, producer_with, read_topic,
    spawn_app_with, unique, TestApp,
};
use audit_service::config::{ConsumerSettings, KafkaSettings};
use cloudevents::Event;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use serde_json::json;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

struct KafkaApp {
    app: TestApp,
    topic: String,
    dlq: String,
}

async fn spawn_kafka_app() -> KafkaApp {
    spawn_kafka_app_on(&[]).await
}

/// As `spawn_kafka_app`, the topic created with `topic_config`.
async fn spawn_kafka_app_on(topic_config: &[(&str, &str)]) -> KafkaApp {
    let topic = unique("audit-test");
    let dlq = unique("audit-test-dlq");
    create_topic_with(&topic, 1, topic_config).await;
    create_topic(&dlq, 1).await;
    let (t, d) = (topic.clone(), dlq.clone());
    let app = spawn_app_with(move |s| {
        let mut kafka = KafkaSettings::default();
        kafka.common.topic = t;
        kafka.dlq_topic = d;
        kafka.group_id = unique("audit-test-group");
        s.consumer = ConsumerSettings::Kafka(kafka);
    })
    .await;
    KafkaApp { app, topic, dlq }
}

pub fn binary_headers(id: &str, source: &str) -> OwnedHeaders {
    OwnedHeaders::new()
        .insert(Header {
            key: "ce_specversion",
            value: Some("1.0"),
        })
        .insert(Header {
            key: "ce_id",
            value: Some(id),
        })
        .insert(Header {
            key: "ce_source",
            value: Some(source),
        })
        .insert(Header {
            key: "ce_type",
            value: Some("user.storeUser"),
        })
        .insert(Header {
            key: "ce_subject",
            value: Some("Grüße"),
        })
        .insert(Header {
            key: "content-type",
            value: Some("application/json"),
        })
}

fn structured_headers(content_type: &str) -> OwnedHeaders {
    OwnedHeaders::new().insert(Header {
        key: "content-type",
        value: Some(content_type),
    })
}

#[tokio::test]
async fn the_consumer_lag_of_each_partition_is_a_gauge() {
    let k = spawn_kafka_app().await;
    let p = producer();
    let source = unique("/lag");
    produce(
        &p,
        &k.topic,
        None,
        binary_headers("lag-1", &source),
        Some(b"{}"),
    )
    .await;
    k.app
        .wait_for_events(&format!("source={source}"), 1, WAIT)
        .await;
    // From librdkafka's statistics, every 5 s; once the offset after the
    // stored event is committed the lag is 0.
    let series = format!(
        "audit_kafka_consumer_lag{{topic=\"{}\",partition=\"0\"}} 0",
        k.topic
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = k.app.get("/metrics").await.text().await.unwrap();
        if metrics.contains(&series) {
            assert!(metrics.contains("# HELP audit_kafka_consumer_lag "));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {series} in:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    k.app.stop().await;
}

#[tokio::test]
async fn binary_and_structured_records_are_stored() {
    let k = spawn_kafka_app().await;
    let p = producer();
    let source = unique("/kafka");
    produce(
        &p,
        &k.topic,
        Some("u1"),
        binary_headers("k1", &source),
        Some(br#"{"name":"alice"}"#),
    )
    .await;
    let structured =
        json!({"specversion": "1.0", "id": "k2", "source": source, "type": "t", "data": {"n": 2}});
    produce(
        &p,
        &k.topic,
        None,
        structured_headers("application/cloudevents+json"),
        Some(structured.to_string().as_bytes()),
    )
    .await;
    let upper = json!({"specversion": "0.3", "id": "k3", "source": source, "type": "t"});
    produce(
        &p,
        &k.topic,
        None,
        structured_headers("Application/CloudEvents+JSON; charset=UTF-8"),
        Some(upper.to_string().as_bytes()),
    )
    .await;

    let items = k
        .app
        .wait_for_events(&format!("source={source}"), 3, WAIT)
        .await;
    assert!(items.iter().all(|i| i["transport"] == "kafka"), "{items:?}");
    let event = |n: usize| -> Event { serde_json::from_value(items[n]["event"].clone()).unwrap() };
    assert_eq!(items[0]["event"]["id"], "k1");
    assert_eq!(items[0]["event"]["subject"], "Grüße");
    assert_eq!(items[0]["event"]["data"], json!({"name": "alice"}));
    assert_eq!(
        event(1),
        serde_json::from_value::<Event>(structured).unwrap()
    );
    assert_eq!(event(2), serde_json::from_value::<Event>(upper).unwrap());
    k.app.stop().await;
}

#[tokio::test]
async fn invalid_records_are_dead_lettered_with_the_error_and_consumption_goes_on() {
    let k = spawn_kafka_app().await;
    let p = producer();
    let source = unique("/dlq");
    // A record without headers: not a CloudEvent.
    produce(
        &p,
        &k.topic,
        Some("garbage-key"),
        OwnedHeaders::new(),
        Some(b"garbage"),
    )
    .await;
    // A header without a value (the SDK's binding would panic on it).
    let null_header = OwnedHeaders::new()
        .insert(Header {
            key: "ce_specversion",
            value: Some("1.0"),
        })
        .insert(Header::<&str> {
            key: "ce_id",
            value: None,
        })
        .insert(Header {
            key: "ce_source",
            value: Some(source.as_str()),
        })
        .insert(Header {
            key: "ce_type",
            value: Some("t"),
        });
    produce(&p, &k.topic, Some("null-header"), null_header, Some(b"{}")).await;
    // Structured mode with a null payload (the SDK would panic on it too).
    produce(
        &p,
        &k.topic,
        Some("null-payload"),
        structured_headers("application/cloudevents+json"),
        None,
    )
    .await;
    // Binary mode missing ce_type.
    let no_type = OwnedHeaders::new()
        .insert(Header {
            key: "ce_specversion",
            value: Some("1.0"),
        })
        .insert(Header {
            key: "ce_id",
            value: Some("x"),
        })
        .insert(Header {
            key: "ce_source",
            value: Some(source.as_str()),
        });
    produce(&p, &k.topic, Some("no-type"), no_type, None).await;
    // A ce_data header, which must not replace the payload once stored.
    let forged = binary_headers("forged", &source).insert(Header {
        key: "ce_data",
        value: Some("forged"),
    });
    produce(&p, &k.topic, Some("forged-data"), forged, Some(b"{}")).await;
    // And then a valid event, which must still be stored.
    produce(
        &p,
        &k.topic,
        None,
        binary_headers("after-bad", &source),
        Some(b"{}"),
    )
    .await;

    let items = k
        .app
        .wait_for_events(&format!("source={source}"), 1, WAIT)
        .await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["event"]["id"], "after-bad");

    let dead = read_topic(&k.dlq, 5, WAIT).await;
    let by_key = |key: &str| {
        dead.iter()
            .find(|m| m.key() == Some(key.as_bytes()))
            .unwrap_or_else(|| panic!("no dead letter with key {key}"))
    };
    let garbage = by_key("garbage-key");
    assert_eq!(garbage.payload(), Some(&b"garbage"[..]));
    assert!(header(garbage, "dlq-error")
        .unwrap()
        .contains("not a CloudEvent"));
    assert!(header(garbage, "dlq-origin").unwrap().starts_with(&k.topic));
    let null_header = by_key("null-header");
    assert!(
        header(null_header, "dlq-error").unwrap().contains("ce_id"),
        "{:?}",
        header(null_header, "dlq-error")
    );
    // The original headers travel with the dead letter.
    assert_eq!(
        header(null_header, "ce_specversion").as_deref(),
        Some("1.0")
    );
    let null_payload = by_key("null-payload");
    assert_eq!(null_payload.payload(), None);
    assert!(header(null_payload, "dlq-error")
        .unwrap()
        .contains("payload"));
    assert!(header(by_key("no-type"), "dlq-error")
        .unwrap()
        .contains("`type`"));
    let forged = header(by_key("forged-data"), "dlq-error").unwrap();
    assert!(forged.contains("`data`"), "{forged}");

    // The service survived all of it.
    assert_eq!(k.app.get("/healthz").await.status(), 200);
    assert_eq!(k.app.get("/readyz").await.status(), 200);
    let metrics = k.app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("audit_events_rejected_total{transport=\"kafka\"}"),
        "{metrics}"
    );
    k.app.stop().await;
}

/// librdkafka's default `message.max.bytes`: the dead-letter producer
/// refuses records larger than this, whatever the broker accepts.
const CLIENT_MAX_MESSAGE_BYTES: usize = 1_000_000;

#[tokio::test]
async fn a_record_too_large_to_dead_letter_whole_is_dead_lettered_reduced_and_consumption_goes_on()
{
    // The topic and this producer take records up to 2 MiB; the service's
    // dead-letter producer keeps librdkafka's 1 MB limit.
    let k = spawn_kafka_app_on(&[("max.message.bytes", "2097152")]).await;
    let big = producer_with(&[("message.max.bytes", "2097152")]);
    let source = unique("/too-large");
    let payload = vec![b'x'; 1_050_000];
    let headers = OwnedHeaders::new().insert(Header {
        key: "x-original",
        value: Some("kept only in the full dead letter"),
    });
    produce(&big, &k.topic, Some("too-large"), headers, Some(&payload)).await;
    produce(
        &big,
        &k.topic,
        None,
        binary_headers("after-large", &source),
        Some(b"{}"),
    )
    .await;

    let items = k
        .app
        .wait_for_events(&format!("source={source}"), 1, WAIT)
        .await;
    assert_eq!(items[0]["event"]["id"], "after-large");
    let dead = read_topic(&k.dlq, 1, WAIT).await;
    let reduced = &dead[0];
    assert_eq!(reduced.key(), Some(&b"too-large"[..]));
    assert_eq!(reduced.payload(), None, "the payload was not dropped");
    assert!(header(reduced, "dlq-error")
        .unwrap()
        .contains("not a CloudEvent"));
    assert!(header(reduced, "dlq-origin")
        .unwrap()
        .starts_with(&format!("{}/0/", k.topic)));
    let dropped = header(reduced, "dlq-dropped").expect("dlq-dropped header");
    assert!(dropped.contains("payload"), "{dropped}");
    assert_eq!(header(reduced, "x-original"), None, "original headers kept");
    k.app.stop().await;
}

#[tokio::test]
async fn a_huge_bad_header_gives_a_dead_letter_with_a_bounded_reason_and_consumption_goes_on() {
    let k = spawn_kafka_app().await;
    let p = producer();
    let source = unique("/huge-header");
    // Small payload, but a 600 KB specversion the error message quotes.
    let version = "9".repeat(600_000);
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "ce_specversion",
            value: Some(version.as_str()),
        })
        .insert(Header {
            key: "ce_id",
            value: Some("huge"),
        })
        .insert(Header {
            key: "ce_source",
            value: Some(source.as_str()),
        })
        .insert(Header {
            key: "ce_type",
            value: Some("t"),
        });
    produce(&p, &k.topic, Some("huge-header"), headers, Some(b"{}")).await;
    produce(
        &p,
        &k.topic,
        None,
        binary_headers("after-huge", &source),
        Some(b"{}"),
    )
    .await;

    let items = k
        .app
        .wait_for_events(&format!("source={source}"), 1, WAIT)
        .await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["event"]["id"], "after-huge");
    let dead = read_topic(&k.dlq, 1, WAIT).await;
    let reason = header(&dead[0], "dlq-error").expect("dlq-error header");
    assert!(reason.contains("specversion"), "{}", &reason[..100]);
    // 1 KiB of the message, and a note of how long it was.
    assert!(
        reason.len() <= 1024 + 64,
        "dlq-error is {} bytes",
        reason.len()
    );
    // The dead letter is still whole: it fits, so nothing was dropped.
    assert_eq!(dead[0].payload(), Some(&b"{}"[..]));
    assert_eq!(
        header(&dead[0], "ce_specversion").map(|v| v.len()),
        Some(600_000)
    );
    assert!(dead[0].headers().is_some_and(|h| h
        .iter()
        .map(|h| h.value.map_or(0, <[u8]>::len))
        .sum::<usize>()
        < CLIENT_MAX_MESSAGE_BYTES));
    k.app.stop().await;
}

/// An event the process tests produce in bulk.
pub fn bulk_event(i: usize, source: &str) -> (String, OwnedHeaders, Vec<u8>) {
    let id = format!("e{i}");
    let headers = binary_headers(&id, source);
    (
        format!("user-{}", i % 97),
        headers,
        json!({"n": i}).to_string().into_bytes(),
    )
}

/// Produces `n` events concurrently and waits for every ack.
pub async fn produce_bulk(topic: &str, source: &str, n: usize) {
    use futures::StreamExt;
    let p = producer();
    futures::stream::iter(0..n)
        .map(|i| {
            let p = &p;
            async move {
                let (key, headers, payload) = bulk_event(i, source);
                produce(p, topic, Some(&key), headers, Some(&payload)).await
            }
        })
        .buffer_unordered(2000)
        .collect::<Vec<()>>()
        .await;
}

/// A record with a control character in an attribute, and one the database
/// refuses (here a constraint), used to be retried for ever on PostgreSQL:
/// the partition never moved again. Now both are dead-lettered, the first
/// as sent, the second as the event it was, and the records after them are
/// stored.
#[tokio::test]
async fn records_the_store_cannot_hold_are_dead_lettered_and_consumption_goes_on() {
    let k = spawn_kafka_app().await;
    crate::helpers::refuse_poison_ids(&k.app.database_url).await;
    let p = producer();
    let source = unique("/poison");
    let nul_subject = binary_headers("nul", &source).insert(Header {
        key: "ce_subject",
        value: Some("a\u{0}b"),
    });
    produce(&p, &k.topic, Some("k1"), nul_subject, Some(b"{}")).await;
    let refused = json!({"specversion": "1.0", "id": "poison-1", "source": source, "type": "t"});
    produce(
        &p,
        &k.topic,
        Some("k2"),
        structured_headers("application/cloudevents+json"),
        Some(refused.to_string().as_bytes()),
    )
    .await;
    produce(
        &p,
        &k.topic,
        None,
        binary_headers("after", &source),
        Some(b"{}"),
    )
    .await;

    let items = k
        .app
        .wait_for_events(&format!("source={source}"), 1, WAIT)
        .await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["event"]["id"], "after");
    let dead = read_topic(&k.dlq, 2, WAIT).await;
    let error = |i: usize| header(&dead[i], "dlq-error").unwrap_or_default();
    assert!(error(0).contains("U+0000"), "{}", error(0));
    assert_eq!(dead[0].key(), Some(&b"k1"[..]));
    assert!(error(1).contains("refused"), "{}", error(1));
    assert_eq!(
        header(&dead[1], "dlq-origin").unwrap(),
        format!("{}/0/1", k.topic)
    );
    let event: Event = serde_json::from_slice(dead[1].payload().unwrap()).unwrap();
    assert_eq!(cloudevents::AttributesReader::id(&event), "poison-1");
    k.app.stop().await;
}
