//! Running one replay: stored events in seq order, a page at a time, through
//! the publisher of its target, at its rate, recording how far it got.
//!
//! The order and completeness rules:
//! - events are read by the same pages `GET /v1/events` serves (the
//!   filter's pushed-down part in SQL, the rest evaluated within its work
//!   budget), so the replay selects exactly what that query shows;
//! - over HTTP one request is in flight at a time, so events arrive in seq
//!   order; a request that is retried (404, 408, 409, 429, 5xx, no answer)
//!   is sent again until it is acknowledged, after the delivery rules'
//!   backoff (honouring `Retry-After`), and nothing after it is sent
//!   before; a refused batch is sent again one event at a time, and a
//!   refused event is a dead letter;
//! - to a broker, events are handed over in seq order with many in
//!   flight, and their acknowledgements are awaited in that order; a
//!   failure sends again from the first event not acknowledged, so the
//!   broker may get an event twice, never miss one;
//! - the position (the last seq done with) moves only past events
//!   acknowledged, dead-lettered or skipped, and is stored at least every
//!   `SAVE_INTERVAL`: after a crash the replay goes on from there, sending
//!   again at most what was acknowledged since.

use super::db::{self, Counts, ReplayState};
use super::pace::Pace;
use super::spec::{Erased, HttpMode, Spec, Target};
use super::ReplaySettings;
use crate::query::{read_page, PageError, PageFilter};
use crate::store::{Store, StoredEvent};
use cloudevents::Event;
use publishers::{Backoff, HttpPublisher, Outcome, Pipelined, PublishSettings, Publisher, Report};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Events read per page.
pub(super) const PAGE_EVENTS: u32 = 1000;
/// The most event JSON one page holds.
pub(super) const PAGE_BYTES: usize = 4 * 1024 * 1024;
/// How often progress is stored (and the lease renewed) while sending.
const SAVE_INTERVAL: Duration = Duration::from_secs(1);

/// The delivery rules' retry delays: user-service's relay's, with a lower
/// cap. The relay's 30 s spreads many services' retries over a receiver
/// coming back; a replay is one sender, one request in flight, that an
/// operator watches, and with a 30 s cap a recovered endpoint could wait
/// up to 30 s (15 s on average) for it to resume. At 5 s it resumes within
/// 5 s of the recovery and still retries an endpoint that is down only
/// every few seconds. A `Retry-After` is honoured as the relay honours it.
const BACKOFF: Backoff = Backoff {
    initial: Duration::from_millis(100),
    max: Duration::from_secs(5),
    retry_after_max: Duration::from_secs(600),
};

/// Why a replay stopped before its end.
#[derive(Debug)]
enum Stop {
    /// Cancelled, its lease lost, or the service stopping: another run
    /// (or none) takes it from its stored position.
    Interrupted,
    /// It cannot go on.
    Failed(String),
}

/// One replay in progress on this replica.
struct Run<'a> {
    store: &'a Store,
    settings: &'a ReplaySettings,
    id: &'a str,
    owner: &'a str,
    stop: &'a CancellationToken,
    position: i64,
    counts: Counts,
    saved_at: Instant,
}

