//! Reading the audit log back: `GET /v1/events` (pages by seq),
//! `GET /v1/events/stream` (a Server-Sent Events live tail) and
//! `GET /v1/filters/validate` (checks a CESQL filter without querying).
//!
//! Memory per request is bounded in bytes, not only in events: a page stops
//! at `limit` events or `PAGE_MAX_BYTES` of event JSON, whichever comes
//! first, and the live tail holds at most one smaller page plus its share
//! of the store's tail buffer (`store::TAIL_MAX_BYTES`).
//!
//! Every page is a keyset query on seq read by the store (`store::page`),
//! so a page deep in the log costs what the first one does.
//!
//! A CESQL `filter` is run in two places (see `filter`): its pushed-down
//! part joins `source`, `type` and `subject` in the SQL, on SQLite and on
//! PostgreSQL alike (`store::PageQuery::conditions`); when that is not the
//! whole filter, the rows SQL returns are evaluated here, and a page then
//! examines at most `EXAMINE_MAX_ROWS` rows and `EXAMINE_MAX_BYTES` of JSON.
//! Such a page can hold fewer than `limit` events, even none, with a
//! `next_after` to go on from: `next_after` is the last seq examined, not
//! the last one returned, so paging stays exact and no request reads the
//! whole table.

use crate::app::AppState;
use crate::error::{ApiError, FilterProblem};
use crate::filter::{self, CesqlFilter, FilterError, INLINE_WORK_UNITS, PAGE_WORK_UNITS};
use crate::openapi::{EventPage, LiveTailEvent};
use crate::store::attributes::{self, CONTEXT_ATTRIBUTES};
use crate::store::{Page, PageQuery, Received, Store, StoreError, StoredEvent, Subscriber};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cesql::{Budget, OverBudget};
use cloudevents_wire::validate::{code_point, forbidden_character};
use futures::StreamExt as _;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use service_kit::problem::Problem;
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
/// The most rows one page examines when a filter is evaluated here. At the
/// few microseconds it takes to parse and test a typical event, this is
/// tens of milliseconds of one core, whatever the table's size.
pub const EXAMINE_MAX_ROWS: usize = 10_000;
/// The most event JSON one page examines when a filter is evaluated here:
/// the row bound alone would let large events make a request read gigabytes.
/// At least one row is examined, however large.
pub const EXAMINE_MAX_BYTES: usize = 16 * 1024 * 1024;
/// Rows to evaluate are read in chunks of at most about this much JSON, so
/// a page holds one chunk besides the events it keeps.
const EXAMINE_CHUNK_BYTES: usize = 1024 * 1024;
/// The first chunk of a page is this small, and each next one twice the
/// last, up to `EXAMINE_CHUNK_BYTES`: a filter that matches often fills its
/// page from a few hundred rows, and a whole first chunk of 1 MiB (some
/// 5,000 user events) made such a page cost what examining them all does.
const EXAMINE_FIRST_CHUNK_BYTES: usize = 64 * 1024;
/// The largest `tail` the stream accepts.
const MAX_TAIL: i64 = 100_000;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(stream))
        .routes(routes!(validate))
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
    /// Only events matching this CESQL v1 expression, such as
    /// `type LIKE 'user.%' AND subject = 'u1'` (at most 4096 bytes).
    filter: Option<String>,
    /// Only events after this seq (the previous page's `next_after`).
    #[param(value_type = Option<i64>, minimum = 0)]
    after: Option<String>,
    /// Events per page, 1 to 1000 (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// The stream only: replay from the newest `tail` stored events
    /// (documented on the stream's own operation).
    #[param(ignore)]
    tail: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Filter {
    source: Option<String>,
    ty: Option<String>,
    subject: Option<String>,
    /// Shared by the store pages a live tail reads.
    cesql: Option<Arc<CesqlFilter>>,
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
        for (name, value) in [
            ("source", &raw.source),
            ("type", &raw.ty),
            ("subject", &raw.subject),
        ] {
            if let Some(c) = value.as_deref().and_then(forbidden_character) {
                // No stored attribute holds one (ingest refuses them), and
                // PostgreSQL cannot even compare a NUL.
                return Err(ApiError::BadRequest(format!(
                    "query parameter `{name}` contains the character {}, which no CloudEvents attribute may hold",
                    code_point(c)
                )));
            }
        }
        let cesql = match non_empty(raw.filter) {
            None => None,
            Some(text) => Some(Arc::new(CesqlFilter::parse(&text)?)),
        };
        Ok(Filter {
            source: non_empty(raw.source),
            ty: non_empty(raw.ty),
            subject: non_empty(raw.subject),
            cesql,
            after,
            limit,
        })
    }

    /// Whether `event` passes, spending `budget` on the CESQL filter.
    fn matches(&self, event: &StoredEvent, budget: &mut Budget) -> Result<bool, OverBudget> {
        let wanted = |want: &Option<String>, have: Option<&String>| {
            want.as_ref().is_none_or(|w| Some(w) == have)
        };
        let plain = wanted(&self.source, Some(&event.source))
            && wanted(&self.ty, Some(&event.ty))
            && wanted(&self.subject, event.subject.as_ref());
        match &self.cesql {
            Some(cesql) if plain => cesql.matches(event, budget),
            _ => Ok(plain),
        }
    }

    /// Whether a live event passes: within `INLINE_WORK_UNITS` here, else
    /// again on the blocking pool with a page's budget (see `filter`).
    async fn matches_live(&self, event: &StoredEvent) -> Result<bool, PageError> {
        if let Ok(matched) = self.matches(event, &mut Budget::new(INLINE_WORK_UNITS)) {
            return Ok(matched);
        }
        let (filter, copy) = (self.clone(), event.clone());
        filter::evaluate(move || filter.matches(&copy, &mut Budget::new(PAGE_WORK_UNITS)))
            .await
            .ok_or(PageError::ShuttingDown)?
            .map_err(|OverBudget| PageError::TooExpensive { seq: event.seq })
    }

    /// What the store reads for this filter: the plain parameters and the
    /// CESQL filter's pushed-down conditions.
    fn query(&self) -> PageQuery {
        PageQuery {
            after: self.after,
            limit: self.limit,
            source: self.source.clone(),
            ty: self.ty.clone(),
            subject: self.subject.clone(),
            conditions: self
                .cesql
                .as_ref()
                .map(|c| c.sql_conditions().to_vec())
                .unwrap_or_default(),
        }
    }

    /// True when SQL cannot answer this filter alone.
    fn needs_evaluation(&self) -> bool {
        self.cesql.as_ref().is_some_and(|c| c.needs_evaluation())
    }

    /// Whether each of `rows` passes, in order, until `wanted` have or
    /// `budget` runs out (then the verdicts stop before the row it ran out
    /// on). Blocking work: see `filter::evaluate`.
    fn verdicts(&self, rows: &[StoredEvent], wanted: usize, budget: &mut Budget) -> Vec<bool> {
        let mut verdicts = Vec::with_capacity(rows.len());
        let mut matched = 0;
        for event in rows {
            if matched == wanted {
                break;
            }
            match self.matches(event, budget) {
                Ok(verdict) => {
                    matched += usize::from(verdict);
                    verdicts.push(verdict);
                }
                Err(OverBudget) => break,
            }
        }
        verdicts
    }
}

