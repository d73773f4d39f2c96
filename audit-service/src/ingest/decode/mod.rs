//! Turning bytes and headers into valid CloudEvents, for every transport, with
//! an error that names what is wrong: the JSON format (structured mode and
//! batches) and binary mode here, the attribute checks in `attributes`, and
//! each broker's binding beside its consumer (`kafka::record`,
//! `nats::message`, `mqtt::message`).
//!
//! The SDK's own errors say "missing field `id`" at best and "input contains
//! invalid characters" (a bad `time`) at worst. Checking the attributes here
//! first lets every rejection name the attribute; the SDK then parses what
//! is known to be well-formed, and shared::validate adds the spec's rules
//! the SDK does not enforce.

mod attributes;

use self::attributes::{check_characters, check_json_attributes, check_string_attribute};
use crate::decoded::{AsReceived, Decoded};
use crate::limits::{check_attribute_size, check_indexed_sizes, MAX_BATCH_EVENTS};
use cloudevents::event::SpecVersion;
use cloudevents::message::Error as MessageError;
use cloudevents::{AttributesReader, Data, Event};
use serde_json::Value;
use shared::binding::{is_json_media_type, BinaryMessage, STRUCTURED_JSON};
use shared::cloudevents;
use shared::validate::{validate, InvalidEvent};

/// Why a message is not a CloudEvent we store. The `Display` text is what
/// clients read in the problem's `detail` and what the dead-letter header says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    #[error("a structured-mode event must be a JSON object")]
    NotAnObject,
    #[error("a batch must be a JSON array of structured-mode events")]
    NotAnArray,
    #[error("batch event {index}: {error}")]
    InBatch {
        index: usize,
        error: Box<DecodeError>,
    },
    #[error("a batch must hold events of one specversion, found {first} and {other}")]
    MixedSpecVersions { first: String, other: String },
    #[error("missing required attribute `{0}`")]
    MissingAttribute(String),
    #[error("attribute `{name}` is invalid: {reason}")]
    InvalidAttribute { name: String, reason: String },
    #[error("unsupported specversion {0:?}: expected \"1.0\" or \"0.3\"")]
    UnknownSpecVersion(String),
    #[error("an event cannot have both `data` and `data_base64`")]
    DataAndDataBase64,
    #[error("the message is not a CloudEvent: {0}")]
    NotACloudEvent(String),
    #[error("{0}")]
    Invalid(#[from] InvalidEvent),
    #[error("invalid CloudEvent: {0}")]
    Other(String),
    /// See `crate::limits::MAX_ATTRIBUTE_BYTES`.
    #[error("{0}")]
    AttributeTooLarge(String),
    /// A valid event the database refused for a value in it (broker
    /// consumers dead-letter it with this reason).
    #[error("the audit store refused the event: {0}")]
    Unstorable(String),
    /// See `crate::limits::MAX_BATCH_EVENTS`.
    #[error("a batch may hold at most {max} events; this one has {count}")]
    TooManyEvents { count: usize, max: usize },
}

impl DecodeError {
    pub(crate) fn invalid(name: &str, reason: impl Into<String>) -> Self {
        DecodeError::InvalidAttribute {
            name: name.to_owned(),
            reason: reason.into(),
        }
    }
}

/// A structured-mode event (`application/cloudevents+json`).
pub fn structured(body: &[u8]) -> Result<Decoded, DecodeError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| DecodeError::MalformedJson(e.to_string()))?;
    from_json(value)
}

/// A batch (`application/cloudevents-batch+json`): an array of structured
/// events. "The batch MAY be empty. All batched CloudEvents MUST have the
/// same `specversion`" (HTTP binding 3.3.2).
pub fn batch(body: &[u8]) -> Result<Vec<Decoded>, DecodeError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| DecodeError::MalformedJson(e.to_string()))?;
    let Value::Array(items) = value else {
        return Err(DecodeError::NotAnArray);
    };
    if items.len() > MAX_BATCH_EVENTS {
        return Err(DecodeError::TooManyEvents {
            count: items.len(),
            max: MAX_BATCH_EVENTS,
        });
    }
    let mut first_version: Option<String> = None;
    let mut events = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let in_batch = |error| DecodeError::InBatch {
            index,
            error: Box::new(error),
        };
        let version = item
            .get("specversion")
            .and_then(Value::as_str)
            .map(str::to_owned);
        match (&first_version, version) {
            (Some(first), Some(other)) if *first != other => {
                return Err(DecodeError::MixedSpecVersions {
                    first: first.clone(),
                    other,
                });
            }
            (None, Some(v)) => first_version = Some(v),
            _ => {}
        }
        events.push(from_json(item).map_err(in_batch)?);
    }
    Ok(events)
}

