//! Evaluates an expression tree against one CloudEvent, with the spec's error rules (§3.2–§3.4, §4.1).
//!
//! Errors are handled in the spec's "fail fast" mode (§4.1): the first error
//! stops the evaluation, and every operator above the one that raised it
//! yields the zero value of its own return type. This is what the TCK asks
//! for: `NOT missing` is `false` (not `NOT false`), and `true AND (1 != 1/0)`
//! is `false`. The operator that raises the error chooses its own value,
//! which the spec fixes for some: `LEFT('abc', -2)` is `'abc'`,
//! `ABS(-2147483648)` is `2147483647`.
//!
//! Evaluation charges its work to a [`Budget`] (see `budget`): when the
//! budget runs out, the node that found it so fails like any other, which
//! stops the evaluation at once, and the context remembers why.

use std::borrow::Cow;

use crate::ast::{BinaryOp, Node};
use crate::attributes::{Attribute, Attributes};
use crate::budget::Budget;
use crate::error::{EvalError, MathError};
use crate::value::{Scalar, Type};

/// What one evaluation reads and spends.
pub(crate) struct Context<'a, E: ?Sized> {
    event: &'a E,
    budget: Budget,
    /// Set when the budget ran out: the evaluation's result is then no
    /// answer.
    pub(crate) exhausted: bool,
}

impl<'a, E: Attributes + ?Sized> Context<'a, E> {
    pub(crate) fn new(event: &'a E, budget: Budget) -> Self {
        Context {
            event,
            budget,
            exhausted: false,
        }
    }

    pub(crate) fn budget(&self) -> Budget {
        self.budget
    }

    /// Spends `units`, or fails the node `node` when the budget is spent.
    fn charge(&mut self, node: &Node, units: u64) -> Result<(), Failure<'static>> {
        if self.budget.charge(units) {
            return Ok(());
        }
        self.exhausted = true;
        Err(node.fail(EvalError::FunctionEvaluation {
            function: "CESQL",
            reason: "the evaluation ran out of its work budget".into(),
        }))
    }
}

/// The fixed cost of evaluating one node, in budget units.
const NODE_UNITS: u64 = 4;

/// What a string costs to examine or produce.
fn units(s: &str) -> u64 {
    s.len() as u64
}

/// An error on its way up, and the value the node that raised it returned.
pub(crate) struct Failure<'a> {
    pub(crate) value: Scalar<'a>,
    pub(crate) error: EvalError,
}

type Eval<'a> = Result<Scalar<'a>, Failure<'a>>;

