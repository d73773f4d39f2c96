//! Finds, before any event is seen, the calls the spec leaves to fail at evaluation: unknown functions and wrong arities.
//!
//! CESQL parses `NOPE(1)` and `LEFT('a')`, and makes each a MissingFunction
//! error every time it is evaluated (§3.3), so such a filter silently matches
//! nothing. A service that takes filters from people would rather say so when
//! the filter arrives; [`crate::Expression::validate`] does, with the place.

use crate::ast::Node;
use crate::error::ParseError;
use crate::functions::Builtin;

/// The call to a missing function that comes first in the text, as an error
/// at its name.
pub(crate) fn first_missing_function(root: &Node, source: &str) -> Option<ParseError> {
    // An explicit stack rather than recursion: nesting is bounded by the
    // parser, but a flat chain can hold thousands of operands.
    let mut stack = vec![root];
    let mut first: Option<(usize, &str, usize)> = None;
    while let Some(node) = stack.pop() {
        match node {
            Node::Literal(_) | Node::Attribute(_) | Node::Exists(_) => {}
            Node::Not(inner) | Node::Negate(inner) => stack.push(inner),
            Node::Chain { first, rest } => {
                stack.push(first);
                stack.extend(rest.iter().map(|(_, operand)| operand));
            }
            Node::Like { operand, .. } => stack.push(operand),
            Node::In { operand, set, .. } => {
                stack.push(operand);
                stack.extend(set);
            }
            Node::Call {
                name,
                function,
                args,
                at,
            } => {
                if function.is_none() && first.is_none_or(|(seen, _, _)| *at < seen) {
                    first = Some((*at, name, args.len()));
                }
                stack.extend(args);
            }
        }
    }
    let (at, name, arity) = first?;
    let message = match Builtin::arities(name) {
        Some(takes) => format!("{name} takes {takes}, not {arity}"),
        None => format!("there is no function {name}"),
    };
    Some(ParseError::at(source, at, message))
}

#[cfg(test)]
mod tests {
    use crate::Expression;

    fn check(source: &str) -> Result<(), (usize, String)> {
        Expression::parse(source)
            .unwrap()
            .validate()
            .map_err(|e| (e.column, e.message))
    }

    #[test]
    fn known_functions_with_their_arities_pass() {
        for source in [
            "LENGTH(type) > 3",
            "concat() = '' AND CONCAT('a', 'b', 'c') = 'abc'",
            "CONCAT_WS(',') = '' AND substring(id, 2) = SUBSTRING(id, 2, 10)",
            "IS_INT(x) OR BOOL('true')",
            "type = 'x'",
        ] {
            assert_eq!(check(source), Ok(()), "{source}");
        }
    }

    #[test]
    fn an_unknown_function_is_named_at_its_place() {
        assert_eq!(
            check("type = 'a' AND nope(1)"),
            Err((16, "there is no function NOPE".into()))
        );
    }

    #[test]
    fn a_wrong_arity_says_what_the_function_takes() {
        assert_eq!(
            check("LEFT(id) = 'a'"),
            Err((1, "LEFT takes 2 arguments, not 1".into()))
        );
        assert_eq!(
            check("x = 1 OR SUBSTRING('a') = ''"),
            Err((10, "SUBSTRING takes 2 or 3 arguments, not 1".into()))
        );
        assert_eq!(
            check("CONCAT_WS() = ''"),
            Err((1, "CONCAT_WS takes at least 1 argument, not 0".into()))
        );
    }

    #[test]
    fn the_first_missing_call_in_the_text_is_reported_even_when_nested() {
        assert_eq!(
            check("UPPER(LOWER(nope(a))) = b(1)"),
            Err((13, "there is no function NOPE".into()))
        );
        assert_eq!(
            check("'é' = x AND x IN (1, ABS())"),
            Err((22, "ABS takes 1 argument, not 0".into()))
        );
    }
}