/// A binary-mode message (HTTP `ce-` headers or Kafka `ce_` headers).
pub fn binary(message: BinaryMessage) -> Result<Decoded, DecodeError> {
    let version = spec_version(&message.spec_version)?;
    let mut as_received = AsReceived::default();
    let mut schema = None;
    for (name, value) in &message.attributes {
        check_attribute_size(name, value).map_err(DecodeError::AttributeTooLarge)?;
        check_string_attribute(&version, name, value)?;
        match name.as_str() {
            "time" => as_received.time(value),
            // Only the specversion's own name: in 0.3 `dataschema` is an
            // extension, and its value is not the schema URL (found by
            // `make fuzz`: it was written over `schemaurl` in the store).
            name if name == schema_attribute(&version) => schema = Some(value.clone()),
            _ => {}
        }
    }
    if let Some(content_type) = &message.content_type {
        check_attribute_size("datacontenttype", content_type)
            .map_err(DecodeError::AttributeTooLarge)?;
        check_characters("datacontenttype", content_type)?;
    }
    let event = message.into_event().map_err(from_message_error)?;
    validate(&event)?;
    check_indexed_sizes(&event).map_err(DecodeError::AttributeTooLarge)?;
    check_v03_json_body(&event)?;
    as_received.schema(&event, schema);
    Ok(Decoded { event, as_received })
}

/// The name of the schema URL attribute in `version`.
fn schema_attribute(version: &SpecVersion) -> &'static str {
    match version {
        SpecVersion::V03 => "schemaurl",
        SpecVersion::V10 => "dataschema",
    }
}

/// A 0.3 event's binary data is stored in the JSON format as base64 with
/// `datacontentencoding`, and reading it back (the SDK does) parses the
/// decoded bytes as `datacontenttype` says. A body that claims to be JSON
/// but does not parse (binary mode leaves it as bytes) would be stored in a
/// form no reader can parse, so it is refused here. Found by `make fuzz`.
fn check_v03_json_body(event: &Event) -> Result<(), DecodeError> {
    let claims_json = event.datacontenttype().is_some_and(is_json_media_type);
    if event.specversion() == SpecVersion::V03
        && claims_json
        && matches!(event.data(), Some(Data::Binary(_)))
    {
        return Err(DecodeError::invalid(
            "datacontenttype",
            "it says JSON but the body is not valid JSON",
        ));
    }
    Ok(())
}

/// The HTTP or Kafka binding failed before we saw any attribute.
pub fn from_message_error(error: MessageError) -> DecodeError {
    use cloudevents::event::EventBuilderError as B;
    match error {
        MessageError::EventBuilderError { source } => match source {
            B::MissingRequiredAttribute { attribute_name } => {
                DecodeError::MissingAttribute(attribute_name.to_owned())
            }
            B::ParseTimeError {
                attribute_name,
                source,
            } => DecodeError::invalid(
                attribute_name,
                format!("not an RFC 3339 timestamp ({source})"),
            ),
            B::ParseUrlError {
                attribute_name,
                source,
            } => DecodeError::invalid(attribute_name, format!("not an absolute URI ({source})")),
            B::InvalidUriRefError { attribute_name } => {
                DecodeError::invalid(attribute_name, "not a URI reference")
            }
        },
        MessageError::UnknownSpecVersion { source } => DecodeError::Other(source.to_string()),
        MessageError::ParseTimeError { source } => {
            DecodeError::invalid("time", format!("not an RFC 3339 timestamp ({source})"))
        }
        MessageError::ParseUrlError { source } => {
            DecodeError::invalid("dataschema", format!("not an absolute URI ({source})"))
        }
        MessageError::Other { source } => DecodeError::NotACloudEvent(source.to_string()),
        other => DecodeError::Other(other.to_string()),
    }
}

fn spec_version(value: &str) -> Result<SpecVersion, DecodeError> {
    // The error echoes the value to the client: a few characters are enough.
    SpecVersion::try_from(value)
        .map_err(|_| DecodeError::UnknownSpecVersion(value.chars().take(16).collect()))
}

