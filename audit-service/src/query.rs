//! Reading the audit log back: `GET /v1/events` (pages by seq) and
//! `GET /v1/events/stream` (a Server-Sent Events live tail).

use crate::app::AppState;
use crate::error::ApiError;
use crate::openapi::EventPage;
use crate::store::StoredEvent;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::Json;
use futures::{Stream, StreamExt as _};
use serde::{Deserialize, Serialize};
use shared::problem::Problem;
use sqlx::{QueryBuilder, Row, Sqlite};
use std::convert::Infallible;
use std::sync::Arc;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(stream))
}

/// Query parameters as sent; `Filter::parse` turns them into a filter or
/// an error naming the parameter.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
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

    fn matches(&self, event: &StoredEvent) -> bool {
        let wanted = |want: &Option<String>, have: Option<&String>| {
            want.as_ref().is_none_or(|w| Some(w) == have)
        };
        wanted(&self.source, Some(&event.source))
            && wanted(&self.ty, Some(&event.ty))
            && wanted(&self.subject, event.subject.as_ref())
    }
}

#[derive(Serialize)]
struct Page {
    events: Vec<StoredEvent>,
    /// The `after` of the next page; null when this page is the last.
    next_after: Option<i64>,
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
    Query(raw): Query<RawFilter>,
) -> Result<Json<Page>, ApiError> {
    let filter = Filter::parse(raw)?;
    let events = fetch(&state, &filter).await?;
    let next_after = (events.len() == filter.limit as usize)
        .then(|| events.last().map(|e| e.seq))
        .flatten();
    Ok(Json(Page { events, next_after }))
}

async fn fetch(state: &AppState, filter: &Filter) -> Result<Vec<StoredEvent>, ApiError> {
    let mut query = QueryBuilder::<Sqlite>::new(
        "SELECT seq, received_at, transport, event_json, source, id, type, subject \
         FROM events WHERE seq > ",
    );
    query.push_bind(filter.after);
    if let Some(source) = &filter.source {
        query.push(" AND source = ").push_bind(source);
    }
    if let Some(ty) = &filter.ty {
        query.push(" AND type = ").push_bind(ty);
    }
    if let Some(subject) = &filter.subject {
        query.push(" AND subject = ").push_bind(subject);
    }
    query
        .push(" ORDER BY seq LIMIT ")
        .push_bind(i64::from(filter.limit));
    let rows = query
        .build()
        .fetch_all(state.store.pool())
        .await
        .map_err(|e| ApiError::Store(Arc::new(e.into())))?;
    rows.into_iter()
        .map(|row| {
            let transport: String = row.try_get("transport")?;
            Ok(StoredEvent {
                seq: row.try_get("seq")?,
                received_at: row.try_get::<String, _>("received_at")?.into(),
                transport: transport
                    .parse()
                    .map_err(|e: String| sqlx::Error::Decode(e.into()))?,
                json: row.try_get("event_json")?,
                source: row.try_get("source")?,
                id: row.try_get("id")?,
                ty: row.try_get("type")?,
                subject: row.try_get("subject")?,
                trace: None,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(|e| ApiError::Store(Arc::new(e.into())))
}

/// The live tail: one SSE `event: audit` per stored event matching the
/// filter (`source`, `type`, `subject`), the item as `data`, its seq as `id`.
/// With `after` (or the `Last-Event-ID` header a reconnecting EventSource
/// sends) the stored events after that seq come first, then the live ones,
/// with no gap and no repeat. A client too slow to keep up gets
/// `event: lagged` with the number it missed and can reconnect with
/// `Last-Event-ID`. Streams end at shutdown.
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
    Query(raw): Query<RawFilter>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok());
    let replay = raw.after.as_deref().is_some_and(|a| !a.is_empty()) || last_event_id.is_some();
    let mut filter = Filter::parse(raw)?;
    if let Some(seq) = last_event_id {
        filter.after = seq;
    }
    // Subscribe before reading the backlog so that nothing stored in
    // between is missed; what both deliver is skipped by seq below.
    let live = BroadcastStream::new(state.store.subscribe()).map(|item| match item {
        Ok(event) => Tail::Stored(event),
        Err(BroadcastStreamRecvError::Lagged(missed)) => Tail::Lagged(missed),
    });
    let backlog = if replay {
        backlog(state.clone(), filter.clone()).boxed()
    } else {
        futures::stream::empty().boxed()
    };
    let mut last_seq = filter.after;
    let events = backlog
        .chain(live)
        .filter_map(move |item| {
            let sse = match item {
                Tail::Stored(event) if event.seq > last_seq && filter.matches(&event) => {
                    last_seq = event.seq;
                    Some(to_sse(&event))
                }
                Tail::Stored(_) => None,
                Tail::Lagged(missed) => {
                    Some(SseEvent::default().event("lagged").data(missed.to_string()))
                }
                Tail::ReplayFailed => Some(
                    SseEvent::default()
                        .event("error")
                        .data("reading stored events failed; reconnect to resume"),
                ),
            };
            std::future::ready(sse.map(Ok))
        })
        .take_until(state.shutdown.clone().cancelled_owned());
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

enum Tail {
    Stored(Arc<StoredEvent>),
    Lagged(u64),
    ReplayFailed,
}

/// The stored events after `filter.after`, page by page.
fn backlog(state: AppState, filter: Filter) -> impl Stream<Item = Tail> + Send {
    let first = Filter {
        limit: MAX_LIMIT,
        ..filter
    };
    futures::stream::unfold(Some(first), move |page| {
        let state = state.clone();
        async move {
            let mut filter = page?;
            match fetch(&state, &filter).await {
                Ok(events) => {
                    let next = match events.last() {
                        Some(last) if events.len() == filter.limit as usize => {
                            filter.after = last.seq;
                            Some(filter)
                        }
                        _ => None,
                    };
                    let items: Vec<Tail> = events
                        .into_iter()
                        .map(|e| Tail::Stored(Arc::new(e)))
                        .collect();
                    Some((futures::stream::iter(items), next))
                }
                // The response has started, so the error can't be a
                // problem+json: log it and tell the client to reconnect.
                Err(e) => {
                    tracing::error!(error = ?e, "replaying stored events for a stream failed");
                    Some((futures::stream::iter(vec![Tail::ReplayFailed]), None))
                }
            }
        }
    })
    .flatten()
}

fn to_sse(event: &StoredEvent) -> SseEvent {
    let sse = SseEvent::default().event("audit").id(event.seq.to_string());
    // Serializing fails only if a stored row is not JSON, which the store
    // never writes; the fallback keeps the stream going if it ever did.
    sse.clone().json_data(event).unwrap_or(sse)
}
