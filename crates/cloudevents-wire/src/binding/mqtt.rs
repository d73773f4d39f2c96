//! The CloudEvents MQTT protocol binding (1.0.2), both ways, on plain
//! values (content type, user properties, payload) so that any MQTT client
//! carries it; cloudevents-sdk 0.9 has no MQTT binding at all.
//!
//! - Binary mode (MQTT 5 only): the data is the payload, `datacontenttype`
//!   is the PUBLISH's Content Type property, and every attribute is a user
//!   property under its own name, unprefixed (binding 3.1.3.1), its value
//!   in the attribute's canonical string form (3.1.3.2), not
//!   percent-encoded as over HTTP.
//! - Structured mode: the payload is the event in the JSON format, with
//!   Content Type `application/cloudevents+json` over MQTT 5; over MQTT
//!   3.1.1, which has no properties, a message is always structured and
//!   the JSON format is implied (3.2.1).
//!
//! Sending, `datacontenttype` also goes out as a user property, as the
//! binding's own binary-mode example shows: receivers that take attributes
//! only from user properties (the JavaScript SDK's binding does) keep it.
//!
//! Receiving, the mode is told apart as the binding says (section 3): a
//! Content Type starting with `application/cloudevents` is structured
//! mode; otherwise a `specversion` user property means binary mode; a
//! message with neither a Content Type nor user properties is read as
//! structured mode from an MQTT 3.1.1 client. Two rules of our own:
//! - `ce-` prefixed names are read too, as a compatibility rule for the Go
//!   SDK (sdk-go's mqtt_paho binding writes `ce-id`, `ce-specversion` and
//!   so on): a message with `ce-specversion` and no `specversion` is read
//!   with the prefix, and its unprefixed properties are left alone.
//! - a repeated attribute, or a `datacontenttype` user property that says
//!   otherwise than the Content Type, is refused: an audit trail must not
//!   pick one of two values.
//!
//! What is read is checked by `crate::validate`, as on every transport.

use super::{data_bytes, is_cloudevents_media_type, BinaryMessage, STRUCTURED_JSON};
use crate::validate::{validate, validate_json_form, InvalidEvent};
use chrono::SecondsFormat;
use cloudevents::event::AttributeValue;
use cloudevents::{AttributesReader, Event};

/// The longest UTF-8 string MQTT can carry (a two-byte length prefix).
const MAX_STRING: usize = u16::MAX as usize;

/// The prefix sdk-go's mqtt_paho binding puts before every attribute name.
const GO_SDK_PREFIX: &str = "ce-";

/// The parts of an MQTT PUBLISH the binding uses, as a client sends or
/// receives them. Over MQTT 3.1.1 `content_type` is `None` and
/// `user_properties` is empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MqttMessage {
    /// The MQTT 5 Content Type property.
    pub content_type: Option<String>,
    /// MQTT 5 user properties, in order; a name may repeat.
    pub user_properties: Vec<(String, String)>,
    pub payload: Vec<u8>,
}

/// What a received message holds, once its content mode is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MqttContent<'a> {
    /// A JSON-format event: the payload, not empty.
    Structured(&'a [u8]),
    Binary(BinaryMessage),
}

/// Why an event cannot go out as an MQTT message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MqttEncodeError {
    #[error("attribute `{name}` cannot be an MQTT string: {reason}")]
    Attribute { name: String, reason: &'static str },
    #[error("the event does not serialize as JSON: {0}")]
    Json(String),
}

/// Why a received message is not a CloudEvent we accept. The `Display`
/// text names what is wrong, for a problem detail or a dead-letter header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MqttReadError {
    #[error("the message is not a CloudEvent: {0}")]
    NotACloudEvent(String),
    #[error("structured-mode format {0:?} is not supported: use {STRUCTURED_JSON}")]
    UnsupportedFormat(String),
    #[error("user property `{0}` appears more than once")]
    RepeatedProperty(String),
    #[error(
        "the datacontenttype user property {property:?} disagrees with the Content Type {content_type:?}"
    )]
    ContentTypeMismatch {
        property: String,
        content_type: String,
    },
    #[error("invalid CloudEvent: {0}")]
    Event(String),
    #[error("{0}")]
    Invalid(#[from] InvalidEvent),
}

