//! Runs every case of the CESQL TCK (fetched by crates/cesql/tck/fetch.sh) against this crate.
//!
//! The TCK's own README defines the case format: an expression, the expected
//! result and error type, and an input event (a full JSON event, or overrides
//! applied to any valid event). Every case of every file runs and must pass.
//! Each event is evaluated in the JSON format, as a store keeps it (the
//! `Attributes` of a JSON object), so attributes are seen exactly as the
//! case wrote them: `time` with its offset, not in UTC.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use cesql::{ErrorKind, Expression, Value};
use cloudevents::{Event, EventBuilder, EventBuilderV10};
use serde::Deserialize;
use serde_json::Map;

/// The files sdk-go's own TCK runner lists; all must be there.
const FILES: [&str; 18] = [
    "binary_comparison_operators",
    "binary_logical_operators",
    "binary_math_operators",
    "case_sensitivity",
    "casting_functions",
    "context_attributes_access",
    "exists_expression",
    "in_expression",
    "integer_builtin_functions",
    "like_expression",
    "literals",
    "negate_operator",
    "not_operator",
    "parse_errors",
    "spec_examples",
    "string_builtin_functions",
    "sub_expression",
    "subscriptions_api_recreations",
];

#[derive(Deserialize)]
struct TckFile {
    name: String,
    tests: Vec<TckCase>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TckCase {
    name: String,
    /// A plain YAML scalar read as a string keeps its text (`TRUE`, `-10`).
    expression: String,
    result: Option<serde_yaml_ng::Value>,
    error: Option<String>,
    event: Option<serde_json::Value>,
    event_overrides: Option<BTreeMap<String, serde_yaml_ng::Value>>,
}

fn tck_dir() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tck/fetch.sh");
    let output = Command::new("bash")
        .arg(&script)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        output.status.success(),
        "fetching the CESQL TCK failed ({}); the TCK is required, not optional:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
}

fn load(dir: &Path) -> Vec<(String, TckFile)> {
    let mut stems: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    stems.sort();
    for expected in FILES {
        assert!(
            stems.iter().any(|s| s == expected),
            "TCK file {expected}.yaml is missing from {}",
            dir.display()
        );
    }
    stems
        .into_iter()
        .map(|stem| {
            let path = dir.join(format!("{stem}.yaml"));
            let text = std::fs::read_to_string(&path).unwrap();
            let file: TckFile = serde_yaml_ng::from_str(&text)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (stem, file)
        })
        .collect()
}

/// Any valid event, for cases that do not give one: every optional
/// attribute set, and a few extensions no case refers to.
fn any_event() -> Event {
    EventBuilderV10::new()
        .id("full-event")
        .source("http://example.com/source")
        .ty("com.example.FullEvent")
        .subject("topic")
        .time("2020-03-21T12:34:56.780Z")
        .extension("exbool", true)
        .extension("exint", 42)
        .extension("exstring", "exstring")
        .data_with_schema(
            "text/plain",
            "http://example.com/schema",
            "hello".to_string(),
        )
        .build()
        .unwrap()
}

fn scalar_text(value: &serde_yaml_ng::Value) -> String {
    match value {
        serde_yaml_ng::Value::String(s) => s.clone(),
        serde_yaml_ng::Value::Bool(b) => b.to_string(),
        serde_yaml_ng::Value::Number(n) => n.to_string(),
        other => panic!("unexpected override value {other:?}"),
    }
}

/// The case's event in the JSON format, overrides applied as they are
/// written (core attributes as strings, extensions typed). It must also be
/// a valid CloudEvent for the SDK.
fn input_event(case: &TckCase) -> Map<String, serde_json::Value> {
    let json = match &case.event {
        Some(json) => json.clone(),
        None => serde_json::to_value(any_event()).unwrap(),
    };
    let serde_json::Value::Object(mut event) = json else {
        panic!("{}: the case's event is not a JSON object", case.name)
    };
    for (name, value) in case.event_overrides.iter().flatten() {
        let value = match (name.as_str(), value) {
            ("time" | "dataschema" | "specversion", _) => {
                panic!("{}: override of {name} is not supported here", case.name)
            }
            ("id" | "source" | "type" | "subject" | "datacontenttype", value) => {
                serde_json::Value::String(scalar_text(value))
            }
            (_, serde_yaml_ng::Value::Bool(b)) => serde_json::Value::Bool(*b),
            (_, serde_yaml_ng::Value::Number(n)) if n.is_i64() => n.as_i64().unwrap().into(),
            (_, value) => serde_json::Value::String(scalar_text(value)),
        };
        event.insert(name.clone(), value);
    }
    if let Err(e) = serde_json::from_value::<Event>(serde_json::Value::Object(event.clone())) {
        panic!("{}: the case's event is invalid: {e}", case.name);
    }
    event
}

fn expected_value(case: &TckCase) -> Option<Value> {
    Some(match case.result.as_ref()? {
        serde_yaml_ng::Value::Bool(b) => Value::Boolean(*b),
        serde_yaml_ng::Value::Number(n) => {
            Value::Integer(i32::try_from(n.as_i64().unwrap()).unwrap())
        }
        serde_yaml_ng::Value::String(s) => Value::String(s.clone()),
        other => panic!("{}: unexpected result {other:?}", case.name),
    })
}

fn error_kind(name: &str) -> Option<ErrorKind> {
    Some(match name {
        "math" => ErrorKind::Math,
        "cast" => ErrorKind::Cast,
        "missingAttribute" => ErrorKind::MissingAttribute,
        "missingFunction" => ErrorKind::MissingFunction,
        "functionEvaluation" => ErrorKind::FunctionEvaluation,
        // "parse" is checked apart; "generic" is never raised by this crate.
        _ => return None,
    })
}

/// What this crate gives for a case, compared with `expected`; `Err` says how
/// it differs.
fn check(case: &TckCase, expected: Option<Value>) -> Result<(), String> {
    let parsed = Expression::parse(&case.expression);
    if case.error.as_deref() == Some("parse") {
        return match parsed {
            Err(_) => Ok(()),
            Ok(_) => Err("parsed, but the TCK expects a parse error".into()),
        };
    }
    let expression = parsed.map_err(|e| format!("parse error: {e}"))?;
    let (value, errors) = expression.evaluate(&input_event(case));
    let kinds: Vec<ErrorKind> = errors.iter().map(|e| e.kind()).collect();
    let expected_kinds: Vec<ErrorKind> = match case.error.as_deref() {
        None => vec![],
        Some(name) => vec![error_kind(name).ok_or(format!("unknown error type {name}"))?],
    };
    let expected = expected.ok_or("the case gives no result")?;
    if value != expected || kinds != expected_kinds {
        return Err(format!(
            "got {value:?} with {errors:?}, expected {expected:?} with {expected_kinds:?}"
        ));
    }
    Ok(())
}

#[test]
fn every_tck_case_passes() {
    let files = load(&tck_dir());
    let (mut total, mut passed) = (0, 0);
    let mut failures = Vec::new();
    for (_, file) in &files {
        for case in &file.tests {
            total += 1;
            match check(case, expected_value(case)) {
                Ok(()) => passed += 1,
                Err(why) => failures.push(format!(
                    "{} / {}: `{}`: {why}",
                    file.name, case.name, case.expression
                )),
            }
        }
    }
    println!(
        "CESQL TCK: {total} cases in {} files: {passed} pass, {} failure(s)",
        files.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} TCK case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // sdk-go sql/v2.16.2 has 275 cases; fewer means files were not read whole.
    assert!(total >= 275, "only {total} TCK cases were found");
}