/// Checks the attributes of a JSON-format event so that errors name them,
/// then lets the SDK parse it.
fn from_json(value: Value) -> Result<Decoded, DecodeError> {
    let Value::Object(mut map) = value else {
        return Err(DecodeError::NotAnObject);
    };
    // "When decoding attributes and a null value is encountered, it MUST be
    // decoded as if the attribute was absent" (JSON format 3.1). The SDK
    // refuses `"data": null` beside `"data_base64": null` as both present.
    map.retain(|_, value| !value.is_null());
    let version = match map.get("specversion") {
        None | Some(Value::Null) => {
            return Err(DecodeError::MissingAttribute("specversion".into()))
        }
        Some(Value::String(s)) => spec_version(s)?,
        Some(_) => return Err(DecodeError::invalid("specversion", "must be a string")),
    };
    for name in ["id", "source", "type"] {
        match map.get(name) {
            None | Some(Value::Null) => return Err(DecodeError::MissingAttribute(name.into())),
            Some(Value::String(_)) => {}
            Some(_) => return Err(DecodeError::invalid(name, "must be a string")),
        }
    }
    check_json_attributes(&version, &map)?;
    let mut as_received = AsReceived::default();
    if let Some(time) = map.get("time").and_then(Value::as_str) {
        as_received.time(time);
    }
    let schema = map
        .get(schema_attribute(&version))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let event: Event = serde_json::from_value(Value::Object(map))
        .map_err(|e| DecodeError::Other(e.to_string()))?;
    validate(&event)?;
    check_indexed_sizes(&event).map_err(DecodeError::AttributeTooLarge)?;
    as_received.schema(&event, schema);
    Ok(Decoded { event, as_received })
}

