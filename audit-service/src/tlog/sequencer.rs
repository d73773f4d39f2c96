//! The sequencer: the one task that appends committed events to the tree,
//! in seq order, and signs a checkpoint after each round, off the ingest
//! path. Ingest commits exactly as it did without the log; this task reads
//! what was committed (by this replica or any other) a round at a time.
//!
//! One sequencer at a time: on PostgreSQL the replica holding a session
//! advisory lock (`LEASE`) is the sequencer, and the others wait to take
//! it over; a killed holder's connection closes and its lock with it, so
//! the next replica takes over within a second. Even two sequencers could
//! not fork the tree: a round is written only if the tree is still the size
//! it was read at (`db::commit_round`), so the tree grows without a gap.
//! On SQLite one process owns the file.
//!
//! It takes the events' leaves from the store's live feed (the one the live
//! tail reads), made as they commit, through an `Inbox` that taps the feed;
//! and reads the events from the table only to catch up: at start, after
//! falling behind the feed, and after an erasure (whose events the inbox
//! still holds as they were). Reading each event back from the table cost
//! more than the rest of the sequencer's work together.
//!
//! The same task carries out `ERASE_ON_TYPES` and `RETENTION`, after the
//! events concerned are in the tree.

use super::db::{self, LogState, Round};
use super::entry::Encoder;
use super::erase::{self, Selector};
use super::inbox::Inbox;
use super::leaf::Leaf;
use super::tiles::{partial_tiles, RightEdge};
use super::{LogKey, LogSettings};
use crate::store::{PageQuery, Store, StoreError};
use chrono::{DateTime, SecondsFormat, Utc};
use service_kit::db::Kind;
use sqlx::Connection as _;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The advisory lock the sequencer holds on PostgreSQL (distinct from the
/// store's seq lock and user-service's).
const LEASE: i64 = 0x0061_7564_6974_0002;
/// Most events one round appends: one transaction, one checkpoint.
const ROUND_MAX_EVENTS: u32 = 10_000;
/// Between rounds when the sequencer has caught up: a new checkpoint at
/// most this long after the first event that needs one (the signed
/// checkpoint lags a commit by about this plus a round).
const ROUND_INTERVAL: Duration = Duration::from_millis(200);
/// How often a waiting replica tries to take the lease.
const LEASE_RETRY: Duration = Duration::from_secs(1);
/// How often retention looks for expired data, at most: a retention
/// shorter than twice this is looked at twice per period.
const RETENTION_INTERVAL: Duration = Duration::from_secs(60);

/// Starts the sequencer when the log is on or an erasure rule is set.
pub fn spawn(
    settings: &LogSettings,
    store: Store,
    database_url: &str,
    shutdown: CancellationToken,
) -> Option<JoinHandle<()>> {
    if settings.key.is_none() && settings.erase_on_types.is_empty() && settings.retention.is_none()
    {
        return None;
    }
    let sequencer = Sequencer {
        key: settings.key.clone(),
        erase_on_types: settings.erase_on_types.clone(),
        retention: settings.retention,
        store,
        database_url: database_url.to_owned(),
        edge: None,
        inbox: None,
        leaves: Vec::new(),
        from_store: true,
        synced_epoch: 0,
    };
    Some(tokio::spawn(sequencer.run(shutdown)))
}

struct Sequencer {
    key: Option<Arc<LogKey>>,
    erase_on_types: Vec<String>,
    retention: Option<Duration>,
    store: Store,
    database_url: String,
    /// The tree's right edge as of the last round this task wrote; `None`
    /// until loaded, and after a round it could not write.
    edge: Option<RightEdge>,
    /// The store's live feed, tapped once this process sequences.
    inbox: Option<Inbox>,
    /// The last round's leaves, kept for the memory.
    leaves: Vec<Leaf>,
    /// Reading from the table until caught up with the live feed.
    from_store: bool,
    /// The erasure epoch the last read from the table saw: an erasure since
    /// then may have changed events the inbox holds as they were.
    synced_epoch: i64,
}

/// Proof that this process may sequence: on PostgreSQL, the connection
/// holding the advisory lock.
enum Lease {
    Sqlite,
    Postgres(sqlx::PgConnection),
}

#[derive(Debug, thiserror::Error)]
enum RoundError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Tree(String),
}

