//! Properties over generated input: no panics, arithmetic and LIKE against references, push-down soundness.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use cesql::{Column, ErrorKind, Expression, Value};
use cloudevents::{Event, EventBuilder, EventBuilderV10};
use proptest::prelude::*;

fn event(ty: &str, subject: Option<&str>, ext: Option<&str>) -> Event {
    let mut builder = EventBuilderV10::new().id("1").source("/s").ty(ty);
    if let Some(subject) = subject {
        builder = builder.subject(subject);
    }
    if let Some(ext) = ext {
        builder = builder.extension("myext", ext);
    }
    builder.build().unwrap()
}

const VOCABULARY: &[&str] = &[
    "(",
    ")",
    ",",
    "=",
    "!=",
    "<>",
    "<",
    "<=",
    ">",
    ">=",
    "+",
    "-",
    "*",
    "/",
    "%",
    "AND",
    "or",
    "XOR",
    "NOT",
    "LIKE",
    "IN",
    "EXISTS",
    "TRUE",
    "false",
    "'a%'",
    "\"b\"",
    r"'\_'",
    "''",
    "0",
    "1",
    "-5",
    "2147483647",
    "-2147483648",
    "id",
    "type",
    "subject",
    "myext",
    "missing",
    "LENGTH",
    "CONCAT",
    "concat_ws",
    "SUBSTRING",
    "ABS",
    "INT",
    "BOOL",
    "LEFT",
    "IS_INT",
    "NOPE",
];

/// Reference LIKE: plain recursion over the pattern, exponential but obviously right.
fn like_reference(text: &[char], pattern: &[char]) -> bool {
    match pattern {
        [] => text.is_empty(),
        ['\\', c @ ('%' | '_'), rest @ ..] => {
            text.first() == Some(c) && like_reference(&text[1..], rest)
        }
        ['%', rest @ ..] => (0..=text.len()).any(|i| like_reference(&text[i..], rest)),
        ['_', rest @ ..] => !text.is_empty() && like_reference(&text[1..], rest),
        [c, rest @ ..] => text.first() == Some(c) && like_reference(&text[1..], rest),
    }
}

/// Expressions mixing what push-down takes with what it must leave alone.
fn filter() -> impl Strategy<Value = String> {
    let atom = prop::sample::select(vec![
        "type = 'a'",
        "'b' = TYPE",
        "type IN ('a', 'b')",
        "subject = 'x'",
        "subject = ''",
        "subject IN ('x', '')",
        "myext = 'a'",
        "subject LIKE 'x%'",
        "type != 'a'",
        "NOT (type = 'b')",
        "type NOT IN ('a')",
        "TRUE",
        "EXISTS subject",
    ])
    .prop_map(str::to_owned);
    atom.prop_recursive(3, 12, 3, |inner| {
        (
            inner.clone(),
            prop::sample::select(vec!["AND", "AND", "OR", "XOR"]),
            inner,
        )
            .prop_map(|(l, op, r)| format!("({l}) {op} ({r})"))
    })
}

fn holds(column: Column, any_of: &[String], e: &Event) -> bool {
    use cloudevents::AttributesReader;
    // What SQL sees: a missing subject is NULL, equal to nothing.
    let actual = match column {
        Column::Id => Some(e.id()),
        Column::Source => Some(e.source().as_str()),
        Column::Type => Some(e.ty()),
        Column::Subject => e.subject(),
    };
    actual.is_some_and(|a| any_of.iter().any(|v| v == a))
}

