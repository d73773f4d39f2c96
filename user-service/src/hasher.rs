//! A fixed pool of password hashing threads, each owning one argon2id
//! working memory it reuses, behind a bounded queue.
//!
//! Why a pool of our own rather than `spawn_blocking`: argon2id works in a
//! block of many MiB (19 MiB then, 12 MiB now). Allocated per hash on
//! whichever blocking thread ran it, glibc kept those blocks in per-thread
//! arenas, and user-service grew from 12 MiB to 831 MiB after 10 s of 8
//! concurrent creates. Here the memory is allocated once per thread, on
//! first use, and reused: the process holds at most `workers` of them.
//! The queue in front is bounded too: when it is full the caller is told
//! at once (the API answers 503 with Retry-After) instead of a backlog of
//! requests piling up behind the CPU.

use crate::domain::{Password, PasswordHash};
use argon2::Block;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// Every thread is busy and the queue is full: try again shortly.
    #[error("password hashing is at capacity")]
    Busy,
    /// The pool has stopped (the service is shutting down).
    #[error("password hashing has stopped")]
    Stopped,
    #[error("password hashing failed: {0}")]
    Failed(String),
}

struct Job {
    password: Password,
    span: tracing::Span,
    reply: oneshot::Sender<Result<PasswordHash, HashError>>,
}

/// A handle on the pool; cheap to clone. The threads end when the last
/// handle is dropped.
#[derive(Clone)]
pub struct Hasher {
    jobs: SyncSender<Job>,
    memories: Arc<AtomicUsize>,
}

impl Hasher {
    /// Starts `workers` threads behind a queue of `queue` waiting hashes.
    pub fn start(workers: usize, queue: usize) -> std::io::Result<Self> {
        let (jobs, inbox) = mpsc::sync_channel::<Job>(queue);
        let inbox = Arc::new(Mutex::new(inbox));
        let memories = Arc::new(AtomicUsize::new(0));
        for i in 0..workers.max(1) {
            let inbox = inbox.clone();
            let memories = memories.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || work(&inbox, &memories))?;
        }
        Ok(Hasher { jobs, memories })
    }

    /// Hashes `password` on a pool thread, inside the caller's span.
    pub async fn hash(&self, password: Password) -> Result<PasswordHash, HashError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            password,
            span: tracing::Span::current(),
            reply,
        };
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(HashError::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(HashError::Stopped),
        }
        answer.await.map_err(|_| HashError::Stopped)?
    }

    /// How many argon2 working memories the threads have allocated so far:
    /// never more than the number of threads.
    pub fn memories(&self) -> usize {
        self.memories.load(Ordering::Relaxed)
    }
}

fn work(inbox: &Mutex<Receiver<Job>>, memories: &AtomicUsize) {
    let mut memory: Vec<Block> = Vec::new();
    loop {
        // The lock is held only while waiting for the next job; a poisoned
        // lock means another worker panicked there, the queue is fine.
        let job = match inbox.lock().unwrap_or_else(|p| p.into_inner()).recv() {
            Ok(job) => job,
            // Every handle is gone: the service is stopping.
            Err(_) => return,
        };
        // A caller that gave up (timed out, disconnected) needs no hash.
        if job.reply.is_closed() {
            continue;
        }
        if memory.is_empty() {
            memory = vec![Block::default(); Password::memory_blocks()];
            memories.fetch_add(1, Ordering::Relaxed);
        }
        let hashed = job
            .span
            .in_scope(|| job.password.hash_with(&mut memory))
            .map_err(|e| HashError::Failed(e.to_string()));
        // The caller may have gone meanwhile; nothing to do then.
        let _ = job.reply.send(hashed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::RawPassword;

    fn password() -> Password {
        let raw: RawPassword = serde_json::from_str("\"hunter42\"").unwrap();
        Password::parse(raw).unwrap()
    }

    #[tokio::test]
    async fn a_flood_is_refused_beyond_the_queue_and_memory_stays_at_one_per_thread() {
        let hasher = Hasher::start(2, 3).unwrap();
        let attempts: Vec<_> = (0..20)
            .map(|_| {
                let hasher = hasher.clone();
                tokio::spawn(async move { hasher.hash(password()).await })
            })
            .collect();
        let mut hashed = 0;
        let mut busy = 0;
        for attempt in attempts {
            match attempt.await.unwrap() {
                Ok(hash) => {
                    assert!(hash.as_str().starts_with("$argon2id$"));
                    hashed += 1;
                }
                Err(HashError::Busy) => busy += 1,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(busy > 0, "20 at once exceed 2 threads and 3 places");
        assert!(hashed >= 2, "{hashed}");
        assert!(hasher.memories() <= 2);
        // Once the flood is over there is room again.
        assert!(hasher.hash(password()).await.is_ok());
        assert!(hasher.memories() <= 2);
    }
}
