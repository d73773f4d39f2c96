//! `POST /`: the CloudEvents HTTP sink (binary, structured and batch modes).
//!
//! The SDK's axum extractor reads bodies without a limit and answers errors
//! as 500 or plain text, so this module has its own extractor, which reads
//! at most `MAX_BODY_BYTES` and answers every rejection as problem+json.
//! (It reads the body itself rather than behind axum's `DefaultBodyLimit`:
//! that layer was one more level on the route, which costs each request
//! some 3,000 instructions.)

use super::decode::{self, DecodeError, Decoded};
use crate::error::ApiError;
use crate::http::state::AppState;
use crate::openapi::CloudEvent;
use crate::store::EventRow;
use axum::extract::{FromRequest, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use cloudevents_wire::binding::{
    decode_header_value, is_cloudevents_media_type, BinaryMessage, BATCH_JSON, STRUCTURED_JSON,
};
use cloudevents_wire::Transport;
use http_body_util::LengthLimitError;
use service_kit::problem::Problem;
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(receive))
}

/// Stores the events and answers `204 No Content` once they are committed
/// (a duplicate of a stored event is acknowledged the same way). 204
/// rather than 200 so no sender mistakes the answer for a reply event.
///
/// The content mode follows the HTTP protocol binding: a batch
/// (`application/cloudevents-batch+json`, one specversion), one structured
/// event (`application/cloudevents+json`), or binary mode: the attributes
/// in `ce-` headers (percent-encoded), the data as the body in any media
/// type.
#[utoipa::path(
    post,
    path = "/",
    tag = "ingest",
    params(
        ("ce-specversion" = Option<String>, Header, description = "Binary mode: `1.0` or `0.3`"),
        ("ce-id" = Option<String>, Header, description = "Binary mode: the event id"),
        ("ce-source" = Option<String>, Header, description = "Binary mode: the event source"),
        ("ce-type" = Option<String>, Header, description = "Binary mode: the event type"),
    ),
    request_body(
        description = "One event (structured or binary mode) or a batch",
        content(
            (CloudEvent = "application/cloudevents+json"),
            (Vec<CloudEvent> = "application/cloudevents-batch+json"),
            (serde_json::Value = "application/json"),
        )
    ),
    responses(
        (status = 204, description = "Stored (or already stored): on disk before this answer"),
        (status = 400, description = "Not a valid CloudEvent; the detail names the attribute", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is larger than MAX_BODY_BYTES", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Neither binary, structured nor batch mode", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A valid CloudEvent the database refused for a value in it; sending it again meets the same answer (a batch's other events are stored)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable; nothing was stored, send again", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(level = "debug", name = "receive_http", skip_all, fields(events = events.0.len()))]
async fn receive(
    State(state): State<AppState>,
    events: CloudEvents,
) -> Result<StatusCode, ApiError> {
    let rows = events
        .0
        .iter()
        .map(EventRow::from_decoded)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::Store(Arc::new(e.into())))?;
    let batch = rows.len() > 1;
    let outcome = state
        .store
        .write_rows(rows, Transport::Http)
        .await
        .map_err(|failed| ApiError::Store(failed.error))?;
    if let Some(refused) = outcome.refused.first() {
        metrics::counter!("audit_events_rejected_total", "transport" => Transport::Http.as_str())
            .increment(1);
        // The database's words stay in the log (the writer's line): they
        // name its indexes and encodings, not the client's mistake.
        let what = if batch {
            format!(
                "batch event {}: the audit store cannot hold it (the database refused a value in it); the batch's other events are stored",
                refused.index
            )
        } else {
            "the audit store cannot hold this event (the database refused a value in it); it is not stored".to_owned()
        };
        return Err(ApiError::Unstorable(what));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The events of one request, valid per the spec. Empty for an empty batch.
pub struct CloudEvents(pub Vec<Decoded>);

impl FromRequest<AppState> for CloudEvents {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let result = extract(request, state).await;
        if result.is_err() {
            metrics::counter!("audit_events_rejected_total", "transport" => Transport::Http.as_str()).increment(1);
        }
        result.map(CloudEvents)
    }
}

/// The content modes, chosen by `Content-Type` as the HTTP binding says.
enum Mode {
    Batch,
    Structured,
    Binary,
}

async fn extract(request: Request, state: &AppState) -> Result<Vec<Decoded>, ApiError> {
    let (parts, body) = request.into_parts();
    let headers = parts.headers;
    let mode = mode(&headers)?;
    let body = axum::body::to_bytes(body, state.max_body_bytes)
        .await
        .map_err(|error| {
            let error = error.into_inner();
            if error.is::<LengthLimitError>() {
                ApiError::PayloadTooLarge(state.max_body_bytes)
            } else {
                ApiError::BadRequest(format!("failed to read the request body: {error}"))
            }
        })?;
    Ok(match mode {
        Mode::Batch => decode::batch(&body)?,
        Mode::Structured => vec![decode::structured(&body)?],
        Mode::Binary => {
            check_header_encoding(&headers)?;
            let message = BinaryMessage::from_http(&headers, body.to_vec())
                .map_err(decode::from_message_error)?
                .ok_or_else(|| DecodeError::MissingAttribute("specversion".into()))?;
            vec![decode::binary(message)?]
        }
    })
}

fn mode(headers: &HeaderMap) -> Result<Mode, ApiError> {
    let content_type = headers
        .get(CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let media_type = content_type
        .as_deref()
        .map(cloudevents_wire::binding::media_type);
    match media_type.as_deref() {
        Some(BATCH_JSON) => Ok(Mode::Batch),
        Some(STRUCTURED_JSON) => Ok(Mode::Structured),
        Some(m) if is_cloudevents_media_type(m) => Err(ApiError::UnsupportedMediaType(format!(
            "event format {m:?} is not supported: use {STRUCTURED_JSON} or {BATCH_JSON}"
        ))),
        _ if headers.contains_key("ce-specversion") => Ok(Mode::Binary),
        _ => Err(ApiError::UnsupportedMediaType(format!(
            "not a CloudEvent: send binary mode (ce-specversion and the other ce- headers), \
             structured mode ({STRUCTURED_JSON}) or batch mode ({BATCH_JSON}); \
             got Content-Type {}",
            content_type.as_deref().unwrap_or("(none)")
        ))),
    }
}

/// Names the attribute whose `ce-` header doesn't decode, which the shared
/// decoder can't (it sees one value at a time).
fn check_header_encoding(headers: &HeaderMap) -> Result<(), DecodeError> {
    for (name, value) in headers {
        if let Some(attribute) = name.as_str().strip_prefix("ce-") {
            decode_header_value(value.as_bytes()).map_err(|_| {
                DecodeError::invalid(attribute, "the header is not percent-encoded UTF-8")
            })?;
        }
    }
    Ok(())
}
