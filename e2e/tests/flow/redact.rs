//! No credential of a URL-like setting reaches a log: both binaries are
//! started with each setting they read (`settings::redact::URL_SETTINGS`)
//! full of secrets, in every form a reader might take for a password
//! (user info, user info a URL parser reads as host and port, a
//! `?password=` parameter, a NATS token), pointing where nothing answers,
//! and made to use it; not one secret may be in what they print.

use e2e::{binary, free_port};
use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One run: a service, the settings under test, and the secrets in them.
struct Case {
    service: &'static str,
    env: Vec<(&'static str, String)>,
    secrets: Vec<String>,
}

/// A port nothing listens on, so every connection is refused at once.
fn nowhere() -> String {
    format!("127.0.0.1:{}", free_port())
}

fn case(service: &'static str, env: &[(&'static str, String)]) -> Case {
    let secrets = env
        .iter()
        .flat_map(|(_, value)| {
            value
                .split(|c: char| !c.is_ascii_alphanumeric())
                .filter(|part| part.starts_with("Secret"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    Case {
        service,
        env: env.to_vec(),
        secrets,
    }
}

/// Every URL-like setting of either service, each in each secret-bearing
/// form, with what makes the service use it.
fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for service in ["audit-service", "user-service"] {
        let database = |db: &str| db.replace("{}", &nowhere());
        for url in [
            "postgres://audit:SecretDbPassword1@{}/audit",
            "postgres://audit@{}/audit?sslmode=disable&password=SecretDbPassword2",
            "postgres://admin:1234/SecretDbPassword3@{}/audit",
        ] {
            cases.push(case(service, &[("DATABASE_URL", database(url))]));
        }
        for brokers in [
            format!("u:SecretKafka1@{}", nowhere()),
            format!("{},SASL_SSL://u:SecretKafka2@{}", nowhere(), nowhere()),
        ] {
            cases.push(case(
                service,
                &[
                    ("EVENT_TRANSPORT", "kafka".into()),
                    ("KAFKA_BROKERS", brokers),
                ],
            ));
        }
        for url in [
            format!("nats://u:SecretNats1@{}", nowhere()),
            format!("nats://SecretNatsToken2@{}", nowhere()),
            format!("nats://{},nats://u:SecretNats3@{}", nowhere(), nowhere()),
        ] {
            cases.push(case(
                service,
                &[("EVENT_TRANSPORT", "nats".into()), ("NATS_URL", url)],
            ));
        }
        if service == "user-service" {
            for url in [
                format!("mqtt://u:SecretMqtt1@{}", nowhere()),
                format!("mqtt://admin:1234/SecretMqtt2@{}", nowhere()),
            ] {
                cases.push(case(
                    service,
                    &[("EVENT_TRANSPORT", "mqtt".into()), ("MQTT_URL", url)],
                ));
            }
        }
        for (name, url) in [
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://u:SecretOtel1@{}", nowhere()),
            ),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                format!("http://{}/v1/traces?api_key=SecretOtel2", nowhere()),
            ),
        ] {
            cases.push(case(
                service,
                &[(name, url), ("OTEL_BSP_SCHEDULE_DELAY", "100".into())],
            ));
        }
    }
    for url in [
        format!("http://u:SecretAudit1@{}/", nowhere()),
        format!("http://admin:1234/SecretAudit2@{}/", nowhere()),
        format!("http://{}/?token=SecretAudit3", nowhere()),
    ] {
        cases.push(case("user-service", &[("AUDIT_URL", url)]));
    }
    cases
}

/// Runs the case for a few seconds (or until the process exits), using the
/// settings: a user created (its event sent), events read (spans made).
/// Returns all it printed.
async fn run(case: &Case, dir: &std::path::Path) -> String {
    let port = free_port();
    let log_path = dir.join(format!("{}-{}.log", case.service, uuid::Uuid::new_v4()));
    let log = std::fs::File::create(&log_path).unwrap();
    let mut command = Command::new(binary(case.service).unwrap());
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "info")
        .env(
            "DATABASE_URL",
            format!("sqlite://{}/{port}.db", dir.display()),
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    for (name, value) in &case.env {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(8);
    while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
        let _ = match case.service {
            "user-service" => {
                client
                    .post(format!("{base}/v1/user"))
                    .json(&serde_json::json!({"name": "Redacted", "password": "12345"}))
                    .send()
                    .await
            }
            _ => client.get(format!("{base}/v1/events")).send().await,
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    std::fs::read_to_string(&log_path).unwrap_or_default()
}

#[tokio::test]
async fn no_credential_of_a_url_like_setting_is_ever_logged() {
    let dir = tempfile::TempDir::new().unwrap();
    let cases = cases();
    let tested: BTreeSet<&str> = cases
        .iter()
        .flat_map(|c| c.env.iter().map(|(name, _)| *name))
        .collect();
    for setting in settings::redact::URL_SETTINGS {
        assert!(tested.contains(setting), "{setting} is not tested");
    }
    // A few processes at a time: the machine has two cores.
    let mut failures = Vec::new();
    for chunk in cases.chunks(6) {
        let logs = futures::future::join_all(chunk.iter().map(|c| run(c, dir.path()))).await;
        for (case, log) in chunk.iter().zip(logs) {
            assert!(!case.secrets.is_empty());
            assert!(
                !log.is_empty(),
                "{} printed nothing for {:?}",
                case.service,
                case.env
            );
            for secret in &case.secrets {
                if log.contains(secret.as_str()) {
                    let lines: Vec<&str> = log
                        .lines()
                        .filter(|l| l.contains(secret.as_str()))
                        .collect();
                    failures.push(format!(
                        "{} with {:?} logged {secret}:\n{}",
                        case.service,
                        case.env,
                        lines.join("\n")
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Every setting the README's configuration table names like a URL or a
/// broker list is one `URL_SETTINGS` redacts.
#[test]
fn every_url_like_setting_is_redacted() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let table = readme
        .split("## Configuration")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .unwrap();
    let mut named = BTreeSet::new();
    for row in table.lines().filter(|l| l.starts_with("| `")) {
        let first = row.split('|').nth(1).unwrap_or_default();
        for name in first.split('`').skip(1).step_by(2) {
            if ["_URL", "_BROKERS", "_ENDPOINT"]
                .iter()
                .any(|s| name.ends_with(s))
            {
                named.insert(name.to_owned());
            }
        }
    }
    assert!(named.len() >= 5, "{named:?}");
    for name in named {
        assert!(
            settings::redact::URL_SETTINGS.contains(&name.as_str()),
            "{name} looks like a URL setting but is not in settings::redact::URL_SETTINGS"
        );
    }
}
