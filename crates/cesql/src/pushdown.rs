//! Finds the part of an expression a store can run as SQL: top-level equality tests on id, source, type and subject.
//!
//! # What is extracted
//!
//! The expression is split into its top-level conjuncts (`a AND b AND c`,
//! through parentheses). A conjunct is pushed down when it is one of
//!
//! - `attr = 'literal'` or `'literal' = attr`
//! - `attr IN ('literal', ...)`, every element a string literal
//!
//! with `attr` one of `id`, `source`, `type`, `subject` (any letter case) and
//! the literals strings. Everything else (`!=`, `NOT`, `OR`, `XOR`, `LIKE`,
//! `NOT IN`, other attributes, integer or boolean literals, functions) is left
//! to the evaluator.
//!
//! # Why it is sound
//!
//! [`crate::Expression::matches`] is true only when the whole AND chain is
//! Boolean `true` without error, so each pushed conjunct is necessary: a row
//! failing one can never match. A store may therefore filter with
//! `WHERE <col> = ? AND <col> IN (?, ...)` first and evaluate the full
//! expression on the rows that remain, and loses nothing.
//!
//! When [`Pushdown::complete`] is true every conjunct was pushed, and the SQL
//! result is exactly the set of events the expression matches, with no
//! evaluation needed, under these conditions on the store:
//!
//! - **Missing attributes vs SQL NULL.** In CESQL, `subject = 'x'` on an
//!   event without a subject is `false` with a MissingAttributeError, so the
//!   event does not match; in SQL, `subject = 'x'` on a NULL column is NULL,
//!   and the row is not returned either. The two agree only if the store keeps
//!   an absent subject as NULL: a store that writes `''` for "no subject"
//!   would return such events for `subject = ''`, which CESQL never matches,
//!   and must add `subject IS NOT NULL` to its subject conditions. (`id`,
//!   `source` and `type` are required attributes and never missing.)
//!   Beyond a plain AND chain the two logics part ways, which is why nothing
//!   under OR, XOR or NOT is pushed: an error stops a CESQL evaluation, so
//!   `subject = 'x' OR type = 'y'` does not match an event without a subject
//!   even when its type is `y`, while SQL's `NULL OR TRUE` is TRUE.
//! - **Exact comparison.** CESQL string equality is case-sensitive and
//!   byte-for-byte. The columns must compare the same way: SQLite's default
//!   BINARY collation and PostgreSQL's deterministic collations do; a
//!   case-insensitive collation (or MySQL's default) does not.
//! - **Values as the SDK holds them.** The columns must hold the attribute
//!   strings exactly as received (`source` is a URI reference kept as
//!   written, not normalised).
//!
//! The values are data, never SQL: bind them as query parameters.

use crate::ast::{BinaryOp, Level, Node};
use crate::value::Value;

/// A context attribute a store keeps in a column of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Column {
    Id,
    Source,
    Type,
    Subject,
}

impl Column {
    fn from_attribute(name: &str) -> Option<Column> {
        Some(match name {
            "id" => Column::Id,
            "source" => Column::Source,
            "type" => Column::Type,
            "subject" => Column::Subject,
            _ => return None,
        })
    }

    /// The CloudEvents attribute name.
    pub fn as_str(self) -> &'static str {
        match self {
            Column::Id => "id",
            Column::Source => "source",
            Column::Type => "type",
            Column::Subject => "subject",
        }
    }
}

/// One pushed conjunct: the attribute equals one of `any_of` (one value for `=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub column: Column,
    pub any_of: Vec<String>,
}

/// The conjuncts a store can evaluate itself, ANDed; see the module docs for
/// the exact semantics.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pushdown {
    pub conditions: Vec<Condition>,
    /// True when `conditions` are the whole expression, so the store's result
    /// needs no evaluation in memory. Never true with no conditions.
    pub complete: bool,
}

pub(crate) fn extract(root: &Node) -> Pushdown {
    let mut conjuncts = Vec::new();
    collect_conjuncts(root, &mut conjuncts);
    let conditions: Vec<Condition> = conjuncts
        .iter()
        .filter_map(|c| c.and_then(condition))
        .collect();
    let complete = !conditions.is_empty() && conditions.len() == conjuncts.len();
    Pushdown {
        conditions,
        complete,
    }
}

