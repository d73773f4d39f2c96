//! Fuzz targets for every decoder the services own, as property-based tests
//! on a stable compiler: inputs are the interop conformance vectors, mutated,
//! plus generated ones, and each target states what must hold for any input
//! (no panic, and what is accepted survives a round trip).
//!
//! proptest rather than cargo-fuzz: libFuzzer needs a nightly compiler,
//! which this toolchain doesn't have; proptest runs on stable and shrinks a
//! failing input to a small one.

use cloudevents_wire::binding::mqtt::{MqttContent, MqttMessage};
use cloudevents_wire::binding::{
    decode_header_value, encode_header_value, is_cloudevents_media_type, BinaryMessage,
};
use cloudevents_wire::decode;
use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
use serde_json::Value;
use std::time::{Duration, Instant};

const VALID_HTTP: &str = include_str!("../../interop/conformance/valid-http.json");
const INVALID_HTTP: &str = include_str!("../../interop/conformance/invalid-http.json");
const INVALID_KAFKA: &str = include_str!("../../interop/conformance/invalid-kafka.json");

/// One decoder under test.
pub struct Target {
    pub name: &'static str,
    run: fn(&mut TestRunner) -> Result<(), String>,
}

/// Every target, in the order `make fuzz` runs them.
pub fn targets() -> Vec<Target> {
    vec![
        Target {
            name: "http-binary",
            run: |r| check(r, http_binary_input(), http_binary),
        },
        Target {
            name: "percent-encoding",
            run: |r| check(r, any::<String>(), percent_round_trip),
        },
        Target {
            name: "structured",
            run: |r| check(r, structured_input(), structured),
        },
        Target {
            name: "batch",
            run: |r| check(r, batch_input(), batch),
        },
        Target {
            name: "kafka-record",
            run: |r| check(r, kafka_input(), kafka_record),
        },
        Target {
            name: "nats-message",
            run: |r| check(r, nats_input(), nats_message),
        },
        Target {
            name: "mqtt-message",
            run: |r| check(r, mqtt_input(), mqtt_message),
        },
        Target {
            name: "time",
            run: |r| check(r, time_input(), time),
        },
        Target {
            name: "media-type",
            run: |r| check(r, media_type_input(), media_type),
        },
    ]
}

/// What one target did within its time.
#[derive(Debug)]
pub struct Report {
    pub name: &'static str,
    pub cases: u64,
    /// The shrunk failing input and the reason, if one failed.
    pub failure: Option<String>,
}

/// Cases per round: each round is a fresh runner with its own seed.
const ROUND: u32 = 256;

impl Target {
    /// Runs rounds of `ROUND` cases until `budget` is spent (at least one
    /// round), stopping at the first failure. `seed` makes runs repeatable.
    pub fn fuzz(&self, budget: Duration, seed: u64) -> Report {
        let deadline = Instant::now() + budget;
        let mut cases = 0;
        let mut round: u64 = 0;
        loop {
            let mut runner = runner(seed, round, ROUND);
            if let Err(failure) = (self.run)(&mut runner) {
                return Report {
                    name: self.name,
                    cases: cases + u64::from(ROUND),
                    failure: Some(failure),
                };
            }
            cases += u64::from(ROUND);
            round += 1;
            if Instant::now() >= deadline {
                return Report {
                    name: self.name,
                    cases,
                    failure: None,
                };
            }
        }
    }
}

fn runner(seed: u64, round: u64, cases: u32) -> TestRunner {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    bytes[8..16].copy_from_slice(&round.to_le_bytes());
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 2048,
        ..Config::default()
    };
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes))
}

fn check<S: Strategy>(
    runner: &mut TestRunner,
    strategy: S,
    property: fn(S::Value) -> Result<(), TestCaseError>,
) -> Result<(), String> {
    runner.run(&strategy, property).map_err(|e| match e {
        TestError::Fail(reason, input) => format!("{reason}\ninput: {input:?}"),
        TestError::Abort(reason) => format!("aborted: {reason}"),
    })
}

// Seeds from the conformance vectors

fn valid_events() -> Vec<Value> {
    let vectors: Value = serde_json::from_str(VALID_HTTP).unwrap_or_default();
    vectors["events"]
        .as_array()
        .map(|events| events.iter().map(|e| e["event"].clone()).collect())
        .unwrap_or_default()
}

