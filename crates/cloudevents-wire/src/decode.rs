//! Turning bytes and headers into valid CloudEvents, for every transport, with
//! an error that names what is wrong.
//!
//! The SDK's own errors say "missing field `id`" at best and "input contains
//! invalid characters" (a bad `time`) at worst. Checking the attributes here
//! first lets every rejection name the attribute; the SDK then parses what
//! is known to be well-formed, and [`crate::validate`] adds the spec's rules
//! the SDK does not enforce.

use crate::binding::{
    is_cloudevents_media_type, is_json_media_type, BinaryMessage, STRUCTURED_JSON,
};
use crate::limits::{check_attribute_size, check_indexed_sizes, MAX_BATCH_EVENTS};
use crate::validate::{code_point, forbidden_character, validate, InvalidEvent};
use chrono::{DateTime, Utc};
use cloudevents::event::SpecVersion;
use cloudevents::message::Error as MessageError;
use cloudevents::{AttributesReader, Data, Event};
use serde_json::{Map, Value};
use std::cell::RefCell;

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
    /// See [`crate::limits::MAX_ATTRIBUTE_BYTES`].
    #[error("{0}")]
    AttributeTooLarge(String),
    /// A valid event the database refused for a value in it (broker
    /// consumers dead-letter it with this reason).
    #[error("the audit store refused the event: {0}")]
    Unstorable(String),
    /// See [`crate::limits::MAX_BATCH_EVENTS`].
    #[error("a batch may hold at most {max} events; this one has {count}")]
    TooManyEvents { count: usize, max: usize },
}

impl DecodeError {
    pub fn invalid(name: &str, reason: impl Into<String>) -> Self {
        DecodeError::InvalidAttribute {
            name: name.to_owned(),
            reason: reason.into(),
        }
    }
}

/// A decoded event, with its typed attributes as they arrived where the
/// SDK would write them differently.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub event: Event,
    pub as_received: AsReceived,
}

impl From<Event> for Decoded {
    fn from(event: Event) -> Self {
        Decoded {
            event,
            as_received: AsReceived::default(),
        }
    }
}

/// Attribute values as a sender wrote them, where the SDK's typed model
/// would write them back differently: it keeps `time` as a UTC instant
/// (`+01:00` comes back as `Z`, `.1Z` as `.100Z`) and `dataschema`
/// (`schemaurl` in 0.3) as a parsed URL (`HTTP://Example.com` comes back as
/// `http://example.com/`). An audit trail keeps what was sent, so the
/// stored JSON gets these values back ([`AsReceived::restore`]). Empty, and
/// free, for an event already in the SDK's form, as the user service's are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AsReceived(Vec<Kept>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Kept {
    name: &'static str,
    /// The value as the SDK writes it, as JSON (quoted).
    written: String,
    /// The value as it arrived.
    received: String,
}

impl AsReceived {
    /// Keeps `received`, the `time` attribute as it arrived, when the SDK
    /// would write the instant differently. Called for every event, so the
    /// usual case (the SDK's own form) allocates nothing: the SDK's form is
    /// written into a buffer the thread reuses. The SDK parses `time` the
    /// same way (`parse_from_rfc3339`, then UTC).
    fn time(&mut self, received: &str) {
        thread_local! {
            static WRITTEN: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
        }
        let Ok(instant) = DateTime::parse_from_rfc3339(received) else {
            return;
        };
        let instant = instant.with_timezone(&Utc);
        let kept = WRITTEN.with(|buffer| {
            let mut buffer = buffer.borrow_mut();
            buffer.clear();
            serde_json::to_writer(&mut *buffer, &instant).ok()?;
            let written = std::str::from_utf8(&buffer).ok()?;
            // A timestamp has nothing to escape: the quoted value is the text.
            let same = written.get(1..written.len().saturating_sub(1)) == Some(received);
            (!same).then(|| Kept {
                name: "time",
                written: written.to_owned(),
                received: received.to_owned(),
            })
        });
        self.0.extend(kept);
    }

