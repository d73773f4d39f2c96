//! The attribute checks every decoder applies, so that a refusal names the
//! attribute: the characters a CloudEvents string may hold, the forms of
//! the typed attributes the SDK parses (`time`, the schema URL), and the
//! value types of a JSON-format event's attributes and extensions.

use super::DecodeError;
use crate::limits::check_attribute_size;
use chrono::DateTime;
use cloudevents::event::SpecVersion;
use serde_json::{Map, Value};
use shared::cloudevents;
use shared::validate::{code_point, forbidden_character};

pub(super) fn check_json_attributes(
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
pub(super) fn check_string_attribute(
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
pub(super) fn check_characters(name: &str, value: &str) -> Result<(), DecodeError> {
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
