//! Secret settings: a value read from its variable or from the file its
//! `_FILE` twin names, never printed; the bearer tokens a server accepts
//! (kept as SHA-256 digests and compared in constant time) and the one
//! token a client sends.

use crate::env::ConfigError;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Shorter tokens are refused at start: a bearer token is a password that
/// travels on every request, and 16 random characters is the least that
/// can't be guessed over the network.
pub const MIN_TOKEN_CHARS: usize = 16;

/// The tokens that open one door. Only their SHA-256 digests are kept: the
/// comparison then takes the same time whatever the lengths, and a memory
/// dump shows no token.
#[derive(Clone)]
pub struct Tokens {
    digests: Vec<[u8; 32]>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} configured)", self.digests.len())
    }
}

impl Tokens {
    /// The tokens of `NAME` (comma-separated) or of the file `NAME_FILE`
    /// (one per line), or `None` when neither is set.
    pub fn from_env(name: &str) -> Result<Option<Self>, ConfigError> {
        Self::from_lookup(name, non_empty_var)
    }

    /// As [`Tokens::from_env`], with the variables read through `lookup`.
    pub fn from_lookup(
        name: &str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, ConfigError> {
        let tokens: Vec<String> = match secret_source(name, lookup)? {
            None => return Ok(None),
            Some(Secret::Value(list)) => {
                let tokens: Vec<String> = list
                    .split(',')
                    .map(|t| t.trim().to_owned())
                    .filter(|t| !t.is_empty())
                    .collect();
                for token in &tokens {
                    check_token(name, token, "")?;
                }
                tokens
            }
            Some(Secret::File { var, text }) => {
                let mut tokens = Vec::new();
                for (n, line) in text.lines().enumerate() {
                    let token = line.trim();
                    if !token.is_empty() {
                        check_token(&var, token, &format!(" (line {})", n + 1))?;
                        tokens.push(token.to_owned());
                    }
                }
                tokens
            }
        };
        Ok((!tokens.is_empty()).then(|| Tokens::new(tokens)))
    }

    /// A set of the given tokens (already checked).
    pub fn new(tokens: impl IntoIterator<Item = impl AsRef<[u8]>>) -> Self {
        Tokens {
            digests: tokens.into_iter().map(|t| digest(t.as_ref())).collect(),
        }
    }

    /// Whether `presented` is one of the tokens. Every digest is compared,
    /// in constant time, so neither which token matched nor how much of it
    /// did shows in the answer's timing.
    pub fn accepts(&self, presented: &[u8]) -> bool {
        self.matching(presented).is_some()
    }

    /// The digest of `presented` when it is one of the tokens (compared as
    /// `accepts` does): who the request counts against in a rate limit.
    pub fn matching(&self, presented: &[u8]) -> Option<[u8; 32]> {
        let presented = digest(presented);
        let found: bool = self
            .digests
            .iter()
            .fold(subtle::Choice::from(0), |found, d| {
                found | d.ct_eq(&presented)
            })
            .into();
        found.then_some(presented)
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The token a client sends. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken(String);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(***)")
    }
}

impl BearerToken {
    /// `NAME`, or the first line of the file `NAME_FILE`; `None` when neither
    /// is set.
    pub fn from_env(name: &str) -> Result<Option<Self>, ConfigError> {
        Self::from_lookup(name, non_empty_var)
    }

