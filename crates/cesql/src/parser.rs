//! Turns tokens into the expression tree, with the spec's precedence (§3.6) and byte-exact errors.
//!
//! Hand-written precedence climbing (a Pratt parser) instead of a parser
//! generator: the grammar is a dozen rules, and three of its details are
//! easier to get exactly right in plain code than to express in pest or
//! lalrpop: a sign is part of an integer literal only when it touches the
//! digits and stands where an operand starts (`-2147483648` is a literal,
//! `4 -1` a subtraction); keywords are case-insensitive while attribute names
//! and function names differ in the characters they allow; and every error
//! names the byte where it happened. It also costs the 2-core build nothing.

use crate::ast::{BinaryOp, Node};
use crate::error::ParseError;
use crate::functions::Builtin;
use crate::lexer::{tokenize, Keyword, Tok, Token};
use crate::like::LikePattern;
use crate::value::Value;

/// How deep an expression may nest: parentheses, prefix operators, function
/// calls and operators of different precedence all count one level each.
/// Parsing and evaluation recurse once per level, so the bound keeps a
/// hostile filter such as ten thousand `(` or `NOT`s from overflowing the
/// stack; in an unoptimised build the deepest expression needs about 0.5 MiB
/// (a test checks it runs on a 1 MiB stack). A chain of operators of one
/// level (`a OR b OR c ...`) is a single level however long it is.
pub const MAX_DEPTH: usize = 64;

/// Binding powers, lowest first. AND, OR and XOR share one level and group
/// to the left, as §3.6 says ("left to right when the precedence is equal"):
/// `a OR b AND c` is `(a OR b) AND c`, unlike SQL.
const LOGIC: u8 = 1;
const COMPARISON: u8 = 3;
const ADDITIVE: u8 = 5;
const MULTIPLICATIVE: u8 = 7;
const IN: u8 = 9;
const LIKE: u8 = 10;
/// The operand of NOT and unary minus binds tighter than any operator, so
/// `NOT a = b` is `(NOT a) = b` and `-x LIKE 'p'` is `(-x) LIKE 'p'` (§3.6).
const PREFIX: u8 = 11;

/// A parsed subtree and its depth.
type Parsed = (Node, usize);

pub(crate) fn parse(source: &str) -> Result<Node, ParseError> {
    let lexed = tokenize(source)?;
    let mut parser = Parser {
        source,
        tokens: lexed.tokens,
        strings: lexed.strings,
        pos: 0,
        nesting: 0,
    };
    let (node, _) = parser.expression(0)?;
    let next = parser.peek();
    if next.tok != Tok::Eof {
        return Err(parser.unexpected(next, "an operator or the end of the expression"));
    }
    Ok(node)
}

struct Parser<'s> {
    source: &'s str,
    tokens: Vec<Token>,
    strings: Vec<String>,
    pos: usize,
    /// How many `expression` calls are open.
    nesting: usize,
}

impl<'s> Parser<'s> {
    fn peek(&self) -> Token {
        self.peek_at(0)
    }

    /// The token `ahead` places after the current one. The list ends with
    /// `Eof`, and looking past it keeps returning `Eof`.
    fn peek_at(&self, ahead: usize) -> Token {
        let last = self.tokens.len().saturating_sub(1);
        self.tokens[(self.pos + ahead).min(last)]
    }

    fn advance(&mut self) -> Token {
        let token = self.peek();
        if token.tok != Tok::Eof {
            self.pos += 1;
        }
        token
    }

