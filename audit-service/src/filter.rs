//! The `filter` query parameter: a CESQL expression, split into what the store runs as SQL and what the service evaluates.
//!
//! `cesql::Expression::pushdown` finds the top-level AND-ed tests of the form
//! `id`/`source`/`type`/`subject` `= 'text'` or `IN ('text', ...)`. Those go
//! into the SQL `WHERE` clause, beside `seq > after`, and are all a filter
//! like `type = 'user.storeUser' AND subject IN ('u1', 'u2')` needs: the
//! database's answer is the page. Anything else (LIKE, OR, NOT, functions,
//! `time`, `datacontenttype`, extensions) is evaluated here, on the stored
//! JSON read as it is (`cesql::Attributes` of a JSON object: `time` and
//! `dataschema` exactly as received and served, never re-written by the
//! SDK's types), after SQL has narrowed the rows with whatever it could
//! take. Both stores keep an absent subject as NULL
//! and compare text byte for byte (SQLite's BINARY collation; PostgreSQL's
//! default collations are deterministic), the two conditions under which
//! the pushed SQL selects exactly what CESQL matches (cesql/README.md).
//!
//! What one client's filter may cost. A 4 KB filter can make CESQL build
//! long strings and match long LIKE patterns (`CONCAT(id, ... x680) LIKE
//! '%___...X'` cost 25 ms an event, and a page of them held a tokio worker
//! for seconds, past `REQUEST_TIMEOUT_MS`). So evaluation
//!
//! - spends a [`cesql::Budget`] of work units, `PAGE_WORK_UNITS` for a page
//!   (reading each event's JSON counts, one unit a byte), and a page whose
//!   budget runs out ends there, short, with its `next_after`; an event
//!   that alone needs more than a page's budget is a 400;
//! - runs off the async workers ([`evaluate`]), on the blocking pool, at
//!   most `EVALUATION_THREADS` at once whatever the number of clients: the
//!   other cores keep answering requests and storing events, and a request
//!   waiting for its turn is cut by the request timeout like any other.
//!
//! The live tail evaluates each new event inline within `INLINE_WORK_UNITS`
//! (what typical filters need), and only an event that needs more goes to
//! the pool, with a page's budget.
use crate::store::StoredEvent;
use cesql::{Budget, Column, Condition, Expression, OverBudget, ParseError, Pushdown};
use cloudevents_wire::validate::code_point;
use serde_json::{Map, Value};
use std::sync::LazyLock;
use tokio::sync::Semaphore;

/// Work units (about a byte of text read or built each, see
/// `cesql::Budget`) that one page of `GET /v1/events` or of a live tail may
/// spend evaluating a filter, and that one live event may. Typical filters
/// spend a few hundred an event, so 10,000 rows (the page's row bound) take
/// a few million; this is some 30 ms of one core in a release build.
pub const PAGE_WORK_UNITS: u64 = 32_000_000;

/// What a live event may spend on the async worker that receives it;
/// beyond that it is evaluated again on the blocking pool.
pub const INLINE_WORK_UNITS: u64 = 256 * 1024;

/// Filter evaluations running at once, on the blocking pool: half the
/// cores, at least one. Filters wait for a turn rather than take every core.
static EVALUATION_THREADS: LazyLock<Semaphore> = LazyLock::new(|| {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    Semaphore::new((cores / 2).max(1))
});

/// Runs `work` (filter evaluation) on the blocking pool when one of the
/// `EVALUATION_THREADS` is free. `None` when the runtime is shutting down
/// (or `work` panicked, which it has no reason to).
pub async fn evaluate<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    // The semaphore is never closed.
    let _turn = EVALUATION_THREADS.acquire().await.ok()?;
    tokio::task::spawn_blocking(work).await.ok()
}

