//! Evaluates an expression tree against one CloudEvent, with the spec's error rules (§3.2–§3.4, §4.1).
//!
//! Errors are handled in the spec's "fail fast" mode (§4.1): the first error
//! stops the evaluation, and every operator above the one that raised it
//! yields the zero value of its own return type. This is what the TCK asks
//! for: `NOT missing` is `false` (not `NOT false`), and `true AND (1 != 1/0)`
//! is `false`. The operator that raises the error chooses its own value,
//! which the spec fixes for some: `LEFT('abc', -2)` is `'abc'`,
//! `ABS(-2147483648)` is `2147483647`.

use std::borrow::Cow;

use chrono::SecondsFormat;
use cloudevents::event::{AttributeValue, ExtensionValue};
use cloudevents::Event;

use crate::ast::{BinaryOp, Node};
use crate::error::{EvalError, MathError};
use crate::value::{Scalar, Type};

/// An error on its way up, and the value the node that raised it returned.
pub(crate) struct Failure<'a> {
    pub(crate) value: Scalar<'a>,
    pub(crate) error: EvalError,
}

type Eval<'a> = Result<Scalar<'a>, Failure<'a>>;

impl Node {
    pub(crate) fn eval<'a>(&'a self, event: &'a Event) -> Eval<'a> {
        match self {
            Node::Literal(value) => Ok(Scalar::from_value(value)),
            Node::Attribute(name) => attribute(event, name).ok_or_else(|| Failure {
                value: Scalar::Boolean(false),
                error: EvalError::MissingAttribute { name: name.clone() },
            }),
            Node::Exists(name) => Ok(Scalar::Boolean(exists(event, name))),
            Node::Not(inner) => Ok(Scalar::Boolean(!self.boolean(inner, event)?)),
            Node::Negate(inner) => {
                let i = self.integer(inner, event)?;
                i.checked_neg()
                    .map(Scalar::Integer)
                    .ok_or_else(|| self.math(MathError::Overflow))
            }
            Node::Chain { first, rest } => self.chain(first, rest, event),
            Node::Like {
                operand,
                pattern,
                negated,
            } => {
                let text = self.child(operand, event)?.into_string();
                Ok(Scalar::Boolean(pattern.matches(&text) != *negated))
            }
            Node::In {
                operand,
                set,
                negated,
            } => {
                // Each element is cast to the type of the left operand (§3.7),
                // and evaluated only until one matches.
                let needle = self.child(operand, event)?;
                let mut found = false;
                for item in set {
                    let item = self.child(item, event)?;
                    if self.cast(item, needle.ty())? == needle {
                        found = true;
                        break;
                    }
                }
                Ok(Scalar::Boolean(found != *negated))
            }
            Node::Call {
                name,
                function,
                args,
                ..
            } => {
                let Some(function) = function else {
                    return Err(Failure {
                        value: Scalar::Boolean(false),
                        error: EvalError::MissingFunction {
                            name: name.clone(),
                            arity: args.len(),
                        },
                    });
                };
                let mut values = Vec::with_capacity(args.len());
                for (i, arg) in args.iter().enumerate() {
                    let value = self.child(arg, event)?;
                    values.push(match function.param_type(i) {
                        Some(ty) => self.cast(value, ty)?,
                        None => value,
                    });
                }
                match function.call(values) {
                    (value, None) => Ok(value),
                    (value, Some(error)) => Err(Failure { value, error }),
                }
            }
        }
    }

