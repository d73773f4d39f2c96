//! `audit-service verify [--checkpoint FILE]`: rebuilds every entry from
//! the stored events (each leaf committing to data exactly when its event
//! has some), checks each leaf against the stored tree, rebuilds the tree, and checks its
//! root against the latest signed checkpoint and, when given, a checkpoint
//! saved earlier (and the consistency proof between the two). It names the
//! first seq that does not match.

use super::checkpoint::{self, SignedTree};
use super::db::{self, LeafRecord};
use super::entry::{self, Members};
use super::tiles::WIDTH;
use crate::store::leaf_block::Seal;
use crate::store::{PageQuery, Store, StoredEvent};
use std::collections::VecDeque;
use tlog_tiles::{Hash, HashReader};

/// Leaves and events read at a time.
const CHUNK: u64 = 5000;

/// What a successful verification checked.
#[derive(Debug)]
pub struct Verified {
    pub size: u64,
    pub saved: Option<u64>,
}

/// Verifies the log in `store` against its latest checkpoint, signed by
/// `verifier_key`, and against `saved` (a checkpoint note saved earlier).
/// The error is the first mismatch, naming its seq where there is one.
pub async fn verify(
    store: &Store,
    verifier_key: &str,
    saved: Option<&[u8]>,
) -> Result<Verified, String> {
    let readers = store.readers();
    let fail = |e: crate::store::StoreError| format!("reading the store: {e}");
    let state = db::state(readers).await.map_err(fail)?;
    let note = state
        .checkpoint
        .as_deref()
        .ok_or("the log has no signed checkpoint")?;
    let latest = checkpoint::open(note.as_bytes(), verifier_key)
        .map_err(|e| format!("the latest checkpoint: {e}"))?;
    let saved = saved
        .map(|note| checkpoint::open(note, verifier_key))
        .transpose()
        .map_err(|e| format!("the saved checkpoint: {e}"))?;

    let mut tree = MemoryTree::default();
    let mut events = EventCursor::new(store);
    let mut last_seq = 0i64;
    let mut index = 0u64;
    while index < latest.size {
        let to = (index + CHUNK).min(latest.size);
        let leaves = db::leaves(readers, index, to).await.map_err(fail)?;
        let tiles: Vec<(u8, u64)> = (index / WIDTH..=(to - 1) / WIDTH).map(|n| (0, n)).collect();
        let tiles = db::tiles(readers, &tiles).await.map_err(fail)?;
        let mut leaves = leaves.into_iter();
        while index < to {
            let leaf = match leaves.next() {
                Some(leaf) if leaf.index == index => leaf,
                _ => {
                    return Err(format!(
                    "index {index}: the leaf after seq {last_seq} is missing from the log's tables"
                ))
                }
            };
            let event = events.until(leaf.seq, latest.size).await?;
            let Some(event) = event else {
                return Err(format!(
                    "seq {}: the event of leaf {index} is missing (deleted)",
                    leaf.seq
                ));
            };
            let hash = tlog_tiles::record_hash(&rebuild(&event, &leaf)?);
            let stored = tiles.get(&(0, index / WIDTH)).and_then(|t| {
                t.get((index % WIDTH) as usize * 32..(index % WIDTH + 1) as usize * 32)
            });
            if stored != Some(hash.0.as_slice()) {
                return Err(format!(
                    "seq {}: the event does not match its leaf {index} in the tree (changed, or swapped with another)",
                    leaf.seq
                ));
            }
            tree.push(hash)?;
            last_seq = leaf.seq;
            index += 1;
        }
    }
    if let Some(event) = events.next_after(last_seq, state.last_seq).await? {
        return Err(format!(
            "seq {}: an event the log integrated up to seq {} has no leaf (inserted)",
            event.seq, state.last_seq
        ));
    }
    let root = tree.root(latest.size)?;
    if root != latest.root {
        return Err(format!(
            "the tree rebuilt from the events does not match the latest signed checkpoint (size {}): \
             the stored tree was altered",
            latest.size
        ));
    }
    if let Some(saved) = &saved {
        check_saved(&tree, &latest, saved, last_seq)?;
    }
    Ok(Verified {
        size: latest.size,
        saved: saved.map(|s| s.size),
    })
}