/// The longest filter accepted. A filter is a few conditions; this bound
/// keeps the SQL it becomes well under SQLite's limit of bound parameters
/// (32,766) and its evaluation per event cheap.
pub const FILTER_MAX_BYTES: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("query parameter `filter` is longer than {FILTER_MAX_BYTES} bytes")]
    TooLong,
    /// A control character other than the white space between tokens: a
    /// string literal holding one matches no stored attribute, and
    /// PostgreSQL cannot compare a NUL at all.
    #[error("query parameter `filter` contains the control character {}, which no CloudEvents attribute may hold", code_point(*.0))]
    ControlCharacter(char),
    /// One event alone needs more work than a whole page may spend.
    #[error(
        "query parameter `filter` needs more work on one event (seq {seq}) than a request may \
         spend ({PAGE_WORK_UNITS} units, about a byte of text read or built each): use shorter \
         LIKE patterns or fewer string functions"
    )]
    TooExpensive { seq: i64 },
    /// The text is not CESQL, or calls a function that does not exist; the
    /// error says where.
    #[error("query parameter `filter` is not a valid CESQL expression: {0}")]
    Invalid(ParseError),
}

/// A parsed, validated filter and the part of it SQL can run.
#[derive(Debug, Clone)]
pub struct CesqlFilter {
    expression: Expression,
    pushdown: Pushdown,
}