impl Node {
    pub(crate) fn eval<'a, E: Attributes + ?Sized>(&'a self, cx: &mut Context<'a, E>) -> Eval<'a> {
        cx.charge(self, NODE_UNITS)?;
        match self {
            Node::Literal(value) => Ok(Scalar::from_value(value)),
            Node::Attribute(name) => match cx.event.attribute(name) {
                Some(value) => {
                    let value = scalar(value);
                    if let Scalar::String(Cow::Owned(s)) = &value {
                        cx.charge(self, units(s))?;
                    }
                    Ok(value)
                }
                None => Err(Failure {
                    value: Scalar::Boolean(false),
                    error: EvalError::MissingAttribute { name: name.clone() },
                }),
            },
            Node::Exists(name) => Ok(Scalar::Boolean(cx.event.attribute(name).is_some())),
            Node::Not(inner) => Ok(Scalar::Boolean(!self.boolean(inner, cx)?)),
            Node::Negate(inner) => {
                let i = self.integer(inner, cx)?;
                i.checked_neg()
                    .map(Scalar::Integer)
                    .ok_or_else(|| self.math(MathError::Overflow))
            }
            Node::Chain { first, rest } => self.chain(first, rest, cx),
            Node::Like {
                operand,
                pattern,
                negated,
            } => {
                let text = self.child(operand, cx)?.into_string();
                let (matched, steps) = pattern.matches(&text);
                cx.charge(self, steps)?;
                Ok(Scalar::Boolean(matched != *negated))
            }
            Node::In {
                operand,
                set,
                negated,
            } => {
                // Each element is cast to the type of the left operand (§3.7),
                // and evaluated only until one matches.
                let needle = self.child(operand, cx)?;
                let mut found = false;
                for item in set {
                    let item = self.child(item, cx)?;
                    let item = self.cast(item, needle.ty())?;
                    cx.charge(self, compare_units(&item, &needle))?;
                    if item == needle {
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
                    let value = self.child(arg, cx)?;
                    let value = match function.param_type(i) {
                        Some(ty) => self.cast(value, ty)?,
                        None => value,
                    };
                    // The function reads each string it gets (counting
                    // characters, copying, changing case).
                    if let Scalar::String(s) = &value {
                        cx.charge(self, units(s))?;
                    }
                    values.push(value);
                }
                let (value, error) = function.call(values);
                if let Scalar::String(Cow::Owned(s)) = &value {
                    cx.charge(self, units(s))?;
                }
                match error {
                    None => Ok(value),
                    Some(error) => Err(Failure { value, error }),
                }
            }
        }
    }

    /// `first op1 x1 op2 x2 ...`, grouped to the left: the value so far is
    /// the left operand of the next operator.
    fn chain<'a, E: Attributes + ?Sized>(
        &'a self,
        first: &'a Node,
        rest: &'a [(BinaryOp, Node)],
        cx: &mut Context<'a, E>,
    ) -> Eval<'a> {
        let mut acc = self.child(first, cx)?;
        for (op, right) in rest {
            acc = self.apply(acc, *op, right, cx)?;
        }
        Ok(acc)
    }

    fn apply<'a, E: Attributes + ?Sized>(
        &self,
        left: Scalar<'a>,
        op: BinaryOp,
        right: &'a Node,
        cx: &mut Context<'a, E>,
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
                let r = self.boolean(right, cx)?;
                Ok(Scalar::Boolean(if op == Xor { l != r } else { r }))
            }
            Eq | NotEq => {
                // `=` is overloaded for the three types; the right operand's
                // type picks the overload and the left one is cast to it (§3.7).
                let r = self.child(right, cx)?;
                let l = self.cast(left, r.ty())?;
                cx.charge(self, compare_units(&l, &r))?;
                Ok(Scalar::Boolean((l == r) == (op == Eq)))
            }
            Lt | Le | Gt | Ge => {
                // Both sides are evaluated before either is cast, so an
                // error in the right operand wins over a cast error in the left.
                let r = self.child(right, cx)?;
                let (l, r) = (self.cast_integer(&left)?, self.cast_integer(&r)?);
                Ok(Scalar::Boolean(match op {
                    Lt => l < r,
                    Le => l <= r,
                    Gt => l > r,
                    _ => l >= r,
                }))
            }
            Add | Sub | Mul | Div | Mod => {
                let r = self.child(right, cx)?;
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
    fn child<'a, E: Attributes + ?Sized>(
        &self,
        child: &'a Node,
        cx: &mut Context<'a, E>,
    ) -> Result<Scalar<'a>, Failure<'static>> {
        child.eval(cx).map_err(|failure| self.fail(failure.error))
    }

    fn boolean<'a, E: Attributes + ?Sized>(
        &self,
        child: &'a Node,
        cx: &mut Context<'a, E>,
    ) -> Result<bool, Failure<'static>> {
        self.cast_boolean(&self.child(child, cx)?)
    }

    fn integer<'a, E: Attributes + ?Sized>(
        &self,
        child: &'a Node,
        cx: &mut Context<'a, E>,
    ) -> Result<i32, Failure<'static>> {
        self.cast_integer(&self.child(child, cx)?)
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

/// How much comparing two values costs: the bytes of the shorter string.
fn compare_units(a: &Scalar<'_>, b: &Scalar<'_>) -> u64 {
    match (a, b) {
        (Scalar::String(a), Scalar::String(b)) => units(a).min(units(b)),
        _ => 1,
    }
}

/// An attribute as a CESQL value (§3.2): an integer extension beyond 32
/// bits is not a CESQL Integer, and reads as its decimal string.
fn scalar(attribute: Attribute<'_>) -> Scalar<'_> {
    match attribute {
        Attribute::String(s) => Scalar::String(s),
        Attribute::Boolean(b) => Scalar::Boolean(b),
        Attribute::Integer(i) => match i32::try_from(i) {
            Ok(i) => Scalar::Integer(i),
            Err(_) => Scalar::String(Cow::Owned(i.to_string())),
        },
    }
}
