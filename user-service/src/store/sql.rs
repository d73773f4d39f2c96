//! The statements both databases run as written. Parameters are `$n`,
//! which SQLite reads too; the values bound differ (SQLite keeps ids and
//! times as text, PostgreSQL as `uuid` and `timestamptz`), the text does not.
//! What a database does its own way (sets of values, locks, leases) is in
//! its module.

pub const INSERT_USER: &str =
    "INSERT INTO users (id, name, password_hash, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $4)";

pub const INSERT_EVENT: &str =
    "INSERT INTO outbox (event_id, user_id, event_type, event_json, created_at) \
     VALUES ($1, $2, $3, $4, $5)";

pub const GET_USER: &str = "SELECT id, name, created_at, updated_at FROM users WHERE id = $1";

/// Keyset paging on the primary key. `id > COALESCE(...)` rather than
/// `$1 IS NULL OR id > $1`: with the OR, SQLite scans the index from its
/// start for every page, so page n reads n pages of rows; with a single
/// bound it seeks to the cursor. The nil UUID sorts before every id (as
/// text and as `uuid`) and is never one.
pub const LIST_USERS: &str = "SELECT id, name, created_at, updated_at FROM users \
     WHERE id > COALESCE($1, '00000000-0000-0000-0000-000000000000') ORDER BY id LIMIT $2";

pub const UPDATE_USER: &str = "UPDATE users SET name = $2, updated_at = $3, \
     password_hash = COALESCE($4, password_hash) \
     WHERE id = $1 AND (name <> $2 OR $4 IS NOT NULL) \
     RETURNING id, name, created_at, updated_at";

pub const DELETE_USER: &str = "DELETE FROM users WHERE id = $1 RETURNING name";

pub const PENDING_FOR_USER: &str =
    "SELECT seq, event_id, user_id, event_type, event_json, attempts FROM outbox \
     WHERE status = 'pending' AND user_id = $1 AND seq > $2 ORDER BY seq LIMIT $3";

/// The outbox's depth and the commit time of its oldest pending row, both
/// read from the pending rows' partial index.
pub const BACKLOG: &str = "SELECT (SELECT COUNT(*) FROM outbox WHERE status = 'pending'), \
     (SELECT created_at FROM outbox WHERE status = 'pending' ORDER BY seq LIMIT 1), \
     (SELECT last_error FROM outbox WHERE status = 'pending' ORDER BY seq LIMIT 1), \
     (SELECT COUNT(*) FROM outbox WHERE status = 'dead')";

/// The oldest delivered rows first, a bounded number per statement, so a
/// large backlog of expired rows is deleted in short transactions that
/// never hold up the relay's writes for long.
pub const PRUNE_DELIVERED: &str = "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox \
     WHERE status = 'delivered' AND delivered_at < $1 ORDER BY delivered_at LIMIT $2)";

pub const DEAD_LETTERS: &str =
    "SELECT seq, event_id, event_type, user_id, attempts, last_status, last_error, \
     created_at FROM outbox WHERE status = 'dead' ORDER BY seq";

pub const REDRIVE_ALL: &str =
    "UPDATE outbox SET status = 'pending', attempts = 0 WHERE status = 'dead'";

pub const REDRIVE_ONE: &str =
    "UPDATE outbox SET status = 'pending', attempts = 0 WHERE status = 'dead' AND seq = $1";

pub const STATUS_OF: &str = "SELECT status FROM outbox WHERE seq = $1";

pub const PING: &str = "SELECT 1";
