//! The CloudEvents NATS protocol binding (1.0.3) on receipt, with the Go
//! SDK's leniency.

use crate::decoded::Decoded;
use crate::ingest::decode::{
    binary, from_message_error, structured, structured_message, DecodeError,
};
use shared::binding::{is_cloudevents_media_type, BinaryMessage};

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
pub fn decode(headers: &[(&str, &str)], payload: &[u8]) -> Result<Decoded, DecodeError> {
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
    use shared::cloudevents::AttributesReader;

    #[test]
    fn nats_binary_and_structured_modes_are_read_as_the_binding_says() {
        let binary = decode(
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
        let structured = decode(&[("Content-Type", "application/cloudevents+json")], body);
        assert_eq!(structured.unwrap().event.id(), "n2");
        // The Go SDK's structured mode: the payload alone.
        assert_eq!(decode(&[], body).unwrap().event.id(), "n2");
    }

    #[test]
    fn nats_messages_that_are_not_cloudevents_say_why() {
        let garbage = decode(&[], b"garbage").unwrap_err();
        assert!(
            matches!(garbage, DecodeError::NotACloudEvent(_)),
            "{garbage}"
        );
        let empty = decode(&[("x", "y")], b"").unwrap_err();
        assert!(empty.to_string().contains("no payload"), "{empty}");
        let headerless = decode(&[], br#"{"id":"1"}"#).unwrap_err();
        assert_eq!(
            headerless,
            DecodeError::MissingAttribute("specversion".into())
        );
        let no_body = decode(&[("content-type", "application/cloudevents+json")], b"");
        assert!(no_body.unwrap_err().to_string().contains("payload"));
        let no_type = decode(
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
