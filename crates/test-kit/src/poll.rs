//! Waiting for something to become true, with a deadline: the one polling
//! loop of the test suites, so that a test never sleeps a fixed time and
//! guesses.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often a condition is checked again.
const INTERVAL: Duration = Duration::from_millis(20);

/// What a check may answer: `true`/`false`, or `Some(value)` when done.
pub trait Polled {
    type Value;
    fn done(self) -> Option<Self::Value>;
}

impl Polled for bool {
    type Value = ();
    fn done(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Polled for Option<T> {
    type Value = T;
    fn done(self) -> Option<T> {
        self
    }
}

/// Re-checks `check` until it is done, and returns what it gave; `None`
/// once `deadline` has passed without it, for a test that explains the
/// failure itself (with a service's log, say) or expects the timeout.
pub async fn within<P, F, Fut>(deadline: Duration, mut check: F) -> Option<P::Value>
where
    P: Polled,
    F: FnMut() -> Fut,
    Fut: Future<Output = P>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await.done() {
            return Some(value);
        }
        if start.elapsed() >= deadline {
            return None;
        }
        tokio::time::sleep(INTERVAL).await;
    }
}

/// Re-checks `check` until it is done and returns what it gave, failing
/// the test, naming `what`, once `deadline` has passed without it.
pub async fn eventually<P, F, Fut>(what: &str, deadline: Duration, check: F) -> P::Value
where
    P: Polled,
    F: FnMut() -> Fut,
    Fut: Future<Output = P>,
{
    match within(deadline, check).await {
        Some(value) => value,
        None => panic!("timed out after {deadline:?} waiting for {what}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_check_that_comes_true_gives_its_value() {
        let mut calls = 0;
        let value = eventually("the third call", Duration::from_secs(5), || {
            calls += 1;
            let now = calls;
            async move { (now == 3).then_some(now) }
        })
        .await;
        assert_eq!(value, 3);
    }

    #[tokio::test]
    async fn a_check_that_never_comes_true_ends_at_the_deadline() {
        let start = Instant::now();
        let done = within(Duration::from_millis(100), || async { false }).await;
        assert_eq!(done, None);
        assert!(start.elapsed() >= Duration::from_millis(100));
    }

    #[tokio::test]
    #[should_panic(expected = "waiting for nothing")]
    async fn eventually_fails_the_test_naming_what_it_waited_for() {
        eventually("nothing", Duration::from_millis(50), || async { false }).await;
    }
}
