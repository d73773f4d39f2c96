//! How the leaves are stored: consecutive leaves in blocks of at most
//! `BLOCK_MAX`, one row each (`log_leaf_blocks`), a block being the leaves'
//! fixed-size records one after the other.
//!
//! One row per leaf, with an index on its seq, cost the SQLite writer
//! (shared with ingest) about as much as storing the event itself: 9% of
//! the process under batch load with the log on, against 3% now. A block is one row and one
//! index entry for up to 256 leaves. Leaves are read by range (entries
//! tiles, pages of events) or one at a time (a proof), and a block is small
//! enough (18 KiB) to read whole for either; an erasure rewrites the blocks
//! of the events it erases.
//!
//! A record: the event's seq (8 bytes, big-endian), a flags byte (1: the
//! commitment is present, 2: the salt is), the commitment (32 bytes) and
//! the salt (32 bytes), zeros where absent.
//!
//! The store reads it to serve each event with its leaf (`annotate`); the
//! transparency log (`tlog`) writes it and reads it for tiles and proofs.

/// One leaf as stored: its index in the tree, its event's seq, the
/// commitment to the event's data and the salt (`None` once erased).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafRecord {
    pub index: u64,
    pub seq: i64,
    pub commitment: Option<[u8; 32]>,
    pub salt: Option<[u8; 32]>,
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
const RECORD: usize = 8 + 1 + 32 + 32;
const HAS_COMMITMENT: u8 = 1;
const HAS_SALT: u8 = 2;

/// The block of `leaves` (consecutive, at most `BLOCK_MAX`).
pub fn encode(leaves: &[LeafRecord]) -> Vec<u8> {
    let mut block = Vec::with_capacity(leaves.len() * RECORD);
    for leaf in leaves {
        block.extend_from_slice(&leaf.seq.to_be_bytes());
        let flags = u8::from(leaf.commitment.is_some()) * HAS_COMMITMENT
            + u8::from(leaf.salt.is_some()) * HAS_SALT;
        block.push(flags);
        block.extend_from_slice(&leaf.commitment.unwrap_or_default());
        block.extend_from_slice(&leaf.salt.unwrap_or_default());
    }
    block
}

/// The leaves of the block that starts at index `first`. A trailing
/// partial record (which the service never writes) is ignored.
pub fn decode(first: i64, block: &[u8]) -> Vec<LeafRecord> {
    let first = u64::try_from(first).unwrap_or_default();
    block
        .chunks_exact(RECORD)
        .zip(first..)
        .map(|(record, index)| {
            let (seq, rest) = record.split_at(8);
            let (flags, rest) = (rest[0], &rest[1..]);
            let (commitment, salt) = rest.split_at(32);
            // Both 32 bytes: `chunks_exact` gives whole records.
            let commitment: [u8; 32] = commitment.try_into().unwrap_or_default();
            let salt: [u8; 32] = salt.try_into().unwrap_or_default();
            LeafRecord {
                index,
                seq: i64::from_be_bytes(seq.try_into().unwrap_or_default()),
                commitment: (flags & HAS_COMMITMENT != 0).then_some(commitment),
                salt: (flags & HAS_SALT != 0).then_some(salt),
            }
        })
        .collect()
}

/// Zeroes the salt of the leaf of `seq` in `block` and marks it absent;
/// false when the block holds no such leaf.
pub fn unsalt(block: &mut [u8], seq: i64) -> bool {
    for record in block.chunks_exact_mut(RECORD) {
        if record[..8] == seq.to_be_bytes() {
            record[8] &= !HAS_SALT;
            record[9 + 32..].fill(0);
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(index: u64, seq: i64, data: bool) -> LeafRecord {
        LeafRecord {
            index,
            seq,
            commitment: data.then_some([seq as u8; 32]),
            salt: data.then_some([(seq as u8).wrapping_add(100); 32]),
        }
    }

    #[test]
    fn a_block_decodes_to_the_leaves_it_was_made_of() {
        let leaves = [leaf(7, 10, true), leaf(8, 12, false), leaf(9, 13, true)];
        let decoded = decode(7, &encode(&leaves));
        assert_eq!(decoded, leaves);
    }

    #[test]
    fn unsalting_removes_that_salt_only_and_keeps_the_commitment() {
        let leaves = [leaf(0, 1, true), leaf(1, 2, true)];
        let mut block = encode(&leaves);
        assert!(unsalt(&mut block, 2));
        assert!(!unsalt(&mut block, 3));
        let decoded = decode(0, &block);
        assert_eq!(decoded[0].salt, Some([101; 32]));
        assert_eq!(decoded[1].salt, None);
        assert_eq!(decoded[1].commitment, Some([2; 32]));
        // Not a byte of the salt is left in the block.
        assert!(!block.windows(32).any(|w| w == [102; 32]));
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
        leaves[300].salt = None;
        for l in &leaves {
            db.execute(
                "INSERT INTO log_leaves VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![
                    l.index as i64,
                    l.seq,
                    l.commitment.as_ref().map(|c| c.as_slice()),
                    l.salt.as_ref().map(|s| s.as_slice())
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
