//! Reading pages of stored events, written once for both databases:
//! keyset paging by seq with optional equality filters (the plain
//! parameters, and the part of a CESQL filter pushed down to SQL), bounded
//! in events and in bytes. Parameters are `$n`, which SQLite reads too; each backend
//! binds the values and decodes the rows (their column types differ, the
//! text does not, but for the one word in [`Dialect`]).
//!
//! Every page is a keyset query on seq (`seq > after ORDER BY seq`) read
//! through the primary key or the (subject, seq) index, so a page deep in
//! the log costs what the first one does (see the plan test in `sqlite`).

use super::StoredEvent;
use cesql::{Column, Condition};
use serde::Serialize;

/// Which stored events to read.
#[derive(Debug, Clone, Default)]
pub struct PageQuery {
    /// Events with a seq above this one.
    pub after: i64,
    /// And, when set, at or below this one (a replay's range).
    pub up_to: Option<i64>,
    pub limit: u32,
    pub source: Option<String>,
    pub ty: Option<String>,
    pub subject: Option<String>,
    /// Conditions pushed down from a CESQL filter (`cesql::Pushdown`),
    /// ANDed with the rest: each says a column equals one of its values.
    pub conditions: Vec<Condition>,
}

/// One page of events, and the `after` of the next page (null when no
/// event follows).
#[derive(Debug, Serialize)]
pub struct Page {
    pub events: Vec<StoredEvent>,
    pub next_after: Option<i64>,
}

impl Page {
    pub(super) fn empty() -> Self {
        Page {
            events: Vec::new(),
            next_after: None,
        }
    }
}

/// A value to bind, in the order of the `$n` in the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Bind<'a> {
    Int(i64),
    Text(&'a str),
}

/// What differs between the databases' texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The source column in a filter. The (source, id) index would find a
    /// source's rows faster but in id order, and sorting all of them for
    /// every page made each page cost as much as the whole source; on
    /// SQLite `+source` (a unary plus) keeps the planner off that index.
    /// PostgreSQL's planner weighs the sort against the LIMIT itself, and
    /// has no unary plus for text.
    fn source(self) -> &'static str {
        match self {
            Dialect::Sqlite => "+source",
            Dialect::Postgres => "source",
        }
    }
}

