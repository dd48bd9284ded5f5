//! The one retry delay of the module: capped exponential backoff. Workers keep one
//! per mapping (shared by every worker thread, so a mapping that cannot be written
//! waits while the others go on); every thread's loop (`pipeline/retry.rs`)
//! keeps one for its failed rounds.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The first retry delay of every retry: a mapping whose rows cannot be written
/// (the workers' per-mapping backoffs) and every thread's loop.
pub const FIRST_RETRY_DELAY: Duration = Duration::from_millis(50);

/// Delays after consecutive failures: `first`, then twice the previous one, up to a
/// cap; a success starts over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    last: Duration,
}

impl Backoff {
    /// A backoff whose first delay is `first`.
    pub const fn new(first: Duration) -> Backoff {
        Backoff { first, last: Duration::ZERO }
    }

    /// Records a failure and returns how long to wait before the next attempt. The
    /// cap is read by the caller each time (`pgsync.retry-max-delay-ms` may change
    /// at run time); a cap below `first` is raised to it.
    pub fn failed(&mut self, cap: Duration) -> Duration {
        let cap = cap.max(self.first);
        self.last = if self.last.is_zero() { self.first } else { self.last.saturating_mul(2).min(cap) };
        self.last
    }

    /// Records a success: the next failure waits `first` again.
    pub fn reset(&mut self) {
        self.last = Duration::ZERO;
    }
}

/// A backoff shared by threads, with the time until which the next attempt waits.
#[derive(Debug)]
pub struct SharedBackoff(Mutex<(Backoff, Option<Instant>)>);

impl SharedBackoff {
    /// A shared backoff whose first delay is `first`, ready at once.
    pub fn new(first: Duration) -> SharedBackoff {
        SharedBackoff(Mutex::new((Backoff::new(first), None)))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, (Backoff, Option<Instant>)> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether an attempt may be made at `now`.
    pub fn ready(&self, now: Instant) -> bool {
        self.state().1.is_none_or(|until| now >= until)
    }

    /// Records a failure at `now`: the next attempt waits out the next delay.
    pub fn failed(&self, now: Instant, cap: Duration) {
        let mut state = self.state();
        let delay = state.0.failed(cap);
        state.1 = Some(now + delay);
    }

    /// Records a success: no more waiting.
    pub fn reset(&self) {
        let mut state = self.state();
        state.0.reset();
        state.1 = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn delays_double_from_the_first_up_to_the_cap() {
        let mut b = Backoff::new(50 * MS);
        let delays: Vec<Duration> = (0..6).map(|_| b.failed(500 * MS)).collect();
        assert_eq!(delays, [50 * MS, 100 * MS, 200 * MS, 400 * MS, 500 * MS, 500 * MS]);
    }

    #[test]
    fn a_success_starts_over() {
        let mut b = Backoff::new(50 * MS);
        b.failed(500 * MS);
        b.failed(500 * MS);
        b.reset();
        assert_eq!(b.failed(500 * MS), 50 * MS);
    }

    #[test]
    fn a_cap_below_the_first_delay_is_the_first_delay() {
        let mut b = Backoff::new(200 * MS);
        assert_eq!(b.failed(10 * MS), 200 * MS);
        assert_eq!(b.failed(10 * MS), 200 * MS);
    }

    #[test]
    fn a_lowered_cap_applies_to_the_next_delay() {
        let mut b = Backoff::new(50 * MS);
        for _ in 0..5 {
            b.failed(5000 * MS);
        }
        assert_eq!(b.failed(100 * MS), 100 * MS);
    }

    #[test]
    fn shared_waits_out_the_delay_from_the_failure() {
        let b = SharedBackoff::new(50 * MS);
        let t = Instant::now();
        assert!(b.ready(t));
        b.failed(t, 5000 * MS);
        assert!(!b.ready(t));
        assert!(!b.ready(t + 49 * MS));
        assert!(b.ready(t + 50 * MS));
        b.failed(t, 5000 * MS);
        assert!(!b.ready(t + 99 * MS));
        assert!(b.ready(t + 100 * MS));
        b.reset();
        assert!(b.ready(t));
    }
}