proptest! {
    #[test]
    fn parsing_any_text_never_panics(source in "\\PC{0,40}") {
        if let Err(e) = Expression::parse(&source) {
            prop_assert!(e.offset <= source.len());
            prop_assert!(source.is_char_boundary(e.offset));
            prop_assert!(e.column >= 1);
        }
    }

    #[test]
    fn token_soup_parses_or_fails_cleanly_and_evaluates_without_panicking(
        tokens in prop::collection::vec(prop::sample::select(VOCABULARY), 1..14)
    ) {
        let source = tokens.join(" ");
        if let Ok(expression) = Expression::parse(&source) {
            let e = event("a", Some("x"), Some("a%"));
            let (value, errors) = expression.evaluate(&e);
            prop_assert!(errors.len() <= 1);
            prop_assert_eq!(
                expression.matches(&e),
                errors.is_empty() && value == Value::Boolean(true)
            );
        }
    }

    #[test]
    fn arithmetic_is_exact_or_a_math_error(
        a in any::<i32>(),
        b in prop_oneof![
            prop::sample::select(vec![0, 1, -1, 2, -7, i32::MAX, i32::MIN]),
            any::<i32>(),
        ],
        op in prop::sample::select(vec!["+", "-", "*", "/", "%"]),
    ) {
        let (x, y) = (i64::from(a), i64::from(b));
        let exact = match op {
            "+" => Some(x + y),
            "-" => Some(x - y),
            "*" => Some(x * y),
            "/" => (y != 0).then(|| x / y),
            _ => (y != 0).then(|| x % y),
        };
        let expected = match exact.map(i32::try_from) {
            Some(Ok(v)) => (Value::Integer(v), vec![]),
            _ => (Value::Integer(0), vec![ErrorKind::Math]),
        };
        let (value, errors) = Expression::parse(&format!("{a} {op} {b}"))
            .unwrap()
            .evaluate(&event("a", None, None));
        prop_assert_eq!((value, errors.iter().map(|e| e.kind()).collect::<Vec<_>>()), expected);
    }

    #[test]
    fn comparisons_agree_with_integers(a in any::<i32>(), b in any::<i32>()) {
        let e = event("a", None, None);
        for (op, expected) in [("<", a < b), ("<=", a <= b), (">", a > b), (">=", a >= b), ("=", a == b), ("<>", a != b)] {
            let expression = Expression::parse(&format!("'{a}' {op} {b}")).unwrap();
            prop_assert_eq!(expression.evaluate(&e), (Value::Boolean(expected), vec![]));
        }
    }

    #[test]
    fn like_agrees_with_the_reference(text in "[ab%_]{0,10}", pattern in r"[ab%_\\]{0,8}") {
        // A trailing backslash would escape the literal's closing quote.
        prop_assume!(!pattern.ends_with('\\'));
        let e = event("a", None, Some(&text));
        let expression = Expression::parse(&format!("myext LIKE '{pattern}'")).unwrap();
        let chars = |s: &str| s.chars().collect::<Vec<_>>();
        let expected = like_reference(&chars(&text), &chars(&pattern));
        prop_assert_eq!(expression.evaluate(&e), (Value::Boolean(expected), vec![]));
    }

    #[test]
    fn string_literals_round_trip(s in "[^\\\\]{0,20}") {
        let e = event("a", None, None);
        for (quote, escaped) in [('\'', s.replace('\'', "\\'")), ('"', s.replace('"', "\\\""))] {
            let expression = Expression::parse(&format!("{quote}{escaped}{quote}")).unwrap();
            prop_assert_eq!(expression.evaluate(&e), (Value::String(s.clone()), vec![]));
        }
    }

    #[test]
    fn pushdown_is_necessary_and_when_complete_sufficient(
        source in filter(),
        ty in prop::sample::select(vec!["a", "b", "c"]),
        subject in prop::sample::select(vec![None, Some("x"), Some(""), Some("xy")]),
        ext in prop::sample::select(vec![None, Some("a")]),
    ) {
        let expression = Expression::parse(&source).unwrap();
        let e = event(ty, subject, ext);
        let pushdown = expression.pushdown();
        let sql = pushdown.conditions.iter().all(|c| holds(c.column, &c.any_of, &e));
        let matches = expression.matches(&e);
        prop_assert!(!matches || sql, "matched but a pushed condition is false: {source}");
        if pushdown.complete {
            prop_assert_eq!(matches, sql, "complete push-down disagrees: {}", source);
        }
    }
}
