//! The sequencer's side of the store's live feed: events drained from the
//! feed into a bounded queue of its own while the sequencer waits between
//! rounds and while a round commits.
//!
//! The feed's ring is sized for live-tail clients (`TAIL_MAX_BYTES`), about
//! a sixth of a second of batch ingest. A sequencer that read it only at the
//! start of a round fell off it whenever a round's commit or the pause
//! between rounds lasted longer, and then read every event back from the
//! table, which costs more than the rest of its work and never caught up
//! under load. Drained every `DRAIN_EVERY`, the feed stays near empty.
//!
//! It polls rather than waking on every publish: the writer publishes each
//! committed batch, thousands a second under one-event requests, and a
//! task woken for each cost ingest more than the sequencer's own work.

use crate::store::{Received, StoredEvent, Subscriber};
use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How often the inbox reads the feed while it waits: the feed's ring
/// holds some 30,000 typical events, a third of a second of batch ingest.
const DRAIN_EVERY: Duration = Duration::from_millis(20);

pub struct Inbox {
    feed: Subscriber,
    pending: VecDeque<Arc<StoredEvent>>,
    /// The JSON bytes `pending` holds.
    bytes: usize,
    /// Events left the feed unread since the last `take_lagged`.
    lagged: bool,
    max_events: usize,
    max_bytes: usize,
}

impl Inbox {
    /// Reads `feed` into a queue of at most `max_events` events and about
    /// `max_bytes` of JSON (one event over that is still taken); the feed's
    /// ring holds the rest until the queue has room.
    pub fn new(feed: Subscriber, max_events: usize, max_bytes: usize) -> Self {
        Inbox {
            feed,
            pending: VecDeque::new(),
            bytes: 0,
            lagged: false,
            max_events,
            max_bytes,
        }
    }

    /// Whether a round's worth is waiting (the queue is full).
    pub fn full(&self) -> bool {
        self.pending.len() >= self.max_events || self.bytes >= self.max_bytes
    }

    /// Whether events were lost from the feed since the last call: the
    /// queue is then empty, and what it missed must be read from the table.
    pub fn take_lagged(&mut self) -> bool {
        std::mem::take(&mut self.lagged)
    }

    /// Forgets the queued events (they will be read from the table), after
    /// an erasure may have changed them.
    pub fn clear(&mut self) {
        self.pending.clear();
        self.bytes = 0;
    }

    /// Up to `max` queued events after `after` (a seq), oldest first; those
    /// at or before it (already in the tree) are dropped.
    pub fn take(&mut self, after: i64, max: usize) -> Vec<Arc<StoredEvent>> {
        self.drain();
        let mut events = Vec::with_capacity(self.pending.len().min(max));
        while events.len() < max {
            let Some(event) = self.pending.pop_front() else {
                break;
            };
            self.bytes -= event.json.len();
            if event.seq > after {
                events.push(event);
            }
        }
        events
    }

    /// Whether events are queued.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Queues what the feed holds now, as far as there is room.
    pub fn drain(&mut self) {
        while !self.full() {
            match self.feed.try_recv() {
                Some(received) => self.queue(received),
                None => return,
            }
        }
    }

    /// Queues events until `deadline` or until the queue is full.
    pub async fn fill_until(&mut self, deadline: Instant) {
        loop {
            self.drain();
            if self.full() || Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline.min(Instant::now() + DRAIN_EVERY)).await;
        }
    }

    /// Runs `work` to its end, queueing events meanwhile.
    pub async fn while_running<F: Future>(&mut self, work: F) -> F::Output {
        tokio::pin!(work);
        let mut every = tokio::time::interval(DRAIN_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                out = &mut work => return out,
                _ = every.tick() => self.drain(),
            }
        }
    }

    fn queue(&mut self, received: Received) {
        match received {
            Received::Event(event) => {
                self.bytes += event.json.len();
                self.pending.push_back(event);
            }
            Received::Lagged(_) => {
                self.lagged = true;
                self.clear();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{StoredEvent, Tail};

    fn event(seq: i64) -> StoredEvent {
        crate::store::tail::tests::event(seq, 100)
    }

    fn seqs(events: &[Arc<StoredEvent>]) -> Vec<i64> {
        events.iter().map(|e| e.seq).collect()
    }

    #[tokio::test]
    async fn queues_while_work_runs_and_hands_out_in_order_after_the_tree() {
        let tail = Tail::new(1 << 20);
        let mut inbox = Inbox::new(tail.subscribe(), 10, 1 << 20);
        let publisher = tail.clone();
        let out = inbox
            .while_running(async move {
                publisher.publish((1..=4).map(event));
                tokio::time::sleep(3 * DRAIN_EVERY).await;
                7
            })
            .await;
        assert_eq!(out, 7);
        // Read from the feed while the work ran, not only when asked.
        assert!(!inbox.is_empty());
        tail.publish((5..=6).map(event));
        assert_eq!(seqs(&inbox.take(2, 3)), vec![3, 4, 5]);
        assert_eq!(seqs(&inbox.take(2, 10)), vec![6]);
        assert!(inbox.is_empty());
    }

    #[tokio::test]
    async fn stops_reading_when_full_and_leaves_the_rest_in_the_feed() {
        let tail = Tail::new(1 << 20);
        let mut inbox = Inbox::new(tail.subscribe(), 3, 1 << 20);
        tail.publish((1..=5).map(event));
        inbox
            .fill_until(Instant::now() + std::time::Duration::from_secs(5))
            .await;
        assert!(inbox.full());
        assert_eq!(seqs(&inbox.take(0, 10)), vec![1, 2, 3]);
        assert_eq!(seqs(&inbox.take(0, 10)), vec![4, 5]);
    }

    #[tokio::test]
    async fn fill_until_returns_at_the_deadline_with_what_came() {
        let tail = Tail::new(1 << 20);
        let mut inbox = Inbox::new(tail.subscribe(), 100, 1 << 20);
        tail.publish((1..=2).map(event));
        inbox
            .fill_until(Instant::now() + std::time::Duration::from_millis(20))
            .await;
        assert!(!inbox.full());
        assert_eq!(seqs(&inbox.take(0, 100)), vec![1, 2]);
    }

    #[tokio::test]
    async fn a_lag_empties_the_queue_and_is_reported_once() {
        // A ring of about two events: the third publish pushes the first
        // out before the inbox reads it.
        let tail = Tail::new(2 * (std::mem::size_of::<StoredEvent>() + 110));
        let mut inbox = Inbox::new(tail.subscribe(), 100, 1 << 20);
        tail.publish((1..=5).map(event));
        inbox.drain();
        assert!(inbox.take_lagged());
        assert!(!inbox.take_lagged());
        // The first left the ring unread; what followed is queued in order.
        let after = seqs(&inbox.take(0, 100));
        assert!(!after.is_empty() && after[0] > 1, "{after:?}");
        assert_eq!(after.last(), Some(&5));
        assert!(after.windows(2).all(|w| w[1] == w[0] + 1), "{after:?}");
    }
}
