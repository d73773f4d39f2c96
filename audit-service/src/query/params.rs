//! The query parameters of the reads: parsed into a [`Filter`] or refused
//! with a 400 naming the parameter, and the filter applied to an event.

use crate::error::ApiError;
use crate::filter::CesqlFilter;
use crate::store::{PageQuery, StoredEvent};
use axum::extract::rejection::QueryRejection;
use axum::extract::Query;
use cesql::{Budget, OverBudget};
use cloudevents_wire::validate::{code_point, forbidden_character};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::sync::Arc;
use utoipa::IntoParams;

pub(super) const DEFAULT_LIMIT: u32 = 100;
pub(super) const MAX_LIMIT: u32 = 1000;
/// Query parameters as sent; `Filter::parse` turns them into a filter or
/// an error naming the parameter. A parameter not listed here is refused
/// (`query_params`) rather than ignored: a client that sends a filter this
/// service does not know would otherwise read every event as if it matched.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RawFilter {
    /// Only events of this `source`.
    pub(super) source: Option<String>,
    /// Only events of this `type`.
    #[serde(rename = "type")]
    pub(super) ty: Option<String>,
    /// Only events of this `subject`.
    pub(super) subject: Option<String>,
    /// Only events matching this CESQL v1 expression, such as
    /// `type LIKE 'user.%' AND subject = 'u1'` (at most 4096 bytes).
    pub(super) filter: Option<String>,
    /// Only events after this seq (the previous page's `next_after`).
    #[param(value_type = Option<i64>, minimum = 0)]
    pub(super) after: Option<String>,
    /// Events per page, 1 to 1000 (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub(super) limit: Option<String>,
    /// The stream only: replay from the newest `tail` stored events
    /// (documented on the stream's own operation).
    #[param(ignore)]
    pub(super) tail: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Filter {
    pub(super) source: Option<String>,
    pub(super) ty: Option<String>,
    pub(super) subject: Option<String>,
    /// Shared by the store pages a live tail reads.
    pub(super) cesql: Option<Arc<CesqlFilter>>,
    pub(super) after: i64,
    pub(super) up_to: Option<i64>,
    pub(super) limit: u32,
}

impl Filter {
    /// A filter of only a CESQL expression, from seq `after`: what a
    /// replay reads by (`crate::replay`).
    pub fn of_cesql(cesql: Option<Arc<CesqlFilter>>, limit: u32) -> Self {
        Filter {
            source: None,
            ty: None,
            subject: None,
            cesql,
            after: 0,
            up_to: None,
            limit,
        }
    }

    /// The same filter, reading no event past seq `up_to`.
    pub fn up_to(self, up_to: i64) -> Self {
        Filter {
            up_to: Some(up_to),
            ..self
        }
    }

    /// The same filter from seq `after`.
    pub fn after(&self, after: i64) -> Self {
        Filter {
            after,
            ..self.clone()
        }
    }

    pub(super) fn parse(raw: RawFilter) -> Result<Self, ApiError> {
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
            up_to: None,
            limit,
        })
    }

    /// Whether `event` passes, spending `budget` on the CESQL filter.
    pub(super) fn matches(
        &self,
        event: &StoredEvent,
        budget: &mut Budget,
    ) -> Result<bool, OverBudget> {
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

    /// What the store reads for this filter: the plain parameters and the
    /// CESQL filter's pushed-down conditions.
    pub(super) fn query(&self) -> PageQuery {
        PageQuery {
            after: self.after,
            up_to: self.up_to,
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
    pub(super) fn needs_evaluation(&self) -> bool {
        self.cesql.as_ref().is_some_and(|c| c.needs_evaluation())
    }

    /// Whether each of `rows` passes, in order, until `wanted` have or
    /// `budget` runs out (then the verdicts stop before the row it ran out
    /// on). Blocking work: see `filter::evaluate`.
    pub(super) fn verdicts(
        &self,
        rows: &[StoredEvent],
        wanted: usize,
        budget: &mut Budget,
    ) -> Vec<bool> {
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
