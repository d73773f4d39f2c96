//! The built-in functions (§3.5, and the casting functions of the TCK): signatures and bodies.

use std::borrow::Cow;

use crate::budget::MAX_STRING_BYTES;
use crate::error::{EvalError, MathError};
use crate::value::{Scalar, Type};

/// A built-in function resolved by name and arity at parse time. The spec
/// allows overloading by arity only, so (name, arity) picks one at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Builtin {
    Length,
    Concat,
    ConcatWs,
    Lower,
    Upper,
    Trim,
    Left,
    Right,
    Substring,
    SubstringLen,
    Abs,
    Int,
    Bool,
    String,
    IsInt,
    IsBool,
}

/// What a function returns: a value, and an error when it could not do what
/// was asked. The value is the one the spec names for that failure (LEFT
/// returns its input, ABS saturates) or the return type's zero value.
pub(crate) type Outcome<'a> = (Scalar<'a>, Option<EvalError>);

impl Builtin {
    /// `name` is upper case already (function names are case-insensitive).
    pub(crate) fn resolve(name: &str, arity: usize) -> Option<Builtin> {
        use Builtin::*;
        Some(match (name, arity) {
            ("LENGTH", 1) => Length,
            ("CONCAT", _) => Concat,
            ("CONCAT_WS", n) if n >= 1 => ConcatWs,
            ("LOWER", 1) => Lower,
            ("UPPER", 1) => Upper,
            ("TRIM", 1) => Trim,
            ("LEFT", 2) => Left,
            ("RIGHT", 2) => Right,
            ("SUBSTRING", 2) => Substring,
            ("SUBSTRING", 3) => SubstringLen,
            ("ABS", 1) => Abs,
            ("INT", 1) => Int,
            ("BOOL", 1) => Bool,
            ("STRING", 1) => String,
            ("IS_INT", 1) => IsInt,
            ("IS_BOOL", 1) => IsBool,
            _ => return None,
        })
    }

