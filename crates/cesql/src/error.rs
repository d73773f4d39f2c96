//! The errors of parsing (with where in the text) and of evaluating (the spec's error types, §3.3).

use std::fmt;

use crate::types::Type;

/// The text is not a CESQL expression. `offset` is the byte offset of the
/// offending character or token in the text, `column` the same place counted
/// in characters from 1, for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (at column {column})")]
pub struct ParseError {
    pub offset: usize,
    pub column: usize,
    pub message: String,
}

impl ParseError {
    pub(crate) fn at(source: &str, offset: usize, message: impl Into<String>) -> Self {
        // Offsets come from the lexer, which only stops on character
        // boundaries; `get` keeps a wrong offset from panicking all the same.
        let column = source
            .get(..offset)
            .map_or(offset, |before| before.chars().count())
            + 1;
        ParseError {
            offset,
            column,
            message: message.into(),
        }
    }
}

/// The spec's error types (§3.3). `ParseError` is a separate Rust type, since
/// an expression that does not parse is never evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    MissingAttribute,
    Math,
    Cast,
    MissingFunction,
    FunctionEvaluation,
}

/// Why a math operator or function could not give the mathematical result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MathError {
    DivisionByZero,
    /// The result does not fit in a 32-bit signed integer.
    Overflow,
}

impl fmt::Display for MathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MathError::DivisionByZero => "division by zero",
            MathError::Overflow => "integer overflow (CESQL integers are 32-bit)",
        })
    }
}

/// An error raised while evaluating an expression against one event. The
/// evaluation still yields a value (see [`crate::Expression::evaluate`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    #[error("the event has no attribute `{name}`")]
    MissingAttribute { name: String },
    #[error("{0}")]
    Math(MathError),
    #[error("cannot cast {from} {value:?} to {to}")]
    Cast { from: Type, to: Type, value: String },
    #[error("there is no function {name} taking {arity} argument(s)")]
    MissingFunction { name: String, arity: usize },
    #[error("{function}: {reason}")]
    FunctionEvaluation {
        function: &'static str,
        reason: String,
    },
}

impl EvalError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            EvalError::MissingAttribute { .. } => ErrorKind::MissingAttribute,
            EvalError::Math(_) => ErrorKind::Math,
            EvalError::Cast { .. } => ErrorKind::Cast,
            EvalError::MissingFunction { .. } => ErrorKind::MissingFunction,
            EvalError::FunctionEvaluation { .. } => ErrorKind::FunctionEvaluation,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_counts_characters_not_bytes() {
        let err = ParseError::at("'é' = ?", 7, "unexpected character");
        assert_eq!(err.column, 7);
        assert_eq!(err.offset, 7);
        assert_eq!(err.to_string(), "unexpected character (at column 7)");
    }
}
