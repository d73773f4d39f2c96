//! Reading the audit log back: `GET /v1/events` (pages by seq),
//! `GET /v1/events/stream` (a Server-Sent Events live tail) and
//! `GET /v1/filters/validate` (checks a CESQL filter without querying).
//!
//! Memory per request is bounded in bytes, not only in events: a page stops
//! at `limit` events or `PAGE_MAX_BYTES` of event JSON, whichever comes
//! first, and the live tail holds at most one smaller page plus its share
//! of the store's tail buffer (`store::TAIL_MAX_BYTES`).
//!
//! Every page is a keyset query on seq (`seq > after ORDER BY seq`) read
//! through the primary key or the (subject, seq) index, so a page deep in
//! the log costs what the first one does (see the plan test below).
//!
//! A CESQL `filter` is run in two places (see `filter`): its pushed-down
//! part joins `source`, `type` and `subject` in the SQL; when that is not the
//! whole filter, the rows SQL returns are evaluated here, and a page then
//! examines at most `EXAMINE_MAX_ROWS` rows and `EXAMINE_MAX_BYTES` of JSON.
//! Such a page can hold fewer than `limit` events, even none, with a
//! `next_after` to go on from: `next_after` is the last seq examined, not
//! the last one returned, so paging stays exact and no request reads the
//! whole table.

use crate::app::AppState;
use crate::error::ApiError;
use crate::filter::CesqlFilter;
use crate::store::StoredEvent;
use crate::store::{Received, Subscriber};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::routing::get;
use axum::{Json, Router};
use cesql::Column;
use futures::{Stream, StreamExt as _};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};
use std::convert::Infallible;
use std::sync::Arc;

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
/// Rows to evaluate are read in chunks of about this much JSON, so a page
/// holds one chunk besides the events it keeps.
const EXAMINE_CHUNK_BYTES: usize = 1024 * 1024;
/// The largest `tail` the stream accepts.
const MAX_TAIL: i64 = 100_000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/events", get(list))
        .route("/v1/events/stream", get(stream))
        .route("/v1/filters/validate", get(validate))
}

/// Query parameters as sent; `Filter::parse` turns them into a filter or
/// an error naming the parameter. A parameter not listed here is refused
/// (`query_params`) rather than ignored: a client that sends a filter this
/// service does not know would otherwise read every event as if it matched.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFilter {
    source: Option<String>,
    #[serde(rename = "type")]
    ty: Option<String>,
    subject: Option<String>,
    /// A CESQL expression.
    filter: Option<String>,
    after: Option<String>,
    limit: Option<String>,
    /// The stream only: replay from the newest `tail` stored events.
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

    fn matches(&self, event: &StoredEvent) -> bool {
        let wanted = |want: &Option<String>, have: Option<&String>| {
            want.as_ref().is_none_or(|w| Some(w) == have)
        };
        wanted(&self.source, Some(&event.source))
            && wanted(&self.ty, Some(&event.ty))
            && wanted(&self.subject, event.subject.as_ref())
            && self.cesql.as_ref().is_none_or(|c| c.matches(event))
    }

    /// True when SQL cannot answer this filter alone.
    fn needs_evaluation(&self) -> bool {
        self.cesql.as_ref().is_some_and(|c| c.needs_evaluation())
    }
}

/// One page of events, and the `after` of the next page (null when no
/// event follows).
#[derive(Serialize)]
struct Page {
    events: Vec<StoredEvent>,
    next_after: Option<i64>,
}

/// The query parameters, or a 400 naming the one that is unknown, repeated
/// or malformed (serde's message quotes it: "unknown field `nope`, expected
/// one of ...").
fn query_params<T: DeserializeOwned>(
    query: Result<Query<T>, QueryRejection>,
) -> Result<T, ApiError> {
    query
        .map(|Query(raw)| raw)
        .map_err(|rejection| ApiError::BadRequest(rejection.body_text()))
}

#[tracing::instrument(skip(state))]
async fn list(
    State(state): State<AppState>,
    query: Result<Query<RawFilter>, QueryRejection>,
) -> Result<Json<Page>, ApiError> {
    let raw = query_params(query)?;
    if raw.tail.is_some() {
        return Err(ApiError::BadRequest(
            "query parameter `tail` is for /v1/events/stream; pages start at `after`".into(),
        ));
    }
    let filter = Filter::parse(raw)?;
    let page = page(state.store.pool(), &filter, PAGE_MAX_BYTES)
        .await
        .map_err(|e| ApiError::Store(Arc::new(e.into())))?;
    Ok(Json(page))
}

