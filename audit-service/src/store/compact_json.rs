//! The top-level members of a JSON object written in compact form, as
//! serde_json writes the stored events: no whitespace between tokens.
//!
//! Written by hand because the sequencer splits every stored event into its
//! members, and the general way (serde_json's deserializer handing each
//! member over as a `RawValue`) cost 0.7 µs an event, more than hashing
//! the entry; one pass over the bytes costs a fraction of that. It accepts
//! only what it checks completely; anything else (whitespace, an escaped
//! name, a `\u` escape, a malformed number) is `None`, and the caller asks
//! serde_json, which then decides. So whenever this gives members, serde_json
//! would have given the same ones (test
//! `members_agree_with_serde_json_or_defer_to_it`). A nested value (an
//! event's `data`) is delimited here and checked by serde_json.

use serde::de::IgnoredAny;
use std::ops::Range;

/// Where one member is in the text: its name without the quotes, its
/// value's exact text, and whether that value is a string holding an escape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub name: Range<usize>,
    pub value: Range<usize>,
    pub escaped: bool,
}

/// Puts each member's place in `spans` (emptied first), in order, so that
/// a caller splitting event after event reuses one buffer; false when
/// `json` is not a compact object this can check (`spans` then holds
/// nothing to go by).
pub fn split(json: &str, spans: &mut Vec<Span>) -> bool {
    spans.clear();
    split_into(json, spans).is_some()
}

fn split_into(json: &str, spans: &mut Vec<Span>) -> Option<()> {
    let bytes = json.as_bytes();
    if bytes.first() != Some(&b'{') {
        return None;
    }
    let mut at = 1;
    if bytes.get(at) == Some(&b'}') {
        return (bytes.len() == 2).then_some(());
    }
    loop {
        let (name_end, _) = string_end(bytes, at, false)?;
        if bytes.get(name_end) != Some(&b':') {
            return None;
        }
        let value_start = name_end + 1;
        let (value_end, escaped) = value_end(json, value_start)?;
        // Both ends are at ASCII bytes, so on character boundaries.
        spans.push(Span {
            name: at + 1..name_end - 1,
            value: value_start..value_end,
            escaped,
        });
        match bytes.get(value_end) {
            Some(b',') => at = value_end + 1,
            Some(b'}') if value_end + 1 == bytes.len() => return Some(()),
            _ => return None,
        }
    }
}

/// Where the value starting at `start` ends (one past its last byte), and
/// whether it is a string holding an escape.
fn value_end(json: &str, start: usize) -> Option<(usize, bool)> {
    let bytes = json.as_bytes();
    match *bytes.get(start)? {
        b'"' => string_end(bytes, start, true),
        b'{' | b'[' => {
            let end = container_end(bytes, start)?;
            serde_json::from_str::<IgnoredAny>(&json[start..end]).ok()?;
            Some((end, false))
        }
        _ => {
            let end = start
                + bytes[start..]
                    .iter()
                    .position(|b| matches!(b, b',' | b'}'))?;
            scalar(&bytes[start..end]).then_some((end, false))
        }
    }
}

/// One past the closing quote of the string opening at `start`, and
/// whether the string holds an escape. Escapes other than `\u` are taken
/// only where `escapes` allows them; a control character is not JSON.
fn string_end(bytes: &[u8], start: usize, escapes: bool) -> Option<(usize, bool)> {
    if bytes.get(start) != Some(&b'"') {
        return None;
    }
    let mut at = start + 1;
    let mut escaped = false;
    loop {
        let stop = next_special(bytes, at)?;
        match bytes[stop] {
            b'"' => return Some((stop + 1, escaped)),
            b'\\' if escapes => match bytes.get(stop + 1)? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {
                    escaped = true;
                    at = stop + 2;
                }
                _ => return None,
            },
            _ => return None,
        }
    }
}

