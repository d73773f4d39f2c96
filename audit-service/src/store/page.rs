//! The one SELECT of stored events, written once for both databases:
//! keyset paging by seq with optional equality filters. Parameters are
//! `$n`, which SQLite reads too; each backend binds the values and decodes
//! the rows (their column types differ, the text does not).

/// Which stored events to read.
#[derive(Debug, Clone, Default)]
pub struct PageQuery {
    /// Events with a seq above this one.
    pub after: i64,
    pub limit: u32,
    pub source: Option<String>,
    pub ty: Option<String>,
    pub subject: Option<String>,
}

/// A value to bind, in the order of the `$n` in the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Bind<'a> {
    Int(i64),
    Text(&'a str),
}

/// The columns every reader decodes, in this order.
pub(super) const COLUMNS: &str =
    "seq, received_at, transport, event_json, source, id, type, subject";

impl PageQuery {
    /// The statement and its values.
    pub(super) fn sql(&self) -> (String, Vec<Bind<'_>>) {
        let mut sql = format!("SELECT {COLUMNS} FROM events WHERE seq > $1");
        let mut binds = vec![Bind::Int(self.after)];
        for (column, value) in [
            ("source", &self.source),
            ("type", &self.ty),
            ("subject", &self.subject),
        ] {
            if let Some(value) = value {
                binds.push(Bind::Text(value));
                sql.push_str(&format!(" AND {column} = ${}", binds.len()));
            }
        }
        binds.push(Bind::Int(i64::from(self.limit)));
        sql.push_str(&format!(" ORDER BY seq LIMIT ${}", binds.len()));
        (sql, binds)
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
        let (sql, binds) = query.sql();
        assert!(
            sql.ends_with("WHERE seq > $1 AND type = $2 AND subject = $3 ORDER BY seq LIMIT $4"),
            "{sql}"
        );
        assert_eq!(
            binds,
            [
                Bind::Int(7),
                Bind::Text("t"),
                Bind::Text("s"),
                Bind::Int(10)
            ]
        );
    }
}
