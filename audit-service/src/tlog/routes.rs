//! The transparency log over HTTP: the C2SP tlog-tiles endpoints under
//! `/log/` (checkpoint, tiles, entry bundles) and the verifier key, two
//! JSON conveniences (an event's inclusion proof, a consistency proof) and
//! `DELETE /v1/subjects/{subject}/data`, the erasure door.

use super::db::{self, LeafRecord};
use super::entry;
use super::erase::{self, Selector};
use super::tiles::{Reader, TilePath, WIDTH};
use crate::error::ApiError;
use crate::http::state::AppState;
use crate::query::query_params;
use crate::store::{PageQuery, StoreError};
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Json;
use base64::prelude::{Engine as _, BASE64_STANDARD};
use serde::{Deserialize, Serialize};
use service_kit::problem::Problem;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use tlog_tiles::Hash;
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Full tiles and bundles never change; a partial one never changes
/// either, but is replaced by a wider one as the tree grows.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
const PARTIAL: &str = "public, max-age=60";

/// The tile route takes a path of several segments (`1/x001/234.p/8`),
/// which the document states as one parameter.
#[derive(OpenApi)]
#[openapi(paths(tile))]
struct TileDoc;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(TileDoc::openapi())
        .routes(routes!(checkpoint))
        .routes(routes!(key))
        .routes(routes!(consistency))
        .routes(routes!(inclusion))
        .routes(routes!(erase_subject))
        .route("/log/tile/{*path}", get(tile))
}

fn key_of(state: &AppState) -> Result<&Arc<super::LogKey>, ApiError> {
    state.log.as_ref().ok_or_else(|| {
        ApiError::NotFound(
            "the transparency log is off: set LOG_SIGNING_KEY (or LOG_SIGNING_KEY_FILE)".into(),
        )
    })
}

fn store_error(e: StoreError) -> ApiError {
    ApiError::Store(Arc::new(e))
}

/// The latest checkpoint, and the state it is of.
async fn latest(state: &AppState) -> Result<(db::LogState, String), ApiError> {
    key_of(state)?;
    let log = db::state(state.store.readers())
        .await
        .map_err(store_error)?;
    match log.checkpoint.clone() {
        Some(note) => Ok((log, note)),
        None => Err(ApiError::NotReady(
            "no checkpoint has been signed yet; retry in a second".into(),
        )),
    }
}

/// The latest signed checkpoint: a C2SP tlog-checkpoint (origin, size,
/// root hash) in a C2SP signed note, Ed25519. `Last-Modified` says when it
/// was signed.
#[utoipa::path(
    get,
    path = "/log/checkpoint",
    tag = "transparency log",
    responses(
        (status = 200, description = "The signed checkpoint", body = String, content_type = "text/plain; charset=utf-8"),
        (status = 404, description = "The transparency log is off", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "No checkpoint yet, or the store is unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn checkpoint(State(state): State<AppState>) -> Result<Response, ApiError> {
    let (log, note) = latest(&state).await?;
    let mut response = (
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        note,
    )
        .into_response();
    let signed = log
        .signed_at
        .as_deref()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok());
    if let Some(signed) = signed {
        let http_date = signed
            .with_timezone(&chrono::Utc)
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        if let Ok(value) = HeaderValue::from_str(&http_date) {
            response.headers_mut().insert(header::LAST_MODIFIED, value);
        }
    }
    Ok(response)
}

/// The note verifier key of the checkpoints: `<origin>+<key id>+<key>`.
#[utoipa::path(
    get,
    path = "/log/key",
    tag = "transparency log",
    responses(
        (status = 200, description = "The verifier key", body = String, content_type = "text/plain; charset=utf-8"),
        (status = 404, description = "The transparency log is off", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn key(State(state): State<AppState>) -> Result<Response, ApiError> {
    let key = key_of(&state)?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{}\n", key.verifier_key()),
    )
        .into_response())
}