/// The top-level conjuncts of `node`; `None` stands for one that is not a
/// node of its own (the part of a chain before its last OR or XOR).
fn collect_conjuncts<'a>(node: &'a Node, out: &mut Vec<Option<&'a Node>>) {
    let Node::Chain { first, rest } = node else {
        out.push(Some(node));
        return;
    };
    if rest
        .first()
        .is_none_or(|(op, _)| op.level() != Level::Logic)
    {
        out.push(Some(node));
        return;
    }
    // `a OR b AND c AND d` groups as `((a OR b) AND c) AND d`: its conjuncts
    // are `a OR b`, `c` and `d`, that is everything after the last operator
    // that is not AND, plus what comes before it taken whole.
    let tail = match rest.iter().rposition(|(op, _)| *op != BinaryOp::And) {
        Some(last_other) => {
            out.push(None);
            &rest[last_other + 1..]
        }
        None => {
            collect_conjuncts(first, out);
            rest
        }
    };
    for (_, operand) in tail {
        collect_conjuncts(operand, out);
    }
}

fn condition(node: &Node) -> Option<Condition> {
    match node {
        Node::Chain { first, rest } => {
            let [(BinaryOp::Eq, right)] = rest.as_slice() else {
                return None;
            };
            // Either side may be the attribute: with a string literal on the
            // other side, `=` compares two strings in both orders (§3.7).
            let (column, value) = match (&**first, right) {
                (Node::Attribute(a), Node::Literal(Value::String(s)))
                | (Node::Literal(Value::String(s)), Node::Attribute(a)) => (a, s),
                _ => return None,
            };
            Some(Condition {
                column: Column::from_attribute(column)?,
                any_of: vec![value.clone()],
            })
        }
        Node::In {
            operand,
            set,
            negated: false,
        } => {
            let Node::Attribute(name) = &**operand else {
                return None;
            };
            let any_of = set
                .iter()
                .map(|item| match item {
                    Node::Literal(Value::String(s)) => Some(s.clone()),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()?;
            Some(Condition {
                column: Column::from_attribute(name)?,
                any_of,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Expression;

    fn push(source: &str) -> Pushdown {
        Expression::parse(source).unwrap().pushdown()
    }

    fn cond(column: Column, values: &[&str]) -> Condition {
        Condition {
            column,
            any_of: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    #[test]
    fn a_conjunction_of_equalities_is_pushed_whole() {
        assert_eq!(
            push("type = 'user.storeUser' AND ('u1' = SUBJECT AND source IN ('/a', \"/b\"))"),
            Pushdown {
                conditions: vec![
                    cond(Column::Type, &["user.storeUser"]),
                    cond(Column::Subject, &["u1"]),
                    cond(Column::Source, &["/a", "/b"]),
                ],
                complete: true,
            }
        );
    }

    #[test]
    fn conjuncts_after_the_last_or_are_pushed() {
        assert_eq!(
            push("type = 'a' OR id = 'b' AND subject = 'c' AND (source = 'd')"),
            Pushdown {
                conditions: vec![cond(Column::Subject, &["c"]), cond(Column::Source, &["d"])],
                complete: false,
            }
        );
    }

    #[test]
    fn other_conjuncts_leave_the_rest_to_the_evaluator() {
        assert_eq!(
            push("type = 't' AND myext LIKE 'a%'"),
            Pushdown {
                conditions: vec![cond(Column::Type, &["t"])],
                complete: false,
            }
        );
    }

    #[test]
    fn nothing_is_pushed_through_or_not_or_casts() {
        for source in [
            "type = 'a' OR type = 'b'",
            "type = 'a' AND subject = 'x' OR id = 'y'",
            "(type = 'a' OR id = 'b') = TRUE",
            "NOT (type = 'a')",
            "type != 'a'",
            "type NOT IN ('a')",
            "id = 5",
            "id IN ('a', 5)",
            "myext = 'a'",
            "LOWER(type) = 'a'",
            "type = subject",
            "TRUE",
        ] {
            assert_eq!(push(source), Pushdown::default(), "{source}");
        }
    }
}