/// A broker message whose content type says structured mode: only the
/// JSON format, and never an empty payload.
pub(crate) fn structured_message(
    content_type: &str,
    payload: &[u8],
) -> Result<Decoded, DecodeError> {
    let media_type = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if media_type != STRUCTURED_JSON {
        return Err(DecodeError::NotACloudEvent(format!(
            "structured-mode format {media_type:?} is not supported: use {STRUCTURED_JSON}"
        )));
    }
    if payload.is_empty() {
        return Err(DecodeError::NotACloudEvent(
            "a structured-mode message needs a payload".into(),
        ));
    }
    structured(payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<Event, DecodeError> {
        structured(v.to_string().as_bytes()).map(|d| d.event)
    }

    /// The JSON the store would keep for `v`.
    fn stored(v: Value) -> Value {
        let decoded = structured(v.to_string().as_bytes()).unwrap();
        let mut json = serde_json::to_string(&decoded.event).unwrap();
        decoded.as_received.restore(&mut json);
        serde_json::from_str(&json).unwrap()
    }

    #[test]
    fn time_and_dataschema_are_kept_as_they_arrived() {
        let mut v = minimal();
        v["time"] = json!("2026-11-26T10:30:00.1+01:00");
        v["dataschema"] = json!("HTTP://Example.com");
        // A `time` in the data and in an extension, as the SDK's form of
        // the attribute, are not the attribute.
        v["data"] = json!({"time": "2026-11-26T09:30:00.100Z"});
        v["note"] = json!("\"time\":\"2026-11-26T09:30:00.100Z\"");
        let kept = stored(v.clone());
        assert_eq!(kept["time"], "2026-11-26T10:30:00.1+01:00");
        assert_eq!(kept["dataschema"], "HTTP://Example.com");
        assert_eq!(kept["data"], v["data"]);
        assert_eq!(kept["note"], v["note"]);
        // The SDK still reads the instant it means.
        let event: Event = serde_json::from_value(kept).unwrap();
        assert_eq!(
            event.time().unwrap().to_rfc3339(),
            "2026-11-26T09:30:00.100+00:00"
        );
    }

    #[test]
    fn an_event_in_the_sdks_own_form_keeps_nothing_extra() {
        let mut v = minimal();
        v["time"] = json!("2026-11-26T09:30:00.123Z");
        let decoded = structured(v.to_string().as_bytes()).unwrap();
        assert_eq!(decoded.as_received, AsReceived::default());
        assert_eq!(stored(v.clone())["time"], v["time"]);
    }

    #[test]
    fn binary_mode_keeps_time_as_it_arrived() {
        let message = BinaryMessage {
            spec_version: "1.0".into(),
            attributes: vec![
                ("id".into(), "1".into()),
                ("source".into(), "/s".into()),
                ("type".into(), "t".into()),
                ("time".into(), "2026-11-26T10:30:00+01:00".into()),
            ],
            content_type: None,
            body: vec![],
        };
        let decoded = binary(message).unwrap();
        let mut json = serde_json::to_string(&decoded.event).unwrap();
        decoded.as_received.restore(&mut json);
        assert!(
            json.contains(r#""time":"2026-11-26T10:30:00+01:00""#),
            "{json}"
        );
    }

    fn minimal() -> Value {
        json!({"specversion": "1.0", "id": "1", "source": "/s", "type": "t"})
    }

    #[test]
    fn a_minimal_event_parses_in_both_specversions() {
        let e = parse(minimal()).unwrap();
        assert_eq!(e.id(), "1");
        let mut v03 = minimal();
        v03["specversion"] = json!("0.3");
        assert_eq!(parse(v03).unwrap().specversion(), SpecVersion::V03);
    }

    #[test]
    fn errors_name_the_attribute() {
        for name in ["id", "source", "type", "specversion"] {
            let mut v = minimal();
            v.as_object_mut().unwrap().remove(name);
            assert_eq!(parse(v), Err(DecodeError::MissingAttribute(name.into())));
        }
        let mut v = minimal();
        v["time"] = json!("yesterday");
        let err = parse(v).unwrap_err().to_string();
        assert!(err.contains("`time`"), "{err}");
        let mut v = minimal();
        v["id"] = json!("");
        assert!(parse(v).unwrap_err().to_string().contains("`id` is empty"));
    }

    #[test]
    fn unknown_specversion_data_conflicts_and_bad_extensions_are_rejected() {
        let mut v = minimal();
        v["specversion"] = json!("2.0");
        assert_eq!(parse(v), Err(DecodeError::UnknownSpecVersion("2.0".into())));
        let mut v = minimal();
        v["data"] = json!("x");
        v["data_base64"] = json!("eA==");
        assert_eq!(parse(v), Err(DecodeError::DataAndDataBase64));
        let mut v = minimal();
        v["ext"] = json!({"nested": true});
        assert!(parse(v).unwrap_err().to_string().contains("`ext`"));
    }

    #[test]
    fn null_attributes_are_absent() {
        let mut v = minimal();
        v["data"] = Value::Null;
        v["data_base64"] = Value::Null;
        v["subject"] = Value::Null;
        let event = parse(v).unwrap();
        assert_eq!(event.subject(), None);
        assert_eq!(event.data(), None);
    }

    #[test]
    fn a_batch_of_two_specversions_is_refused() {
        let mut v03 = minimal();
        v03["specversion"] = json!("0.3");
        let body = json!([minimal(), v03]).to_string();
        assert!(matches!(
            batch(body.as_bytes()),
            Err(DecodeError::MixedSpecVersions { .. })
        ));
        assert!(batch(b"[]").unwrap().is_empty());
    }

    #[test]
    fn binary_mode_with_a_bad_time_names_time() {
        let message = BinaryMessage {
            spec_version: "1.0".into(),
            attributes: vec![
                ("id".into(), "1".into()),
                ("source".into(), "/s".into()),
                ("type".into(), "t".into()),
                ("time".into(), "noon".into()),
            ],
            content_type: None,
            body: vec![],
        };
        let err = binary(message).unwrap_err().to_string();
        assert!(err.contains("`time`"), "{err}");
    }

    /// Found by `make fuzz` (kafka-record): stored, this event could not
    /// be read back by the SDK.
    #[test]
    fn a_03_binary_event_whose_json_body_does_not_parse_is_refused() {
        let message = |content_type: &str| BinaryMessage {
            spec_version: "0.3".into(),
            attributes: vec![
                ("id".into(), "1".into()),
                ("source".into(), "/s".into()),
                ("type".into(), "t".into()),
            ],
            content_type: Some(content_type.into()),
            body: br#"z"v":"0.3"}"#.to_vec(),
        };
        let err = binary(message("application/json")).unwrap_err().to_string();
        assert!(err.contains("`datacontenttype`"), "{err}");
        assert!(binary(message("application/octet-stream")).is_ok());
    }

    /// Found by `make fuzz`: a 0.3 event's `dataschema` extension was
    /// stored as its `schemaurl`.
    #[test]
    fn a_03_dataschema_extension_is_not_taken_for_the_schema_url() {
        let mut json = String::new();
        let message = BinaryMessage {
            spec_version: "0.3".into(),
            attributes: vec![
                ("id".into(), "1".into()),
                ("source".into(), "/s".into()),
                ("type".into(), "t".into()),
                ("schemaurl".into(), "https://example.com/schema".into()),
                ("dataschema".into(), "1.0".into()),
            ],
            content_type: None,
            body: vec![],
        };
        let decoded = binary(message).unwrap();
        json.push_str(&serde_json::to_string(&decoded.event).unwrap());
        decoded.as_received.restore(&mut json);
        let stored: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(stored["schemaurl"], "https://example.com/schema");
        assert_eq!(stored["dataschema"], "1.0");
        let structured = structured(json.as_bytes()).unwrap();
        let mut again = serde_json::to_string(&structured.event).unwrap();
        structured.as_received.restore(&mut again);
        assert_eq!(serde_json::from_str::<Value>(&again).unwrap(), stored);
    }
}
