//! Bearer tokens: the sets a server accepts, compared in constant time, and
//! the one token a client sends, both read from the environment (or a file)
//! and never printed.

use crate::config::ConfigError;
use http::header::AUTHORIZATION;
use http::HeaderMap;
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
    /// The tokens of `NAME` (comma-separated) and of the file `NAME_FILE`
    /// (one per line), or `None` when neither is set.
    pub fn from_env(name: &str) -> Result<Option<Self>, ConfigError> {
        let mut tokens = Vec::new();
        if let Some(list) = non_empty_var(name) {
            tokens.extend(list.split(',').map(|t| t.trim().to_owned()));
        }
        let file_var = format!("{name}_FILE");
        if let Some(path) = non_empty_var(&file_var) {
            let text = read_secret_file(&file_var, &path)?;
            tokens.extend(text.lines().map(|t| t.trim().to_owned()));
        }
        tokens.retain(|t| !t.is_empty());
        if tokens.is_empty() {
            return Ok(None);
        }
        for token in &tokens {
            check_token(name, token)?;
        }
        Ok(Some(Tokens::new(tokens)))
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
        let presented = digest(presented);
        self.digests
            .iter()
            .fold(subtle::Choice::from(0), |found, d| {
                found | d.ct_eq(&presented)
            })
            .into()
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The token of an `Authorization: Bearer <token>` header, if there is one.
pub fn bearer_token(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(AUTHORIZATION)?.as_bytes();
    let (scheme, token) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = token.strip_prefix(b" ")?.trim_ascii();
    (!token.is_empty()).then_some(token)
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
        let file_var = format!("{name}_FILE");
        let token = match (non_empty_var(name), non_empty_var(&file_var)) {
            (Some(token), _) => token.trim().to_owned(),
            (None, Some(path)) => read_secret_file(&file_var, &path)?
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned(),
            (None, None) => return Ok(None),
        };
        check_token(name, &token)?;
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

fn read_secret_file(var: &str, path: &str) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError {
        name: var.to_owned(),
        value: path.to_owned(),
        reason: format!("cannot read the file: {e}"),
    })
}

/// RFC 6750's token characters, and a length that can't be guessed. The
/// error names the variable, never the value.
fn check_token(name: &str, token: &str) -> Result<(), ConfigError> {
    let is_token_char =
        |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~' | '+' | '/' | '=');
    let reason = if token.chars().count() < MIN_TOKEN_CHARS {
        format!("a token must have at least {MIN_TOKEN_CHARS} characters")
    } else if !token.chars().all(is_token_char) {
        "a token may hold only letters, digits and - . _ ~ + / =".to_owned()
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
    use http::HeaderValue;

    #[test]
    fn only_configured_tokens_are_accepted() {
        let tokens = Tokens::new(["first-token-0123456789", "second-token-0123456789"]);
        assert!(tokens.accepts(b"first-token-0123456789"));
        assert!(tokens.accepts(b"second-token-0123456789"));
        assert!(!tokens.accepts(b"first-token-012345678"));
        assert!(!tokens.accepts(b""));
    }

    #[test]
    fn the_bearer_scheme_is_read_in_any_case() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer_token(&headers), None);
        headers.insert(AUTHORIZATION, HeaderValue::from_static("bearer abc"));
        assert_eq!(bearer_token(&headers), Some(&b"abc"[..]));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer  abc "));
        assert_eq!(bearer_token(&headers), Some(&b"abc"[..]));
        for other in ["Basic abc", "Bearer", "Bearer ", "Bearerabc", "Bear"] {
            headers.insert(AUTHORIZATION, HeaderValue::from_static(other));
            assert_eq!(bearer_token(&headers), None, "{other}");
        }
    }

    #[test]
    fn short_or_odd_tokens_are_refused_without_echoing_them() {
        let err = check_token("INGEST_TOKENS", "short").unwrap_err();
        assert!(!err.to_string().contains("short"), "{err}");
        assert!(check_token("T", "has a space in it, long").is_err());
        assert!(check_token("T", "abcdefghijklmnop").is_ok());
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
