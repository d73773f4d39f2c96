//! The audit store on SQLite: sqlx for migrations and reads, and one
//! rusqlite connection owned by the writer thread.
//!
//! Why two libraries on one file: sqlx runs each SQLite connection on a
//! worker thread of its own and hands every statement to it over a channel,
//! so inserting a batch row by row costs a thread hop per row (that capped
//! the store near 12,000 events/s). The writer already is a dedicated
//! thread, so it calls SQLite directly through rusqlite, with a cached
//! prepared statement. Both link the same libsqlite3-sys, so it is one
//! SQLite library in the process.

use super::page::{Bind, Dialect, PageQuery};
use super::writer::BatchWriter;
use super::{EventRow, StoreError, StoredEvent};
use anyhow::Context;
use cloudevents_wire::Transport;
use rusqlite::TransactionBehavior;
use sqlx::query::QueryAs;
use sqlx::sqlite::SqliteArguments;
use sqlx::{Sqlite, SqlitePool};
use std::time::Duration;

/// Connections for queries, the live tail's backlog and readiness.
const READ_CONNECTIONS: u32 = 8;

/// `OR IGNORE` rather than `ON CONFLICT DO NOTHING`: the upsert form keeps
/// a statement journal for every row (its NOT NULL checks may abort the
/// statement), which measured 50% more time per insert. IGNORE would also
/// skip a row that breaks NOT NULL, but every column it could apply to is
/// bound from a Rust `&str`, never NULL, so the only row it skips is a
/// (source, id) already stored. No RETURNING either: it buffers each row
/// through a temporary table; the changed-row count and the last rowid say
/// the same.
const INSERT: &str = "INSERT OR IGNORE INTO events \
     (source, id, type, subject, time, received_at, transport, event_json) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

/// Opens the read pool (creating and migrating the database) and the
/// writer's own connection.
pub(super) async fn open(database_url: &str) -> anyhow::Result<(SqlitePool, SqliteWriter)> {
    let shown = settings::redact::url(database_url);
    let pool = service_kit::db::connect_sqlite(database_url, READ_CONNECTIONS)
        .await
        .with_context(|| format!("Failed to open the audit database {shown}"))?;
    migrator()
        .run(&pool)
        .await
        .context("Failed to migrate the audit database")?;
    let path = service_kit::db::sqlite_path(database_url)?;
    let writer = SqliteWriter::open(&path)
        .with_context(|| format!("Failed to open the audit database {shown} for writing"))?;
    Ok((pool, writer))
}

/// The seqs and JSON sizes of the next `rows` events `query` selects.
pub(super) async fn sizes(
    pool: &SqlitePool,
    query: &PageQuery,
    rows: usize,
) -> Result<Vec<(i64, i64)>, StoreError> {
    let (sql, binds) = query.sizes_sql(Dialect::Sqlite, rows);
    Ok(bind(sqlx::query_as(&sql), binds).fetch_all(pool).await?)
}

/// The events `query` selects, up to and including seq `last`.
pub(super) async fn events(
    pool: &SqlitePool,
    query: &PageQuery,
    last: i64,
) -> Result<Vec<StoredEvent>, StoreError> {
    let (sql, binds) = query.events_sql(Dialect::Sqlite, last);
    let rows: Vec<EventColumns> = bind(sqlx::query_as(&sql), binds).fetch_all(pool).await?;
    let events = rows
        .into_iter()
        .map(
            |(seq, received_at, transport, json, source, id, ty, subject)| {
                Ok(StoredEvent {
                    seq,
                    received_at: received_at.into(),
                    transport: transport
                        .parse()
                        .map_err(|e: String| sqlx::Error::Decode(e.into()))?,
                    json,
                    source,
                    id,
                    ty,
                    subject,
                    trace: None,
                    trail: None,
                })
            },
        )
        .collect::<Result<_, sqlx::Error>>()?;
    Ok(events)
}

/// The newest seq, 0 for an empty store.
pub(super) async fn last_seq(pool: &SqlitePool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT coalesce(max(seq), 0) FROM events")
        .fetch_one(pool)
        .await
}

/// The columns of `PageQuery::events_sql` as SQLite keeps them.
type EventColumns = (
    i64,
    String,
    String,
    String,
    String,
    String,
    String,
    Option<String>,
);

