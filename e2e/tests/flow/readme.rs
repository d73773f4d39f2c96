//! The README's examples are what the services really do: its curl's
//! answer, the audit log line, and the stored event, compared with a real
//! run of both binaries (`...` in the README stands for any value).

use e2e::Stack;
use serde_json::Value;
use std::time::Duration;

pub(crate) fn readme() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
    std::fs::read_to_string(path).expect("README.md")
}

/// The bodies of the README's fenced blocks of `language`, in order.
pub(crate) fn blocks(readme: &str, language: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in readme.lines() {
        match (&mut current, line.trim_start().strip_prefix("```")) {
            (None, Some(lang)) if lang == language => current = Some(String::new()),
            (Some(_), Some("")) => blocks.extend(current.take()),
            (Some(block), None) => {
                block.push_str(line);
                block.push('\n');
            }
            _ => {}
        }
    }
    blocks
}

/// The commands of a README shell block, continuation lines joined.
pub(crate) fn commands(block: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut current = String::new();
    for line in block.lines() {
        match line.trim_end().strip_suffix('\\') {
            Some(start) => current.push_str(start),
            None => {
                current.push_str(line.trim_end());
                commands.push(std::mem::take(&mut current).trim().to_owned());
            }
        }
    }
    commands
}

/// The `NAME=value` words before `cargo run -p <package>` in `commands`.
pub(crate) fn variables_of(commands: &[String], package: &str) -> Vec<(String, String)> {
    let run = format!("cargo run -p {package}");
    let line = commands
        .iter()
        .find(|c| c.ends_with(&run))
        .unwrap_or_else(|| panic!("no `{run}` line in {commands:?}"));
    line.trim_end_matches(&run)
        .split_whitespace()
        .map(|word| {
            let (name, value) = word.split_once('=').expect("NAME=value");
            (name.to_owned(), value.to_owned())
        })
        .collect()
}

/// `line` matches `pattern` where every `...` in the pattern stands for a
/// run of non-space characters; the pattern may start anywhere in the line
/// (after the timestamp) and must reach its end.
fn matches(pattern: &str, line: &str) -> bool {
    let mut parts = pattern.split("...");
    let Some(first) = parts.next() else {
        return false;
    };
    let Some(start) = line.find(first) else {
        return false;
    };
    let mut rest = &line[start + first.len()..];
    for part in parts {
        // The value `...` stands for ends at the next space at the latest.
        let value_end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let found = (0..=value_end)
            .filter(|&i| rest.is_char_boundary(i))
            .find(|&i| match part {
                "" => i == value_end,
                part => rest[i..].starts_with(part),
            });
        match found {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

/// The shape of a JSON value: object keys and the kinds of values, the
/// first item standing for an array.
fn shape(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), shape(v))).collect())
        }
        Value::Array(items) => Value::Array(items.first().map(shape).into_iter().collect()),
        Value::String(_) => Value::from("string"),
        Value::Number(_) => Value::from("number"),
        Value::Bool(_) => Value::from("bool"),
        Value::Null => Value::Null,
    }
}

#[test]
fn the_wildcard_matcher_takes_values_not_spaces() {
    assert!(matches("INFO a id=... seq=1", "2026 INFO a id=x-1 seq=1"));
    assert!(matches("s=0193... t=http", "s=0193abc t=http"));
    assert!(matches("t=http trace_id=...", "x t=http trace_id=4bf9"));
    assert!(!matches(
        "t=http trace_id=...",
        "x t=http trace_id=4bf9 more"
    ));
    assert!(!matches("INFO a id=... seq=1", "INFO a id=x 1 seq=1"));
    assert!(!matches("INFO a seq=1", "INFO a seq=12"));
}

#[tokio::test]
async fn the_readme_examples_are_what_the_services_do() {
    let readme = readme();
    let json = blocks(&readme, "json");
    assert!(json.len() >= 2, "the README's 201 body and events page");
    let created_example: Value = serde_json::from_str(&json[0]).expect("201 body is JSON");
    let page_example: Value = serde_json::from_str(&json[1]).expect("events page is JSON");
    let log_example = readme
        .lines()
        .find(|l| l.contains("audit event stored"))
        .expect("the README shows the audit log line")
        .trim()
        .to_owned();

    let stack = Stack::new().unwrap();
    // Text logs, as `make run` shows them (not a terminal: no colour), and
    // the transparency log on, with a key made as `make run` makes it.
    let key = std::process::Command::new(e2e::binary("audit-service").unwrap())
        .args(["log-key", "localhost/audit-service"])
        .output()
        .unwrap();
    let key = String::from_utf8(key.stdout).unwrap();
    let audit = stack
        .audit(&[("LOG_FORMAT", "pretty"), ("LOG_SIGNING_KEY", key.trim())])
        .await
        .unwrap();
    let user = stack.user(&audit.base_url, &[]).await.unwrap();
    let created: Value = stack
        .http
        .post(format!("{}/v1/user", user.base_url))
        .header("content-type", "application/json")
        .body("{\n  \"name\": \"Ozzy Osbourne\",\n  \"password\": \"12345\"\n}")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shape(&created), shape(&created_example), "{created}");

    let id = created["id"].as_str().unwrap();
    stack
        .wait_for_events(
            &audit,
            &format!("subject={id}"),
            Duration::from_secs(20),
            // Once it is in the transparency log too.
            |i| i.first().is_some_and(|item| item.get("log").is_some()),
        )
        .await
        .unwrap();
    let page: Value = stack
        .http
        .get(format!(
            "{}/v1/events?type=user.storeUser&limit=10",
            audit.base_url
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shape(&page), shape(&page_example), "{page}");

    let logs = audit.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("audit event stored"))
        .unwrap_or_else(|| panic!("no stored line in:\n{logs}"));
    assert!(!line.contains('\u{1b}'), "colour codes in a file: {line:?}");
    assert!(
        matches(&log_example, line),
        "README: {log_example}\nreal:   {line}"
    );
}

#[tokio::test]
async fn the_readmes_other_ports_move_audit_service_and_tell_user_service() {
    let readme = readme();
    let block = blocks(&readme, "sh")
        .into_iter()
        .find(|b| b.contains("LISTEN_ADDR=") && b.contains("AUDIT_URL="))
        .expect("the README shows how to move audit-service");
    let commands = commands(&block);
    let value = |vars: &[(String, String)], name: &str| {
        vars.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{name} is not set in {vars:?}"))
    };
    let audit_env = variables_of(&commands, "audit-service");
    let user_env = variables_of(&commands, "user-service");
    let listen = value(&audit_env, "LISTEN_ADDR");
    let audit_url = value(&user_env, "AUDIT_URL");
    let port = listen.rsplit(':').next().unwrap();
    assert!(
        audit_url.starts_with(&format!("http://localhost:{port}/")),
        "AUDIT_URL {audit_url} does not follow LISTEN_ADDR {listen}"
    );
    assert_ne!(port, "8080", "the example moves audit-service");

    // The same, on ports free here: audit-service where LISTEN_ADDR says,
    // user-service told by AUDIT_URL alone.
    let stack = Stack::new().unwrap();
    let audit = stack.audit(&[]).await.unwrap();
    let moved = audit.base_url.replace("127.0.0.1", "localhost");
    let user = stack.user(&moved, &[]).await.unwrap();
    stack
        .create_user_and_wait(&user, &audit, Duration::from_secs(20))
        .await
        .unwrap();
}