/// The query parameters, or a 400 naming the one that is unknown, repeated
/// or malformed (serde's message quotes it: "unknown field `nope`, expected
/// one of ...").
pub(crate) fn query_params<T: DeserializeOwned>(
    query: Result<Query<T>, QueryRejection>,
) -> Result<T, ApiError> {
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
        (status = 200, description = "A page of stored events. With a `filter` that is evaluated in the service a page examines at most 10,000 rows and a budget of work, so it may hold fewer than `limit` events, even none, and a `next_after` to go on from", body = EventPage,
            headers(("Warning" = String, description = "One per attribute the `filter` names that no stored event has had (a likely typo: the filter matches nothing), e.g. `199 audit-service \"no stored event has the attribute `subjekt`; did you mean `subject`?\"`"))),
        (status = 400, description = "A query parameter is invalid; a bad `filter` has `column` and `offset` members", body = FilterProblem, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip(state))]
async fn list(
    State(state): State<AppState>,
    query: Result<Query<RawFilter>, QueryRejection>,
) -> Result<Response, ApiError> {
    let raw = query_params(query)?;
    if raw.tail.is_some() {
        return Err(ApiError::BadRequest(
            "query parameter `tail` is for /v1/events/stream; pages start at `after`".into(),
        ));
    }
    let filter = Filter::parse(raw)?;
    let page = page(&state.store, &filter, PAGE_MAX_BYTES).await?;
    let warnings = unknown_attributes(&state.store, filter.cesql.as_deref()).await;
    Ok(with_warnings(Json(page).into_response(), warnings))
}

