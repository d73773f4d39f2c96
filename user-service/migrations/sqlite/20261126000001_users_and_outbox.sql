-- Users and the outbox of events describing their changes. Both live in one
-- database so that a user change and its event commit in one transaction.

CREATE TABLE users (
    -- UUID v7 as lower-case hyphenated text: text order is time order,
    -- which is what keyset paging (`after=<id>`) relies on.
    id            TEXT PRIMARY KEY NOT NULL,
    name          TEXT NOT NULL,
    -- argon2id PHC string; never leaves this table.
    password_hash TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE outbox (
    -- AUTOINCREMENT so a sequence number is never reused, even after the
    -- newest rows are pruned: the relay's order is the seq order.
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id     TEXT NOT NULL UNIQUE,
    user_id      TEXT NOT NULL,
    event_type   TEXT NOT NULL,
    -- The CloudEvent in the JSON event format (structured mode).
    event_json   TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    status       TEXT NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_status  INTEGER,
    last_error   TEXT,
    delivered_at TEXT
);

-- The relay only ever scans pending rows in seq order.
CREATE INDEX outbox_pending ON outbox (seq) WHERE status = 'pending';
CREATE INDEX outbox_dead ON outbox (seq) WHERE status = 'dead';
