//! The module's stop signal. The supervisor owns the one `Shutdown` and stops it
//! on the server's shutdown event; every thread's loop ends on it and every
//! thread's pause ([`Shutdown::sleep`]) ends early on it, so the supervisor can
//! join the threads within its deadline.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Set once, when the module stops; never reset.
#[derive(Debug, Default)]
pub struct Shutdown {
    stopped: Mutex<bool>,
    woken: Condvar,
}

impl Shutdown {
    /// A signal not stopped yet.
    pub const fn new() -> Shutdown {
        Shutdown { stopped: Mutex::new(false), woken: Condvar::new() }
    }

    /// A lock that a panic elsewhere left poisoned still guards a plain flag.
    fn lock(&self) -> MutexGuard<'_, bool> {
        self.stopped.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops: every thread sleeping in [`Shutdown::sleep`] wakes, and every
    /// loop that asks [`Shutdown::is_stopped`] ends.
    pub fn stop(&self) {
        *self.lock() = true;
        self.woken.notify_all();
    }

    /// Whether [`Shutdown::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        *self.lock()
    }

    /// Sleeps up to `d`, waking early when stopped.
    pub fn sleep(&self, d: Duration) {
        let until = Instant::now() + d;
        let mut stopped = self.lock();
        while !*stopped {
            let now = Instant::now();
            if now >= until {
                break;
            }
            stopped = match self.woken.wait_timeout(stopped, until - now) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_stop_wakes_a_long_sleep() {
        let shutdown = Arc::new(Shutdown::new());
        let sleeper = {
            let shutdown = shutdown.clone();
            // An hour: the test ends only because the stop wakes it.
            std::thread::spawn(move || shutdown.sleep(Duration::from_secs(3600)))
        };
        shutdown.stop();
        sleeper.join().unwrap();
        assert!(shutdown.is_stopped());
    }

    #[test]
    fn a_stopped_signal_does_not_sleep() {
        let shutdown = Shutdown::new();
        assert!(!shutdown.is_stopped());
        shutdown.stop();
        shutdown.sleep(Duration::from_secs(3600));
        assert!(shutdown.is_stopped());
    }
}