/// The one parameter of `GET /v1/filters/validate`; others are refused.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ValidateParams {
    /// A CESQL v1 expression, at most 4096 bytes.
    filter: String,
}

/// `GET /v1/filters/validate?filter=`: 204 when the filter would be
/// accepted (an empty one filters nothing), else the 400 problem a query
/// with it gets, with the position. Nothing is read from the store, so it
/// is cheap to call on each keystroke.
#[utoipa::path(
    get,
    path = "/v1/filters/validate",
    tag = "audit log",
    params(ValidateParams),
    responses(
        (status = 204, description = "The filter is valid CESQL and calls only functions that exist, with their arities",
            headers(("Warning" = String, description = "One per attribute the filter names that no stored event has had (a likely typo: the filter matches nothing), e.g. `199 audit-service \"no stored event has the attribute `subjekt`; did you mean `subject`?\"`"))),
        (status = 400, description = "The filter is refused: `detail` says why, `column` (characters from 1) and `offset` (bytes) say where", body = FilterProblem, content_type = "application/problem+json"),
    )
)]
async fn validate(
    State(state): State<AppState>,
    query: Result<Query<ValidateParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = query_params(query)?;
    let mut warnings = Vec::new();
    if !params.filter.is_empty() {
        let filter = CesqlFilter::parse(&params.filter)?;
        warnings = unknown_attributes(&state.store, Some(&filter)).await;
    }
    Ok(with_warnings(
        StatusCode::NO_CONTENT.into_response(),
        warnings,
    ))
}

/// What a `Warning` header says about a filter that names attributes no
/// stored event has had: valid CESQL that matches nothing, most likely a
/// typo (`subjekt`). Reads the store's list of names only for a filter that
/// names something besides the context attributes; a failure to read it
/// gives no warning rather than fail the request.
async fn unknown_attributes(store: &Store, filter: Option<&CesqlFilter>) -> Vec<String> {
    let Some(filter) = filter else {
        return Vec::new();
    };
    let names = filter.attributes();
    if names.iter().all(|n| CONTEXT_ATTRIBUTES.contains(n)) {
        return Vec::new();
    }
    let stored = match store.attribute_names().await {
        Ok(stored) => stored,
        Err(error) => {
            tracing::warn!(error = ?error, "reading the stored attribute names failed");
            return Vec::new();
        }
    };
    attributes::unknown(&names, &stored)
        .into_iter()
        .map(|(name, closest)| match closest {
            Some(closest) => format!(
                "199 audit-service \"no stored event has the attribute `{name}`; did you mean `{closest}`?\""
            ),
            None => format!("199 audit-service \"no stored event has the attribute `{name}`\""),
        })
        .collect()
}

/// `response` with one `Warning` header (RFC 9110's warn-code 199, a
/// miscellaneous warning) per text. Attribute names are lower-case letters
/// and digits, so the texts are valid header values.
fn with_warnings(mut response: Response, warnings: Vec<String>) -> Response {
    for warning in warnings {
        if let Ok(value) = HeaderValue::from_str(&warning) {
            response.headers_mut().append(header::WARNING, value);
        }
    }
    response
}

/// A stored size as a byte count.
fn bytes(size: i64) -> usize {
    usize::try_from(size).unwrap_or(usize::MAX)
}

/// Why a page could not be read.
#[derive(Debug)]
enum PageError {
    Store(StoreError),
    /// One event needs more than a page's work budget.
    TooExpensive {
        seq: i64,
    },
    /// The blocking pool is gone: the runtime is stopping.
    ShuttingDown,
}

impl From<StoreError> for PageError {
    fn from(error: StoreError) -> Self {
        PageError::Store(error)
    }
}

impl From<PageError> for ApiError {
    fn from(error: PageError) -> Self {
        match error {
            PageError::Store(e) => ApiError::Store(Arc::new(e)),
            PageError::TooExpensive { seq } => FilterError::TooExpensive { seq }.into(),
            PageError::ShuttingDown => ApiError::NotReady("the service is shutting down".into()),
        }
    }
}

/// The next page: up to `filter.limit` events and `max_bytes` of their
/// JSON; at least one when SQL answers alone.
async fn page(store: &Store, filter: &Filter, max_bytes: usize) -> Result<Page, PageError> {
    if filter.needs_evaluation() {
        evaluated_page(store, filter, max_bytes).await
    } else {
        Ok(store.page(&filter.query(), max_bytes).await?)
    }
}