/// The one parameter of `GET /v1/filters/validate`; others are refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ValidateParams {
    filter: String,
}

/// `GET /v1/filters/validate?filter=`: 204 when the filter would be
/// accepted (an empty one filters nothing), else the 400 problem a query
/// with it gets, with the position. Nothing is read from the store, so it
/// is cheap to call on each keystroke.
async fn validate(
    query: Result<Query<ValidateParams>, QueryRejection>,
) -> Result<StatusCode, ApiError> {
    let params = query_params(query)?;
    if !params.filter.is_empty() {
        CesqlFilter::parse(&params.filter)?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `seq > after` and the filters, in a form the planner can only answer
/// in seq order: through the primary key, or the (subject, seq) index when
/// a subject is given. The (source, id) index would find a source's rows
/// faster but in id order, and sorting all of them for every page made
/// each page cost as much as the whole source; `+source` keeps the planner
/// off it (a unary plus is SQLite's way to say "not through an index").
/// The CESQL filter adds its pushed-down conditions the same way.
fn push_filter<'a>(query: &mut QueryBuilder<'a, Sqlite>, filter: &'a Filter, after: i64) {
    query.push(" WHERE seq > ").push_bind(after);
    if let Some(source) = &filter.source {
        query.push(" AND +source = ").push_bind(source);
    }
    if let Some(ty) = &filter.ty {
        query.push(" AND type = ").push_bind(ty);
    }
    if let Some(subject) = &filter.subject {
        query.push(" AND subject = ").push_bind(subject);
    }
    let conditions = filter.cesql.as_ref().map(|c| c.sql_conditions());
    for condition in conditions.unwrap_or_default() {
        query.push(match condition.column {
            Column::Id => " AND id",
            Column::Source => " AND +source",
            Column::Type => " AND type",
            Column::Subject => " AND subject",
        });
        match condition.any_of.as_slice() {
            [one] => {
                query.push(" = ").push_bind(one);
            }
            many => {
                query.push(" IN (");
                let mut list = query.separated(", ");
                for value in many {
                    list.push_bind(value);
                }
                query.push(")");
            }
        }
    }
}

/// The sizes of the next `rows` matching events after `after`, without
/// reading them: SQLite answers `octet_length` of a column from the record
/// header. `prefix` is empty, or `EXPLAIN QUERY PLAN ` in tests.
fn sizes_query<'a>(
    prefix: &str,
    filter: &'a Filter,
    after: i64,
    rows: usize,
) -> QueryBuilder<'a, Sqlite> {
    let mut query = QueryBuilder::new(prefix);
    query.push("SELECT seq, octet_length(event_json) FROM events");
    push_filter(&mut query, filter, after);
    query
        .push(" ORDER BY seq LIMIT ")
        .push_bind(i64::try_from(rows).unwrap_or(i64::MAX));
    query
}

/// The matching events after `after` up to and including `last`.
fn events_query<'a>(
    prefix: &str,
    filter: &'a Filter,
    after: i64,
    last: i64,
) -> QueryBuilder<'a, Sqlite> {
    let mut query = QueryBuilder::new(prefix);
    query.push(
        "SELECT seq, received_at, transport, event_json, source, id, type, subject FROM events",
    );
    push_filter(&mut query, filter, after);
    query
        .push(" AND seq <= ")
        .push_bind(last)
        .push(" ORDER BY seq");
    query
}

fn stored_event(row: &SqliteRow) -> Result<StoredEvent, sqlx::Error> {
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
    })
}

/// A stored size as a byte count.
fn bytes(size: i64) -> usize {
    usize::try_from(size).unwrap_or(usize::MAX)
}

/// The next page: up to `filter.limit` events and `max_bytes` of their JSON.
async fn page(pool: &SqlitePool, filter: &Filter, max_bytes: usize) -> Result<Page, sqlx::Error> {
    if filter.needs_evaluation() {
        evaluated_page(pool, filter, max_bytes).await
    } else {
        sql_page(pool, filter, max_bytes).await
    }
}

