//! What one request or one client can make the audit service hold, beyond
//! the server's own limits (`shared::serve`): the size of an attribute, the
//! events in a batch, how long a request may take and how many clients
//! follow the live tail at once.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures::StreamExt;
use shared::cloudevents;
use shared::config::{env_parse, ConfigError};
use shared::problem::Problem;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::schema::{Object, Type};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, ResponseBuilder};

/// The longest attribute name or value (`id`, `source`, `subject`, an
/// extension...), data excluded. Every attribute is stored, indexed or
/// logged with each event; 4 KiB holds any URI a browser accepts (2 KiB)
/// twice over, and 16 of them still fit a 64 KiB event.
pub const MAX_ATTRIBUTE_BYTES: usize = 4096;

/// The longest `subject`, and the longest `source` and `id` together, in
/// bytes. The store indexes them ((subject, seq), and UNIQUE (source, id)),
/// and PostgreSQL refuses a b-tree index entry over 2,704 bytes: one such
/// event failed the whole group commit it was in, and wedged a broker
/// consumer that retried it. SQLite has no such limit; the cap is applied
/// on ingest, whatever the database, so both accept the same events. 2 KiB
/// leaves room for the entry's own header and the seq, uncompressed, and
/// holds any URI a browser accepts.
pub const MAX_INDEXED_BYTES: usize = 2048;

/// The most events in one batch request: one store transaction, one
/// answer. The same figure as a Kafka batch (`INGEST_BATCH_MAX`'s default);
/// a sender with more sends more requests.
pub const MAX_BATCH_EVENTS: usize = 1000;

/// Where the path of the live tail is matched.
const STREAM_PATH: &str = "/v1/events/stream";

/// Limits of the query side and of any request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiLimits {
    /// `REQUEST_TIMEOUT_MS`: the longest a request may take, body upload
    /// included, before it is answered 408 (a live tail counts until its
    /// stream starts).
    pub request_timeout: Duration,
    /// `MAX_STREAM_CLIENTS`: live-tail clients at once. Each holds a
    /// subscription to the feed and, while catching up, a page of events.
    pub max_stream_clients: usize,
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            request_timeout: Duration::from_secs(30),
            max_stream_clients: 256,
        }
    }
}

impl ApiLimits {
    pub fn from_env() -> Result<Self, ConfigError> {
        let defaults = ApiLimits::default();
        let timeout_ms: u64 = env_parse(
            "REQUEST_TIMEOUT_MS",
            defaults.request_timeout.as_millis() as u64,
        )?;
        let max_stream_clients = env_parse("MAX_STREAM_CLIENTS", defaults.max_stream_clients)?;
        for (name, value) in [
            ("REQUEST_TIMEOUT_MS", timeout_ms),
            ("MAX_STREAM_CLIENTS", max_stream_clients as u64),
        ] {
            if value == 0 {
                return Err(ConfigError {
                    name: name.into(),
                    value: "0".into(),
                    reason: "must be at least 1".into(),
                });
            }
        }
        Ok(ApiLimits {
            request_timeout: Duration::from_millis(timeout_ms),
            max_stream_clients,
        })
    }

    /// Wraps `router` so the live tail admits at most `max_stream_clients`.
    pub fn guard(&self, router: Router) -> Router {
        router.layer(axum::middleware::from_fn_with_state(
            Arc::new(Semaphore::new(self.max_stream_clients)),
            cap_stream_clients,
        ))
    }
}

/// Lets a live-tail request in while a place is free, and holds the place
/// for as long as its response body lives; otherwise 503 with Retry-After.
async fn cap_stream_clients(
    State(places): State<Arc<Semaphore>>,
    request: Request,
    next: Next,
) -> Response {
    // Only a live-tail client takes a place: another method on the path
    // is answered 405 by the router, full or not.
    if request.method() != Method::GET || request.uri().path() != STREAM_PATH {
        return next.run(request).await;
    }
    let Ok(place) = places.clone().try_acquire_owned() else {
        let mut response = Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many clients follow the live tail; retry later",
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        return response;
    };
    let response = next.run(request).await;
    response.map(|body| {
        Body::from_stream(body.into_data_stream().map(move |chunk| {
            // The place goes back when the stream (and this closure) drops.
            let _held = &place;
            chunk
        }))
    })
}

/// Refuses an event whose indexed values are longer than
/// `MAX_INDEXED_BYTES` (see there), naming them.
pub fn check_indexed_sizes(event: &cloudevents::Event) -> Result<(), String> {
    use cloudevents::AttributesReader;
    if let Some(subject) = event.subject() {
        if subject.len() > MAX_INDEXED_BYTES {
            return Err(format!(
                "attribute `subject` is {} bytes, longer than the limit of {MAX_INDEXED_BYTES} for an indexed attribute",
                subject.len()
            ));
        }
    }
    let key = event.source().len() + event.id().len();
    if key > MAX_INDEXED_BYTES {
        return Err(format!(
            "attributes `source` and `id` are {key} bytes together, longer than the limit of {MAX_INDEXED_BYTES} for the event's key"
        ));
    }
    Ok(())
}

/// Documents in `doc` what the limits answer, on the operations they
/// apply to: 408 on every route of `doc` (all are under the request
/// timeout; call it before the probes are merged in), 503 with
/// `Retry-After` on the live tail, and 431 on `POST /`, whose attributes
/// travel as headers in binary mode.
pub fn document(doc: &mut OpenApi) {
    let problem = |description: &str| {
        ResponseBuilder::new().description(description).content(
            shared::problem::CONTENT_TYPE,
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
    };
    let timed_out = problem(
        "The request took longer than REQUEST_TIMEOUT_MS, body upload included; nothing was \
         done that a retry would repeat",
    )
    .build();
    let crowded = problem("MAX_STREAM_CLIENTS clients follow the live tail already")
        .header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(Object::with_type(Type::Integer))
                .description(Some("Seconds to wait before trying again"))
                .build(),
        )
        .build();
    let headers_too_large = problem(
        "The request's headers (the ce- attributes in binary mode) are larger than 64 KiB in all",
    )
    .build();
    for (path, item) in doc.paths.paths.iter_mut() {
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
            let responses = &mut operation.responses.responses;
            responses.insert("408".to_owned(), timed_out.clone().into());
            match path.as_str() {
                STREAM_PATH => {
                    responses.insert("503".to_owned(), crowded.clone().into());
                }
                "/" => {
                    responses.insert("431".to_owned(), headers_too_large.clone().into());
                }
                _ => {}
            }
        }
    }
}

/// Refuses an attribute name or value longer than `MAX_ATTRIBUTE_BYTES`,
/// naming it (by its first characters when the name itself is too long).
pub fn check_attribute_size(name: &str, value: &str) -> Result<(), String> {
    if name.len() > MAX_ATTRIBUTE_BYTES {
        let start: String = name.chars().take(20).collect();
        return Err(format!(
            "an attribute name starting {start:?} is {} bytes, longer than the limit of {MAX_ATTRIBUTE_BYTES}",
            name.len()
        ));
    }
    if value.len() > MAX_ATTRIBUTE_BYTES {
        return Err(format!(
            "attribute `{name}` is {} bytes, longer than the limit of {MAX_ATTRIBUTE_BYTES}",
            value.len()
        ));
    }
    Ok(())
}
