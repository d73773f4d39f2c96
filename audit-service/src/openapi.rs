//! The OpenAPI 3.1 document of the HTTP API: the routes document themselves
//! (`#[utoipa::path]` on each handler); this module holds the document's
//! header and the schemas of what the service stores as raw JSON (a
//! CloudEvent, a stored item), which have no Rust type of their own.

use serde::Serialize;
use std::collections::HashMap;
use utoipa::ToSchema;

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "audit-service",
        description = "Receives CloudEvents (POST /: binary, structured and batch content modes, \
                       specversion 1.0 and 0.3; or from a Kafka topic or a NATS JetStream \
                       stream), stores each once by (source, id), and serves the audit log \
                       back; with a signing key, as a C2SP tlog-tiles transparency log (/log/) \
                       with inclusion and consistency proofs, and erasure that keeps every \
                       proof; and replays of a selection of it to an HTTP endpoint, a Kafka \
                       topic, a NATS subject or an MQTT topic (/v1/replays). Errors are \
                       application/problem+json (RFC 9457)."
    ),
    components(schemas(CloudEvent, StoredItem, crate::error::FilterProblem))
)]
pub struct ApiDoc;

/// A CloudEvent in the JSON event format. Attribute values are served as
/// they were received; extension attributes are further members.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct CloudEvent {
    /// `1.0` or `0.3`.
    #[schema(example = "1.0")]
    specversion: String,
    #[schema(min_length = 1, example = "01a21b7f-a553-75b3-bc3a-893327404cbc")]
    id: String,
    /// A URI-reference.
    #[schema(min_length = 1, example = "/user-service")]
    source: String,
    #[serde(rename = "type")]
    #[schema(min_length = 1, example = "user.storeUser")]
    ty: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "application/json")]
    datacontenttype: Option<String>,
    /// An absolute URI (`schemaurl` in 0.3).
    #[serde(skip_serializing_if = "Option::is_none")]
    dataschema: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
    /// An RFC 3339 timestamp, as sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "2026-11-26T09:30:00.123Z")]
    time: Option<String>,
    /// The event's data, as JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<serde_json::Value>,
    /// Binary data, base64-encoded (1.0).
    #[serde(skip_serializing_if = "Option::is_none")]
    data_base64: Option<String>,
    /// Extension attributes (`traceparent`, `partitionkey`, ...).
    #[serde(flatten)]
    extensions: HashMap<String, serde_json::Value>,
}

/// One stored event, as `GET /v1/events` and the live tail serve it.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct StoredItem {
    /// Its position in the audit log; `after` pages by it.
    seq: i64,
    /// When the store committed it (RFC 3339, UTC).
    received_at: String,
    /// What brought it.
    #[schema(example = "http")]
    transport: String,
    event: CloudEvent,
}

/// One event of the live tail (`text/event-stream`), as the stream's
/// fields: `audit` events carry a stored item, an `error` event ends the
/// stream when the store cannot be read.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct LiveTailEvent {
    /// `audit`, or `error`.
    #[schema(example = "audit")]
    event: String,
    /// An `audit` event's seq, for `Last-Event-ID`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "1")]
    id: Option<String>,
    /// An `audit` event: a stored item (as in `GET /v1/events`) as JSON;
    /// an `error` event: what failed, in words.
    #[schema(content_media_type = "application/json")]
    data: String,
}

/// A page of `GET /v1/events`.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct EventPage {
    events: Vec<StoredItem>,
    /// Pass as `after` for the next page; null on the last one. With a
    /// `filter` it is the last seq examined, which may be past the last
    /// event on the page.
    next_after: Option<i64>,
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    fn document() -> Value {
        serde_json::to_value(crate::http::openapi()).unwrap()
    }

    /// The schema a response's problem+json body refers to, resolved.
    fn problem_schema<'a>(doc: &'a Value, response: &'a Value) -> &'a Value {
        let schema = &response["content"]["application/problem+json"]["schema"];
        match schema["$ref"].as_str() {
            Some(reference) => {
                let name = reference.rsplit('/').next().unwrap();
                &doc["components"]["schemas"][name]
            }
            None => schema,
        }
    }

    #[test]
    fn the_document_shows_every_status_the_service_sends() {
        let doc = document();
        let description = doc["info"]["description"].as_str().unwrap();
        assert!(description.contains("NATS"), "{description}");

        let ingest = &doc["paths"]["/"]["post"]["responses"];
        for status in ["408", "431"] {
            assert!(ingest[status].is_object(), "POST / lacks {status}");
        }
        // Every route under the request timeout may answer 408; the probes
        // and the metrics are outside it.
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let timed = !matches!(path.as_str(), "/healthz" | "/metrics");
                assert_eq!(
                    operation["responses"]["408"].is_object(),
                    timed,
                    "{method} {path}"
                );
            }
        }
        let stream = &doc["paths"]["/v1/events/stream"]["get"]["responses"]["503"];
        assert!(stream["headers"]["Retry-After"].is_object(), "{stream}");

        for path in ["/v1/events", "/v1/events/stream", "/v1/filters/validate"] {
            let bad = &doc["paths"][path]["get"]["responses"]["400"];
            let schema = problem_schema(&doc, bad);
            for member in ["column", "offset", "detail"] {
                assert!(
                    schema["properties"][member].is_object(),
                    "{path}'s 400 lacks `{member}`: {schema}"
                );
            }
        }
    }
}
