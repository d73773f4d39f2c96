//! Bearer tokens: the sets a server accepts, compared in constant time, and
//! the one token a client sends, both read from the environment (or a file)
//! and never printed; and a service's doors, which let a request through
//! when it carries a token of its door (if the door has any) and its client
//! is within the door's rate limit (if it has one).
//!
//! One middleware classifies requests by path rather than one layer per
//! router, so that a service can make a route added later a closed one by
//! default.

use crate::config::ConfigError;
use crate::problem::Problem;
use crate::rate_limit::{Client, RateLimiter};
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use http::header::{AUTHORIZATION, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, StatusCode};
use sha2::{Digest, Sha256};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, ResponseBuilder};

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
    fn matching(&self, presented: &[u8]) -> Option<[u8; 32]> {
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

/// One door of a service: who may pass it, and how often each client may.
#[derive(Debug)]
pub struct Door {
    /// Its name in challenges, problems and logs (`ingest`, `read`...).
    pub name: &'static str,
    /// The tokens that open it; `None`: anyone may pass.
    pub tokens: Option<Tokens>,
    /// Requests per client, a client being its token, or its address when
    /// the door has no tokens; `None`: no limit.
    pub rate: Option<RateLimiter>,
    /// Whether the door is shut to everyone while it has no tokens (a door
    /// for what cannot be undone), rather than open.
    pub closed_without_tokens: bool,
}

/// Which door a path goes through; `None` for the paths open to anyone
/// without a limit (probes, the API description).
pub type DoorOf = fn(&str) -> Option<&'static str>;

/// A service's doors.
pub struct Doors {
    /// The `realm` of its challenges: the service's name.
    pub realm: &'static str,
    pub door_of: DoorOf,
    pub doors: Vec<Door>,
}

impl Doors {
    /// Wraps `router` so every request goes through its path's door.
    pub fn guard(self, router: Router) -> Router {
        router.layer(axum::middleware::from_fn_with_state(Arc::new(self), pass))
    }

    fn door(&self, path: &str) -> Option<&Door> {
        let name = (self.door_of)(path)?;
        self.doors.iter().find(|door| door.name == name)
    }
}

async fn pass(State(doors): State<Arc<Doors>>, request: Request, next: Next) -> Response {
    let Some(door) = doors.door(request.uri().path()) else {
        return next.run(request).await;
    };
    let client = match &door.tokens {
        None if door.closed_without_tokens => return unauthorized(doors.realm, door.name, false),
        None => Client::address(peer(&request)),
        Some(tokens) => match bearer_token(request.headers()) {
            None => return unauthorized(doors.realm, door.name, false),
            Some(token) => match tokens.matching(token) {
                Some(digest) => Client::Token(digest),
                None => {
                    tracing::info!(
                        scope = door.name,
                        path = request.uri().path(),
                        "refused a request with a wrong bearer token"
                    );
                    return unauthorized(doors.realm, door.name, true);
                }
            },
        },
    };
    if let Some(rate) = &door.rate {
        if let Err(wait) = rate.check(&client) {
            return too_many_requests(door.name, wait);
        }
    }
    next.run(request).await
}

/// The client's address, as the server recorded it (unspecified when the
/// request did not come through `shared::serve`, as in a handler test).
fn peer(request: &Request) -> IpAddr {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip())
}

/// 401 with the challenge RFC 6750 describes: the realm and scope always,
/// `error="invalid_token"` only when a token was sent (section 3.1: a
/// request without credentials gets no error code).
fn unauthorized(realm: &str, door: &str, token_sent: bool) -> Response {
    let (challenge, detail) = if token_sent {
        (
            format!(r#"Bearer realm="{realm}", scope="{door}", error="invalid_token""#),
            format!("the bearer token is not valid for {door}"),
        )
    } else {
        (
            format!(r#"Bearer realm="{realm}", scope="{door}""#),
            format!("{door} needs an Authorization: Bearer token"),
        )
    };
    let mut response = Problem::new(StatusCode::UNAUTHORIZED, detail).into_response();
    if let Ok(value) = HeaderValue::try_from(challenge) {
        response.headers_mut().insert(WWW_AUTHENTICATE, value);
    }
    response
}

/// 429 with `Retry-After`: the whole seconds until the client may send
/// again (at least one).
fn too_many_requests(door: &str, wait: Duration) -> Response {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let seconds = seconds.max(1);
    let mut response = Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        format!("too many {door} requests from this client; retry after {seconds} s"),
    )
    .into_response();
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(seconds));
    response
}

/// Documents the bearer scheme in `doc` (`description` says which token
/// opens which door), and on every operation behind a door its optional
/// security (a door may be left open by configuration) and its 401, and
/// its 429 when its door is one of `rate_limited` (which a configuration
/// may leave unlimited).
pub fn document(doc: &mut OpenApi, door_of: DoorOf, description: &str, rate_limited: &[&str]) {
    let mut scheme = Http::new(HttpAuthScheme::Bearer);
    scheme.description = Some(description.to_owned());
    doc.components
        .get_or_insert_with(Default::default)
        .add_security_scheme("bearer", SecurityScheme::Http(scheme));
    let problem = |text: &str| {
        ResponseBuilder::new()
            .description(text)
            .content(
                crate::problem::CONTENT_TYPE,
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            )
            .build()
    };
    let unauthorized =
        problem("No bearer token, or not one of this door's (`WWW-Authenticate: Bearer ...`)");
    let limited = problem("Over the client's rate limit (`Retry-After`)");
    for (path, item) in doc.paths.paths.iter_mut() {
        let Some(door) = door_of(path) else {
            continue;
        };
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ];
        for operation in operations.into_iter().flatten() {
            operation.security = Some(vec![
                SecurityRequirement::default(),
                SecurityRequirement::new("bearer", Vec::<String>::new()),
            ]);
            let responses = &mut operation.responses.responses;
            responses.insert("401".to_owned(), unauthorized.clone().into());
            if rate_limited.contains(&door) {
                responses.insert("429".to_owned(), limited.clone().into());
            }
        }
    }
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
