//! Reading the audit log back: `GET /v1/events` (pages by seq) and
//! `GET /v1/events/stream` (a Server-Sent Events live tail).
//!
//! Memory per request is bounded in bytes, not only in events: a page stops
//! at `limit` events or `PAGE_MAX_BYTES` of event JSON, whichever comes
//! first, and the live tail holds at most one smaller page plus its share
//! of the store's tail buffer (`store::TAIL_MAX_BYTES`).
//!
//! Every page is a keyset query on seq read by the store (`store::page`),
//! so a page deep in the log costs what the first one does.

use crate::app::AppState;
use crate::error::ApiError;
use crate::openapi::EventPage;
use crate::store::{Page, PageQuery, Received, Store, StoredEvent, Subscriber};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::Json;
use futures::{Stream, StreamExt as _};
use serde::Deserialize;
use shared::problem::Problem;
use std::convert::Infallible;
use std::sync::Arc;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;
/// The most event JSON one `GET /v1/events` page carries: 1000 events of
/// up to 1 MiB would otherwise be a 1 GiB response built in memory. A page
/// always holds at least one event, however large.
pub const PAGE_MAX_BYTES: usize = 4 * 1024 * 1024;
/// The same for the pages the live tail reads from the store (a replay, or
/// a slow client catching up): each stream holds one while it sends it.
pub const STREAM_PAGE_MAX_BYTES: usize = 1024 * 1024;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(stream))
}

/// Query parameters as sent; `Filter::parse` turns them into a filter or
/// an error naming the parameter. A parameter not listed here is refused
/// (`query_params`) rather than ignored: a client that sends a filter this
/// service does not know would otherwise read every event as if it matched.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RawFilter {
    /// Only events of this `source`.
    source: Option<String>,
    /// Only events of this `type`.
    #[serde(rename = "type")]
    ty: Option<String>,
    /// Only events of this `subject`.
    subject: Option<String>,
    /// Only events after this seq (the previous page's `next_after`).
    #[param(value_type = Option<i64>, minimum = 0)]
    after: Option<String>,
    /// Events per page, 1 to 1000 (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Filter {
    source: Option<String>,
    ty: Option<String>,
    subject: Option<String>,
    after: i64,
    limit: u32,
}

impl Filter {
    fn parse(raw: RawFilter) -> Result<Self, ApiError> {
        // An empty value filters nothing, as if the parameter were absent.
        let non_empty = |v: Option<String>| v.filter(|s| !s.is_empty());
        let after = match non_empty(raw.after) {
            None => 0,
            Some(a) => a.parse::<i64>().ok().filter(|a| *a >= 0).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "query parameter `after` must be a non-negative integer (a seq), got {a:?}"
                ))
            })?,
        };
        let limit = match non_empty(raw.limit) {
            None => DEFAULT_LIMIT,
            Some(l) => l
                .parse::<u32>()
                .ok()
                .filter(|l| (1..=MAX_LIMIT).contains(l))
                .ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "query parameter `limit` must be an integer from 1 to {MAX_LIMIT}, got {l:?}"
                    ))
                })?,
        };
        Ok(Filter {
            source: non_empty(raw.source),
            ty: non_empty(raw.ty),
            subject: non_empty(raw.subject),
            after,
            limit,
        })
    }

    /// What the store reads for this filter.
    fn query(&self) -> PageQuery {
        PageQuery {
            after: self.after,
            limit: self.limit,
            source: self.source.clone(),
            ty: self.ty.clone(),
            subject: self.subject.clone(),
        }
    }

    fn matches(&self, event: &StoredEvent) -> bool {
        let wanted = |want: &Option<String>, have: Option<&String>| {
            want.as_ref().is_none_or(|w| Some(w) == have)
        };
        wanted(&self.source, Some(&event.source))
            && wanted(&self.ty, Some(&event.ty))
            && wanted(&self.subject, event.subject.as_ref())
    }
}

/// The query parameters, or a 400 naming the one that is unknown, repeated
/// or malformed (serde's message quotes it: "unknown field `filter`, expected
/// one of ...").
fn query_params(query: Result<Query<RawFilter>, QueryRejection>) -> Result<RawFilter, ApiError> {
    query
        .map(|Query(raw)| raw)
        .map_err(|rejection| ApiError::BadRequest(rejection.body_text()))
}

/// Stored events in seq order, a page at a time, filtered by attribute.
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "audit log",
    params(RawFilter),
    responses(
        (status = 200, description = "A page of stored events", body = EventPage),
        (status = 400, description = "A query parameter is invalid", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip(state))]
