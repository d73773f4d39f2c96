//! The public face of the crate: a parsed expression that evaluates against events.

use std::fmt;

use crate::ast::Node;
use crate::attributes::Attributes;
use crate::budget::{Budget, OverBudget};
use crate::error::{EvalError, ParseError};
use crate::eval::Context;
use crate::parser;
use crate::pushdown::{self, Pushdown};
use crate::validate;
use crate::value::{Scalar, Value};

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

    /// Evaluates against `event`: the SDK's [`cloudevents::Event`], or the
    /// JSON format as stored (`serde_json::Map`; see [`Attributes`]). The
    /// result always has a value (CESQL is total); when an error happened
    /// the value is the one the spec defines for it, usually the zero value
    /// of the expression's type. Evaluation stops at the first error (the
    /// spec's fail-fast mode), so the list holds at most one error. The work
    /// is unbounded, but no function builds a string longer than
    /// [`crate::MAX_STRING_BYTES`].
    pub fn evaluate<E: Attributes + ?Sized>(&self, event: &E) -> (Value, Vec<EvalError>) {
        let mut cx = Context::new(event, Budget::UNLIMITED);
        match self.root.eval(&mut cx) {
            Ok(value) => (value.into_value(), Vec::new()),
            Err(failure) => (failure.value.into_value(), vec![failure.error]),
        }
    }

    /// Whether `event` passes this expression used as a filter: only a
    /// Boolean `true` with no error does (§1.2).
    pub fn matches<E: Attributes + ?Sized>(&self, event: &E) -> bool {
        let mut budget = Budget::UNLIMITED;
        self.matches_within(event, &mut budget).unwrap_or(false)
    }

    /// [`Self::matches`], spending at most what `budget` holds and taking
    /// what it spent from it; [`OverBudget`] when that was not enough for
    /// an answer. A service that evaluates filters from people gives each
    /// request (or each event of a live feed) a budget.
    pub fn matches_within<E: Attributes + ?Sized>(
        &self,
        event: &E,
        budget: &mut Budget,
    ) -> Result<bool, OverBudget> {
        let mut cx = Context::new(event, *budget);
        let result = self.root.eval(&mut cx);
        *budget = cx.budget();
        if cx.exhausted {
            return Err(OverBudget);
        }
        Ok(matches!(result, Ok(Scalar::Boolean(true))))
    }

    /// The attribute names the expression reads (`subject`, `EXISTS myext`),
    /// lower case, each once, in order of first appearance. A name no event
    /// has makes every test of it fail: a service can warn about a typo.
    pub fn attributes(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        let mut stack = vec![&self.root];
        while let Some(node) = stack.pop() {
            match node {
                Node::Attribute(name) | Node::Exists(name) => {
                    if !names.contains(&name.as_str()) {
                        names.push(name);
                    }
                }
                Node::Literal(_) => {}
                Node::Not(inner) | Node::Negate(inner) => stack.push(inner),
                Node::Chain { first, rest } => {
                    stack.extend(rest.iter().rev().map(|(_, operand)| operand));
                    stack.push(first);
                }
                Node::Like { operand, .. } => stack.push(operand),
                Node::In { operand, set, .. } => {
                    stack.extend(set.iter().rev());
                    stack.push(operand);
                }
                Node::Call { args, .. } => stack.extend(args.iter().rev()),
            }
        }
        names
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