impl Sequencer {
    async fn run(mut self, shutdown: CancellationToken) {
        let mut next_retention = tokio::time::Instant::now();
        'lease: loop {
            let Some(mut lease) = self.take_lease(&shutdown).await else {
                return;
            };
            self.edge = None;
            // Tapped before the first read from the table, so nothing
            // committed in between is missed.
            self.inbox = Some(Inbox::new(self.store.feed(), ROUND_MAX_EVENTS as usize));
            self.resync();
            loop {
                // A round cut short at shutdown commits nothing.
                let round = tokio::select! {
                    () = shutdown.cancelled() => return,
                    round = self.round() => round,
                };
                let more = match round {
                    Ok(more) => more,
                    Err(e) => {
                        tracing::warn!(error = %e, "a transparency log round failed; retrying");
                        false
                    }
                };
                if let Err(e) = self.erase_on_types().await {
                    tracing::warn!(error = %e, "erasing on event types failed; retrying");
                }
                if tokio::time::Instant::now() >= next_retention {
                    next_retention += self.retention.map_or(RETENTION_INTERVAL, |r| {
                        (r / 2).clamp(ROUND_INTERVAL, RETENTION_INTERVAL)
                    });
                    self.expire().await;
                }
                if !more {
                    // Until the next round is due or a round's worth came.
                    let due = tokio::time::Instant::now() + ROUND_INTERVAL;
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = self.wait_for_events(due) => {}
                    }
                }
                if shutdown.is_cancelled() {
                    return;
                }
                if !lease.alive().await {
                    tracing::warn!("lost the sequencer lease; waiting to take it again");
                    continue 'lease;
                }
            }
        }
    }

    /// Waits until this process may sequence; `None` at shutdown.
    async fn take_lease(&self, shutdown: &CancellationToken) -> Option<Lease> {
        if Kind::of(&self.database_url).ok()? == Kind::Sqlite {
            return Some(Lease::Sqlite);
        }
        let mut announced = false;
        loop {
            match self.try_lease().await {
                Ok(Some(connection)) => {
                    tracing::info!("this replica is the transparency log's sequencer");
                    return Some(Lease::Postgres(connection));
                }
                Ok(None) if !announced => {
                    announced = true;
                    tracing::info!("another replica is the sequencer; standing by to take over");
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot reach the database for the sequencer lease")
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return None,
                () = tokio::time::sleep(LEASE_RETRY) => {}
            }
        }
    }

    async fn try_lease(&self) -> Result<Option<sqlx::PgConnection>, sqlx::Error> {
        let options =
            service_kit::db::postgres_options(&self.database_url, "audit-service sequencer")?;
        let mut connection = sqlx::PgConnection::connect_with(&options).await?;
        let held: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(LEASE)
            .fetch_one(&mut connection)
            .await?;
        Ok(held.then_some(connection))
    }

    /// Appends the next committed events to the tree and signs its new
    /// checkpoint; true when more are waiting.
    async fn round(&mut self) -> Result<bool, RoundError> {
        let Some(key) = self.key.clone() else {
            return Ok(false);
        };
        let readers = self.store.readers().clone();
        // Read before the events: an erasure after this makes the round's
        // write fail, so no leaf is written from data already erased.
        let state = db::state(&readers).await?;
        let mut edge = match self.edge.take() {
            Some(edge) if edge.size() == state.size => edge,
            _ => self.load_edge(&state).await?,
        };
        if state.erasure_epoch != self.synced_epoch {
            self.resync();
        }
        // Into the last round's buffer: a new one each round (some 1.3 MiB)
        // came from the system and went back to it.
        let mut new = std::mem::take(&mut self.leaves);
        new.clear();
        let more = self.next_leaves(&state, &mut new).await?;
        if new.is_empty() && state.checkpoint.is_some() {
            self.edge = Some(edge);
            self.leaves = new;
            return Ok(false);
        }
        let started = std::time::Instant::now();
        let from_size = edge.size();
        let mut leaves = Vec::with_capacity(new.len());
        for leaf in &new {
            leaves.push(leaf.record(edge.size()));
            edge.push(leaf.hash);
        }
        let root = edge.root().map_err(|e| RoundError::Tree(e.to_string()))?;
        let checkpoint = key.sign(edge.size(), root).map_err(RoundError::Tree)?;
        let signed = Utc::now();
        let round = Round {
            from_size,
            epoch: state.erasure_epoch,
            leaves,
            tiles: edge.take_changes(),
            size: edge.size(),
            last_seq: new.last().map_or(state.last_seq, |l| l.seq),
            checkpoint,
            signed_at: signed.to_rfc3339_opts(SecondsFormat::Micros, true),
        };
        let computed = started.elapsed();
        let size = round.size;
        let committed = db::commit_round(&self.store, round).await?;
        if !committed {
            self.resync();
            tracing::info!(
                size = from_size,
                "the tree moved or an erasure intervened; reading the round again"
            );
            return Ok(true);
        }
        // One sample per commit, not per event: the events of a commit share
        // its received_at and so their lag, and a sample per event held the
        // whole round's samples in the recorder until its upkeep (some 4 MiB
        // under batch ingest, at 100,000 events a second).
        let lag = metrics::histogram!("audit_log_checkpoint_lag_seconds");
        let mut previous: Option<&str> = None;
        for leaf in &new {
            if previous == Some(&*leaf.received_at) {
                continue;
            }
            previous = Some(&leaf.received_at);
            if let Ok(received) = DateTime::parse_from_rfc3339(&leaf.received_at) {
                let micros = (signed - received.with_timezone(&Utc)).num_microseconds();
                lag.record(micros.unwrap_or_default() as f64 / 1e6);
            }
        }
        metrics::gauge!("audit_log_size").set(size as f64);
        tracing::debug!(
            size,
            events = new.len(),
            compute_ms = computed.as_secs_f64() * 1e3,
            write_ms = (started.elapsed() - computed).as_secs_f64() * 1e3,
            "signed a checkpoint"
        );
        self.edge = Some(edge);
        self.leaves = new;
        Ok(more)
    }

    /// Appends to `leaves` those of the next committed events after the
    /// tree's last (up to a round's worth), and says whether more are
    /// waiting: from the live feed once caught up, else from the table.
    async fn next_leaves(
        &mut self,
        state: &LogState,
        leaves: &mut Vec<Leaf>,
    ) -> Result<bool, RoundError> {
        if let Some(inbox) = self.inbox.as_mut() {
            if inbox.take_lagged() {
                // What the feed lost is in the table; what the inbox holds
                // since then follows it. Logged once each time it falls
                // behind: reading the table costs ingest more than the feed.
                if !self.from_store {
                    tracing::info!(
                        tree_last_seq = state.last_seq,
                        "the transparency log fell behind the committed events; \
                         reading them from the table until it catches up"
                    );
                }
                self.from_store = true;
            }
            if !self.from_store {
                inbox.take(state.last_seq, ROUND_MAX_EVENTS as usize, leaves);
                // A round's worth: what is left waits for the next one.
                return Ok(inbox.full());
            }
        }
        let page = self
            .store
            .page(
                &PageQuery {
                    after: state.last_seq,
                    limit: ROUND_MAX_EVENTS,
                    ..PageQuery::default()
                },
                64 * 1024 * 1024,
            )
            .await?;
        self.synced_epoch = state.erasure_epoch;
        // The last page: what commits after it is in the live feed.
        self.from_store = page.next_after.is_some();
        let mut encoder = Encoder::default();
        for event in &page.events {
            let leaf = Leaf::of(event, &mut encoder)
                .map_err(|e| RoundError::Tree(format!("seq {}: {e}", event.seq)))?;
            leaves.push(leaf);
        }
        Ok(page.next_after.is_some())
    }

    /// Reads from the table until caught up, forgetting what the inbox
    /// holds: the table has those events too, as they are now.
    fn resync(&mut self) {
        self.from_store = true;
        if let Some(inbox) = self.inbox.as_mut() {
            inbox.clear();
        }
    }

    /// Waits until `due` or until a round's worth is queued; only sleeps
    /// while reading from the table.
    async fn wait_for_events(&mut self, due: tokio::time::Instant) {
        match self.inbox.as_mut() {
            Some(inbox) if !self.from_store => inbox.fill_until(due).await,
            _ => tokio::time::sleep_until(due).await,
        }
    }

    async fn load_edge(&self, state: &LogState) -> Result<RightEdge, RoundError> {
        let wanted: Vec<(u8, u64)> = partial_tiles(state.size)
            .into_iter()
            .map(|(level, index, _)| (level, index))
            .collect();
        let stored = db::tiles(self.store.readers(), &wanted).await?;
        RightEdge::load(state.size, &stored).map_err(RoundError::Tree)
    }

    /// Erases the data of the subjects of newly stored events whose type is
    /// in `ERASE_ON_TYPES`, once those events are in the tree.
    async fn erase_on_types(&self) -> Result<(), StoreError> {
        if self.erase_on_types.is_empty() {
            return Ok(());
        }
        let readers = self.store.readers().clone();
        let state = db::state(&readers).await?;
        let page = self
            .store
            .page(
                &PageQuery {
                    after: state.erase_cursor,
                    limit: 1000,
                    ..PageQuery::default()
                },
                16 * 1024 * 1024,
            )
            .await?;
        for event in &page.events {
            // With the log on, an event is erased only once it is a leaf,
            // so the tree commits to the data it had.
            if self.key.is_some() && event.seq > state.last_seq {
                break;
            }
            if let (true, Some(subject)) = (
                self.erase_on_types.contains(&event.ty),
                event.subject.as_deref(),
            ) {
                let requested_by = format!(
                    "ERASE_ON_TYPES: {} {} (seq {})",
                    event.ty, event.id, event.seq
                );
                erase::erase_and_record(&self.store, Selector::Subject(subject), &requested_by)
                    .await?;
            }
            db::set_erase_cursor(&readers, event.seq).await?;
        }
        Ok(())
    }

    async fn expire(&self) {
        let Some(retention) = self.retention else {
            return;
        };
        let Ok(age) = chrono::Duration::from_std(retention) else {
            return;
        };
        let before = Utc::now() - age;
        let up_to = match (&self.key, db::state(self.store.readers()).await) {
            (None, _) => i64::MAX,
            (Some(_), Ok(state)) => state.last_seq,
            (Some(_), Err(e)) => {
                tracing::warn!(error = %e, "erasing expired data failed; retrying");
                return;
            }
        };
        let requested_by = format!("RETENTION={}", humantime::format_duration(retention));
        let selector = Selector::ReceivedBefore { before, up_to };
        if let Err(e) = erase::erase_and_record(&self.store, selector, &requested_by).await {
            tracing::warn!(error = %e, "erasing expired data failed; retrying");
        }
    }
}

impl Lease {
    async fn alive(&mut self) -> bool {
        match self {
            Lease::Sqlite => true,
            Lease::Postgres(connection) => connection.ping().await.is_ok(),
        }
    }
}
