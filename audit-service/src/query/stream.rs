//! `GET /v1/events/stream`: the live tail, stored events then live ones as
//! Server-Sent Events, with no gap and no repeat.

use super::page::{page, PageError, STREAM_PAGE_MAX_BYTES};
use super::params::{query_params, Filter, RawFilter, MAX_LIMIT};
use super::validate::{unknown_attributes, with_warnings};
use crate::error::{ApiError, FilterProblem};
use crate::filter::{self, FilterError, INLINE_WORK_UNITS, PAGE_WORK_UNITS};
use crate::http::state::AppState;
use crate::openapi::LiveTailEvent;
use crate::store::{Received, Store, StoredEvent, Subscriber};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use cesql::{Budget, OverBudget};
use futures::StreamExt as _;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::OwnedSemaphorePermit;

/// The largest `tail` the stream accepts.
const MAX_TAIL: i64 = 100_000;

/// The live tail: one SSE `event: audit` per stored event matching the
/// filter (`source`, `type`, `subject`, `filter`), the item as `data`, its
/// seq as `id`. With `after` (or the `Last-Event-ID` header a reconnecting
/// client sends) the stored events after that seq come first, then the live
/// ones, with no gap and no repeat; `tail=N` does the same from the newest N
/// stored events (before filtering). A client too slow for the live feed
/// (its events left the store's tail buffer before it read them) is served
/// from the store until it has caught up, so it misses nothing either.
/// Streams end at shutdown, or after `event: error` when reading the store
/// fails.
#[utoipa::path(
    get,
    path = "/v1/events/stream",
    tag = "audit log",
    params(
        RawFilter,
        ("tail" = Option<i64>, Query, minimum = 1, maximum = 100000, description = "Replay the newest `tail` stored events (counted before filtering) first; not with `after`"),
        ("last-event-id" = Option<i64>, Header, description = "Resume after this seq"),
    ),
    responses(
        (status = 200, description = "Server-Sent Events: `event: audit` with a stored item as data and its seq as id", body = LiveTailEvent, content_type = "text/event-stream",
            headers(("Warning" = String, description = "One per attribute the `filter` names that no stored event has had, as on `GET /v1/events`"))),
        (status = 400, description = "A query parameter is invalid; a bad `filter` has `column` and `offset` members", body = FilterProblem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<RawFilter>, QueryRejection>,
) -> Result<Response, ApiError> {
    // Held by the stream, for as long as the client follows it.
    let Ok(place) = state.stream_places.clone().try_acquire_owned() else {
        return Ok(crate::limits::crowded());
    };
    let mut raw = query_params(query)?;
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok());
    let has_after = raw.after.as_deref().is_some_and(|a| !a.is_empty());
    let tail = match raw.tail.take().filter(|t| !t.is_empty()) {
        None => None,
        Some(_) if has_after => {
            return Err(ApiError::BadRequest(
                "query parameters `after` and `tail` cannot be used together".into(),
            ))
        }
        Some(t) => Some(
            t.parse::<i64>()
                .ok()
                .filter(|t| (1..=MAX_TAIL).contains(t))
                .ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "query parameter `tail` must be an integer from 1 to {MAX_TAIL}, got {t:?}"
                    ))
                })?,
        ),
    };
    let mut filter = Filter::parse(raw)?;
    let warnings = unknown_attributes(&state.store, filter.cesql.as_deref()).await;
    // Subscribe before reading the store so that nothing committed in
    // between is missed; what both deliver is skipped by seq.
    let live = state.store.subscribe();
    let replay = match (last_event_id, tail) {
        // A reconnecting client resumes where it was, whatever it first asked.
        (Some(seq), _) => {
            filter.after = seq;
            true
        }
        (None, Some(tail)) => {
            let newest = state
                .store
                .last_seq()
                .await
                .map_err(|e| ApiError::Store(Arc::new(e)))?;
            filter.after = newest.saturating_sub(tail).max(0);
            true
        }
        (None, None) => has_after,
    };
    let tail = LiveTail {
        _place: place,
        live,
        store: state.store.clone(),
        filter,
        page: Vec::new().into_iter(),
        page_end: None,
        from_store: replay,
        ended: false,
    };
    let events = futures::stream::unfold(tail, |mut tail| async move {
        let event = tail.next().await?;
        Some((Ok::<_, Infallible>(event), tail))
    })
    .take_until(state.shutdown.clone().cancelled_owned());
    let sse = Sse::new(events).keep_alive(KeepAlive::default());
    Ok(with_warnings(sse.into_response(), warnings))
}

