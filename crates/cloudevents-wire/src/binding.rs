//! The parts of the CloudEvents protocol bindings that cloudevents-sdk 0.9
//! leaves out, written once here for both services:
//! - percent-encoding of binary-mode header values (HTTP binding, section 3.1.3.2),
//!   which the SDK neither applies on send nor undoes on receipt;
//! - a binary-mode message whose attribute values are already decoded, so that
//!   values outside ASCII survive (the SDK reads headers with `to_str()`, which
//!   rejects them), built from HTTP headers or Kafka headers;
//! - recognising structured mode case-insensitively, as both bindings require;
//! - NATS binary mode altogether (NATS binding 1.0.3, section 3.1): the SDK's
//!   NATS binding is structured only. `ce-` headers, `datacontenttype`
//!   included, percent-encoded as over HTTP;
//! - the MQTT binding altogether ([`mqtt`]), which the SDK does not have.

use chrono::SecondsFormat;
use cloudevents::event::{AttributeValue, SpecVersion};
use cloudevents::message::{
    BinaryDeserializer, BinarySerializer, Error as MessageError, MessageAttributeValue,
};
use cloudevents::{AttributesReader, Data, Event};
use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use percent_encoding::{percent_decode, utf8_percent_encode, AsciiSet, CONTROLS};

pub mod mqtt;

/// The media type of a structured-mode event in JSON.
pub const STRUCTURED_JSON: &str = "application/cloudevents+json";
/// The media type of a batch of structured events in JSON.
pub const BATCH_JSON: &str = "application/cloudevents-batch+json";

/// Space, `"`, `%` and everything outside printable ASCII must be encoded;
/// `CONTROLS` covers 0x00-0x1F, 0x7F and, as `utf8_percent_encode` always
/// does, every non-ASCII byte.
const HEADER_VALUE: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b'%');

/// Encodes an attribute value for an HTTP `ce-` header.
pub fn encode_header_value(value: &str) -> String {
    utf8_percent_encode(value, HEADER_VALUE).to_string()
}

