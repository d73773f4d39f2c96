//! Splits CESQL text into tokens with their byte spans (the grammar's terminals, §2).

use crate::error::ParseError;

/// Tokens are `Copy` and small: the parser recurses once per nesting level,
/// and its stack frames stay small when it holds no owned data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tok {
    LParen,
    RParen,
    Comma,
    Eq,
    /// `!=` or `<>`.
    NotEq,
    Lt,
    Le,
    Gt,
    Ge,
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    /// A string literal: its index in [`Tokens::strings`], escapes resolved.
    Str(usize),
    /// A run of ASCII digits, unsigned: the parser folds a sign in front of it.
    Digits,
    /// One of the keywords, in any letter case.
    Keyword(Keyword),
    /// Any other run of letters, digits and underscores: an attribute name or
    /// a function name, told apart by the parser.
    Word,
    Eof,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keyword {
    And,
    Or,
    Xor,
    Not,
    Like,
    In,
    Exists,
    True,
    False,
}

const KEYWORDS: [(&str, Keyword); 9] = [
    ("AND", Keyword::And),
    ("OR", Keyword::Or),
    ("XOR", Keyword::Xor),
    ("NOT", Keyword::Not),
    ("LIKE", Keyword::Like),
    ("IN", Keyword::In),
    ("EXISTS", Keyword::Exists),
    ("TRUE", Keyword::True),
    ("FALSE", Keyword::False),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Token {
    pub(crate) tok: Tok,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

impl Token {
    pub(crate) fn text<'s>(&self, source: &'s str) -> &'s str {
        source.get(self.start..self.end).unwrap_or_default()
    }
}

/// The tokens of a text, ending with [`Tok::Eof`], and the values of its
/// string literals.
#[derive(Debug)]
pub(crate) struct Tokens {
    pub(crate) tokens: Vec<Token>,
    pub(crate) strings: Vec<String>,
}

pub(crate) fn tokenize(source: &str) -> Result<Tokens, ParseError> {
    let bytes = source.as_bytes();
    let mut tokens = Vec::new();
    let mut strings = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        let two = |next: u8| bytes.get(i + 1) == Some(&next);
        let (tok, len) = match b {
            b'(' => (Tok::LParen, 1),
            b')' => (Tok::RParen, 1),
            b',' => (Tok::Comma, 1),
            b'=' => (Tok::Eq, 1),
            b'!' if two(b'=') => (Tok::NotEq, 2),
            b'<' if two(b'>') => (Tok::NotEq, 2),
            b'<' if two(b'=') => (Tok::Le, 2),
            b'<' => (Tok::Lt, 1),
            b'>' if two(b'=') => (Tok::Ge, 2),
            b'>' => (Tok::Gt, 1),
            b'+' => (Tok::Plus, 1),
            b'-' => (Tok::Minus, 1),
            b'*' => (Tok::Star, 1),
            b'/' => (Tok::Slash, 1),
            b'%' => (Tok::Percent, 1),
            b'\'' | b'"' => {
                let (text, len) = string_literal(source, start)?;
                strings.push(text);
                (Tok::Str(strings.len() - 1), len)
            }
            b if b.is_ascii_alphanumeric() || b == b'_' => {
                let len = bytes[start..]
                    .iter()
                    .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
                    .count();
                let word = &source[start..start + len];
                let tok = if word.bytes().all(|c| c.is_ascii_digit()) {
                    Tok::Digits
                } else if let Some((_, k)) =
                    KEYWORDS.iter().find(|(k, _)| k.eq_ignore_ascii_case(word))
                {
                    Tok::Keyword(*k)
                } else {
                    Tok::Word
                };
                (tok, len)
            }
            _ => {
                let c = source[start..].chars().next().unwrap_or('?');
                return Err(ParseError::at(
                    source,
                    start,
                    format!("unexpected character {c:?}"),
                ));
            }
        };
        i += len;
        tokens.push(Token { tok, start, end: i });
    }
    tokens.push(Token {
        tok: Tok::Eof,
        start: source.len(),
        end: source.len(),
    });
    Ok(Tokens { tokens, strings })
}

/// Reads the literal opening at `start`; returns its value and its length in
/// bytes, quotes included.
///
/// The grammar (§2.2) lets a backslash escape only the delimiting quote: in
/// `'...'` the pair `\'` stands for `'`, in `"..."` the pair `\"` stands for
/// `"`. Every other backslash is kept as written, because the LIKE operator
/// gives `\%` and `\_` their own meaning and must see them. A backslash still
/// pairs with the character after it while scanning, so `'a\\'` ends at its
/// last quote, as in the reference grammar.
fn string_literal(source: &str, start: usize) -> Result<(String, usize), ParseError> {
    let quote = source[start..].chars().next().unwrap_or('\'');
    let mut value = String::new();
    let mut chars = source[start + 1..].char_indices();
    while let Some((i, c)) = chars.next() {
        if c == quote {
            return Ok((value, i + 2));
        }
        if c == '\\' {
            match chars.next() {
                Some((_, next)) if next == quote => value.push(quote),
                Some((_, next)) => {
                    value.push('\\');
                    value.push(next);
                }
                None => break,
            }
        } else {
            value.push(c);
        }
    }
    Err(ParseError::at(source, start, "unterminated string literal"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(source: &str) -> Vec<Tok> {
        tokenize(source)
            .unwrap()
            .tokens
            .into_iter()
            .map(|t| t.tok)
            .collect()
    }

    fn string(source: &str) -> String {
        tokenize(source).unwrap().strings.remove(0)
    }

    #[test]
    fn operators_take_the_longest_match() {
        assert_eq!(
            toks("<><=>=<>!==-"),
            vec![
                Tok::NotEq,
                Tok::Le,
                Tok::Ge,
                Tok::NotEq,
                Tok::NotEq,
                Tok::Eq,
                Tok::Minus,
                Tok::Eof
            ]
        );
    }

    #[test]
    fn only_the_delimiting_quote_is_unescaped() {
        assert_eq!(string(r#"'a"b\'c'"#), r#"a"b'c"#);
        assert_eq!(string(r#""a'b\"c""#), r#"a'b"c"#);
        assert_eq!(string(r"'a\_b\%c\\'"), r"a\_b\%c\\");
        assert_eq!(string(r#"'\"'"#), r#"\""#);
    }

    #[test]
    fn digits_keywords_and_words_are_told_apart() {
        assert_eq!(
            toks("123 1a2 a_b oR Orange"),
            vec![
                Tok::Digits,
                Tok::Word,
                Tok::Word,
                Tok::Keyword(Keyword::Or),
                Tok::Word,
                Tok::Eof
            ]
        );
    }

    #[test]
    fn an_unterminated_string_points_at_its_opening_quote() {
        let err = tokenize(r"x = 'abc\'").unwrap_err();
        assert_eq!((err.offset, err.column), (4, 5));
        assert!(err.message.contains("unterminated"));
    }

    #[test]
    fn a_stray_character_is_reported_where_it_is() {
        let err = tokenize("a = ü").unwrap_err();
        assert_eq!((err.offset, err.column), (4, 5));
        assert_eq!(err.message, "unexpected character 'ü'");
    }
}
