//! A user's display name.

/// Names are stored and emitted as given, minus surrounding whitespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserName(String);

const MAX_CHARS: usize = 256;

impl UserName {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let name = raw.trim();
        if name.is_empty() {
            return Err("name must not be empty".to_owned());
        }
        if name.chars().count() > MAX_CHARS {
            return Err(format!("name must be at most {MAX_CHARS} characters"));
        }
        if name.chars().any(char::is_control) {
            return Err("name must not contain control characters".to_owned());
        }
        Ok(UserName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_name_is_valid_and_whitespace_is_trimmed() {
        assert_eq!(
            UserName::parse("  Ozzy Osbourne ").unwrap().as_str(),
            "Ozzy Osbourne"
        );
    }

    #[test]
    fn empty_blank_long_and_control_names_are_rejected() {
        assert!(UserName::parse("").is_err());
        assert!(UserName::parse("   ").is_err());
        assert!(UserName::parse(&"a".repeat(257)).is_err());
        assert!(UserName::parse("a\u{0}b").is_err());
        assert!(UserName::parse("a\nb").is_err());
    }

    #[test]
    fn the_length_limit_counts_characters_not_bytes() {
        assert!(UserName::parse(&"ü".repeat(256)).is_ok());
    }
}