/// Decodes an HTTP `ce-` header value back into the attribute's string.
pub fn decode_header_value(raw: &[u8]) -> Result<String, MessageError> {
    let invalid = |e: std::str::Utf8Error| MessageError::Other {
        source: Box::new(e),
    };
    // Most values have nothing percent-encoded: checked as UTF-8 in one
    // pass rather than decoded byte by byte (a few percent of the
    // single-event sink's instructions).
    if !raw.contains(&b'%') {
        return std::str::from_utf8(raw).map(str::to_owned).map_err(invalid);
    }
    percent_decode(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(invalid)
}

/// True for `application/cloudevents` media types, whatever their case.
pub fn is_cloudevents_media_type(content_type: &str) -> bool {
    content_type
        .trim_start()
        .get(..STRUCTURED_PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(STRUCTURED_PREFIX))
}
const STRUCTURED_PREFIX: &str = "application/cloudevents";

/// A `Content-Type` value's media type, `type/subtype` without parameters,
/// in lower case (media types compare case-insensitively, RFC 9110 8.3.1).
pub fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// A binary-mode CloudEvent whose attribute values are decoded strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryMessage {
    pub spec_version: String,
    /// Attribute and extension names (lower case, without prefix) and values,
    /// `specversion` and `datacontenttype` excluded.
    pub attributes: Vec<(String, String)>,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

impl BinaryMessage {
    /// Reads an HTTP binary-mode request. `Ok(None)` when there is no
    /// `ce-specversion` header, i.e. the request is not in binary mode.
    pub fn from_http(headers: &HeaderMap, body: Vec<u8>) -> Result<Option<Self>, MessageError> {
        let Some(spec_version) = headers.get("ce-specversion") else {
            return Ok(None);
        };
        let spec_version = decode_header_value(spec_version.as_bytes())?;
        let mut attributes = Vec::new();
        for (name, value) in headers {
            if let Some(attr) = name.as_str().strip_prefix("ce-") {
                if attr != "specversion" {
                    attributes.push((attr.to_owned(), decode_header_value(value.as_bytes())?));
                }
            }
        }
        let content_type = headers
            .get(CONTENT_TYPE)
            .map(|v| decode_utf8(v.as_bytes()))
            .transpose()?;
        Ok(Some(BinaryMessage {
            spec_version,
            attributes,
            content_type,
            body,
        }))
    }

    /// Reads a Kafka binary-mode record from its headers (`ce_` prefixed,
    /// values are plain UTF-8 in the Kafka binding). `Ok(None)` when there is
    /// no `ce_specversion` header. A header without a value is an error here,
    /// where the SDK's own binding would panic.
    pub fn from_kafka<'a>(
        headers: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
        body: Vec<u8>,
    ) -> Result<Option<Self>, MessageError> {
        let mut spec_version = None;
        let mut content_type = None;
        let mut attributes = Vec::new();
        for (key, value) in headers {
            let key = key.to_ascii_lowercase();
            let value = || -> Result<String, MessageError> {
                let bytes = value.ok_or_else(|| MessageError::Other {
                    source: format!("Kafka header {key} has no value").into(),
                })?;
                decode_utf8(bytes)
            };
            if key == "content-type" {
                content_type = Some(value()?);
            } else if key == "ce_specversion" {
                spec_version = Some(value()?);
            } else if let Some(attr) = key.strip_prefix("ce_") {
                attributes.push((attr.to_owned(), value()?));
            }
        }
        Ok(spec_version.map(|spec_version| BinaryMessage {
            spec_version,
            attributes,
            content_type,
            body,
        }))
    }

    /// Builds the event. JSON bodies (`application/json`, `*+json`, or no
    /// content type at all) become
    /// JSON data and text bodies (`text/*`, XML) string data rather than the
    /// SDK's bytes, so the JSON format writes them as `data` instead of
    /// `data_base64`, as other SDKs do. A JSON body that doesn't parse stays
    /// bytes: the receiver keeps exactly what was sent.
    pub fn into_event(self) -> Result<Event, MessageError> {
        let mut event = BinaryDeserializer::into_event(self)?;
        let content_type = event.datacontenttype().map(str::to_owned);
        let Some(Data::Binary(bytes)) = event.data() else {
            return Ok(event);
        };
        // Without a content type the JSON event format implies
        // application/json, so a body that parses as JSON is read as JSON.
        if content_type.as_deref().is_none_or(is_json_media_type) {
            if let Ok(json) = serde_json::from_slice::<serde_json::Value>(bytes) {
                event.set_data_unchecked(json);
            }
        } else if content_type.as_deref().is_some_and(is_text_media_type) {
            if let Ok(text) = String::from_utf8(bytes.clone()) {
                event.set_data_unchecked(text);
            }
        }
        Ok(event)
    }
}

/// Whether the SDK's JSON event format reads `data` under this content type
/// as JSON: its own rule, case and parameters included, so that what binary
/// mode turns into JSON data is read back as JSON from the stored event.
/// (A looser rule, `Application/JSON` or `application/x+json; charset=utf-8`,
/// stored `"data": {...}` that the SDK then refused to read: found by
/// `make fuzz`.) Other JSON bodies stay bytes, stored as base64.
pub fn is_json_media_type(content_type: &str) -> bool {
    content_type.starts_with("application/json")
        || content_type.starts_with("text/json")
        || content_type.ends_with("+json")
}

fn is_text_media_type(content_type: &str) -> bool {
    let ct = content_type.trim_start().to_ascii_lowercase();
    ct.starts_with("text/") || ct.starts_with("application/xml") || ct.contains("+xml")
}

fn decode_utf8(bytes: &[u8]) -> Result<String, MessageError> {
    String::from_utf8(bytes.to_vec()).map_err(|e| MessageError::Other {
        source: Box::new(e),
    })
}

impl BinaryDeserializer for BinaryMessage {
    fn deserialize_binary<R: Sized, V: BinarySerializer<R>>(
        self,
        mut visitor: V,
    ) -> Result<R, MessageError> {
        let spec_version = SpecVersion::try_from(self.spec_version.as_str())?;
        let known = spec_version.attribute_names();
        visitor = visitor.set_spec_version(spec_version)?;
        for (name, value) in self.attributes {
            let value = MessageAttributeValue::String(value);
            visitor = if known.contains(&name.as_str()) {
                visitor.set_attribute(&name, value)?
            } else {
                visitor.set_extension(&name, value)?
            };
        }
        if let Some(ct) = self.content_type {
            visitor =
                visitor.set_attribute("datacontenttype", MessageAttributeValue::String(ct))?;
        }
        if self.body.is_empty() {
            visitor.end()
        } else {
            visitor.end_with_data(self.body)
        }
    }
}

