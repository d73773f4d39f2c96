//! The log entry of a stored event: a canonical byte encoding of the event
//! as it is stored and served, which anyone holding a `GET /v1/events` item
//! can rebuild (README, "The transparency log", gives the recipe).
//!
//! ```text
//! entry    = 0x01 field(":received_at", received_at)
//!                 field(":transport", transport)
//!                 field(name, value)...          every attribute but the data, names in byte order
//!                 [field(":data", commitment)]   when the event has data
//! field    = uint16(len(name)) name uint32(len(value)) value   (big-endian)
//! value    = a JSON string attribute's text; any other attribute's JSON text as served
//! commitment = SHA-256(salt || data), data = the exact JSON text of the
//!              event's `data` (or `data_base64`) member as stored and served
//! ```
//!
//! Names starting with `:` cannot collide with attributes (CloudEvents names
//! are `a-z0-9`). An encoding longer than 65,535 bytes does not fit a C2SP
//! entry bundle, whose entries carry a uint16 length: such an event's entry
//! is `0x02 || SHA-256(the encoding)` instead, 33 bytes.
//!
//! The data is committed to by a salted digest rather than included, so
//! that erasing the data and the salt (`erase`) leaves the entry, and every
//! proof over it, unchanged, while what remains (the digest) no longer lets
//! anyone confirm a guess of the erased data.

use crate::store::compact_json::{self, Span};
pub use crate::store::leaf_block::commitment;
use crate::store::leaf_block::LeafRecord;
pub use crate::store::members::Members;
use crate::store::members::{Text, DATA_MEMBERS};
use sha2::{Digest, Sha256};
use std::borrow::Cow;

/// The entry format version.
const V1: u8 = 0x01;
/// The form of an entry whose v1 encoding is too long for a bundle.
const V1_DIGEST: u8 = 0x02;
/// The longest entry a bundle's uint16 length prefix can carry.
pub const MAX_ENTRY_BYTES: usize = u16::MAX as usize;

/// Why an event has no entry: its stored JSON is not an object.
#[derive(Debug, thiserror::Error)]
#[error("the stored event is not a JSON object: {0}")]
pub struct NotAnObject(#[from] serde_json::Error);

/// The entry of an event stored with `received_at` and `transport`, whose
/// JSON is `event_json` (data, if any, removed or not) and whose data
/// commitment is `commitment` (`None` when it had no data).
pub fn encode(
    received_at: &str,
    transport: &str,
    event_json: &str,
    commitment: Option<&[u8]>,
) -> Result<Vec<u8>, NotAnObject> {
    let members = Members::parse(event_json)?;
    Ok(encode_members(received_at, transport, &members, commitment))
}

/// The entry of a stored event in the tree as `leaf`: the commitment is
/// made from the leaf's salt and the event's data, or is the one the leaf
/// holds since the data was erased.
pub fn of_stored(
    received_at: &str,
    transport: &str,
    event_json: &str,
    leaf: &LeafRecord,
) -> Result<Vec<u8>, NotAnObject> {
    let members = Members::parse(event_json)?;
    Ok(encode_with_leaf(received_at, transport, &members, leaf))
}

/// As [`of_stored`], for an event already parsed into its members.
pub fn encode_with_leaf(
    received_at: &str,
    transport: &str,
    members: &Members<'_>,
    leaf: &LeafRecord,
) -> Vec<u8> {
    let commitment = leaf.commitment(members.data());
    encode_members(
        received_at,
        transport,
        members,
        commitment.as_ref().map(|c| c.as_slice()),
    )
}

/// As [`encode`], for an event already parsed into its members.
pub fn encode_members(
    received_at: &str,
    transport: &str,
    members: &Members<'_>,
    commitment: Option<&[u8]>,
) -> Vec<u8> {
    let mut attributes: Vec<(&str, Cow<'_, str>)> = Vec::with_capacity(members.0.len());
    for (name, value) in &members.0 {
        if DATA_MEMBERS.contains(&name.as_ref()) {
            continue;
        }
        let raw = *value;
        let text = match raw.starts_with('"') {
            // Without a backslash a JSON string's text is what its quotes
            // enclose: no need to run the parser over it again.
            true if !raw.contains('\\') && raw.len() >= 2 => Cow::Borrowed(&raw[1..raw.len() - 1]),
            true => match serde_json::from_str::<Text<'_>>(raw) {
                Ok(Text(text)) => text,
                Err(_) => Cow::Borrowed(raw),
            },
            false => Cow::Borrowed(raw),
        };
        attributes.push((name.as_ref(), text));
    }
    attributes.sort_unstable_by(|a, b| name_order(a.0.as_bytes(), b.0.as_bytes()));
    let fields: usize = attributes.iter().map(|(n, v)| 6 + n.len() + v.len()).sum();
    let mut entry = Vec::with_capacity(
        1 + 6 * 3
            + ":received_at".len()
            + received_at.len()
            + ":transport".len()
            + transport.len()
            + ":data".len()
            + 32
            + fields,
    );
    write(
        &mut entry,
        received_at,
        transport,
        attributes.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())),
        commitment,
    );
    entry
}