async fn list(
    State(state): State<AppState>,
    query: Result<Query<RawFilter>, QueryRejection>,
) -> Result<Json<Page>, ApiError> {
    let filter = Filter::parse(query_params(query)?)?;
    let page = state
        .store
        .page(&filter.query(), PAGE_MAX_BYTES)
        .await
        .map_err(|e| ApiError::Store(Arc::new(e)))?;
    Ok(Json(page))
}

/// The live tail: one SSE `event: audit` per stored event matching the
/// filter (`source`, `type`, `subject`), the item as `data`, its seq as `id`.
/// With `after` (or the `Last-Event-ID` header a reconnecting EventSource
/// sends) the stored events after that seq come first, then the live ones,
/// with no gap and no repeat. A client too slow for the live feed (its
/// events left the store's tail buffer before it read them) is served from
/// the store until it has caught up, so it misses nothing either. Streams
/// end at shutdown, or after `event: error` when reading the store fails.
#[utoipa::path(
    get,
    path = "/v1/events/stream",
    tag = "audit log",
    params(
        RawFilter,
        ("last-event-id" = Option<i64>, Header, description = "Resume after this seq"),
    ),
    responses(
        (status = 200, description = "Server-Sent Events: `event: audit` with a stored item as data and its seq as id", body = String, content_type = "text/event-stream"),
        (status = 400, description = "A query parameter is invalid", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<RawFilter>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let raw = query_params(query)?;
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok());
    let replay = raw.after.as_deref().is_some_and(|a| !a.is_empty()) || last_event_id.is_some();
    let mut filter = Filter::parse(raw)?;
    if let Some(seq) = last_event_id {
        filter.after = seq;
    }
    // Subscribe before reading the store so that nothing committed in
    // between is missed; what both deliver is skipped by seq.
    let tail = LiveTail {
        live: state.store.subscribe(),
        store: state.store.clone(),
        filter,
        page: Vec::new().into_iter(),
        from_store: replay,
        ended: false,
    };
    let events = futures::stream::unfold(tail, |mut tail| async move {
        let event = tail.next().await?;
        Some((Ok(event), tail))
    })
    .take_until(state.shutdown.clone().cancelled_owned());
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// One live-tail client's state: where it is (`filter.after`, the last seq
/// sent) and whether it reads from the store or the live feed.
struct LiveTail {
    live: Subscriber,
    store: Store,
    filter: Filter,
    /// The rest of the store page being sent.
    page: std::vec::IntoIter<StoredEvent>,
    /// Reading from the store: a replay, or catching up after lagging.
    from_store: bool,
    ended: bool,
}

impl LiveTail {
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            for event in self.page.by_ref() {
                if event.seq > self.filter.after {
                    self.filter.after = event.seq;
                    return Some(to_sse(&event));
                }
            }
            if self.ended {
                return None;
            }
            if self.from_store {
                let filter = Filter {
                    limit: MAX_LIMIT,
                    ..self.filter.clone()
                };
                match self
                    .store
                    .page(&filter.query(), STREAM_PAGE_MAX_BYTES)
                    .await
                {
                    Ok(page) => {
                        // The last page read: what was committed after it
                        // is in the live feed.
                        self.from_store = page.next_after.is_some();
                        self.page = page.events.into_iter();
                    }
                    // The response has started, so the error can't be a
                    // problem+json: log it, tell the client and end, so that
                    // it reconnects with Last-Event-ID rather than carry on
                    // past a gap.
                    Err(e) => {
                        tracing::error!(error = ?e, "reading stored events for a stream failed");
                        self.ended = true;
                        return Some(
                            SseEvent::default()
                                .event("error")
                                .data("reading stored events failed; reconnect to resume"),
                        );
                    }
                }
                continue;
            }
            match self.live.recv().await {
                Received::Event(event) => {
                    if event.seq > self.filter.after && self.filter.matches(&event) {
                        self.filter.after = event.seq;
                        return Some(to_sse(&event));
                    }
                }
                Received::Lagged(missed) => {
                    tracing::debug!(
                        missed,
                        "a live-tail client fell behind; serving it from the store"
                    );
                    metrics::counter!("audit_stream_catch_ups_total").increment(1);
                    self.from_store = true;
                }
            }
        }
    }
}

fn to_sse(event: &StoredEvent) -> SseEvent {
    let sse = SseEvent::default().event("audit").id(event.seq.to_string());
    // Serializing fails only if a stored row is not JSON, which the store
    // never writes; the fallback keeps the stream going if it ever did.
    sse.clone().json_data(event).unwrap_or(sse)
}
