//! The tree as C2SP tlog-tiles: tiles of height 8, their paths, the right
//! edge the sequencer keeps in memory while it appends, and hash readers
//! over tiles for `tlog_tiles`' proofs.
//!
//! The tree math (stored-hash indexes, proofs, tree hashes) is
//! `tlog_tiles`, Go's `sumdb/tlog` ported. Its `Tile::path` is the older
//! sumdb form `tile/H/L/N`, which names the height; C2SP dropped it
//! (`tile/L/N`, `tile/entries/N`), so the paths are parsed and written
//! here.

use std::cell::RefCell;
use std::collections::HashMap;
use tlog_tiles::{Hash, HashReader, Tile, HASH_SIZE};

/// C2SP tiles are 8 levels high: a full tile holds 256 hashes.
pub const HEIGHT: u8 = 8;
pub const WIDTH: u64 = 1 << HEIGHT;

/// A tile's coordinates as a C2SP path names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TilePath {
    /// `tile/<L>/<N>[.p/<W>]`: `width` hashes at level `8 * level`.
    Hashes { level: u8, index: u64, width: u64 },
    /// `tile/entries/<N>[.p/<W>]`: `width` entries from `index * 256`.
    Entries { index: u64, width: u64 },
}

impl TilePath {
    /// Parses what follows `tile/`. Only the canonical form is accepted,
    /// so each tile has one URL (and one cache entry).
    pub fn parse(path: &str) -> Option<TilePath> {
        let (kind, rest) = path.split_once('/')?;
        let (number, width) = match rest.split_once(".p/") {
            Some((number, width)) => {
                let w: u64 = width.parse().ok()?;
                if !(1..WIDTH).contains(&w) || width != w.to_string() {
                    return None;
                }
                (number, w)
            }
            None => (rest, WIDTH),
        };
        let mut index: u64 = 0;
        let segments: Vec<&str> = number.split('/').collect();
        for (i, segment) in segments.iter().enumerate() {
            let last = i + 1 == segments.len();
            let digits = if last {
                *segment
            } else {
                segment.strip_prefix('x')?
            };
            if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            index = index
                .checked_mul(1000)?
                .checked_add(digits.parse::<u64>().ok()?)?;
        }
        let parsed = if kind == "entries" {
            TilePath::Entries { index, width }
        } else {
            let level: u8 = kind.parse().ok()?;
            if kind != level.to_string() || level > 7 {
                return None;
            }
            TilePath::Hashes {
                level,
                index,
                width,
            }
        };
        // The canonical form: no leading zero segments such as x000.
        (parsed.path() == format!("tile/{path}")).then_some(parsed)
    }

    /// `tile/...`, as C2SP writes it.
    pub fn path(&self) -> String {
        let (kind, index, width) = match *self {
            TilePath::Hashes {
                level,
                index,
                width,
            } => (level.to_string(), index, width),
            TilePath::Entries { index, width } => ("entries".to_owned(), index, width),
        };
        let mut n = index;
        let mut number = format!("{:03}", n % 1000);
        while n >= 1000 {
            n /= 1000;
            number = format!("x{:03}/{number}", n % 1000);
        }
        let partial = if width == WIDTH {
            String::new()
        } else {
            format!(".p/{width}")
        };
        format!("tile/{kind}/{number}{partial}")
    }

    pub fn is_full(&self) -> bool {
        match *self {
            TilePath::Hashes { width, .. } | TilePath::Entries { width, .. } => width == WIDTH,
        }
    }
}

/// Stored tiles by (level, index): their hashes, 32 bytes each.
pub type TileMap = HashMap<(u8, u64), Vec<u8>>;

/// The partial tiles of a tree of `size` leaves: at each level, the tile
/// that is not full yet (none where the level's count is a multiple of 256).
pub fn partial_tiles(size: u64) -> Vec<(u8, u64, u64)> {
    let mut tiles = Vec::new();
    let mut level = 0u8;
    while level < 8 && size >> (u32::from(HEIGHT) * u32::from(level)) > 0 {
        let count = size >> (u32::from(HEIGHT) * u32::from(level));
        if count % WIDTH > 0 {
            tiles.push((level, count / WIDTH, count % WIDTH));
        }
        level += 1;
    }
    tiles
}

