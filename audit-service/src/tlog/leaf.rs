//! An event's leaf as the sequencer appends it: the hash of its entry, and
//! the salt drawn for its data with the data's commitment.
//!
//! Each event is turned into its leaf as it is published to the live feed
//! (`inbox`), and the event is let go. Holding the events themselves until
//! their round (up to 10,000 of them, some 4 MiB of JSON in a dozen
//! allocations each) kept the allocator from reusing warm memory: under
//! batch load that cost ingest as much as the hashing, and 20-25 MiB of RSS.

use super::db::LeafRecord;
use super::entry;
use crate::store::leaf_block::Seal;
use crate::store::StoredEvent;
use rand::Rng as _;
use std::sync::Arc;
use tlog_tiles::Hash;

pub struct Leaf {
    pub seq: i64,
    /// When its event was committed, for the lag to its checkpoint.
    pub received_at: Arc<str>,
    /// The record hash of its entry.
    pub hash: Hash,
    /// The salt of its data's commitment; `None` for an event without data.
    pub salt: Option<[u8; 32]>,
}

impl Leaf {
    /// The leaf of `event`, with a fresh salt for its data; `encoder` is
    /// the caller's, kept from one event to the next.
    pub fn of(
        event: &StoredEvent,
        encoder: &mut entry::Encoder,
    ) -> Result<Self, entry::NotAnObject> {
        let mut salt = None;
        let bytes = encoder.encode(
            &event.received_at,
            event.transport.as_str(),
            &event.json,
            |data| {
                let mut drawn = [0u8; 32];
                rand::rng().fill(&mut drawn);
                salt = Some(drawn);
                entry::commitment(&drawn, data)
            },
        )?;
        Ok(Leaf {
            seq: event.seq,
            received_at: event.received_at.clone(),
            hash: tlog_tiles::record_hash(bytes),
            salt,
        })
    }

    /// As stored, at `index` in the tree.
    pub fn record(&self, index: u64) -> LeafRecord {
        LeafRecord {
            index,
            seq: self.seq,
            seal: self.salt.map_or(Seal::NoData, Seal::Salt),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_leaf_hashes_the_entry_with_the_commitment_to_the_salted_data() {
        let mut event = crate::store::tail::tests::event(7, 0);
        event.json =
            r#"{"specversion":"1.0","id":"e","source":"/s","type":"t","data":{"a":1}}"#.into();
        let mut encoder = entry::Encoder::default();
        let leaf = Leaf::of(&event, &mut encoder).unwrap();
        let salt = leaf.salt.unwrap();
        let commitment = entry::commitment(&salt, r#"{"a":1}"#);
        assert_eq!(
            leaf.record(0).commitment(Some(r#"{"a":1}"#)),
            Some(commitment)
        );
        let bytes =
            entry::encode(&event.received_at, "http", &event.json, Some(&commitment)).unwrap();
        assert_eq!(leaf.hash, tlog_tiles::record_hash(&bytes));
        assert_eq!(leaf.seq, 7);
        // Each leaf draws its own salt.
        assert_ne!(Leaf::of(&event, &mut encoder).unwrap().salt, Some(salt));

        event.json = r#"{"specversion":"1.0","id":"e","source":"/s","type":"t"}"#.into();
        let bare = Leaf::of(&event, &mut encoder).unwrap();
        assert_eq!((bare.salt, bare.record(0).seal), (None, Seal::NoData));
        event.json = "[1]".into();
        assert!(Leaf::of(&event, &mut encoder).is_err());
    }
}
