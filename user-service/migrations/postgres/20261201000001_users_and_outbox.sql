-- Users and the outbox of events describing their changes, on PostgreSQL:
-- the schema of migrations/sqlite with PostgreSQL's own types, plus what
-- several replicas sharing the database need (leases on buckets of users,
-- see src/relay/leases.rs).

CREATE TABLE users (
    -- UUID v7: the type's order is time order, which keyset paging
    -- (`after=<id>`) relies on.
    id            UUID PRIMARY KEY,
    name          TEXT NOT NULL,
    -- argon2id PHC string; never leaves this table.
    password_hash TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL
);

CREATE TABLE outbox (
    -- Allocated while the inserting transaction holds the outbox's advisory
    -- lock, which it keeps until it commits (src/store/postgres.rs): seq
    -- order is commit order, so a reader paging by seq never passes a row
    -- that commits later with a smaller seq.
    seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id     UUID NOT NULL UNIQUE,
    user_id      UUID NOT NULL,
    -- Which relay lease covers the row: all of one user's rows are in one
    -- bucket, so one replica at a time sends them, in order. The low byte
    -- of a UUID v7 is random, so users spread evenly.
    bucket       SMALLINT GENERATED ALWAYS AS (get_byte(uuid_send(user_id), 15) % 64) STORED,
    event_type   TEXT NOT NULL,
    -- The CloudEvent in the JSON event format (structured mode), as text:
    -- it is sent as it was written, never queried into.
    event_json   TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    status       TEXT NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_status  INTEGER,
    last_error   TEXT,
    delivered_at TIMESTAMPTZ
);

-- The relay scans pending rows of its buckets in seq order, and one user's
-- pending rows when that user was held back.
CREATE INDEX outbox_pending ON outbox (seq) WHERE status = 'pending';
CREATE INDEX outbox_pending_user ON outbox (user_id, seq) WHERE status = 'pending';
CREATE INDEX outbox_dead ON outbox (seq) WHERE status = 'dead';
-- Retention deletes the oldest delivered rows.
CREATE INDEX outbox_delivered ON outbox (delivered_at) WHERE status = 'delivered';

-- The relays alive, each heartbeat at most a lease term old: a relay's fair
-- share of the buckets is their number over these rows' number.
CREATE TABLE outbox_relays (
    owner   TEXT PRIMARY KEY,
    seen_at TIMESTAMPTZ NOT NULL
);

-- One row per bucket: which relay may send its rows, until when.
CREATE TABLE outbox_leases (
    bucket     SMALLINT PRIMARY KEY,
    owner      TEXT,
    expires_at TIMESTAMPTZ NOT NULL DEFAULT '-infinity'
);
INSERT INTO outbox_leases (bucket) SELECT generate_series(0, 63);