fn bind<'q, O>(
    mut query: QueryAs<'q, Sqlite, O, SqliteArguments<'q>>,
    binds: Vec<Bind<'q>>,
) -> QueryAs<'q, Sqlite, O, SqliteArguments<'q>> {
    for value in binds {
        query = match value {
            Bind::Int(i) => query.bind(i),
            Bind::Text(t) => query.bind(t),
        };
    }
    query
}

/// The SQLite migrations. They moved from `migrations/` to
/// `migrations/sqlite/` unchanged: a database records each migration's
/// version and checksum (of the file's bytes), and neither depends on where
/// the file is, which the test below pins.
fn migrator() -> sqlx::migrate::Migrator {
    sqlx::migrate!("./migrations/sqlite")
}

pub(super) struct SqliteWriter {
    conn: rusqlite::Connection,
}

impl SqliteWriter {
    fn open(path: &std::path::Path) -> Result<Self, rusqlite::Error> {
        let conn = rusqlite::Connection::open(path)?;
        // The same durability as every other connection (service_kit::db): WAL,
        // and a commit is fsynced before it returns.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        // Another process on the same file (a second replica), or the
        // transparency log's sequencer, may hold the write lock: wait for it
        // in steps of 100 us (`writer_busy`), up to about 10 s. SQLite's own
        // busy timeout sleeps in steps of up to 100 ms, which made every
        // request behind a sequencer round wait tens of milliseconds more.
        conn.busy_handler(Some(writer_busy))?;
        // `ON CONFLICT` inside a transaction keeps a statement journal per
        // insert; on disk (the default) that is a file write per row, which
        // profiling showed as most of the writer's time.
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        // A commit of a few thousand events touches more pages than the
        // default 2 MiB cache holds; spilling them mid-transaction doubles
        // the writes.
        conn.pragma_update(None, "cache_size", -4 * 1024)?;
        // Erased data must leave the file (`tlog::erase`), and a page split
        // leaves copies of the cells it moved in the space it freed; FAST
        // zeroes freed space within pages, which costs no extra I/O.
        conn.pragma_update(None, "secure_delete", "FAST")?;
        conn.set_prepared_statement_cache_capacity(4);
        Ok(SqliteWriter { conn })
    }
}

/// The writer's busy handler: retry after 100 us, 100,000 times at most.
fn writer_busy(attempt: i32) -> bool {
    if attempt >= 100_000 {
        return false;
    }
    std::thread::sleep(Duration::from_micros(100));
    true
}

impl BatchWriter for SqliteWriter {
    fn insert_batch(
        &mut self,
        rows: &[(&EventRow, Transport)],
        received_at: &str,
    ) -> Result<Vec<Option<i64>>, StoreError> {
        // IMMEDIATE takes the write lock up front, so two processes sharing
        // the file queue on the busy timeout instead of failing on a lock
        // upgrade.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut seqs = Vec::with_capacity(rows.len());
        {
            let mut insert = tx.prepare_cached(INSERT)?;
            for (row, transport) in rows {
                let inserted = insert.execute((
                    &row.source,
                    &row.id,
                    &row.ty,
                    &row.subject,
                    &row.time,
                    received_at,
                    transport.as_str(),
                    &row.json,
                ))?;
                seqs.push((inserted == 1).then(|| tx.last_insert_rowid()));
            }
        }
        tx.commit()?;
        Ok(seqs)
    }

    fn run_job(&mut self, job: super::WriterJob) {
        job(&mut self.conn);
    }