/// The header of a NATS message in binary mode that holds `datacontenttype`
/// (NATS binding 1.0.3, 3.1.3.1: unlike HTTP and Kafka, not `content-type`).
pub const NATS_DATACONTENTTYPE: &str = "ce-datacontenttype";

impl BinaryMessage {
    /// Reads a NATS binary-mode message from its headers: names matched
    /// case-insensitively (binding 3.1.3.1), values unquoted and
    /// percent-decoded (3.1.3.2), only the first value of a repeated header.
    /// `datacontenttype` comes from `ce-datacontenttype`, or failing that
    /// from `content-type` (which the Go SDK's binding also reads).
    /// `Ok(None)` when there is no `ce-specversion` header.
    pub fn from_nats<'a>(
        headers: impl IntoIterator<Item = (&'a str, &'a str)>,
        body: Vec<u8>,
    ) -> Result<Option<Self>, MessageError> {
        let mut spec_version = None;
        let mut content_type = None;
        let mut plain_content_type = None;
        let mut attributes: Vec<(String, String)> = Vec::new();
        for (name, value) in headers {
            let name = name.to_ascii_lowercase();
            if name == "content-type" {
                plain_content_type.get_or_insert(value.to_owned());
                continue;
            }
            let Some(attr) = name.strip_prefix("ce-") else {
                continue;
            };
            if attributes.iter().any(|(a, _)| a == attr) {
                continue;
            }
            let value = decode_nats_header_value(value)?;
            match attr {
                "specversion" => {
                    spec_version.get_or_insert(value);
                }
                "datacontenttype" => {
                    content_type.get_or_insert(value);
                }
                _ => attributes.push((attr.to_owned(), value)),
            }
        }
        Ok(spec_version.map(|spec_version| BinaryMessage {
            spec_version,
            attributes,
            content_type: content_type.or(plain_content_type),
            body,
        }))
    }
}

/// Decodes a NATS `ce-` header value: a double-quoted string is unquoted
/// first (backslash escapes included), then one round of percent-decoding,
/// which must yield UTF-8 (NATS binding 1.0.3, 3.1.3.2).
pub fn decode_nats_header_value(raw: &str) -> Result<String, MessageError> {
    let trimmed = raw.trim();
    let unquoted = match trimmed
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
    {
        Some(inner) => {
            let mut out = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => out.extend(chars.next()),
                    c => out.push(c),
                }
            }
            out
        }
        None => trimmed.to_owned(),
    };
    decode_header_value(unquoted.as_bytes())
}

/// The headers and body of a NATS binary-mode message for `event`: every
/// attribute as a `ce-` header, percent-encoded.
pub fn to_nats_binary(event: &Event) -> (Vec<(String, String)>, Vec<u8>) {
    let headers = event
        .iter()
        .map(|(name, value)| {
            (
                format!("ce-{name}"),
                encode_header_value(&value.to_string()),
            )
        })
        .collect();
    (headers, data_bytes(event.data()))
}

/// The headers and body of an HTTP binary-mode request for `event`, with
/// every `ce-` value percent-encoded.
pub fn to_http_binary(event: &Event) -> (HeaderMap, Vec<u8>) {
    let mut headers = HeaderMap::new();
    for (name, value) in event.iter() {
        if name == "datacontenttype" {
            continue;
        }
        let header = HeaderName::try_from(format!("ce-{name}"));
        // `time` as the JSON format writes it (`...Z`), not the SDK's
        // `+00:00`: receivers that keep values as sent then store one form
        // whichever content mode brought the event.
        let text = match value {
            AttributeValue::Time(time) => time.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            other => other.to_string(),
        };
        let value = HeaderValue::try_from(encode_header_value(&text));
        // Attribute names are lower-case alphanumerics (the SDK enforces it)
        // and encoded values are printable ASCII, so both always convert.
        if let (Ok(header), Ok(value)) = (header, value) {
            headers.insert(header, value);
        }
    }
    if let Some(ct) = event.datacontenttype() {
        if let Ok(value) = HeaderValue::try_from(ct) {
            headers.insert(CONTENT_TYPE, value);
        }
    }
    (headers, data_bytes(event.data()))
}