/// Where the first `"`, `\` or control character at or after `at` is.
/// Eight bytes at a time: the strings of an event are short, and a call to
/// `memchr` for each cost more than the scan.
fn next_special(bytes: &[u8], mut at: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // A byte's high bit is set where the byte is zero (`x - 1` borrows and
    // `!x` keeps the bit); a borrow can mark a byte wrongly only above a
    // byte marked rightly, so the lowest mark is always right.
    let zero = |x: u64| x.wrapping_sub(ONES) & !x;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let v = u64::from_le_bytes(chunk.try_into().ok()?);
        let control = v.wrapping_sub(ONES * 0x20) & !v;
        let marks =
            (zero(v ^ (ONES * u64::from(b'"'))) | zero(v ^ (ONES * u64::from(b'\\'))) | control)
                & HIGH;
        if marks != 0 {
            return Some(at + (marks.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    bytes
        .get(at..)?
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .map(|i| at + i)
}

/// One past the bracket that closes the object or array opening at
/// `start`, counting brackets outside strings. Whether the text between is
/// JSON is left to serde_json.
fn container_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut at = start;
    while at < bytes.len() {
        match bytes[at] {
            b'"' => {
                // Any escape: only its extent matters here.
                at += 1;
                loop {
                    at = next_special(bytes, at)?;
                    match bytes[at] {
                        b'"' => break,
                        b'\\' => at += 2,
                        // A control character: serde_json refuses it.
                        _ => at += 1,
                    }
                }
            }
            b'{' | b'[' => {
                depth += 1;
                // serde_json's nesting limit is 128, the event itself one
                // of them: deeper is serde_json's to refuse.
                if depth > 100 {
                    return None;
                }
            }
            b'}' | b']' => {
                depth -= 1;
                if depth == 0 {
                    return Some(at + 1);
                }
            }
            _ => {}
        }
        at += 1;
    }
    None
}

/// Whether `text` is a JSON number, `true`, `false` or `null`.
fn scalar(text: &[u8]) -> bool {
    if matches!(text, b"true" | b"false" | b"null") {
        return true;
    }
    // -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
    let digits = |at: usize| text[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    let mut at = usize::from(text.first() == Some(&b'-'));
    match text.get(at) {
        Some(b'0') => at += 1,
        Some(b'1'..=b'9') => at += digits(at),
        _ => return false,
    }
    if text.get(at) == Some(&b'.') {
        let n = digits(at + 1);
        if n == 0 {
            return false;
        }
        at += 1 + n;
    }
    if matches!(text.get(at), Some(b'e' | b'E')) {
        at += 1;
        if matches!(text.get(at), Some(b'+' | b'-')) {
            at += 1;
        }
        let n = digits(at);
        if n == 0 {
            return false;
        }
        at += n;
    }
    at == text.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::de::{Deserializer as _, MapAccess, Visitor};
    use serde_json::value::RawValue;
    use serde_json::Value;

    /// The members as serde_json's deserializer gives them.
    fn by_serde_json(json: &str) -> Option<Vec<(String, String)>> {
        struct Members;
        impl<'de> Visitor<'de> for Members {
            type Value = Vec<(String, String)>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = Vec::new();
                while let Some((name, value)) = map.next_entry::<String, &'de RawValue>()? {
                    members.push((name, value.get().to_owned()));
                }
                Ok(members)
            }
        }
        let mut de = serde_json::Deserializer::from_str(json);
        let members = de.deserialize_map(Members).ok()?;
        de.end().ok()?;
        Some(members)
    }

    /// The members as `split` finds them.
    fn here(json: &str) -> Option<Vec<(String, String)>> {
        let mut spans = Vec::new();
        split(json, &mut spans).then(|| {
            spans
                .iter()
                .map(|span| {
                    (
                        json[span.name.clone()].to_owned(),
                        json[span.value.clone()].to_owned(),
                    )
                })
                .collect()
        })
    }

    /// JSON values, valid and not: numbers right and wrong, literals cut
    /// short, strings with escapes and raw control characters, containers
    /// closed and not.
    const VALUE_SOUP: &str = "-?(0|[0-9]{1,3})(\\.[0-9]{0,2})?([eE][+-]?[0-9]{0,2})?|true|nul|null|\"([a-z\"/\u{1}]|\\\\[\"\\\\/nbtux])*\"|\\[[0-9,\\[\\] ]{0,4}\\]|\\{(\"a\":[0-9 ]{0,2})?\\}|[{\\[]";

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            "\\PC{0,12}".prop_map(Value::String),
            "[\"\\\\/\u{0}-\u{1f}a-z\u{e9}]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z\"\\\\]{0,4}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        // About one case in ten of the second test is split here; more
        // cases keep that a few hundred a run.
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// What serde_json writes, an event's members among it, is split
        /// here, as serde_json splits it, unless a name has an escape or a
        /// string a `\u` one, which are left to serde_json.
        #[test]
        fn compact_json_is_split_as_serde_json_splits_it(
            members in prop::collection::vec(("[a-z0-9]{0,8}|[a-z\"]{1,3}", json_value()), 0..8)
        ) {
            let mut json = String::from("{");
            for (name, value) in &members {
                if json.len() > 1 {
                    json.push(',');
                }
                json.push_str(&serde_json::to_string(name).unwrap());
                json.push(':');
                json.push_str(&serde_json::to_string(value).unwrap());
            }
            json.push('}');
            let expected = by_serde_json(&json).unwrap();
            // Only an escaped name or a `\u` escape is left to serde_json.
            let escaped_name = members.iter().any(|(name, _)| name.contains('"'));
            match here(&json) {
                Some(split) => prop_assert_eq!(split, expected),
                None => prop_assert!(escaped_name || json.contains("\\u"), "{}", json),
            }
        }

        /// Whatever the text, members found here are the members serde_json
        /// finds; where serde_json refuses the text, nothing is found here.
        #[test]
        fn members_agree_with_serde_json_or_defer_to_it(
            members in prop::collection::vec(
                ("\"[a-z\\\\]{0,2}\"", VALUE_SOUP, "||||[ :,}\\]]"), 0..5
            ),
            end in "\\}|\\}|\\}|\\} |\\]|"
        ) {
            // Members mostly well formed, each value from a soup of valid
            // and broken JSON, some with a stray character after it.
            let mut json = String::from("{");
            for (i, (name, value, stray)) in members.iter().enumerate() {
                if i > 0 {
                    json.push(',');
                }
                json.push_str(name);
                json.push(':');
                json.push_str(value);
                json.push_str(stray);
            }
            json.push_str(&end);
            // Whatever serde_json refuses is never split here.
            if let Some(split) = here(&json) {
                prop_assert_eq!(Some(split), by_serde_json(&json), "{}", json);
            }
        }
    }

    proptest! {
        #[test]
        fn next_special_finds_the_first_quote_backslash_or_control_character(
            text in "[a-z\"\\\\\u{1}\u{1f}\u{20}\u{7f}\u{80}-\u{ff}]{0,40}", from in 0usize..40
        ) {
            let bytes = text.as_bytes();
            let expected = bytes
                .iter()
                .enumerate()
                .skip(from)
                .find(|(_, &b)| b == b'"' || b == b'\\' || b < 0x20)
                .map(|(i, _)| i);
            prop_assert_eq!(next_special(bytes, from.min(bytes.len())).filter(|_| from <= bytes.len()), expected);
        }
    }

    #[test]
    fn what_is_left_to_serde_json() {
        for json in [
            r#" {"a":1}"#,
            r#"{"a":1} "#,
            r#"{"a": 1}"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":-}"#,
            r#"{"a":tru}"#,
            r#"{"a\"b":1}"#,
            r#"{"a":"\u00e9"}"#,
            "{\"a\":\"x\ny\"}",
            r#"{"a":{"b":1]}"#,
            r#"{"a":{"b":}}"#,
            r#"{"a":1,}"#,
            r#"{"a":1}}"#,
            "[1]",
            "",
        ] {
            assert!(here(json).is_none(), "{json}");
        }
        let deep = format!(r#"{{"a":{}{}}}"#, "[".repeat(101), "]".repeat(101));
        assert!(here(&deep).is_none());
        assert_eq!(here("{}"), Some(vec![]));
        // An event as the service stores it takes this path.
        let stored = r#"{"specversion":"1.0","id":"e-1","source":"/user-service","type":"user.storeUser","datacontenttype":"application/json","subject":"u1","time":"2026-11-27T00:00:00Z","data":{"id":"u1","name":"Ozzy \"O\" Osbourne"},"comexampleint":5}"#;
        assert_eq!(here(stored), by_serde_json(stored));
        assert_eq!(here(stored).map(|m| m.len()), Some(9));
        assert_eq!(
            here(r#"{"a":-1.5e+3,"b":"x\"\\\n","c":{"d":[1,"}"]},"e":null}"#),
            Some(vec![
                ("a".into(), "-1.5e+3".into()),
                ("b".into(), r#""x\"\\\n""#.into()),
                ("c".into(), r#"{"d":[1,"}"]}"#.into()),
                ("e".into(), "null".into()),
            ])
        );
    }
}
