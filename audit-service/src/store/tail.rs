//! The live tail's feed: every event the store commits, in seq order, to
//! every subscriber, holding at most `TAIL_MAX_BYTES` of events for them.
//!
//! tokio's broadcast channel (what this replaces) bounds its buffer by a
//! count of events and keeps each one until every receiver has read it, so
//! one client that opened the stream and stopped reading pinned 4096 events
//! of up to 1 MiB each. No well-kept crate bounds a broadcast by bytes, so
//! this is a small one: a ring of shared events, each with the number of
//! subscribers that have yet to read it. An event leaves the ring when the
//! last of them has read it, or when the ring is over its byte budget; a
//! subscriber whose next event left that way is told it lagged (and the
//! live tail then reads what it missed from the store, see query.rs).
//!
//! Subscribers are few (live-tail clients) and the ring is touched once per
//! committed batch by the logger thread, so one mutex is enough.

use super::StoredEvent;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

/// The most bytes of events the ring holds for slow subscribers, whatever
/// their number: about 50,000 typical user events, or 16 events of 1 MiB.
/// One event larger than this is still delivered.
pub const TAIL_MAX_BYTES: usize = 16 * 1024 * 1024;
/// Unread events that make a subscriber that polls (the transparency log's
/// sequencer) worth waking at once (`Subscriber::backlogged`): a batch
/// commit publishes thousands at a time, and waiting for the next poll held
/// them (some 800 bytes each) meanwhile; one-event commits stay on the poll.
pub const BACKLOG_EVENTS: u64 = 1000;

/// The sending side, held by the store; cheap to clone.
#[derive(Clone)]
pub struct Tail {
    shared: Arc<Shared>,
}

struct Shared {
    ring: Mutex<Ring>,
    /// Wakes waiting subscribers after a publish.
    published: Notify,
    /// Wakes those waiting for a backlog, after a publish that leaves the
    /// ring holding `BACKLOG_EVENTS` or more.
    backlogged: Notify,
    /// `ring.subscribers`, readable without the lock, so that publishing
    /// with nobody listening costs nothing.
    subscribers: AtomicUsize,
    max_bytes: usize,
}

#[derive(Default)]
struct Ring {
    slots: VecDeque<Slot>,
    /// The position (counted since the start) of `slots[0]`.
    first: u64,
    bytes: usize,
    subscribers: usize,
}

struct Slot {
    event: Arc<StoredEvent>,
    size: usize,
    /// Subscribers (of those there when it was published) yet to read it.
    unread: usize,
}

impl Ring {
    fn end(&self) -> u64 {
        self.first + self.slots.len() as u64
    }

    fn pop_front(&mut self) {
        if let Some(slot) = self.slots.pop_front() {
            self.first += 1;
            self.bytes -= slot.size;
        }
    }

    /// Frees the events every subscriber has read. Subscribers read in
    /// order, so those are always at the front.
    fn release_read(&mut self) {
        while self.slots.front().is_some_and(|s| s.unread == 0) {
            self.pop_front();
        }
    }
}

/// What a subscriber receives next.
#[derive(Debug)]
pub enum Received {
    Event(Arc<StoredEvent>),
    /// This many events left the ring before the subscriber read them.
    Lagged(u64),
}

impl Tail {
    pub fn new(max_bytes: usize) -> Self {
        Tail {
            shared: Arc::new(Shared {
                ring: Mutex::new(Ring::default()),
                published: Notify::new(),
                backlogged: Notify::new(),
                subscribers: AtomicUsize::new(0),
                max_bytes,
            }),
        }
    }

    /// Hands committed events (in seq order) to the subscribers there now.
    pub fn publish(&self, events: impl IntoIterator<Item = StoredEvent>) {
        if self.shared.subscribers.load(Ordering::Acquire) == 0 {
            return;
        }
        let backlogged = {
            let mut ring = self.shared.lock();
            let subscribers = ring.subscribers;
            if subscribers == 0 {
                return;
            }
            for event in events {
                let size = size_of(&event);
                ring.bytes += size;
                ring.slots.push_back(Slot {
                    event: Arc::new(event),
                    size,
                    unread: subscribers,
                });
                while ring.bytes > self.shared.max_bytes && ring.slots.len() > 1 {
                    ring.pop_front();
                }
            }
            ring.slots.len() as u64 >= BACKLOG_EVENTS
        };
        self.shared.published.notify_waiters();
        if backlogged {
            self.shared.backlogged.notify_waiters();
        }
    }

