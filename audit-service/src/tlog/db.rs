//! The transparency log's tables, on SQLite or PostgreSQL (one SQL text
//! for both where they agree): the tree's state and checkpoint, the
//! leaves, the tiles.

use super::tiles::TileMap;
use crate::store::leaf_block::{self, BlockRow, BLOCK_MAX};
use crate::store::{Readers, Store, StoreError, WriterJob};

pub use crate::store::leaf_block::LeafRecord;

/// Runs the same sqlx expression on whichever pool `readers` holds.
macro_rules! on_pool {
    ($readers:expr, |$pool:ident| $body:expr) => {
        match $readers {
            Readers::Sqlite($pool) => $body,
            Readers::Postgres($pool) => $body,
        }
    };
}

/// The tree as of its latest checkpoint, and the erasure bookkeeping.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogState {
    pub size: u64,
    /// The seq of the last integrated event (0 for none).
    pub last_seq: i64,
    /// The signed checkpoint note; `None` until the first is signed.
    pub checkpoint: Option<String>,
    /// When it was signed (RFC 3339).
    pub signed_at: Option<String>,
    pub erasure_epoch: i64,
    pub erase_cursor: i64,
}

type StateRow = (i64, i64, Option<String>, Option<String>, i64, i64);

pub async fn state(readers: &Readers) -> Result<LogState, StoreError> {
    const SQL: &str = "SELECT size, last_seq, checkpoint, signed_at, erasure_epoch, erase_cursor \
                       FROM log_state WHERE id = 1";
    let row: StateRow = on_pool!(readers, |pool| sqlx::query_as(SQL).fetch_one(pool).await?);
    Ok(LogState {
        size: u64::try_from(row.0).unwrap_or_default(),
        last_seq: row.1,
        checkpoint: row.2,
        signed_at: row.3,
        erasure_epoch: row.4,
        erase_cursor: row.5,
    })
}

/// The stored tiles among `wanted` (level, index).
pub async fn tiles(readers: &Readers, wanted: &[(u8, u64)]) -> Result<TileMap, StoreError> {
    const SQL: &str = "SELECT hashes FROM log_tiles WHERE level = $1 AND idx = $2";
    let mut tiles = TileMap::new();
    for &(level, index) in wanted {
        let index_i64 = i64::try_from(index).unwrap_or(i64::MAX);
        let hashes: Option<Vec<u8>> = on_pool!(readers, |pool| sqlx::query_scalar(SQL)
            .bind(i64::from(level))
            .bind(index_i64)
            .fetch_optional(pool)
            .await?);
        if let Some(hashes) = hashes {
            tiles.insert((level, index), hashes);
        }
    }
    Ok(tiles)
}

/// What one sequencer round moves the tree to.
pub struct Round {
    pub from_size: u64,
    /// The erasure epoch the round's events were read in.
    pub epoch: i64,
    pub leaves: Vec<LeafRecord>,
    pub tiles: Vec<(u8, u64, Vec<u8>)>,
    pub size: u64,
    pub last_seq: i64,
    pub checkpoint: String,
    pub signed_at: String,
}

