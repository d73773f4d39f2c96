//! The CloudEvents MQTT protocol binding on receipt: the binding itself
//! (`cloudevents_wire::binding::mqtt`) tells the content mode apart and reads the
//! user properties; the event is then checked as on every transport.

use crate::ingest::decode::Decoded;
use crate::ingest::decode::{binary, structured, DecodeError};
use cloudevents_wire::binding::mqtt::{MqttContent, MqttMessage, MqttReadError};
use rumqttc::v5::mqttbytes::v5::Publish;

/// The parts of a PUBLISH the binding reads.
pub fn binding_message(publish: &Publish) -> MqttMessage {
    let properties = publish.properties.as_ref();
    MqttMessage {
        content_type: properties.and_then(|p| p.content_type.clone()),
        user_properties: properties
            .map(|p| p.user_properties.clone())
            .unwrap_or_default(),
        payload: publish.payload.to_vec(),
    }
}

/// Decodes one MQTT message: structured mode (an `application/cloudevents`
/// Content Type, or an MQTT 3.1.1 message, which has no properties) or
/// binary mode (user properties, `ce-` prefixed ones from the Go SDK).
pub fn decode(message: MqttMessage) -> Result<Decoded, DecodeError> {
    match message.content() {
        Ok(MqttContent::Structured(payload)) => structured(payload),
        Ok(MqttContent::Binary(binary_message)) => binary(binary_message),
        Err(MqttReadError::NotACloudEvent(why)) => Err(DecodeError::NotACloudEvent(why)),
        Err(MqttReadError::Invalid(invalid)) => Err(DecodeError::Invalid(invalid)),
        Err(other) => Err(DecodeError::Other(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudevents_wire::cloudevents::AttributesReader;

    fn message(
        content_type: Option<&str>,
        properties: &[(&str, &str)],
        payload: &[u8],
    ) -> MqttMessage {
        MqttMessage {
            content_type: content_type.map(str::to_owned),
            user_properties: properties
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            payload: payload.to_vec(),
        }
    }

    #[test]
    fn binary_structured_and_mqtt_3_messages_are_read_as_the_binding_says() {
        let binary = decode(message(
            Some("application/json"),
            &[
                ("specversion", "1.0"),
                ("id", "m1"),
                ("source", "/s"),
                ("type", "t"),
                ("subject", "Grüße"),
            ],
            br#"{"a":1}"#,
        ))
        .unwrap()
        .event;
        assert_eq!(binary.subject(), Some("Grüße"));
        assert_eq!(binary.datacontenttype(), Some("application/json"));
        let body = br#"{"specversion":"1.0","id":"m2","source":"/s","type":"t"}"#;
        let structured = decode(message(Some("application/cloudevents+json"), &[], body));
        assert_eq!(structured.unwrap().event.id(), "m2");
        assert_eq!(decode(message(None, &[], body)).unwrap().event.id(), "m2");
        let go = decode(message(
            None,
            &[
                ("ce-specversion", "1.0"),
                ("ce-id", "m3"),
                ("ce-source", "/s"),
                ("ce-type", "t"),
            ],
            b"",
        ));
        assert_eq!(go.unwrap().event.id(), "m3");
    }

    #[test]
    fn every_transport_s_checks_apply() {
        let control = decode(message(
            None,
            &[
                ("specversion", "1.0"),
                ("id", "a\u{1}b"),
                ("source", "/s"),
                ("type", "t"),
            ],
            b"",
        ))
        .unwrap_err();
        assert!(control.to_string().contains("U+0001"), "{control}");
        let long = "x".repeat(cloudevents_wire::limits::MAX_INDEXED_BYTES + 1);
        let oversized = decode(message(
            None,
            &[
                ("specversion", "1.0"),
                ("id", "1"),
                ("source", "/s"),
                ("type", "t"),
                ("subject", &long),
            ],
            b"",
        ))
        .unwrap_err();
        assert!(oversized.to_string().contains("subject"), "{oversized}");
        let garbage = decode(message(Some("text/plain"), &[("x", "y")], b"garbage")).unwrap_err();
        assert!(
            matches!(garbage, DecodeError::NotACloudEvent(_)),
            "{garbage}"
        );
        let repeated = decode(message(
            None,
            &[
                ("specversion", "1.0"),
                ("id", "1"),
                ("id", "2"),
                ("source", "/s"),
                ("type", "t"),
            ],
            b"",
        ))
        .unwrap_err();
        assert!(
            repeated.to_string().contains("more than once"),
            "{repeated}"
        );
    }
}