fn valid_batches() -> Vec<Value> {
    let vectors: Value = serde_json::from_str(VALID_HTTP).unwrap_or_default();
    vectors["batches"]
        .as_array()
        .map(|batches| batches.iter().map(|b| b["batch"].clone()).collect())
        .unwrap_or_default()
}

fn invalid_http() -> Vec<Value> {
    serde_json::from_str::<Value>(INVALID_HTTP)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

/// The JSON bodies of every vector, valid and not, as bytes.
fn json_seeds() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = valid_events()
        .iter()
        .map(|e| e.to_string().into_bytes())
        .collect();
    seeds.extend(invalid_http().iter().map(|v| match &v["body"] {
        Value::String(s) => s.clone().into_bytes(),
        body => body.to_string().into_bytes(),
    }));
    seeds
}

/// The HTTP binary-mode requests: every valid event as `ce-` headers, and
/// the invalid vectors' headers.
fn binary_seeds() -> Vec<BinaryInput> {
    let mut seeds = Vec::new();
    for event in valid_events() {
        let Value::Object(map) = event else { continue };
        let mut headers = Vec::new();
        let mut body = Vec::new();
        for (name, value) in map {
            let text = match &value {
                Value::String(s) => s.clone(),
                Value::Null => continue,
                other => other.to_string(),
            };
            match name.as_str() {
                "data" => body = text.into_bytes(),
                "datacontenttype" => headers.push(("content-type".into(), text.into_bytes())),
                _ => headers.push((
                    format!("ce-{name}"),
                    encode_header_value(&text).into_bytes(),
                )),
            }
        }
        seeds.push((headers, body));
    }
    for vector in invalid_http() {
        let Some(headers) = vector["headers"].as_object() else {
            continue;
        };
        let headers = headers
            .iter()
            .map(|(k, v)| {
                (
                    k.to_ascii_lowercase(),
                    v.as_str().unwrap_or_default().as_bytes().to_vec(),
                )
            })
            .collect();
        let body = match &vector["body"] {
            Value::String(s) => s.clone().into_bytes(),
            Value::Null => Vec::new(),
            body => body.to_string().into_bytes(),
        };
        seeds.push((headers, body));
    }
    seeds
}

type KafkaInput = (Vec<(String, Option<Vec<u8>>)>, Option<Vec<u8>>);

fn kafka_seeds() -> Vec<KafkaInput> {
    let vectors: Vec<Value> = serde_json::from_str(INVALID_KAFKA).unwrap_or_default();
    let mut seeds: Vec<KafkaInput> = vectors
        .iter()
        .map(|v| {
            let headers = v["headers"]
                .as_array()
                .map(|hs| {
                    hs.iter()
                        .map(|h| {
                            let key = h[0].as_str().unwrap_or_default().to_owned();
                            let value = h[1].as_str().map(|s| s.as_bytes().to_vec());
                            (key, value)
                        })
                        .collect()
                })
                .unwrap_or_default();
            let value = match &v["value"] {
                Value::Null => None,
                Value::String(s) => Some(s.clone().into_bytes()),
                other => Some(other.to_string().into_bytes()),
            };
            (headers, value)
        })
        .collect();
    // The valid events, in both Kafka modes.
    for (headers, body) in binary_seeds() {
        let headers = headers
            .into_iter()
            .map(|(k, v)| (k.replacen("ce-", "ce_", 1), Some(v)))
            .collect();
        seeds.push((headers, Some(body)));
    }
    for event in valid_events() {
        seeds.push((
            vec![(
                "content-type".into(),
                Some(b"application/cloudevents+json".to_vec()),
            )],
            Some(event.to_string().into_bytes()),
        ));
    }
    seeds
}

// Mutation

/// Fragments that tend to reach corners of JSON, percent-decoding and the
/// attribute checks.
const TOKENS: &[&str] = &[
    "\"",
    "\\",
    "\\u0000",
    "\\ud800",
    "%",
    "%2",
    "%zz",
    "%C3%28",
    "%E2%82%AC",
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "null",
    "true",
    "1e999",
    "-0",
    "18446744073709551616",
    "\"specversion\":\"0.3\"",
    "\"specversion\":\"1.0\"",
    "\"data_base64\":\"!!\"",
    "\"data\":",
    "\"time\":\"",
    "Z",
    "+25:00",
    "T",
    "\u{fffd}",
    "é",
    "\u{0}",
    " ",
    "application/cloudevents+json",
    "application/cloudevents-batch+json",
    "text/plain;charset=",
];

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Token(usize, &'static str),
    Delete(usize, usize),
    Repeat(usize, usize, u8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>(), proptest::sample::select(TOKENS)).prop_map(|(i, t)| Mutation::Token(i, t)),
        (any::<usize>(), 1usize..16).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (any::<usize>(), 1usize..64, 1u8..8).prop_map(|(i, n, k)| Mutation::Repeat(i, n, k)),
    ]
}

