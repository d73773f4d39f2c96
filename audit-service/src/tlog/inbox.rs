//! The sequencer's side of the store's live feed: every committed event
//! turned into its leaf (`leaf`) by the thread that publishes it
//! (`Tail::tap`: the logger thread on SQLite, the table's poll task on
//! PostgreSQL), into a bounded queue the sequencer takes its rounds from.
//!
//! The leaf is made where the event is published, not read from the feed's
//! ring by the sequencer, because the ring kept each event (some 800 bytes,
//! in an `Arc` allocated on the logger thread) until a runtime worker read
//! it, every 20 ms or at a backlog. Under batch ingest with the log on,
//! that traffic between threads, with the allocator giving the memory back
//! and faulting it in again, cost ingest more than the hashing itself: the
//! process took 50% more page faults than with the log off. A leaf is
//! 128 bytes, and the event is freed where it was used.
//!
//! The queue holds a few rounds. A sequencer that falls further behind
//! (a slow database) is told it lagged, and reads what it missed from the
//! table, as it does at start.

use super::entry::Encoder;
use super::leaf::Leaf;
use crate::store::{StoredEvent, Tail, Tapped};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Rounds' worth of leaves the queue holds, at most.
const ROUNDS_HELD: usize = 2;
/// Leaves made between two takings of the queue's lock.
const PUSHED_AT_ONCE: usize = 64;

pub struct Inbox {
    queue: Arc<Queue>,
    _tapped: Tapped,
}

struct Queue {
    state: Mutex<State>,
    /// Wakes the sequencer when a round's worth is queued.
    ready: Notify,
    round: usize,
}

struct State {
    leaves: VecDeque<Leaf>,
    /// Events were not queued since the last `take_lagged`.
    lagged: bool,
}

impl Inbox {
    /// Queues the leaf of every event `feed` publishes from now on, up to
    /// `ROUNDS_HELD` rounds of `round` leaves.
    pub fn new(feed: &Tail, round: usize) -> Self {
        let queue = Arc::new(Queue {
            // All of it at once: grown by doubling, a queue a little over
            // 16,384 leaves took 4 MiB.
            state: Mutex::new(State {
                leaves: VecDeque::with_capacity(ROUNDS_HELD * round),
                lagged: false,
            }),
            ready: Notify::new(),
            round,
        });
        let tapped = {
            let queue = queue.clone();
            feed.tap(move |events| queue.push(events))
        };
        Inbox {
            queue,
            _tapped: tapped,
        }
    }

    /// Whether a round's worth is waiting.
    pub fn full(&self) -> bool {
        self.queue.lock().leaves.len() >= self.queue.round
    }

    /// Whether events went unqueued since the last call: what they missed
    /// must be read from the table.
    pub fn take_lagged(&mut self) -> bool {
        std::mem::take(&mut self.queue.lock().lagged)
    }

    /// Forgets the queued leaves (their events will be read from the
    /// table), after an erasure may have changed those events.
    pub fn clear(&mut self) {
        self.queue.lock().leaves.clear();
    }

    /// Moves up to `max` queued leaves after `after` (a seq) to `into`,
    /// oldest first; those at or before it (already in the tree) are
    /// dropped.
    pub fn take(&mut self, after: i64, max: usize, into: &mut Vec<Leaf>) {
        let mut state = self.queue.lock();
        while state.leaves.front().is_some_and(|leaf| leaf.seq <= after) {
            state.leaves.pop_front();
        }
        let n = state.leaves.len().min(max);
        into.extend(state.leaves.drain(..n));
    }

