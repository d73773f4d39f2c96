//! The LIKE operator's patterns: compiled once at parse time, matched per event in linear time (§3.4.3).
//!
//! A pattern is split at its `%` wildcards into segments of fixed length
//! (characters and `_`). The first segment must match at the start of the
//! text and the last at its end; each segment between them is found at its
//! leftmost place after the one before. Leftmost is always right: an
//! earlier end leaves the rest of the pattern more text, never less. So no
//! step is ever retried, unlike the backtracking matcher this replaces,
//! which cost O(text x pattern): `'%' + '_' x 2039 + 'X'` against 24 KB
//! took 25 ms.
//!
//! Finding a segment is `str::find` (linear, two-way) when it has no `_`,
//! else a bit-parallel scan (shift-and) that handles `_` for free, at
//! ceil(segment / 64) word operations per character of text. Every match
//! reports the steps it took, which the evaluator charges to its budget.
//!
//! Written by hand rather than translated to a regex: the language has two
//! wildcards and one escape, and the `regex` crate's lazy DFA is
//! exponential on exactly such patterns (`.*.{2039}X`), falling back to a
//! slower engine.

use std::collections::HashMap;

/// One element of a compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    /// Exactly this character (case sensitive).
    Char(char),
    /// `_`: any one character.
    One,
}

/// A run of the pattern between two `%`, of a fixed number of characters.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Segment {
    parts: Vec<Part>,
    /// The text of the segment when it has no `_`, for the byte-level
    /// search.
    literal: Option<String>,
}

impl Segment {
    fn new(parts: Vec<Part>) -> Self {
        let literal = parts
            .iter()
            .map(|part| match part {
                Part::Char(c) => Some(*c),
                Part::One => None,
            })
            .collect();
        Segment { parts, literal }
    }

    fn len(&self) -> usize {
        self.parts.len()
    }

    /// Whether the segment matches `text` exactly (same length).
    fn matches_exactly(&self, text: &[char]) -> bool {
        text.len() == self.parts.len()
            && self.parts.iter().zip(text).all(|(part, c)| match part {
                Part::Char(expected) => expected == c,
                Part::One => true,
            })
    }

    /// Where the segment first occurs in `text` (in characters), with the
    /// steps the search took: shift-and, one bit per segment position.
    fn find(&self, text: &[char]) -> (Option<usize>, u64) {
        let m = self.parts.len();
        if m == 0 {
            return (Some(0), 1);
        }
        let words = m.div_ceil(64);
        // Per character: the positions it can stand at (its own and every
        // `_`); a character the segment never names can stand only at `_`.
        let mut any = vec![0u64; words];
        let mut masks: HashMap<char, Vec<u64>> = HashMap::new();
        for (i, part) in self.parts.iter().enumerate() {
            match part {
                Part::One => any[i / 64] |= 1 << (i % 64),
                Part::Char(c) => {
                    masks.entry(*c).or_insert_with(|| vec![0; words])[i / 64] |= 1 << (i % 64);
                }
            }
        }
        for mask in masks.values_mut() {
            for (word, wildcard) in mask.iter_mut().zip(&any) {
                *word |= wildcard;
            }
        }
        let last = (m - 1) / 64;
        let last_bit = 1u64 << ((m - 1) % 64);
        let mut state = vec![0u64; words];
        for (at, c) in text.iter().enumerate() {
            let mask = masks.get(c).unwrap_or(&any);
            // state = ((state << 1) | 1) & mask, across the words.
            let mut carry = 1u64;
            for (word, allowed) in state.iter_mut().zip(mask) {
                let next_carry = *word >> 63;
                *word = ((*word << 1) | carry) & allowed;
                carry = next_carry;
            }
            if state[last] & last_bit != 0 {
                let steps = (at as u64 + 1) * words as u64;
                return (Some(at + 1 - m), steps);
            }
        }
        (None, text.len() as u64 * words as u64)
    }
}

/// A LIKE pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LikePattern {
    /// The segments between `%`s, in order; one segment when the pattern
    /// has no `%`. Consecutive `%`s match what one does, so no segment but
    /// the first and the last is empty.
    segments: Vec<Segment>,
    /// True when there is no `_` anywhere: the match runs on bytes.
    literal: bool,
}

