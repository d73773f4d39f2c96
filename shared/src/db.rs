//! Opening the SQLite database each service keeps its state in.

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

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
    SqlitePoolOptions::new()
        .max_connections(max_connections)
        .connect_with(options)
        .await
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
        return Err(sqlx::Error::Configuration(
            format!("there is no database at {} ({url})", path.display()).into(),
        ));
    }
    SqlitePoolOptions::new()
        .max_connections(max_connections)
        .connect_with(options)
        .await
}

fn options(url: &str) -> Result<SqliteConnectOptions, sqlx::Error> {
    // sqlx reads any string as a file name; without this check a
    // `postgres://` URL would quietly become a SQLite file named after it.
    if !url.starts_with("sqlite:") {
        return Err(sqlx::Error::Configuration(
            format!("DATABASE_URL {url:?} is not supported: use a sqlite:// URL").into(),
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
            format!("DATABASE_URL {url:?} is not supported: use a sqlite:// URL of a file").into(),
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
    async fn a_url_of_another_database_is_refused_not_made_a_file() {
        let err = connect_sqlite("postgres://user@localhost/db", 1)
            .await
            .expect_err("postgres URL accepted");
        assert!(err.to_string().contains("sqlite://"), "{err}");
        assert!(!std::path::Path::new("postgres:").exists());
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
