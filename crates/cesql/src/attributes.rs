//! Where an expression reads an event's attributes: the SDK's typed event, or the JSON format as stored (§3.2).

use std::borrow::Cow;

use chrono::SecondsFormat;
use cloudevents::event::{AttributeValue, ExtensionValue};
use cloudevents::Event;
use serde_json::{Map, Value};

/// An attribute's value as CESQL reads it. Values that are not a CESQL
/// type (URIs, timestamps, binary) are strings, as the spec requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attribute<'a> {
    String(Cow<'a, str>),
    Boolean(bool),
    /// An integer extension. One beyond 32 bits is not a CESQL Integer, and
    /// reads as its decimal string.
    Integer(i64),
}

/// An event whose attributes an expression can read: the context
/// attributes and extensions by their lower-case names.
pub trait Attributes {
    /// The attribute `name`, or `None` when the event does not have it.
    fn attribute(&self, name: &str) -> Option<Attribute<'_>>;
}

/// The SDK's typed event. It keeps `time` as a UTC instant and the schema
/// URL parsed, so those read as the SDK writes them (`...Z`, a normalised
/// URL), not necessarily as the producer did; the JSON form below keeps
/// them as written. Attributes come from the SDK's iterator, so the names
/// of either spec version work (`dataschema` in 1.0, `schemaurl` in 0.3).
impl Attributes for Event {
    fn attribute(&self, name: &str) -> Option<Attribute<'_>> {
        if let Some((_, value)) = self.iter_attributes().find(|(n, _)| *n == name) {
            return Some(match value {
                AttributeValue::String(s) => Attribute::String(Cow::Borrowed(s)),
                AttributeValue::URIRef(s) => Attribute::String(Cow::Borrowed(s.as_str())),
                AttributeValue::URI(u) => Attribute::String(Cow::Borrowed(u.as_str())),
                AttributeValue::Time(t) => {
                    Attribute::String(Cow::Owned(t.to_rfc3339_opts(SecondsFormat::AutoSi, true)))
                }
                AttributeValue::Boolean(b) => Attribute::Boolean(*b),
                AttributeValue::Integer(i) => Attribute::Integer(*i),
                other @ (AttributeValue::Binary(_) | AttributeValue::SpecVersion(_)) => {
                    Attribute::String(Cow::Owned(other.to_string()))
                }
            });
        }
        Some(match self.extension(name)? {
            ExtensionValue::String(s) => Attribute::String(Cow::Borrowed(s)),
            ExtensionValue::Boolean(b) => Attribute::Boolean(*b),
            ExtensionValue::Integer(i) => Attribute::Integer(*i),
        })
    }
}

/// An event in the JSON event format (the object of `application/
/// cloudevents+json`), read exactly as written: `time` with the offset and
/// digits it was sent with, `dataschema` (0.3's `schemaurl`) unparsed. This
/// is the form a store keeps, so a filter sees the values the store serves.
/// Every member but `data` and `data_base64` is an attribute; `null` is
/// absent (JSON format §3.1).
impl Attributes for Map<String, Value> {
    fn attribute(&self, name: &str) -> Option<Attribute<'_>> {
        if name == "data" || name == "data_base64" {
            return None;
        }
        Some(match self.get(name)? {
            Value::String(s) => Attribute::String(Cow::Borrowed(s)),
            Value::Bool(b) => Attribute::Boolean(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Attribute::Integer(i),
                None => Attribute::String(Cow::Owned(n.to_string())),
            },
            Value::Null | Value::Array(_) | Value::Object(_) => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudevents::{EventBuilder, EventBuilderV10};

    #[test]
    fn the_json_form_reads_values_as_written() {
        let json = serde_json::json!({
            "specversion": "1.0", "id": "1", "source": "/s", "type": "t",
            "time": "2024-05-01T10:00:00.5+02:00", "dataschema": "https://example.com",
            "flag": true, "big": 4_294_967_296_i64, "nothing": null, "data": {"x": 1},
        });
        let Value::Object(map) = json else {
            unreachable!("an object")
        };
        fn text(s: &str) -> Option<Attribute<'_>> {
            Some(Attribute::String(Cow::Borrowed(s)))
        }
        assert_eq!(map.attribute("time"), text("2024-05-01T10:00:00.5+02:00"));
        assert_eq!(map.attribute("dataschema"), text("https://example.com"));
        assert_eq!(map.attribute("flag"), Some(Attribute::Boolean(true)));
        assert_eq!(
            map.attribute("big"),
            Some(Attribute::Integer(4_294_967_296))
        );
        assert_eq!(map.attribute("nothing"), None);
        assert_eq!(map.attribute("data"), None);
        assert_eq!(map.attribute("subject"), None);
    }

    #[test]
    fn the_sdk_form_reads_time_in_utc() {
        let event = EventBuilderV10::new()
            .id("1")
            .source("/s")
            .ty("t")
            .time("2024-05-01T10:00:00.5+02:00")
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            event.attribute("time"),
            Some(Attribute::String(Cow::Owned(
                "2024-05-01T08:00:00.500Z".into()
            )))
        );
    }
}