/// Writes a round in one transaction, only if the tree is still at
/// `from_size` and no erasure happened since its events were read: false
/// when another sequencer moved the tree or an erasure intervened (the
/// round is then read again). The compare-and-set comes first, so on
/// PostgreSQL it waits for a concurrent erasure's row lock. On SQLite the
/// store's writer runs it between two ingest batches, on its own
/// connection: a second writer of the file contended with ingest for its
/// lock, and SQLite's busy wait made it lose every time under load.
pub async fn commit_round(store: &Store, round: Round) -> Result<bool, StoreError> {
    let pool = match store.readers() {
        Readers::Postgres(pool) => pool.clone(),
        Readers::Sqlite(_) => {
            let (reply, answer) = tokio::sync::oneshot::channel();
            let job: WriterJob = Box::new(move |connection| {
                let _ = reply.send(commit_on_sqlite(connection, &round));
            });
            if let Some(sent) = store.run_on_writer(job).await {
                sent?;
            }
            // No answer: the writer stopped with the job in its queue.
            return answer.await.map_err(|_| StoreError::WriterGone)?;
        }
    };
    let mut tx = pool.begin().await?;
    let moved = sqlx::query(CAS)
        .bind(i64::try_from(round.size).unwrap_or(i64::MAX))
        .bind(round.last_seq)
        .bind(&round.checkpoint)
        .bind(&round.signed_at)
        .bind(i64::try_from(round.from_size).unwrap_or(i64::MAX))
        .bind(round.epoch)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if moved != 1 {
        return Ok(false);
    }
    let blocks = blocks(&round.leaves);
    let firsts: Vec<i64> = blocks.iter().map(|b| b.0).collect();
    let first_seqs: Vec<i64> = blocks.iter().map(|b| b.1).collect();
    let leaves: Vec<Vec<u8>> = blocks.into_iter().map(|b| b.2).collect();
    sqlx::query(
        "INSERT INTO log_leaf_blocks (first_idx, first_seq, leaves) \
         SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::bytea[])",
    )
    .bind(firsts)
    .bind(first_seqs)
    .bind(leaves)
    .execute(&mut *tx)
    .await?;
    for (level, index, hashes) in &round.tiles {
        sqlx::query(TILE)
            .bind(i64::from(*level))
            .bind(i64::try_from(*index).unwrap_or(i64::MAX))
            .bind(hashes)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// A round's leaves as blocks: (first index, first seq, block).
fn blocks(leaves: &[LeafRecord]) -> Vec<(i64, i64, Vec<u8>)> {
    leaves
        .chunks(BLOCK_MAX)
        .map(|chunk| {
            (
                i64::try_from(chunk[0].index).unwrap_or(i64::MAX),
                chunk[0].seq,
                leaf_block::encode(chunk),
            )
        })
        .collect()
}

/// Moves the tree from `from_size` (see `commit_round`).
const CAS: &str = "UPDATE log_state SET size = $1, last_seq = $2, checkpoint = $3, \
                   signed_at = $4 WHERE id = 1 AND size = $5 AND erasure_epoch = $6";
const TILE: &str = "INSERT INTO log_tiles (level, idx, hashes) VALUES ($1, $2, $3) \
                    ON CONFLICT (level, idx) DO UPDATE SET hashes = excluded.hashes";

/// `commit_round` on the SQLite writer's connection.
fn commit_on_sqlite(
    connection: &mut rusqlite::Connection,
    round: &Round,
) -> Result<bool, StoreError> {
    let tx = connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let moved = tx.execute(
        CAS,
        rusqlite::params![
            i64::try_from(round.size).unwrap_or(i64::MAX),
            round.last_seq,
            round.checkpoint,
            round.signed_at,
            i64::try_from(round.from_size).unwrap_or(i64::MAX),
            round.epoch
        ],
    )?;
    if moved != 1 {
        return Ok(false);
    }
    for (first, first_seq, leaves) in blocks(&round.leaves) {
        tx.prepare_cached(
            "INSERT INTO log_leaf_blocks (first_idx, first_seq, leaves) VALUES (?1, ?2, ?3)",
        )?
        .execute(rusqlite::params![first, first_seq, leaves])?;
    }
    // Prepared once per round, not once per tile (a round of 10,000
    // leaves writes some 40).
    let mut tile = tx.prepare_cached(TILE)?;
    for (level, index, hashes) in &round.tiles {
        tile.execute(rusqlite::params![
            i64::from(*level),
            i64::try_from(*index).unwrap_or(i64::MAX),
            hashes
        ])?;
    }
    drop(tile);
    tx.commit()?;
    Ok(true)
}

/// Moves the ERASE_ON_TYPES cursor forward (never back).
pub async fn set_erase_cursor(readers: &Readers, seq: i64) -> Result<(), StoreError> {
    const SQL: &str = "UPDATE log_state SET erase_cursor = $1 WHERE id = 1 AND erase_cursor < $1";
    on_pool!(readers, |pool| {
        sqlx::query(SQL).bind(seq).execute(pool).await?;
    });
    Ok(())
}

/// The leaves of `blocks` for which `keep` holds, in order.
fn decode_blocks(blocks: Vec<BlockRow>, keep: impl Fn(&LeafRecord) -> bool) -> Vec<LeafRecord> {
    blocks
        .into_iter()
        .flat_map(|(first, block)| leaf_block::decode(first, &block))
        .filter(keep)
        .collect()
}

/// The leaves with indexes `from..to`, in order.
pub async fn leaves(readers: &Readers, from: u64, to: u64) -> Result<Vec<LeafRecord>, StoreError> {
    let (from_i64, to_i64) = (
        i64::try_from(from).unwrap_or(i64::MAX),
        i64::try_from(to).unwrap_or(i64::MAX),
    );
    let blocks: Vec<BlockRow> = on_pool!(readers, |pool| sqlx::query_as(leaf_block::BY_INDEX)
        .bind(from_i64)
        .bind(to_i64)
        .fetch_all(pool)
        .await?);
    Ok(decode_blocks(blocks, |l| (from..to).contains(&l.index)))
}

/// The leaf of the event `seq`, if it is in the tree.
pub async fn leaf_of(readers: &Readers, seq: i64) -> Result<Option<LeafRecord>, StoreError> {
    let blocks: Vec<BlockRow> = on_pool!(readers, |pool| sqlx::query_as(leaf_block::BY_SEQ)
        .bind(seq)
        .bind(seq)
        .fetch_all(pool)
        .await?);
    Ok(decode_blocks(blocks, |l| l.seq == seq).pop())
}
