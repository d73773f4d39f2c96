//! How much of one event a receiver of this project accepts, applied by
//! every decoder ([`crate::decode`]) whatever the transport brought it: the
//! size of an attribute, of the indexed attributes, and the events in a
//! batch. Each refusal names the attribute.

use cloudevents::{AttributesReader, Event};

/// The longest attribute name or value (`id`, `source`, `subject`, an
/// extension...), data excluded. Every attribute is stored, indexed or
/// logged with each event; 4 KiB holds any URI a browser accepts (2 KiB)
/// twice over, and 16 of them still fit a 64 KiB event.
pub const MAX_ATTRIBUTE_BYTES: usize = 4096;

/// The longest `subject`, and the longest `source` and `id` together, in
/// bytes. The store indexes them ((subject, seq), and UNIQUE (source, id)),
/// and PostgreSQL refuses a b-tree index entry over 2,704 bytes: one such
/// event failed the whole group commit it was in, and wedged a broker
/// consumer that retried it. SQLite has no such limit; the cap is applied
/// on ingest, whatever the database, so both accept the same events. 2 KiB
/// leaves room for the entry's own header and the seq, uncompressed, and
/// holds any URI a browser accepts.
pub const MAX_INDEXED_BYTES: usize = 2048;

/// The most events in one batch request: one store transaction, one
/// answer. The same figure as a Kafka batch (`INGEST_BATCH_MAX`'s default);
/// a sender with more sends more requests.
pub const MAX_BATCH_EVENTS: usize = 1000;

/// Refuses an event whose indexed values are longer than
/// `MAX_INDEXED_BYTES` (see there), naming them.
pub fn check_indexed_sizes(event: &Event) -> Result<(), String> {
    if let Some(subject) = event.subject() {
        if subject.len() > MAX_INDEXED_BYTES {
            return Err(format!(
                "attribute `subject` is {} bytes, longer than the limit of {MAX_INDEXED_BYTES} for an indexed attribute",
                subject.len()
            ));
        }
    }
    let key = event.source().len() + event.id().len();
    if key > MAX_INDEXED_BYTES {
        return Err(format!(
            "attributes `source` and `id` are {key} bytes together, longer than the limit of {MAX_INDEXED_BYTES} for the event's key"
        ));
    }
    Ok(())
}

/// Refuses an attribute name or value longer than `MAX_ATTRIBUTE_BYTES`,
/// naming it (by its first characters when the name itself is too long).
pub fn check_attribute_size(name: &str, value: &str) -> Result<(), String> {
    if name.len() > MAX_ATTRIBUTE_BYTES {
        let start: String = name.chars().take(20).collect();
        return Err(format!(
            "an attribute name starting {start:?} is {} bytes, longer than the limit of {MAX_ATTRIBUTE_BYTES}",
            name.len()
        ));
    }
    if value.len() > MAX_ATTRIBUTE_BYTES {
        return Err(format!(
            "attribute `{name}` is {} bytes, longer than the limit of {MAX_ATTRIBUTE_BYTES}",
            value.len()
        ));
    }
    Ok(())
}
