//! A closed-loop command load: client threads, one connection each, sending
//! commands `depth` per round trip, timed from the moment all connections are
//! open until the last reply. Shared by the phases that measure throughput.

use crate::harness::Server;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

/// One load run's outcome.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Commands sent.
    pub ops: u64,
    /// Commands whose round trip failed.
    pub errors: u64,
    /// Time from the start signal to the last reply.
    pub elapsed: Duration,
}

/// The command of sequence number `seq` (unique over the whole load).
pub type CommandOf = Arc<dyn Fn(u64) -> redis::Cmd + Send + Sync>;

/// Runs `total` commands from `clients` threads, `depth` per round trip.
pub fn run(server: &Server, clients: usize, total: u64, depth: usize, command: &CommandOf) -> Load {
    let per_client = total / clients as u64;
    let barrier = Arc::new(Barrier::new(clients + 1));
    let handles: Vec<_> = (0..clients)
        .map(|t| {
            let mut conn = server.conn();
            let barrier = Arc::clone(&barrier);
            let command = Arc::clone(command);
            thread::spawn(move || {
                barrier.wait();
                client_loop(&mut conn, t as u64 * per_client, per_client, depth, &*command)
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let errors: u64 = handles.into_iter().map(|h| h.join().unwrap_or(per_client)).sum();
    Load { ops: per_client * clients as u64, errors, elapsed: start.elapsed() }
}

/// One client's commands `first..first + count`; returns how many failed.
fn client_loop(
    conn: &mut redis::Connection,
    first: u64,
    count: u64,
    depth: usize,
    command: &(dyn Fn(u64) -> redis::Cmd + Send + Sync),
) -> u64 {
    let mut errors = 0;
    let mut done = 0;
    while done < count {
        let n = (depth as u64).min(count - done);
        let mut pipe = redis::pipe();
        for i in done..done + n {
            pipe.add_command(command(first + i)).ignore();
        }
        if pipe.query::<()>(conn).is_err() {
            errors += n;
        }
        done += n;
    }
    errors
}
