//! Checks the CloudEvents spec makes that the SDK's parsers let through:
//! required string attributes must not be empty, an optional `subject` that
//! is present must not be either, `datacontenttype` must be an RFC 2046 media
//! type, extension names must be lower-case ASCII letters and digits, and no
//! extension may take the name of a context attribute or of a member the JSON
//! format reserves (`data`, `data_base64`). Apart: what an event must be to
//! be kept in the JSON format ([`validate_json_form`]).
//!
//! It also holds the type system's rule for String values
//! ([`forbidden_character`]), which the receiving side applies to every
//! attribute value as it arrives.

use cloudevents::event::SpecVersion;
use cloudevents::{AttributesReader, Data, Event};

/// Why an event that parsed is still not a valid CloudEvent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidEvent {
    #[error("required attribute `{0}` is empty")]
    EmptyAttribute(&'static str),
    #[error("attribute `subject` is present but empty")]
    EmptySubject,
    #[error("attribute `datacontenttype` {0:?} is not a media type (type/subtype, RFC 2046)")]
    DataContentType(String),
    #[error("extension name `{0}` is invalid: names are lower-case letters a-z and digits 0-9")]
    ExtensionName(String),
    #[error(
        "extension name `{0}` is reserved: it names a context attribute or a member of the \
         JSON event format, so it cannot be an extension"
    )]
    ReservedName(String),
    #[error("attribute `datacontenttype` is invalid: it says JSON but the body is not valid JSON")]
    JsonDataNotJson,
}

/// The first character of `value` that the CloudEvents type system forbids
/// in a String: the control characters U+0000-U+001F and U+007F-U+009F, and
/// the Unicode noncharacters (U+FDD0-U+FDEF, and the last two code points of
/// every plane). Surrogates cannot occur in a Rust string. Besides the
/// spec, a NUL is a value PostgreSQL's `text` cannot hold at all, and a line
/// break forges lines in logs and headers.
pub fn forbidden_character(value: &str) -> Option<char> {
    // Printable ASCII, what nearly every attribute value is, holds none of
    // them: a byte-at-a-time check the compiler vectorises, before decoding
    // characters (this runs on every string attribute of every event).
    if value.bytes().all(|b| matches!(b, b' '..=b'~')) {
        return None;
    }
    value.chars().find(|&c| {
        let code = u32::from(c);
        c.is_control() || (0xFDD0..=0xFDEF).contains(&code) || code & 0xFFFE == 0xFFFE
    })
}

/// How an error message names a character: `U+0000`.
pub fn code_point(c: char) -> String {
    format!("U+{:04X}", u32::from(c))
}

/// Members of the JSON event format that are not attributes of the event's
/// specversion: the data, and 0.3's `datacontentencoding` (written for
/// binary data). The SDK writes extensions after them, so an extension of
/// one of these names would follow the real member, and a reader keeping
/// the last duplicate would take the extension for the data or its encoding.
const JSON_RESERVED: &[&str] = &["data", "data_base64", "datacontentencoding"];

/// Checks what the spec requires beyond what the SDK enforces.
pub fn validate(event: &Event) -> Result<(), InvalidEvent> {
    if event.id().is_empty() {
        return Err(InvalidEvent::EmptyAttribute("id"));
    }
    if event.source().is_empty() {
        return Err(InvalidEvent::EmptyAttribute("source"));
    }
    if event.ty().is_empty() {
        return Err(InvalidEvent::EmptyAttribute("type"));
    }
    if event.subject().is_some_and(str::is_empty) {
        return Err(InvalidEvent::EmptySubject);
    }
    if let Some(ct) = event.datacontenttype() {
        if !is_media_type(ct) {
            return Err(InvalidEvent::DataContentType(ct.to_owned()));
        }
    }
    let attributes = event.specversion().attribute_names();
    for (name, _) in event.iter_extensions() {
        if !is_valid_name(name) {
            return Err(InvalidEvent::ExtensionName(name.to_owned()));
        }
        // Binary mode turns any unknown `ce-` header into an extension, so
        // `ce-data: forged` would otherwise overwrite the body once stored.
        if JSON_RESERVED.contains(&name) || attributes.contains(&name) {
            return Err(InvalidEvent::ReservedName(name.to_owned()));
        }
    }
    Ok(())
}

/// A 0.3 event's binary data is written in the JSON format as base64 with
/// `datacontentencoding`, and reading it back (the SDK does) parses the
/// decoded bytes as `datacontenttype` says. A binary-mode body that claims
/// to be JSON but does not parse (it stays bytes) would be written in a
/// form no reader can parse, so a receiver that keeps events in the JSON
/// format refuses it. Found by `make fuzz`.
pub fn validate_json_form(event: &Event) -> Result<(), InvalidEvent> {
    let claims_json = event
        .datacontenttype()
        .is_some_and(crate::binding::is_json_media_type);
    if event.specversion() == SpecVersion::V03
        && claims_json
        && matches!(event.data(), Some(Data::Binary(_)))
    {
        return Err(InvalidEvent::JsonDataNotJson);
    }
    Ok(())
}

