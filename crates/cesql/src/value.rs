//! CESQL's three value types, their zero values and the spec's casting rules (§3.1, §3.7).

use std::borrow::Cow;
use std::fmt;

use crate::error::EvalError;
pub use crate::types::Type;

impl Type {
    /// The value an operator or function of this return type yields when it fails (§3.1).
    pub fn zero(self) -> Value {
        Scalar::zero(self).into_value()
    }
}

/// The result of evaluating an expression. Integers are 32-bit signed, as the spec requires.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Value {
    Boolean(bool),
    Integer(i32),
    String(String),
}

impl Value {
    pub fn ty(&self) -> Type {
        match self {
            Value::Boolean(_) => Type::Boolean,
            Value::Integer(_) => Type::Integer,
            Value::String(_) => Type::String,
        }
    }
}

/// Written the way CESQL's String cast writes it: `true`, `-1`, `abc` (strings unquoted).
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Boolean(b) => write!(f, "{b}"),
            Value::Integer(i) => write!(f, "{i}"),
            Value::String(s) => f.write_str(s),
        }
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Boolean(b)
    }
}

impl From<i32> for Value {
    fn from(i: i32) -> Self {
        Value::Integer(i)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(s)
    }
}

/// A value during evaluation. Strings borrow from the expression's literals or
/// the event's attributes where they can, so filtering an event copies no
/// attribute it only compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scalar<'a> {
    Boolean(bool),
    Integer(i32),
    String(Cow<'a, str>),
}

impl Scalar<'static> {
    pub(crate) fn zero(ty: Type) -> Self {
        match ty {
            Type::Boolean => Scalar::Boolean(false),
            Type::Integer => Scalar::Integer(0),
            Type::String => Scalar::String(Cow::Borrowed("")),
        }
    }
}

impl<'a> Scalar<'a> {
    pub(crate) fn ty(&self) -> Type {
        match self {
            Scalar::Boolean(_) => Type::Boolean,
            Scalar::Integer(_) => Type::Integer,
            Scalar::String(_) => Type::String,
        }
    }

    pub(crate) fn from_value(value: &'a Value) -> Self {
        match value {
            Value::Boolean(b) => Scalar::Boolean(*b),
            Value::Integer(i) => Scalar::Integer(*i),
            Value::String(s) => Scalar::String(Cow::Borrowed(s)),
        }
    }

    pub(crate) fn into_value(self) -> Value {
        match self {
            Scalar::Boolean(b) => Value::Boolean(b),
            Scalar::Integer(i) => Value::Integer(i),
            Scalar::String(s) => Value::String(s.into_owned()),
        }
    }

    /// Integer -> String is base 10 with a leading `-` when negative; Boolean
    /// -> String is `true` or `false`. Never fails.
    pub(crate) fn into_string(self) -> Cow<'a, str> {
        match self {
            Scalar::String(s) => s,
            Scalar::Integer(i) => Cow::Owned(i.to_string()),
            Scalar::Boolean(true) => Cow::Borrowed("true"),
            Scalar::Boolean(false) => Cow::Borrowed("false"),
        }
    }

    /// String -> Integer accepts an optional `+`/`-` sign and base-10 digits
    /// that fit in 32 bits; anything else is a cast error. Boolean -> Integer
    /// is 1 or 0.
    pub(crate) fn to_integer(&self) -> Result<i32, EvalError> {
        match self {
            Scalar::Integer(i) => Ok(*i),
            Scalar::Boolean(b) => Ok(i32::from(*b)),
            // `i32::from_str` accepts exactly the spec's form: an optional sign,
            // then ASCII digits, with overflow reported as an error.
            Scalar::String(s) => s.parse::<i32>().map_err(|_| EvalError::Cast {
                from: Type::String,
                to: Type::Integer,
                value: s.to_string(),
            }),
        }
    }

    /// String -> Boolean accepts `true`/`false` in any letter case; Integer ->
    /// Boolean is `false` for 0 and `true` otherwise.
    pub(crate) fn to_boolean(&self) -> Result<bool, EvalError> {
        match self {
            Scalar::Boolean(b) => Ok(*b),
            Scalar::Integer(i) => Ok(*i != 0),
            Scalar::String(s) if s.eq_ignore_ascii_case("true") => Ok(true),
            Scalar::String(s) if s.eq_ignore_ascii_case("false") => Ok(false),
            Scalar::String(s) => Err(EvalError::Cast {
                from: Type::String,
                to: Type::Boolean,
                value: s.to_string(),
            }),
        }
    }

    /// Casts to `target` (the identity when the type already matches).
    pub(crate) fn cast(self, target: Type) -> Result<Scalar<'a>, EvalError> {
        Ok(match target {
            Type::Boolean => Scalar::Boolean(self.to_boolean()?),
            Type::Integer => Scalar::Integer(self.to_integer()?),
            Type::String => Scalar::String(self.into_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Scalar<'_> {
        Scalar::String(Cow::Borrowed(v))
    }

    #[test]
    fn string_to_integer_follows_the_integer_literal_grammar() {
        assert_eq!(s("+42").to_integer(), Ok(42));
        assert_eq!(s("-2147483648").to_integer(), Ok(i32::MIN));
        for bad in ["", " 1", "1 ", "2147483648", "1.0", "0x10", "abc", "--1"] {
            let err = s(bad).to_integer().unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Cast, "{bad:?}");
        }
    }

    #[test]
    fn string_to_boolean_ignores_letter_case_only() {
        assert_eq!(s("TrUe").to_boolean(), Ok(true));
        assert_eq!(s("FALSE").to_boolean(), Ok(false));
        assert!(s(" true").to_boolean().is_err());
        assert!(s("1").to_boolean().is_err());
    }

    #[test]
    fn integer_and_boolean_casts_both_ways() {
        assert_eq!(Scalar::Integer(-50).to_boolean(), Ok(true));
        assert_eq!(Scalar::Integer(0).to_boolean(), Ok(false));
        assert_eq!(Scalar::Boolean(true).to_integer(), Ok(1));
        assert_eq!(Scalar::Integer(-7).into_string(), "-7");
        assert_eq!(Scalar::Boolean(false).into_string(), "false");
    }
}
