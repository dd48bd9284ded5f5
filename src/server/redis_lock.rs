//! The Redis lock, taken by a background thread for one bounded step, without
//! starving the main thread.
//!
//! The lock is a plain mutex that the main thread also takes each time it wakes
//! up to serve clients. A thread that releases it and takes it again at once
//! nearly always wins it back before the main thread (woken by the release) is
//! even scheduled: step after step, the main thread then waits for the whole run
//! (800 ms for the key scan of a `SYNC.RELOAD FLUSH` over a million keys, seen
//! as the `module-acquire-GIL` latency event). So a thread whose steps come back
//! to back (within [`GAP`] of each other) and have held the lock for [`BUDGET`]
//! in all since the main thread last had its turn sleeps out the rest of the gap
//! before its next step: the main thread then gets in. A thread whose steps are
//! spaced out anyway (waiting on Postgres between them) never sleeps, and one
//! that runs back to back sleeps once per [`BUDGET`] of lock time, not per step.

use redis_module::{Context, ThreadSafeContext};
use std::cell::Cell;
use std::time::{Duration, Instant};

/// How long a thread leaves the lock to the main thread: more than a woken
/// thread takes to be scheduled on a busy machine, and small next to a step
/// (1000 rows applied, or a SCAN step, take about 1 ms).
pub const GAP: Duration = Duration::from_micros(500);

/// Lock time a thread may take in back-to-back steps before it leaves the main
/// thread its turn: about what clients can wait, well under the 50 ms target.
pub const BUDGET: Duration = Duration::from_millis(5);

/// One thread's use of the lock.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Turn {
    /// When the thread last released the lock.
    released: Option<Instant>,
    /// Lock time taken since the main thread last had its turn.
    held: Duration,
}

thread_local! {
    static TURN: Cell<Turn> = const { Cell::new(Turn { released: None, held: Duration::ZERO }) };
}

/// Runs `step` under the Redis lock, after leaving the main thread its turn when
/// this thread has kept it out for [`BUDGET`]. `step` must be bounded work:
/// everything a step does keeps every client waiting.
pub fn with_redis_lock<T>(step: impl FnOnce(&Context) -> T) -> T {
    let mut turn = TURN.get();
    let pause = before_step(&mut turn, Instant::now());
    if !pause.is_zero() {
        std::thread::sleep(pause);
    }
    let tsc = ThreadSafeContext::new();
    let (out, held) = {
        let ctx = tsc.lock();
        let started = Instant::now();
        let out = step(&ctx);
        (out, started.elapsed())
    };
    TURN.set(Turn { released: Some(Instant::now()), held: turn.held + held });
    out
}

/// How long to wait at `now` before the next step, and `turn` as the step starts:
/// a step that comes later than [`GAP`] after the last one (or after the pause)
/// starts a new budget.
fn before_step(turn: &mut Turn, now: Instant) -> Duration {
    let since = turn.released.map(|at| now.saturating_duration_since(at));
    match since {
        Some(since) if since < GAP && turn.held >= BUDGET => {
            turn.held = Duration::ZERO;
            GAP - since
        }
        Some(since) if since < GAP => Duration::ZERO,
        _ => {
            turn.held = Duration::ZERO;
            Duration::ZERO
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_to_back_steps_leave_the_main_thread_a_turn_once_per_budget() {
        let t0 = Instant::now();
        let step = Duration::from_millis(1);
        let mut turn = Turn::default();
        assert_eq!(before_step(&mut turn, t0), Duration::ZERO, "the first step waits for nothing");
        // Steps of 1 ms, each right after the last: no pause until 5 ms are held.
        let mut now = t0;
        for _ in 0..4 {
            turn.held += step;
            now += step;
            turn.released = Some(now);
            assert_eq!(before_step(&mut turn, now), Duration::ZERO);
        }
        turn.held += step;
        now += step;
        turn.released = Some(now);
        assert_eq!(before_step(&mut turn, now + GAP / 5), GAP - GAP / 5, "the budget is spent");
        assert_eq!(turn.held, Duration::ZERO, "a new budget after the pause");
    }

    #[test]
    fn spaced_out_steps_never_pause() {
        let t0 = Instant::now();
        let mut turn = Turn { released: Some(t0), held: BUDGET * 3 };
        assert_eq!(before_step(&mut turn, t0 + GAP), Duration::ZERO);
        assert_eq!(turn.held, Duration::ZERO, "the main thread had its turn meanwhile");
    }
}
