//! Making a replay, for the API and the command line alike: the request
//! checked, its range resolved to seqs, its filter tried on the first
//! event it reads, and the replay stored, pending.

use super::db::{self, ReplayRow};
use super::spec::{ReplayRequest, SpecError};
use crate::filter::FilterError;
use crate::query::{read_page, PageError, PageFilter};
use crate::store::{Store, StoreError};
use std::sync::Arc;

/// Why a replay was not made.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The request cannot run: the client's to fix.
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("the store failed")]
    Store(#[source] StoreError),
    #[error("the service is shutting down")]
    ShuttingDown,
}

/// Stores a new replay of `request`, pending: a replica's supervisor takes
/// it. A filter that needs more work on one event than a page may spend is
/// refused here, as a query with it is, rather than failing the replay
/// later: the first page of the selection is read.
pub async fn create(store: &Store, request: ReplayRequest) -> Result<ReplayRow, CreateError> {
    let spec = request.check()?;
    let id = uuid::Uuid::now_v7().to_string();
    // The broker settings are read as the run will read them, so a wrong
    // subject or URL is refused now.
    if let Some(target) = &spec.request.target {
        target
            .publish_settings(&id)
            .map_err(|e| SpecError::Invalid(format!("`target`: {e:#}")))?;
    }
    let readers = store.readers();
    let request = &spec.request;
    let (from_seq, to_seq) = if request.from_time.is_some() || request.to_time.is_some() {
        db::seqs_received_between(readers, request.from_time, request.to_time)
            .await
            .map_err(CreateError::Store)?
            // No event in the time range: an empty replay.
            .unwrap_or((1, 0))
    } else {
        let newest = store.last_seq().await.map_err(CreateError::Store)?;
        (
            request.from_seq.unwrap_or(1),
            request.to_seq.unwrap_or(newest),
        )
    };
    let filter = PageFilter::of_cesql(spec.filter.clone().map(Arc::new), 1);
    match read_page(store, &filter.after(from_seq - 1), 1).await {
        Ok(_) => {}
        Err(PageError::TooExpensive { seq }) => {
            return Err(SpecError::Filter(FilterError::TooExpensive { seq }).into())
        }
        Err(PageError::Store(e)) => return Err(CreateError::Store(e)),
        Err(PageError::ShuttingDown) => return Err(CreateError::ShuttingDown),
    }
    let row = db::insert(readers, &id, request, from_seq, to_seq)
        .await
        .map_err(CreateError::Store)?;
    tracing::info!(replay = %id, target = %describe(request.target.as_ref()), dry_run = request.dry_run, from_seq, to_seq, "replay created");
    Ok(row)
}

/// The target in words, for logs and listings.
pub fn describe(target: Option<&super::spec::Target>) -> String {
    target.map_or_else(|| "none".to_owned(), super::spec::Target::describe)
}
