//! The one loop of the module's threads: run a round, pause, again, until the
//! work is done or the module stops. A round that fails waits the one backoff
//! (`model/backoff.rs`: the first retry delay, doubled up to
//! `pgsync.retry-max-delay-ms`), one that worked starts the backoff over, an idle
//! one pauses as long as it says. Every pause ends early at shutdown.

use crate::model::backoff::{Backoff, FIRST_RETRY_DELAY};
use crate::model::shutdown::Shutdown;
use crate::redis::config;
use std::time::Duration;

/// What one round of a thread's loop came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Round<T = ()> {
    /// It did its work: the next failure waits the first delay again.
    Worked,
    /// Nothing to do now (idle, or not ready): the next round comes after this
    /// pause, and the backoff stays as it is.
    Idle(Duration),
    /// The work is done: the loop ends with this value.
    Done(T),
}

/// Runs `round` until it is done or `shutdown` stops; a failed round's error goes
/// to `failed`, then the loop waits the backoff's next delay, capped by
/// `pgsync.retry-max-delay-ms` (read each time: it may change at run time).
/// Returns the value of the round that was done, `None` once stopped.
pub fn until_done<T, E>(
    shutdown: &Shutdown,
    round: impl FnMut() -> Result<Round<T>, E>,
    failed: impl FnMut(E),
) -> Option<T> {
    with_cap(shutdown, || config::millis(&config::RETRY_MAX_DELAY_MS), round, failed)
}

/// [`until_done`] with the cap of the backoff read from `cap`.
fn with_cap<T, E>(
    shutdown: &Shutdown,
    cap: impl Fn() -> Duration,
    mut round: impl FnMut() -> Result<Round<T>, E>,
    mut failed: impl FnMut(E),
) -> Option<T> {
    let mut backoff = Backoff::new(FIRST_RETRY_DELAY);
    // A round first, even when stopping: a caller that must ask once (whether a
    // batch committed) still asks.
    loop {
        let pause = match round() {
            Ok(Round::Done(value)) => return Some(value),
            Ok(Round::Worked) => {
                backoff.reset();
                None
            }
            Ok(Round::Idle(pause)) => Some(pause),
            Err(e) => {
                failed(e);
                Some(backoff.failed(cap()))
            }
        };
        if shutdown.is_stopped() {
            return None;
        }
        if let Some(pause) = pause {
            shutdown.sleep(pause);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_handed_over_until_a_round_is_done() {
        let shutdown = Shutdown::new();
        let mut rounds =
            vec![Ok(Round::Done(7)), Ok(Round::Idle(Duration::ZERO)), Ok(Round::Worked), Err("b"), Err("a")];
        let mut failures = Vec::new();
        let done = with_cap(&shutdown, || Duration::ZERO, || rounds.pop().unwrap(), |e| failures.push(e));
        assert_eq!(done, Some(7));
        assert_eq!(failures, ["a", "b"]);
        assert!(rounds.is_empty());
    }

    #[test]
    fn a_stop_ends_the_loop_after_the_round_that_saw_it() {
        let shutdown = Shutdown::new();
        let mut calls = 0;
        let done: Option<()> = with_cap(
            &shutdown,
            // An hour: the test ends only because the stop cuts the pause.
            || Duration::from_secs(3600),
            || {
                calls += 1;
                shutdown.stop();
                Err("down")
            },
            |_| {},
        );
        assert_eq!((done, calls), (None, 1));
    }

    #[test]
    fn a_stopped_loop_still_runs_one_round() {
        let shutdown = Shutdown::new();
        shutdown.stop();
        let done = with_cap(&shutdown, || Duration::ZERO, || Ok::<_, ()>(Round::Done("asked")), |_| {});
        assert_eq!(done, Some("asked"));
    }
}
