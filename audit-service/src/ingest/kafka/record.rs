//! The CloudEvents Kafka protocol binding on receipt: one record, decoded
//! as the binding says, without ever handing the SDK a record it would
//! panic on.

use crate::decoded::Decoded;
use crate::ingest::decode::{binary, from_message_error, structured_message, DecodeError};
use rdkafka::message::{Headers, Message};
use shared::binding::{is_cloudevents_media_type, BinaryMessage};

/// Decodes one record per the CloudEvents Kafka binding, without ever
/// handing the SDK a record it would panic on (a null header value, a null
/// structured payload).
pub fn decode(message: &impl Message) -> Result<Decoded, DecodeError> {
    let headers: Vec<(&str, Option<&[u8]>)> = message
        .headers()
        .map(|h| h.iter().map(|h| (h.key, h.value)).collect())
        .unwrap_or_default();
    let payload = message.payload().unwrap_or_default();
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
    match BinaryMessage::from_kafka(headers, payload.to_vec()) {
        Ok(Some(message)) => binary(message),
        Ok(None) => Err(DecodeError::NotACloudEvent(
            "no ce_specversion header and no application/cloudevents content-type".into(),
        )),
        Err(e) => Err(from_message_error(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
    use rdkafka::Timestamp;

    fn record(headers: Option<OwnedHeaders>, payload: Option<&[u8]>) -> OwnedMessage {
        OwnedMessage::new(
            payload.map(<[u8]>::to_vec),
            None,
            "t".into(),
            Timestamp::NotAvailable,
            0,
            0,
            headers,
        )
    }

    #[test]
    fn a_null_header_value_is_an_error_not_a_panic() {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "ce_specversion",
                value: Some("1.0"),
            })
            .insert(Header::<&str> {
                key: "ce_id",
                value: None,
            });
        assert!(decode(&record(Some(headers), Some(b"x"))).is_err());
    }

    #[test]
    fn a_structured_record_without_payload_is_an_error() {
        let headers = OwnedHeaders::new().insert(Header {
            key: "content-type",
            value: Some("application/cloudevents+json"),
        });
        let err = decode(&record(Some(headers), None)).unwrap_err();
        assert!(err.to_string().contains("payload"), "{err}");
    }

    #[test]
    fn a_record_without_headers_is_not_a_cloudevent() {
        assert!(matches!(
            decode(&record(None, Some(b"{}"))),
            Err(DecodeError::NotACloudEvent(_))
        ));
    }

    #[test]
    fn upper_case_structured_content_type_is_structured_mode() {
        let headers = OwnedHeaders::new().insert(Header {
            key: "Content-Type",
            value: Some("Application/CloudEvents+JSON; charset=UTF-8"),
        });
        let body = br#"{"specversion":"1.0","id":"1","source":"/s","type":"t"}"#;
        assert!(decode(&record(Some(headers), Some(body))).is_ok());
    }
}