    /// Whether anyone is subscribed now.
    pub fn has_subscribers(&self) -> bool {
        self.shared.subscribers.load(Ordering::Acquire) > 0
    }

    /// Every event published from now on.
    pub fn subscribe(&self) -> Subscriber {
        let mut ring = self.shared.lock();
        ring.subscribers += 1;
        self.shared
            .subscribers
            .store(ring.subscribers, Ordering::Release);
        Subscriber {
            next: ring.end(),
            shared: self.shared.clone(),
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Ring> {
        // A panic while holding the lock leaves the ring consistent (every
        // update is a push or a pop), so a poisoned lock is used as is.
        self.ring
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One subscriber's place in the feed.
pub struct Subscriber {
    shared: Arc<Shared>,
    /// The position of the next event to read.
    next: u64,
}

impl Subscriber {
    /// The next event, or how many were lost since the last one read.
    pub async fn recv(&mut self) -> Received {
        let shared = self.shared.clone();
        loop {
            // Registered before looking, so a publish in between still wakes us.
            let published = shared.published.notified();
            tokio::pin!(published);
            published.as_mut().enable();
            if let Some(received) = self.try_recv() {
                return received;
            }
            published.await;
        }
    }

    /// Returns once `BACKLOG_EVENTS` or more wait for this subscriber.
    pub async fn backlogged(&self) {
        loop {
            // Registered before looking, as in `recv`.
            let backlogged = self.shared.backlogged.notified();
            tokio::pin!(backlogged);
            backlogged.as_mut().enable();
            if self.shared.lock().end().saturating_sub(self.next) >= BACKLOG_EVENTS {
                return;
            }
            backlogged.await;
        }
    }

    /// The next event or lag notice if one is waiting, without waiting.
    pub fn try_recv(&mut self) -> Option<Received> {
        let mut ring = self.shared.lock();
        if self.next < ring.first {
            let missed = ring.first - self.next;
            self.next = ring.first;
            return Some(Received::Lagged(missed));
        }
        let index = usize::try_from(self.next - ring.first).ok()?;
        let slot = ring.slots.get_mut(index)?;
        slot.unread -= 1;
        let event = slot.event.clone();
        self.next += 1;
        ring.release_read();
        Some(Received::Event(event))
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let mut ring = self.shared.lock();
        ring.subscribers -= 1;
        self.shared
            .subscribers
            .store(ring.subscribers, Ordering::Release);
        let unread_from = usize::try_from(self.next.saturating_sub(ring.first)).unwrap_or(0);
        for slot in ring.slots.iter_mut().skip(unread_from) {
            slot.unread -= 1;
        }
        ring.release_read();
    }
}

/// The heap an event holds, near enough for a budget.
fn size_of(event: &StoredEvent) -> usize {
    std::mem::size_of::<StoredEvent>()
        + event.json.len()
        + event.source.len()
        + event.id.len()
        + event.ty.len()
        + event.subject.as_ref().map_or(0, String::len)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use cloudevents_wire::Transport;

    /// A stored event of `json_bytes` of JSON (also the sequencer's inbox's tests').
    pub(crate) fn event(seq: i64, json_bytes: usize) -> StoredEvent {
        StoredEvent {
            seq,
            received_at: "2026-01-01T00:00:00Z".into(),
            transport: Transport::Http,
            source: "/s".into(),
            id: seq.to_string(),
            ty: "t".into(),
            subject: None,
            json: "x".repeat(json_bytes),
            trace: None,
            trail: None,
        }
    }

    fn seq(received: Received) -> i64 {
        match received {
            Received::Event(e) => e.seq,
            Received::Lagged(n) => panic!("lagged {n}"),
        }
    }

    #[tokio::test]
    async fn every_subscriber_gets_every_event_in_order_and_read_events_are_freed() {
        let tail = Tail::new(1 << 20);
        let mut a = tail.subscribe();
        let mut b = tail.subscribe();
        tail.publish((1..=3).map(|s| event(s, 10)));
        for s in 1..=3 {
            assert_eq!(seq(a.recv().await), s);
        }
        assert_eq!(tail.shared.lock().slots.len(), 3, "b has not read them");
        for s in 1..=3 {
            assert_eq!(seq(b.recv().await), s);
        }
        let ring = tail.shared.lock();
        assert_eq!((ring.slots.len(), ring.bytes), (0, 0));
    }

    /// Whether `backlogged` still waits after a second.
    async fn waits(subscriber: &Subscriber) -> bool {
        let wait = std::time::Duration::from_secs(1);
        tokio::time::timeout(wait, subscriber.backlogged())
            .await
            .is_err()
    }

    #[tokio::test(start_paused = true)]
    async fn backlogged_waits_for_a_backlog_of_this_subscriber_s_own() {
        let tail = Tail::new(1 << 20);
        let mut poller = tail.subscribe();
        // Reads nothing: the ring keeps every event for it.
        let _other = tail.subscribe();
        let n = i64::try_from(BACKLOG_EVENTS).unwrap();
        tail.publish((1..n).map(|s| event(s, 10)));
        assert!(waits(&poller).await, "one short of the backlog");
        // Woken by the publish that makes the backlog, not by a poll.
        let publisher = tail.clone();
        let publish = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            publisher.publish([event(n, 10)]);
        });
        assert!(!waits(&poller).await);
        publish.await.unwrap();
        // Once it has read them, the other's backlog does not wake it.
        for _ in 0..n {
            poller.try_recv().unwrap();
        }
        tail.publish([event(n + 1, 10)]);
        assert!(tail.shared.lock().slots.len() as u64 > BACKLOG_EVENTS);
        assert!(waits(&poller).await);
    }

    #[tokio::test]
    async fn a_subscriber_that_does_not_read_holds_at_most_the_budget_and_is_told_it_lagged() {
        let budget = 100 * 1024;
        let tail = Tail::new(budget);
        let mut slow = tail.subscribe();
        tail.publish((1..=1000).map(|s| event(s, 1024)));
        let (held, kept) = {
            let ring = tail.shared.lock();
            (ring.bytes, ring.slots.len() as i64)
        };
        assert!(held <= budget, "{held} bytes held");
        match slow.recv().await {
            Received::Lagged(missed) => assert_eq!(missed as i64, 1000 - kept),
            other => panic!("{other:?}"),
        }
        assert_eq!(seq(slow.recv().await), 1000 - kept + 1);
    }

    #[tokio::test]
    async fn one_event_over_the_budget_is_still_delivered() {
        let tail = Tail::new(10);
        let mut s = tail.subscribe();
        tail.publish([event(1, 1000)]);
        assert_eq!(seq(s.recv().await), 1);
    }

    #[tokio::test]
    async fn a_dropped_subscriber_frees_what_it_had_not_read() {
        let tail = Tail::new(1 << 20);
        let gone = tail.subscribe();
        tail.publish((1..=5).map(|s| event(s, 10)));
        drop(gone);
        assert_eq!(tail.shared.lock().slots.len(), 0);
        // With nobody subscribed nothing is kept at all.
        tail.publish([event(6, 10)]);
        assert_eq!(tail.shared.lock().slots.len(), 0);
    }

    #[tokio::test]
    async fn a_waiting_subscriber_wakes_on_publish() {
        let tail = Tail::new(1 << 20);
        let mut s = tail.subscribe();
        let waiting = tokio::spawn(async move { seq(s.recv().await) });
        tokio::task::yield_now().await;
        tail.publish([event(7, 10)]);
        assert_eq!(waiting.await.unwrap(), 7);
    }
}