    fn record_attributes(&mut self, names: &[String]) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut insert =
                tx.prepare_cached("INSERT OR IGNORE INTO event_attributes (name) VALUES (?1)")?;
            for name in names {
                insert.execute([name])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Version and SHA-384 of each migration as databases recorded them
    /// (the first two before they moved): moving or editing a file must not
    /// change either, or every existing database would refuse to start.
    #[test]
    fn moved_migrations_keep_the_versions_and_checksums_databases_recorded() {
        let recorded = [
            (20250101000000, "586aa22813077c2dc89957b99d33eb095f78995465aa17b37abf84963cc3b4bd1c19730d61e41deb383186d4784683c9"),
            (20261127000000, "29cdd7f47fb519d3fad56842eab8dda8defc8c1ff51a4f7515b1ab79c419d8152682530a9eb05b147894242b45677c47"),
            (20261215000000, "946d1139ccf6c5bf963374d545e8468da95bd3085887784640db73a2b059919e1c8466ef6c82572e330ee8aec3a30a58"),
        ];
        let migrator = migrator();
        for (version, checksum) in recorded {
            let migration = migrator
                .iter()
                .find(|m| m.version == version)
                .unwrap_or_else(|| panic!("migration {version} is gone"));
            let hex: String = migration
                .checksum
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(hex, checksum, "migration {version} changed");
        }
    }

    /// Every page query, with every combination of filters, walks the
    /// primary key or the (subject, seq) index from `after` in seq order
    /// and stops at the limit: no sort of all matching rows, so its cost
    /// does not grow with the depth of the page or the size of the log.
    /// CESQL filters add their pushed-down conditions without changing that.
    #[tokio::test]
    async fn every_page_query_is_a_keyset_walk_in_seq_order() {
        let dir = tempfile::TempDir::new().unwrap();
        let url = format!("sqlite://{}/audit.db", dir.path().display());
        let (pool, _writer) = open(&url).await.unwrap();
        let text = |v: &str| Some(v.to_owned());
        let cesql_filters = [
            None,
            Some("type = 't' AND source IN ('/a', '/b')"),
            Some("subject = 'u' AND id = 'x' AND type LIKE 'user.%'"),
            Some("type LIKE 'user.%' OR subject = 'u'"),
        ];
        for ((source, ty, subject), cesql) in [
            (None, None, None),
            (text("/s"), None, None),
            (None, text("t"), None),
            (None, None, text("u")),
            (text("/s"), text("t"), None),
            (text("/s"), None, text("u")),
            (None, text("t"), text("u")),
            (text("/s"), text("t"), text("u")),
        ]
        .into_iter()
        .flat_map(|plain| cesql_filters.map(|cesql| (plain.clone(), cesql)))
        {
            let query = PageQuery {
                source,
                ty,
                subject,
                after: 1_000_000,
                up_to: None,
                limit: 1000,
                conditions: cesql.map_or_else(Vec::new, conditions),
            };
            for (sql, binds) in [
                query.sizes_sql(Dialect::Sqlite, 1001),
                query.events_sql(Dialect::Sqlite, 2_000_000),
            ] {
                let plan = query_plan(&pool, &sql, binds).await;
                let walks_seq = |step: &String| {
                    step.contains("USING INTEGER PRIMARY KEY (rowid>?")
                        || step.contains("USING INDEX events_subject_seq (subject=? AND seq>?")
                };
                assert!(
                    plan.len() == 1 && walks_seq(&plan[0]),
                    "{query:?}: {plan:?}"
                );
            }
        }
    }

    fn conditions(filter: &str) -> Vec<cesql::Condition> {
        cesql::Expression::parse(filter)
            .unwrap()
            .pushdown()
            .conditions
    }

    async fn query_plan(pool: &SqlitePool, sql: &str, binds: Vec<Bind<'_>>) -> Vec<String> {
        use sqlx::Row;
        let explain = format!("EXPLAIN QUERY PLAN {sql}");
        let mut plan_query = sqlx::query(&explain);
        for value in binds {
            plan_query = match value {
                Bind::Int(i) => plan_query.bind(i),
                Bind::Text(t) => plan_query.bind(t),
            };
        }
        plan_query
            .fetch_all(pool)
            .await
            .unwrap()
            .iter()
            .map(|row| row.get::<String, _>("detail"))
            .collect()
    }

    /// A filter on several subjects reads each one's rows through the
    /// (subject, seq) index and sorts them: the cost is those users'
    /// histories after `after`, never the whole table.
    #[tokio::test]
    async fn a_filter_on_several_subjects_reads_only_their_rows() {
        let dir = tempfile::TempDir::new().unwrap();
        let url = format!("sqlite://{}/audit.db", dir.path().display());
        let (pool, _writer) = open(&url).await.unwrap();
        let query = PageQuery {
            after: 5,
            limit: 1000,
            conditions: conditions("subject IN ('u1', 'u2') AND type = 't'"),
            ..PageQuery::default()
        };
        let (sql, binds) = query.sizes_sql(Dialect::Sqlite, 1001);
        let plan = query_plan(&pool, &sql, binds).await;
        assert!(
            plan[0].contains("USING INDEX events_subject_seq (subject=? AND seq>?"),
            "{plan:?}"
        );
    }
}
