//! The audit console: `GET /console`, a web page over the query API (live tail, CESQL filter, event detail, counts by type), served from files embedded in the binary.
//!
//! Plain HTML, CSS and JavaScript with no framework and no build step, so
//! the binary is the whole deployment. The page reads only the public API
//! (`/v1/events/stream`, `/v1/filters/validate`) with `fetch`, so it can send
//! an `Authorization: Bearer` header when the service asks for one (a 401);
//! EventSource could not, and a token in the URL would end up in logs.
//!
//! Events are attacker-controlled (anyone who can post to the sink writes
//! them), so the page renders them with `textContent` only, and every
//! response here carries a Content-Security-Policy that allows scripts and
//! styles from this origin's files and nothing inline: an injected
//! `<script>` or `onerror=` would not run even if a rendering bug let one in.

use crate::http::state::AppState;
use axum::http::{header, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

const INDEX_HTML: &str = include_str!("../console/index.html");
const CONSOLE_JS: &str = include_str!("../console/console.js");
const CONSOLE_CSS: &str = include_str!("../console/console.css");
const FAVICON_SVG: &str = include_str!("../console/favicon.svg");

/// `connect-src 'self'` is what the page's fetches need; `form-action` and
/// `base-uri` are shut because nothing on the page navigates or needs them,
/// and `frame-ancestors` keeps the console out of other sites' frames.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// Headers on every console response.
const SECURITY_HEADERS: [(HeaderName, &str); 5] = [
    (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::REFERRER_POLICY, "no-referrer"),
    (header::X_FRAME_OPTIONS, "DENY"),
    // The files change with the binary; revalidating costs a few KiB.
    (header::CACHE_CONTROL, "no-cache"),
];

/// The page is in the OpenAPI document; its files are not (they are the
/// page's own, fetched by it).
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(page))
        .route(
            "/console/console.js",
            get(|| async { asset("text/javascript; charset=utf-8", CONSOLE_JS) }),
        )
        .route(
            "/console/console.css",
            get(|| async { asset("text/css; charset=utf-8", CONSOLE_CSS) }),
        )
        .route(
            "/console/favicon.svg",
            get(|| async { asset("image/svg+xml", FAVICON_SVG) }),
        )
}

/// The audit console, a web page for people: the live tail, a CESQL
/// filter and each event's detail.
#[utoipa::path(
    get,
    path = "/console",
    tag = "audit console",
    responses(
        (status = 200, description = "The console's HTML page", body = String, content_type = "text/html"),
    )
)]
async fn page() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    for (name, value) in SECURITY_HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}