impl MqttMessage {
    /// The event in binary mode (MQTT 5).
    pub fn binary(event: &Event) -> Result<Self, MqttEncodeError> {
        let mut user_properties = Vec::new();
        for (name, value) in event.iter() {
            // `time` as the JSON format writes it (`...Z`), not the SDK's
            // `+00:00`, as over HTTP: one form whichever mode brought it.
            let value = match value {
                AttributeValue::Time(time) => time.to_rfc3339_opts(SecondsFormat::AutoSi, true),
                other => other.to_string(),
            };
            check_string(name, &value)?;
            user_properties.push((name.to_owned(), value));
        }
        Ok(MqttMessage {
            content_type: event.datacontenttype().map(str::to_owned),
            user_properties,
            payload: data_bytes(event.data()),
        })
    }

    /// The event in structured mode, in the JSON format.
    pub fn structured(event: &Event) -> Result<Self, MqttEncodeError> {
        let payload =
            serde_json::to_vec(event).map_err(|e| MqttEncodeError::Json(e.to_string()))?;
        Ok(MqttMessage {
            content_type: Some(STRUCTURED_JSON.to_owned()),
            user_properties: Vec::new(),
            payload,
        })
    }

    /// The first user property called `name`.
    pub fn user_property(&self, name: &str) -> Option<&str> {
        self.user_properties
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Tells the content mode apart and reads the binary-mode attributes,
    /// as the module documentation says.
    pub fn content(&self) -> Result<MqttContent<'_>, MqttReadError> {
        if let Some(content_type) = self
            .content_type
            .as_deref()
            .filter(|ct| is_cloudevents_media_type(ct))
        {
            let format = super::media_type(content_type);
            if format != STRUCTURED_JSON {
                return Err(MqttReadError::UnsupportedFormat(format));
            }
            return self.structured_payload();
        }
        let has = |name: &str| self.user_property(name).is_some();
        let prefix = if has("specversion") {
            ""
        } else if has("ce-specversion") {
            GO_SDK_PREFIX
        } else if self.content_type.is_none() && self.user_properties.is_empty() {
            // MQTT 3.1.1: structured mode, the JSON format implied.
            return self.structured_payload();
        } else {
            return Err(MqttReadError::NotACloudEvent(
                "no specversion user property and no application/cloudevents Content Type".into(),
            ));
        };
        self.binary_message(prefix).map(MqttContent::Binary)
    }

    /// The whole event, validated as on every transport, in a form the
    /// JSON format can keep.
    pub fn to_event(&self) -> Result<Event, MqttReadError> {
        let event = match self.content()? {
            MqttContent::Structured(payload) => serde_json::from_slice::<Event>(payload)
                .map_err(|e| MqttReadError::Event(e.to_string()))?,
            MqttContent::Binary(message) => message
                .into_event()
                .map_err(|e| MqttReadError::Event(e.to_string()))?,
        };
        validate(&event)?;
        validate_json_form(&event)?;
        Ok(event)
    }

