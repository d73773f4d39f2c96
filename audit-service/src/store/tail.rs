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
//!
//! Besides the subscribers, one tap (`Tail::tap`): a function the publisher
//! calls with each batch of events, on its own thread, before the ring sees
//! them. The transparency log's sequencer needs every event, but only a
//! digest of it (its leaf); made there, the event itself need not wait in
//! the ring for a reader on another thread.

use super::StoredEvent;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

/// The most bytes of events the ring holds for slow subscribers, whatever
/// their number: about 50,000 typical user events, or 16 events of 1 MiB.
/// One event larger than this is still delivered.
pub const TAIL_MAX_BYTES: usize = 16 * 1024 * 1024;
/// What a tap does with each published batch of events.
pub type TapFn = dyn Fn(&[StoredEvent]) + Send + Sync;

/// The sending side, held by the store; cheap to clone.
#[derive(Clone)]
pub struct Tail {
    shared: Arc<Shared>,
}

struct Shared {
    ring: Mutex<Ring>,
    /// Wakes waiting subscribers after a publish.
    published: Notify,
    /// `ring.subscribers`, readable without the lock, so that publishing
    /// with nobody listening costs nothing.
    subscribers: AtomicUsize,
    tap: Mutex<Option<Arc<TapFn>>>,
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
                subscribers: AtomicUsize::new(0),
                tap: Mutex::new(None),
                max_bytes,
            }),
        }
    }

    /// Hands committed events (in seq order) to the tap and the
    /// subscribers there now.
    pub fn publish(&self, events: Vec<StoredEvent>) {
        // Outside the ring's lock: a tap may take a while (the transparency
        // log hashes each event), and subscribers must not wait for it.
        if let Some(tap) = self.shared.tap() {
            tap(&events);
        }
        if self.shared.subscribers.load(Ordering::Acquire) == 0 {
            return;
        }
        {
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
        }
        self.shared.published.notify_waiters();
    }

    /// Whether anyone is subscribed or tapping now.
    pub fn has_subscribers(&self) -> bool {
        self.shared.subscribers.load(Ordering::Acquire) > 0 || self.shared.tap().is_some()
    }

    /// Calls `tap` with every batch published from now on, in order, on the
    /// publishing thread (the logger thread on SQLite, the table's poll task
    /// on PostgreSQL), until the returned guard is dropped. One tap at a
    /// time: a new one replaces the one before.
    pub fn tap(&self, tap: impl Fn(&[StoredEvent]) + Send + Sync + 'static) -> Tapped {
        let tap: Arc<TapFn> = Arc::new(tap);
        *lock(&self.shared.tap) = Some(tap.clone());
        Tapped {
            shared: self.shared.clone(),
            tap,
        }
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
        lock(&self.ring)
    }

    fn tap(&self) -> Option<Arc<TapFn>> {
        lock(&self.tap).clone()
    }
}

/// A panic while holding either lock leaves what it guards consistent
/// (every update is a push, a pop or a swap), so a poisoned lock is used
/// as is.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Keeps a tap (`Tail::tap`) in place while it lives.
pub struct Tapped {
    shared: Arc<Shared>,
    tap: Arc<TapFn>,
}

impl Drop for Tapped {
    fn drop(&mut self) {
        let mut tap = lock(&self.shared.tap);
        // Unless a newer tap replaced it.
        if tap.as_ref().is_some_and(|t| Arc::ptr_eq(t, &self.tap)) {
            *tap = None;
        }
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
        tail.publish((1..=3).map(|s| event(s, 10)).collect());
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

    #[tokio::test]
    async fn a_subscriber_that_does_not_read_holds_at_most_the_budget_and_is_told_it_lagged() {
        let budget = 100 * 1024;
        let tail = Tail::new(budget);
        let mut slow = tail.subscribe();
        tail.publish((1..=1000).map(|s| event(s, 1024)).collect());
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
        tail.publish(vec![event(1, 1000)]);
        assert_eq!(seq(s.recv().await), 1);
    }

    #[tokio::test]
    async fn a_dropped_subscriber_frees_what_it_had_not_read() {
        let tail = Tail::new(1 << 20);
        let gone = tail.subscribe();
        tail.publish((1..=5).map(|s| event(s, 10)).collect());
        drop(gone);
        assert_eq!(tail.shared.lock().slots.len(), 0);
        // With nobody subscribed nothing is kept at all.
        tail.publish(vec![event(6, 10)]);
        assert_eq!(tail.shared.lock().slots.len(), 0);
    }

    #[tokio::test]
    async fn a_waiting_subscriber_wakes_on_publish() {
        let tail = Tail::new(1 << 20);
        let mut s = tail.subscribe();
        let waiting = tokio::spawn(async move { seq(s.recv().await) });
        tokio::task::yield_now().await;
        tail.publish(vec![event(7, 10)]);
        assert_eq!(waiting.await.unwrap(), 7);
    }

    #[test]
    fn the_tap_sees_every_event_in_order_until_its_guard_goes() {
        let tail = Tail::new(1 << 20);
        assert!(!tail.has_subscribers());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let tapped = {
            let seen = seen.clone();
            tail.tap(move |events| lock(&seen).extend(events.iter().map(|e| e.seq)))
        };
        // Counts as listening (the PostgreSQL poll then reads the table),
        // and holds nothing in the ring for it.
        assert!(tail.has_subscribers());
        tail.publish((1..=3).map(|s| event(s, 10)).collect());
        assert_eq!(tail.shared.lock().slots.len(), 0);
        assert_eq!(*lock(&seen), vec![1, 2, 3]);

        // A newer tap replaces it; the older guard then leaves it alone.
        let newer = tail.tap(|_| {});
        drop(tapped);
        assert!(tail.has_subscribers());
        tail.publish(vec![event(4, 10)]);
        assert_eq!(*lock(&seen), vec![1, 2, 3]);
        drop(newer);
        assert!(!tail.has_subscribers());
    }
}
