//! Evaluation rules the TCK leaves open or touches lightly: overflow, error propagation, attribute types, filters.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use cesql::{ErrorKind, Expression, MathError, Value};
use cloudevents::{Event, EventBuilder, EventBuilderV03, EventBuilderV10};

fn event() -> Event {
    EventBuilderV10::new()
        .id("e1")
        .source("/user-service")
        .ty("user.storeUser")
        .time("2024-05-01T10:00:00.5+02:00")
        .extension("flag", true)
        .extension("small", 7)
        .extension("big", 5_000_000_000_i64)
        .extension("text", "Hello")
        .build()
        .unwrap()
}

fn eval(source: &str) -> (Value, Vec<ErrorKind>) {
    let expression = Expression::parse(source).unwrap_or_else(|e| panic!("{source}: {e}"));
    let (value, errors) = expression.evaluate(&event());
    (value, errors.iter().map(|e| e.kind()).collect())
}

fn ok(value: impl Into<Value>) -> (Value, Vec<ErrorKind>) {
    (value.into(), vec![])
}

fn err(value: impl Into<Value>, kind: ErrorKind) -> (Value, Vec<ErrorKind>) {
    (value.into(), vec![kind])
}

#[test]
fn integer_overflow_is_a_math_error_with_zero() {
    assert_eq!(eval("2147483647 + 1"), err(0, ErrorKind::Math));
    assert_eq!(eval("-2147483648 - 1"), err(0, ErrorKind::Math));
    assert_eq!(eval("65536 * 65536"), err(0, ErrorKind::Math));
    assert_eq!(eval("-2147483648 / -1"), err(0, ErrorKind::Math));
    assert_eq!(eval("-(-2147483648)"), err(0, ErrorKind::Math));
    assert_eq!(eval("-2147483648 % -1"), ok(0));
    assert_eq!(eval("2147483647 + 0"), ok(i32::MAX));
    let (_, errors) = Expression::parse("1 / 0").unwrap().evaluate(&event());
    assert_eq!(errors[0], cesql::EvalError::Math(MathError::DivisionByZero));
}

#[test]
fn division_truncates_toward_zero_and_remainder_follows_the_dividend() {
    assert_eq!(eval("-7 / 2"), ok(-3));
    assert_eq!(eval("-7 % 2"), ok(-1));
    assert_eq!(eval("7 % -2"), ok(1));
}

#[test]
fn an_error_gives_each_operator_above_it_its_own_zero_value() {
    assert_eq!(eval("LENGTH(missing)"), err(0, ErrorKind::MissingAttribute));
    assert_eq!(eval("UPPER(missing)"), err("", ErrorKind::MissingAttribute));
    assert_eq!(
        eval("LEFT('abc', -1)"),
        err("abc", ErrorKind::FunctionEvaluation)
    );
    assert_eq!(
        eval("LEFT('abc', -1) = 'abc'"),
        err(false, ErrorKind::FunctionEvaluation)
    );
    assert_eq!(eval("ABS(-2147483648) + 0"), err(0, ErrorKind::Math));
    assert_eq!(eval("INT('x') + 1"), err(0, ErrorKind::Cast));
    assert_eq!(eval("missing"), err(false, ErrorKind::MissingAttribute));
}

#[test]
fn short_circuit_skips_the_errors_of_the_side_not_evaluated() {
    assert_eq!(eval("FALSE AND missing"), ok(false));
    assert_eq!(eval("TRUE OR 1 / 0 = 1"), ok(true));
    assert_eq!(
        eval("FALSE XOR missing"),
        err(false, ErrorKind::MissingAttribute)
    );
    assert_eq!(eval("small IN (7, missing)"), ok(true));
    assert_eq!(
        eval("small IN (missing, 7)"),
        err(false, ErrorKind::MissingAttribute)
    );
}

#[test]
fn unknown_functions_and_wrong_arities_fail_at_evaluation() {
    assert_eq!(eval("NOPE()"), err(false, ErrorKind::MissingFunction));
    assert_eq!(
        eval("LENGTH('a', 'b')"),
        err(false, ErrorKind::MissingFunction)
    );
    assert_eq!(
        eval("SUBSTRING('a')"),
        err(false, ErrorKind::MissingFunction)
    );
    assert_eq!(
        eval("NOPE(missing) OR TRUE"),
        err(false, ErrorKind::MissingFunction)
    );
}

#[test]
fn attributes_read_as_cesql_types() {
    assert_eq!(eval("id"), ok("e1"));
    assert_eq!(eval("specversion"), ok("1.0"));
    assert_eq!(eval("flag"), ok(true));
    assert_eq!(eval("small + 1"), ok(8));
    // Beyond 32 bits an integer extension is not a CESQL Integer: a string.
    assert_eq!(eval("big"), ok("5000000000"));
    assert_eq!(eval("big + 1"), err(0, ErrorKind::Cast));
    // Times are RFC 3339 in UTC, as the SDK's JSON format writes them.
    assert_eq!(eval("time"), ok("2024-05-01T08:00:00.500Z"));
    assert_eq!(eval("time LIKE '2024-05-01T%'"), ok(true));
}

