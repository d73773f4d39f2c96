//! How the leaves are stored: consecutive leaves in blocks of at most
//! `BLOCK_MAX`, one row each (`log_leaf_blocks`), a block being the leaves'
//! fixed-size records one after the other.
//!
//! One row per leaf, with an index on its seq, cost the SQLite writer
//! (shared with ingest) about as much as storing the event itself: 9% of
//! the process under batch load with the log on, against 3% now. A block is one row and one
//! index entry for up to 256 leaves. Leaves are read by range (entries
//! tiles, pages of events) or one at a time (a proof), and a block is small
//! enough (about 10 KiB) to read whole for either; an erasure rewrites the blocks
//! of the events it erases.
//!
//! A block (format 2) is a byte 0x02, then one record per leaf: the
//! event's seq (8 bytes, big-endian), a flags byte (1: the event has data,
//! 2: its salt is still held) and 32 bytes: the salt while the data exists,
//! the data's commitment once it is erased (zeros for an event without
//! data). While the data exists its commitment, SHA-256(salt || data), is
//! computed from the two when it is needed ([`LeafRecord::commitment`])
//! rather than stored: a round then writes 41 bytes a leaf, not 73, and
//! under batch ingest with the log on the SQLite writer (shared with
//! ingest) spends that much less of its time on the log. Blocks written
//! before (format 1: no leading byte, 73-byte records holding both) are
//! read as they are and rewritten in format 2 by an erasure.
//!
//! The store reads it to serve each event with its leaf (`annotate`); the
//! transparency log (`tlog`) writes it and reads it for tiles and proofs.

use sha2::{Digest, Sha256};

/// One leaf as stored: its index in the tree, its event's seq, and what
/// commits to the event's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafRecord {
    pub index: u64,
    pub seq: i64,
    pub seal: Seal,
}

/// What a leaf holds of its event's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seal {
    /// The event has no data.
    NoData,
    /// The salt of the data's commitment (the data is in the event).
    Salt([u8; 32]),
    /// The commitment to the data that was erased (its salt is gone).
    Erased([u8; 32]),
}

impl LeafRecord {
    /// The commitment to the data, given the event's data as stored:
    /// `None` for an event without data, and for one whose data is gone
    /// while its salt is not (which no erasure leaves).
    pub fn commitment(&self, data: Option<&str>) -> Option<[u8; 32]> {
        match (self.seal, data) {
            (Seal::NoData, _) | (Seal::Salt(_), None) => None,
            (Seal::Salt(salt), Some(data)) => Some(commitment(&salt, data)),
            (Seal::Erased(commitment), _) => Some(commitment),
        }
    }

    /// The salt, while it is held.
    pub fn salt(&self) -> Option<[u8; 32]> {
        match self.seal {
            Seal::Salt(salt) => Some(salt),
            Seal::NoData | Seal::Erased(_) => None,
        }
    }
}

/// SHA-256(salt || data): a leaf's commitment to its event's data.
pub fn commitment(salt: &[u8], data: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(salt);
    hasher.update(data.as_bytes());
    hasher.finalize().into()
}

/// A row of `log_leaf_blocks`: the first leaf's index and the block.
pub type BlockRow = (i64, Vec<u8>);

/// The blocks holding the leaves with indexes `from..to`: the one that
/// holds `from` and those that start before `to`.
pub const BY_INDEX: &str = "SELECT first_idx, leaves FROM log_leaf_blocks \
    WHERE first_idx >= (SELECT coalesce(max(first_idx), 0) FROM log_leaf_blocks \
                        WHERE first_idx <= $1) \
    AND first_idx < $2 ORDER BY first_idx";
/// The blocks holding the leaves of seqs `$1..=$2` (seqs grow with the
/// index, so by the same rule).
pub const BY_SEQ: &str = "SELECT first_idx, leaves FROM log_leaf_blocks \
    WHERE first_seq >= (SELECT coalesce(max(first_seq), 0) FROM log_leaf_blocks \
                        WHERE first_seq <= $1) \
    AND first_seq <= $2 ORDER BY first_idx";

/// Leaves per block, at most (a round's leaves are cut into blocks; a
/// round smaller than this makes a smaller block).
pub const BLOCK_MAX: usize = 256;
const FORMAT_2: u8 = 0x02;
const RECORD: usize = 8 + 1 + 32;
const HAS_DATA: u8 = 1;
const SALTED: u8 = 2;
/// Format 1's record: seq, flags (1: a commitment, 2: a salt), the
/// commitment, the salt.
const RECORD_1: usize = 8 + 1 + 32 + 32;