    /// `first op1 x1 op2 x2 ...`, grouped to the left: the value so far is
    /// the left operand of the next operator.
    fn chain<'a>(
        &'a self,
        first: &'a Node,
        rest: &'a [(BinaryOp, Node)],
        event: &'a Event,
    ) -> Eval<'a> {
        let mut acc = self.child(first, event)?;
        for (op, right) in rest {
            acc = self.apply(acc, *op, right, event)?;
        }
        Ok(acc)
    }

    fn apply<'a>(
        &self,
        left: Scalar<'a>,
        op: BinaryOp,
        right: &'a Node,
        event: &'a Event,
    ) -> Result<Scalar<'a>, Failure<'static>> {
        use BinaryOp::*;
        match op {
            And | Or | Xor => {
                let l = self.cast_boolean(&left)?;
                // Short-circuit (§3.4.2): the right side is not evaluated, so
                // its errors do not happen.
                match (op, l) {
                    (And, false) => return Ok(Scalar::Boolean(false)),
                    (Or, true) => return Ok(Scalar::Boolean(true)),
                    _ => {}
                }
                let r = self.boolean(right, event)?;
                Ok(Scalar::Boolean(if op == Xor { l != r } else { r }))
            }
            Eq | NotEq => {
                // `=` is overloaded for the three types; the right operand's
                // type picks the overload and the left one is cast to it (§3.7).
                let r = self.child(right, event)?;
                let l = self.cast(left, r.ty())?;
                Ok(Scalar::Boolean((l == r) == (op == Eq)))
            }
            Lt | Le | Gt | Ge => {
                // Both sides are evaluated before either is cast, so an
                // error in the right operand wins over a cast error in the left.
                let r = self.child(right, event)?;
                let (l, r) = (self.cast_integer(&left)?, self.cast_integer(&r)?);
                Ok(Scalar::Boolean(match op {
                    Lt => l < r,
                    Le => l <= r,
                    Gt => l > r,
                    _ => l >= r,
                }))
            }
            Add | Sub | Mul | Div | Mod => {
                let r = self.child(right, event)?;
                let (l, r) = (self.cast_integer(&left)?, self.cast_integer(&r)?);
                if r == 0 && matches!(op, Div | Mod) {
                    return Err(self.math(MathError::DivisionByZero));
                }
                let result = match op {
                    Add => l.checked_add(r),
                    Sub => l.checked_sub(r),
                    Mul => l.checked_mul(r),
                    Div => l.checked_div(r),
                    // `i32::MIN % -1` is 0 mathematically; only Rust's
                    // checked form calls it an overflow.
                    _ => Some(l.wrapping_rem(r)),
                };
                result
                    .map(Scalar::Integer)
                    .ok_or_else(|| self.math(MathError::Overflow))
            }
        }
    }

    /// Evaluates a child; a failure below becomes this node's zero value.
    fn child<'a>(&self, child: &'a Node, event: &'a Event) -> Result<Scalar<'a>, Failure<'static>> {
        child
            .eval(event)
            .map_err(|failure| self.fail(failure.error))
    }

    fn boolean(&self, child: &Node, event: &Event) -> Result<bool, Failure<'static>> {
        self.cast_boolean(&self.child(child, event)?)
    }

    fn integer(&self, child: &Node, event: &Event) -> Result<i32, Failure<'static>> {
        self.cast_integer(&self.child(child, event)?)
    }

    fn cast_boolean(&self, value: &Scalar<'_>) -> Result<bool, Failure<'static>> {
        value.to_boolean().map_err(|error| self.fail(error))
    }

    fn cast_integer(&self, value: &Scalar<'_>) -> Result<i32, Failure<'static>> {
        value.to_integer().map_err(|error| self.fail(error))
    }

    fn cast<'a>(&self, value: Scalar<'a>, to: Type) -> Result<Scalar<'a>, Failure<'static>> {
        value.cast(to).map_err(|error| self.fail(error))
    }

    /// This node yields its zero value with `error`, its own or one from below.
    fn fail(&self, error: EvalError) -> Failure<'static> {
        Failure {
            value: Scalar::zero(self.result_type()),
            error,
        }
    }

    fn math(&self, error: MathError) -> Failure<'static> {
        self.fail(EvalError::Math(error))
    }
}

/// Looks up a context attribute or an extension by name (§3.2).
///
/// Attributes come from the SDK's iterator, so the names of either spec
/// version work (`dataschema` in 1.0, `schemaurl` in 0.3). Values that are not
/// a CESQL type become strings, as the spec requires: URIs as written, binary
/// as base64, and timestamps as RFC 3339 in UTC with a `Z`, the way the SDK's
/// JSON format writes them (the SDK keeps times in UTC, so the offset the
/// producer wrote is gone). An integer extension beyond 32 bits is not a CESQL
/// Integer either, and reads as its decimal string.
fn attribute<'a>(event: &'a Event, name: &str) -> Option<Scalar<'a>> {
    if let Some((_, value)) = event.iter_attributes().find(|(n, _)| *n == name) {
        return Some(match value {
            AttributeValue::String(s) => Scalar::String(Cow::Borrowed(s)),
            AttributeValue::URIRef(s) => Scalar::String(Cow::Borrowed(s.as_str())),
            AttributeValue::URI(u) => Scalar::String(Cow::Borrowed(u.as_str())),
            AttributeValue::Time(t) => {
                Scalar::String(Cow::Owned(t.to_rfc3339_opts(SecondsFormat::AutoSi, true)))
            }
            AttributeValue::Boolean(b) => Scalar::Boolean(*b),
            AttributeValue::Integer(i) => integer(*i),
            other @ (AttributeValue::Binary(_) | AttributeValue::SpecVersion(_)) => {
                Scalar::String(Cow::Owned(other.to_string()))
            }
        });
    }
    Some(match event.extension(name)? {
        ExtensionValue::String(s) => Scalar::String(Cow::Borrowed(s)),
        ExtensionValue::Boolean(b) => Scalar::Boolean(*b),
        ExtensionValue::Integer(i) => integer(*i),
    })
}

/// EXISTS (§3.4.4). The SDK's iterator skips absent optional attributes, and
/// required ones are always there.
fn exists(event: &Event, name: &str) -> bool {
    event.iter_attributes().any(|(n, _)| n == name) || event.extension(name).is_some()
}

fn integer(i: i64) -> Scalar<'static> {
    match i32::try_from(i) {
        Ok(i) => Scalar::Integer(i),
        Err(_) => Scalar::String(Cow::Owned(i.to_string())),
    }
}
