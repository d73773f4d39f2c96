//! Making a replay, for the API and the command line alike: the request
//! checked, its range resolved to seqs, its filter tried on a sample of the
//! selection, and the replay stored, pending.

use super::db::{self, ReplayRow};
use super::run::{PAGE_BYTES, PAGE_EVENTS};
use super::spec::{ReplayRequest, SpecError};
use crate::filter::{CesqlFilter, FilterError};
use crate::query::{read_page, PageError, PageFilter};
use crate::store::{Store, StoreError};
use std::sync::Arc;

/// Where a filter is tried when a replay is made: from this many points
/// spread evenly over the seq range, the first at its start (the pages the
/// replay reads first).
const SAMPLE_POINTS: i64 = 8;
/// Pages read from each point, as the replay reads them. A page whose work
/// budget runs out ends before the event that spent it, and the next page
/// tries that event with a whole budget: two pages see past one such event.
const SAMPLE_PAGES: usize = 2;

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
/// later: it is tried on a sample of the selection ([`try_filter`]).
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
    if let Some(filter) = &spec.filter {
        try_filter(store, filter, from_seq, to_seq).await?;
    }
    let row = db::insert(readers, &id, request, from_seq, to_seq)
        .await
        .map_err(CreateError::Store)?;
    tracing::info!(replay = %id, target = %describe(request.target.as_ref()), dry_run = request.dry_run, from_seq, to_seq, "replay created");
    Ok(row)
}

/// Reads pages of the selection `from_seq..=to_seq` as the replay will,
/// from `SAMPLE_POINTS` points spread over it, `SAMPLE_PAGES` from each:
/// an event among them that needs more work than a page may spend refuses
/// the replay, wherever it is in its page. A sample, so that making a
/// replay costs at most `SAMPLE_POINTS * SAMPLE_PAGES` pages' work budget
/// (each some 30 ms of one core) whatever the selection's size; how much
/// work a filter needs depends on the events' attributes, so no reading of
/// the filter alone can tell. An over-budget event outside the sample still
/// fails the replay when it is reached, saying which.
async fn try_filter(
    store: &Store,
    filter: &CesqlFilter,
    from_seq: i64,
    to_seq: i64,
) -> Result<(), CreateError> {
    if !filter.needs_evaluation() {
        // SQL answers it alone: no work budget is spent.
        return Ok(());
    }
    let pages = PageFilter::of_cesql(Some(Arc::new(filter.clone())), PAGE_EVENTS).up_to(to_seq);
    let span = to_seq - from_seq + 1;
    // The last seq already examined: points closer than a page apart are
    // not read twice.
    let mut examined = from_seq - 1;
    for point in 0..SAMPLE_POINTS {
        let mut after = (from_seq - 1 + span * point / SAMPLE_POINTS).max(examined);
        for _ in 0..SAMPLE_PAGES {
            if after >= to_seq {
                break;
            }
            let page = read_page(store, &pages.after(after), PAGE_BYTES)
                .await
                .map_err(|e| match e {
                    PageError::TooExpensive { seq } => {
                        SpecError::Filter(FilterError::TooExpensive { seq }).into()
                    }
                    PageError::Store(e) => CreateError::Store(e),
                    PageError::ShuttingDown => CreateError::ShuttingDown,
                })?;
            match page.next_after {
                Some(next) => after = next,
                // Every stored event after `after` was examined.
                None => return Ok(()),
            }
        }
        examined = after;
    }
    Ok(())
}

/// The target in words, for logs and listings.
pub fn describe(target: Option<&super::spec::Target>) -> String {
    target.map_or_else(|| "none".to_owned(), super::spec::Target::describe)
}