#[test]
fn exists_reports_optional_attributes_and_extensions() {
    assert_eq!(eval("EXISTS time AND EXISTS small"), ok(true));
    assert_eq!(eval("EXISTS subject"), ok(false));
    assert_eq!(
        eval("EXISTS datacontenttype OR EXISTS dataschema"),
        ok(false)
    );
    assert_eq!(eval("EXISTS nothing"), ok(false));
}

#[test]
fn version_0_3_events_use_their_own_attribute_names() {
    let event = EventBuilderV03::new()
        .id("old")
        .source("/legacy")
        .ty("t")
        .data_with_schema("text/plain", "http://example.com/schema", "x".to_string())
        .build()
        .unwrap();
    let schema = Expression::parse("schemaurl").unwrap();
    assert_eq!(
        schema.evaluate(&event),
        (Value::from("http://example.com/schema"), vec![])
    );
    assert!(Expression::parse("specversion = '0.3'")
        .unwrap()
        .matches(&event));
}

#[test]
fn string_comparison_is_case_sensitive_and_casts_follow_the_right_operand() {
    assert_eq!(eval("text = 'hello'"), ok(false));
    assert_eq!(eval("TRUE = 'true' AND FALSE = 'false'"), ok(true));
    assert_eq!(eval("TRUE = 'TRUE' OR FALSE = 'FALSE'"), ok(false));
    assert_eq!(eval("'7' = small"), ok(true));
    assert_eq!(eval("'x' = small"), err(false, ErrorKind::Cast));
    assert_eq!(eval("'abc' < 1"), err(false, ErrorKind::Cast));
}

#[test]
fn not_binds_before_like_so_the_negated_forms_are_the_readable_ones() {
    assert_eq!(eval("text NOT LIKE 'H%'"), ok(false));
    assert_eq!(eval("NOT (text LIKE 'H%')"), ok(false));
    // `NOT text` is cast to Boolean first, as the precedence rules say.
    assert_eq!(eval("NOT text LIKE 'H%'"), err(false, ErrorKind::Cast));
}

#[test]
fn type_tests_and_casts() {
    assert_eq!(eval("IS_INT('+12') AND NOT IS_INT('1.5')"), ok(true));
    assert_eq!(
        eval("IS_BOOL('False') AND IS_BOOL(0) AND NOT IS_BOOL('no')"),
        ok(true)
    );
    assert_eq!(eval("CONCAT(STRING(small), flag)"), ok("7true"));
}

#[test]
fn a_filter_passes_only_on_boolean_true_without_error() {
    let e = event();
    let matches = |s: &str| Expression::parse(s).unwrap().matches(&e);
    assert!(matches("type = 'user.storeUser'"));
    assert!(!matches("type = 'other'"));
    assert!(!matches("'true'"), "a String is not a Boolean");
    assert!(!matches("1"));
    assert!(!matches("LEFT('true', -1) = 'true'"));
    assert!(
        !matches("subject = 'x' OR TRUE"),
        "the missing subject stops it"
    );
}

#[test]
fn the_deepest_expressions_parse_and_evaluate_on_a_one_mebibyte_stack() {
    fn nested(open: &str, inner: &str, close: &str, n: usize) -> String {
        format!("{}{inner}{}", open.repeat(n), close.repeat(n))
    }
    let shapes: [fn(usize) -> String; 8] = [
        |n| nested("NOT ", "TRUE", "", n),
        |n| nested("-", "1", "", n),
        |n| nested("ABS(", "1", ")", n),
        |n| nested("(", "1", ")", n),
        |n| nested("-(", "1", ")", n),
        |n| nested("LENGTH(CONCAT(", "1", "))", n),
        |n| nested("(1 IN (", "1", "))", n),
        |n| nested("(1 + (", "1", "))", n),
    ];
    // Tests run unoptimised, where calls take far more stack than in a
    // release build; threads get 2 MiB by default.
    std::thread::Builder::new()
        .stack_size(1024 * 1024)
        .spawn(move || {
            for shape in shapes {
                // Each shape nested as deep as the parser accepts.
                let deepest = (1..=cesql::MAX_DEPTH)
                    .rev()
                    .find_map(|n| Expression::parse(&shape(n)).ok())
                    .unwrap();
                let _ = deepest.evaluate(&event());
            }
        })
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn one_level_more_is_a_parse_error() {
    let too_deep = format!(
        "{}1{}",
        "ABS(".repeat(cesql::MAX_DEPTH),
        ")".repeat(cesql::MAX_DEPTH)
    );
    let err = Expression::parse(&too_deep).unwrap_err();
    assert!(err.message.contains("nests more than"), "{err}");
}

#[test]
fn an_expression_can_be_shared_between_threads() {
    fn shareable<T: Send + Sync + Clone + 'static>() {}
    shareable::<Expression>();
    shareable::<cesql::ParseError>();
    shareable::<cesql::EvalError>();
}
