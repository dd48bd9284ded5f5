//! The Redis lock, taken by a background thread for one bounded step, without
//! starving the main thread.
//!
//! The lock is a plain mutex that the main thread also takes each time it wakes
//! up to serve clients. A thread that releases it and takes it again at once
//! nearly always wins it back before the main thread (woken by the release) is
//! even scheduled: step after step, the main thread then waits for the whole run
//! (800 ms for the key scan of a `SYNC.RELOAD FLUSH` over a million keys, seen
//! as the `module-acquire-GIL` latency event). So a thread that comes back for
//! the lock within [`GAP`] of releasing it first sleeps out the rest of the gap:
//! the main thread gets in between any two steps, while a thread whose steps are
//! spaced out anyway (waiting on Postgres between them) never sleeps.

use redis_module::{Context, ThreadSafeContext};
use std::cell::Cell;
use std::time::{Duration, Instant};

/// How long a thread leaves the lock to the main thread between two of its
/// steps: more than a woken thread takes to be scheduled on a busy machine, and
/// small next to a step (1000 rows applied, or a SCAN step, take about 1 ms).
pub const GAP: Duration = Duration::from_micros(500);

thread_local! {
    /// When this thread last released the Redis lock.
    static RELEASED: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Runs `step` under the Redis lock, after leaving the main thread its turn
/// since this thread's previous step. `step` must be bounded work: everything a
/// step does keeps every client waiting.
pub fn with_redis_lock<T>(step: impl FnOnce(&Context) -> T) -> T {
    let pause = pause_before(RELEASED.get(), Instant::now());
    if !pause.is_zero() {
        std::thread::sleep(pause);
    }
    let tsc = ThreadSafeContext::new();
    let out = {
        let ctx = tsc.lock();
        step(&ctx)
    };
    RELEASED.set(Some(Instant::now()));
    out
}

/// How long to wait at `now` before taking the lock again, having released it
/// at `released`.
fn pause_before(released: Option<Instant>, now: Instant) -> Duration {
    released.map_or(Duration::ZERO, |at| GAP.saturating_sub(now.saturating_duration_since(at)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_right_after_the_last_waits_out_the_gap() {
        let now = Instant::now();
        assert_eq!(pause_before(None, now), Duration::ZERO);
        assert_eq!(pause_before(Some(now), now), GAP);
        assert_eq!(pause_before(Some(now), now + GAP / 5), GAP - GAP / 5);
        assert_eq!(pause_before(Some(now), now + GAP), Duration::ZERO);
        assert_eq!(pause_before(Some(now), now + GAP * 3), Duration::ZERO);
    }
}
