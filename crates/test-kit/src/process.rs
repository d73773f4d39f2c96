//! The services' real binaries as child processes, the way a user runs
//! them: started on a free port, waited for until ready, stopped by a
//! signal or killed, restarted, and their logs read.

use crate::poll::within;
use crate::ports::free_port;
use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

/// How long a service may take to start answering, and to stop after
/// SIGTERM.
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// What `start` and `restart` wait for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// `/readyz` answers 200: the database and the broker answer.
    Ready,
    /// `/healthz` answers 200: the process serves, whatever its
    /// dependencies do (a test that keeps a broker down on purpose).
    Live,
    /// Nothing: a test of a start that fails, or that reads the log.
    Nothing,
}

/// One running service process, its output appended to a log file across
/// restarts. Dropping it kills the process.
pub struct Service {
    binary: PathBuf,
    env: Vec<(String, String)>,
    log_path: PathBuf,
    wait: Wait,
    child: Option<Child>,
    pub port: u16,
    pub base_url: String,
}

impl Service {
    /// Starts `binary` with `env` (and nothing else of the test's
    /// environment but `PATH`) on a free port unless `env` sets
    /// `LISTEN_ADDR`, appending its output to `log`, and waits for `wait`.
    pub async fn start(
        binary: impl AsRef<Path>,
        log: impl Into<PathBuf>,
        env: &[(&str, &str)],
        wait: Wait,
    ) -> Result<Service> {
        let mut service = Service::spawn(binary, log, env, wait)?;
        service.wait_started().await?;
        Ok(service)
    }

    /// Starts it without waiting for anything.
    pub fn spawn(
        binary: impl AsRef<Path>,
        log: impl Into<PathBuf>,
        env: &[(&str, &str)],
        wait: Wait,
    ) -> Result<Service> {
        let mut env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let port = match env.iter().find(|(k, _)| k == "LISTEN_ADDR") {
            Some((_, address)) => address
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .with_context(|| format!("LISTEN_ADDR {address:?} has no port"))?,
            None => {
                let port = free_port();
                env.push(("LISTEN_ADDR".into(), format!("127.0.0.1:{port}")));
                port
            }
        };
        if !env.iter().any(|(k, _)| k == "RUST_LOG") {
            env.push(("RUST_LOG".into(), "info".into()));
        }
        // A TLS test's certificate is for localhost.
        let base_url = match env.iter().any(|(k, _)| k == "TLS_CERT_FILE") {
            true => format!("https://localhost:{port}"),
            false => format!("http://127.0.0.1:{port}"),
        };
        let mut service = Service {
            binary: binary.as_ref().to_owned(),
            env,
            log_path: log.into(),
            wait,
            child: None,
            port,
            base_url,
        };
        service.spawn_child()?;
        Ok(service)
    }

    fn name(&self) -> String {
        self.binary
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    fn spawn_child(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("failed to open {}", self.log_path.display()))?;
        let child = Command::new(&self.binary)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("failed to start {}", self.binary.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Starts the process again with the same port, environment and log,
    /// after it stopped, and waits as `start` did.
    pub async fn restart(&mut self) -> Result<()> {
        if self.is_running() {
            bail!("{} is still running", self.name());
        }
        self.spawn_child()?;
        self.wait_started().await
    }

    async fn wait_started(&mut self) -> Result<()> {
        let path = match self.wait {
            Wait::Ready => "/readyz",
            Wait::Live => "/healthz",
            Wait::Nothing => return Ok(()),
        };
        let url = format!("{}{path}", self.base_url);
        // Only whether it answers matters here; the TLS tests check the
        // certificate with a client of their own.
        let client = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .timeout(Duration::from_secs(5))
            .build()?;
        let answered = within(START_TIMEOUT, || {
            let exited = self.try_wait().ok().flatten();
            let request = client.get(&url).send();
            async move {
                if let Some(status) = exited {
                    return Some(Err(status));
                }
                let ok = request.await.is_ok_and(|r| r.status().is_success());
                ok.then_some(Ok(()))
            }
        })
        .await;
        match answered {
            Some(Ok(())) => Ok(()),
            Some(Err(status)) => bail!(
                "{} exited with {status}; log:\n{}",
                self.name(),
                self.logs()
            ),
            None => bail!(
                "{} did not answer {path} within {START_TIMEOUT:?}; log:\n{}",
                self.name(),
                self.logs()
            ),
        }
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its exit status, if it has exited.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(child) => Ok(child.try_wait()?),
            None => bail!("{} was stopped", self.name()),
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.try_wait(), Ok(None))
    }

    /// Sends `signal` and returns at once.
    pub fn signal(&self, signal: Signal) -> Result<()> {
        send_signal(self.pid().context("the process was stopped")?, signal)
    }

    /// Waits, at most `timeout`, for the process to exit on its own.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let exited = within(timeout, || {
            let exited = self.try_wait();
            async move { exited.transpose() }
        })
        .await;
        match exited {
            Some(status) => {
                self.child = None;
                status
            }
            None => bail!("{} did not exit within {timeout:?}", self.name()),
        }
    }

    /// SIGKILL: no shutdown code runs, as in a crash or an OOM kill.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the exit; its status. A process still
    /// running 30 s later is killed and the test fails.
    pub async fn terminate(&mut self) -> Result<ExitStatus> {
        if self.child.is_none() {
            bail!("{} was stopped already", self.name());
        }
        self.signal(Signal::SIGTERM)?;
        match self.wait_exit(STOP_TIMEOUT).await {
            Ok(status) => Ok(status),
            Err(e) => {
                self.kill();
                Err(e.context("after SIGTERM"))
            }
        }
    }

    /// Everything the process wrote so far, across restarts.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The last `n` lines the process wrote, for failure messages.
    pub fn log_tail(&self, n: usize) -> String {
        let logs = self.logs();
        let lines: Vec<&str> = logs.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The JSON log lines written so far whose `message` is `message`.
    pub fn log_lines(&self, message: &str) -> Vec<Value> {
        self.logs()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|line| line["message"] == message)
            .collect()
    }

    /// How many log lines so far have `message`.
    pub fn log_count(&self, message: &str) -> usize {
        self.log_lines(message).len()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends `signal` to process `pid` (a child the test spawned itself, to
/// read its output as it comes) and returns at once.
pub fn send_signal(pid: u32, signal: Signal) -> Result<()> {
    let pid = Pid::from_raw(i32::try_from(pid).context("a pid fits an i32")?);
    kill(pid, signal).with_context(|| format!("failed to send {signal} to {pid}"))
}

/// Runs a service's binary with `args`, on a free port and a SQLite
/// database in `dir`, and waits up to 10 s for it to exit on its own, for
/// the tests of its command line. One that starts serving instead is
/// killed and fails the test, and so does one that opened the database.
pub fn run_to_exit(binary: &str, args: &[&str], dir: &Path) -> std::process::Output {
    let database = dir.join("command-line.db");
    let mut child = std::process::Command::new(binary)
        .args(args)
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("DATABASE_URL", format!("sqlite://{}", database.display()))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{binary} does not start: {e}"));
    let start = std::time::Instant::now();
    while matches!(child.try_wait(), Ok(None)) {
        if start.elapsed() > std::time::Duration::from_secs(10) {
            let _ = child.kill();
            let output = child.wait_with_output();
            panic!("{binary} {args:?} did not exit: it serves\n{output:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(!database.exists(), "{binary} {args:?} opened the database");
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("{binary}'s output: {e}"))
}