/// The right edge of the tree: the partial tile of each level, and the
/// tiles an append completed or changed since the last `take_changes`.
pub struct RightEdge {
    size: u64,
    /// Per level, the hashes of its partial tile.
    partial: Vec<Vec<u8>>,
    /// Tiles completed since the last `take_changes`, kept until written.
    completed: TileMap,
}

impl RightEdge {
    /// The right edge of a tree of `size` from its stored tiles (at least
    /// its partial ones, as `partial_tiles` names them).
    pub fn load(size: u64, stored: &TileMap) -> Result<Self, String> {
        let mut partial = Vec::new();
        for (level, index, width) in partial_tiles(size) {
            let hashes = stored
                .get(&(level, index))
                .filter(|h| h.len() as u64 >= width * HASH_SIZE as u64)
                .ok_or_else(|| format!("tile {level}/{index} of the tree of {size} is missing"))?;
            partial.resize(usize::from(level) + 1, Vec::new());
            partial[usize::from(level)] = hashes[..(width as usize * HASH_SIZE)].to_vec();
        }
        Ok(RightEdge {
            size,
            partial,
            completed: TileMap::new(),
        })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf whose record hash is `leaf`.
    pub fn push(&mut self, leaf: Hash) {
        self.size += 1;
        let mut hash = leaf;
        let mut level = 0usize;
        loop {
            if self.partial.len() <= level {
                self.partial.push(Vec::new());
            }
            self.partial[level].extend_from_slice(&hash.0);
            if self.partial[level].len() < WIDTH as usize * HASH_SIZE {
                break;
            }
            let full = std::mem::take(&mut self.partial[level]);
            hash = Tile::subtree_hash(&full);
            // The count at this level just reached a multiple of 256.
            let index = (self.size >> (8 * level)) / WIDTH - 1;
            self.completed.insert((level as u8, index), full);
            level += 1;
        }
    }

    /// The root hash of the tree.
    pub fn root(&self) -> Result<Hash, tlog_tiles::Error> {
        let mut tiles = self.completed.clone();
        for (level, index, _) in partial_tiles(self.size) {
            tiles.insert((level, index), self.partial[usize::from(level)].clone());
        }
        tlog_tiles::tree_hash(self.size, &Reader::Tiles(&tiles))
    }

    /// The tiles to write for the tree as it is now: those completed since
    /// the last call, and the partial ones.
    pub fn take_changes(&mut self) -> Vec<(u8, u64, Vec<u8>)> {
        let mut changes: Vec<_> = self
            .completed
            .drain()
            .map(|((level, index), hashes)| (level, index, hashes))
            .collect();
        for (level, index, _) in partial_tiles(self.size) {
            changes.push((level, index, self.partial[usize::from(level)].clone()));
        }
        changes.sort_by_key(|(level, index, _)| (*level, *index));
        changes
    }
}

/// A `HashReader` for `tlog_tiles`' proofs and tree hashes. Which hashes
/// an operation reads depends only on the sizes and indexes it is given,
/// never on the hashes, so it runs twice: once `Recording` what it reads
/// (answered with zeros), then over the tiles holding those hashes, read
/// from the database in between. (The reader trait is synchronous, and a
/// database read is not.)
pub enum Reader<'a> {
    Recording(RefCell<Vec<u64>>),
    Tiles(&'a TileMap),
}

impl Reader<'_> {
    pub fn recording() -> Self {
        Reader::Recording(RefCell::new(Vec::new()))
    }

    /// The tiles (level, index) holding the hashes recorded.
    pub fn tiles_needed(&self) -> Vec<(u8, u64)> {
        let Reader::Recording(indexes) = self else {
            return Vec::new();
        };
        let mut tiles: Vec<(u8, u64)> = indexes
            .borrow()
            .iter()
            .map(|&i| {
                let tile = Tile::from_index(HEIGHT, i);
                (tile.level(), tile.level_index())
            })
            .collect();
        tiles.sort_unstable();
        tiles.dedup();
        tiles
    }
}

