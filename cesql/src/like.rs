//! The LIKE operator's patterns: compiled once at parse time, matched per event (§3.4.3).

/// One element of a compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    /// Exactly this character (case sensitive).
    Char(char),
    /// `_`: any one character.
    One,
    /// `%`: any run of characters, the empty one included.
    Any,
}

/// A LIKE pattern. Written by hand rather than translated to a regex: the
/// language has two wildcards and one escape, and matching them directly keeps
/// a regex engine out of the dependencies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LikePattern {
    parts: Vec<Part>,
}

impl LikePattern {
    /// `\%` and `\_` match `%` and `_`; a backslash before anything else is an
    /// ordinary character, as is a trailing one.
    pub(crate) fn compile(pattern: &str) -> Self {
        let mut parts = Vec::new();
        let mut chars = pattern.chars().peekable();
        while let Some(c) = chars.next() {
            let part = match c {
                '%' => Part::Any,
                '_' => Part::One,
                '\\' => match chars.peek() {
                    Some(&escaped @ ('%' | '_')) => {
                        chars.next();
                        Part::Char(escaped)
                    }
                    _ => Part::Char('\\'),
                },
                c => Part::Char(c),
            };
            // Consecutive `%` match what one does; keeping one bounds the
            // backtracking below.
            if !(part == Part::Any && parts.last() == Some(&Part::Any)) {
                parts.push(part);
            }
        }
        LikePattern { parts }
    }

    /// Whether the whole of `text` matches. Wildcards count characters
    /// (Unicode scalar values), not bytes.
    ///
    /// Greedy matching that, on a mismatch, backtracks only to the latest `%`:
    /// an earlier `%` could never let the rest match where the latest one
    /// could not, so the cost stays O(pattern x text) rather than exponential.
    pub(crate) fn matches(&self, text: &str) -> bool {
        let text: Vec<char> = text.chars().collect();
        let parts = &self.parts;
        let (mut t, mut p) = (0, 0);
        // Where the latest `%` is in the pattern, and where in the text the run
        // it stands for currently ends.
        let mut backtrack: Option<(usize, usize)> = None;
        while t < text.len() {
            match parts.get(p) {
                Some(Part::Any) => {
                    backtrack = Some((p, t));
                    p += 1;
                }
                Some(Part::One) => {
                    t += 1;
                    p += 1;
                }
                Some(Part::Char(c)) if *c == text[t] => {
                    t += 1;
                    p += 1;
                }
                _ => match backtrack {
                    Some((star, run_end)) => {
                        backtrack = Some((star, run_end + 1));
                        p = star + 1;
                        t = run_end + 1;
                    }
                    None => return false,
                },
            }
        }
        parts[p..].iter().all(|part| *part == Part::Any)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn like(text: &str, pattern: &str) -> bool {
        LikePattern::compile(pattern).matches(text)
    }

    #[test]
    fn wildcards() {
        assert!(like("abc", "a%c"));
        assert!(like("ac", "a%c"));
        assert!(like("abc", "a_c"));
        assert!(!like("ac", "a_c"));
        assert!(like("", "%"));
        assert!(!like("", "_"));
        assert!(like("", ""));
        assert!(!like("a", ""));
        assert!(like("aXbYbZc", "a%b%c"));
        assert!(!like("ab.cde", ".%.%."));
    }

    #[test]
    fn escapes() {
        assert!(like("a%c", r"a\%c"));
        assert!(!like("abc", r"a\%c"));
        assert!(like("a_c", r"a\_c"));
        assert!(!like("abc", r"a\_c"));
        assert!(like(r"a\c", r"a\c"));
        assert!(like(r"ab\", r"ab\"));
    }

    #[test]
    fn matching_is_case_sensitive_and_counts_characters() {
        assert!(!like("aBc", "abc"));
        assert!(like("héllo", "h_llo"));
        assert!(like("日本", "__"));
    }
}
