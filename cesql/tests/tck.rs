//! Runs every case of the CESQL TCK (fetched by cesql/tck/fetch.sh) against this crate.
//!
//! The TCK's own README defines the case format: an expression, the expected
//! result and error type, and an input event (a full JSON event, or overrides
//! applied to any valid event). Every case of every file runs; a case whose
//! behaviour differs on purpose is listed in `DEVIATIONS` with the reason and
//! the exact result this crate gives instead, and is checked against that.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use cesql::{ErrorKind, Expression, Value};
use cloudevents::event::ExtensionValue;
use cloudevents::{AttributesWriter, Event, EventBuilder, EventBuilderV10};
use serde::Deserialize;

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

/// Cases where this crate's result differs from the TCK's on purpose:
/// (file, case, the result given instead, why).
const DEVIATIONS: [(&str, &str, &str, &str); 1] = [(
    "context_attributes_access",
    "Timestamp type cohercion to string",
    "2018-04-26T12:48:09Z",
    "cloudevents-sdk keeps `time` as a UTC DateTime, so the +02:00 offset the \
     event was written with is gone before CESQL sees it; the instant is the same",
)];

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

fn input_event(case: &TckCase) -> Event {
    let mut event = match &case.event {
        Some(json) => serde_json::from_value(json.clone())
            .unwrap_or_else(|e| panic!("{}: the case's event is invalid: {e}", case.name)),
        None => any_event(),
    };
    for (name, value) in case.event_overrides.iter().flatten() {
        let text = scalar_text(value);
        match name.as_str() {
            "id" => drop(event.set_id(text)),
            "source" => drop(event.set_source(text)),
            "type" => drop(event.set_type(text)),
            "subject" => drop(event.set_subject(Some(text))),
            "datacontenttype" => drop(event.set_datacontenttype(Some(text))),
            "time" | "dataschema" | "specversion" => {
                panic!("{}: override of {name} is not supported here", case.name)
            }
            _ => {
                let extension = match value {
                    serde_yaml_ng::Value::Bool(b) => ExtensionValue::Boolean(*b),
                    serde_yaml_ng::Value::Number(n) if n.is_i64() => {
                        ExtensionValue::Integer(n.as_i64().unwrap())
                    }
                    _ => ExtensionValue::String(text),
                };
                event.set_extension(name, extension);
            }
        }
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
fn every_tck_case_passes_or_is_a_documented_deviation() {
    let files = load(&tck_dir());
    let (mut total, mut passed, mut deviated) = (0, 0, 0);
    let mut failures = Vec::new();
    for (stem, file) in &files {
        for case in &file.tests {
            total += 1;
            let deviation = DEVIATIONS
                .iter()
                .find(|(f, c, _, _)| f == stem && *c == case.name);
            let expected = match deviation {
                Some((_, _, ours, _)) => Some(Value::String(ours.to_string())),
                None => expected_value(case),
            };
            match check(case, expected) {
                Ok(()) if deviation.is_some() => deviated += 1,
                Ok(()) => passed += 1,
                Err(why) => failures.push(format!(
                    "{} / {}: `{}`: {why}",
                    file.name, case.name, case.expression
                )),
            }
        }
    }
    println!(
        "CESQL TCK: {total} cases in {} files: {passed} pass, {deviated} documented deviation(s), {} failure(s)",
        files.len(),
        failures.len()
    );
    assert_eq!(
        deviated,
        DEVIATIONS.len(),
        "a documented deviation no longer applies or its case is gone"
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