/// A C2SP tile: `<L>/<N>[.p/<W>]` (W hashes of level 8L, 32 bytes each)
/// or `entries/<N>[.p/<W>]` (an entry bundle: W entries, each after its
/// length as a big-endian uint16). N is written in groups of three digits,
/// all but the last prefixed with `x` (`x001/234`). Full tiles never change.
#[utoipa::path(
    get,
    path = "/log/tile/{path}",
    tag = "transparency log",
    params(("path" = String, Path, description = "The tile's path after `tile/`, such as `0/000`, `1/000.p/3` or `entries/x001/234.p/12`")),
    responses(
        (status = 200, description = "The tile", body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 400, description = "Not a tile path", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such tile in the tree (yet), or the log is off", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn tile(
    State(state): State<AppState>,
    Path(path): Path<String>,
) -> Result<Response, ApiError> {
    key_of(&state)?;
    let tile = TilePath::parse(&path).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "{path:?} is not a C2SP tile path (`<L>/<N>[.p/<W>]` or `entries/<N>[.p/<W>]`)"
        ))
    })?;
    let missing = || ApiError::NotFound(format!("{} is not in the tree", tile.path()));
    let body = match tile {
        TilePath::Hashes {
            level,
            index,
            width,
        } => {
            let stored = db::tiles(state.store.readers(), &[(level, index)])
                .await
                .map_err(store_error)?;
            let bytes = width as usize * tlog_tiles::HASH_SIZE;
            match stored.get(&(level, index)) {
                Some(hashes) if hashes.len() >= bytes => hashes[..bytes].to_vec(),
                _ => return Err(missing()),
            }
        }
        TilePath::Entries { index, width } => {
            let first = index.checked_mul(WIDTH).ok_or_else(missing)?;
            let entries = entries(&state, first, first + width).await?;
            if entries.len() as u64 != width {
                return Err(missing());
            }
            let mut bundle = Vec::new();
            for entry in entries {
                // Entries are at most MAX_ENTRY_BYTES (entry::encode).
                let length = u16::try_from(entry.len()).unwrap_or(u16::MAX);
                bundle.extend_from_slice(&length.to_be_bytes());
                bundle.extend_from_slice(&entry);
            }
            bundle
        }
    };
    let cache = if tile.is_full() { IMMUTABLE } else { PARTIAL };
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (header::CACHE_CONTROL, cache),
        ],
        Body::from(body),
    )
        .into_response())
}