/// A page SQL answers alone, at least one event. Two queries: the sizes
/// first, to find where the page ends, then the events up to there. No event
/// can appear later with a seq at or below one already committed (one writer
/// assigns them in commit order), so the second query finds exactly what the
/// first one measured.
async fn sql_page(
    pool: &SqlitePool,
    filter: &Filter,
    max_bytes: usize,
) -> Result<Page, sqlx::Error> {
    let limit = filter.limit as usize;
    let sizes: Vec<(i64, i64)> = sizes_query("", filter, filter.after, limit + 1)
        .build_query_as()
        .fetch_all(pool)
        .await?;
    let mut total = 0usize;
    let mut taken = 0usize;
    for (_, size) in sizes.iter().take(limit) {
        let size = bytes(*size);
        if taken > 0 && total.saturating_add(size) > max_bytes {
            break;
        }
        total = total.saturating_add(size);
        taken += 1;
    }
    let Some(&(last, _)) = taken.checked_sub(1).and_then(|i| sizes.get(i)) else {
        return Ok(Page {
            events: Vec::new(),
            next_after: None,
        });
    };
    let rows = events_query("", filter, filter.after, last)
        .build()
        .fetch_all(pool)
        .await?;
    let events = rows
        .iter()
        .map(stored_event)
        .collect::<Result<_, sqlx::Error>>()?;
    Ok(Page {
        events,
        next_after: (sizes.len() > taken).then_some(last),
    })
}