impl CesqlFilter {
    /// Parses `text` and refuses what would fail on every event: unknown
    /// functions and wrong arities, which CESQL itself only reports at
    /// evaluation.
    pub fn parse(text: &str) -> Result<Self, FilterError> {
        if text.len() > FILTER_MAX_BYTES {
            return Err(FilterError::TooLong);
        }
        if let Some(c) = text
            .chars()
            .find(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r' | '\u{c}'))
        {
            return Err(FilterError::ControlCharacter(c));
        }
        let expression = Expression::parse(text).map_err(FilterError::Invalid)?;
        expression.validate().map_err(FilterError::Invalid)?;
        let pushdown = expression.pushdown();
        Ok(CesqlFilter {
            expression,
            pushdown,
        })
    }

    /// The attribute names the filter reads, lower case, each once.
    pub fn attributes(&self) -> Vec<&str> {
        self.expression.attributes()
    }

    /// The conditions for the SQL `WHERE` clause, ANDed; each is necessary
    /// for a match.
    pub fn sql_conditions(&self) -> &[Condition] {
        &self.pushdown.conditions
    }

    /// True when SQL alone cannot answer the filter, so every row it returns
    /// must be evaluated here.
    pub fn needs_evaluation(&self) -> bool {
        !self.pushdown.complete
    }

    /// Whether a stored event passes: the pushed conditions on its columns
    /// first (cheap, and enough when they are the whole filter), then the
    /// expression on the stored JSON, read as it is. A filter that fails to
    /// evaluate on an event (a CESQL runtime error, such as a missing
    /// attribute) does not match it. Reading the JSON and evaluating spend
    /// `budget`; `OverBudget` when it ran out before an answer.
    pub fn matches(&self, event: &StoredEvent, budget: &mut Budget) -> Result<bool, OverBudget> {
        let columns_match = self.sql_conditions().iter().all(|condition| {
            let value = match condition.column {
                Column::Id => Some(&event.id),
                Column::Source => Some(&event.source),
                Column::Type => Some(&event.ty),
                Column::Subject => event.subject.as_ref(),
            };
            value.is_some_and(|v| condition.any_of.contains(v))
        });
        if !columns_match {
            return Ok(false);
        }
        if !self.needs_evaluation() {
            return Ok(true);
        }
        budget.spend(event.json.len() as u64)?;
        match serde_json::from_str::<Map<String, Value>>(&event.json) {
            Ok(stored) => self.expression.matches_within(&stored, budget),
            // The store writes only JSON objects, so this does not happen;
            // if it did, an event that cannot be read does not match.
            Err(error) => {
                tracing::warn!(seq = event.seq, %error, "a stored event could not be read back for filtering");
                Ok(false)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudevents_wire::Transport;

    fn stored(json: serde_json::Value) -> StoredEvent {
        let text = |key: &str| json[key].as_str().map(str::to_owned);
        StoredEvent {
            seq: 1,
            received_at: "2026-01-01T00:00:00Z".into(),
            transport: Transport::Http,
            source: text("source").unwrap_or_default(),
            id: text("id").unwrap_or_default(),
            ty: text("type").unwrap_or_default(),
            subject: text("subject"),
            json: json.to_string(),
            trace: None,
            trail: None,
        }
    }

    fn event() -> StoredEvent {
        stored(serde_json::json!({
            "specversion": "1.0", "id": "e1", "source": "/users", "type": "user.storeUser",
            "subject": "u1", "datacontenttype": "application/json",
            "data": {"id": "u1", "name": "Ozzy"}
        }))
    }

    fn matches(filter: &str, event: &StoredEvent) -> bool {
        CesqlFilter::parse(filter)
            .unwrap()
            .matches(event, &mut Budget::new(u64::MAX))
            .unwrap()
    }

    #[test]
    fn pushed_conditions_alone_decide_a_complete_pushdown() {
        let filter =
            CesqlFilter::parse("type = 'user.storeUser' AND subject IN ('u1', 'u2')").unwrap();
        assert!(!filter.needs_evaluation());
        assert!(filter.matches(&event(), &mut Budget::new(0)).unwrap());
        assert!(!matches("subject = 'u2'", &event()));
    }

    #[test]
    fn the_rest_is_evaluated_on_the_stored_json() {
        assert!(matches(
            "type LIKE 'user.%' AND datacontenttype = 'application/json'",
            &event()
        ));
        assert!(!matches(
            "type = 'user.storeUser' AND source LIKE '/other%'",
            &event()
        ));
        assert!(matches(
            "EXISTS subject AND NOT EXISTS dataschema",
            &event()
        ));
    }

    /// The stored JSON keeps `time` and the schema URL as they were sent;
    /// a filter compares with those, not with the SDK's rewriting (UTC,
    /// a normalised URL).
    #[test]
    fn attributes_are_seen_as_stored() {
        let sent = stored(serde_json::json!({
            "specversion": "1.0", "id": "e1", "source": "/s", "type": "t",
            "time": "2024-05-01T10:00:00.5+02:00", "dataschema": "https://example.com"
        }));
        assert!(matches("time = '2024-05-01T10:00:00.5+02:00'", &sent));
        assert!(!matches("time = '2024-05-01T08:00:00.500Z'", &sent));
        assert!(matches("dataschema = 'https://example.com'", &sent));
        let v03 = stored(serde_json::json!({
            "specversion": "0.3", "id": "e2", "source": "/s", "type": "t",
            "schemaurl": "HTTP://Example.com"
        }));
        assert!(matches("schemaurl = 'HTTP://Example.com'", &v03));
    }

    #[test]
    fn a_budget_too_small_for_an_answer_is_no_answer() {
        let filter = CesqlFilter::parse("type LIKE 'user.%'").unwrap();
        let mut budget = Budget::new(10);
        assert!(filter.matches(&event(), &mut budget).is_err());
        let mut budget = Budget::new(10_000);
        assert!(filter.matches(&event(), &mut budget).unwrap());
        assert!(budget.remaining() < 10_000 - event().json.len() as u64);
    }

    #[test]
    fn a_runtime_error_is_no_match() {
        let no_subject = stored(serde_json::json!({
            "specversion": "1.0", "id": "e2", "source": "/s", "type": "t"
        }));
        assert!(!matches("subject = 'x' OR TRUE", &no_subject));
        assert!(!matches("subject = 'u1'", &no_subject));
        assert!(!matches("INT(type) = 0", &no_subject));
    }

    #[test]
    fn bad_filters_are_refused_with_their_position() {
        let FilterError::Invalid(error) = CesqlFilter::parse("type = 'a' AND (").unwrap_err()
        else {
            panic!("not Invalid");
        };
        assert_eq!(error.column, 17);
        let FilterError::Invalid(error) = CesqlFilter::parse("NOPE(type)").unwrap_err() else {
            panic!("not Invalid");
        };
        assert_eq!(
            (error.column, error.message.as_str()),
            (1, "there is no function NOPE")
        );
        assert!(matches!(
            CesqlFilter::parse(&"x".repeat(FILTER_MAX_BYTES + 1)),
            Err(FilterError::TooLong)
        ));
    }
}