/// Encodes the entries of event after event, keeping its buffers from one
/// to the next. A stored event is compact JSON (`compact_json`), whose
/// members are found in one pass and written from where they are; the
/// general way, through [`Members`] and [`encode_members`], allocates a
/// vector of members, one of attributes and the entry for each event: a
/// leaf of the bench's event took 720-830 ns that way against 620-640 ns
/// this way, SHA-256 being about 300 of either. Whatever the one pass does
/// not take (an escape in a string, text that is not compact) goes the
/// general way.
#[derive(Default)]
pub struct Encoder {
    spans: Vec<Span>,
    /// The indexes in `spans` of the attributes, in the entry's order.
    order: Vec<usize>,
    entry: Vec<u8>,
}

impl Encoder {
    /// The entry of an event stored with `received_at` and `transport`,
    /// whose JSON is `event_json`, as [`encode`] makes it; the commitment
    /// to its data, if it has any, is `commit(data)`.
    pub fn encode(
        &mut self,
        received_at: &str,
        transport: &str,
        event_json: &str,
        commit: impl FnOnce(&str) -> [u8; 32],
    ) -> Result<&[u8], NotAnObject> {
        let split = compact_json::split(event_json, &mut self.spans);
        if !split || self.spans.iter().any(|span| span.escaped) {
            // The general way, from the spans when the text was split (a
            // string value holds an escape), else from serde_json: the text
            // is not scanned twice.
            let members = if split {
                Members::from_spans(event_json, self.spans.iter().cloned())
            } else {
                Members::parse_with_serde_json(event_json)?
            };
            let commitment = members.data().map(commit);
            self.entry = encode_members(
                received_at,
                transport,
                &members,
                commitment.as_ref().map(|c| c.as_slice()),
            );
            return Ok(&self.entry);
        }
        let name = |span: &Span| &event_json.as_bytes()[span.name.clone()];
        let mut data = None;
        self.order.clear();
        for (i, span) in self.spans.iter().enumerate() {
            if !DATA_MEMBERS.iter().any(|d| d.as_bytes() == name(span)) {
                self.order.push(i);
            } else if data.is_none() {
                // The first, as `Members::data` takes it.
                data = Some(&event_json[span.value.clone()]);
            }
        }
        let spans = &self.spans;
        self.order
            .sort_unstable_by(|&a, &b| name_order(name(&spans[a]), name(&spans[b])));
        let commitment = data.map(commit);
        let attributes = self.order.iter().map(|&i| {
            let span = &spans[i];
            let raw = &event_json.as_bytes()[span.value.clone()];
            // A string without an escape: its text is what the quotes enclose.
            let text = match raw {
                [b'"', text @ .., b'"'] => text,
                _ => raw,
            };
            (name(span), text)
        });
        write(
            &mut self.entry,
            received_at,
            transport,
            attributes,
            commitment.as_ref().map(|c| c.as_slice()),
        );
        Ok(&self.entry)
    }
}

/// The entry's order of attribute names: byte order. The first bytes
/// mostly differ, and comparing them first spares a call to memcmp for
/// each pair.
fn name_order(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    a.first().cmp(&b.first()).then_with(|| a.cmp(b))
}

/// Writes the entry into `entry` (emptied first), `attributes` being each
/// attribute's name and text in the entry's order.
fn write<'a>(
    entry: &mut Vec<u8>,
    received_at: &str,
    transport: &str,
    attributes: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    commitment: Option<&[u8]>,
) {
    entry.clear();
    entry.push(V1);
    field(entry, b":received_at", received_at.as_bytes());
    field(entry, b":transport", transport.as_bytes());
    for (name, value) in attributes {
        field(entry, name, value);
    }
    if let Some(commitment) = commitment {
        field(entry, b":data", commitment);
    }
    if entry.len() > MAX_ENTRY_BYTES {
        let digest: [u8; 32] = Sha256::digest(&*entry).into();
        entry.clear();
        entry.push(V1_DIGEST);
        entry.extend_from_slice(&digest);
    }
}