    /// Returns at `deadline`, or earlier once a round's worth is queued.
    pub async fn fill_until(&mut self, deadline: Instant) {
        loop {
            // Registered before looking, so a push in between still wakes us.
            let ready = self.queue.ready.notified();
            tokio::pin!(ready);
            ready.as_mut().enable();
            if self.full() {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => return,
                () = ready => {}
            }
        }
    }
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update is a push, a pop or a clear: a poisoned lock still
        // guards a consistent queue.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues the leaves of `events`, on the publishing thread. An event
    /// that has no leaf (its JSON is not an object) is left to the read
    /// from the table, whose round reports it; so is everything past a
    /// full queue.
    fn push(&self, events: &[StoredEvent]) {
        let mut encoder = Encoder::default();
        // A committed batch holds up to 5,000 events; their leaves are made
        // a few at a time, so the buffer stays small and warm.
        let mut leaves: Vec<Option<Leaf>> = Vec::with_capacity(PUSHED_AT_ONCE);
        for events in events.chunks(PUSHED_AT_ONCE) {
            // Made before taking the lock: the sequencer takes it too.
            leaves.extend(
                events
                    .iter()
                    .map(|event| Leaf::of(event, &mut encoder).ok()),
            );
            let mut state = self.lock();
            let was_full = state.leaves.len() >= self.round;
            for leaf in leaves.drain(..) {
                match leaf {
                    Some(leaf) if state.leaves.len() < ROUNDS_HELD * self.round => {
                        state.leaves.push_back(leaf);
                    }
                    _ => {
                        state.lagged = true;
                        state.leaves.clear();
                    }
                }
            }
            if !was_full && state.leaves.len() >= self.round {
                self.ready.notify_waiters();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn event(seq: i64) -> StoredEvent {
        let mut event = crate::store::tail::tests::event(seq, 0);
        event.json = format!(r#"{{"specversion":"1.0","id":"{seq}","source":"/s","type":"t"}}"#);
        event
    }

    fn events(seqs: std::ops::RangeInclusive<i64>) -> Vec<StoredEvent> {
        seqs.map(event).collect()
    }

    /// The seqs of what `take` hands out.
    fn take(inbox: &mut Inbox, after: i64, max: usize) -> Vec<i64> {
        let mut leaves = Vec::new();
        inbox.take(after, max, &mut leaves);
        leaves.iter().map(|l| l.seq).collect()
    }

    #[test]
    fn queues_each_published_event_s_leaf_and_hands_them_out_in_order_after_the_tree() {
        let tail = Tail::new(1 << 20);
        let mut inbox = Inbox::new(&tail, 10);
        assert_eq!(take(&mut inbox, 0, 10), Vec::<i64>::new());
        tail.publish(events(1..=4));
        tail.publish(events(5..=6));
        assert_eq!(take(&mut inbox, 2, 3), vec![3, 4, 5]);
        assert_eq!(take(&mut inbox, 2, 10), vec![6]);
        assert_eq!(take(&mut inbox, 0, 10), Vec::<i64>::new());
        let leaf = Leaf::of(&event(7), &mut Encoder::default()).unwrap();
        tail.publish(vec![event(7)]);
        let mut leaves = Vec::new();
        inbox.take(0, 1, &mut leaves);
        assert_eq!(leaves[0].hash, leaf.hash);
        // Gone with the inbox: the feed then holds nothing for it.
        drop(inbox);
        assert!(!tail.has_subscribers());
    }

    #[test]
    fn past_the_rounds_it_holds_it_forgets_them_and_reports_a_lag_once() {
        let tail = Tail::new(1 << 20);
        let mut inbox = Inbox::new(&tail, 2);
        tail.publish(events(1..=4));
        assert!(inbox.full());
        assert!(!inbox.take_lagged());
        tail.publish(vec![event(7)]);
        assert!(inbox.take_lagged());
        assert!(!inbox.take_lagged());
        assert!(!inbox.full());
        // What follows is queued again, for after the read from the table.
        tail.publish(events(8..=9));
        assert_eq!(take(&mut inbox, 0, 10), vec![8, 9]);
    }

    #[tokio::test(start_paused = true)]
    async fn fill_until_returns_once_a_round_is_queued_or_at_the_deadline() {
        let tail = Tail::new(1 << 20);
        let mut inbox = Inbox::new(&tail, 3);
        let started = Instant::now();
        tail.publish(events(1..=2));
        inbox.fill_until(started + Duration::from_secs(1)).await;
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        assert!(!inbox.full());

        // Woken by the publish that completes a round, not at the deadline.
        let publisher = tail.clone();
        let publish = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            publisher.publish(vec![event(3)]);
        });
        let started = Instant::now();
        inbox.fill_until(started + Duration::from_secs(60)).await;
        assert!(started.elapsed() < Duration::from_secs(1));
        publish.await.unwrap();
        assert_eq!(take(&mut inbox, 0, 10), vec![1, 2, 3]);
    }

    #[test]
    fn an_event_without_a_leaf_is_left_to_the_table() {
        let tail = Tail::new(1 << 20);
        let mut inbox = Inbox::new(&tail, 100);
        let mut bad = event(2);
        bad.json = "[]".into();
        tail.publish(vec![event(1), bad, event(3)]);
        assert!(inbox.take_lagged());
        assert_eq!(take(&mut inbox, 0, 100), vec![3]);
    }
}
