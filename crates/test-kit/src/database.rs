//! Which database the suite runs its storage and delivery tests on, a
//! fresh PostgreSQL database per test on the suite's shared server, and a
//! test's own look into a database of either kind.
//!
//! `TEST_DATABASE=postgres` puts the tests on PostgreSQL (`make test` runs
//! them once on each); `TEST_PG_URL` is the server's admin URL, by default
//! the one `scripts/postgres.sh start` runs. A test that needs PostgreSQL
//! and cannot reach it fails, naming the command that starts it.

use service_kit::db::Kind;
use sqlx::Connection;
use std::path::Path;

/// The admin URL of the suite's PostgreSQL server.
pub fn postgres_admin_url() -> String {
    std::env::var("TEST_PG_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:55432/postgres".to_owned())
}

/// The database the storage tests run on: `TEST_DATABASE` (`sqlite`, the
/// default, or `postgres`).
pub fn database() -> Kind {
    match std::env::var("TEST_DATABASE").as_deref() {
        Ok("postgres") | Ok("postgresql") => Kind::Postgres,
        Ok("") | Ok("sqlite") | Err(_) => Kind::Sqlite,
        Ok(other) => panic!("TEST_DATABASE={other:?}: use sqlite or postgres"),
    }
}

/// A database URL for one test: a SQLite file `file` in `dir`, or a new,
/// empty PostgreSQL database, as `TEST_DATABASE` says.
pub async fn database_url(dir: &Path, file: &str) -> String {
    match database() {
        Kind::Sqlite => format!("sqlite://{}", dir.join(file).display()),
        Kind::Postgres => fresh_postgres_database().await,
    }
}

/// Creates an empty database `test_<random>` on the suite's server and
/// returns its URL. Panics when the server does not answer: tests that need
/// it must fail, never skip.
pub async fn fresh_postgres_database() -> String {
    fresh_postgres_database_on(&postgres_admin_url()).await
}

/// As [`fresh_postgres_database`], on the server of `admin_url`.
pub async fn fresh_postgres_database_on(admin_url: &str) -> String {
    let mut admin = sqlx::PgConnection::connect(admin_url)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "no PostgreSQL at {admin_url} ({e}); start one with `make pg-up` \
                 (scripts/postgres.sh start), which `make test` does"
            )
        });
    let name = format!("test_{}", uuid::Uuid::new_v4().simple());
    // template0: a copy of the empty template, no checkpoint, ~tens of ms.
    sqlx::query(&format!("CREATE DATABASE {name} TEMPLATE template0"))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name} on {admin_url}: {e}"));
    let _ = admin.close().await;
    match admin_url.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{name}"),
        None => panic!("TEST_PG_URL {admin_url:?} has no database part"),
    }
}

/// A test's own pool of two connections to a PostgreSQL database, built
/// like the services' (`service_kit::db::without_maintenance`).
pub async fn postgres_pool(url: &str) -> sqlx::PgPool {
    service_kit::db::without_maintenance(sqlx::postgres::PgPoolOptions::new())
        .max_connections(2)
        .connect(url)
        .await
        .expect("connect to PostgreSQL")
}

/// A test's own look at a database, whichever kind it is. The queries are
/// written so both read them alike (`CAST(x AS BIGINT)` for integers).
pub enum Db {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl Db {
    pub async fn open(url: &str) -> Db {
        match Kind::of(url).expect("a database URL") {
            Kind::Sqlite => Db::Sqlite(
                service_kit::db::connect_sqlite(url, 1)
                    .await
                    .expect("open SQLite"),
            ),
            Kind::Postgres => Db::Postgres(postgres_pool(url).await),
        }
    }

    /// A query's one BIGINT.
    pub async fn int(&self, sql: &str) -> i64 {
        self.try_int(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// As [`Db::int`], for a database that may be away (restarting).
    pub async fn try_int(&self, sql: &str) -> Result<i64, sqlx::Error> {
        match self {
            Db::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
            Db::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
        }
    }

    /// A query's one row of two BIGINTs.
    pub async fn ints(&self, sql: &str) -> (i64, i64) {
        match self {
            Db::Sqlite(pool) => sqlx::query_as(sql).fetch_one(pool).await,
            Db::Postgres(pool) => sqlx::query_as(sql).fetch_one(pool).await,
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// A query's one text.
    pub async fn text(&self, sql: &str) -> String {
        match self {
            Db::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
            Db::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// A query's texts, one per row.
    pub async fn texts(&self, sql: &str) -> Vec<String> {
        match self {
            Db::Sqlite(pool) => sqlx::query_scalar(sql).fetch_all(pool).await,
            Db::Postgres(pool) => sqlx::query_scalar(sql).fetch_all(pool).await,
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Runs a statement that returns no rows (a test tampering with, or
    /// setting up, a database).
    pub async fn execute(&self, sql: &str) {
        match self {
            Db::Sqlite(pool) => sqlx::query(sql).execute(pool).await.map(|_| ()),
            Db::Postgres(pool) => sqlx::query(sql).execute(pool).await.map(|_| ()),
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// A query's one row of a BIGINT and a text.
    pub async fn int_text(&self, sql: &str) -> (i64, String) {
        match self {
            Db::Sqlite(pool) => sqlx::query_as(sql).fetch_one(pool).await,
            Db::Postgres(pool) => sqlx::query_as(sql).fetch_one(pool).await,
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }
}

/// A connection of a test's own that it keeps in the database's way: a
/// lock held, a snapshot or an xid kept old. [`Session::close`] ends it, and
/// with it any transaction still open (rolled back).
pub enum Session {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl Session {
    /// Connects to `url`, creating a SQLite file that is not there yet.
    pub async fn open(url: &str) -> Session {
        match Kind::of(url).expect("a database URL") {
            Kind::Sqlite => {
                let options =
                    <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(url)
                        .expect("a SQLite URL")
                        .create_if_missing(true)
                        .busy_timeout(std::time::Duration::from_secs(10));
                Session::Sqlite(
                    sqlx::SqliteConnection::connect_with(&options)
                        .await
                        .expect("open SQLite"),
                )
            }
            Kind::Postgres => Session::Postgres(
                sqlx::PgConnection::connect(url)
                    .await
                    .expect("connect to PostgreSQL"),
            ),
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Session::Sqlite(_) => Kind::Sqlite,
            Session::Postgres(_) => Kind::Postgres,
        }
    }

    /// Runs `sql`, whatever it returns.
    pub async fn run(&mut self, sql: &str) {
        match self {
            Session::Sqlite(connection) => sqlx::query(sql).execute(connection).await.map(drop),
            Session::Postgres(connection) => sqlx::query(sql).execute(connection).await.map(drop),
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    pub async fn close(self) {
        match self {
            Session::Sqlite(connection) => connection.close().await,
            Session::Postgres(connection) => connection.close().await,
        }
        .expect("close the session")
    }
}