    /// The numbers of arguments the built-ins named `name` (upper case)
    /// take, in words for an error message; `None` when no built-in has
    /// that name.
    pub(crate) fn arities(name: &str) -> Option<&'static str> {
        Some(match name {
            "LENGTH" | "LOWER" | "UPPER" | "TRIM" | "ABS" | "INT" | "BOOL" | "STRING"
            | "IS_INT" | "IS_BOOL" => "1 argument",
            "LEFT" | "RIGHT" => "2 arguments",
            "SUBSTRING" => "2 or 3 arguments",
            "CONCAT_WS" => "at least 1 argument",
            // CONCAT takes any number, so it never reaches here; listed so
            // the names agree with `resolve`.
            "CONCAT" => "any number of arguments",
            _ => return None,
        })
    }

    pub(crate) fn name(self) -> &'static str {
        use Builtin::*;
        match self {
            Length => "LENGTH",
            Concat => "CONCAT",
            ConcatWs => "CONCAT_WS",
            Lower => "LOWER",
            Upper => "UPPER",
            Trim => "TRIM",
            Left => "LEFT",
            Right => "RIGHT",
            Substring | SubstringLen => "SUBSTRING",
            Abs => "ABS",
            Int => "INT",
            Bool => "BOOL",
            String => "STRING",
            IsInt => "IS_INT",
            IsBool => "IS_BOOL",
        }
    }

    pub(crate) fn return_type(self) -> Type {
        use Builtin::*;
        match self {
            Length | Abs | Int => Type::Integer,
            Bool | IsInt | IsBool => Type::Boolean,
            Concat | ConcatWs | Lower | Upper | Trim | Left | Right | Substring | SubstringLen
            | String => Type::String,
        }
    }

    /// The type argument `index` is cast to before the call; `None` takes any
    /// type as it is (the casting and type-test functions).
    pub(crate) fn param_type(self, index: usize) -> Option<Type> {
        use Builtin::*;
        match self {
            Int | Bool | String | IsInt | IsBool => None,
            Abs => Some(Type::Integer),
            Left | Right | Substring | SubstringLen if index > 0 => Some(Type::Integer),
            _ => Some(Type::String),
        }
    }

    /// Runs the function on arguments already cast to [`Self::param_type`].
    /// A string result longer than [`MAX_STRING_BYTES`] is not built: the
    /// function fails instead (see `budget`).
    pub(crate) fn call<'a>(self, args: Vec<Scalar<'a>>) -> Outcome<'a> {
        use Builtin::*;
        // CONCAT and CONCAT_WS are measured before they build; LOWER and
        // UPPER grow a string by at most three times, from an input that
        // is a bounded string or an attribute.
        let built = match self {
            Concat => Some(string_lengths(&args)),
            ConcatWs => {
                let separator = args.first().map_or(0, string_length);
                let parts = args.len().saturating_sub(1);
                Some(
                    string_lengths(args.get(1..).unwrap_or_default())
                        .saturating_add(separator.saturating_mul(parts.saturating_sub(1))),
                )
            }
            _ => None,
        };
        if let Some(length) = built.filter(|l| *l > MAX_STRING_BYTES) {
            return too_long(self, length);
        }
        let (value, error) = self.run(args);
        if let Scalar::String(s) = &value {
            if s.len() > MAX_STRING_BYTES {
                return too_long(self, s.len());
            }
        }
        (value, error)
    }

    fn run<'a>(self, mut args: Vec<Scalar<'a>>) -> Outcome<'a> {
        use Builtin::*;
        // Arguments are popped from the back, so they are taken in reverse order.
        match self {
            Abs => match pop_int(&mut args).checked_abs() {
                Some(a) => ok(Scalar::Integer(a)),
                None => (
                    Scalar::Integer(i32::MAX),
                    Some(EvalError::Math(MathError::Overflow)),
                ),
            },
            Left | Right => {
                let n = pop_int(&mut args);
                let s = string_arg(args.pop());
                left_right(self, s, n)
            }
            Substring => {
                let pos = pop_int(&mut args);
                substring(string_arg(args.pop()), pos, None)
            }
            SubstringLen => {
                let len = pop_int(&mut args);
                let pos = pop_int(&mut args);
                substring(string_arg(args.pop()), pos, Some(len))
            }
            Int => cast_fn(args.pop(), Type::Integer),
            Bool => cast_fn(args.pop(), Type::Boolean),
            String => cast_fn(args.pop(), Type::String),
            IsInt => ok(Scalar::Boolean(
                args.pop().is_some_and(|a| a.to_integer().is_ok()),
            )),
            IsBool => ok(Scalar::Boolean(
                args.pop().is_some_and(|a| a.to_boolean().is_ok()),
            )),
            Length => {
                let count = string_arg(args.pop()).chars().count();
                // Only a string of more than 2^31 characters saturates.
                ok(Scalar::Integer(i32::try_from(count).unwrap_or(i32::MAX)))
            }
            Lower => ok(Scalar::String(Cow::Owned(
                string_arg(args.pop()).to_lowercase(),
            ))),
            Upper => ok(Scalar::String(Cow::Owned(
                string_arg(args.pop()).to_uppercase(),
            ))),
            // `str::trim` removes Unicode White_Space, as the spec asks, and
            // leaves control characters alone.
            Trim => ok(Scalar::String(match string_arg(args.pop()) {
                Cow::Borrowed(s) => Cow::Borrowed(s.trim()),
                Cow::Owned(s) => Cow::Owned(s.trim().to_owned()),
            })),
            Concat => ok(Scalar::String(Cow::Owned(
                args.into_iter().map(|a| string_arg(Some(a))).collect(),
            ))),
            ConcatWs => {
                let mut args = args.into_iter().map(|a| string_arg(Some(a)));
                let separator = args.next().unwrap_or_default();
                let parts: Vec<_> = args.collect();
                ok(Scalar::String(Cow::Owned(parts.join(&*separator))))
            }
        }
    }
}