/// One live-tail client's state: where it is (`filter.after`, the last seq
/// sent or examined) and whether it reads from the store or the live feed.
struct LiveTail {
    /// Given back when the stream ends or its client goes.
    _place: OwnedSemaphorePermit,
    live: Subscriber,
    store: Store,
    filter: Filter,
    /// The rest of the store page being sent.
    page: std::vec::IntoIter<StoredEvent>,
    /// The `next_after` of that page: with a filter evaluated here, the rows
    /// examined run past the last event on it.
    page_end: Option<i64>,
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
            if let Some(end) = self.page_end.take() {
                self.filter.after = self.filter.after.max(end);
            }
            if self.ended {
                return None;
            }
            if self.from_store {
                let filter = Filter {
                    limit: MAX_LIMIT,
                    ..self.filter.clone()
                };
                match page(&self.store, &filter, STREAM_PAGE_MAX_BYTES).await {
                    Ok(page) => {
                        // The last page read: what was committed after it
                        // is in the live feed.
                        self.from_store = page.next_after.is_some();
                        self.page_end = page.next_after;
                        self.page = page.events.into_iter();
                    }
                    Err(e) => return Some(self.end(e)),
                }
                continue;
            }
            match self.live.recv().await {
                Received::Event(event) => {
                    if event.seq <= self.filter.after {
                        continue;
                    }
                    match matches_live(&self.filter, &event).await {
                        Ok(true) => {
                            self.filter.after = event.seq;
                            return Some(to_sse(&event));
                        }
                        Ok(false) => {}
                        Err(e) => return Some(self.end(e)),
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

impl LiveTail {
    /// The response has started, so an error can't be a problem+json: it
    /// is logged, told to the client in an `event: error`, and the stream
    /// ends, so that the client reconnects with Last-Event-ID (or a
    /// cheaper filter) rather than carry on past a gap.
    fn end(&mut self, error: PageError) -> SseEvent {
        self.ended = true;
        let message = match error {
            PageError::Store(e) => {
                tracing::error!(error = ?e, "reading stored events for a stream failed");
                "reading stored events failed; reconnect to resume".to_owned()
            }
            PageError::TooExpensive { seq } => {
                tracing::info!(seq, "a live tail's filter needs more than its work budget on one event; ending the stream");
                FilterError::TooExpensive { seq }.to_string()
            }
            PageError::ShuttingDown => "the service is shutting down".to_owned(),
        };
        SseEvent::default().event("error").data(message)
    }
}

/// Whether a live event passes `filter`: within `INLINE_WORK_UNITS` here,
/// else again on the blocking pool with a page's budget (see `filter`).
async fn matches_live(filter: &Filter, event: &StoredEvent) -> Result<bool, PageError> {
    if let Ok(matched) = filter.matches(event, &mut Budget::new(INLINE_WORK_UNITS)) {
        return Ok(matched);
    }
    let (filter, copy) = (filter.clone(), event.clone());
    filter::evaluate(move || filter.matches(&copy, &mut Budget::new(PAGE_WORK_UNITS)))
        .await
        .ok_or(PageError::ShuttingDown)?
        .map_err(|OverBudget| PageError::TooExpensive { seq: event.seq })
}

fn to_sse(event: &StoredEvent) -> SseEvent {
    let sse = SseEvent::default().event("audit").id(event.seq.to_string());
    // Serializing fails only if a stored row is not JSON, which the store
    // never writes; the fallback keeps the stream going if it ever did.
    sse.clone().json_data(event).unwrap_or(sse)
}