fn apply(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let at = |i: usize, len: usize| if len == 0 { 0 } else { i % (len + 1) };
        match m {
            Mutation::Flip(i, b) if !bytes.is_empty() => {
                let i = i % bytes.len();
                bytes[i] ^= b;
            }
            Mutation::Flip(..) => {}
            Mutation::Insert(i, b) => {
                let i = at(*i, bytes.len());
                bytes.splice(i..i, b.iter().copied());
            }
            Mutation::Token(i, t) => {
                let i = at(*i, bytes.len());
                bytes.splice(i..i, t.bytes());
            }
            Mutation::Delete(i, n) => {
                let i = at(*i, bytes.len());
                let end = (i + n).min(bytes.len());
                bytes.drain(i..end);
            }
            Mutation::Repeat(i, n, k) => {
                let i = at(*i, bytes.len());
                let end = (i + n).min(bytes.len());
                let chunk = bytes[i..end].to_vec();
                for _ in 0..*k {
                    bytes.splice(end..end, chunk.iter().copied());
                }
            }
        }
    }
    bytes
}

/// A seed with a few mutations applied.
fn mutated(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::sample::select(seeds),
        proptest::collection::vec(mutation(), 0..6),
    )
        .prop_map(|(seed, mutations)| apply(seed, &mutations))
}

/// An attribute value: one from the vectors, or a generated one.
fn attribute_value() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(vec![
            "1.0",
            "0.3",
            "https://cloudevents.io",
            "/s",
            "io.cloudevents.test",
            "2018-04-05T17:31:00Z",
            "application/json",
            "text/plain",
            "",
        ])
        .prop_map(str::to_owned),
        any::<String>(),
        "[ -~]{0,40}",
    ]
}

fn attribute_name() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(vec![
            "specversion",
            "id",
            "source",
            "type",
            "time",
            "subject",
            "dataschema",
            "schemaurl",
            "datacontenttype",
            "datacontentencoding",
            "data",
            "data_base64",
            "comexampleext",
            "traceparent",
        ])
        .prop_map(str::to_owned),
        "[a-z0-9]{1,10}",
        "[ -~]{0,12}",
    ]
}

/// A JSON event built from attribute names and values, some of them odd.
fn generated_event() -> impl Strategy<Value = Value> {
    let value = prop_oneof![
        4 => attribute_value().prop_map(Value::String),
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<bool>().prop_map(Value::Bool),
        1 => Just(Value::Null),
        1 => any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        1 => Just(serde_json::json!({"nested": [1, "x"]})),
    ];
    proptest::collection::vec((attribute_name(), value), 0..10).prop_map(|pairs| {
        let mut map = serde_json::Map::new();
        map.insert("specversion".into(), "1.0".into());
        map.insert("id".into(), "1".into());
        map.insert("source".into(), "/s".into());
        map.insert("type".into(), "t".into());
        for (name, value) in pairs {
            map.insert(name, value);
        }
        Value::Object(map)
    })
}

// Inputs

fn structured_input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        mutated(json_seeds()),
        generated_event().prop_map(|v| v.to_string().into_bytes()),
    ]
}

fn batch_input() -> impl Strategy<Value = Vec<u8>> {
    let seeds: Vec<Vec<u8>> = valid_batches()
        .iter()
        .map(|b| b.to_string().into_bytes())
        .collect();
    prop_oneof![
        mutated(seeds),
        proptest::collection::vec(generated_event(), 0..6)
            .prop_map(|events| Value::Array(events).to_string().into_bytes()),
    ]
}

type BinaryInput = (Vec<(String, Vec<u8>)>, Vec<u8>);

