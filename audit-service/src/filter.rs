//! The `filter` query parameter: a CESQL expression, split into what the store runs as SQL and what the service evaluates.
//!
//! `cesql::Expression::pushdown` finds the top-level AND-ed tests of the form
//! `id`/`source`/`type`/`subject` `= 'text'` or `IN ('text', ...)`. Those go
//! into the SQL `WHERE` clause, beside `seq > after`, and are all a filter
//! like `type = 'user.storeUser' AND subject IN ('u1', 'u2')` needs: the
//! database's answer is the page. Anything else (LIKE, OR, NOT, functions,
//! `time`, `datacontenttype`, extensions, the data) is evaluated here, on the
//! stored JSON parsed back into a CloudEvent, after SQL has narrowed the rows
//! with whatever it could take. Both stores keep an absent subject as NULL
//! and compare text byte for byte (SQLite's BINARY collation; PostgreSQL's
//! default collations are deterministic), the two conditions under which
//! the pushed SQL selects exactly what CESQL matches (cesql/README.md).

use crate::store::StoredEvent;
use cesql::{Column, Condition, Expression, ParseError, Pushdown};
use shared::cloudevents::Event;
use shared::validate::code_point;

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
    /// expression on the event parsed back from its JSON. A filter that
    /// fails to evaluate on an event (a CESQL runtime error, such as a
    /// missing attribute) does not match it.
    pub fn matches(&self, event: &StoredEvent) -> bool {
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
            return false;
        }
        if !self.needs_evaluation() {
            return true;
        }
        match serde_json::from_str::<Event>(&event.json) {
            Ok(parsed) => self.expression.matches(&parsed),
            // The store writes only what the SDK serialized, so this does not
            // happen; if it did, an event that cannot be read does not match.
            Err(error) => {
                tracing::warn!(seq = event.seq, %error, "a stored event could not be read back for filtering");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::config::Transport;

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
        CesqlFilter::parse(filter).unwrap().matches(event)
    }

    #[test]
    fn pushed_conditions_alone_decide_a_complete_pushdown() {
        let filter =
            CesqlFilter::parse("type = 'user.storeUser' AND subject IN ('u1', 'u2')").unwrap();
        assert!(!filter.needs_evaluation());
        assert!(filter.matches(&event()));
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