/// The data of an event as the bytes of a binary-mode body.
pub fn data_bytes(data: Option<&Data>) -> Vec<u8> {
    match data {
        None => Vec::new(),
        Some(Data::Binary(b)) => b.clone(),
        Some(Data::String(s)) => s.as_bytes().to_vec(),
        Some(Data::Json(v)) => v.to_string().into_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudevents::{EventBuilder, EventBuilderV10};

    #[test]
    fn header_values_are_percent_encoded_as_the_http_binding_says() {
        assert_eq!(encode_header_value("a b"), "a%20b");
        assert_eq!(encode_header_value("100%"), "100%25");
        assert_eq!(encode_header_value("say \"hi\""), "say%20%22hi%22");
        assert_eq!(encode_header_value("Euro €"), "Euro%20%E2%82%AC");
        assert_eq!(encode_header_value("/a/b?c=d"), "/a/b?c=d");
    }

    #[test]
    fn decoding_undoes_encoding() {
        for s in ["plain", "a b", "100% \"sure\"", "Grüße, 世界", "%"] {
            assert_eq!(
                decode_header_value(encode_header_value(s).as_bytes()).unwrap(),
                s
            );
        }
        // Values sent without encoding, as some senders do, decode as
        // themselves; bytes that are not UTF-8 are refused either way.
        assert_eq!(
            decode_header_value("Grüße 世界".as_bytes()).unwrap(),
            "Grüße 世界"
        );
        assert!(decode_header_value(b"\xff").is_err());
        assert!(decode_header_value(b"%FF").is_err());
        assert!(decode_header_value(b"%25\xff").is_err());
    }

    #[test]
    fn time_goes_out_in_the_json_formats_form() {
        let time = chrono::DateTime::parse_from_rfc3339("2026-11-26T09:30:00.1Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let event = EventBuilderV10::new()
            .id("1")
            .source("/s")
            .ty("t")
            .time(time)
            .build()
            .unwrap();
        let (headers, _) = to_http_binary(&event);
        assert_eq!(headers["ce-time"], "2026-11-26T09:30:00.100Z");
    }

    #[test]
    fn an_event_survives_http_binary_mode_with_non_ascii_values() {
        let event = EventBuilderV10::new()
            .id("id 1%")
            .source("/source")
            .ty("com.example.ü")
            .subject("Grüße \"du\"")
            .extension("comexampleext", "a value")
            .data("text/plain", "hello")
            .build()
            .unwrap();
        let (headers, body) = to_http_binary(&event);
        assert_eq!(headers["ce-subject"], "Gr%C3%BC%C3%9Fe%20%22du%22");
        let decoded = BinaryMessage::from_http(&headers, body)
            .unwrap()
            .expect("binary mode")
            .into_event()
            .unwrap();
        assert_eq!(decoded, event);
    }

    #[test]
    fn a_json_body_becomes_json_data_and_bad_json_stays_bytes() {
        let mut headers = HeaderMap::new();
        headers.insert("ce-specversion", HeaderValue::from_static("1.0"));
        headers.insert("ce-id", HeaderValue::from_static("1"));
        headers.insert("ce-source", HeaderValue::from_static("/s"));
        headers.insert("ce-type", HeaderValue::from_static("t"));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let event = |headers: &HeaderMap, body: &[u8]| {
            BinaryMessage::from_http(headers, body.to_vec())
                .unwrap()
                .unwrap()
                .into_event()
                .unwrap()
        };
        assert_eq!(
            event(&headers, br#"{"a":1}"#).data(),
            Some(&Data::Json(serde_json::json!({"a": 1})))
        );
        assert_eq!(
            event(&headers, b"{not json").data(),
            Some(&Data::Binary(b"{not json".to_vec()))
        );
        headers.remove(CONTENT_TYPE);
        assert_eq!(
            event(&headers, b"[1]").data(),
            Some(&Data::Json(serde_json::json!([1])))
        );
        assert_eq!(
            event(&headers, b"\x00\x01").data(),
            Some(&Data::Binary(vec![0, 1]))
        );
    }

    /// Found by `make fuzz`: these bodies became JSON data that the SDK
    /// would not read back from the stored event.
    #[test]
    fn a_body_is_json_data_only_under_a_content_type_the_sdk_reads_as_json() {
        let event = |content_type: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert("ce-specversion", HeaderValue::from_static("1.0"));
            headers.insert("ce-id", HeaderValue::from_static("1"));
            headers.insert("ce-source", HeaderValue::from_static("/s"));
            headers.insert("ce-type", HeaderValue::from_static("t"));
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            BinaryMessage::from_http(&headers, br#"{"a":1}"#.to_vec())
                .unwrap()
                .unwrap()
                .into_event()
                .unwrap()
        };
        for json in [
            "application/json",
            "application/json; charset=utf-8",
            "application/x+json",
        ] {
            let event = event(json);
            assert!(matches!(event.data(), Some(Data::Json(_))), "{json}");
        }
        for other in ["Application/JSON", "application/x+json; charset=utf-8"] {
            let event = event(other);
            assert!(matches!(event.data(), Some(Data::Binary(_))), "{other}");
            let stored = serde_json::to_string(&event).unwrap();
            let read_back: Event = serde_json::from_str(&stored).unwrap();
            assert_eq!(read_back, event, "{other}");
        }
    }

    #[test]
    fn a_request_without_specversion_is_not_binary_mode() {
        let headers = HeaderMap::new();
        assert_eq!(BinaryMessage::from_http(&headers, vec![]).unwrap(), None);
    }

    #[test]
    fn kafka_headers_without_a_value_are_an_error_not_a_panic() {
        let headers = vec![("ce_specversion", Some(&b"1.0"[..])), ("ce_id", None)];
        assert!(BinaryMessage::from_kafka(headers, vec![]).is_err());
    }

    #[test]
    fn an_event_survives_nats_binary_mode_with_non_ascii_values() {
        let event = EventBuilderV10::new()
            .id("id 1%")
            .source("/source")
            .ty("com.example.ü")
            .subject("Grüße \"du\"")
            .extension("comexampleext", "a value")
            .data("application/json", serde_json::json!({"a": 1}))
            .build()
            .unwrap();
        let (headers, body) = to_nats_binary(&event);
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(header("ce-subject"), Some("Gr%C3%BC%C3%9Fe%20%22du%22"));
        assert_eq!(header(NATS_DATACONTENTTYPE), Some("application/json"));
        assert_eq!(header("ce-specversion"), Some("1.0"));
        assert!(headers
            .iter()
            .all(|(_, v)| v.is_ascii() && !v.contains(' ')));
        let decoded =
            BinaryMessage::from_nats(headers.iter().map(|(n, v)| (n.as_str(), v.as_str())), body)
                .unwrap()
                .expect("binary mode")
                .into_event()
                .unwrap();
        assert_eq!(decoded, event);
    }

    #[test]
    fn nats_headers_are_read_in_any_case_quoted_or_not_and_content_type_is_a_fallback() {
        let headers = [
            ("CE-SpecVersion", "1.0"),
            ("Ce-Id", "\"a \\\"quoted\\\" id\""),
            ("ce-source", "/s"),
            ("ce-type", "t"),
            ("Content-Type", "text/plain"),
            ("Nats-Msg-Id", "ignored"),
        ];
        let message = BinaryMessage::from_nats(headers, b"hi".to_vec())
            .unwrap()
            .expect("binary mode");
        assert_eq!(message.content_type.as_deref(), Some("text/plain"));
        let event = message.into_event().unwrap();
        assert_eq!(event.id(), "a \"quoted\" id");
        assert_eq!(event.data(), Some(&Data::String("hi".into())));
        assert_eq!(
            BinaryMessage::from_nats([("ce-id", "1")], vec![]).unwrap(),
            None
        );
        // Invalid UTF-8 after percent-decoding is refused (overlong space).
        assert!(decode_nats_header_value("%C0%A0").is_err());
    }

    #[test]
    fn structured_mode_is_recognised_in_any_case() {
        assert!(is_cloudevents_media_type(
            "Application/CloudEvents+JSON; charset=utf-8"
        ));
        assert!(is_cloudevents_media_type(STRUCTURED_JSON));
        assert!(!is_cloudevents_media_type("application/json"));
    }
}
