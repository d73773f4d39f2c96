//! A CloudEvent as the audit service received it: the SDK's typed event,
//! and the attribute values whose text the SDK would write differently.
//! Every ingest path makes one (`crate::ingest::decode`) and the store
//! keeps it (`crate::store::EventRow`), so neither imports the other.

use chrono::{DateTime, Utc};
use cloudevents::event::SpecVersion;
use cloudevents::{AttributesReader, Event};
use shared::cloudevents;
use std::cell::RefCell;

/// A decoded event, with its typed attributes as they arrived where the
/// SDK would write them differently.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub event: Event,
    pub as_received: AsReceived,
}

impl From<Event> for Decoded {
    fn from(event: Event) -> Self {
        Decoded {
            event,
            as_received: AsReceived::default(),
        }
    }
}

/// Attribute values as a sender wrote them, where the SDK's typed model
/// would write them back differently: it keeps `time` as a UTC instant
/// (`+01:00` comes back as `Z`, `.1Z` as `.100Z`) and `dataschema`
/// (`schemaurl` in 0.3) as a parsed URL (`HTTP://Example.com` comes back as
/// `http://example.com/`). An audit trail keeps what was sent, so the
/// stored JSON gets these values back ([`AsReceived::restore`]). Empty, and
/// free, for an event already in the SDK's form, as the user service's are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AsReceived(Vec<Kept>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Kept {
    name: &'static str,
    /// The value as the SDK writes it, as JSON (quoted).
    written: String,
    /// The value as it arrived.
    received: String,
}

impl AsReceived {
    /// Keeps `received`, the `time` attribute as it arrived, when the SDK
    /// would write the instant differently. Called for every event, so the
    /// usual case (the SDK's own form) allocates nothing: the SDK's form is
    /// written into a buffer the thread reuses. The SDK parses `time` the
    /// same way (`parse_from_rfc3339`, then UTC).
    pub(crate) fn time(&mut self, received: &str) {
        thread_local! {
            static WRITTEN: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
        }
        let Ok(instant) = DateTime::parse_from_rfc3339(received) else {
            return;
        };
        let instant = instant.with_timezone(&Utc);
        let kept = WRITTEN.with(|buffer| {
            let mut buffer = buffer.borrow_mut();
            buffer.clear();
            serde_json::to_writer(&mut *buffer, &instant).ok()?;
            let written = std::str::from_utf8(&buffer).ok()?;
            // A timestamp has nothing to escape: the quoted value is the text.
            let same = written.get(1..written.len().saturating_sub(1)) == Some(received);
            (!same).then(|| Kept {
                name: "time",
                written: written.to_owned(),
                received: received.to_owned(),
            })
        });
        self.0.extend(kept);
    }

    /// Keeps the schema URL as it arrived when the SDK's parsed URL writes
    /// differently (rare: the attribute is seldom set).
    pub(crate) fn schema(&mut self, event: &Event, received: Option<String>) {
        let name = match event.specversion() {
            SpecVersion::V03 => "schemaurl",
            SpecVersion::V10 => "dataschema",
        };
        let (Some(received), Some(url)) = (received, event.dataschema()) else {
            return;
        };
        if url.as_str() == received {
            return;
        }
        if let Ok(written) = serde_json::to_string(url) {
            self.0.push(Kept {
                name,
                written,
                received,
            });
        }
    }

    /// Puts the values as they arrived into `json`, the event as the SDK
    /// serialized it. The SDK writes the context attributes first, `data`
    /// and the extensions after them, and a quote inside a JSON string is
    /// always escaped, so the first `"time":<value>` in its output is the
    /// attribute itself.
    pub fn restore(&self, json: &mut String) {
        for kept in &self.0 {
            let pattern = format!("\"{}\":{}", kept.name, kept.written);
            let Some(at) = json.find(&pattern) else {
                continue;
            };
            // A String always serializes.
            let Ok(received) = serde_json::to_string(&kept.received) else {
                continue;
            };
            json.replace_range(
                at..at + pattern.len(),
                &format!("\"{}\":{received}", kept.name),
            );
        }
    }
}
