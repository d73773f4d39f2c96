//! Reading the audit log back: `GET /v1/events` (pages by seq, [`page`]),
//! `GET /v1/events/stream` (a Server-Sent Events live tail, [`stream`]) and
//! `GET /v1/filters/validate` (checks a CESQL filter without querying,
//! [`validate`]), all with the query parameters of [`params`].
//!
//! Memory per request is bounded in bytes, not only in events: a page stops
//! at `limit` events or `PAGE_MAX_BYTES` of event JSON, whichever comes
//! first, and the live tail holds at most one smaller page plus its share
//! of the store's tail buffer (`store::TAIL_MAX_BYTES`).

mod page;
mod params;
mod stream;
mod validate;

use crate::http::state::AppState;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use page::{
    page as read_page, PageError, EXAMINE_MAX_BYTES, EXAMINE_MAX_ROWS, PAGE_MAX_BYTES,
    STREAM_PAGE_MAX_BYTES,
};
pub(crate) use params::query_params;
pub use params::Filter as PageFilter;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(page::list))
        .routes(routes!(stream::stream))
        .routes(routes!(validate::validate))
}