/// Runs replay `id`, whose lease `owner` holds, until it is done, fails,
/// is cancelled or loses its lease, or `stop` is cancelled.
pub(super) async fn run(
    store: Store,
    settings: ReplaySettings,
    id: String,
    owner: String,
    stop: CancellationToken,
) {
    let readers = store.readers().clone();
    let row = match db::get(&readers, &id).await {
        Ok(Some(row)) => row,
        Ok(None) => return,
        Err(error) => {
            tracing::warn!(replay = %id, error = ?error, "reading a replay failed");
            let _ = db::release(&readers, &id, &owner).await;
            return;
        }
    };
    let mut run = Run {
        store: &store,
        settings: &settings,
        id: &id,
        owner: &owner,
        stop: &stop,
        position: row.position,
        counts: row.counts,
        saved_at: Instant::now(),
    };
    tracing::info!(replay = %id, position = row.position, to_seq = row.to_seq, "replay running");
    let ended = match row.request.clone().check() {
        Ok(spec) => run.send_all(&spec, row.to_seq).await,
        Err(error) => Err(Stop::Failed(format!(
            "the replay's request is invalid: {error}"
        ))),
    };
    let saved = run.save().await;
    let result = match ended {
        Ok(()) if saved => db::finish(&readers, &id, &owner, ReplayState::Done, None).await,
        Ok(()) | Err(Stop::Interrupted) => db::release(&readers, &id, &owner).await,
        Err(Stop::Failed(reason)) => {
            tracing::warn!(replay = %id, %reason, "replay failed");
            db::finish(&readers, &id, &owner, ReplayState::Failed, Some(&reason)).await
        }
    };
    if let Err(error) = result {
        tracing::warn!(replay = %id, error = ?error, "recording a replay's end failed");
    }
    tracing::info!(replay = %id, position = run.position, sent = run.counts.sent, "replay stopped");
}

/// The sending side of a replay: nothing for a dry run.
enum Sender {
    DryRun,
    Http {
        publisher: HttpPublisher,
        batch: usize,
        mode: HttpMode,
    },
    Pipelined(Box<dyn Pipelined>),
}

