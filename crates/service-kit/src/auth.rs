//! A service's doors: every request goes through its path's door, which
//! lets it pass when it carries a bearer token of the door (if the door has
//! any, `settings::Tokens`) and its client is within the door's rate limit
//! (if it has one).
//!
//! One middleware classifies requests by path rather than one layer per
//! router, so that a service can make a route added later a closed one by
//! default.

use crate::problem::Problem;
use crate::rate_limit::{Client, RateLimiter};
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::header::{AUTHORIZATION, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, StatusCode};
use settings::Tokens;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::OpenApi;

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
    fn door(&self, path: &str) -> Option<&Door> {
        let name = (self.door_of)(path)?;
        self.doors.iter().find(|door| door.name == name)
    }
}

/// Lets `request` through its path's door (the middleware the service
/// stack puts first: `crate::router`).
pub(crate) async fn pass(
    State(doors): State<Arc<Doors>>,
    request: Request,
    next: Next,
) -> Response {
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
/// request did not come through `crate::serve`, as in a handler test).
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
    let unauthorized = crate::openapi::problem(
        "No bearer token, or not one of this door's (`WWW-Authenticate: Bearer ...`)",
    );
    let limited = crate::openapi::problem("Over the client's rate limit (`Retry-After`)");
    for (path, operation) in crate::openapi::operations_mut(doc) {
        let Some(door) = door_of(path) else {
            continue;
        };
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

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

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
}
