//! The two services together, as their users run them: a [`Stack`] holds
//! their logs and databases, starts both binaries (test-kit's
//! [`Service`]) and speaks their APIs.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
pub use test_kit::free_port;
pub use test_kit::process::{Service, Wait};

/// Where cargo put the binaries: next to the `deps/` folder of this test.
pub fn binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test binary has no target dir")?;
    let path = dir.join(name);
    if !path.exists() {
        bail!(
            "{} is missing: run `cargo build --workspace` first (make test does)",
            path.display()
        );
    }
    Ok(path)
}

/// An example program of the workspace (`cargo build --examples` puts it
/// in the target dir's `examples/`; make test builds them).
pub fn example(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test binary has no target dir")?;
    let path = dir.join("examples").join(name);
    if !path.exists() {
        bail!(
            "{} is missing: run `cargo build --workspace --examples` first (make test does)",
            path.display()
        );
    }
    Ok(path)
}

/// Starts `name`, a binary of the workspace, on a free port with `env`,
/// appending its output to `dir/<name>.log`, and waits until it is ready.
pub async fn start(name: &str, dir: &Path, env: &[(&str, &str)]) -> Result<Service> {
    start_waiting(name, dir, env, Wait::Ready).await
}

/// `start`, waiting for `wait` rather than readiness.
pub async fn start_waiting(
    name: &str,
    dir: &Path,
    env: &[(&str, &str)],
    wait: Wait,
) -> Result<Service> {
    let log = dir.join(format!("{name}.log"));
    Service::start(binary(name)?, log, env, wait).await
}

/// A temporary folder with the two services' logs and their databases
/// (SQLite files there, or PostgreSQL databases with
/// `TEST_DATABASE=postgres`, see `test_kit::database`).
pub struct Stack {
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
    databases: std::sync::Mutex<HashMap<String, String>>,
}

impl Stack {
    pub fn new() -> Result<Stack> {
        Ok(Stack {
            dir: tempfile::tempdir()?,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                // The services close a keep-alive connection idle for
                // HEADER_READ_TIMEOUT_MS (10 s); a request sent on one at
                // that moment fails unanswered. Tests pause longer than
                // that (a broker restart), so pooled connections are
                // dropped first.
                .pool_idle_timeout(Duration::from_secs(5))
                .build()?,
            databases: std::sync::Mutex::default(),
        })
    }

    /// The URL of this stack's database `name`, made on first use and the
    /// same afterwards (restarts keep their data).
    pub async fn db_url(&self, name: &str) -> String {
        if let Some(url) = self.known_db(name) {
            return url;
        }
        let url = test_kit::database::database_url(self.dir.path(), name).await;
        self.databases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.to_owned())
            .or_insert(url)
            .clone()
    }

    fn known_db(&self, name: &str) -> Option<String> {
        self.databases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// The audit service, once ready.
    pub async fn audit(&self, extra: &[(&str, &str)]) -> Result<Service> {
        self.audit_waiting(extra, Wait::Ready).await
    }

    /// The audit service, once `wait` holds (`Wait::Live` for one that is
    /// not to become ready).
    pub async fn audit_waiting(&self, extra: &[(&str, &str)], wait: Wait) -> Result<Service> {
        let db = self.db_url("audit.db").await;
        let mut env = vec![("DATABASE_URL", db.as_str())];
        env.extend_from_slice(extra);
        start_waiting("audit-service", self.dir.path(), &env, wait).await
    }

    /// The user service, sending to `audit_url` over HTTP unless `extra`
    /// says otherwise; retries are fast so tests don't wait on backoff.
    pub async fn user(&self, audit_url: &str, extra: &[(&str, &str)]) -> Result<Service> {
        let db = self.db_url("users.db").await;
        let audit = format!("{audit_url}/");
        let mut env = vec![
            ("DATABASE_URL", db.as_str()),
            ("AUDIT_URL", audit.as_str()),
            ("RELAY_BACKOFF_INITIAL_MS", "20"),
            ("RELAY_BACKOFF_MAX_MS", "500"),
        ];
        env.extend_from_slice(extra);
        start("user-service", self.dir.path(), &env).await
    }

    /// `POST /v1/user`; the new user's id on 201.
    pub async fn create_user(&self, user: &Service, name: &str, password: &str) -> Result<String> {
        let response = self
            .http
            .post(format!("{}/v1/user", user.base_url))
            .json(&json!({"name": name, "password": password}))
            .send()
            .await?;
        if response.status() != 201 {
            bail!("POST /v1/user answered {}", response.status());
        }
        let body: Value = response.json().await?;
        Ok(body["id"].as_str().context("201 without an id")?.to_owned())
    }

    /// Creates a user and waits, at most `timeout`, until audit-service has
    /// stored its event; the user's id.
    pub async fn create_user_and_wait(
        &self,
        user: &Service,
        audit: &Service,
        timeout: Duration,
    ) -> Result<String> {
        let id = self.create_user(user, "Ozzy Osbourne", "12345678").await?;
        self.wait_for_events(audit, &format!("subject={id}"), timeout, |e| !e.is_empty())
            .await?;
        Ok(id)
    }

    /// `PUT /v1/users/{id}` with a new name; fails unless it answers 200.
    pub async fn rename_user(&self, user: &Service, id: &str, name: &str) -> Result<()> {
        let response = self
            .http
            .put(format!("{}/v1/users/{id}", user.base_url))
            .json(&json!({"name": name}))
            .send()
            .await?;
        if response.status() != 200 {
            bail!("PUT /v1/users/{id} answered {}", response.status());
        }
        Ok(())
    }

    /// `DELETE /v1/users/{id}`; fails unless it answers 204.
    pub async fn delete_user(&self, user: &Service, id: &str) -> Result<()> {
        let response = self
            .http
            .delete(format!("{}/v1/users/{id}", user.base_url))
            .send()
            .await?;
        if response.status() != 204 {
            bail!("DELETE /v1/users/{id} answered {}", response.status());
        }
        Ok(())
    }

    /// Every item of `GET /v1/events` matching `query`, following the pages.
    pub async fn events(&self, audit: &Service, query: &str) -> Result<Vec<Value>> {
        let mut items = Vec::new();
        let mut after: Option<i64> = None;
        loop {
            let mut url = format!("{}/v1/events?limit=1000&{query}", audit.base_url);
            if let Some(a) = after {
                url.push_str(&format!("&after={a}"));
            }
            let page: Value = self
                .http
                .get(&url)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            let events = page["events"].as_array().context("no events array")?;
            items.extend(events.iter().cloned());
            match page["next_after"].as_i64() {
                Some(next) if !events.is_empty() => after = Some(next),
                _ => return Ok(items),
            }
        }
    }

    /// Polls `GET /v1/events?{query}` until `done` holds for the items, or
    /// fails after `timeout` showing what was there.
    pub async fn wait_for_events(
        &self,
        audit: &Service,
        query: &str,
        timeout: Duration,
        done: impl Fn(&[Value]) -> bool,
    ) -> Result<Vec<Value>> {
        let deadline = Instant::now() + timeout;
        loop {
            let items = self.events(audit, query).await.unwrap_or_default();
            if done(&items) {
                return Ok(items);
            }
            if Instant::now() > deadline {
                bail!(
                    "after {timeout:?}, GET /v1/events?{query} has {} items: {}",
                    items.len(),
                    serde_json::to_string(&items.iter().take(5).collect::<Vec<_>>())?
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