/// `type/subtype` with optional `; parameters`, each part an RFC 2045 token.
fn is_media_type(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    let is_token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?=".contains(&b))
    };
    matches!(essence.split_once('/'), Some((t, sub)) if is_token(t) && is_token(sub))
}

fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudevents::{EventBuilder, EventBuilderV10};

    fn event() -> EventBuilderV10 {
        EventBuilderV10::new().id("1").source("/s").ty("t")
    }

    #[test]
    fn strings_may_not_hold_control_characters_or_noncharacters() {
        for bad in [
            "a\u{0}b",
            "\u{1f}",
            "line\nbreak",
            "tab\t",
            "\u{7f}",
            "\u{9f}",
            "\u{fdd0}",
            "\u{fffe}",
            "\u{10ffff}",
        ] {
            assert!(forbidden_character(bad).is_some(), "{bad:?}");
        }
        for good in [
            "", "plain", "Grüße", "日本", "\u{a0}", "\u{fdcf}", "\u{fffd}", "😀",
        ] {
            assert_eq!(forbidden_character(good), None, "{good:?}");
        }
        assert_eq!(code_point('\0'), "U+0000");
        assert_eq!(code_point('\u{9f}'), "U+009F");
    }

    #[test]
    fn a_complete_event_is_valid() {
        assert_eq!(
            validate(&event().extension("ext1", "v").build().unwrap()),
            Ok(())
        );
    }

    #[test]
    fn empty_required_attributes_are_named() {
        let e = event().id("").build().unwrap();
        assert_eq!(validate(&e), Err(InvalidEvent::EmptyAttribute("id")));
        let e = event().ty("").build().unwrap();
        assert_eq!(validate(&e), Err(InvalidEvent::EmptyAttribute("type")));
    }

    #[test]
    fn a_present_subject_must_not_be_empty() {
        let e = event().subject("").build().unwrap();
        assert_eq!(validate(&e), Err(InvalidEvent::EmptySubject));
    }

    #[test]
    fn datacontenttype_must_be_a_media_type() {
        for bad in ["xyz", "", "text/", "/plain", "te xt/plain"] {
            let e = event().data(bad, "x").build().unwrap();
            assert_eq!(
                validate(&e),
                Err(InvalidEvent::DataContentType(bad.into())),
                "{bad:?}"
            );
        }
        for good in [
            "text/plain",
            "application/json; charset=utf-8",
            "application/vnd.a+json",
        ] {
            let e = event().data(good, "x").build().unwrap();
            assert_eq!(validate(&e), Ok(()), "{good:?}");
        }
    }

    #[test]
    fn extensions_named_like_attributes_or_json_members_are_rejected() {
        for name in ["data", "id", "source", "time", "datacontenttype"] {
            let e = event().extension(name, "forged").build().unwrap();
            assert_eq!(
                validate(&e),
                Err(InvalidEvent::ReservedName(name.into())),
                "{name}"
            );
        }
        let v03 = cloudevents::EventBuilderV03::new()
            .id("1")
            .source("/s")
            .ty("t")
            .extension("datacontentencoding", "base64")
            .build()
            .unwrap();
        assert_eq!(
            validate(&v03),
            Err(InvalidEvent::ReservedName("datacontentencoding".into()))
        );
        // Other versions' attribute names are ordinary extensions.
        let e = event().extension("schemaurl", "x").build().unwrap();
        assert_eq!(validate(&e), Ok(()));
    }

    #[test]
    fn a_0_3_event_whose_json_data_is_bytes_has_no_json_form() {
        let bytes = cloudevents::EventBuilderV03::new()
            .id("1")
            .source("/s")
            .ty("t")
            .data("application/json", b"{not json".to_vec())
            .build()
            .unwrap();
        assert_eq!(
            validate_json_form(&bytes),
            Err(InvalidEvent::JsonDataNotJson)
        );
        let json = cloudevents::EventBuilderV03::new()
            .id("1")
            .source("/s")
            .ty("t")
            .data("application/json", serde_json::json!({"a": 1}))
            .build()
            .unwrap();
        assert_eq!(validate_json_form(&json), Ok(()));
        // 1.0 writes binary data as data_base64, read back as bytes.
        let v10 = event().data("application/json", b"{not json".to_vec());
        assert_eq!(validate_json_form(&v10.build().unwrap()), Ok(()));
    }

    #[test]
    fn extension_names_outside_a_z_0_9_are_rejected() {
        let e = event().extension("Bad_Name", "v").build().unwrap();
        assert_eq!(
            validate(&e),
            Err(InvalidEvent::ExtensionName("Bad_Name".into()))
        );
    }
}
