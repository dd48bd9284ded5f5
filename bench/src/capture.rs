//! Figure 1, capture cost: HSET throughput of the server with the module and a
//! write-behind mapping covering every written key, against the same server binary
//! without the module.

use crate::harness::{self, Db, DbExt, Server, Setup};
use crate::load::{self, CommandOf};
use crate::quiet;
use crate::report::{Met, Row, Section};
use crate::stats::{median, per_second, rate, thousands};
use crate::workload::{Item, ITEMS_MAPPING, RESET_ITEMS};
use std::sync::Arc;
use std::time::Duration;

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

/// `HSET`s of `keys` distinct rows: change `seq` writes row `seq % keys + 1`.
fn hsets(keys: u64) -> CommandOf {
    Arc::new(move |seq| Item::new(seq % keys + 1, seq).hset())
}

/// Which server a measurement runs on.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// The server without the module (the baseline).
    Plain,
    /// The module writing to a reachable Postgres ("Postgres keeping up").
    Module,
    /// The module pointed at a closed port: changes only queue in Redis.
    Queueing,
}

impl Kind {
    /// Every kind, in the order of round 0 (later rounds rotate it).
    const ALL: [Kind; 3] = [Kind::Plain, Kind::Module, Kind::Queueing];

    fn label(self) -> &'static str {
        match self {
            Kind::Plain => "without module",
            Kind::Module => "Postgres keeping up",
            Kind::Queueing => "Postgres queueing",
        }
    }
}

/// The outcome of one measurement.
struct Measurement {
    /// Successful HSETs per second.
    ops: f64,
    /// With the module: rows not yet in Postgres when the last HSET returned.
    pending: Option<i64>,
    /// The server's `used_memory` after the timed load.
    memory: u64,
    /// Failed HSETs.
    errors: u64,
    /// Set when the machine was busy with other work before the measurement.
    busy: Option<String>,
}

/// One measurement on a fresh server: a short warm-up, then the timed load.
fn measure(setup: &Setup, db: &Db, kind: Kind, cfg: &Config, total: u64, depth: usize) -> Measurement {
    db.exec(RESET_ITEMS);
    harness::checkpoint(db);
    let busy = quiet::settle(Duration::from_secs(60));
    let server = match kind {
        Kind::Plain => Server::plain(&setup.server_bin),
        Kind::Module => Server::with_module(setup, db, ITEMS_MAPPING, "items", &[]),
        Kind::Queueing => Server::with_module_queueing(setup, ITEMS_MAPPING, "items", &[]),
    };
    load::run(&server, cfg.clients, (total / 20).max(cfg.clients as u64), depth, &hsets(cfg.keys));
    // Nothing drains while queueing (SYNC.WAIT would only time out): the warm-up's
    // rows simply stay queued.
    if kind == Kind::Module {
        let _ = harness::sync_wait(&mut server.conn(), Duration::from_secs(60));
    }
    let monitor = quiet::Monitor::start();
    let load = load::run(&server, cfg.clients, total, depth, &hsets(cfg.keys));
    let busy = busy.or(monitor.finish("this measurement"));
    let mut c = server.conn();
    let pending = (kind != Kind::Plain)
        .then(|| harness::status_int(&mut c, "items", "pending") + harness::status_int(&mut c, "items", "in_flight"));
    Measurement {
        ops: per_second(load.ops - load.errors, load.elapsed),
        pending,
        memory: harness::used_memory(&mut c),
        errors: load.errors,
        busy,
    }
}

/// Measures one variant (`depth` 1 = unpipelined) in rounds that rotate which
/// server goes first; one row per module mode, both against the same baseline.
/// Targets of one variant: (Postgres keeping up, capture alone with Postgres queueing).
type Targets = (f64, f64);