impl PageQuery {
    /// `seq > after` and the filters, answerable only in seq order.
    fn filter<'a>(&'a self, dialect: Dialect, sql: &mut String, binds: &mut Vec<Bind<'a>>) {
        binds.push(Bind::Int(self.after));
        sql.push_str(&format!(" WHERE seq > ${}", binds.len()));
        if let Some(up_to) = self.up_to {
            binds.push(Bind::Int(up_to));
            sql.push_str(&format!(" AND seq <= ${}", binds.len()));
        }
        for (column, value) in [
            (dialect.source(), &self.source),
            ("type", &self.ty),
            ("subject", &self.subject),
        ] {
            if let Some(value) = value {
                binds.push(Bind::Text(value));
                sql.push_str(&format!(" AND {column} = ${}", binds.len()));
            }
        }
        for condition in &self.conditions {
            let column = match condition.column {
                Column::Id => "id",
                Column::Source => dialect.source(),
                Column::Type => "type",
                Column::Subject => "subject",
            };
            let mut placeholders = Vec::with_capacity(condition.any_of.len());
            for value in &condition.any_of {
                binds.push(Bind::Text(value));
                placeholders.push(format!("${}", binds.len()));
            }
            match placeholders.as_slice() {
                [one] => sql.push_str(&format!(" AND {column} = {one}")),
                // CESQL's grammar has no empty IN list, and SQL cannot
                // say one either; a condition no value satisfies is false.
                [] => sql.push_str(" AND FALSE"),
                many => sql.push_str(&format!(" AND {column} IN ({})", many.join(", "))),
            }
        }
    }

    /// The seqs and JSON sizes of the next `rows` matching events,
    /// without reading the events (both databases answer `octet_length`
    /// from the row's header or the value's length word).
    pub(super) fn sizes_sql(&self, dialect: Dialect, rows: usize) -> (String, Vec<Bind<'_>>) {
        let mut sql = "SELECT seq, octet_length(event_json) FROM events".to_owned();
        let mut binds = Vec::new();
        self.filter(dialect, &mut sql, &mut binds);
        binds.push(Bind::Int(i64::try_from(rows).unwrap_or(i64::MAX)));
        sql.push_str(&format!(" ORDER BY seq LIMIT ${}", binds.len()));
        (sql, binds)
    }

    /// The matching events from `after` up to and including `last`.
    pub(super) fn events_sql(&self, dialect: Dialect, last: i64) -> (String, Vec<Bind<'_>>) {
        let mut sql =
            "SELECT seq, received_at, transport, event_json, source, id, type, subject FROM events"
                .to_owned();
        let mut binds = Vec::new();
        self.filter(dialect, &mut sql, &mut binds);
        binds.push(Bind::Int(last));
        sql.push_str(&format!(" AND seq <= ${} ORDER BY seq", binds.len()));
        (sql, binds)
    }

    /// Where the page ends, from the sizes the first query read: up to
    /// `limit` events and `max_bytes` of JSON, at least one. Returns the
    /// last seq of the page and whether more follow. No event can appear
    /// later with a seq at or below one already committed (seqs are handed
    /// out in commit order, see `postgres`), so the second query finds
    /// exactly what the first one measured.
    pub(super) fn cut(&self, sizes: &[(i64, i64)], max_bytes: usize) -> Option<(i64, bool)> {
        let mut bytes = 0usize;
        let mut taken = 0usize;
        for (_, size) in sizes.iter().take(self.limit as usize) {
            let size = usize::try_from(*size).unwrap_or(usize::MAX);
            if taken > 0 && bytes.saturating_add(size) > max_bytes {
                break;
            }
            bytes = bytes.saturating_add(size);
            taken += 1;
        }
        let (last, _) = sizes.get(taken.checked_sub(1)?)?;
        Some((*last, sizes.len() > taken))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_become_numbered_parameters_in_order() {
        let query = PageQuery {
            after: 7,
            limit: 10,
            ty: Some("t".into()),
            subject: Some("s".into()),
            ..PageQuery::default()
        };
        let (sql, binds) = query.events_sql(Dialect::Postgres, 20);
        assert!(
            sql.ends_with(
                "WHERE seq > $1 AND type = $2 AND subject = $3 AND seq <= $4 ORDER BY seq"
            ),
            "{sql}"
        );
        assert_eq!(
            binds,
            [
                Bind::Int(7),
                Bind::Text("t"),
                Bind::Text("s"),
                Bind::Int(20)
            ]
        );
        let (sql, _) = PageQuery {
            source: Some("/s".into()),
            ..query
        }
        .sizes_sql(Dialect::Sqlite, 11);
        assert!(sql.contains("+source = $2"), "{sql}");
        assert!(sql.ends_with("ORDER BY seq LIMIT $5"), "{sql}");
    }

    #[test]
    fn an_upper_bound_follows_the_lower_one() {
        let query = PageQuery {
            after: 7,
            up_to: Some(9),
            ty: Some("t".into()),
            ..PageQuery::default()
        };
        let (sql, binds) = query.sizes_sql(Dialect::Sqlite, 5);
        assert!(
            sql.ends_with("WHERE seq > $1 AND seq <= $2 AND type = $3 ORDER BY seq LIMIT $4"),
            "{sql}"
        );
        assert_eq!(
            binds,
            [Bind::Int(7), Bind::Int(9), Bind::Text("t"), Bind::Int(5)]
        );
    }

    #[test]
    fn pushed_down_conditions_follow_the_plain_filters_as_parameters() {
        let query = PageQuery {
            after: 3,
            ty: Some("t".into()),
            conditions: cesql::Expression::parse(
                "source IN ('/a', '/b') AND id = 'x' AND type LIKE 'u%'",
            )
            .unwrap()
            .pushdown()
            .conditions,
            ..PageQuery::default()
        };
        let (sql, binds) = query.sizes_sql(Dialect::Postgres, 100);
        assert!(
            sql.ends_with(
                "WHERE seq > $1 AND type = $2 AND source IN ($3, $4) AND id = $5 \
                 ORDER BY seq LIMIT $6"
            ),
            "{sql}"
        );
        assert_eq!(
            binds,
            [
                Bind::Int(3),
                Bind::Text("t"),
                Bind::Text("/a"),
                Bind::Text("/b"),
                Bind::Text("x"),
                Bind::Int(100)
            ]
        );
        let (sql, _) = query.events_sql(Dialect::Sqlite, 9);
        assert!(
            sql.contains("AND +source IN ($3, $4) AND id = $5 AND seq <= $6"),
            "{sql}"
        );
    }

    #[test]
    fn a_page_ends_at_the_limit_or_the_byte_budget_and_holds_at_least_one() {
        let query = PageQuery {
            limit: 3,
            ..PageQuery::default()
        };
        let sizes = [(1, 10), (2, 10), (3, 10), (4, 10)];
        assert_eq!(query.cut(&sizes, 1000), Some((3, true)));
        assert_eq!(query.cut(&sizes[..3], 1000), Some((3, false)));
        assert_eq!(query.cut(&sizes, 25), Some((2, true)));
        assert_eq!(query.cut(&[(9, 5000)], 100), Some((9, false)));
        assert_eq!(query.cut(&[], 100), None);
    }
}
