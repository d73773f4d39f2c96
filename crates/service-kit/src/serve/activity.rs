//! What the server knows of each open connection: whether a request is in
//! progress on it and since when it has been idle, so that an idle one can
//! be closed when it has been idle too long, or when a new client needs its
//! place.

use axum::body::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// One connection's activity.
pub(super) struct Activity {
    /// Requests whose response has not been sent in full.
    in_flight: AtomicUsize,
    /// When the last of them ended (or the connection was accepted).
    idle_since: Mutex<Instant>,
    /// Wakes `idle_for` when a request starts or ends.
    changed: Notify,
    /// Cancelled to ask the connection to close for a new client.
    pub(super) evicted: CancellationToken,
}

impl Activity {
    fn new() -> Self {
        Activity {
            in_flight: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
            changed: Notify::new(),
            evicted: CancellationToken::new(),
        }
    }

    fn idle_since(&self) -> MutexGuard<'_, Instant> {
        // An Instant is written whole; a poisoned lock still holds one.
        self.idle_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A request has started; it ends when the guard (moved into its
    /// response body) drops.
    pub(super) fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_one();
        Busy(self.clone())
    }

    /// Counts the idle time from now.
    pub(super) fn restart_idle_clock(&self) {
        *self.idle_since() = Instant::now();
    }

    /// Since when the connection has had no request in progress, or `None`
    /// while it has one.
    fn idle(&self) -> Option<Instant> {
        let since = *self.idle_since();
        (self.in_flight.load(Ordering::SeqCst) == 0).then_some(since)
    }

    /// Resolves once the connection has had no request in progress for
    /// `period`.
    pub(super) async fn idle_for(&self, period: Duration) {
        loop {
            // Registered before looking, so a change in between wakes us.
            let changed = self.changed.notified();
            match self.idle() {
                None => changed.await,
                Some(since) => {
                    let deadline = since + period;
                    if Instant::now() >= deadline {
                        return;
                    }
                    tokio::select! {
                        () = tokio::time::sleep_until(deadline) => {}
                        () = changed => {}
                    }
                }
            }
        }
    }
}

/// Held while a request is in progress.
pub(super) struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        // The clock first: a reader that sees no request in progress must
        // not see the idle time of before this one.
        self.0.restart_idle_clock();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.changed.notify_one();
    }
}

/// A response body that keeps its request counted as in progress until it
/// has been sent (or dropped): a live tail's response lasts for hours after
/// its handler returned.
pub(super) struct TrackedBody {
    pub(super) body: Body,
    pub(super) _busy: Busy,
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The open connections of a server.
#[derive(Clone, Default)]
pub(super) struct Registry {
    connections: Arc<Mutex<HashMap<u64, Arc<Activity>>>>,
    next_id: Arc<AtomicU64>,
}

/// A connection's entry in the registry, removed on drop.
pub(super) struct Registration {
    registry: Registry,
    id: u64,
    pub(super) activity: Arc<Activity>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
    }
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<Activity>>> {
        // Every update is one insert or remove: a poisoned map is whole.
        self.connections
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn register(&self) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let activity = Arc::new(Activity::new());
        self.lock().insert(id, activity.clone());
        Registration {
            registry: self.clone(),
            id,
            activity,
        }
    }

    /// Asks the connection that has been idle longest, and for at least
    /// `min_idle`, to close; false when there is none. A linear scan: it
    /// runs only at the connection cap, over at most that many.
    pub(super) fn evict_longest_idle(&self, min_idle: Duration) -> bool {
        let connections = self.lock();
        let now = Instant::now();
        let longest = connections
            .values()
            .filter(|a| !a.evicted.is_cancelled())
            .filter_map(|a| Some((a.idle()?, a)))
            .filter(|(since, _)| now.duration_since(*since) >= min_idle)
            .min_by_key(|(since, _)| *since);
        match longest {
            Some((_, activity)) => {
                activity.evicted.cancel();
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_idle_only_with_no_request_in_progress() {
        let registry = Registry::default();
        let connection = registry.register();
        let activity = connection.activity.clone();
        let busy = activity.begin();
        let idle = tokio::spawn({
            let activity = activity.clone();
            async move { activity.idle_for(Duration::from_secs(1)).await }
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!idle.is_finished(), "idle while a request is in progress");
        drop(busy);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!idle.is_finished(), "idle before the period is over");
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(idle.is_finished());
    }

    #[test]
    fn the_connection_idle_longest_is_evicted_and_busy_or_new_ones_never() {
        let registry = Registry::default();
        let oldest = registry.register();
        std::thread::sleep(Duration::from_millis(5));
        let newer = registry.register();
        let busy = registry.register();
        let _request = busy.activity.begin();
        std::thread::sleep(Duration::from_millis(5));
        let newest = registry.register();
        let min_idle = Duration::from_millis(5);
        assert!(registry.evict_longest_idle(min_idle));
        assert!(oldest.activity.evicted.is_cancelled());
        assert!(!newer.activity.evicted.is_cancelled());
        assert!(registry.evict_longest_idle(min_idle));
        assert!(newer.activity.evicted.is_cancelled());
        assert!(
            !registry.evict_longest_idle(min_idle),
            "a busy one and one idle for less than {min_idle:?} are left"
        );
        assert!(!newest.activity.evicted.is_cancelled());
        assert!(!busy.activity.evicted.is_cancelled());
        drop(oldest);
        assert_eq!(registry.lock().len(), 3);
    }
}