impl LikePattern {
    /// `\%` and `\_` match `%` and `_`; a backslash before anything else is an
    /// ordinary character, as is a trailing one.
    pub(crate) fn compile(pattern: &str) -> Self {
        let mut segments = Vec::new();
        let mut parts = Vec::new();
        let mut chars = pattern.chars().peekable();
        while let Some(c) = chars.next() {
            let part = match c {
                '%' => {
                    segments.push(Segment::new(std::mem::take(&mut parts)));
                    while chars.peek() == Some(&'%') {
                        chars.next();
                    }
                    continue;
                }
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
            parts.push(part);
        }
        segments.push(Segment::new(parts));
        let literal = segments.iter().all(|s| s.literal.is_some());
        LikePattern { segments, literal }
    }

    /// Whether the whole of `text` matches, and the steps it took (about
    /// the characters examined, times the words of a segment with `_`).
    /// Wildcards count characters (Unicode scalar values), not bytes.
    pub(crate) fn matches(&self, text: &str) -> (bool, u64) {
        if self.literal {
            return self.matches_bytes(text);
        }
        let chars: Vec<char> = text.chars().collect();
        let mut steps = chars.len() as u64;
        let (first, rest) = match self.segments.split_first() {
            Some(split) => split,
            None => return (text.is_empty(), steps),
        };
        let Some((last, middle)) = rest.split_last() else {
            // No `%`: the text is the one segment.
            steps += first.len() as u64;
            return (first.matches_exactly(&chars), steps);
        };
        if first.len() + last.len() > chars.len() {
            return (false, steps);
        }
        let end = chars.len() - last.len();
        steps += (first.len() + last.len()) as u64;
        if !first.matches_exactly(&chars[..first.len()]) || !last.matches_exactly(&chars[end..]) {
            return (false, steps);
        }
        let mut at = first.len();
        for segment in middle {
            let (found, taken) = segment.find(&chars[at..end]);
            steps += taken;
            match found {
                Some(offset) => at += offset + segment.len(),
                None => return (false, steps),
            }
        }
        (true, steps)
    }

    /// `matches` for a pattern without `_`: every segment is a string, so
    /// the text need not be split into characters.
    fn matches_bytes(&self, text: &str) -> (bool, u64) {
        fn literal(segment: &Segment) -> &str {
            segment.literal.as_deref().unwrap_or_default()
        }
        let mut steps = 1;
        let (first, rest) = match self.segments.split_first() {
            Some((first, rest)) => (literal(first), rest),
            None => return (text.is_empty(), steps),
        };
        let Some((last, middle)) = rest.split_last() else {
            steps += first.len() as u64;
            return (text == first, steps);
        };
        let last = literal(last);
        steps += (first.len() + last.len()) as u64;
        if first.len() + last.len() > text.len()
            || !text.starts_with(first)
            || !text.ends_with(last)
        {
            return (false, steps);
        }
        let mut rest = &text[first.len()..text.len() - last.len()];
        for segment in middle {
            let wanted = literal(segment);
            // Two-way search: linear in both lengths.
            steps += (rest.len() + wanted.len()) as u64;
            match rest.find(wanted) {
                Some(offset) => rest = &rest[offset + wanted.len()..],
                None => return (false, steps),
            }
        }
        (true, steps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn like(text: &str, pattern: &str) -> bool {
        LikePattern::compile(pattern).matches(text).0
    }

    #[test]
    fn wildcards() {
        assert!(like("abc", "a%c"));
        assert!(like("ac", "a%c"));
        assert!(like("abc", "a_c"));
        assert!(!like("ac", "a_c"));
        assert!(like("", "%"));
        assert!(like("", "%%"));
        assert!(!like("", "_"));
        assert!(like("", ""));
        assert!(!like("a", ""));
        assert!(like("aXbYbZc", "a%b%c"));
        assert!(!like("ab.cde", ".%.%."));
        assert!(!like("a", "a%a"));
        assert!(like("aa", "a%a"));
        assert!(like("abcabd", "%ab_"));
        assert!(like("xabcabdx", "%ab_%b_x"));
        assert!(!like("abc", "%b_c%"));
        assert!(like("abcd", "%b_d"));
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
        assert!(like("x日本語y", "%本_y"));
        assert!(!like("日本", "___"));
    }

    /// A segment longer than one machine word is scanned across words.
    #[test]
    fn long_segments_with_underscores_are_found() {
        let text = format!("{}a{}Xtail", "q".repeat(500), "z".repeat(130));
        assert!(like(&text, &format!("%a{}X%", "_".repeat(130))));
        assert!(!like(&text, &format!("%a{}X%", "_".repeat(129))));
        assert!(like(&text, &format!("%{}Xtail", "_".repeat(131))));
    }

    /// The pattern of the hostile filter: linear in the text now.
    #[test]
    fn a_run_of_underscores_costs_steps_linear_in_the_text() {
        let text = "0193aaaa-0000-7000-8000-000000000000".repeat(680);
        let suffix = format!("%{}X", "_".repeat(2039));
        let (matched, steps) = LikePattern::compile(&suffix).matches(&text);
        assert!(!matched);
        assert!(steps < 3 * text.len() as u64, "{steps}");
        let inner = format!("%{}X%", "_".repeat(2039));
        let (matched, steps) = LikePattern::compile(&inner).matches(&text);
        assert!(!matched);
        // ceil(2040 / 64) = 32 words per character, never 2040.
        assert!(steps <= 33 * text.len() as u64, "{steps}");
    }
}
