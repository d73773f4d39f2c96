//! The public face of the crate: a parsed expression that evaluates against events.

use std::fmt;

use cloudevents::Event;

use crate::ast::Node;
use crate::error::{EvalError, ParseError};
use crate::parser;
use crate::pushdown::{self, Pushdown};
use crate::validate;
use crate::value::Value;

/// A parsed CESQL expression. Parse once, evaluate against many events; it is
/// cheap to clone and can be shared between threads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expression {
    source: String,
    root: Node,
}

impl Expression {
    /// Parses `source`. Unknown functions are not a parse error: the spec
    /// makes them a MissingFunction error at evaluation.
    pub fn parse(source: &str) -> Result<Expression, ParseError> {
        Ok(Expression {
            source: source.to_owned(),
            root: parser::parse(source)?,
        })
    }

    /// Checks what the spec leaves to evaluation: that every function
    /// called exists and takes that many arguments. An expression that fails
    /// here evaluates to a MissingFunction error for every event, so a
    /// service taking filters from people should refuse it up front. The
    /// error points at the first such call in the text.
    pub fn validate(&self) -> Result<(), ParseError> {
        match validate::first_missing_function(&self.root, &self.source) {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// The text the expression was parsed from.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Evaluates against `event`. The result always has a value (CESQL is
    /// total); when an error happened the value is the one the spec defines
    /// for it, usually the zero value of the expression's type. Evaluation
    /// stops at the first error (the spec's fail-fast mode), so the list holds
    /// at most one error.
    pub fn evaluate(&self, event: &Event) -> (Value, Vec<EvalError>) {
        match self.root.eval(event) {
            Ok(value) => (value.into_value(), Vec::new()),
            Err(failure) => (failure.value.into_value(), vec![failure.error]),
        }
    }

    /// Whether `event` passes this expression used as a filter: only a
    /// Boolean `true` with no error does (§1.2).
    pub fn matches(&self, event: &Event) -> bool {
        matches!(
            self.root.eval(event),
            Ok(crate::value::Scalar::Boolean(true))
        )
    }

    /// The equality tests on `id`, `source`, `type` and `subject` that a store
    /// can run as SQL before evaluating the rest; see [`Pushdown`].
    pub fn pushdown(&self) -> Pushdown {
        pushdown::extract(&self.root)
    }
}

/// Shows the expression as it was written.
impl fmt::Display for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl std::str::FromStr for Expression {
    type Err = ParseError;

    fn from_str(source: &str) -> Result<Self, Self::Err> {
        Expression::parse(source)
    }
}
