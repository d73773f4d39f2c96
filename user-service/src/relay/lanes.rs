//! Per-user lanes of the HTTP relay: which pending events may go out now,
//! so that one user's events are never in two requests at once and leave
//! in seq order, a user whose event waits for a retry holds back only that
//! user, and the rows kept in memory stay bounded.
//!
//! A lane holds a user's next rows in seq order. It is *ready* when it has
//! rows, nothing in flight and no retry pending; batches are cut from ready
//! lanes, oldest first. A lane whose event must be retried keeps only that
//! event and gives its later rows back to the outbox (they are read again,
//! in order, once the lane drains), so a user with a long backlog stuck
//! behind a failing event costs one row of memory, not the backlog.

use crate::outbox::PendingEvent;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use tokio::time::Instant;

#[derive(Default)]
struct Lane {
    rows: VecDeque<PendingEvent>,
    /// How many front rows are in the request in flight (0: none).
    sending: usize,
    /// How many front rows go one per request: a batch holding them was
    /// refused, or the front one is being retried.
    singles: usize,
    retry_at: Option<Instant>,
    /// Some of this user's pending rows are left in the outbox (the lane was
    /// full, or gave them back while held back). Until a refill has read
    /// them, rows of this user from the outbox scan are refused: taking
    /// them would put a later row ahead of an earlier one.
    behind: bool,
    /// A refill from the outbox is asked for or running.
    refilling: bool,
    /// The highest seq the lane has taken (and not given back): a refill
    /// reads after it, so rows already done with but not yet marked in the
    /// outbox are not read again.
    last_seq: i64,
}

impl Lane {
    fn is_ready(&self) -> bool {
        !self.rows.is_empty() && self.sending == 0 && self.retry_at.is_none()
    }
}

/// A request's worth of events: whole runs of front rows of some lanes.
#[derive(Debug)]
pub struct Batch {
    /// Each user in the batch and how many of its rows.
    pub users: Vec<(String, usize)>,
    /// The rows, in seq order (so one user's keep their order inside it).
    pub rows: Vec<PendingEvent>,
}

impl Batch {
    pub fn is_single(&self) -> bool {
        self.rows.len() == 1
    }

    /// The events in the JSON format, for a batch-mode body.
    pub fn events_json(&self) -> Vec<Arc<str>> {
        self.rows.iter().map(|r| r.event_json.clone()).collect()
    }
}

pub struct Lanes {
    lanes: HashMap<String, Lane>,
    /// Users whose lane is ready, in the order they became so.
    ready: VecDeque<String>,
    /// When held-back lanes may try again; entries that no longer match
    /// their lane's `retry_at` are stale and skipped.
    timers: BinaryHeap<Reverse<(Instant, String)>>,
    /// Lanes that drained while `behind`: read their rows again.
    refills: VecDeque<String>,
    /// Most rows one lane keeps.
    per_user: usize,
    /// Rows in all lanes.
    rows: usize,
}

impl Lanes {
    pub fn new(per_user: usize) -> Self {
        Lanes {
            lanes: HashMap::new(),
            ready: VecDeque::new(),
            timers: BinaryHeap::new(),
            refills: VecDeque::new(),
            per_user: per_user.max(1),
            rows: 0,
        }
    }

