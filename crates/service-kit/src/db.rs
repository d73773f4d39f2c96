//! Opening the database each service keeps its state in: SQLite (the
//! embedded default) or PostgreSQL (what several replicas share), chosen by
//! the scheme of `DATABASE_URL`.

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, PgConnection, PgPool, SqlitePool};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// Which database a `DATABASE_URL` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

impl Kind {
    /// `sqlite:` or `postgres://` / `postgresql://`; anything else is
    /// refused by name rather than guessed at.
    pub fn of(url: &str) -> Result<Kind, sqlx::Error> {
        Kind::parse(url).ok_or_else(|| {
            sqlx::Error::Configuration(
                format!(
                    "DATABASE_URL {:?} is not supported: use a sqlite:// or postgres:// URL",
                    settings::redact::url(url)
                )
                .into(),
            )
        })
    }

    /// The kind a URL's scheme names, if it names one.
    pub fn parse(url: &str) -> Option<Kind> {
        if url.starts_with("sqlite:") {
            Some(Kind::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Kind::Postgres)
        } else {
            None
        }
    }
}

/// Opens (creating the file and its folder if missing) a SQLite database in
/// WAL mode with `synchronous=FULL`: a commit is on disk when it returns,
/// which is what lets the services acknowledge only durable work. NORMAL
/// could lose the last commits on power loss.
pub async fn connect_sqlite(url: &str, max_connections: u32) -> Result<SqlitePool, sqlx::Error> {
    let options = options(url)?.create_if_missing(true);
    if let Some(dir) = options.get_filename().parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)?;
        }
    }
    without_maintenance(SqlitePoolOptions::new())
        .max_connections(max_connections)
        .connect_with(options)
        .await
}

/// `options` without sqlx's pool maintenance task, which closes connections
/// idle for 10 minutes or older than 30. In sqlx 0.8 that task can spin
/// at 100% CPU for good, holding a runtime worker and keeping the process
/// from exiting: a race between returning and taking a connection wraps
/// its count of idle connections below zero, and the task then loops that
/// many times without yielding (launchbadge/sqlx#3645, fixed after 0.8.6).
/// It happened here to `user-service dead-letters redrive --all`, whose
/// one connection was returned as the task started. Neither reaping is
/// needed: the pools are small, SQLite's are of a local file, and a broken
/// PostgreSQL connection is found when it is next checked out. With no idle
/// timeout, no lifetime and no minimum, sqlx starts no such task.
pub fn without_maintenance<DB: sqlx::Database>(
    options: sqlx::pool::PoolOptions<DB>,
) -> sqlx::pool::PoolOptions<DB> {
    options
        .min_connections(0)
        .idle_timeout(None)
        .max_lifetime(None)
}

/// How long a caller waits for a pooled PostgreSQL connection. While the
/// server restarts, requests fail after this rather than after the 30 s
/// default, and the callers' own retries take over.
const PG_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens a pool of PostgreSQL connections with `synchronous_commit=on`
/// whatever the server's default: a commit has reached the server's WAL on
/// disk when it returns, the PostgreSQL side of "acknowledge only durable
/// work". The pool reconnects by itself after the server restarts; a
/// connection that broke is dropped when it is next checked out.
pub async fn connect_postgres(
    url: &str,
    max_connections: u32,
    application_name: &str,
) -> Result<PgPool, sqlx::Error> {
    let options = postgres_options(url, application_name)?;
    // The pool's first connection, when it fails, fails as "pool timed out"
    // after the acquire timeout, whatever the reason. One connection made
    // directly first says why (connection refused, a wrong password, no
    // such database), at once.
    match tokio::time::timeout(PG_ACQUIRE_TIMEOUT, PgConnection::connect_with(&options)).await {
        Ok(Ok(first)) => drop(first.close().await),
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            return Err(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {} s", PG_ACQUIRE_TIMEOUT.as_secs()),
            )))
        }
    }
    without_maintenance(PgPoolOptions::new())
        .max_connections(max_connections)
        .acquire_timeout(PG_ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await
}

/// The connection options of [`connect_postgres`], for a connection opened
/// on its own (the audit writer's, the outbox leases').
pub fn postgres_options(
    url: &str,
    application_name: &str,
) -> Result<PgConnectOptions, sqlx::Error> {
    if Kind::of(url)? != Kind::Postgres {
        return Err(sqlx::Error::Configuration(
            format!(
                "DATABASE_URL {:?} is not a postgres:// URL",
                settings::redact::url(url)
            )
            .into(),
        ));
    }
    Ok(PgConnectOptions::from_str(url)?
        .application_name(application_name)
        .options([("synchronous_commit", "on")]))
}

/// Opens a SQLite database that must already exist, with the same settings
/// as [`connect_sqlite`], for operator commands: pointed at a wrong path they
/// must fail, not create an empty database (and its folders) and report on
/// it.
pub async fn open_existing_sqlite(
    url: &str,
    max_connections: u32,
) -> Result<SqlitePool, sqlx::Error> {
    let options = options(url)?.create_if_missing(false);
    let path = options.get_filename();
    if !path.is_file() {
        // The caller's context names the URL; the path is what is missing.
        return Err(sqlx::Error::Configuration(
            format!("there is no database at {}", path.display()).into(),
        ));
    }
    without_maintenance(SqlitePoolOptions::new())
        .max_connections(max_connections)
        .connect_with(options)
        .await
}