impl Run<'_> {
    async fn send_all(&mut self, spec: &Spec, to_seq: i64) -> Result<(), Stop> {
        let request = &spec.request;
        let sender = match (&request.target, request.dry_run) {
            (Some(target), false) => sender(target, self.id).await?,
            _ => Sender::DryRun,
        };
        let batch = match &sender {
            Sender::Http { batch, .. } => *batch,
            _ => 1,
        };
        let mut pace = request.rate.map(|rate| Pace::new(rate, batch));
        let filter =
            PageFilter::of_cesql(spec.filter.clone().map(Arc::new), PAGE_EVENTS).up_to(to_seq);
        while self.position < to_seq {
            if self.stop.is_cancelled() || self.saved_at.elapsed() >= SAVE_INTERVAL {
                self.check_in().await?;
            }
            let page = match read_page(self.store, &filter.after(self.position), PAGE_BYTES).await {
                Ok(page) => page,
                Err(PageError::TooExpensive { seq }) => {
                    return Err(Stop::Failed(format!(
                        "the filter needs more work on the event of seq {seq} than a page may spend"
                    )))
                }
                Err(PageError::ShuttingDown) => return Err(Stop::Interrupted),
                Err(PageError::Store(error)) => {
                    tracing::warn!(replay = %self.id, error = ?error, "reading events to replay failed; trying again");
                    self.pause(Duration::from_secs(1)).await?;
                    continue;
                }
            };
            let examined_to = page.next_after.unwrap_or(to_seq).min(to_seq);
            let mut events = Vec::with_capacity(page.events.len());
            for event in page.events {
                let erased = event.trail.as_ref().is_some_and(|t| t.erased);
                if erased && request.erased == Erased::Skip {
                    events.push(Item::Skip(event.seq));
                } else {
                    events.push(Item::Send(event));
                }
            }
            match &sender {
                Sender::DryRun => {
                    for item in &events {
                        match item {
                            Item::Skip(_) => self.counts.skipped += 1,
                            Item::Send(_) => self.counts.sent += 1,
                        }
                    }
                }
                Sender::Http {
                    publisher,
                    batch,
                    mode,
                } => {
                    self.send_http(
                        publisher,
                        *mode,
                        *batch,
                        &events,
                        request.replayid,
                        &mut pace,
                    )
                    .await?
                }
                Sender::Pipelined(publisher) => {
                    self.send_pipelined(publisher.as_ref(), &events, request.replayid, &mut pace)
                        .await?
                }
            }
            // Every selected event up to the last one examined is done.
            self.position = self.position.max(examined_to);
        }
        if let Sender::Pipelined(publisher) = &sender {
            publisher.flush().await;
        }
        Ok(())
    }

    /// Over HTTP: one request at a time, in order.
    async fn send_http(
        &mut self,
        publisher: &HttpPublisher,
        mode: HttpMode,
        batch: usize,
        items: &[Item],
        replayid: bool,
        pace: &mut Option<Pace>,
    ) -> Result<(), Stop> {
        let mut start = 0;
        while start < items.len() {
            // A batch ends before a skipped event, which moves the position alone.
            if let Item::Skip(seq) = &items[start] {
                self.skipped(*seq);
                start += 1;
                continue;
            }
            let end = items[start..]
                .iter()
                .take(batch)
                .position(|item| matches!(item, Item::Skip(_)))
                .map_or((start + batch).min(items.len()), |n| start + n);
            let events: Vec<&StoredEvent> = items[start..end]
                .iter()
                .filter_map(|item| match item {
                    Item::Send(event) => Some(event),
                    Item::Skip(_) => None,
                })
                .collect();
            if let Some(pace) = pace {
                pace.wait(events.len()).await;
            }
            if mode == HttpMode::Batch && events.len() > 1 {
                let acked = self.http_batch(publisher, &events, replayid).await?;
                if !acked {
                    for event in &events {
                        self.http_single(publisher, event, replayid).await?;
                    }
                }
            } else {
                for event in &events {
                    self.http_single(publisher, event, replayid).await?;
                }
            }
            start = end;
            if self.saved_at.elapsed() >= SAVE_INTERVAL {
                self.check_in().await?;
            }
        }
        Ok(())
    }

    /// Sends a batch until it is acknowledged (true) or refused (false).
    async fn http_batch(
        &mut self,
        publisher: &HttpPublisher,
        events: &[&StoredEvent],
        replayid: bool,
    ) -> Result<bool, Stop> {
        let mut bodies = Vec::with_capacity(events.len());
        for event in events {
            match outgoing_json(event, replayid.then_some(self.id)) {
                Ok(json) => bodies.push(json),
                // Sent alone, it is dead-lettered with the reason.
                Err(_) => return Ok(false),
            }
        }
        let mut attempts = 0u32;
        loop {
            match publisher.publish_batch(&bodies).await {
                Outcome::Ack => {
                    for event in events {
                        self.acknowledged(event.seq);
                    }
                    return Ok(true);
                }
                Outcome::Nack { status, reason } => {
                    tracing::info!(replay = %self.id, status, %reason, "batch refused, sending its events one by one");
                    return Ok(false);
                }
                Outcome::Retry { after, reason, .. } => {
                    attempts += 1;
                    self.retry_wait(attempts, after, &reason).await?;
                }
            }
        }
    }

    /// Sends one event until it is acknowledged or refused for good.
    async fn http_single(
        &mut self,
        publisher: &HttpPublisher,
        stored: &StoredEvent,
        replayid: bool,
    ) -> Result<(), Stop> {
        let event = match outgoing(stored, replayid.then_some(self.id)) {
            Ok(event) => event,
            Err(reason) => return self.dead_letter(stored, None, &reason).await,
        };
        let mut attempts = 0u32;
        loop {
            match publisher.publish(&event).await {
                Outcome::Ack => {
                    self.acknowledged(stored.seq);
                    return Ok(());
                }
                Outcome::Nack { status, reason } => {
                    return self.dead_letter(stored, status, &reason).await
                }
                Outcome::Retry { after, reason, .. } => {
                    attempts += 1;
                    self.retry_wait(attempts, after, &reason).await?;
                }
            }
        }
    }

    /// To a broker: the page handed over in order, acknowledgements awaited
    /// in order; a failure sends again from the first event not
    /// acknowledged.
    async fn send_pipelined(
        &mut self,
        publisher: &dyn Pipelined,
        items: &[Item],
        replayid: bool,
        pace: &mut Option<Pace>,
    ) -> Result<(), Stop> {
        let mut start = 0;
        let mut attempts = 0u32;
        while start < items.len() {
            let mut pending = Vec::new();
            let mut refused_at_once = None;
            for item in &items[start..] {
                let Item::Send(stored) = item else {
                    pending.push(None);
                    continue;
                };
                let event = match outgoing(stored, replayid.then_some(self.id)) {
                    Ok(event) => event,
                    Err(reason) => {
                        refused_at_once = Some(Report::Refused(reason));
                        break;
                    }
                };
                if let Some(pace) = pace {
                    pace.wait(1).await;
                    // A slow pace hands a page over for long: the lease
                    // must not lapse meanwhile.
                    if self.saved_at.elapsed() >= SAVE_INTERVAL {
                        self.check_in().await?;
                    }
                }
                match publisher.enqueue(event).await {
                    Ok(report) => pending.push(Some(report)),
                    Err(report) => {
                        refused_at_once = Some(report);
                        break;
                    }
                }
            }
            let handed_over = pending.len();
            let mut failure = None;
            for (offset, report) in pending.into_iter().enumerate() {
                let item = &items[start + offset];
                let report = match report {
                    None => {
                        if let Item::Skip(seq) = item {
                            self.skipped(*seq);
                        }
                        continue;
                    }
                    Some(pending) => tokio::time::timeout(publisher.timeout(), pending)
                        .await
                        .unwrap_or_else(|_| {
                            Report::Failed("no acknowledgement within the publish timeout".into())
                        }),
                };
                let Item::Send(stored) = item else { continue };
                match report {
                    Report::Delivered => self.acknowledged(stored.seq),
                    Report::Refused(reason) => self.dead_letter(stored, None, &reason).await?,
                    Report::Failed(reason) => {
                        failure = Some((start + offset, reason, false));
                        break;
                    }
                    Report::Fatal(reason) => {
                        failure = Some((start + offset, reason, true));
                        break;
                    }
                }
                if self.saved_at.elapsed() >= SAVE_INTERVAL {
                    self.check_in().await?;
                }
            }
            if let Some((at, reason, fatal)) = failure {
                attempts += 1;
                start = at;
                if fatal {
                    rebuild(publisher)?;
                }
                self.retry_wait(attempts, None, &reason).await?;
                continue;
            }
            start += handed_over;
            match refused_at_once {
                None => attempts = 0,
                Some(Report::Refused(reason)) => {
                    if let Some(Item::Send(stored)) = items.get(start) {
                        self.dead_letter(stored, None, &reason).await?;
                    }
                    start += 1;
                }
                Some(Report::Failed(reason)) => {
                    attempts += 1;
                    self.retry_wait(attempts, None, &reason).await?;
                }
                Some(Report::Fatal(reason)) => {
                    attempts += 1;
                    rebuild(publisher)?;
                    self.retry_wait(attempts, None, &reason).await?;
                }
                Some(Report::Delivered) => {}
            }
        }
        Ok(())
    }

    fn acknowledged(&mut self, seq: i64) {
        self.counts.sent += 1;
        self.position = self.position.max(seq);
    }

    fn skipped(&mut self, seq: i64) {
        self.counts.skipped += 1;
        self.position = self.position.max(seq);
    }

    async fn dead_letter(
        &mut self,
        stored: &StoredEvent,
        status: Option<u16>,
        reason: &str,
    ) -> Result<(), Stop> {
        tracing::warn!(replay = %self.id, seq = stored.seq, event_id = %stored.id, status, %reason, "replayed event refused, recorded as a dead letter");
        loop {
            match db::dead_letter(
                self.store.readers(),
                self.id,
                stored.seq,
                &stored.id,
                status,
                reason,
            )
            .await
            {
                Ok(()) => break,
                Err(error) => {
                    tracing::warn!(replay = %self.id, error = ?error, "recording a dead letter failed; trying again");
                    self.pause(Duration::from_secs(1)).await?;
                }
            }
        }
        self.counts.dead_lettered += 1;
        self.position = self.position.max(stored.seq);
        Ok(())
    }

    /// A failed attempt: counted, then the backoff's wait, during which
    /// progress is still stored and a cancellation still heard.
    async fn retry_wait(
        &mut self,
        attempts: u32,
        after: Option<Duration>,
        reason: &str,
    ) -> Result<(), Stop> {
        self.counts.failed += 1;
        let delay = BACKOFF.delay(attempts, after);
        tracing::warn!(replay = %self.id, attempts, %reason, retry_in_ms = delay.as_millis() as u64, "replay publish failed, will retry");
        self.pause(delay).await
    }

    /// Waits `delay`, checking in at least every `SAVE_INTERVAL`.
    async fn pause(&mut self, delay: Duration) -> Result<(), Stop> {
        let until = Instant::now() + delay;
        loop {
            let now = Instant::now();
            if now >= until {
                return Ok(());
            }
            tokio::select! {
                _ = self.stop.cancelled() => return Err(Stop::Interrupted),
                _ = tokio::time::sleep(SAVE_INTERVAL.min(until - now)) => {}
            }
            if self.saved_at.elapsed() >= SAVE_INTERVAL {
                self.check_in().await?;
            }
        }
    }

    /// Stores the progress and renews the lease; `Interrupted` when the
    /// replay must stop here (stopping, cancelled, lease lost).
    async fn check_in(&mut self) -> Result<(), Stop> {
        if self.stop.is_cancelled() || !self.save().await {
            return Err(Stop::Interrupted);
        }
        Ok(())
    }

    /// Stores the progress; false when this replica may not go on. A
    /// database that does not answer keeps the replay going until its
    /// lease would have run out.
    async fn save(&mut self) -> bool {
        match db::progress(
            self.store.readers(),
            self.id,
            self.owner,
            self.settings.lease_term,
            self.position,
            self.counts,
        )
        .await
        {
            Ok(held) => {
                self.saved_at = Instant::now();
                held
            }
            Err(error) => {
                tracing::warn!(replay = %self.id, error = ?error, "storing a replay's progress failed");
                self.saved_at.elapsed() < self.settings.lease_term / 2
            }
        }
    }
}

