//! `GET /v1/filters/validate`, and the warnings every read gives about a
//! filter that names attributes no stored event has had.

use super::params::query_params;
use crate::error::{ApiError, FilterProblem};
use crate::filter::CesqlFilter;
use crate::http::state::AppState;
use crate::store::attributes::{self, CONTEXT_ATTRIBUTES};
use crate::store::Store;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;

/// The one parameter of `GET /v1/filters/validate`; others are refused.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct ValidateParams {
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
pub(super) async fn validate(
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
pub(super) async fn unknown_attributes(store: &Store, filter: Option<&CesqlFilter>) -> Vec<String> {
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
pub(super) fn with_warnings(mut response: Response, warnings: Vec<String>) -> Response {
    for warning in warnings {
        if let Ok(value) = HeaderValue::from_str(&warning) {
            response.headers_mut().append(header::WARNING, value);
        }
    }
    response
}