    /// As [`BearerToken::from_env`], with the variables read through
    /// `lookup`.
    pub fn from_lookup(
        name: &str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, ConfigError> {
        let (var, token) = match secret_source(name, lookup)? {
            None => return Ok(None),
            Some(Secret::Value(token)) => (name.to_owned(), token.trim().to_owned()),
            Some(Secret::File { var, text }) => {
                let first = text.lines().next().unwrap_or_default().trim().to_owned();
                (var, first)
            }
        };
        check_token(&var, &token, "")?;
        Ok(Some(BearerToken(token)))
    }

    pub fn new(token: impl Into<String>) -> Self {
        BearerToken(token.into())
    }

    /// The `Authorization` header value.
    pub fn header_value(&self) -> String {
        format!("Bearer {}", self.0)
    }
}

fn non_empty_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Where a secret setting's value comes from: the variable itself, or the
/// file its `_FILE` twin names.
enum Secret {
    Value(String),
    File { var: String, text: String },
}

/// The value of `name` or the text of the file `name_FILE` names. Both set
/// is refused: neither would be the obvious winner, and a rotation that
/// left the old token in one of them would keep it valid unnoticed.
fn secret_source(
    name: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Option<Secret>, ConfigError> {
    let file_var = format!("{name}_FILE");
    let value = lookup(name).filter(|v| !v.trim().is_empty());
    let path = lookup(&file_var).filter(|v| !v.trim().is_empty());
    match (value, path) {
        (None, None) => Ok(None),
        (Some(value), None) => Ok(Some(Secret::Value(value))),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(&path).map_err(|e| ConfigError {
                name: file_var.clone(),
                value: path.clone(),
                reason: format!("cannot read the file: {e}"),
            })?;
            Ok(Some(Secret::File {
                var: file_var,
                text,
            }))
        }
        (Some(_), Some(path)) => Err(ConfigError {
            name: file_var,
            value: path,
            reason: format!("{name} is set too; set one of the two"),
        }),
    }
}

/// RFC 6750's token characters, and a length that can't be guessed. The
/// error names the variable (and `where`, such as the line of a file),
/// never the value.
fn check_token(name: &str, token: &str, place: &str) -> Result<(), ConfigError> {
    let is_token_char =
        |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~' | '+' | '/' | '=');
    let reason = if token.chars().count() < MIN_TOKEN_CHARS {
        format!("a token{place} has fewer than {MIN_TOKEN_CHARS} characters")
    } else if !token.chars().all(is_token_char) {
        format!("a token{place} holds a character other than letters, digits and - . _ ~ + / =")
    } else {
        return Ok(());
    };
    Err(ConfigError {
        name: name.to_owned(),
        value: "***".to_owned(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_configured_tokens_are_accepted() {
        let tokens = Tokens::new(["first-token-0123456789", "second-token-0123456789"]);
        assert!(tokens.accepts(b"first-token-0123456789"));
        assert!(tokens.accepts(b"second-token-0123456789"));
        assert!(!tokens.accepts(b"first-token-012345678"));
        assert!(!tokens.accepts(b""));
    }

    #[test]
    fn short_or_odd_tokens_are_refused_without_echoing_them() {
        let err = check_token("INGEST_TOKENS", "short", "").unwrap_err();
        assert!(!err.to_string().contains("short"), "{err}");
        assert!(check_token("T", "has a space in it, long", "").is_err());
        assert!(check_token("T", "abcdefghijklmnop", "").is_ok());
    }

    /// A lookup over the given variables, as the environment would be.
    fn vars<'a>(list: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            list.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn a_bad_token_names_the_variable_it_came_from() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens");
        std::fs::write(&file, "a-good-long-token-0123\nshort\n").unwrap();
        let path = file.display().to_string();
        let err = Tokens::from_lookup("INGEST_TOKENS", vars(&[("INGEST_TOKENS_FILE", &path)]))
            .unwrap_err();
        assert_eq!(err.name, "INGEST_TOKENS_FILE", "{err}");
        assert!(err.reason.contains("line 2"), "{err}");
        let err = BearerToken::from_lookup("AUDIT_TOKEN", vars(&[("AUDIT_TOKEN_FILE", &path)]));
        assert!(err.is_ok(), "the first line is the token");
        std::fs::write(&file, "short\n").unwrap();
        let err = BearerToken::from_lookup("AUDIT_TOKEN", vars(&[("AUDIT_TOKEN_FILE", &path)]))
            .unwrap_err();
        assert_eq!(err.name, "AUDIT_TOKEN_FILE", "{err}");
    }

    #[test]
    fn a_variable_and_its_file_twin_together_are_refused_naming_both() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens");
        std::fs::write(&file, "a-good-long-token-0123\n").unwrap();
        let path = file.display().to_string();
        let both = [
            ("READ_TOKENS", "another-long-token-0123"),
            ("READ_TOKENS_FILE", path.as_str()),
        ];
        let err = Tokens::from_lookup("READ_TOKENS", vars(&both)).unwrap_err();
        assert_eq!(err.name, "READ_TOKENS_FILE", "{err}");
        assert!(err.reason.contains("READ_TOKENS"), "{err}");
        assert!(!err.to_string().contains("another-long-token"), "{err}");
        let both = [
            ("AUDIT_TOKEN", "another-long-token-0123"),
            ("AUDIT_TOKEN_FILE", path.as_str()),
        ];
        let err = BearerToken::from_lookup("AUDIT_TOKEN", vars(&both)).unwrap_err();
        assert_eq!(err.name, "AUDIT_TOKEN_FILE", "{err}");
    }

    #[test]
    fn debug_never_shows_a_token() {
        let shown = format!(
            "{:?} {:?}",
            Tokens::new(["secret-secret-secret"]),
            BearerToken::new("secret-secret-secret")
        );
        assert!(!shown.contains("secret"), "{shown}");
    }
}
