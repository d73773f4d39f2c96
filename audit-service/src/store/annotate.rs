//! What a stored event is served with besides itself: its leaf in the
//! transparency log (`tlog`: index, data commitment, salt) and whether its
//! data was erased. Both live in tables of their own, read for a page's
//! range of seqs in two index range scans, so the events table and its
//! page queries stay as they were.

use super::leaf_block::{self, BlockRow, LeafRecord, Seal};
use super::members::Members;
use super::{Readers, StoreError, StoredEvent};
use base64::prelude::{Engine as _, BASE64_STANDARD};
use serde::ser::{SerializeStruct, Serializer};
use serde::Serialize;
use std::collections::{HashMap, HashSet};

/// An event's place in the trail.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trail {
    pub leaf: Option<Leaf>,
    /// Its data (and salt) were erased.
    pub erased: bool,
}

/// An event's leaf: served as `"log": {"index", "commitment", "salt"}`,
/// what a client needs besides the event to rebuild its entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf {
    pub index: i64,
    /// SHA-256(salt || data); `None` for an event without data.
    pub commitment: Option<Vec<u8>>,
    /// `None` once erased.
    pub salt: Option<Vec<u8>>,
}

impl Serialize for Leaf {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut leaf = serializer.serialize_struct("Leaf", 3)?;
        leaf.serialize_field("index", &self.index)?;
        if let Some(commitment) = &self.commitment {
            leaf.serialize_field("commitment", &BASE64_STANDARD.encode(commitment))?;
        }
        if let Some(salt) = &self.salt {
            leaf.serialize_field("salt", &BASE64_STANDARD.encode(salt))?;
        }
        leaf.end()
    }
}

const ERASED: &str = "SELECT seq FROM event_erasures WHERE seq >= $1 AND seq <= $2";

/// Sets each event's `trail` (events in seq order, as pages are).
pub(super) async fn annotate(
    readers: &Readers,
    events: &mut [StoredEvent],
) -> Result<(), StoreError> {
    let (Some(first), Some(last)) = (events.first(), events.last()) else {
        return Ok(());
    };
    let (first, last) = (first.seq, last.seq);
    // The same two queries on whichever pool this is.
    macro_rules! read {
        ($pool:expr) => {
            (
                sqlx::query_as(leaf_block::BY_SEQ)
                    .bind(first)
                    .bind(last)
                    .fetch_all($pool)
                    .await?,
                sqlx::query_scalar(ERASED)
                    .bind(first)
                    .bind(last)
                    .fetch_all($pool)
                    .await?,
            )
        };
    }
    let (blocks, erased): (Vec<BlockRow>, Vec<i64>) = match readers {
        Readers::Sqlite(pool) => read!(pool),
        Readers::Postgres(pool) => read!(pool),
    };
    if blocks.is_empty() && erased.is_empty() {
        return Ok(());
    }
    let mut leaves: HashMap<i64, LeafRecord> = blocks
        .iter()
        .flat_map(|(index, block)| leaf_block::decode(*index, block))
        .filter(|l| (first..=last).contains(&l.seq))
        .map(|l| (l.seq, l))
        .collect();
    let erased: HashSet<i64> = erased.into_iter().collect();
    for event in events {
        let leaf = leaves.remove(&event.seq).map(|leaf| {
            // While the data exists its commitment is made from it and the
            // salt (see `leaf_block`).
            let data = match leaf.seal {
                Seal::Salt(_) => Members::parse(&event.json).ok().and_then(|m| m.data()),
                Seal::NoData | Seal::Erased(_) => None,
            };
            Leaf {
                index: i64::try_from(leaf.index).unwrap_or(i64::MAX),
                commitment: leaf.commitment(data).map(|c| c.to_vec()),
                salt: leaf.salt().map(|s| s.to_vec()),
            }
        });
        let erased = erased.contains(&event.seq);
        if leaf.is_some() || erased {
            event.trail = Some(Box::new(Trail { leaf, erased }));
        }
    }
    Ok(())
}