fn field(entry: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    // Names are at most an attribute's 4 KiB and values an event's 1 MiB
    // (the body limits), far below the prefixes' ranges; saturating keeps
    // a longer one from wrapping.
    entry.extend_from_slice(&u16::try_from(name.len()).unwrap_or(u16::MAX).to_be_bytes());
    entry.extend_from_slice(name);
    entry.extend_from_slice(&u32::try_from(value.len()).unwrap_or(u32::MAX).to_be_bytes());
    entry.extend_from_slice(value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EVENT: &str = r#"{"specversion":"1.0","id":"e1","source":"/user-service","type":"user.storeUser","datacontenttype":"application/json","subject":"u1","time":"2026-11-26T10:30:00.1+01:00","data":{"id":"u1","name":"Ozzy Osbourne"},"comexampleint":5}"#;

    #[test]
    fn attributes_are_sorted_strings_unquoted_and_data_is_committed_to() {
        let salt = [7u8; 32];
        let data = Members::parse(EVENT).unwrap().data().unwrap();
        assert_eq!(data, r#"{"id":"u1","name":"Ozzy Osbourne"}"#);
        let c = commitment(&salt, data);
        let entry = encode("2026-11-26T09:30:00.123456Z", "http", EVENT, Some(&c)).unwrap();
        let mut expected = vec![1u8];
        for (name, value) in [
            (":received_at", b"2026-11-26T09:30:00.123456Z".as_slice()),
            (":transport", b"http"),
            ("comexampleint", b"5"),
            ("datacontenttype", b"application/json"),
            ("id", b"e1"),
            ("source", b"/user-service"),
            ("specversion", b"1.0"),
            ("subject", b"u1"),
            ("time", b"2026-11-26T10:30:00.1+01:00"),
            ("type", b"user.storeUser"),
            (":data", &c),
        ] {
            field(&mut expected, name.as_bytes(), value);
        }
        assert_eq!(entry, expected);
    }

    #[test]
    fn removing_the_data_keeps_every_other_member_as_it_was_and_the_entry() {
        let members = Members::parse(EVENT).unwrap();
        let erased = members.without_data();
        assert_eq!(
            erased,
            r#"{"specversion":"1.0","id":"e1","source":"/user-service","type":"user.storeUser","datacontenttype":"application/json","subject":"u1","time":"2026-11-26T10:30:00.1+01:00","comexampleint":5}"#
        );
        let c = commitment(&[1; 32], members.data().unwrap());
        assert_eq!(
            encode("t", "kafka", EVENT, Some(&c)).unwrap(),
            encode("t", "kafka", &erased, Some(&c)).unwrap()
        );
    }

    #[test]
    fn an_entry_too_long_for_a_bundle_becomes_the_digest_of_its_encoding() {
        let big = format!(
            r#"{{"specversion":"1.0","id":"e","source":"/s","type":"t","ext":"{}"}}"#,
            "x".repeat(70_000)
        );
        let entry = encode("t", "http", &big, None).unwrap();
        assert_eq!(entry.len(), 33);
        assert_eq!(entry[0], 2);
        let small = format!(
            r#"{{"specversion":"1.0","id":"e","source":"/s","type":"t","ext":"{}"}}"#,
            "x".repeat(60_000)
        );
        assert_eq!(encode("t", "http", &small, None).unwrap()[0], 1);
    }

    /// README.md's worked example, so that it cannot drift from the code.
    #[test]
    fn the_readme_worked_example_is_what_the_code_computes() {
        use base64::prelude::{Engine as _, BASE64_STANDARD};
        let readme = include_str!("../../../README.md");
        let item: serde_json::Value = serde_json::from_str(
            readme
                .lines()
                .find(|l| l.starts_with(r#"{"seq":1,"received_at":"2026-11-26T08:30:00.123456Z""#))
                .expect("the example item is in the README"),
        )
        .unwrap();
        let event = serde_json::to_string(&item["event"]).unwrap();
        // serde_json's map sorts members; the entry sorts them too, and the
        // data's own members are already in order.
        let data = Members::parse(&event).unwrap().data().unwrap().to_owned();
        let salt = BASE64_STANDARD
            .decode(item["log"]["salt"].as_str().unwrap())
            .unwrap();
        assert_eq!(salt, (1..=32).collect::<Vec<u8>>());
        let c = commitment(&salt, &data);
        let c64 = BASE64_STANDARD.encode(c);
        assert_eq!(item["log"]["commitment"], c64.as_str());
        assert!(readme.contains(&format!("= `{c64}`, the")), "{c64}");
        let entry = encode(
            item["received_at"].as_str().unwrap(),
            item["transport"].as_str().unwrap(),
            &event,
            Some(&c),
        )
        .unwrap();
        let hex: String = entry.iter().map(|b| format!("{b:02x}")).collect();
        assert!(readme.contains(&format!("the {}-byte entry", entry.len())));
        assert!(readme.contains(&format!("\n{hex}\n")), "{hex}");
        let leaf = BASE64_STANDARD.encode(tlog_tiles::record_hash(&entry).0);
        assert!(
            readme.contains(&format!("the leaf hash `{leaf}`")),
            "{leaf}"
        );
    }

    /// The entry `Encoder` makes, of `json` with the commitment made with
    /// `salt`, and the one [`encode`] makes.
    fn both_ways(json: &str, salt: &[u8; 32], encoder: &mut Encoder) -> (Vec<u8>, Vec<u8>) {
        let fast = encoder
            .encode("2026-11-26T09:30:00.123456Z", "mqtt", json, |data| {
                commitment(salt, data)
            })
            .unwrap()
            .to_vec();
        let data = Members::parse(json)
            .unwrap()
            .data()
            .map(|d| commitment(salt, d));
        let general = encode(
            "2026-11-26T09:30:00.123456Z",
            "mqtt",
            json,
            data.as_ref().map(|c| c.as_slice()),
        )
        .unwrap();
        (fast, general)
    }

    proptest! {
        /// Whatever the event, the encoder's one pass makes the entry the
        /// general way makes: names in any order, data or data_base64 or
        /// both or neither, strings with and without escapes, numbers,
        /// nested values, compact text and not.
        #[test]
        fn the_encoder_makes_the_entry_encode_makes(
            members in prop::collection::vec((
                "specversion|id|source|type|subject|time|data|data_base64|[a-z0-9]{1,12}",
                prop_oneof![
                    "[a-z0-9/:. -]{0,24}".prop_map(serde_json::Value::String),
                    "[a-z\"\\\\\u{1}\u{e9}]{0,6}".prop_map(serde_json::Value::String),
                    any::<i64>().prop_map(serde_json::Value::from),
                    any::<bool>().prop_map(serde_json::Value::from),
                    "[a-z]{0,4}".prop_map(|s| serde_json::json!({ "n": s, "a": [1, s] })),
                ],
            ), 0..10),
            spaced in prop::bool::weighted(0.2),
            salt in any::<[u8; 32]>(),
        ) {
            let mut json = String::from("{");
            for (i, (name, value)) in members.iter().enumerate() {
                if i > 0 {
                    json.push_str(if spaced { ", " } else { "," });
                }
                json.push_str(&serde_json::to_string(name).unwrap());
                json.push(':');
                json.push_str(&serde_json::to_string(value).unwrap());
            }
            json.push('}');
            // One encoder for every case, as the sequencer keeps one.
            thread_local!(static ENCODER: std::cell::RefCell<Encoder> = Default::default());
            let (fast, general) = ENCODER.with_borrow_mut(|e| both_ways(&json, &salt, e));
            prop_assert_eq!(fast, general, "{}", json);
        }
    }

    #[test]
    fn the_encoder_takes_the_one_pass_for_a_stored_event_and_agrees_with_encode() {
        let mut encoder = Encoder::default();
        let (fast, general) = both_ways(EVENT, &[3; 32], &mut encoder);
        assert_eq!(fast, general);
        assert!(compact_json::split(EVENT, &mut encoder.spans));
        // Long enough for the digest form, after a short one in the same buffer.
        let big = format!(r#"{{"id":"e","ext":"{}","data":1}}"#, "x".repeat(70_000));
        let (fast, general) = both_ways(&big, &[3; 32], &mut encoder);
        assert_eq!((fast.len(), fast[0]), (33, 2));
        assert_eq!(fast, general);
        let (fast, general) = both_ways(r#"{"id":"e\"f"}"#, &[3; 32], &mut encoder);
        assert_eq!(fast, general);
        assert!(encoder.encode("t", "http", "[1]", |_| [0; 32]).is_err());
    }

    #[test]
    fn escaped_strings_are_encoded_as_their_text() {
        let json = r#"{"id":"a\"b\u00e9","specversion":"1.0"}"#;
        let entry = encode("t", "nats", json, None).unwrap();
        let mut expected = vec![1u8];
        field(&mut expected, b":received_at", b"t");
        field(&mut expected, b":transport", b"nats");
        field(&mut expected, b"id", "a\"b\u{e9}".as_bytes());
        field(&mut expected, b"specversion", b"1.0");
        assert_eq!(entry, expected);
    }
}