    fn structured_payload(&self) -> Result<MqttContent<'_>, MqttReadError> {
        if self.payload.is_empty() {
            return Err(MqttReadError::NotACloudEvent(
                "a structured-mode message needs a payload".into(),
            ));
        }
        Ok(MqttContent::Structured(&self.payload))
    }

    /// The attributes under `prefix` (empty: every user property).
    fn binary_message(&self, prefix: &str) -> Result<BinaryMessage, MqttReadError> {
        let mut spec_version = None;
        let mut content_type_property = None;
        let mut attributes: Vec<(String, String)> = Vec::new();
        for (name, value) in &self.user_properties {
            let Some(attribute) = name.strip_prefix(prefix) else {
                continue;
            };
            let repeated = attributes.iter().any(|(a, _)| a == attribute)
                || (attribute == "specversion" && spec_version.is_some())
                || (attribute == "datacontenttype" && content_type_property.is_some());
            if repeated {
                return Err(MqttReadError::RepeatedProperty(name.clone()));
            }
            match attribute {
                "specversion" => spec_version = Some(value.clone()),
                "datacontenttype" => content_type_property = Some(value.clone()),
                _ => attributes.push((attribute.to_owned(), value.clone())),
            }
        }
        let content_type = match (&self.content_type, content_type_property) {
            (Some(content_type), Some(property)) if *content_type != property => {
                return Err(MqttReadError::ContentTypeMismatch {
                    property,
                    content_type: content_type.clone(),
                })
            }
            (Some(content_type), _) => Some(content_type.clone()),
            (None, property) => property,
        };
        Ok(BinaryMessage {
            // Present: `content` chose binary mode by it.
            spec_version: spec_version.unwrap_or_default(),
            attributes,
            content_type,
            body: self.payload.clone(),
        })
    }
}

