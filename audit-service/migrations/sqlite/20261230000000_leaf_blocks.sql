-- The transparency log's leaves in blocks (src/store/leaf_block.rs): one
-- row for up to 256 consecutive leaves instead of one row (and one entry
-- of a seq index) per leaf, which cost the writer about as much as the
-- event itself. A block is the leaves' 73-byte records one after the other:
-- seq (8 bytes, big-endian), flags (1: commitment, 2: salt), commitment
-- (32 bytes), salt (32 bytes), zeros where absent.
CREATE TABLE log_leaf_blocks (
    first_idx INTEGER PRIMARY KEY,
    first_seq INTEGER NOT NULL UNIQUE,
    leaves    BLOB NOT NULL
);

-- The leaves stored so far, 256 to a block.
INSERT INTO log_leaf_blocks (first_idx, first_seq, leaves)
SELECT min(idx), min(seq), unhex(group_concat(
           printf('%016X', seq)
           || printf('%02X', (commitment IS NOT NULL) + 2 * (salt IS NOT NULL))
           || hex(coalesce(commitment, zeroblob(32)))
           || hex(coalesce(salt, zeroblob(32))),
           '' ORDER BY idx))
FROM log_leaves
GROUP BY idx / 256;

DROP TABLE log_leaves;