/// An event of a page: to send, or an erased one to leave out.
enum Item {
    Send(StoredEvent),
    Skip(i64),
}

/// The target's publisher.
async fn sender(target: &Target, id: &str) -> Result<Sender, Stop> {
    let settings = target
        .publish_settings(id)
        .map_err(|e| Stop::Failed(format!("the target's settings are invalid: {e:#}")))?;
    if let PublishSettings::Kafka { config, .. } = &settings {
        brokers::kafka::create_topics(config, &[&config.topic], Duration::from_secs(5)).await;
    }
    let publisher = Publisher::new(&settings, "audit-service")
        .await
        .map_err(|e| Stop::Failed(format!("the target cannot be set up: {e:#}")))?;
    Ok(match publisher {
        Publisher::Http(publisher) => Sender::Http {
            publisher,
            batch: target.batch_size(),
            mode: match target {
                Target::Http { mode, .. } => *mode,
                _ => HttpMode::Binary,
            },
        },
        Publisher::Pipelined(publisher) => Sender::Pipelined(publisher),
    })
}

/// Replaces a publisher that reported itself unusable.
fn rebuild(publisher: &dyn Pipelined) -> Result<(), Stop> {
    publisher
        .rebuild()
        .map_err(|e| Stop::Failed(format!("the publisher cannot be rebuilt: {e:#}")))
}

/// The stored event as it goes out: unchanged, or with the `replayid`
/// extension when the replay asks for it.
fn outgoing(stored: &StoredEvent, replayid: Option<&str>) -> Result<Event, String> {
    let mut event: Event = serde_json::from_str(&stored.json)
        .map_err(|e| format!("stored event is not valid CloudEvents JSON: {e}"))?;
    if let Some(id) = replayid {
        event.set_extension("replayid", id.to_owned());
    }
    Ok(event)
}

/// The stored event's JSON as it goes out in a batch: the stored text
/// itself, unless the `replayid` extension is added.
fn outgoing_json(stored: &StoredEvent, replayid: Option<&str>) -> Result<Arc<str>, String> {
    match replayid {
        None => Ok(Arc::from(stored.json.as_str())),
        Some(_) => {
            let event = outgoing(stored, replayid)?;
            serde_json::to_string(&event)
                .map(Arc::from)
                .map_err(|e| format!("event does not serialize: {e}"))
        }
    }
}