/// MQTT strings are UTF-8 of at most 65,535 bytes, without U+0000 (MQTT
/// 5.0, 1.5.4): a broker closes the connection on anything else.
fn check_string(name: &str, value: &str) -> Result<(), MqttEncodeError> {
    let reason = if value.len() > MAX_STRING {
        "longer than 65,535 bytes"
    } else if value.contains('\0') {
        "it holds U+0000"
    } else {
        return Ok(());
    };
    Err(MqttEncodeError::Attribute {
        name: name.to_owned(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudevents::{Data, EventBuilder, EventBuilderV03, EventBuilderV10};

    fn event() -> Event {
        let time = chrono::DateTime::parse_from_rfc3339("2026-11-26T09:30:00.1Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        EventBuilderV10::new()
            .id("id 1%")
            .source("/user-service")
            .ty("user.storeUser")
            .subject("Grüße \"du\"")
            .time(time)
            .extension(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            )
            .extension("comexampleflag", true)
            .extension("comexamplecount", 42)
            .data(
                "application/json",
                serde_json::json!({"id": "1", "name": "Ozzy"}),
            )
            .build()
            .unwrap()
    }

    fn minimal(properties: &[(&str, &str)]) -> MqttMessage {
        MqttMessage {
            content_type: None,
            user_properties: properties
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            payload: Vec::new(),
        }
    }

    #[test]
    fn binary_mode_writes_unprefixed_properties_and_the_content_type() {
        let message = MqttMessage::binary(&event()).unwrap();
        assert_eq!(message.content_type.as_deref(), Some("application/json"));
        assert_eq!(message.user_property("specversion"), Some("1.0"));
        assert_eq!(message.user_property("id"), Some("id 1%"));
        assert_eq!(message.user_property("type"), Some("user.storeUser"));
        // Canonical strings, not percent-encoded as over HTTP.
        assert_eq!(message.user_property("subject"), Some("Grüße \"du\""));
        assert_eq!(
            message.user_property("time"),
            Some("2026-11-26T09:30:00.100Z")
        );
        assert_eq!(message.user_property("comexampleflag"), Some("true"));
        assert_eq!(message.user_property("comexamplecount"), Some("42"));
        assert_eq!(
            message.user_property("datacontenttype"),
            Some("application/json")
        );
        assert!(message
            .user_properties
            .iter()
            .all(|(name, _)| !name.starts_with("ce")));
        let data: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(data, serde_json::json!({"id": "1", "name": "Ozzy"}));
    }

    /// Binary mode carries values as strings: a boolean or integer
    /// extension comes back as its canonical string, as over HTTP.
    #[test]
    fn an_event_survives_binary_mode() {
        let event = event();
        let message = MqttMessage::binary(&event).unwrap();
        assert!(matches!(message.content(), Ok(MqttContent::Binary(_))));
        let mut expected = event.clone();
        expected.set_extension("comexampleflag", "true");
        expected.set_extension("comexamplecount", "42");
        assert_eq!(message.to_event().unwrap(), expected);
    }

    #[test]
    fn an_event_survives_structured_mode() {
        let event = event();
        let message = MqttMessage::structured(&event).unwrap();
        assert_eq!(message.content_type.as_deref(), Some(STRUCTURED_JSON));
        assert!(message.user_properties.is_empty());
        let json: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(json["specversion"], "1.0");
        assert_eq!(json["data"]["name"], "Ozzy");
        assert_eq!(message.to_event().unwrap(), event);
    }

    #[test]
    fn a_0_3_event_survives_both_modes() {
        let event = EventBuilderV03::new()
            .id("1")
            .source("/s")
            .ty("t")
            .data("text/plain", "hello")
            .build()
            .unwrap();
        for message in [
            MqttMessage::binary(&event).unwrap(),
            MqttMessage::structured(&event).unwrap(),
        ] {
            assert_eq!(message.to_event().unwrap(), event);
        }
    }

    #[test]
    fn an_mqtt_3_1_1_message_is_structured_mode_with_json_implied() {
        let mut message = MqttMessage::structured(&event()).unwrap();
        message.content_type = None;
        assert!(matches!(message.content(), Ok(MqttContent::Structured(_))));
        assert_eq!(message.to_event().unwrap(), event());
        message.payload.clear();
        assert!(matches!(
            message.content(),
            Err(MqttReadError::NotACloudEvent(_))
        ));
    }

    #[test]
    fn structured_mode_is_recognised_in_any_case_and_only_json_is_read() {
        let mut message = MqttMessage::structured(&event()).unwrap();
        message.content_type = Some("Application/CloudEvents+JSON; charset=utf-8".into());
        assert_eq!(message.to_event().unwrap(), event());
        message.content_type = Some("application/cloudevents+avro".into());
        assert_eq!(
            message.content(),
            Err(MqttReadError::UnsupportedFormat(
                "application/cloudevents+avro".into()
            ))
        );
    }

    /// What sdk-go's mqtt_paho binding sends in binary mode.
    #[test]
    fn go_sdk_ce_prefixed_properties_are_read_as_a_compatibility_rule() {
        let message = MqttMessage {
            content_type: Some("application/json".into()),
            user_properties: vec![
                ("ce-specversion".into(), "1.0".into()),
                ("ce-id".into(), "1".into()),
                ("ce-source".into(), "/go".into()),
                ("ce-type".into(), "t".into()),
                ("ce-comexampleext".into(), "v".into()),
                ("unrelated".into(), "left alone".into()),
            ],
            payload: br#"{"a":1}"#.to_vec(),
        };
        let event = message.to_event().unwrap();
        assert_eq!(event.id(), "1");
        assert_eq!(event.source().as_str(), "/go");
        assert_eq!(event.datacontenttype(), Some("application/json"));
        assert_eq!(event.extension("comexampleext").unwrap().to_string(), "v");
        assert!(event.extension("unrelated").is_none());
        assert_eq!(event.data(), Some(&Data::Json(serde_json::json!({"a": 1}))));
    }

    #[test]
    fn unprefixed_names_win_over_the_prefixed_ones() {
        let message = minimal(&[
            ("specversion", "1.0"),
            ("id", "1"),
            ("source", "/s"),
            ("type", "t"),
            ("ce-id", "2"),
        ]);
        // `ce-id` is then an extension name the spec does not allow.
        assert_eq!(
            message.to_event(),
            Err(MqttReadError::Invalid(InvalidEvent::ExtensionName(
                "ce-id".into()
            )))
        );
    }

    #[test]
    fn the_content_type_property_wins_and_the_user_property_is_a_fallback() {
        let mut message = minimal(&[
            ("specversion", "1.0"),
            ("id", "1"),
            ("source", "/s"),
            ("type", "t"),
            ("datacontenttype", "text/plain"),
        ]);
        message.payload = b"hi".to_vec();
        assert_eq!(
            message.to_event().unwrap().datacontenttype(),
            Some("text/plain")
        );
        message.content_type = Some("text/plain".into());
        assert_eq!(
            message.to_event().unwrap().data(),
            Some(&Data::String("hi".into()))
        );
        message.content_type = Some("application/octet-stream".into());
        assert!(matches!(
            message.content(),
            Err(MqttReadError::ContentTypeMismatch { .. })
        ));
    }

    #[test]
    fn a_repeated_attribute_is_refused() {
        for repeated in ["id", "specversion", "datacontenttype"] {
            let mut properties = vec![
                ("specversion", "1.0"),
                ("id", "1"),
                ("source", "/s"),
                ("type", "t"),
                ("datacontenttype", "text/plain"),
            ];
            properties.push((repeated, "again"));
            assert_eq!(
                minimal(&properties).content(),
                Err(MqttReadError::RepeatedProperty(repeated.into())),
                "{repeated}"
            );
        }
    }

    #[test]
    fn a_message_without_specversion_or_a_cloudevents_content_type_is_not_an_event() {
        let mut message = minimal(&[("id", "1")]);
        assert!(matches!(
            message.content(),
            Err(MqttReadError::NotACloudEvent(_))
        ));
        message.user_properties.clear();
        message.content_type = Some("application/json".into());
        message.payload = b"{}".to_vec();
        assert!(matches!(
            message.content(),
            Err(MqttReadError::NotACloudEvent(_))
        ));
    }

    #[test]
    fn received_events_are_validated_as_on_every_transport() {
        let missing_type = minimal(&[("specversion", "1.0"), ("id", "1"), ("source", "/s")]);
        assert!(matches!(
            missing_type.to_event(),
            Err(MqttReadError::Event(_))
        ));
        let empty_id = minimal(&[
            ("specversion", "1.0"),
            ("id", ""),
            ("source", "/s"),
            ("type", "t"),
        ]);
        assert_eq!(
            empty_id.to_event(),
            Err(MqttReadError::Invalid(InvalidEvent::EmptyAttribute("id")))
        );
        let forged_data = minimal(&[
            ("specversion", "1.0"),
            ("id", "1"),
            ("source", "/s"),
            ("type", "t"),
            ("data", "forged"),
        ]);
        assert_eq!(
            forged_data.to_event(),
            Err(MqttReadError::Invalid(InvalidEvent::ReservedName(
                "data".into()
            )))
        );
        let bad_version = minimal(&[
            ("specversion", "9.9"),
            ("id", "1"),
            ("source", "/s"),
            ("type", "t"),
        ]);
        assert!(matches!(
            bad_version.to_event(),
            Err(MqttReadError::Event(_))
        ));
    }

    /// Found by `make fuzz`: the JSON form of this event cannot be read
    /// back, so a structured copy of it was refused.
    #[test]
    fn a_0_3_binary_event_whose_json_body_does_not_parse_is_refused() {
        let mut message = minimal(&[
            ("specversion", "0.3"),
            ("id", "1"),
            ("source", "/s"),
            ("type", "t"),
        ]);
        message.content_type = Some("application/json".into());
        message.payload = br#"{"v":"0.3#}"#.to_vec();
        assert_eq!(
            message.to_event(),
            Err(MqttReadError::Invalid(InvalidEvent::JsonDataNotJson))
        );
    }

    #[test]
    fn values_mqtt_cannot_carry_are_refused_when_sending() {
        let event = EventBuilderV10::new()
            .id("1")
            .source("/s")
            .ty("t")
            .subject("nul \0 inside")
            .build()
            .unwrap();
        assert_eq!(
            MqttMessage::binary(&event),
            Err(MqttEncodeError::Attribute {
                name: "subject".into(),
                reason: "it holds U+0000"
            })
        );
        let long = EventBuilderV10::new()
            .id("x".repeat(MAX_STRING + 1))
            .source("/s")
            .ty("t")
            .build()
            .unwrap();
        assert!(MqttMessage::binary(&long).is_err());
        // Structured mode carries both in the payload.
        assert_eq!(
            MqttMessage::structured(&event).unwrap().to_event().unwrap(),
            event
        );
    }
}