    fn text(&self, token: Token) -> &'s str {
        token.text(self.source)
    }

    fn string(&mut self, index: usize) -> String {
        self.strings
            .get_mut(index)
            .map(std::mem::take)
            .unwrap_or_default()
    }

    // Errors are built out of line (cold, never inlined): the parser recurses
    // once per nesting level, and formatting code inlined into the recursive
    // functions would grow every one of their stack frames.

    #[cold]
    #[inline(never)]
    fn error(&self, at: Token, message: String) -> ParseError {
        ParseError::at(self.source, at.start, message)
    }

    #[cold]
    #[inline(never)]
    fn unexpected(&self, token: Token, expected: &str) -> ParseError {
        let found = match token.tok {
            Tok::Eof => "the end of the expression".to_owned(),
            Tok::Str(_) => "a string literal".to_owned(),
            Tok::Keyword(_) => format!("the keyword {}", self.text(token).to_ascii_uppercase()),
            _ => format!("`{}`", self.text(token)),
        };
        self.error(token, format!("expected {expected}, found {found}"))
    }

    #[cold]
    #[inline(never)]
    fn too_deep(&self, at: Token) -> ParseError {
        self.error(
            at,
            format!("the expression nests more than {MAX_DEPTH} levels deep"),
        )
    }

    fn expect(&mut self, tok: Tok, expected: &str) -> Result<Token, ParseError> {
        let token = self.advance();
        if token.tok == tok {
            Ok(token)
        } else {
            Err(self.unexpected(token, expected))
        }
    }

    fn deeper(&self, at: Token, children: &[usize]) -> Result<usize, ParseError> {
        let depth = children.iter().copied().max().unwrap_or(0) + 1;
        if depth > MAX_DEPTH {
            return Err(self.too_deep(at));
        }
        Ok(depth)
    }

    /// Parses operators whose binding power is at least `min`.
    fn expression(&mut self, min: u8) -> Result<Parsed, ParseError> {
        self.nesting += 1;
        if self.nesting > MAX_DEPTH {
            return Err(self.too_deep(self.peek()));
        }
        let result = self.expression_inner(min);
        self.nesting -= 1;
        result
    }

    fn expression_inner(&mut self, min: u8) -> Result<Parsed, ParseError> {
        let mut left = self.operand()?;
        loop {
            let token = self.peek();
            // `NOT` after an operand can only start `NOT LIKE` or `NOT IN`.
            let negated = token.tok == Tok::Keyword(Keyword::Not);
            let postfix = if negated { self.peek_at(1) } else { token };
            let power = match postfix.tok {
                Tok::Keyword(Keyword::Like) => LIKE,
                Tok::Keyword(Keyword::In) => IN,
                _ => 0,
            };
            if power != 0 {
                if power < min {
                    break;
                }
                self.pos += if negated { 2 } else { 1 };
                left = if power == LIKE {
                    self.like(left, negated, postfix)?
                } else {
                    self.in_set(left, negated, postfix)?
                };
                continue;
            }
            let Some((op, power)) = binary_operator(token.tok) else {
                break;
            };
            if power < min {
                break;
            }
            self.advance();
            // Left-associative: the right side takes only tighter operators.
            let right = self.expression(power + 1)?;
            left = self.chain(left, op, right, token)?;
        }
        Ok(left)
    }

    /// `left op right`: appended to `left` when it is a chain of the same
    /// level (which is what grouping to the left means), else a new chain.
    fn chain(
        &self,
        (left, depth): Parsed,
        op: BinaryOp,
        (right, right_depth): Parsed,
        at: Token,
    ) -> Result<Parsed, ParseError> {
        match left {
            Node::Chain { first, mut rest }
                if rest.first().is_some_and(|(o, _)| o.level() == op.level()) =>
            {
                let depth = depth.max(self.deeper(at, &[right_depth])?);
                rest.push((op, right));
                Ok((Node::Chain { first, rest }, depth))
            }
            left => {
                let depth = self.deeper(at, &[depth, right_depth])?;
                let rest = vec![(op, right)];
                Ok((
                    Node::Chain {
                        first: Box::new(left),
                        rest,
                    },
                    depth,
                ))
            }
        }
    }

    /// The pattern must be a string literal (§3.4.3); it is compiled here, once.
    fn like(
        &mut self,
        (operand, depth): Parsed,
        negated: bool,
        at: Token,
    ) -> Result<Parsed, ParseError> {
        let token = self.advance();
        let Tok::Str(index) = token.tok else {
            return Err(self.unexpected(
                token,
                "a string literal (the pattern after LIKE must be one)",
            ));
        };
        let pattern = LikePattern::compile(&self.string(index));
        let depth = self.deeper(at, &[depth])?;
        let operand = Box::new(operand);
        Ok((
            Node::Like {
                operand,
                pattern,
                negated,
            },
            depth,
        ))
    }

    fn in_set(
        &mut self,
        (operand, depth): Parsed,
        negated: bool,
        at: Token,
    ) -> Result<Parsed, ParseError> {
        self.expect(Tok::LParen, "`(` opening the set of values after IN")?;
        if self.peek().tok == Tok::RParen {
            return Err(self.unexpected(self.peek(), "a value (the set after IN cannot be empty)"));
        }
        let (set, set_depth) = self.list()?;
        let depth = self.deeper(at, &[depth, set_depth])?;
        let operand = Box::new(operand);
        Ok((
            Node::In {
                operand,
                set,
                negated,
            },
            depth,
        ))
    }

    /// `expression (, expression)* )`, the opening parenthesis already read.
    fn list(&mut self) -> Result<(Vec<Node>, usize), ParseError> {
        let mut items = Vec::new();
        let mut depth = 0;
        loop {
            let (item, item_depth) = self.expression(0)?;
            items.push(item);
            depth = depth.max(item_depth);
            let token = self.advance();
            match token.tok {
                Tok::Comma => continue,
                Tok::RParen => return Ok((items, depth)),
                _ => return Err(self.unexpected(token, "`,` or `)`")),
            }
        }
    }

    /// What can start an expression: a literal, an attribute, a function
    /// call, EXISTS, a prefix operator or a parenthesised expression.
    fn operand(&mut self) -> Result<Parsed, ParseError> {
        let token = self.advance();
        match token.tok {
            Tok::LParen => {
                let inner = self.expression(0)?;
                self.expect(Tok::RParen, "`)`")?;
                Ok(inner)
            }
            Tok::Minus | Tok::Plus => self.sign(token),
            Tok::Digits => self.integer(token, token.end),
            Tok::Str(index) => Ok((Node::Literal(Value::String(self.string(index))), 1)),
            Tok::Keyword(Keyword::True) => Ok((Node::Literal(Value::Boolean(true)), 1)),
            Tok::Keyword(Keyword::False) => Ok((Node::Literal(Value::Boolean(false)), 1)),
            Tok::Keyword(Keyword::Not) => {
                let (inner, depth) = self.expression(PREFIX)?;
                let depth = self.deeper(token, &[depth])?;
                Ok((Node::Not(Box::new(inner)), depth))
            }
            Tok::Keyword(Keyword::Exists) => {
                let name = self.advance();
                if name.tok != Tok::Word {
                    return Err(self.unexpected(name, "an attribute name after EXISTS"));
                }
                Ok((Node::Exists(self.attribute_name(name)?), 1))
            }
            Tok::Word if self.peek().tok == Tok::LParen => self.call(token),
            Tok::Word => Ok((Node::Attribute(self.attribute_name(token)?), 1)),
            _ => Err(self.unexpected(token, "an expression")),
        }
    }

    /// A sign where an operand starts: part of an integer literal when it
    /// touches the digits (§2.2), else unary minus; there is no unary plus.
    fn sign(&mut self, sign: Token) -> Result<Parsed, ParseError> {
        let next = self.peek();
        if next.tok == Tok::Digits && next.start == sign.end {
            self.advance();
            return self.integer(sign, next.end);
        }
        if sign.tok == Tok::Plus {
            return Err(self.error(
                sign,
                "`+` must touch the digits of an integer literal (there is no unary plus)".into(),
            ));
        }
        let (inner, depth) = self.expression(PREFIX)?;
        let depth = self.deeper(sign, &[depth])?;
        Ok((Node::Negate(Box::new(inner)), depth))
    }

    /// An integer literal from `start` (its sign or first digit) to `end`.
    fn integer(&self, start: Token, end: usize) -> Result<Parsed, ParseError> {
        let text = self.source.get(start.start..end).unwrap_or_default();
        match text.parse::<i32>() {
            Ok(i) => Ok((Node::Literal(Value::Integer(i)), 1)),
            Err(_) => Err(self.error(
                start,
                format!("the integer literal {text} does not fit in 32 bits"),
            )),
        }
    }

    /// Attribute names are letters and digits (the CloudEvents naming rule).
    /// They are matched case-insensitively, as the TCK expects of
    /// `EXISTS SOURCE`; CloudEvents names are lower case, so lower-casing the
    /// reference is enough.
    fn attribute_name(&self, token: Token) -> Result<String, ParseError> {
        let text = self.text(token);
        if let Some(bad) = text.find(|c: char| !c.is_ascii_alphanumeric()) {
            return Err(self.error(
                Token {
                    start: token.start + bad,
                    ..token
                },
                format!(
                    "`{text}` is not an attribute name: names are letters and digits only \
                     (or is a `(` missing after a function name?)"
                ),
            ));
        }
        Ok(text.to_ascii_lowercase())
    }

    /// Function names are a letter then letters and underscores.
    fn call(&mut self, name_token: Token) -> Result<Parsed, ParseError> {
        let text = self.text(name_token);
        let valid = text.starts_with(|c: char| c.is_ascii_alphabetic())
            && text.chars().all(|c| c.is_ascii_alphabetic() || c == '_');
        if !valid {
            return Err(self.error(
                name_token,
                format!("`{text}` is not a function name: names are letters and underscores"),
            ));
        }
        self.advance(); // the `(`, which `operand` looked at.
        let (args, depth) = if self.peek().tok == Tok::RParen {
            self.advance();
            (Vec::new(), 0)
        } else {
            self.list()?
        };
        let depth = self.deeper(name_token, &[depth])?;
        let name = text.to_ascii_uppercase();
        let function = Builtin::resolve(&name, args.len());
        Ok((
            Node::Call {
                name,
                function,
                args,
                at: name_token.start,
            },
            depth,
        ))
    }
}

