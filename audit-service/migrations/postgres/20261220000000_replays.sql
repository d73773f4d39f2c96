-- Replays of the audit trail (src/replay): what each sends, where, and how
-- far it got. `position` is the last seq examined and acknowledged (or
-- counted, for a dry run): a replay that starts again, after a restart or
-- on another replica, goes on after it, so events may go twice but never
-- not at all. One replica runs a replay at a time: the one named in
-- `lease_owner` until `lease_until` (milliseconds since the epoch, the
-- database's clock).
CREATE TABLE replays (
    id            TEXT PRIMARY KEY,
    created_at    TEXT NOT NULL,
    -- The request as accepted (JSON): selection, target, mode, rate.
    spec          TEXT NOT NULL,
    state         TEXT NOT NULL,
    from_seq      BIGINT NOT NULL,
    to_seq        BIGINT NOT NULL,
    position      BIGINT NOT NULL,
    sent          BIGINT NOT NULL DEFAULT 0,
    failed        BIGINT NOT NULL DEFAULT 0,
    dead_lettered BIGINT NOT NULL DEFAULT 0,
    skipped       BIGINT NOT NULL DEFAULT 0,
    error         TEXT,
    started_at    TEXT,
    finished_at   TEXT,
    lease_owner   TEXT,
    lease_until   BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX replays_by_state ON replays (state);

-- Events a replay's target refused for good (a 4xx other than those
-- retried, a record the broker will not take): the replay went on past them.
CREATE TABLE replay_dead_letters (
    replay_id TEXT NOT NULL,
    seq       BIGINT NOT NULL,
    event_id  TEXT NOT NULL,
    status    INTEGER,
    reason    TEXT NOT NULL,
    at        TEXT NOT NULL,
    PRIMARY KEY (replay_id, seq)
);