    /// Keeps the schema URL as it arrived when the SDK's parsed URL writes
    /// differently (rare: the attribute is seldom set).
    fn schema(&mut self, event: &Event, received: Option<String>) {
        let name = match event.specversion() {
            SpecVersion::V03 => "schemaurl",
            SpecVersion::V10 => "dataschema",
        };
        let (Some(received), Some(url)) = (received, event.dataschema()) else {
            return;
        };
        if url.as_str() == received {
            return;
        }
        if let Ok(written) = serde_json::to_string(url) {
            self.0.push(Kept {
                name,
                written,
                received,
            });
        }
    }

    /// Puts the values as they arrived into `json`, the event as the SDK
    /// serialized it. The SDK writes the context attributes first, `data`
    /// and the extensions after them, and a quote inside a JSON string is
    /// always escaped, so the first `"time":<value>` in its output is the
    /// attribute itself.
    pub fn restore(&self, json: &mut String) {
        for kept in &self.0 {
            let pattern = format!("\"{}\":{}", kept.name, kept.written);
            let Some(at) = json.find(&pattern) else {
                continue;
            };
            // A String always serializes.
            let Ok(received) = serde_json::to_string(&kept.received) else {
                continue;
            };
            json.replace_range(
                at..at + pattern.len(),
                &format!("\"{}\":{received}", kept.name),
            );
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

fn check_json_attributes(
    version: &SpecVersion,
    map: &Map<String, Value>,
) -> Result<(), DecodeError> {
    if matches!(version, SpecVersion::V10)
        && is_present(map.get("data"))
        && is_present(map.get("data_base64"))
    {
        return Err(DecodeError::DataAndDataBase64);
    }
    let known = version.attribute_names();
    for (name, value) in map {
        let text = match value {
            Value::String(s) if name != "data" && name != "data_base64" => s.as_str(),
            _ => "",
        };
        check_attribute_size(name, text).map_err(DecodeError::AttributeTooLarge)?;
        match (name.as_str(), value) {
            (_, Value::Null) => {}
            ("data" | "data_base64" | "specversion", _) => {}
            ("datacontentencoding", _) if matches!(version, SpecVersion::V03) => {}
            (name, Value::String(s)) => check_string_attribute(version, name, s)?,
            (name, _) if known.contains(&name) => {
                return Err(DecodeError::invalid(name, "must be a string"))
            }
            (_, Value::Bool(_)) => {}
            (_, Value::Number(n)) if n.is_i64() => {}
            (name, _) => {
                return Err(DecodeError::invalid(
                    name,
                    "extension values must be a string, a boolean or an integer",
                ))
            }
        }
    }
    Ok(())
}

fn is_present(value: Option<&Value>) -> bool {
    value.is_some_and(|v| !v.is_null())
}

/// Every attribute value that is a string: the characters the type system
/// allows, then, for the typed attributes whose string form the SDK parses,
/// that form.
fn check_string_attribute(
    version: &SpecVersion,
    name: &str,
    value: &str,
) -> Result<(), DecodeError> {
    check_characters(name, value)?;
    match name {
        "time" => DateTime::parse_from_rfc3339(value)
            .map(|_| ())
            .map_err(|e| DecodeError::invalid("time", format!("not an RFC 3339 timestamp ({e})"))),
        "dataschema" if matches!(version, SpecVersion::V10) => is_absolute_uri(name, value),
        "schemaurl" if matches!(version, SpecVersion::V03) => is_absolute_uri(name, value),
        _ => Ok(()),
    }
}

/// A String may not hold control characters or noncharacters (the type
/// system of the CloudEvents spec); the error names the first one, never
/// quoting the value.
fn check_characters(name: &str, value: &str) -> Result<(), DecodeError> {
    match forbidden_character(value) {
        None => Ok(()),
        Some(c) => Err(DecodeError::invalid(
            name,
            format!(
                "it contains the control character or noncharacter {}, which CloudEvents strings may not hold",
                code_point(c)
            ),
        )),
    }
}

/// The SDK parses these with `url::Url`, which needs a scheme; say so
/// before it fails with a less helpful message.
fn is_absolute_uri(name: &str, value: &str) -> Result<(), DecodeError> {
    let has_scheme = value.split_once(':').is_some_and(|(scheme, _)| {
        scheme
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    });
    if has_scheme {
        Ok(())
    } else {
        Err(DecodeError::invalid(name, "not an absolute URI"))
    }
}

/// Decodes one record per the CloudEvents Kafka binding, from its headers
/// (name, value or null) and its payload (or null), without ever handing
/// the SDK a record it would panic on (a null header value, a null
/// structured payload).
pub fn kafka_record(
    headers: &[(&str, Option<&[u8]>)],
    payload: Option<&[u8]>,
) -> Result<Decoded, DecodeError> {
    let payload = payload.unwrap_or_default();
    let content_type = headers
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case("content-type"))
        .and_then(|(_, value)| *value)
        .map(String::from_utf8_lossy);
    if let Some(content_type) = content_type.filter(|ct| is_cloudevents_media_type(ct)) {
        return structured_message(&content_type, payload);
    }
    if headers.is_empty() {
        return Err(DecodeError::NotACloudEvent(
            "the record has no headers: neither structured (content-type) nor binary mode (ce_ headers)".into(),
        ));
    }
    match BinaryMessage::from_kafka(headers.iter().copied(), payload.to_vec()) {
        Ok(Some(message)) => binary(message),
        Ok(None) => Err(DecodeError::NotACloudEvent(
            "no ce_specversion header and no application/cloudevents content-type".into(),
        )),
        Err(e) => Err(from_message_error(e)),
    }
}

/// A broker message whose content type says structured mode: only the
/// JSON format, and never an empty payload.
fn structured_message(content_type: &str, payload: &[u8]) -> Result<Decoded, DecodeError> {
    let media_type = crate::binding::media_type(content_type);
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

/// Decodes one NATS message per the CloudEvents NATS binding 1.0.3:
/// structured mode when `Content-Type` is an `application/cloudevents` type,
/// binary mode (`ce-` headers) when there is a `ce-specversion` header.
/// `headers` are (name, first value) pairs.
///
/// One leniency, for the Go SDK (sdk-go's nats_jetstream binding, v2.16.2):
/// it sends structured mode as a bare payload with no header at all, and
/// reads any message without `ce-specversion` as structured. So a message
/// with neither header is read as a structured-mode JSON event; a payload
/// that is not one is refused, naming both modes.
pub fn nats_message(headers: &[(&str, &str)], payload: &[u8]) -> Result<Decoded, DecodeError> {
    let content_type = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        .map(|(_, value)| *value);
    if let Some(content_type) = content_type.filter(|ct| is_cloudevents_media_type(ct)) {
        return structured_message(content_type, payload);
    }
    let binary_mode = headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("ce-specversion"));
    if binary_mode {
        return match BinaryMessage::from_nats(headers.iter().copied(), payload.to_vec()) {
            Ok(Some(message)) => binary(message),
            Ok(None) => Err(DecodeError::MissingAttribute("specversion".into())),
            Err(e) => Err(from_message_error(e)),
        };
    }
    if payload.is_empty() {
        return Err(DecodeError::NotACloudEvent(
            "no ce-specversion header, no application/cloudevents content-type and no payload"
                .into(),
        ));
    }
    structured(payload).map_err(|e| match e {
        DecodeError::MalformedJson(_) | DecodeError::NotAnObject => {
            DecodeError::NotACloudEvent(format!(
                "neither binary mode (no ce-specversion header) nor a structured-mode payload: {e}"
            ))
        }
        other => other,
    })
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

    /// A binary-mode message of `spec_version` with the required attributes
    /// (`id` 1, `source` /s, `type` t), then `more`; no content type, no body.
    fn binary_message(spec_version: &str, more: &[(&str, &str)]) -> BinaryMessage {
        let required = [("id", "1"), ("source", "/s"), ("type", "t")];
        BinaryMessage {
            spec_version: spec_version.into(),
            attributes: required
                .iter()
                .chain(more)
                .map(|(name, value)| ((*name).into(), (*value).into()))
                .collect(),
            content_type: None,
            body: vec![],
        }
    }

    #[test]
    fn binary_mode_keeps_time_as_it_arrived() {
        let message = binary_message("1.0", &[("time", "2026-11-26T10:30:00+01:00")]);
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
        let message = binary_message("1.0", &[("time", "noon")]);
        let err = binary(message).unwrap_err().to_string();
        assert!(err.contains("`time`"), "{err}");
    }

    /// Found by `make fuzz` (kafka-record): stored, this event could not
    /// be read back by the SDK.
    #[test]
    fn a_03_binary_event_whose_json_body_does_not_parse_is_refused() {
        let message = |content_type: &str| BinaryMessage {
            content_type: Some(content_type.into()),
            body: br#"z"v":"0.3"}"#.to_vec(),
            ..binary_message("0.3", &[])
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
        let message = binary_message(
            "0.3",
            &[
                ("schemaurl", "https://example.com/schema"),
                ("dataschema", "1.0"),
            ],
        );
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

    // Kafka records

    #[test]
    fn a_null_header_value_is_an_error_not_a_panic() {
        let headers = [("ce_specversion", Some(&b"1.0"[..])), ("ce_id", None)];
        assert!(kafka_record(&headers, Some(b"x")).is_err());
    }

    #[test]
    fn a_structured_record_without_payload_is_an_error() {
        let headers = [("content-type", Some(&b"application/cloudevents+json"[..]))];
        let err = kafka_record(&headers, None).unwrap_err();
        assert!(err.to_string().contains("payload"), "{err}");
    }

    #[test]
    fn a_record_without_headers_is_not_a_cloudevent() {
        assert!(matches!(
            kafka_record(&[], Some(b"{}")),
            Err(DecodeError::NotACloudEvent(_))
        ));
    }

    #[test]
    fn upper_case_structured_content_type_is_structured_mode() {
        let headers = [(
            "Content-Type",
            Some(&b"Application/CloudEvents+JSON; charset=UTF-8"[..]),
        )];
        let body = br#"{"specversion":"1.0","id":"1","source":"/s","type":"t"}"#;
        assert!(kafka_record(&headers, Some(body)).is_ok());
    }

    // NATS messages

    #[test]
    fn nats_binary_and_structured_modes_are_read_as_the_binding_says() {
        let binary = nats_message(
            &[
                ("ce-specversion", "1.0"),
                ("ce-id", "n1"),
                ("ce-source", "/s"),
                ("ce-type", "t"),
                ("ce-subject", "Gr%C3%BC%C3%9Fe"),
                ("ce-datacontenttype", "application/json"),
                ("Nats-Msg-Id", "n1"),
            ],
            br#"{"a":1}"#,
        )
        .unwrap()
        .event;
        assert_eq!(binary.subject(), Some("Grüße"));
        assert_eq!(binary.datacontenttype(), Some("application/json"));
        let body = br#"{"specversion":"1.0","id":"n2","source":"/s","type":"t"}"#;
        let structured = nats_message(&[("Content-Type", "application/cloudevents+json")], body);
        assert_eq!(structured.unwrap().event.id(), "n2");
        // The Go SDK's structured mode: the payload alone.
        assert_eq!(nats_message(&[], body).unwrap().event.id(), "n2");
    }

    #[test]
    fn nats_messages_that_are_not_cloudevents_say_why() {
        let garbage = nats_message(&[], b"garbage").unwrap_err();
        assert!(
            matches!(garbage, DecodeError::NotACloudEvent(_)),
            "{garbage}"
        );
        let empty = nats_message(&[("x", "y")], b"").unwrap_err();
        assert!(empty.to_string().contains("no payload"), "{empty}");
        let headerless = nats_message(&[], br#"{"id":"1"}"#).unwrap_err();
        assert_eq!(
            headerless,
            DecodeError::MissingAttribute("specversion".into())
        );
        let no_body = nats_message(&[("content-type", "application/cloudevents+json")], b"");
        assert!(no_body.unwrap_err().to_string().contains("payload"));
        let no_type = nats_message(
            &[
                ("ce-specversion", "1.0"),
                ("ce-id", "1"),
                ("ce-source", "/s"),
            ],
            b"",
        );
        assert_eq!(no_type, Err(DecodeError::MissingAttribute("type".into())));
    }
}