fn binary_operator(tok: Tok) -> Option<(BinaryOp, u8)> {
    Some(match tok {
        Tok::Star => (BinaryOp::Mul, MULTIPLICATIVE),
        Tok::Slash => (BinaryOp::Div, MULTIPLICATIVE),
        Tok::Percent => (BinaryOp::Mod, MULTIPLICATIVE),
        Tok::Plus => (BinaryOp::Add, ADDITIVE),
        Tok::Minus => (BinaryOp::Sub, ADDITIVE),
        Tok::Eq => (BinaryOp::Eq, COMPARISON),
        Tok::NotEq => (BinaryOp::NotEq, COMPARISON),
        Tok::Lt => (BinaryOp::Lt, COMPARISON),
        Tok::Le => (BinaryOp::Le, COMPARISON),
        Tok::Gt => (BinaryOp::Gt, COMPARISON),
        Tok::Ge => (BinaryOp::Ge, COMPARISON),
        Tok::Keyword(Keyword::And) => (BinaryOp::And, LOGIC),
        Tok::Keyword(Keyword::Or) => (BinaryOp::Or, LOGIC),
        Tok::Keyword(Keyword::Xor) => (BinaryOp::Xor, LOGIC),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(source: &str) -> Node {
        parse(source).unwrap_or_else(|e| panic!("{source:?}: {e}"))
    }

    fn err(source: &str) -> ParseError {
        parse(source).expect_err(source)
    }

    fn chain(first: Node, rest: Vec<(BinaryOp, Node)>) -> Node {
        Node::Chain {
            first: Box::new(first),
            rest,
        }
    }

    fn bin(op: BinaryOp, left: Node, right: Node) -> Node {
        chain(left, vec![(op, right)])
    }

    fn attr(name: &str) -> Node {
        Node::Attribute(name.into())
    }

    fn int(i: i32) -> Node {
        Node::Literal(Value::Integer(i))
    }

    #[test]
    fn logic_operators_share_a_level_and_group_left() {
        assert_eq!(
            p("a OR b AND c"),
            chain(
                attr("a"),
                vec![(BinaryOp::Or, attr("b")), (BinaryOp::And, attr("c"))]
            )
        );
        assert_eq!(
            p("a OR (b AND c)"),
            bin(
                BinaryOp::Or,
                attr("a"),
                bin(BinaryOp::And, attr("b"), attr("c"))
            )
        );
    }

    #[test]
    fn a_lower_level_operator_starts_a_new_chain() {
        assert_eq!(
            p("1 - 2 + 3 = 4 AND x"),
            bin(
                BinaryOp::And,
                bin(
                    BinaryOp::Eq,
                    chain(
                        int(1),
                        vec![(BinaryOp::Sub, int(2)), (BinaryOp::Add, int(3))]
                    ),
                    int(4)
                ),
                attr("x")
            )
        );
    }

    #[test]
    fn arithmetic_binds_tighter_than_comparison() {
        assert_eq!(
            p("a + 2 * 3 = 7"),
            bin(
                BinaryOp::Eq,
                bin(BinaryOp::Add, attr("a"), bin(BinaryOp::Mul, int(2), int(3))),
                int(7)
            )
        );
    }

    #[test]
    fn not_binds_to_its_operand_only() {
        assert_eq!(
            p("NOT a = b"),
            bin(BinaryOp::Eq, Node::Not(Box::new(attr("a"))), attr("b"))
        );
    }

    #[test]
    fn a_touching_sign_is_part_of_the_literal() {
        assert_eq!(p("-2147483648"), int(i32::MIN));
        assert_eq!(p("+5"), int(5));
        assert_eq!(p("4 -1"), bin(BinaryOp::Sub, int(4), int(1)));
        assert_eq!(p("- 5"), Node::Negate(Box::new(int(5))));
        assert_eq!(p("--10"), Node::Negate(Box::new(int(-10))));
    }

    #[test]
    fn keywords_and_names_ignore_case() {
        assert_eq!(p("ExIsTs SOURCE"), Node::Exists("source".into()));
        assert_eq!(
            p("concat_ws(',', MyExt)"),
            Node::Call {
                name: "CONCAT_WS".into(),
                function: Some(Builtin::ConcatWs),
                args: vec![Node::Literal(Value::String(",".into())), attr("myext")],
                at: 0,
            }
        );
    }

    #[test]
    fn an_unknown_function_parses_and_fails_later() {
        assert!(matches!(p("NOPE(1)"), Node::Call { function: None, .. }));
    }

    #[test]
    fn errors_name_the_place() {
        let e = err("ABC(");
        assert_eq!((e.offset, e.column), (4, 5));
        assert_eq!(
            e.message,
            "expected an expression, found the end of the expression"
        );

        let e = err("x LIKE 123");
        assert_eq!((e.offset, e.column), (7, 8));
        assert!(e.message.contains("the pattern after LIKE"), "{e}");

        let e = err("a = 1 b");
        assert_eq!(e.offset, 6);

        let e = err("(a = 1");
        assert_eq!(e.offset, 6);
        assert_eq!(e.message, "expected `)`, found the end of the expression");

        let e = err("x IN ()");
        assert_eq!(e.offset, 6);

        let e = err("my_ext = 1");
        assert_eq!((e.offset, e.column), (2, 3));

        let e = err("2147483648");
        assert_eq!(e.offset, 0);
        assert!(e.message.contains("32 bits"), "{e}");

        let e = err("1 + +x");
        assert_eq!(e.offset, 4);

        let e = err("EXISTS AND");
        assert_eq!(e.offset, 7);

        let e = err("a NOT b");
        assert_eq!(e.offset, 2);

        let e = err("");
        assert_eq!((e.offset, e.column), (0, 1));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let parens = format!("{}1{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(err(&parens).message.contains("nests"));
        let nots = format!("{}TRUE", "NOT ".repeat(10_000));
        assert!(err(&nots).message.contains("nests"));
        let calls = format!("{}1{}", "ABS(".repeat(10_000), ")".repeat(10_000));
        assert!(err(&calls).message.contains("nests"));
        // Operators of one level form a flat chain, whatever its length.
        parse(&vec!["a = 'x'"; 10_000].join(" OR ")).unwrap();
        parse(&vec!["1"; 10_000].join(" - ")).unwrap();
    }
}