fn options(url: &str) -> Result<SqliteConnectOptions, sqlx::Error> {
    // sqlx reads any string as a file name; without this check a
    // `postgres://` URL would quietly become a SQLite file named after it.
    if Kind::of(url)? != Kind::Sqlite {
        return Err(sqlx::Error::Configuration(
            format!(
                "DATABASE_URL {:?} is not a sqlite:// URL",
                settings::redact::url(url)
            )
            .into(),
        ));
    }
    Ok(SqliteConnectOptions::from_str(url)?
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(10)))
}

/// The file behind a `sqlite://` URL, for a connection opened outside sqlx
/// (the audit store's writer). In-memory databases are refused: a second
/// connection to one would see a different, empty database.
pub fn sqlite_path(url: &str) -> Result<PathBuf, sqlx::Error> {
    if !url.starts_with("sqlite:") || url.contains(":memory:") || url.contains("mode=memory") {
        return Err(sqlx::Error::Configuration(
            format!(
                "DATABASE_URL {:?} is not supported: use a sqlite:// URL of a file",
                settings::redact::url(url)
            )
            .into(),
        ));
    }
    Ok(SqliteConnectOptions::from_str(url)?
        .get_filename()
        .to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_pools_run_no_maintenance_task() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/db.sqlite", dir.path().display());
        let created = connect_sqlite(&url, 2).await.unwrap();
        let opened = open_existing_sqlite(&url, 1).await.unwrap();
        for pool in [&created, &opened] {
            let options = pool.options();
            assert_eq!(options.get_idle_timeout(), None);
            assert_eq!(options.get_max_lifetime(), None);
            assert_eq!(options.get_min_connections(), 0);
        }
        let pg = without_maintenance(PgPoolOptions::new());
        assert_eq!((pg.get_idle_timeout(), pg.get_max_lifetime()), (None, None));
    }

    #[tokio::test]
    async fn a_url_of_another_database_is_refused_not_made_a_file() {
        let err = connect_sqlite("mysql://user@localhost/db", 1)
            .await
            .expect_err("mysql URL accepted");
        assert!(err.to_string().contains("postgres://"), "{err}");
        assert!(!std::path::Path::new("mysql:").exists());
        let err = connect_sqlite("postgres://user@localhost/db", 1)
            .await
            .expect_err("postgres URL opened as SQLite");
        assert!(err.to_string().contains("not a sqlite://"), "{err}");
        let err = connect_sqlite("postgres://user:s3cret@localhost/db", 1)
            .await
            .expect_err("postgres URL accepted");
        assert!(!err.to_string().contains("s3cret"), "{err}");
        assert!(!std::path::Path::new("postgres:").exists());
    }

    #[test]
    fn the_kind_of_a_url_is_its_scheme() {
        assert_eq!(Kind::of("sqlite://data/a.db").unwrap(), Kind::Sqlite);
        assert_eq!(Kind::of("sqlite::memory:").unwrap(), Kind::Sqlite);
        assert_eq!(Kind::of("postgres://u@h/db").unwrap(), Kind::Postgres);
        assert_eq!(Kind::of("postgresql://u@h/db").unwrap(), Kind::Postgres);
        assert!(Kind::of("data/a.db").is_err());
        assert!(postgres_options("sqlite://a.db", "t").is_err());
    }

    #[test]
    fn the_file_of_a_url_is_found_and_memory_is_refused() {
        assert_eq!(
            sqlite_path("sqlite://data/audit.db").unwrap(),
            PathBuf::from("data/audit.db")
        );
        assert!(sqlite_path("sqlite::memory:").is_err());
        assert!(sqlite_path("postgres://localhost/db").is_err());
    }

    #[tokio::test]
    async fn opening_an_existing_database_creates_nothing_when_there_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/nested/missing.db", dir.path().display());
        let err = open_existing_sqlite(&url, 1).await.expect_err("opened");
        assert!(err.to_string().contains("there is no database at"), "{err}");
        assert!(!dir.path().join("nested").exists());
        drop(connect_sqlite(&url, 1).await.unwrap());
        assert!(open_existing_sqlite(&url, 1).await.is_ok());
    }

    #[tokio::test]
    async fn an_unreachable_server_is_reported_with_its_cause_at_once() {
        // Nothing listens on the discard port.
        let start = std::time::Instant::now();
        let err = connect_postgres("postgres://audit:s3cret@127.0.0.1:9/audit", 1, "test")
            .await
            .expect_err("connected to nothing");
        assert!(
            start.elapsed() < PG_ACQUIRE_TIMEOUT,
            "{:?}",
            start.elapsed()
        );
        let shown = crate::telemetry::one_line(&err);
        assert!(shown.contains("refused"), "{shown}");
        assert!(!shown.contains("pool timed out"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[tokio::test]
    async fn a_missing_file_and_folder_are_created() {
        let dir = std::env::temp_dir().join(format!("db-test-{}", std::process::id()));
        let url = format!("sqlite://{}/nested/test.db", dir.display());
        let pool = connect_sqlite(&url, 1).await.unwrap();
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(sync, 2, "synchronous=FULL");
        drop(pool);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