/// A page whose filter is partly evaluated here. SQL narrows the rows with
/// what it can run and measures the next `EXAMINE_MAX_ROWS` of them; they
/// are read in chunks of `EXAMINE_CHUNK_BYTES` and evaluated in seq order
/// until the page is full or `EXAMINE_MAX_BYTES` were examined. The page's
/// `next_after` is the last seq examined: the rows up to it that are not on
/// the page did not match, so the next page loses nothing and repeats
/// nothing, and it is null only when every row SQL had was examined.
async fn evaluated_page(
    pool: &SqlitePool,
    filter: &Filter,
    max_bytes: usize,
) -> Result<Page, sqlx::Error> {
    let limit = filter.limit as usize;
    let sizes: Vec<(i64, i64)> = sizes_query("", filter, filter.after, EXAMINE_MAX_ROWS)
        .build_query_as()
        .fetch_all(pool)
        .await?;
    let mut events = Vec::new();
    let mut page_bytes = 0usize;
    let mut examined_bytes = 0usize;
    let mut last_examined: Option<i64> = None;
    let mut next = 0usize;
    while next < sizes.len() {
        // The next chunk: at least one row, within the chunk size and what
        // is left of the budget (the first row of a page is always read).
        let mut end = next;
        let mut chunk_bytes = 0usize;
        for &(_, size) in &sizes[next..] {
            let size = bytes(size);
            let grown = chunk_bytes.saturating_add(size);
            let first_of_chunk = end == next;
            if !first_of_chunk && grown > EXAMINE_CHUNK_BYTES {
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
        let chunk_after = last_examined.unwrap_or(filter.after);
        let rows = events_query("", filter, chunk_after, chunk_last)
            .build()
            .fetch_all(pool)
            .await?;
        for row in &rows {
            let event = stored_event(row)?;
            let seq = event.seq;
            if filter.matches(&event) {
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
        // Rows are never deleted, so the chunk holds exactly the rows
        // measured; its last seq is examined even if it were not.
        last_examined = Some(chunk_last);
        examined_bytes = examined_bytes.saturating_add(chunk_bytes);
        next = end;
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
async fn stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<RawFilter>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
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
    // Subscribe before reading the store so that nothing committed in
    // between is missed; what both deliver is skipped by seq.
    let live = state.store.subscribe();
    let pool = state.store.pool().clone();
    let replay = match (last_event_id, tail) {
        // A reconnecting client resumes where it was, whatever it first asked.
        (Some(seq), _) => {
            filter.after = seq;
            true
        }
        (None, Some(tail)) => {
            let newest: i64 = sqlx::query_scalar("SELECT coalesce(max(seq), 0) FROM events")
                .fetch_one(&pool)
                .await
                .map_err(|e| ApiError::Store(Arc::new(e.into())))?;
            filter.after = newest.saturating_sub(tail).max(0);
            true
        }
        (None, None) => has_after,
    };
    let tail = LiveTail {
        live,
        pool,
        filter,
        page: Vec::new().into_iter(),
        page_end: None,
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
/// sent or examined) and whether it reads from the store or the live feed.
struct LiveTail {
    live: Subscriber,
    pool: SqlitePool,
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
                match page(&self.pool, &filter, STREAM_PAGE_MAX_BYTES).await {
                    Ok(page) => {
                        // The last page read: what was committed after it
                        // is in the live feed.
                        self.from_store = page.next_after.is_some();
                        self.page_end = page.next_after;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    /// Every page query, with every combination of filters, walks the
    /// primary key or the (subject, seq) index from `after` in seq order
    /// and stops at the limit: no sort of all matching rows, so its cost
    /// does not grow with the depth of the page or the size of the log.
    /// CESQL filters add their pushed-down conditions without changing that.
    #[tokio::test]
    async fn every_page_query_is_a_keyset_walk_in_seq_order() {
        let dir = tempfile::TempDir::new().unwrap();
        let url = format!("sqlite://{}/audit.db", dir.path().display());
        let (store, writer) = Store::open(&url).await.unwrap();
        let text = |v: &str| Some(v.to_owned());
        let cesql_filters = [
            None,
            Some("type = 't' AND source IN ('/a', '/b')"),
            Some("subject = 'u' AND id = 'x' AND type LIKE 'user.%'"),
            Some("type LIKE 'user.%' OR subject = 'u'"),
        ];
        for (source, ty, subject) in [
            (None, None, None),
            (text("/s"), None, None),
            (None, text("t"), None),
            (None, None, text("u")),
            (text("/s"), text("t"), None),
            (text("/s"), None, text("u")),
            (None, text("t"), text("u")),
            (text("/s"), text("t"), text("u")),
        ] {
            for cesql in cesql_filters {
                let filter = Filter {
                    source: source.clone(),
                    ty: ty.clone(),
                    subject: subject.clone(),
                    cesql: cesql.map(|c| Arc::new(CesqlFilter::parse(c).unwrap())),
                    after: 1_000_000,
                    limit: MAX_LIMIT,
                };
                for mut query in [
                    sizes_query("EXPLAIN QUERY PLAN ", &filter, filter.after, 1001),
                    events_query("EXPLAIN QUERY PLAN ", &filter, filter.after, 2_000_000),
                ] {
                    let plan = query_plan(&store, &mut query).await;
                    let walks_seq = |step: &String| {
                        step.contains("USING INTEGER PRIMARY KEY (rowid>?")
                            || step.contains("USING INDEX events_subject_seq (subject=? AND seq>?")
                    };
                    assert!(
                        plan.len() == 1 && walks_seq(&plan[0]),
                        "{filter:?}: {plan:?}"
                    );
                }
            }
        }
        drop(store);
        writer.close().await;
    }

    async fn query_plan(store: &Store, query: &mut QueryBuilder<'_, Sqlite>) -> Vec<String> {
        query
            .build()
            .fetch_all(store.pool())
            .await
            .unwrap()
            .iter()
            .map(|row| row.get::<String, _>("detail"))
            .collect()
    }

    /// A filter on several subjects reads each one's rows through the
    /// (subject, seq) index and sorts them: the cost is those users'
    /// histories after `after`, never the whole table.
    #[tokio::test]
    async fn a_filter_on_several_subjects_reads_only_their_rows() {
        let dir = tempfile::TempDir::new().unwrap();
        let url = format!("sqlite://{}/audit.db", dir.path().display());
        let (store, writer) = Store::open(&url).await.unwrap();
        let filter = Filter {
            source: None,
            ty: None,
            subject: None,
            cesql: Some(Arc::new(
                CesqlFilter::parse("subject IN ('u1', 'u2') AND type = 't'").unwrap(),
            )),
            after: 5,
            limit: MAX_LIMIT,
        };
        let plan = query_plan(
            &store,
            &mut sizes_query("EXPLAIN QUERY PLAN ", &filter, filter.after, 1001),
        )
        .await;
        assert!(
            plan[0].contains("USING INDEX events_subject_seq (subject=? AND seq>?"),
            "{plan:?}"
        );
        drop(store);
        writer.close().await;
    }
}
