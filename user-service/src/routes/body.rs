//! Reading a JSON request body into the type an endpoint takes, answering
//! a body that is not that with 400 problem+json naming the field.
//!
//! axum's `Json` answers a body of the wrong shape with 422 and a detail
//! that names our Rust type (`expected struct CreateUser`). Here every bad
//! body is a 400, as any other bad input, and the detail says which field
//! is wrong in the client's terms (`name: invalid type: integer, expected a
//! string`); serde_path_to_error finds the field.

use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::error::Category;

/// A request body parsed from JSON (`Content-Type: application/json`).
pub struct JsonBody<T>(pub T);

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(request.headers()) {
            return Err(ApiError::Rejected {
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                detail: "expected a JSON body with Content-Type: application/json".to_owned(),
            });
        }
        let body = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| ApiError::Rejected {
                status: rejection.status(),
                detail: rejection.body_text(),
            })?;
        parse(&body).map(JsonBody)
    }
}

/// `application/json`, or any `application/*+json`, as axum's `Json` takes.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(content_type) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let media_type = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    media_type == "application/json"
        || (media_type.starts_with("application/") && media_type.ends_with("+json"))
}

pub(crate) fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| describe(".", e))?;
    // serde's derived structs also take an array of their fields in order;
    // the API takes objects only.
    if !value.is_object() {
        let kind = match value {
            serde_json::Value::Array(_) => "an array",
            serde_json::Value::String(_) => "a string",
            serde_json::Value::Number(_) => "a number",
            serde_json::Value::Bool(_) => "a boolean",
            _ => "null",
        };
        return Err(ApiError::Invalid(format!(
            "invalid request body: expected a JSON object with the fields `name` and \
             `password`, got {kind}"
        )));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        describe(&field, e.into_inner())
    })
}

fn describe(field: &str, error: serde_json::Error) -> ApiError {
    let category = error.classify();
    // serde_json ends its messages with the position; the field says more.
    let message = error.to_string();
    let position = format!(" at line {} column {}", error.line(), error.column());
    let message = message.strip_suffix(&position).unwrap_or(&message);
    let detail = match category {
        Category::Syntax | Category::Eof | Category::Io => {
            format!("malformed JSON: {message}{position}")
        }
        Category::Data if field == "." => format!("invalid request body: {message}"),
        Category::Data => format!("`{field}`: {message}"),
    };
    ApiError::Invalid(detail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(expecting = "a JSON object with `name`")]
    #[allow(dead_code)]
    struct Named {
        name: String,
    }

    fn detail(body: &str) -> String {
        match parse::<Named>(body.as_bytes()) {
            Err(ApiError::Invalid(detail)) => detail,
            other => panic!("{body}: {other:?}"),
        }
    }

    #[test]
    fn a_body_of_the_wrong_shape_names_the_field_and_no_rust_type() {
        assert_eq!(
            detail(r#"{"name":5}"#),
            "`name`: invalid type: integer `5`, expected a string"
        );
        assert_eq!(
            detail(r#"{"password":"x"}"#),
            "invalid request body: missing field `name`"
        );
        assert!(detail("[]").contains("expected a JSON object"));
        assert!(detail(r#"["Ozzy"]"#).contains("got an array"));
        assert!(detail("{").starts_with("malformed JSON: "));
        assert!(detail(r#"{"name":"a"} x"#).starts_with("malformed JSON: "));
        assert!(parse::<Named>(br#"{"name":"a"}"#).is_ok());
    }
}
