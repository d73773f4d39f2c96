//! The top-level members of a stored event's JSON, each with its value's
//! exact text: what the transparency log's entry is made of (`tlog::entry`),
//! where an erasure finds the data it removes, and where a leaf's data
//! commitment is computed from (`annotate`).

use super::compact_json;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

/// The members of the JSON event format that hold the data.
pub const DATA_MEMBERS: [&str; 2] = ["data", "data_base64"];

/// The top-level members of a JSON object in their order, each with its
/// value's exact text (serde_json's map would reorder them). Names are
/// borrowed from the text unless they hold an escape: the sequencer parses
/// every event, and allocating each name was a good part of its time.
pub struct Members<'a>(pub Vec<(Cow<'a, str>, &'a str)>);

impl<'a> Members<'a> {
    pub fn parse(json: &'a str) -> Result<Self, serde_json::Error> {
        // The stored events are compact JSON, split in one pass; serde_json
        // decides whatever that pass does not take.
        let mut spans = Vec::with_capacity(12);
        if compact_json::split(json, &mut spans) {
            // A span and a member are the same size, so std collects the
            // members in place: they take the spans' allocation.
            return Ok(Self::from_spans(json, spans));
        }
        Self::parse_with_serde_json(json)
    }

    /// The members `compact_json::split` found in `json`. Its names never
    /// hold an escape (it leaves those to serde_json), so each is borrowed
    /// as it stands.
    pub fn from_spans(json: &'a str, spans: impl IntoIterator<Item = compact_json::Span>) -> Self {
        Members(
            spans
                .into_iter()
                .map(|span| (Cow::Borrowed(&json[span.name]), &json[span.value]))
                .collect(),
        )
    }

    /// The members as serde_json reads them: for text that
    /// `compact_json::split` does not take.
    pub fn parse_with_serde_json(json: &'a str) -> Result<Self, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(json);
        let members = de.deserialize_map(MembersVisitor)?;
        de.end()?;
        Ok(members)
    }

    /// The exact text of the event's data member, if it has one.
    pub fn data(&self) -> Option<&'a str> {
        self.0
            .iter()
            .find(|(name, _)| DATA_MEMBERS.contains(&name.as_ref()))
            .map(|(_, value)| *value)
    }

    /// The object again, without its data members, the others unchanged
    /// and in their order.
    pub fn without_data(&self) -> String {
        let mut out = String::from("{");
        for (name, value) in self
            .0
            .iter()
            .filter(|(name, _)| !DATA_MEMBERS.contains(&name.as_ref()))
        {
            if out.len() > 1 {
                out.push(',');
            }
            // A String always serializes.
            out.push_str(&serde_json::to_string(name.as_ref()).unwrap_or_default());
            out.push(':');
            out.push_str(value);
        }
        out.push('}');
        out
    }
}

struct MembersVisitor;

impl<'de> Visitor<'de> for MembersVisitor {
    type Value = Members<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Vec::new();
        while let Some((Text(name), value)) = map.next_entry::<Text<'de>, &'de RawValue>()? {
            members.push((name, value.get()));
        }
        Ok(Members(members))
    }
}

/// A JSON string, borrowed from the text when it has no escape.
pub(crate) struct Text<'a>(pub Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}
