-- The transparency log's leaves in blocks (src/store/leaf_block.rs): one
-- row for up to 256 consecutive leaves instead of one row (and one entry
-- of a seq index) per leaf. A block is the leaves' 73-byte records one
-- after the other: seq (8 bytes, big-endian), flags (1: commitment,
-- 2: salt), commitment (32 bytes), salt (32 bytes), zeros where absent.
CREATE TABLE log_leaf_blocks (
    first_idx BIGINT PRIMARY KEY,
    first_seq BIGINT NOT NULL UNIQUE,
    leaves    BYTEA NOT NULL
);

-- The leaves stored so far, 256 to a block.
INSERT INTO log_leaf_blocks (first_idx, first_seq, leaves)
SELECT min(idx), min(seq), string_agg(
           int8send(seq)
           || set_byte('\x00'::bytea, 0,
                       (commitment IS NOT NULL)::int + 2 * (salt IS NOT NULL)::int)
           || coalesce(commitment, decode(repeat('00', 32), 'hex'))
           || coalesce(salt, decode(repeat('00', 32), 'hex')),
           ''::bytea ORDER BY idx)
FROM log_leaves
GROUP BY idx / 256;

DROP TABLE log_leaves;