/// The block of `leaves` (consecutive, at most `BLOCK_MAX`).
pub fn encode(leaves: &[LeafRecord]) -> Vec<u8> {
    let mut block = Vec::with_capacity(1 + leaves.len() * RECORD);
    block.push(FORMAT_2);
    for leaf in leaves {
        block.extend_from_slice(&leaf.seq.to_be_bytes());
        let (flags, bytes) = match leaf.seal {
            Seal::NoData => (0, [0; 32]),
            Seal::Salt(salt) => (HAS_DATA | SALTED, salt),
            Seal::Erased(commitment) => (HAS_DATA, commitment),
        };
        block.push(flags);
        block.extend_from_slice(&bytes);
    }
    block
}

/// The leaves of the block that starts at index `first`, of either
/// format. A trailing partial record (which the service never writes) is
/// ignored.
pub fn decode(first: i64, block: &[u8]) -> Vec<LeafRecord> {
    let first = u64::try_from(first).unwrap_or_default();
    // A format 1 block starts with a seq's high byte, always 0.
    let (records, size) = match block.split_first() {
        Some((&FORMAT_2, records)) => (records, RECORD),
        _ => (block, RECORD_1),
    };
    records
        .chunks_exact(size)
        .zip(first..)
        .map(|(record, index)| {
            let (seq, rest) = record.split_at(8);
            let flags = rest[0];
            // 32 bytes each: `chunks_exact` gives whole records.
            let bytes =
                |at: usize| -> [u8; 32] { rest[at..at + 32].try_into().unwrap_or_default() };
            let seal = match (size, flags & HAS_DATA != 0, flags & SALTED != 0) {
                (_, false, _) => Seal::NoData,
                (RECORD, true, true) => Seal::Salt(bytes(1)),
                (RECORD, true, false) => Seal::Erased(bytes(1)),
                // Format 1 held the commitment beside the salt; it is what
                // the salt and the data give, and `verify` checks the
                // entries made from them against the tree.
                (_, true, true) => Seal::Salt(bytes(33)),
                (_, true, false) => Seal::Erased(bytes(1)),
            };
            LeafRecord {
                index,
                seq: i64::from_be_bytes(seq.try_into().unwrap_or_default()),
                seal,
            }
        })
        .collect()
}

/// Whether the block that starts at index `first` holds the leaf of `seq`.
pub fn holds(first: i64, block: &[u8], seq: i64) -> bool {
    decode(first, block).iter().any(|l| l.seq == seq)
}