fn http_binary_input() -> impl Strategy<Value = BinaryInput> {
    let seeded = (
        proptest::sample::select(binary_seeds()),
        proptest::collection::vec(
            (
                any::<prop::sample::Index>(),
                proptest::collection::vec(mutation(), 1..4),
            ),
            0..4,
        ),
        proptest::collection::vec(
            (
                attribute_name(),
                attribute_value().prop_map(String::into_bytes),
            ),
            0..3,
        ),
    )
        .prop_map(|((mut headers, body), changes, extra)| {
            for (index, mutations) in changes {
                if !headers.is_empty() {
                    let i = index.index(headers.len());
                    headers[i].1 = apply(std::mem::take(&mut headers[i].1), &mutations);
                }
            }
            headers.extend(extra.into_iter().map(|(n, v)| (format!("ce-{n}"), v)));
            (headers, body)
        });
    let generated = (
        proptest::collection::vec(
            (
                attribute_name().prop_map(|n| format!("ce-{n}")),
                proptest::collection::vec(any::<u8>(), 0..24),
            ),
            0..8,
        ),
        proptest::collection::vec(any::<u8>(), 0..32),
    );
    prop_oneof![seeded, generated]
}

fn kafka_input() -> impl Strategy<Value = KafkaInput> {
    (
        proptest::sample::select(kafka_seeds()),
        proptest::collection::vec(mutation(), 0..4),
        proptest::collection::vec(
            (
                attribute_name().prop_map(|n| format!("ce_{n}")),
                proptest::option::of(attribute_value().prop_map(String::into_bytes)),
            ),
            0..3,
        ),
        any::<bool>(),
    )
        .prop_map(|((mut headers, value), mutations, extra, drop_value)| {
            let value = if drop_value {
                None
            } else {
                value.map(|v| apply(v, &mutations))
            };
            headers.extend(extra);
            (headers, value)
        })
}

type NatsInput = (Vec<(String, String)>, Vec<u8>);

/// NATS messages: the HTTP seeds with their headers as NATS headers
/// (strings), structured events with and without a content type, mutated.
fn nats_input() -> impl Strategy<Value = NatsInput> {
    let mut seeds: Vec<NatsInput> = binary_seeds()
        .into_iter()
        .map(|(headers, body)| {
            let headers = headers
                .into_iter()
                .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
                .collect();
            (headers, body)
        })
        .collect();
    for body in json_seeds() {
        seeds.push((
            vec![("Content-Type".into(), "application/cloudevents+json".into())],
            body.clone(),
        ));
        seeds.push((Vec::new(), body));
    }
    (
        proptest::sample::select(seeds),
        proptest::collection::vec(mutation(), 0..4),
        proptest::collection::vec(
            (
                attribute_name().prop_map(|n| format!("ce-{n}")),
                attribute_value(),
            ),
            0..3,
        ),
    )
        .prop_map(|((mut headers, body), mutations, extra)| {
            headers.extend(extra);
            (headers, apply(body, &mutations))
        })
}

fn nats_message((headers, payload): NatsInput) -> Result<(), TestCaseError> {
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    if let Ok(decoded) = decode::nats_message(&headers, &payload) {
        stored_form_is_accepted(&decoded)?;
    }
    Ok(())
}

/// MQTT messages: the HTTP seeds with their attributes as user properties
/// (unprefixed, or `ce-` prefixed as the Go SDK writes them) and
/// `datacontenttype` as the Content Type, structured events with and
/// without a Content Type (MQTT 5 and 3.1.1), mutated, with properties
/// added.
fn mqtt_input() -> impl Strategy<Value = MqttMessage> {
    let mut seeds: Vec<MqttMessage> = Vec::new();
    for (headers, body) in binary_seeds() {
        for prefix in ["", "ce-"] {
            let mut message = MqttMessage {
                payload: body.clone(),
                ..MqttMessage::default()
            };
            for (name, value) in &headers {
                let value = decode_header_value(value)
                    .unwrap_or_else(|_| String::from_utf8_lossy(value).into_owned());
                match name.strip_prefix("ce-") {
                    Some(attribute) => message
                        .user_properties
                        .push((format!("{prefix}{attribute}"), value)),
                    None if name == "content-type" => message.content_type = Some(value),
                    None => {}
                }
            }
            seeds.push(message);
        }
    }
    for body in json_seeds() {
        for content_type in [Some("application/cloudevents+json".to_owned()), None] {
            seeds.push(MqttMessage {
                content_type,
                user_properties: Vec::new(),
                payload: body.clone(),
            });
        }
    }
    (
        proptest::sample::select(seeds),
        proptest::collection::vec(mutation(), 0..4),
        proptest::collection::vec(
            (
                prop_oneof![
                    attribute_name(),
                    attribute_name().prop_map(|n| format!("ce-{n}"))
                ],
                attribute_value(),
            ),
            0..3,
        ),
        proptest::option::of(attribute_value()),
    )
        .prop_map(|(mut message, mutations, extra, content_type)| {
            message.payload = apply(message.payload, &mutations);
            message.user_properties.extend(extra);
            if content_type.is_some() {
                message.content_type = content_type;
            }
            message
        })
}