fn check_saved(
    tree: &MemoryTree,
    latest: &SignedTree,
    saved: &SignedTree,
    last_seq: i64,
) -> Result<(), String> {
    if saved.origin != latest.origin {
        return Err(format!(
            "the saved checkpoint is of another log ({:?})",
            saved.origin
        ));
    }
    if saved.size > latest.size {
        return Err(format!(
            "the saved checkpoint has {} entries, the log only {}: the log was cut, the entries after seq {last_seq} are missing",
            saved.size, latest.size
        ));
    }
    if saved.size == 0 {
        return Ok(());
    }
    let proof = tlog_tiles::prove_tree(latest.size, saved.size, tree)
        .map_err(|e| format!("consistency proof: {e}"))?;
    tlog_tiles::check_tree(&proof, latest.size, latest.root, saved.size, saved.root).map_err(|_| {
        format!(
            "the log is not consistent with the saved checkpoint of {} entries: its first {} entries changed",
            saved.size, saved.size
        )
    })
}

/// The entry of `event` as the leaf `leaf`, after checking that the leaf
/// commits to data exactly when the event has some. (The data itself is
/// checked by the entry's hash: while it exists, its commitment is made from
/// it and the leaf's salt.)
fn rebuild(event: &StoredEvent, leaf: &LeafRecord) -> Result<Vec<u8>, String> {
    let members = Members::parse(&event.json)
        .map_err(|e| format!("seq {}: the stored event is not JSON: {e}", event.seq))?;
    match (members.data(), leaf.seal) {
        (Some(_), Seal::NoData | Seal::Erased(_)) => {
            return Err(format!(
                "seq {}: the event has data its leaf does not commit to",
                event.seq
            ))
        }
        (None, Seal::Salt(_)) => {
            return Err(format!(
                "seq {}: the event's data is gone, but it was not erased (its leaf still holds the salt)",
                event.seq
            ))
        }
        _ => {}
    }
    Ok(entry::encode_with_leaf(
        &event.received_at,
        event.transport.as_str(),
        &members,
        leaf,
    ))
}

/// Reads the stored events in seq order.
struct EventCursor<'a> {
    store: &'a Store,
    buffered: VecDeque<StoredEvent>,
    after: i64,
    done: bool,
}

impl<'a> EventCursor<'a> {
    fn new(store: &'a Store) -> Self {
        EventCursor {
            store,
            buffered: VecDeque::new(),
            after: 0,
            done: false,
        }
    }

    async fn peek(&mut self) -> Result<Option<&StoredEvent>, String> {
        if self.buffered.is_empty() && !self.done {
            let page = self
                .store
                .page(
                    &PageQuery {
                        after: self.after,
                        limit: CHUNK as u32,
                        ..PageQuery::default()
                    },
                    64 * 1024 * 1024,
                )
                .await
                .map_err(|e| format!("reading the events: {e}"))?;
            self.done = page.next_after.is_none();
            if let Some(last) = page.events.last() {
                self.after = last.seq;
            }
            self.buffered.extend(page.events);
        }
        Ok(self.buffered.front())
    }

    /// The event `seq`: `None` when it is missing. An event before it is
    /// one the log never integrated.
    async fn until(&mut self, seq: i64, _size: u64) -> Result<Option<StoredEvent>, String> {
        let Some(next) = self.peek().await? else {
            return Ok(None);
        };
        if next.seq < seq {
            return Err(format!(
                "seq {}: the event has no leaf in the log (inserted, or its leaf was removed)",
                next.seq
            ));
        }
        if next.seq > seq {
            return Ok(None);
        }
        Ok(self.buffered.pop_front())
    }

    /// The first event after `after` up to `up_to`, if any.
    async fn next_after(&mut self, after: i64, up_to: i64) -> Result<Option<StoredEvent>, String> {
        while let Some(next) = self.peek().await? {
            if next.seq > up_to {
                return Ok(None);
            }
            if next.seq > after {
                return Ok(self.buffered.pop_front());
            }
            self.buffered.pop_front();
        }
        Ok(None)
    }
}

/// Every stored hash of the tree (tlog's layout), in memory.
#[derive(Default)]
struct MemoryTree {
    hashes: Vec<Hash>,
    size: u64,
}

impl MemoryTree {
    fn push(&mut self, leaf: Hash) -> Result<(), String> {
        let new = tlog_tiles::stored_hashes_for_record_hash(self.size, leaf, self)
            .map_err(|e| e.to_string())?;
        self.hashes.extend(new);
        self.size += 1;
        Ok(())
    }

    fn root(&self, size: u64) -> Result<Hash, String> {
        tlog_tiles::tree_hash(size, self).map_err(|e| e.to_string())
    }
}

impl HashReader for MemoryTree {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        indexes
            .iter()
            .map(|&i| {
                self.hashes
                    .get(i as usize)
                    .copied()
                    .ok_or(tlog_tiles::Error::IndexesNotInTree)
            })
            .collect()
    }
}