/// A page whose filter is partly evaluated here. SQL narrows the rows with
/// what it can run and measures the next `EXAMINE_MAX_ROWS` of them; they
/// are read in growing chunks (64 KiB to 1 MiB) and evaluated in seq order,
/// on the blocking pool (`filter::evaluate`), until the page is full, or
/// `EXAMINE_MAX_BYTES` were examined, or the page's `PAGE_WORK_UNITS` are
/// spent. The page's `next_after` is the last seq examined: the rows up to
/// it that are not on the page did not match, so the next page loses
/// nothing and repeats nothing, and it is null only when every row SQL had
/// was examined.
async fn evaluated_page(
    store: &Store,
    filter: &Filter,
    max_bytes: usize,
) -> Result<Page, PageError> {
    let limit = filter.limit as usize;
    let mut query = filter.query();
    let sizes = store.sizes(&query, EXAMINE_MAX_ROWS).await?;
    let mut events = Vec::new();
    let mut page_bytes = 0usize;
    let mut examined_bytes = 0usize;
    let mut last_examined: Option<i64> = None;
    let mut next = 0usize;
    let mut chunk_max = EXAMINE_FIRST_CHUNK_BYTES;
    let mut budget = Budget::new(PAGE_WORK_UNITS);
    while next < sizes.len() {
        // The next chunk: at least one row, within the chunk size and what
        // is left of the budget (the first row of a page is always read).
        let mut end = next;
        let mut chunk_bytes = 0usize;
        for &(_, size) in &sizes[next..] {
            let size = bytes(size);
            let grown = chunk_bytes.saturating_add(size);
            let first_of_chunk = end == next;
            if !first_of_chunk && grown > chunk_max {
                break;
            }
            if (last_examined.is_some() || !first_of_chunk)
                && examined_bytes.saturating_add(grown) > EXAMINE_MAX_BYTES
            {
                break;
            }
            chunk_bytes = grown;
            end += 1;
        }
        // Nothing fits: the budget is spent.
        if end == next {
            break;
        }
        let Some(&(chunk_last, _)) = sizes.get(end - 1) else {
            break;
        };
        query.after = last_examined.unwrap_or(filter.after);
        let rows = store.events(&query, chunk_last).await?;
        // Matches beyond the one that starts the next page are not needed.
        let wanted = limit + 1 - events.len();
        let evaluator = filter.clone();
        let (rows, verdicts, left) = filter::evaluate(move || {
            let verdicts = evaluator.verdicts(&rows, wanted, &mut budget);
            (rows, verdicts, budget)
        })
        .await
        .ok_or(PageError::ShuttingDown)?;
        budget = left;
        let evaluated = verdicts.len();
        let unevaluated = rows.get(evaluated).map(|event| event.seq);
        for (event, matched) in rows.into_iter().zip(verdicts) {
            let seq = event.seq;
            if matched {
                let size = event.json.len();
                if events.len() == limit
                    || (!events.is_empty() && page_bytes.saturating_add(size) > max_bytes)
                {
                    // This event starts the next page.
                    return Ok(Page {
                        events,
                        next_after: last_examined,
                    });
                }
                page_bytes = page_bytes.saturating_add(size);
                events.push(event);
            }
            last_examined = Some(seq);
        }
        if let Some(seq) = unevaluated {
            // The work budget ran out at `seq`: the page ends before it,
            // unless it is the page's first row, which no page can afford.
            return match last_examined {
                None => Err(PageError::TooExpensive { seq }),
                Some(_) => Ok(Page {
                    events,
                    next_after: last_examined,
                }),
            };
        }
        // Rows are never deleted, so the chunk holds exactly the rows
        // measured; its last seq is examined even if it were not.
        last_examined = Some(chunk_last);
        examined_bytes = examined_bytes.saturating_add(chunk_bytes);
        next = end;
        chunk_max = chunk_max.saturating_mul(2).min(EXAMINE_CHUNK_BYTES);
    }
    let examined_all = next >= sizes.len() && sizes.len() < EXAMINE_MAX_ROWS;
    Ok(Page {
        events,
        next_after: if examined_all { None } else { last_examined },
    })
}

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
async fn stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<RawFilter>, QueryRejection>,
) -> Result<Response, ApiError> {
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
                    match self.filter.matches_live(&event).await {
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

fn to_sse(event: &StoredEvent) -> SseEvent {
    let sse = SseEvent::default().event("audit").id(event.seq.to_string());
    // Serializing fails only if a stored row is not JSON, which the store
    // never writes; the fallback keeps the stream going if it ever did.
    sse.clone().json_data(event).unwrap_or(sse)
}
