//! Figure 1, capture cost: HSET throughput of the server with the module and a
//! write-behind mapping covering every written key, against the same server binary
//! without the module.

use crate::harness::{self, Db, Server, Setup};
use crate::report::{Met, Row, Section};
use crate::stats::{median, per_second, rate, thousands};
use crate::workload::{Item, ITEMS_MAPPING, RESET_ITEMS};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

/// Sizes of the capture phase.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Client connections, one thread each.
    pub clients: usize,
    /// Total HSETs of the unpipelined variant.
    pub ops_unpipelined: u64,
    /// Total HSETs of the pipelined variant.
    pub ops_pipelined: u64,
    /// Pipeline depth of the pipelined variant.
    pub depth: usize,
    /// Distinct keys written (`items:1..=keys`).
    pub keys: u64,
    /// Measurements of each server per variant (alternating order); the median counts.
    pub rounds: usize,
}

/// One load run's outcome.
#[derive(Debug, Clone, Copy)]
struct Load {
    ops: u64,
    errors: u64,
    elapsed: Duration,
}

/// Runs `total` HSETs from `clients` threads, `depth` per round trip, and times
/// them from the moment all connections are open until the last reply.
fn hset_load(server: &Server, clients: usize, total: u64, depth: usize, keys: u64) -> Load {
    let per_client = total / clients as u64;
    let barrier = Arc::new(Barrier::new(clients + 1));
    let handles: Vec<_> = (0..clients)
        .map(|t| {
            let mut conn = server.conn();
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                client_loop(&mut conn, t as u64, per_client, depth, keys)
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let errors: u64 = handles.into_iter().map(|h| h.join().unwrap_or(per_client)).sum();
    Load {
        ops: per_client * clients as u64,
        errors,
        elapsed: start.elapsed(),
    }
}

/// One client's HSETs; returns how many failed.
fn client_loop(conn: &mut redis::Connection, client: u64, count: u64, depth: usize, keys: u64) -> u64 {
    let mut errors = 0;
    let mut done = 0;
    while done < count {
        let n = (depth as u64).min(count - done);
        let mut pipe = redis::pipe();
        for i in done..done + n {
            let seq = client * count + i;
            pipe.add_command(Item::new(seq % keys + 1, seq).hset()).ignore();
        }
        if pipe.query::<()>(conn).is_err() {
            errors += n;
        }
        done += n;
    }
    errors
}

/// Which server a measurement runs on.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Plain,
    Module,
}

/// One measurement on a fresh server: a short warm-up, then the timed load.
/// Returns ops/s and, with the module, the rows still pending at the end.
fn measure(setup: &Setup, db: &Db, kind: Kind, cfg: &Config, total: u64, depth: usize) -> (f64, Option<i64>, u64) {
    db.exec(RESET_ITEMS);
    harness::checkpoint(db);
    let server = match kind {
        Kind::Plain => Server::plain(&setup.server_bin),
        Kind::Module => Server::with_module(setup, db, ITEMS_MAPPING, "items", &[]),
    };
    hset_load(
        &server,
        cfg.clients,
        (total / 20).max(cfg.clients as u64),
        depth,
        cfg.keys,
    );
    if kind == Kind::Module {
        let _ = harness::sync_wait(&mut server.conn(), Duration::from_secs(60));
    }
    let load = hset_load(&server, cfg.clients, total, depth, cfg.keys);
    let pending = (kind == Kind::Module).then(|| {
        let mut c = server.conn();
        harness::status_int(&mut c, "items", "pending") + harness::status_int(&mut c, "items", "in_flight")
    });
    (per_second(load.ops - load.errors, load.elapsed), pending, load.errors)
}

/// Measures one variant (`depth` 1 = unpipelined) in alternating rounds.
fn variant(setup: &Setup, db: &Db, cfg: &Config, total: u64, depth: usize, target: f64) -> (Row, Vec<String>) {
    let mut plain = Vec::new();
    let mut module = Vec::new();
    let mut notes = Vec::new();
    for round in 0..cfg.rounds {
        let order = if round % 2 == 0 {
            [Kind::Plain, Kind::Module]
        } else {
            [Kind::Module, Kind::Plain]
        };
        for kind in order {
            let (ops, pending, errors) = measure(setup, db, kind, cfg, total, depth);
            println!("  capture depth {depth} round {round} {kind:?}: {}", rate(ops));
            if errors > 0 {
                notes.push(format!("{errors} HSETs failed in a {kind:?} run (depth {depth})"));
            }
            match kind {
                Kind::Plain => plain.push(ops),
                Kind::Module => {
                    if let Some(p) = pending {
                        notes.push(format!(
                            "depth {depth} round {round}: {} rows were still waiting for Postgres when the last HSET returned",
                            thousands(p.max(0) as u64)
                        ));
                    }
                    module.push(ops)
                }
            }
        }
    }
    let (ours, base) = (median(&module), median(&plain));
    let ratio = ours / base.max(1e-9);
    let list = |v: &[f64]| v.iter().map(|x| rate(*x)).collect::<Vec<_>>().join(", ");
    notes.push(format!(
        "depth {depth}: rounds with module {}; without {}",
        list(&module),
        list(&plain)
    ));
    let name = if depth == 1 {
        format!("HSET ops/s, {} connections, unpipelined", cfg.clients)
    } else {
        format!("HSET ops/s, {} connections, pipelined {depth} deep", cfg.clients)
    };
    let row = Row {
        name,
        ours: rate(ours),
        baseline: rate(base),
        ratio: format!("{ratio:.3}"),
        target: format!("≥ {target:.2}"),
        met: Met::from(ratio >= target),
    };
    (row, notes)
}

/// Runs figure 1.
pub fn run(setup: &Setup, db: &Db, cfg: &Config) -> Section {
    println!("== 1. capture cost");
    let (row1, notes1) = variant(setup, db, cfg, cfg.ops_unpipelined, 1, 0.90);
    let (row2, notes2) = variant(setup, db, cfg, cfg.ops_pipelined, cfg.depth, 0.75);
    Section {
        title: "1. Capture cost (HSET throughput)".into(),
        method: vec![
            format!(
                "{} client threads, one connection each (sync `redis` crate), send \
                 `HSET items:<id> name <text> score <int> tag <text>` over {} keys. \
                 Ours: the server with the module and the write-behind `items` mapping covering every key \
                 (so every HSET is captured, journaled and synced by 2 workers meanwhile). \
                 Baseline: the same server binary without the module. Same keys, same values, fresh server per measurement.",
                cfg.clients,
                thousands(cfg.keys)
            ),
            format!(
                "Unpipelined: {} HSETs; pipelined: {} HSETs, {} per round trip. Each measurement is preceded by a \
                 warm-up of 5% of its size (not timed; with the module it is synced before the timed part starts). \
                 {} measurements per server, alternating which server goes first; the table shows the medians.",
                thousands(cfg.ops_unpipelined),
                thousands(cfg.ops_pipelined),
                cfg.depth,
                cfg.rounds
            ),
            "Client, server, the module's workers and Postgres all share the same CPUs, so the module's \
             background work (workers building batches, Postgres executing them) competes with the server for CPU \
             during the timed window: this is part of the measured cost."
                .into(),
        ],
        rows: vec![row1, row2],
        notes: [notes1, notes2].concat(),
    }
}
