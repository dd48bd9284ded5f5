//! A `PING` latency probe: what another client sees while the server works.

use crate::harness::Server;
use crate::stats::Latency;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// What the probe saw.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pings {
    /// Round trips of the PINGs.
    pub latency: Latency,
    /// PINGs sent.
    pub count: usize,
    /// PINGs that failed.
    pub errors: u64,
}

/// A thread that sends `PING` on its own connection, one at a time with a pause
/// between them, and records each round trip.
pub struct Prober {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Pings>,
}

impl Prober {
    /// Starts probing `server`, pausing `pause` between two PINGs.
    pub fn start(server: &Server, pause: Duration) -> Prober {
        let mut conn = server.conn();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = thread::spawn(move || {
            let mut samples = Vec::new();
            let mut errors = 0;
            while !flag.load(Ordering::Relaxed) {
                let t = Instant::now();
                if redis::cmd("PING").query::<String>(&mut conn).is_err() {
                    errors += 1;
                }
                samples.push(t.elapsed());
                thread::sleep(pause);
            }
            Pings { count: samples.len(), latency: Latency::of(&mut samples), errors }
        });
        Prober { stop, handle }
    }

    /// Stops the probe and returns what it saw.
    pub fn finish(self) -> Pings {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or_default()
    }
}