/// The binding never panics; what the audit decoder accepts from it is
/// accepted again in its stored form; and an event the binding reads goes
/// out again in both modes and reads back the same.
fn mqtt_message(message: MqttMessage) -> Result<(), TestCaseError> {
    let decoded = match message.content() {
        Ok(MqttContent::Structured(payload)) => decode::structured(payload).ok(),
        Ok(MqttContent::Binary(binary)) => decode::binary(binary).ok(),
        Err(_) => None,
    };
    if let Some(decoded) = decoded {
        stored_form_is_accepted(&decoded)?;
    }
    let Ok(event) = message.to_event() else {
        return Ok(());
    };
    let structured = MqttMessage::structured(&event)
        .map_err(|e| TestCaseError::fail(format!("a read event does not encode: {e}")))?;
    let again = structured.to_event().map_err(|e| {
        TestCaseError::fail(format!("a read event is refused in structured mode: {e}"))
    })?;
    prop_assert_eq!(&again, &event);
    // Binary mode refuses only what MQTT strings cannot carry.
    if let Ok(binary) = MqttMessage::binary(&event) {
        let again = binary.to_event().map_err(|e| {
            TestCaseError::fail(format!("a read event is refused in binary mode: {e}"))
        })?;
        use cloudevents_wire::cloudevents::AttributesReader;
        prop_assert_eq!(again.id(), event.id());
        prop_assert_eq!(again.source(), event.source());
        prop_assert_eq!(again.ty(), event.ty());
        prop_assert_eq!(again.datacontenttype(), event.datacontenttype());
    }
    Ok(())
}

/// Times: RFC 3339 look-alikes and anything else.
fn time_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{0,12})?([Zz]|[+-][0-9]{2}:[0-9]{2})",
        "[0-9T:Z.+-]{0,30}",
        any::<String>(),
    ]
}

fn time_input() -> impl Strategy<Value = (String, bool)> {
    (time_value(), any::<bool>())
}

fn media_type_input() -> impl Strategy<Value = (String, bool)> {
    let media_type = prop_oneof![
        "[a-zA-Z0-9!#$&^_.+-]{0,12}/[a-zA-Z0-9!#$&^_.+-]{0,12}(; ?[a-z]{1,8}=[^;]{0,12}){0,2}",
        "(application|text|Application)/(cloudevents|json|cloudevents\\+json|cloudevents-batch\\+json)[ -~]{0,10}",
        any::<String>(),
    ];
    (media_type, any::<bool>())
}

// Properties

/// What the HTTP sink does with a binary-mode request: every `ce-` header
/// percent-decoded, then the message decoded. Whatever is accepted is
/// accepted again after a trip through the JSON format, as stored.
fn http_binary((headers, body): BinaryInput) -> Result<(), TestCaseError> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        // What a server can't receive as a header isn't an input.
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::from_bytes(&value))
        {
            map.append(name, value);
        }
    }
    for (name, value) in &map {
        if name.as_str().starts_with("ce-") {
            let _ = decode_header_value(value.as_bytes());
        }
    }
    if let Ok(Some(message)) = BinaryMessage::from_http(&map, body) {
        if let Ok(event) = decode::binary(message) {
            stored_form_is_accepted(&event)?;
        }
    }
    Ok(())
}

fn percent_round_trip(value: String) -> Result<(), TestCaseError> {
    let encoded = encode_header_value(&value);
    prop_assert!(
        HeaderValue::from_str(&encoded).is_ok(),
        "not a header value: {encoded:?}"
    );
    let decoded = decode_header_value(encoded.as_bytes())
        .map_err(|e| TestCaseError::fail(format!("encoded value does not decode: {e}")))?;
    prop_assert_eq!(decoded, value);
    Ok(())
}