impl HashReader for Reader<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        match self {
            Reader::Recording(seen) => {
                seen.borrow_mut().extend_from_slice(indexes);
                Ok(vec![Hash([0; HASH_SIZE]); indexes.len()])
            }
            Reader::Tiles(tiles) => indexes
                .iter()
                .map(|&i| {
                    let needed = Tile::from_index(HEIGHT, i);
                    let data = tiles
                        .get(&(needed.level(), needed.level_index()))
                        .ok_or(tlog_tiles::Error::IndexesNotInTree)?;
                    let width = u32::try_from(data.len() / HASH_SIZE)
                        .ok()
                        .filter(|w| (1..=WIDTH as u32).contains(w))
                        .ok_or(tlog_tiles::Error::InvalidTile)?;
                    Tile::new(HEIGHT, needed.level(), needed.level_index(), width, false)
                        .hash_at_index(data, i)
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tlog_tiles::{record_hash, stored_hashes};

    #[test]
    fn paths_are_c2sp_and_only_canonical_ones_parse() {
        for (path, parsed) in [
            (
                "0/000",
                TilePath::Hashes {
                    level: 0,
                    index: 0,
                    width: 256,
                },
            ),
            (
                "1/x001/x234/067.p/8",
                TilePath::Hashes {
                    level: 1,
                    index: 1_234_067,
                    width: 8,
                },
            ),
            (
                "entries/x001/000",
                TilePath::Entries {
                    index: 1000,
                    width: 256,
                },
            ),
            (
                "entries/005.p/255",
                TilePath::Entries {
                    index: 5,
                    width: 255,
                },
            ),
        ] {
            assert_eq!(TilePath::parse(path), Some(parsed), "{path}");
            assert_eq!(parsed.path(), format!("tile/{path}"));
        }
        for bad in [
            "0/0",
            "0/x000/001",
            "0/000.p/256",
            "0/000.p/0",
            "0/000.p/07",
            "8/000",
            "00/000",
            "data/000",
            "0/001/002",
            "entries/1234",
            "0/000/",
        ] {
            assert_eq!(TilePath::parse(bad), None, "{bad}");
        }
    }

    /// Every hash the right edge writes agrees with `tlog_tiles`' own
    /// stored hashes, and so do the roots, across tile boundaries.
    #[test]
    fn the_right_edge_matches_the_reference_tree_at_every_size() {
        let mut stored: Vec<Hash> = Vec::new();
        struct Mem<'a>(&'a [Hash]);
        impl HashReader for Mem<'_> {
            fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
                Ok(indexes.iter().map(|&i| self.0[i as usize]).collect())
            }
        }
        let mut edge = RightEdge::load(0, &TileMap::new()).unwrap();
        let mut written = TileMap::new();
        for n in 0..70_000u64 {
            let data = n.to_be_bytes();
            let new = stored_hashes(n, &data, &Mem(&stored)).unwrap();
            stored.extend(new);
            edge.push(record_hash(&data));
            if n % 997 == 0 || n == 65_535 || n == 255 {
                let size = n + 1;
                let expected = tlog_tiles::tree_hash(size, &Mem(&stored)).unwrap();
                assert_eq!(edge.root().unwrap(), expected, "size {size}");
                for (level, index, hashes) in edge.take_changes() {
                    written.insert((level, index), hashes);
                }
                // A proof over the written tiles, as the API serves it.
                let reader = Reader::recording();
                let _ = tlog_tiles::prove_record(size, n / 2, &reader).unwrap();
                for tile in reader.tiles_needed() {
                    assert!(written.contains_key(&tile), "{tile:?} of {size}");
                }
                let proof =
                    tlog_tiles::prove_record(size, n / 2, &Reader::Tiles(&written)).unwrap();
                tlog_tiles::check_record(
                    &proof,
                    size,
                    expected,
                    n / 2,
                    record_hash(&(n / 2).to_be_bytes()),
                )
                .unwrap();
                let reloaded = RightEdge::load(size, &written).unwrap();
                assert_eq!(reloaded.root().unwrap(), expected);
            }
        }
    }
}
