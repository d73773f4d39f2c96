-- The transparency log (src/tlog): the tree over the events, its signed
-- checkpoint, and which events' data was erased. The events table is not
-- touched: ingest writes exactly what it wrote before.

-- One row: the tree as of its latest checkpoint. The sequencer moves it
-- forward only from the size it read (compare-and-set), so two sequencers
-- can never fork the tree; an erasure bumps erasure_epoch, which makes a
-- sequencer that read an event before it was erased start that round again.
CREATE TABLE log_state (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    size          INTEGER NOT NULL,
    last_seq      INTEGER NOT NULL,
    checkpoint    TEXT,
    signed_at     TEXT,
    erasure_epoch INTEGER NOT NULL,
    -- The last seq ERASE_ON_TYPES looked at.
    erase_cursor  INTEGER NOT NULL
);
INSERT INTO log_state (id, size, last_seq, erasure_epoch, erase_cursor) VALUES (1, 0, 0, 0, 0);

-- The leaf of each integrated event: its dense index in the tree, its seq,
-- the commitment to its data and the salt (NULL once erased).
CREATE TABLE log_leaves (
    idx        INTEGER PRIMARY KEY,
    seq        INTEGER NOT NULL UNIQUE,
    commitment BLOB,
    salt       BLOB
);

-- The tree's hashes as C2SP tiles: 256 hashes of level 8*level each; a
-- partial tile (the right edge) is rewritten until it is full.
CREATE TABLE log_tiles (
    level  INTEGER NOT NULL,
    idx    INTEGER NOT NULL,
    hashes BLOB NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;

-- Events whose data was erased (by subject, or by retention).
CREATE TABLE event_erasures (
    seq       INTEGER PRIMARY KEY,
    erased_at TEXT NOT NULL,
    reason    TEXT NOT NULL
);