/// The block with the leaf of `seq` erased, its salt replaced by the
/// commitment it made with `data` (the event's data as it was), in
/// format 2; `None` when `block` holds no such leaf with a salt.
pub fn erase(first: i64, block: &[u8], seq: i64, data: &str) -> Option<Vec<u8>> {
    let mut leaves = decode(first, block);
    let leaf = leaves.iter_mut().find(|l| l.seq == seq)?;
    let commitment = leaf
        .commitment(Some(data))
        .filter(|_| leaf.salt().is_some())?;
    leaf.seal = Seal::Erased(commitment);
    Some(encode(&leaves))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(index: u64, seq: i64, data: bool) -> LeafRecord {
        LeafRecord {
            index,
            seq,
            seal: match data {
                true => Seal::Salt([(seq as u8).wrapping_add(100); 32]),
                false => Seal::NoData,
            },
        }
    }

    #[test]
    fn a_block_decodes_to_the_leaves_it_was_made_of() {
        let erased = LeafRecord {
            index: 10,
            seq: 14,
            seal: Seal::Erased([9; 32]),
        };
        let leaves = [
            leaf(7, 10, true),
            leaf(8, 12, false),
            leaf(9, 13, true),
            erased,
        ];
        let block = encode(&leaves);
        assert_eq!(block.len(), 1 + 4 * 41);
        assert_eq!(decode(7, &block), leaves);
    }

    #[test]
    fn the_commitment_is_made_from_the_salt_and_the_data_until_erased() {
        let salted = leaf(0, 1, true);
        let salt = salted.salt().unwrap();
        assert_eq!(salted.commitment(Some("{}")), Some(commitment(&salt, "{}")));
        assert_eq!(salted.commitment(None), None);
        assert_eq!(leaf(0, 1, false).commitment(Some("{}")), None);
        let erased = LeafRecord {
            seal: Seal::Erased([3; 32]),
            ..salted
        };
        assert_eq!(
            (erased.commitment(None), erased.salt()),
            (Some([3; 32]), None)
        );
    }

    #[test]
    fn erasing_replaces_that_salt_by_its_commitment() {
        let leaves = [leaf(0, 1, true), leaf(1, 2, true), leaf(2, 3, false)];
        let block = encode(&leaves);
        let salt = leaves[1].salt().unwrap();
        let erased = erase(0, &block, 2, r#"{"a":1}"#).unwrap();
        assert_eq!(erase(0, &block, 3, "{}"), None, "no data, no salt");
        assert_eq!(erase(0, &block, 4, "{}"), None, "not in the block");
        assert!(holds(0, &block, 3) && !holds(0, &block, 4));
        assert_eq!(erase(0, &erased, 2, r#"{"a":1}"#), None, "already erased");
        let decoded = decode(0, &erased);
        assert_eq!(decoded[0], leaves[0]);
        assert_eq!(
            decoded[1].seal,
            Seal::Erased(commitment(&salt, r#"{"a":1}"#))
        );
        assert_eq!(decoded[2], leaves[2]);
        // Not a byte of the salt is left in the block.
        assert!(!erased.windows(32).any(|w| w == salt));
    }

    /// A format 1 record's seq, commitment and salt.
    type Record1 = (i64, Option<[u8; 32]>, Option<[u8; 32]>);

    /// A format 1 block.
    fn format_1(leaves: &[Record1]) -> Vec<u8> {
        let mut block = Vec::new();
        for (seq, commitment, salt) in leaves {
            block.extend_from_slice(&seq.to_be_bytes());
            block.push(u8::from(commitment.is_some()) + 2 * u8::from(salt.is_some()));
            block.extend_from_slice(&commitment.unwrap_or_default());
            block.extend_from_slice(&salt.unwrap_or_default());
        }
        block
    }

    #[test]
    fn format_1_blocks_are_read_and_erased_into_format_2() {
        let block = format_1(&[
            (5, Some([1; 32]), Some([2; 32])),
            (6, None, None),
            (7, Some([3; 32]), None),
        ]);
        let leaves = decode(4, &block);
        let seals: Vec<Seal> = leaves.iter().map(|l| l.seal).collect();
        assert_eq!(
            seals,
            [Seal::Salt([2; 32]), Seal::NoData, Seal::Erased([3; 32])]
        );
        assert_eq!(
            leaves.iter().map(|l| (l.index, l.seq)).collect::<Vec<_>>(),
            [(4, 5), (5, 6), (6, 7)]
        );
        let erased = erase(4, &block, 5, "1").unwrap();
        assert_eq!(erased[0], FORMAT_2);
        assert_eq!(
            decode(4, &erased)[0].seal,
            Seal::Erased(commitment(&[2; 32], "1"))
        );
        assert_eq!(decode(4, &erased)[1..], leaves[1..]);
    }

    #[test]
    fn the_sqlite_migration_moves_every_stored_leaf_into_blocks() {
        let db = rusqlite::Connection::open_in_memory().unwrap();
        db.execute_batch(
            "CREATE TABLE log_leaves (idx INTEGER PRIMARY KEY, seq INTEGER NOT NULL UNIQUE, \
             commitment BLOB, salt BLOB)",
        )
        .unwrap();
        // Past a block and a half, with and without data, and one erased.
        let mut leaves: Vec<LeafRecord> = (0..600)
            .map(|i| leaf(i, 3 * i as i64 + 1, i % 7 != 0))
            .collect();
        leaves[300].seal = Seal::Erased([30; 32]);
        for l in &leaves {
            // Format 1 rows held the commitment beside the salt.
            let commitment = l.commitment(Some("data"));
            db.execute(
                "INSERT INTO log_leaves VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![
                    l.index as i64,
                    l.seq,
                    commitment.as_ref().map(|c| c.as_slice()),
                    l.salt().as_ref().map(|s| s.as_slice())
                ],
            )
            .unwrap();
        }
        db.execute_batch(include_str!(
            "../../migrations/sqlite/20261230000000_leaf_blocks.sql"
        ))
        .unwrap();
        let mut read = db
            .prepare("SELECT first_idx, first_seq, leaves FROM log_leaf_blocks ORDER BY first_idx")
            .unwrap();
        let mut moved = Vec::new();
        let rows = read
            .query_map([], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, Vec<u8>>(2)?,
                ))
            })
            .unwrap();
        for row in rows {
            let (first, first_seq, block) = row.unwrap();
            let block = decode(first, &block);
            assert_eq!(block[0].seq, first_seq);
            moved.extend(block);
        }
        assert_eq!(moved.len(), leaves.len());
        let differ = moved.iter().zip(&leaves).position(|(a, b)| a != b);
        assert_eq!(differ, None, "the first leaf that differs");
    }
}
