//! The servers the project's scripts run (`scripts/kafka.sh`, `nats.sh`,
//! `mosquitto.sh`, `postgres.sh`), as the tests use them: the shared one
//! `make test` starts, which a test requires and never stops, and one of a
//! test's own on a port of its own, which it may stop and start again and
//! which is stopped, its files removed, when dropped (even if the test
//! fails). The scripts are the only way the suite runs a server, so a test
//! runs it as a user's `make kafka-up` does.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::free_port;

/// Which script runs the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Apache Kafka in KRaft mode.
    Kafka,
    /// NATS with JetStream.
    Nats,
    /// Mosquitto 2 (MQTT 5 and 3.1.1).
    Mosquitto,
    /// A PostgreSQL cluster of the project's own.
    Postgres,
}

impl Kind {
    /// The script's name, which is also its folder's under `.cache/`.
    fn name(self) -> &'static str {
        match self {
            Kind::Kafka => "kafka",
            Kind::Nats => "nats",
            Kind::Mosquitto => "mosquitto",
            Kind::Postgres => "postgres",
        }
    }

    /// The port `make test` runs the shared server on.
    pub fn shared_port(self) -> u16 {
        match self {
            Kind::Kafka => 9092,
            Kind::Nats => 4222,
            Kind::Mosquitto => 1883,
            Kind::Postgres => 55432,
        }
    }

    /// The script's environment for a server on `port`; Kafka's controller
    /// on `controller`.
    fn port_env(self, port: u16, controller: u16) -> Vec<(String, String)> {
        let port_var = |name: &str| vec![(name.to_owned(), port.to_string())];
        match self {
            Kind::Kafka => vec![
                ("BROKER_PORT".to_owned(), port.to_string()),
                ("BROKER_CONTROLLER_PORT".to_owned(), controller.to_string()),
            ],
            Kind::Nats => port_var("NATSD_PORT"),
            Kind::Mosquitto => port_var("MQTT_PORT"),
            Kind::Postgres => port_var("PG_PORT"),
        }
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn run(kind: Kind, env: &[(String, String)], command: &str) -> bool {
    Command::new(repo().join("scripts").join(format!("{}.sh", kind.name())))
        .arg(command)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs the script, failing the test if it fails.
fn run_checked(kind: Kind, env: &[(String, String)], port: u16, command: &str) {
    assert!(
        run(kind, env, command),
        "scripts/{}.sh {command} on port {port} failed",
        kind.name()
    );
}

/// Fails the test, saying how to start it, unless the shared server of
/// `kind` answers: a missing server is a failure, never a skipped test.
pub fn require_shared(kind: Kind) {
    let port = kind.shared_port();
    assert!(
        run(kind, &kind.port_env(port, port + 1), "status"),
        "no {} server on 127.0.0.1:{port}: start it with `scripts/{}.sh start` (make test does)",
        kind.name(),
        kind.name(),
    );
}

/// A server of a test's own.
#[derive(Debug)]
pub struct PrivateServer {
    kind: Kind,
    env: Vec<(String, String)>,
    /// Where clients reach it, on 127.0.0.1.
    pub port: u16,
}

impl PrivateServer {
    /// Starts a server of `kind` on a free port.
    pub fn start(kind: Kind) -> Self {
        Self::start_with(kind, &[])
    }

    /// The same, with more of the script's settings (TLS listeners,
    /// SCRAM users).
    pub fn start_with(kind: Kind, extra: &[(&str, &str)]) -> Self {
        let port = free_port();
        let mut env = kind.port_env(port, free_port());
        env.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let server = PrivateServer { kind, env, port };
        server.start_again();
        server
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops it; its data stays, for [`Self::start_again`].
    pub fn stop(&self) {
        run_checked(self.kind, &self.env, self.port, "stop");
    }

    /// Starts it again after [`Self::stop`] (or the first time).
    pub fn start_again(&self) {
        run_checked(self.kind, &self.env, self.port, "start");
    }

    /// [`Self::stop`] off the runtime's threads, so the services of a test
    /// in the same runtime keep running meanwhile.
    pub async fn stop_async(&self) {
        self.run_async("stop").await;
    }

    /// [`Self::start_again`] off the runtime's threads.
    pub async fn start_again_async(&self) {
        self.run_async("start").await;
    }

    /// Stops it and starts it again, off the runtime's threads.
    pub async fn restart_async(&self) {
        self.stop_async().await;
        self.start_again_async().await;
    }

    async fn run_async(&self, command: &'static str) {
        let (kind, env, port) = (self.kind, self.env.clone(), self.port);
        let done = tokio::task::spawn_blocking(move || run(kind, &env, command))
            .await
            .expect("the script's task");
        assert!(
            done,
            "scripts/{}.sh {command} on port {port} failed",
            kind.name()
        );
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        if !run(self.kind, &self.env, "stop") {
            // Still running: its files stay, for whoever looks into it.
            return;
        }
        // What the scripts keep per port: `data-PORT/` (and Mosquitto's
        // `tls-PORT/`), and files named `WHAT-PORT.EXT` (the server's log,
        // pid and configuration, Kafka's client properties, initdb's log).
        let cache = repo().join(".cache").join(self.kind.name());
        for folder in ["data", "tls"] {
            let _ = std::fs::remove_dir_all(cache.join(format!("{folder}-{}", self.port)));
        }
        let of_this_port = format!("-{}.", self.port);
        for entry in std::fs::read_dir(&cache).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.contains(&of_this_port) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}
