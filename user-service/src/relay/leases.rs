//! Which outbox rows this relay may send when several user-service replicas
//! share one database: the rows of the buckets whose lease it holds.
//!
//! Every user's rows are in one of a fixed set of buckets (64, a column of
//! the outbox), and a bucket's lease names one relay until a time set by
//! the database's clock. A relay sends only its buckets' rows, so one
//! user's events have one sender at a time and keep their order; each relay
//! holds its fair share (the buckets over the relays alive, which each
//! heartbeat in the same round trip), taking free or expired buckets with
//! `FOR UPDATE SKIP LOCKED` and giving back what is beyond its share once
//! it has stopped sending those rows.
//!
//! The rule that keeps order when a relay stalls or is cut off from the
//! database: it stops sending a bucket's rows `margin` before its lease
//! can have expired, counting from when it *sent* the renewal (the database
//! stamped the lease later, so it expires later still), where `margin` is
//! what requests in flight may still take (the publish timeout) plus a
//! second. Only then may another relay take the bucket, and it starts from
//! the bucket's oldest pending row: rows the first relay sent but had not
//! marked go again, and the receiver stores each once. A replica that is
//! SIGKILLed holds its buckets until their leases expire (`RELAY_LEASE_MS`);
//! one that shuts down gives them back at once.
//!
//! The relay applies a change of buckets by ending its round (requests in
//! flight are answered and their outcomes written, as at shutdown) and
//! starting a new one over the new buckets from their oldest pending row.

use crate::store::{Backend, Scope};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The longest pause between two lease round trips, whatever the term: it
/// is also how soon a relay notices another one arriving.
const MAX_RENEWAL_INTERVAL: Duration = Duration::from_secs(5);

pub struct Leases {
    backend: Arc<dyn Backend>,
    /// This relay's name in the lease table.
    owner: String,
    term: Duration,
    margin: Duration,
    /// Buckets held as of the last round trip that succeeded, and how many
    /// this relay should hold.
    held: Vec<i16>,
    fair_share: usize,
    /// When this relay must have stopped sending, if it holds anything.
    valid_until: Option<Instant>,
    next_renewal: Instant,
    /// What the round in progress sends, and whether a change of it was
    /// already reported.
    sending: Vec<i16>,
    reported: bool,
}

impl Leases {
    /// `margin`: how long requests in flight may still take once a round is
    /// told to stop.
    pub fn new(backend: Arc<dyn Backend>, term: Duration, margin: Duration) -> Self {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "user-service".to_owned());
        let owner = format!(
            "{host}/{}/{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        Leases {
            backend,
            owner,
            term,
            margin,
            held: Vec::new(),
            fair_share: 0,
            valid_until: None,
            next_renewal: Instant::now(),
            sending: Vec::new(),
            reported: false,
        }
    }

    /// The buckets the next round sends: those held and still valid,
    /// beyond the fair share left out (they are given back when the round
    /// that sent them has ended).
    pub fn scope(&mut self) -> Scope {
        self.sending = self.wanted();
        self.reported = false;
        metrics::gauge!("outbox_leases_held").set(self.sending.len() as f64);
        Scope::Buckets(self.sending.clone())
    }

    fn wanted(&self) -> Vec<i16> {
        if self.valid_until.is_none_or(|until| Instant::now() >= until) {
            return Vec::new();
        }
        self.held.iter().copied().take(self.fair_share).collect()
    }

    /// Renews the leases on schedule and returns when the round in
    /// progress must change what it sends: buckets were gained, must be
    /// given back, or are about to lapse. Reports each change once; polled
    /// again, it goes on renewing.
    pub async fn until_change(&mut self) {
        loop {
            if !self.reported && self.wanted() != self.sending {
                self.reported = true;
                return;
            }
            let mut wake = self.next_renewal;
            if let Some(until) = self.valid_until {
                if Instant::now() < until {
                    wake = wake.min(until);
                }
            }
            tokio::time::sleep_until(wake).await;
            if Instant::now() >= self.next_renewal {
                self.renew(&[]).await;
            }
        }
    }

    /// The round has ended: gives back the buckets it sent that this relay
    /// no longer wants, and renews the rest.
    pub async fn round_ended(&mut self) {
        let wanted = self.wanted();
        let release: Vec<i16> = self
            .held
            .iter()
            .copied()
            .filter(|b| !wanted.contains(b))
            .collect();
        if !release.is_empty() || Instant::now() >= self.next_renewal {
            self.renew(&release).await;
        }
    }

    /// One round trip: heartbeat, give back `release`, renew, take up to
    /// the fair share. A failure keeps what was held until `valid_until`.
    pub async fn renew(&mut self, release: &[i16]) {
        let sent = Instant::now();
        self.next_renewal = sent + (self.term / 6).min(MAX_RENEWAL_INTERVAL);
        match self.backend.lease(&self.owner, self.term, release).await {
            Ok(state) => {
                if state.held != self.held || state.fair_share != self.fair_share {
                    tracing::info!(
                        owner = %self.owner,
                        held = state.held.len(),
                        fair_share = state.fair_share,
                        "outbox leases changed"
                    );
                }
                self.held = state.held;
                self.fair_share = state.fair_share;
                self.valid_until = Some(sent + self.term.saturating_sub(self.margin));
            }
            Err(e) => {
                tracing::warn!(error = %e, owner = %self.owner, "renewing outbox leases failed");
                if !release.is_empty() {
                    // Not given back: they are still ours until they lapse.
                    tracing::debug!(
                        buckets = release.len(),
                        "buckets kept until their leases lapse"
                    );
                }
                // Retry soon; the leases stay valid until `valid_until`.
                self.next_renewal = sent + (self.term / 30).max(Duration::from_millis(200));
            }
        }
    }

    /// Gives every bucket back at shutdown, so the other relays take them
    /// at once rather than after the lease term.
    pub async fn leave(self) {
        if let Err(e) = self.backend.leave(&self.owner, &self.held).await {
            tracing::warn!(error = %e, "giving back outbox leases failed; they lapse after their term");
        }
    }
}
