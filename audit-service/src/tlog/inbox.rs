//! The sequencer's side of the store's live feed: events drained from the
//! feed while the sequencer waits between rounds and while a round commits,
//! each turned into its leaf (`leaf`) as it is read, into a bounded queue.
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
//! task woken for each cost ingest more than the sequencer's own work. It
//! is woken at once only by a publish that leaves a backlog
//! (`Subscriber::backlogged`), as a batch commit of thousands does.

use super::leaf::Leaf;
use crate::store::{Received, Subscriber};
use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// How often the inbox reads the feed while it waits: the feed's ring
/// holds some 30,000 typical events, a third of a second of batch ingest.
const DRAIN_EVERY: Duration = Duration::from_millis(20);

pub struct Inbox {
    feed: Subscriber,
    pending: VecDeque<Leaf>,
    /// Events left the feed unread since the last `take_lagged`.
    lagged: bool,
    max_leaves: usize,
}

impl Inbox {
    /// Reads `feed` into a queue of at most `max_leaves` leaves; the feed's
    /// ring holds the rest until the queue has room.
    pub fn new(feed: Subscriber, max_leaves: usize) -> Self {
        Inbox {
            feed,
            pending: VecDeque::new(),
            lagged: false,
            max_leaves,
        }
    }

    /// Whether a round's worth is waiting (the queue is full).
    pub fn full(&self) -> bool {
        self.pending.len() >= self.max_leaves
    }

    /// Whether events were lost from the feed since the last call: the
    /// queue is then empty, and what it missed must be read from the table.
    pub fn take_lagged(&mut self) -> bool {
        std::mem::take(&mut self.lagged)
    }

    /// Forgets the queued leaves (their events will be read from the
    /// table), after an erasure may have changed those events.
    pub fn clear(&mut self) {
        self.pending.clear();
    }

    /// Up to `max` queued leaves after `after` (a seq), oldest first; those
    /// at or before it (already in the tree) are dropped.
    pub fn take(&mut self, after: i64, max: usize) -> Vec<Leaf> {
        self.drain();
        let mut leaves = Vec::with_capacity(self.pending.len().min(max));
        while leaves.len() < max {
            let Some(leaf) = self.pending.pop_front() else {
                break;
            };
            if leaf.seq > after {
                leaves.push(leaf);
            }
        }
        leaves
    }

    /// Whether leaves are queued.
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

    /// Queues leaves until `deadline` or until the queue is full.
    pub async fn fill_until(&mut self, deadline: Instant) {
        loop {
            self.drain();
            if self.full() || Instant::now() >= deadline {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep_until(deadline.min(Instant::now() + DRAIN_EVERY)) => {}
                () = self.feed.backlogged() => {}
            }
        }
    }

    /// Runs `work` to its end, queueing leaves meanwhile.
    pub async fn while_running<F: Future>(&mut self, work: F) -> F::Output {
        tokio::pin!(work);
        let mut every = tokio::time::interval(DRAIN_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                out = &mut work => return out,
                _ = every.tick() => {}
                () = self.feed.backlogged(), if !self.full() => {}
            }
            self.drain();
        }
    }

    fn queue(&mut self, received: Received) {
        // An event that has no leaf (its JSON is not an object) is left to
        // the read from the table, whose round reports it.
        match received {
            Received::Event(event) => match Leaf::of(&event) {
                Ok(leaf) => self.pending.push_back(leaf),
                Err(_) => self.lag(),
            },
            Received::Lagged(_) => self.lag(),
        }
    }

    fn lag(&mut self) {
        self.lagged = true;
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{StoredEvent, Tail};

    fn event(seq: i64) -> StoredEvent {
        let mut event = crate::store::tail::tests::event(seq, 0);
        event.json = format!(r#"{{"specversion":"1.0","id":"{seq}","source":"/s","type":"t"}}"#);
        event
    }

    fn seqs(leaves: &[Leaf]) -> Vec<i64> {
        leaves.iter().map(|l| l.seq).collect()
    }

    #[tokio::test]
    async fn queues_while_work_runs_and_hands_out_in_order_after_the_tree() {
        let tail = Tail::new(1 << 20);
        let mut inbox = Inbox::new(tail.subscribe(), 10);
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
        let mut inbox = Inbox::new(tail.subscribe(), 3);
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
        let mut inbox = Inbox::new(tail.subscribe(), 100);
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
        let tail = Tail::new(2 * (std::mem::size_of::<StoredEvent>() + 60));
        let mut inbox = Inbox::new(tail.subscribe(), 100);
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

    #[tokio::test]
    async fn an_event_without_a_leaf_is_left_to_the_table() {
        let tail = Tail::new(1 << 20);
        let mut inbox = Inbox::new(tail.subscribe(), 100);
        let mut bad = event(2);
        bad.json = "[]".into();
        tail.publish([event(1), bad, event(3)]);
        inbox.drain();
        assert!(inbox.take_lagged());
        assert_eq!(seqs(&inbox.take(0, 100)), vec![3]);
    }
}
