//! The parsed form of an expression: a tree of CESQL operators, literals and attribute references.

use crate::functions::Builtin;
use crate::like::LikePattern;
use crate::value::{Type, Value};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Node {
    Literal(Value),
    /// A context attribute or extension, by its lower-case name.
    Attribute(String),
    Exists(String),
    Not(Box<Node>),
    Negate(Box<Node>),
    /// Binary operators of one precedence level, grouped to the left:
    /// `a - b + c` is `first: a, rest: [(Sub, b), (Add, c)]`, meaning
    /// `(a - b) + c`. A flat list rather than nested pairs, so a long
    /// `x = 'a' OR x = 'b' OR ...` is evaluated by a loop instead of one
    /// recursion per operator, and cannot overflow the stack.
    Chain {
        first: Box<Node>,
        rest: Vec<(BinaryOp, Node)>,
    },
    Like {
        operand: Box<Node>,
        pattern: LikePattern,
        negated: bool,
    },
    In {
        operand: Box<Node>,
        set: Vec<Node>,
        negated: bool,
    },
    /// `function` is `None` when no built-in has this name and arity: the
    /// spec makes that an evaluation error (MissingFunction), not a parse
    /// error. `at` is the byte offset of the name, for `Expression::validate`.
    Call {
        name: String,
        function: Option<Builtin>,
        args: Vec<Node>,
        at: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BinaryOp {
    And,
    Or,
    Xor,
    Eq,
    NotEq,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
}

impl Node {
    /// The type whose zero value this node yields when it, or anything below
    /// it, fails (§3.2, §3.3). An attribute reference has no declared type,
    /// and the spec says to assume Boolean then; so does an unknown function.
    pub(crate) fn result_type(&self) -> Type {
        match self {
            Node::Literal(v) => v.ty(),
            Node::Negate(_) => Type::Integer,
            Node::Chain { rest, .. } => match rest.first() {
                Some((op, _)) if op.level().is_arithmetic() => Type::Integer,
                _ => Type::Boolean,
            },
            Node::Call {
                function: Some(f), ..
            } => f.return_type(),
            Node::Attribute(_)
            | Node::Exists(_)
            | Node::Not(_)
            | Node::Like { .. }
            | Node::In { .. }
            | Node::Call { function: None, .. } => Type::Boolean,
        }
    }
}

/// The precedence levels of the binary operators (§3.6), lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Level {
    Logic,
    Comparison,
    Additive,
    Multiplicative,
}

impl Level {
    pub(crate) fn is_arithmetic(self) -> bool {
        matches!(self, Level::Additive | Level::Multiplicative)
    }
}

impl BinaryOp {
    pub(crate) fn level(self) -> Level {
        use BinaryOp::*;
        match self {
            And | Or | Xor => Level::Logic,
            Eq | NotEq | Lt | Le | Gt | Ge => Level::Comparison,
            Add | Sub => Level::Additive,
            Mul | Div | Mod => Level::Multiplicative,
        }
    }
}
