//! Helpers for the answers the service stack adds to an OpenAPI document
//! after the handlers' annotations made it (a door's 401, a limit's 429,
//! the timeout's 408): every operation of a path, and a problem+json
//! response.

use utoipa::openapi::path::Operation;
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, Response, ResponseBuilder};

/// A problem+json response with `description`, for a builder to add
/// headers to.
pub fn problem_response(description: &str) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        crate::problem::CONTENT_TYPE,
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("Problem")))
            .build(),
    )
}

/// A problem+json response with `description`.
pub fn problem(description: &str) -> Response {
    problem_response(description).build()
}

/// Every operation of `doc`, with its path.
pub fn operations_mut(doc: &mut OpenApi) -> impl Iterator<Item = (&str, &mut Operation)> {
    doc.paths.paths.iter_mut().flat_map(|(path, item)| {
        [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ]
        .into_iter()
        .flatten()
        .map(move |operation| (path.as_str(), operation))
    })
}