/// The bytes of `arg` as a string (its String cast for the other types,
/// which are a few bytes).
fn string_length(arg: &Scalar<'_>) -> usize {
    match arg {
        Scalar::String(s) => s.len(),
        _ => 11,
    }
}

fn string_lengths(args: &[Scalar<'_>]) -> usize {
    args.iter()
        .map(string_length)
        .fold(0, usize::saturating_add)
}

/// The failure of a function whose result would be `length` bytes.
fn too_long(function: Builtin, length: usize) -> Outcome<'static> {
    (
        Scalar::String(Cow::Borrowed("")),
        Some(EvalError::FunctionEvaluation {
            function: function.name(),
            reason: format!(
                "the result would be {length} bytes, more than the limit of {MAX_STRING_BYTES}"
            ),
        }),
    )
}

/// The parser resolved the arity and the evaluator cast every argument, so a
/// missing or non-integer argument here would be a bug; it reads as 0 rather
/// than panicking.
fn pop_int(args: &mut Vec<Scalar<'_>>) -> i32 {
    match args.pop() {
        Some(Scalar::Integer(i)) => i,
        _ => 0,
    }
}

fn ok(value: Scalar<'_>) -> Outcome<'_> {
    (value, None)
}

fn string_arg(arg: Option<Scalar<'_>>) -> Cow<'_, str> {
    arg.map(Scalar::into_string).unwrap_or_default()
}

fn cast_fn(arg: Option<Scalar<'_>>, to: Type) -> Outcome<'_> {
    match arg.map(|a| a.cast(to)) {
        Some(Ok(v)) => ok(v),
        Some(Err(e)) => (Scalar::zero(to), Some(e)),
        None => (Scalar::zero(to), None),
    }
}

/// The byte offset of character `n` in `s`, or `s.len()` when `s` is shorter.
fn char_offset(s: &str, n: usize) -> usize {
    s.char_indices().nth(n).map_or(s.len(), |(i, _)| i)
}

fn slice<'a>(s: Cow<'a, str>, start: usize, end: usize) -> Cow<'a, str> {
    match s {
        Cow::Borrowed(b) => Cow::Borrowed(b.get(start..end).unwrap_or_default()),
        Cow::Owned(o) => Cow::Owned(o.get(start..end).unwrap_or_default().to_owned()),
    }
}

/// LEFT(x, n) / RIGHT(x, n): the first / last `n` characters, all of `x` when
/// it is shorter, and `x` with an error when `n` is negative.
fn left_right(which: Builtin, s: Cow<'_, str>, n: i32) -> Outcome<'_> {
    let Ok(n) = usize::try_from(n) else {
        return (
            Scalar::String(s),
            Some(EvalError::FunctionEvaluation {
                function: which.name(),
                reason: format!("the length {n} is negative"),
            }),
        );
    };
    let chars = s.chars().count();
    let (start, end) = if which == Builtin::Left {
        (0, char_offset(&s, n))
    } else {
        (char_offset(&s, chars.saturating_sub(n)), s.len())
    };
    ok(Scalar::String(slice(s, start, end)))
}

/// SUBSTRING(x, pos[, len]). Positions count characters from 1; a negative
/// `pos` counts from the end; `pos` 0 gives the empty string. A `pos` beyond
/// either end, or a negative `len`, gives the empty string and an error.
fn substring(s: Cow<'_, str>, pos: i32, len: Option<i32>) -> Outcome<'_> {
    let chars = i64::try_from(s.chars().count()).unwrap_or(i64::MAX);
    let pos = i64::from(pos);
    let fail = |reason: String| {
        (
            Scalar::String(Cow::Borrowed("")),
            Some(EvalError::FunctionEvaluation {
                function: "SUBSTRING",
                reason,
            }),
        )
    };
    if pos > chars || pos < -chars {
        return fail(format!(
            "the position {pos} is outside a string of {chars} characters"
        ));
    }
    if let Some(len) = len.filter(|l| *l < 0) {
        return fail(format!("the length {len} is negative"));
    }
    if pos == 0 {
        return ok(Scalar::String(Cow::Borrowed("")));
    }
    // In range by the checks above: 0 <= first < chars.
    let first = usize::try_from(if pos < 0 { chars + pos } else { pos - 1 }).unwrap_or(0);
    let start = char_offset(&s, first);
    let end = match len.and_then(|l| usize::try_from(l).ok()) {
        Some(l) => char_offset(&s, first.saturating_add(l)),
        None => s.len(),
    };
    ok(Scalar::String(slice(s, start, end)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(f: Builtin, args: Vec<Scalar<'static>>) -> (String, Option<crate::ErrorKind>) {
        let (v, e) = f.call(args);
        (v.into_value().to_string(), e.map(|e| e.kind()))
    }

    fn s(v: &'static str) -> Scalar<'static> {
        Scalar::String(Cow::Borrowed(v))
    }

    #[test]
    fn string_positions_count_characters() {
        assert_eq!(
            call(Builtin::Left, vec![s("héllo"), Scalar::Integer(2)]),
            ("hé".into(), None)
        );
        assert_eq!(
            call(Builtin::Right, vec![s("héllo"), Scalar::Integer(4)]),
            ("éllo".into(), None)
        );
        assert_eq!(
            call(
                Builtin::SubstringLen,
                vec![s("日本語です"), Scalar::Integer(-3), Scalar::Integer(2)]
            ),
            ("語で".into(), None)
        );
        assert_eq!(call(Builtin::Length, vec![s("日本")]), ("2".into(), None));
    }

    #[test]
    fn substring_rejects_a_negative_length() {
        assert_eq!(
            call(
                Builtin::SubstringLen,
                vec![s("abc"), Scalar::Integer(1), Scalar::Integer(-1)]
            ),
            (String::new(), Some(crate::ErrorKind::FunctionEvaluation))
        );
    }

    #[test]
    fn concat_ws_puts_the_separator_only_between_values() {
        assert_eq!(
            call(Builtin::ConcatWs, vec![s(", "), s("a"), s("b")]),
            ("a, b".into(), None)
        );
        assert_eq!(
            call(Builtin::ConcatWs, vec![s(", ")]),
            (String::new(), None)
        );
    }

    #[test]
    fn strings_longer_than_the_limit_are_not_built() {
        let quarter = Scalar::String(Cow::Owned("x".repeat(MAX_STRING_BYTES / 4)));
        let (value, error) = Builtin::Concat.call(vec![quarter.clone(); 4]);
        assert_eq!(value.into_value().to_string().len(), MAX_STRING_BYTES);
        assert_eq!(error, None);
        let (value, error) = Builtin::Concat.call(vec![quarter.clone(); 5]);
        assert_eq!(value.into_value().to_string(), "");
        assert_eq!(
            error.map(|e| e.kind()),
            Some(crate::ErrorKind::FunctionEvaluation)
        );
        let parts = vec![quarter.clone(), s("a"), s("b"), s("c"), s("d"), s("e")];
        let (_, error) = Builtin::ConcatWs.call(parts);
        assert_eq!(
            error.map(|e| e.kind()),
            Some(crate::ErrorKind::FunctionEvaluation)
        );
        // `ŉ` (2 bytes) upper-cases to `ʼN` (3 bytes).
        let growing = Scalar::String(Cow::Owned("ŉ".repeat(MAX_STRING_BYTES / 2 - 8)));
        let (_, error) = Builtin::Upper.call(vec![growing]);
        assert!(error.is_some());
    }

    #[test]
    fn abs_of_the_most_negative_integer_saturates_with_an_error() {
        assert_eq!(
            call(Builtin::Abs, vec![Scalar::Integer(i32::MIN)]),
            (i32::MAX.to_string(), Some(crate::ErrorKind::Math))
        );
    }

    #[test]
    fn trim_removes_unicode_whitespace_only() {
        assert_eq!(
            call(Builtin::Trim, vec![s("\u{3000}\t a\u{1} \n")]),
            ("a\u{1}".into(), None)
        );
    }
}