    /// Rows held in all lanes.
    #[cfg(test)]
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Users whose rows the outbox scan must leave out (they are read per
    /// user, in order, by a refill).
    pub fn behind(&self) -> Vec<String> {
        self.lanes
            .iter()
            .filter(|(_, lane)| lane.behind)
            .map(|(user, _)| user.clone())
            .collect()
    }

    /// Offers a row from the outbox scan, which reads in seq order. Returns
    /// whether the lane took it; a refused row stays pending in the outbox
    /// and is read again later.
    pub fn offer(&mut self, row: PendingEvent) -> bool {
        let lane = self.lanes.entry(row.user_id.clone()).or_default();
        if lane.behind || lane.rows.len() >= self.per_user {
            lane.behind = true;
            return false;
        }
        self.push(row);
        true
    }

    /// Takes a refill: `rows` are the user's oldest pending rows after the
    /// seq [`Self::next_refill`] gave, in seq order; `complete` says the
    /// outbox has no more. Returns the seqs taken.
    pub fn refilled(&mut self, user: &str, rows: Vec<PendingEvent>, complete: bool) -> Vec<i64> {
        let Some(lane) = self.lanes.get_mut(user) else {
            return Vec::new();
        };
        lane.refilling = false;
        let room = self.per_user.saturating_sub(lane.rows.len());
        let taken = rows.len().min(room);
        if complete && taken == rows.len() {
            lane.behind = false;
        }
        let mut seqs = Vec::with_capacity(taken);
        for row in rows.into_iter().take(taken) {
            seqs.push(row.seq);
            self.push(row);
        }
        if taken == 0 {
            // Nothing came: drop the lane, or (after a failed read) ask
            // again.
            self.settle(user);
        }
        seqs
    }

    fn push(&mut self, row: PendingEvent) {
        let user = row.user_id.clone();
        let lane = self.lanes.entry(user.clone()).or_default();
        let was_ready = lane.is_ready();
        lane.last_seq = lane.last_seq.max(row.seq);
        lane.rows.push_back(row);
        self.rows += 1;
        if !was_ready && lane.is_ready() {
            self.ready.push_back(user);
        }
    }

    /// Cuts the next request from ready lanes: up to `max` rows, whole
    /// runs of each lane's front rows. A lane whose front row must go
    /// alone is sent alone.
    pub fn next_batch(&mut self, max: usize) -> Option<Batch> {
        let mut users = Vec::new();
        let mut rows = Vec::new();
        let mut skipped = Vec::new();
        while rows.len() < max {
            let Some(user) = self.ready.pop_front() else {
                break;
            };
            let Some(lane) = self.lanes.get_mut(&user) else {
                continue;
            };
            if !lane.is_ready() {
                continue;
            }
            if lane.singles > 0 {
                if rows.is_empty() {
                    lane.sending = 1;
                    rows.push(lane.rows[0].clone());
                    users.push((user, 1));
                    break;
                }
                skipped.push(user);
                continue;
            }
            let n = lane.rows.len().min(max - rows.len());
            lane.sending = n;
            rows.extend(lane.rows.iter().take(n).cloned());
            users.push((user, n));
        }
        // Those that must go alone keep their place at the front.
        for user in skipped.into_iter().rev() {
            self.ready.push_front(user);
        }
        if rows.is_empty() {
            return None;
        }
        rows.sort_by_key(|r| r.seq);
        Some(Batch { users, rows })
    }

    /// The rows in flight for `user` are done with (delivered, or parked as
    /// dead letters): they leave the lane, and are returned.
    pub fn finish(&mut self, user: &str) -> Vec<PendingEvent> {
        let Some(lane) = self.lanes.get_mut(user) else {
            return Vec::new();
        };
        let n = lane.sending.min(lane.rows.len());
        let done: Vec<PendingEvent> = lane.rows.drain(..n).collect();
        lane.sending = 0;
        lane.singles = lane.singles.saturating_sub(n);
        self.rows -= done.len();
        self.settle(user);
        done
    }

    /// A batch holding these users' rows was refused as a whole: each of
    /// those rows goes again alone, first in line.
    pub fn split(&mut self, users: &[(String, usize)]) {
        for (user, _) in users.iter().rev() {
            if let Some(lane) = self.lanes.get_mut(user) {
                lane.singles = lane.singles.max(lane.sending);
                lane.sending = 0;
                if lane.is_ready() {
                    self.ready.push_front(user.clone());
                }
            }
        }
    }

    /// `user`'s front row failed and is retried at `until`, alone. The
    /// lane's later rows go back to the outbox; their seqs are returned.
    pub fn hold(&mut self, user: &str, until: Instant) -> Vec<i64> {
        let Some(lane) = self.lanes.get_mut(user) else {
            return Vec::new();
        };
        lane.sending = 0;
        lane.singles = 1;
        lane.retry_at = Some(until);
        if let Some(front) = lane.rows.front_mut() {
            front.attempts = front.attempts.saturating_add(1);
        }
        let given_back: Vec<i64> = lane
            .rows
            .drain(1.min(lane.rows.len())..)
            .map(|r| r.seq)
            .collect();
        if !given_back.is_empty() {
            lane.behind = true;
            if let Some(front) = lane.rows.front() {
                lane.last_seq = front.seq;
            }
        }
        self.rows -= given_back.len();
        self.timers.push(Reverse((until, user.to_owned())));
        given_back
    }

    /// When the next held-back lane may try again.
    pub fn next_retry(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }

    /// Makes the lanes whose retry time has come ready again.
    pub fn wake_due(&mut self, now: Instant) {
        while let Some(Reverse((at, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((at, user))) = self.timers.pop() else {
                break;
            };
            if let Some(lane) = self.lanes.get_mut(&user) {
                if lane.retry_at == Some(at) {
                    lane.retry_at = None;
                    if lane.is_ready() {
                        self.ready.push_back(user);
                    }
                }
            }
        }
    }

    /// The next user whose rows must be read again from the outbox, and
    /// the seq to read after.
    pub fn next_refill(&mut self) -> Option<(String, i64)> {
        while let Some(user) = self.refills.pop_front() {
            if let Some(lane) = self.lanes.get_mut(&user) {
                if lane.behind && lane.rows.is_empty() && !lane.refilling {
                    lane.refilling = true;
                    let after = lane.last_seq;
                    return Some((user, after));
                }
            }
        }
        None
    }

    /// Puts a lane where it belongs after a change: back in line, up for a
    /// refill, or gone.
    fn settle(&mut self, user: &str) {
        let Some(lane) = self.lanes.get_mut(user) else {
            return;
        };
        if lane.is_ready() {
            self.ready.push_back(user.to_owned());
        } else if lane.rows.is_empty() && lane.sending == 0 && lane.retry_at.is_none() {
            if lane.behind {
                if !lane.refilling {
                    self.refills.push_back(user.to_owned());
                }
            } else {
                self.lanes.remove(user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn row(seq: i64, user: &str) -> PendingEvent {
        PendingEvent {
            seq,
            event_id: format!("e{seq}"),
            user_id: user.to_owned(),
            event_type: "user.storeUser".to_owned(),
            event_json: Arc::from(format!("{{\"seq\":{seq}}}")),
            attempts: 0,
        }
    }

    fn seqs(batch: &Batch) -> Vec<i64> {
        batch.rows.iter().map(|r| r.seq).collect()
    }

    fn lanes_with(per_user: usize, rows: &[(i64, &str)]) -> Lanes {
        let mut lanes = Lanes::new(per_user);
        for (seq, user) in rows {
            assert!(lanes.offer(row(*seq, user)));
        }
        lanes
    }

    #[test]
    fn a_batch_takes_whole_runs_of_each_user_in_seq_order() {
        let mut lanes = lanes_with(10, &[(1, "a"), (2, "b"), (3, "a"), (4, "c"), (5, "b")]);
        let batch = lanes.next_batch(100).unwrap();
        assert_eq!(seqs(&batch), [1, 2, 3, 4, 5]);
        assert_eq!(
            batch.users,
            [
                ("a".to_owned(), 2),
                ("b".to_owned(), 2),
                ("c".to_owned(), 1)
            ]
        );
        assert!(lanes.next_batch(100).is_none(), "all users are in flight");
    }

    #[test]
    fn a_user_in_flight_is_not_in_another_batch_until_it_is_done() {
        let mut lanes = lanes_with(10, &[(1, "a"), (2, "a"), (3, "a"), (4, "b")]);
        let first = lanes.next_batch(2).unwrap();
        assert_eq!(seqs(&first), [1, 2]);
        let second = lanes.next_batch(2).unwrap();
        assert_eq!(seqs(&second), [4], "a's third row waits for its first two");
        assert!(lanes.next_batch(2).is_none());

        let done: Vec<i64> = lanes.finish("a").iter().map(|r| r.seq).collect();
        assert_eq!(done, [1, 2]);
        assert_eq!(seqs(&lanes.next_batch(2).unwrap()), [3]);
    }

    #[test]
    fn a_refused_batch_sends_each_of_its_rows_alone_then_batches_again() {
        let mut lanes = lanes_with(10, &[(1, "a"), (2, "b"), (3, "a"), (4, "c")]);
        let batch = lanes.next_batch(3).unwrap();
        assert_eq!(seqs(&batch), [1, 2, 3]);
        lanes.split(&batch.users);

        // a's two rows go alone, one after the other; b's alone too; c,
        // never in the refused batch, still batches.
        let one = lanes.next_batch(3).unwrap();
        assert_eq!(seqs(&one), [1]);
        let two = lanes.next_batch(3).unwrap();
        assert_eq!(seqs(&two), [2]);
        let three = lanes.next_batch(3).unwrap();
        assert_eq!(seqs(&three), [4]);
        assert!(lanes.next_batch(3).is_none(), "a's 3 waits for its 1");
        lanes.finish("a");
        assert_eq!(seqs(&lanes.next_batch(3).unwrap()), [3]);
        lanes.finish("a");
        lanes.finish("b");
        lanes.finish("c");
        assert_eq!(lanes.rows(), 0);
        assert!(lanes.lanes.is_empty());
    }

    #[test]
    fn a_held_back_user_keeps_one_row_gives_back_the_rest_and_others_go_on() {
        let mut lanes = lanes_with(10, &[(1, "a"), (2, "b"), (3, "a"), (4, "a")]);
        let first = lanes.next_batch(1).unwrap();
        assert_eq!(seqs(&first), [1]);
        let later = Instant::now() + Duration::from_secs(60);
        let given_back = lanes.hold("a", later);
        assert_eq!(given_back, [3, 4]);
        assert_eq!(lanes.rows(), 2);
        assert_eq!(lanes.behind(), ["a"]);
        // a's later rows from the scan are refused while it is behind.
        assert!(!lanes.offer(row(5, "a")));
        assert!(lanes.offer(row(6, "b")));

        assert_eq!(seqs(&lanes.next_batch(10).unwrap()), [2, 6]);
        assert!(lanes.next_batch(10).is_none(), "a waits for its retry");
        assert_eq!(lanes.next_retry(), Some(later));

        lanes.wake_due(later);
        let retry = lanes.next_batch(10).unwrap();
        assert_eq!(seqs(&retry), [1]);
        assert_eq!(retry.rows[0].attempts, 1);
        lanes.finish("a");
        // Drained while behind: read a's rows again, from the outbox.
        // After seq 1: rows 3 and 4 were given back.
        assert_eq!(lanes.next_refill(), Some(("a".to_owned(), 1)));
        assert!(lanes.next_refill().is_none(), "one refill at a time");
        lanes.refilled("a", vec![row(3, "a"), row(4, "a"), row(5, "a")], true);
        assert!(lanes.behind().is_empty());
        assert_eq!(seqs(&lanes.next_batch(10).unwrap()), [3, 4, 5]);
    }

    #[test]
    fn a_full_lane_refuses_rows_until_a_refill_reads_them_in_order() {
        let mut lanes = Lanes::new(2);
        assert!(lanes.offer(row(1, "a")));
        assert!(lanes.offer(row(2, "a")));
        assert!(!lanes.offer(row(3, "a")));
        assert!(lanes.offer(row(4, "b")));
        assert_eq!(lanes.rows(), 3);

        assert_eq!(seqs(&lanes.next_batch(10).unwrap()), [1, 2, 4]);
        lanes.finish("a");
        lanes.finish("b");
        // After seq 2, the last row it took.
        assert_eq!(lanes.next_refill(), Some(("a".to_owned(), 2)));
        // The refill got as many as the lane holds: more may be pending.
        lanes.refilled("a", vec![row(3, "a"), row(5, "a")], false);
        assert_eq!(lanes.behind(), ["a"]);
        assert!(!lanes.offer(row(6, "a")));
        assert_eq!(seqs(&lanes.next_batch(10).unwrap()), [3, 5]);
        lanes.finish("a");
        assert_eq!(lanes.next_refill(), Some(("a".to_owned(), 5)));
        lanes.refilled("a", vec![row(6, "a")], true);
        assert!(lanes.behind().is_empty());
        assert!(lanes.offer(row(7, "a")));
        assert_eq!(seqs(&lanes.next_batch(10).unwrap()), [6, 7]);
    }

    #[test]
    fn a_stale_retry_timer_does_not_release_a_lane_early() {
        let mut lanes = lanes_with(10, &[(1, "a")]);
        lanes.next_batch(1).unwrap();
        let soon = Instant::now() + Duration::from_secs(1);
        lanes.hold("a", soon);
        lanes.wake_due(soon);
        lanes.next_batch(1).unwrap();
        let later = soon + Duration::from_secs(60);
        lanes.hold("a", later);
        // The first timer was used; nothing releases a before `later`.
        lanes.wake_due(soon + Duration::from_secs(1));
        assert!(lanes.next_batch(1).is_none());
        lanes.wake_due(later);
        assert!(lanes.next_batch(1).is_some());
    }
}
