//! Reading a JSON request body into the type an endpoint takes, answering
//! a body that is not that with problem+json: 415 unless it is JSON, 400
//! naming the field that is wrong.
//!
//! axum's `Json` answers a body of the wrong shape with 422 and a detail
//! that names our Rust type (`expected struct CreateUser`). Here every bad
//! body is a 400, as any other bad input, and the detail says which field
//! is wrong in the client's terms (`name: invalid type: integer, expected a
//! string`); serde_path_to_error finds the field. A body that is not an
//! object is described by what the type expects: its
//! `#[serde(expecting = "...")]`, which each body type sets.

use crate::problem::Problem;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::{DeserializeOwned, Expected, Visitor};
use serde_json::error::Category;

/// A request body parsed from JSON (`Content-Type: application/json`, or
/// any `application/*+json`).
pub struct JsonBody<T>(pub T);

/// Why a body was not taken: answered as problem+json with its status
/// (400, 413 or 415).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct JsonRejection {
    pub status: StatusCode,
    pub detail: String,
}

impl JsonRejection {
    fn invalid(detail: String) -> Self {
        JsonRejection {
            status: StatusCode::BAD_REQUEST,
            detail,
        }
    }
}

impl IntoResponse for JsonRejection {
    fn into_response(self) -> Response {
        Problem::new(self.status, self.detail).into_response()
    }
}

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = JsonRejection;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(request.headers()) {
            return Err(JsonRejection {
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                detail: "expected a JSON body with Content-Type: application/json".to_owned(),
            });
        }
        let body = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| JsonRejection {
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
    let media_type = cloudevents_wire::binding::media_type(content_type);
    media_type == "application/json"
        || (media_type.starts_with("application/") && media_type.ends_with("+json"))
}

/// `body` as a `T`: a JSON object, each member of the right type.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, JsonRejection> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| describe(".", e))?;
    // serde's derived structs also take an array of their fields in order;
    // the APIs take objects only.
    if !value.is_object() {
        let kind = match value {
            serde_json::Value::Array(_) => "an array",
            serde_json::Value::String(_) => "a string",
            serde_json::Value::Number(_) => "a number",
            serde_json::Value::Bool(_) => "a boolean",
            _ => "null",
        };
        return Err(JsonRejection::invalid(format!(
            "invalid request body: expected {}, got {kind}",
            expecting::<T>()
        )));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        describe(&field, e.into_inner())
    })
}

fn describe(field: &str, error: serde_json::Error) -> JsonRejection {
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
    JsonRejection::invalid(detail)
}

/// What `T` says it expects (its `#[serde(expecting)]`), asked of the
/// visitor its `Deserialize` hands over: serde offers no other way to read
/// it, and an error built by deserializing some wrong value would quote
/// that value.
fn expecting<T: DeserializeOwned>() -> String {
    match T::deserialize(AskExpecting) {
        Err(AskedExpecting(expected)) => expected,
        Ok(_) => "a JSON object".to_owned(),
    }
}

/// A deserializer that holds no value and answers every request with what
/// the visitor expects.
struct AskExpecting;

#[derive(Debug)]
struct AskedExpecting(String);

impl std::fmt::Display for AskedExpecting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AskedExpecting {}

impl serde::de::Error for AskedExpecting {
    fn custom<M: std::fmt::Display>(message: M) -> Self {
        AskedExpecting(message.to_string())
    }
}

impl<'de> serde::Deserializer<'de> for AskExpecting {
    type Error = AskedExpecting;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        Err(AskedExpecting(
            format_args!("{}", &visitor as &dyn Expected).to_string(),
        ))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
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
            Err(JsonRejection { status, detail }) if status == StatusCode::BAD_REQUEST => detail,
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
        assert_eq!(
            detail("[]"),
            "invalid request body: expected a JSON object with `name`, got an array"
        );
        assert!(detail(r#""Ozzy""#).ends_with("with `name`, got a string"));
        assert!(
            !detail(r#""Ozzy""#).contains("Ozzy"),
            "the value is not echoed"
        );
        assert!(detail("{").starts_with("malformed JSON: "));
        assert!(detail(r#"{"name":"a"} x"#).starts_with("malformed JSON: "));
        assert!(parse::<Named>(br#"{"name":"a"}"#).is_ok());
    }

    #[test]
    fn only_json_media_types_are_json() {
        let headers = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, value.parse().unwrap());
            headers
        };
        assert!(is_json(&headers("application/json")));
        assert!(is_json(&headers("Application/JSON; charset=utf-8")));
        assert!(is_json(&headers("application/merge-patch+json")));
        assert!(!is_json(&headers("text/plain")));
        assert!(!is_json(&HeaderMap::new()));
    }
}
