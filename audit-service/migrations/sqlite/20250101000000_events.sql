-- The audit log: one row per CloudEvent, whatever transport brought it.
-- (source, id) identifies an event (CloudEvents spec), so a re-delivered
-- event hits the UNIQUE constraint and is stored once.
CREATE TABLE IF NOT EXISTS events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    source      TEXT NOT NULL,
    id          TEXT NOT NULL,
    type        TEXT NOT NULL,
    subject     TEXT,
    time        TEXT,
    received_at TEXT NOT NULL,
    transport   TEXT NOT NULL CHECK (transport IN ('http', 'kafka')),
    event_json  TEXT NOT NULL,
    UNIQUE (source, id)
);

-- GET /v1/events filters on one attribute and pages by seq.
CREATE INDEX IF NOT EXISTS events_source_seq ON events (source, seq);
CREATE INDEX IF NOT EXISTS events_type_seq ON events (type, seq);
CREATE INDEX IF NOT EXISTS events_subject_seq ON events (subject, seq);