fn structured(body: Vec<u8>) -> Result<(), TestCaseError> {
    if let Ok(event) = decode::structured(&body) {
        stored_form_is_accepted(&event)?;
    }
    Ok(())
}

fn batch(body: Vec<u8>) -> Result<(), TestCaseError> {
    if let Ok(events) = decode::batch(&body) {
        for event in &events {
            stored_form_is_accepted(event)?;
        }
    }
    Ok(())
}

fn kafka_record((headers, value): KafkaInput) -> Result<(), TestCaseError> {
    let headers: Vec<(&str, Option<&[u8]>)> = headers
        .iter()
        .map(|(key, value)| (key.as_str(), value.as_deref()))
        .collect();
    if let Ok(event) = decode::kafka_record(&headers, value.as_deref()) {
        stored_form_is_accepted(&event)?;
    }
    Ok(())
}

/// A time in structured mode, or in binary mode.
fn time((time, binary): (String, bool)) -> Result<(), TestCaseError> {
    one_attribute("time", time, binary)
}

/// A `datacontenttype` in structured mode, or a binary-mode `Content-Type`.
fn media_type((content_type, binary): (String, bool)) -> Result<(), TestCaseError> {
    let _ = is_cloudevents_media_type(&content_type);
    one_attribute("datacontenttype", content_type, binary)
}

fn one_attribute(name: &str, value: String, binary: bool) -> Result<(), TestCaseError> {
    let decoded = if binary {
        let header = if name == "datacontenttype" {
            "content-type".to_owned()
        } else {
            format!("ce-{name}")
        };
        let mut headers = HeaderMap::new();
        for (n, v) in [
            ("ce-specversion", "1.0"),
            ("ce-id", "1"),
            ("ce-source", "/s"),
            ("ce-type", "t"),
        ] {
            headers.insert(n, HeaderValue::from_static(v));
        }
        let encoded = if name == "datacontenttype" {
            value
        } else {
            encode_header_value(&value)
        };
        let Ok(value) = HeaderValue::from_str(&encoded) else {
            return Ok(());
        };
        headers.insert(
            HeaderName::try_from(header).map_err(|e| TestCaseError::fail(e.to_string()))?,
            value,
        );
        match BinaryMessage::from_http(&headers, b"{}".to_vec()) {
            Ok(Some(message)) => decode::binary(message),
            _ => return Ok(()),
        }
    } else {
        let mut event =
            serde_json::json!({"specversion": "1.0", "id": "1", "source": "/s", "type": "t"});
        event[name] = Value::String(value);
        decode::structured(event.to_string().as_bytes())
    };
    if let Ok(event) = decoded {
        stored_form_is_accepted(&event)?;
    }
    Ok(())
}

/// The audit store keeps an accepted event in the JSON format, with the
/// attribute values as they arrived put back; reading that back must give
/// a valid event with the same identity.
fn stored_form_is_accepted(decoded: &decode::Decoded) -> Result<(), TestCaseError> {
    use cloudevents_wire::cloudevents::AttributesReader;
    let event = &decoded.event;
    let mut json = serde_json::to_string(event)
        .map_err(|e| TestCaseError::fail(format!("an accepted event does not serialize: {e}")))?;
    decoded.as_received.restore(&mut json);
    let again = decode::structured(json.as_bytes()).map_err(|e| {
        TestCaseError::fail(format!(
            "an accepted event is refused in its stored form: {e}; stored: {json}"
        ))
    })?;
    prop_assert_eq!(again.event.id(), event.id());
    prop_assert_eq!(again.event.source(), event.source());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vectors_give_seeds_to_every_target() {
        assert!(valid_events().len() > 5);
        assert!(!valid_batches().is_empty());
        assert!(invalid_http().len() > 5);
        assert!(kafka_seeds().len() > 10);
    }

    /// A short, fixed-seed run of every target, so `make test` replays
    /// them: a decoder change that panics on these inputs fails here.
    #[test]
    fn every_target_holds_for_a_fixed_seed() {
        for target in targets() {
            let report = target.fuzz(Duration::ZERO, 7);
            assert_eq!(report.failure, None, "{}", target.name);
            assert!(report.cases >= u64::from(ROUND));
        }
    }
}
