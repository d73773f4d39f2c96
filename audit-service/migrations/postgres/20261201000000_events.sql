-- The audit log on PostgreSQL, shared by every audit-service replica: one
-- row per CloudEvent, whatever transport brought it, whichever replica
-- stored it. (source, id) identifies an event (CloudEvents spec), so a
-- re-delivered event hits the UNIQUE constraint and is stored once, across
-- replicas too.
CREATE TABLE events (
    -- Allocated while the writing transaction holds the store's advisory
    -- lock, which it keeps until it commits (src/store/postgres.rs): seq
    -- order is commit order across replicas, so a reader paging by
    -- `seq > after` never passes an event that commits later.
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source      TEXT NOT NULL,
    id          TEXT NOT NULL,
    type        TEXT NOT NULL,
    subject     TEXT,
    time        TIMESTAMPTZ,
    received_at TIMESTAMPTZ NOT NULL,
    transport   TEXT NOT NULL,
    -- The CloudEvent in the JSON format, as text: served back byte for
    -- byte (jsonb would reorder its keys) and never parsed on insert.
    event_json  TEXT NOT NULL,
    UNIQUE (source, id)
);

-- As on SQLite: a subject is one user's history, a selective filter;
-- filters on type and source walk the table in seq order.
CREATE INDEX events_subject_seq ON events (subject, seq);
