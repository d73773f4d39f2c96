//! `GET /v1/events`: stored events in seq order, a page at a time.
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

use super::params::{query_params, Filter, RawFilter};
use super::validate::{unknown_attributes, with_warnings};
use crate::error::{ApiError, FilterProblem};
use crate::filter::{self, FilterError, PAGE_WORK_UNITS};
use crate::http::state::AppState;
use crate::openapi::EventPage;
use crate::store::{Page, Store, StoreError};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cesql::Budget;
use service_kit::problem::Problem;
use std::sync::Arc;

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
pub(super) async fn list(
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

/// A stored size as a byte count.
fn bytes(size: i64) -> usize {
    usize::try_from(size).unwrap_or(usize::MAX)
}

/// Why a page could not be read.
#[derive(Debug)]
pub enum PageError {
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
pub async fn page(store: &Store, filter: &Filter, max_bytes: usize) -> Result<Page, PageError> {
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