fn variant(
    setup: &Setup,
    db: &Db,
    cfg: &Config,
    total: u64,
    depth: usize,
    targets: Targets,
) -> (Vec<Row>, Vec<String>) {
    let mut ops: [Vec<f64>; 3] = Default::default();
    let mut memory: [Vec<u64>; 3] = Default::default();
    let mut notes = Vec::new();
    for round in 0..cfg.rounds {
        let mut order = Kind::ALL;
        order.rotate_left(round % Kind::ALL.len());
        for kind in order {
            let m = measure(setup, db, kind, cfg, total, depth);
            println!("  capture depth {depth} round {round} {}: {}", kind.label(), rate(m.ops));
            if let Some(b) = m.busy {
                notes.push(format!("depth {depth} round {round} {}: {b}", kind.label()));
            }
            if m.errors > 0 {
                notes.push(format!("{} HSETs failed in a {} run (depth {depth})", m.errors, kind.label()));
            }
            if let Some(p) = m.pending {
                notes.push(format!(
                    "depth {depth} round {round} {}: {} rows were still waiting for Postgres when the last HSET returned",
                    kind.label(),
                    thousands(p.max(0) as u64)
                ));
            }
            let i = Kind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
            ops[i].push(m.ops);
            memory[i].push(m.memory);
        }
    }
    let list = |v: &[f64]| v.iter().map(|x| rate(*x)).collect::<Vec<_>>().join(", ");
    let mems = |v: &[u64]| v.iter().map(|b| harness::mib(*b)).collect::<Vec<_>>().join(", ");
    notes.push(format!(
        "depth {depth}: rounds {}: {}; Postgres keeping up: {}; Postgres queueing: {}",
        Kind::Plain.label(),
        list(&ops[0]),
        list(&ops[1]),
        list(&ops[2])
    ));
    notes.push(format!(
        "depth {depth}: server used_memory after the timed load, {}: {}; Postgres keeping up: {}; Postgres queueing: {}",
        Kind::Plain.label(),
        mems(&memory[0]),
        mems(&memory[1]),
        mems(&memory[2])
    ));
    let base = median(&ops[0]);
    let shape = if depth == 1 {
        format!("HSET ops/s, {} connections, unpipelined", cfg.clients)
    } else {
        format!("HSET ops/s, {} connections, pipelined {depth} deep", cfg.clients)
    };
    let row = |kind: Kind, ours: f64| {
        let ratio = ours / base.max(1e-9);
        let target = if kind == Kind::Queueing { targets.1 } else { targets.0 };
        Row {
            name: format!("{}: {shape}", kind.label()),
            ours: rate(ours),
            baseline: rate(base),
            ratio: format!("{ratio:.3}"),
            target: format!("≥ {target:.2}"),
            met: Met::from(ratio >= target),
        }
    };
    let rows = vec![row(Kind::Module, median(&ops[1])), row(Kind::Queueing, median(&ops[2]))];
    (rows, notes)
}

/// Runs figure 1.
pub fn run(setup: &Setup, db: &Db, cfg: &Config) -> Section {
    println!("== 1. capture cost");
    let (rows1, notes1) = variant(setup, db, cfg, cfg.ops_unpipelined, 1, (0.70, 0.90));
    let (rows16, notes16) = variant(setup, db, cfg, cfg.ops_pipelined, cfg.depth, (0.50, 0.75));
    // Grouped by mode: keeping up (unpipelined, pipelined), then queueing.
    let rows = vec![rows1[0].clone(), rows16[0].clone(), rows1[1].clone(), rows16[1].clone()];
    Section {
        title: "1. Capture cost (HSET throughput)".into(),
        method: vec![
            format!(
                "{} client threads, one connection each (sync `redis` crate), send \
                 `HSET items:<id> name <text> score <int> tag <text>` over {} keys. \
                 Baseline: the same server binary without the module. Same keys, same values, fresh server per \
                 measurement. Ours, in two modes, each compared with the same baseline:",
                cfg.clients,
                thousands(cfg.keys)
            ),
            "- **Postgres keeping up**: the server with the module and the write-behind `items` mapping covering \
             every key, pointed at the run's database, so every HSET is captured, journaled and synced by 2 workers \
             meanwhile.\n\
             - **Postgres queueing**: the same module and mapping, but `postgres-url` points at a closed local \
             port (`postgres://postgres@127.0.0.1:1/none`), so every HSET is captured and journaled and its change \
             only queues in Redis: nothing drains, and nothing competes for the CPU but the capture itself (and the \
             workers' reconnect attempts, backing off up to `retry-max-delay-ms`, 5 s)."
                .into(),
            format!(
                "Unpipelined: {} HSETs; pipelined: {} HSETs, {} per round trip. Each measurement is preceded by a \
                 warm-up of 5% of its size (not timed; when Postgres keeps up it is synced with `SYNC.WAIT` before \
                 the timed part starts; when queueing its rows stay queued, as `SYNC.WAIT` cannot return). \
                 {} measurement(s) per server, rotating which server goes first; the table shows the medians.",
                thousands(cfg.ops_unpipelined),
                thousands(cfg.ops_pipelined),
                cfg.depth,
                cfg.rounds
            ),
            "Client, server, the module's workers and Postgres all share the same CPUs, so when Postgres keeps up \
             the module's background work (workers building batches, Postgres executing them) competes with the \
             server for CPU during the timed window: this is part of the measured cost. The queueing rows show \
             the capture alone."
                .into(),
        ],
        rows,
        notes: [notes1, notes16].concat(),
    }
}