/// The entries with indexes `from..to` that are in the tree, rebuilt from
/// the stored events and their leaves.
async fn entries(state: &AppState, from: u64, to: u64) -> Result<Vec<Vec<u8>>, ApiError> {
    let leaves = db::leaves(state.store.readers(), from, to)
        .await
        .map_err(store_error)?;
    let (Some(first), Some(last)) = (leaves.first(), leaves.last()) else {
        return Ok(Vec::new());
    };
    let events = state
        .store
        .events(
            &PageQuery {
                after: first.seq - 1,
                limit: u32::try_from(WIDTH).unwrap_or(u32::MAX),
                ..PageQuery::default()
            },
            last.seq,
        )
        .await
        .map_err(store_error)?;
    let mut events = events.into_iter().peekable();
    let mut out = Vec::with_capacity(leaves.len());
    for leaf in &leaves {
        while events.peek().is_some_and(|e| e.seq < leaf.seq) {
            events.next();
        }
        let Some(event) = events.next().filter(|e| e.seq == leaf.seq) else {
            // The leaf's event is gone from the table: the bundle cannot
            // be served (`audit-service verify` names the seq).
            return Err(ApiError::Store(Arc::new(StoreError::Record(format!(
                "the event of leaf {} (seq {}) is missing",
                leaf.index, leaf.seq
            )))));
        };
        out.push(
            entry::of_stored(
                &event.received_at,
                event.transport.as_str(),
                &event.json,
                leaf,
            )
            .map_err(|e| ApiError::Store(Arc::new(StoreError::Record(e.to_string()))))?,
        );
    }
    Ok(out)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ProofParams {
    /// The tree size to prove against; the latest checkpoint's by default.
    #[param(minimum = 1)]
    size: Option<u64>,
}

/// An inclusion proof (RFC 6962 audit path, base64 hashes).
#[derive(Serialize, ToSchema)]
struct InclusionProof {
    seq: i64,
    /// The event's leaf index in the tree.
    index: u64,
    tree_size: u64,
    /// The audit path, leaf to root, base64.
    proof: Vec<String>,
    /// The signed checkpoint of `tree_size`, when it is the latest.
    #[serde(skip_serializing_if = "Option::is_none")]
    checkpoint: Option<String>,
}

/// The inclusion proof of an event's leaf in the tree of `size` leaves.
#[utoipa::path(
    get,
    path = "/v1/events/{seq}/proof",
    tag = "transparency log",
    params(("seq" = i64, Path, description = "The event's seq"), ProofParams),
    responses(
        (status = 200, description = "The proof", body = InclusionProof),
        (status = 400, description = "A bad seq or size: the size must include the event and not pass the latest checkpoint", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such event in the tree (yet), or the log is off", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "No checkpoint yet, or the store is unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn inclusion(
    State(state): State<AppState>,
    Path(seq): Path<i64>,
    query: Result<Query<ProofParams>, QueryRejection>,
) -> Result<Json<InclusionProof>, ApiError> {
    let params = query_params(query)?;
    let (log, note) = latest(&state).await?;
    let leaf: LeafRecord = db::leaf_of(state.store.readers(), seq)
        .await
        .map_err(store_error)?
        .filter(|leaf| leaf.index < log.size)
        .ok_or_else(|| ApiError::NotFound(format!("event {seq} is not in the tree (yet)")))?;
    let size = params.size.unwrap_or(log.size);
    if size <= leaf.index || size > log.size {
        return Err(ApiError::BadRequest(format!(
            "`size` must be more than the event's index {} and at most the latest checkpoint's size {}",
            leaf.index, log.size
        )));
    }
    let proof = over_tiles(&state, |r| tlog_tiles::prove_record(size, leaf.index, r)).await?;
    Ok(Json(InclusionProof {
        seq,
        index: leaf.index,
        tree_size: size,
        proof: encode(&proof),
        checkpoint: (size == log.size).then_some(note),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ConsistencyParams {
    /// The older tree size.
    #[param(minimum = 1)]
    from: u64,
    /// The newer tree size; the latest checkpoint's by default.
    #[param(minimum = 1)]
    to: Option<u64>,
}

/// A consistency proof (RFC 6962, base64 hashes).
#[derive(Serialize, ToSchema)]
struct ConsistencyProof {
    from: u64,
    to: u64,
    proof: Vec<String>,
}

/// The proof that the tree of `from` leaves is a prefix of the tree of `to`.
#[utoipa::path(
    get,
    path = "/log/consistency",
    tag = "transparency log",
    params(ConsistencyParams),
    responses(
        (status = 200, description = "The proof", body = ConsistencyProof),
        (status = 400, description = "The sizes must satisfy 1 <= from <= to <= the latest checkpoint's size", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The transparency log is off", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "No checkpoint yet, or the store is unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn consistency(
    State(state): State<AppState>,
    query: Result<Query<ConsistencyParams>, QueryRejection>,
) -> Result<Json<ConsistencyProof>, ApiError> {
    let params = query_params(query)?;
    let (log, _) = latest(&state).await?;
    let to = params.to.unwrap_or(log.size);
    if params.from == 0 || params.from > to || to > log.size {
        return Err(ApiError::BadRequest(format!(
            "the sizes must satisfy 1 <= from <= to <= {} (the latest checkpoint's), got from={} to={to}",
            log.size, params.from
        )));
    }
    let proof = if params.from == to {
        Vec::new()
    } else {
        over_tiles(&state, |r| tlog_tiles::prove_tree(to, params.from, r)).await?
    };
    Ok(Json(ConsistencyProof {
        from: params.from,
        to,
        proof: encode(&proof),
    }))
}

/// Runs a `tlog_tiles` operation over the stored tiles (see `Reader`).
async fn over_tiles<T>(
    state: &AppState,
    op: impl Fn(&Reader<'_>) -> Result<T, tlog_tiles::Error>,
) -> Result<T, ApiError> {
    let tree_error = |e: tlog_tiles::Error| {
        ApiError::Store(Arc::new(StoreError::Record(format!("the tree: {e}"))))
    };
    let recording = Reader::recording();
    op(&recording).map_err(tree_error)?;
    let tiles = db::tiles(state.store.readers(), &recording.tiles_needed())
        .await
        .map_err(store_error)?;
    op(&Reader::Tiles(&tiles)).map_err(tree_error)
}

fn encode(hashes: &[Hash]) -> Vec<String> {
    hashes.iter().map(|h| BASE64_STANDARD.encode(h.0)).collect()
}

/// What an erasure did.
#[derive(Serialize, ToSchema)]
struct Erasure {
    subject: String,
    /// Events of the subject whose data was erased now.
    erased: u64,
}

/// Erases the data (and salts) of every event of `subject`: the events
/// stay, served with `"erased": true` and no data, and every proof still
/// verifies. The erasure is recorded as an `audit.eraseData` event naming
/// the subject, the count and the admin token's fingerprint. Needs a token
/// of `ADMIN_TOKENS`; with none configured the door is closed.
#[utoipa::path(
    delete,
    path = "/v1/subjects/{subject}/data",
    tag = "erasure",
    params(("subject" = String, Path, description = "The subject whose events' data to erase")),
    responses(
        (status = 200, description = "Erased (a subject with nothing left to erase answers `erased: 0`)", body = Erasure),
        (status = 503, description = "The store is unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn erase_subject(
    State(state): State<AppState>,
    Path(subject): Path<String>,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<Erasure>), ApiError> {
    let requested_by = match service_kit::auth::bearer_token(&headers) {
        Some(token) => {
            let digest = Sha256::digest(token);
            let hex: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
            format!("admin token sha256:{hex}")
        }
        None => "an admin request without a token".to_owned(),
    };
    let erased = erase::erase_and_record(&state.store, Selector::Subject(&subject), &requested_by)
        .await
        .map_err(store_error)?;
    Ok((StatusCode::OK, Json(Erasure { subject, erased })))
}
