//! Runs the real service binaries as child processes, the way a user does,
//! so tests can stop, kill and restart them and read what they logged.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

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

/// One running service process. Dropping it kills the process.
pub struct Service {
    name: &'static str,
    env: HashMap<String, String>,
    log_path: PathBuf,
    child: Option<Child>,
    pub base_url: String,
}

impl Service {
    /// Starts `name` (a binary of the workspace) on a free port with `env`,
    /// appending its output to `dir/<name>.log`, and waits for `/healthz`.
    pub async fn start(name: &'static str, dir: &Path, env: &[(&str, &str)]) -> Result<Service> {
        let port = free_port();
        let mut env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env.insert("LISTEN_ADDR".into(), format!("127.0.0.1:{port}"));
        env.entry("RUST_LOG".into())
            .or_insert_with(|| "info".into());
        // A TLS test's certificate is for localhost.
        let base_url = match env.contains_key("TLS_CERT_FILE") {
            true => format!("https://localhost:{port}"),
            false => format!("http://127.0.0.1:{port}"),
        };
        let mut service = Service {
            name,
            env,
            log_path: dir.join(format!("{name}.log")),
            child: None,
            base_url,
        };
        service.restart().await?;
        Ok(service)
    }

    /// Starts the process again with the same port, environment and log.
    pub async fn restart(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        let child = Command::new(binary(self.name)?)
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("failed to start {}", self.name))?;
        self.child = Some(child);
        self.wait_healthy().await
    }

    async fn wait_healthy(&mut self) -> Result<()> {
        let url = format!("{}/healthz", self.base_url);
        let deadline = Instant::now() + Duration::from_secs(30);
        // Only whether it answers matters here; the TLS tests check the
        // certificate with a client of their own.
        let client = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .build()?;
        loop {
            if let Ok(r) = client.get(&url).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("{} exited with {status}; log:\n{}", self.name, self.logs());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} not healthy after 30 s; log:\n{}",
                    self.name,
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL: no shutdown code runs, as in a crash or an OOM kill.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for a clean exit; returns whether it exited 0.
    pub async fn terminate(&mut self) -> Result<bool> {
        let Some(mut child) = self.child.take() else {
            return Ok(true);
        };
        // kill(1) rather than a signal crate: its libc features would make
        // the services' build differ from the tests' (see
        // scripts/check-build-features.py).
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .context("failed to run kill")?;
        if !sent.success() {
            bail!("kill -TERM {} failed: {sent}", child.id());
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status.success());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("{} did not stop within 30 s of SIGTERM", self.name);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last `n` lines the process wrote, for failure messages.
    pub fn log_tail(&self, n: usize) -> String {
        let logs = self.logs();
        let lines: Vec<&str> = logs.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The JSON log lines the process wrote so far whose `message` is
    /// `message`.
    pub fn log_lines(&self, message: &str) -> Vec<Value> {
        self.logs()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|line| line["message"] == message)
            .collect()
    }

    /// Everything the process wrote so far, across restarts.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
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

    pub async fn audit(&self, extra: &[(&str, &str)]) -> Result<Service> {
        let db = self.db_url("audit.db").await;
        let mut env = vec![("DATABASE_URL", db.as_str())];
        env.extend_from_slice(extra);
        Service::start("audit-service", self.dir.path(), &env).await
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
        Service::start("user-service", self.dir.path(), &env).await
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
