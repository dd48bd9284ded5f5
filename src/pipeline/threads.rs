//! The module's threads: each started under the panic guard, named, and kept
//! to be joined at shutdown against one deadline shared by all (see
//! `supervisor.rs` for why the wait is bounded).

use crate::redis::redis_io::warn;
use std::sync::{Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the shutdown looks whether the threads have ended.
const STOP_POLL: Duration = Duration::from_millis(10);

/// Every thread started and not joined yet.
static THREADS: Mutex<Vec<JoinHandle<()>>> = Mutex::new(Vec::new());

/// A lock that a panic elsewhere left poisoned still guards plain data: keep going.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// A thread the system would not start.
#[derive(Debug)]
pub struct SpawnError {
    /// The thread's name.
    pub name: String,
    /// The system's reason.
    pub source: std::io::Error,
}

impl std::fmt::Display for SpawnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot start the {} thread: {}", self.name, self.source)
    }
}

impl std::error::Error for SpawnError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Starts a named thread under the panic guard, and keeps its handle to join it.
pub fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<(), SpawnError> {
    let handle = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            if let Err(panic) = crate::model::guard::catch(f) {
                warn(&format!("thread stopped by a bug: {panic}"));
            }
        })
        .map_err(|source| SpawnError { name: name.to_string(), source })?;
    let mut threads = lock(&THREADS);
    // Workers no longer wanted and finished reloads end on their own: joining them
    // here keeps the list as long as the threads that run.
    let (ended, running): (Vec<_>, Vec<_>) = std::mem::take(&mut *threads).into_iter().partition(|t| t.is_finished());
    *threads = running;
    threads.push(handle);
    drop(threads);
    for thread in ended {
        // Err means the thread panicked, and its guard has logged it already.
        let _ = thread.join();
    }
    Ok(())
}

/// Joins every thread started that ends before `wait` has passed; returns the
/// names of the others, left to end with the process.
pub fn join_all(wait: Duration) -> Vec<String> {
    let threads = std::mem::take(&mut *lock(&THREADS));
    join_within(threads, wait)
}

/// Joins the threads that end before `wait` has passed; returns the names of the others.
fn join_within(threads: Vec<JoinHandle<()>>, wait: Duration) -> Vec<String> {
    let deadline = Instant::now() + wait;
    let mut running = threads;
    loop {
        let (ended, still): (Vec<_>, Vec<_>) = running.into_iter().partition(|t| t.is_finished());
        for thread in ended {
            // Err means the thread panicked, and its guard has logged it already.
            let _ = thread.join();
        }
        running = still;
        if running.is_empty() || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(STOP_POLL);
    }
    running.iter().map(|t| t.thread().name().unwrap_or("unnamed").to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::join_within;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn ended_threads_are_joined_and_busy_ones_named() {
        let (release, blocked) = mpsc::channel::<()>();
        let busy = std::thread::Builder::new()
            .name("busy".into())
            .spawn(move || {
                let _ = blocked.recv();
            })
            .unwrap();
        let done = std::thread::spawn(|| {});
        while !done.is_finished() {
            std::thread::yield_now();
        }
        let left = join_within(vec![done, busy], Duration::from_millis(50));
        assert_eq!(left, vec!["busy".to_string()]);
        release.send(()).unwrap();
    }

    #[test]
    fn nothing_is_left_once_every_thread_ends() {
        let threads = (0..3).map(|_| std::thread::spawn(|| {})).collect();
        assert!(join_within(threads, Duration::from_secs(60)).is_empty());
    }
}
