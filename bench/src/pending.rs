//! Figure 6, pending rows: the module's memory per pending row, and the worst
//! `PING` another client sees while a journal of pending rows is recovered at
//! start. Both against the same server binary without the module holding the
//! same hashes.

use crate::harness::{self, Server, Setup};
use crate::probe::{Pings, Prober};
use crate::quiet;
use crate::report::{Met, Row, Section};
use crate::stats::{ms, per_second, rate, thousands};
use crate::workload::{Item, ITEMS_MAPPING};
use std::time::{Duration, Instant};

/// Sizes of the pending-rows phase.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Rows written (each a distinct key, all left pending).
    pub rows: u64,
    /// Pause between two PINGs of the latency probe.
    pub ping_every: Duration,
}

/// Target of the module's memory per pending row, beyond the changed values.
const MEMORY_TARGET: f64 = 100.0;
/// Target of the worst PING during the recovery.
const PING_TARGET: Duration = Duration::from_millis(50);
/// Longest wait for a restart's load, and for the recovery.
const PATIENCE: Duration = Duration::from_secs(600);

/// What one server showed.
struct Side {
    /// `used_memory` before and after the rows were written.
    empty: u64,
    full: u64,
    /// `module_bytes` of `INFO pgsync` with the rows pending (module only).
    module_bytes: u64,
    /// From the restarted server's first PONG to the end of the journal's
    /// recovery (module), or the same length of time (baseline).
    window: Duration,
    /// Whether the recovery finished within [`PATIENCE`] (always true for the baseline).
    finished: bool,
    pings: Pings,
    busy: Option<String>,
}

impl Side {
    fn per_row(&self, rows: u64) -> f64 {
        self.full.saturating_sub(self.empty) as f64 / rows as f64
    }
}

/// Writes `HSET items:<id> name .. score .. tag ..` for ids `1..=rows`, pipelined.
fn write_rows(server: &Server, rows: u64) {
    let mut c = server.conn();
    let mut id = 1;
    while id <= rows {
        let mut pipe = redis::pipe();
        for i in id..=(id + 999).min(rows) {
            pipe.add_command(Item::new(i, i).hset()).ignore();
        }
        if let Err(e) = pipe.query::<()>(&mut c) {
            eprintln!("warning: HSETs failed: {e}");
        }
        id += 1000;
    }
}

/// The bytes of the field names and values each row's HSET sets, on average: what
/// the journal must keep of a pending change whatever its design.
fn value_bytes(rows: u64) -> f64 {
    let total: u64 = (1..=rows)
        .map(|id| {
            let item = Item::new(id, id);
            ("name".len()
                + item.name.len()
                + "score".len()
                + item.score.to_string().len()
                + "tag".len()
                + item.tag.len()) as u64
        })
        .sum();
    total as f64 / rows as f64
}

/// Notes when the module does not hold `rows` unsynced rows `when`.
fn note_unsynced(c: &mut redis::Connection, rows: u64, when: &str, notes: &mut Vec<String>) {
    let held = harness::status_int(c, "items", "pending") + harness::status_int(c, "items", "in_flight");
    if held != rows as i64 {
        notes.push(format!("{} rows {when}, expected {}", thousands(held.max(0) as u64), thousands(rows)));
    }
}

/// Ours: the module pointed at a closed port, so every row stays pending and
/// journaled; then a restart, and PINGs until the journal is recovered.
fn with_module(setup: &Setup, cfg: &Config, notes: &mut Vec<String>) -> Side {
    let busy = quiet::settle(Duration::from_secs(60));
    let mut server = Server::with_module_queueing(setup, ITEMS_MAPPING, "items", &["--appendonly", "yes"]);
    let mut c = server.conn();
    let empty = harness::used_memory(&mut c);
    write_rows(&server, cfg.rows);
    let full = harness::used_memory(&mut c);
    let module_bytes = harness::info_number(&mut c, "pgsync", "pgsync_module_bytes");
    note_unsynced(&mut c, cfg.rows, "pending after the writes", notes);
    server.restart(PATIENCE);
    let monitor = quiet::Monitor::start();
    let prober = Prober::start(&server, cfg.ping_every);
    let started = Instant::now();
    let mut c = server.conn();
    let finished = loop {
        if harness::status_text(&mut c, "items", "recovery").starts_with("done") {
            break true;
        }
        if started.elapsed() > PATIENCE {
            break false;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let window = started.elapsed();
    let pings = prober.finish();
    note_unsynced(&mut c, cfg.rows, "queued after the recovery", notes);
    Side { empty, full, module_bytes, window, finished, pings, busy: busy.or(monitor.finish("the recovery")) }
}

/// Baseline: the server without the module, the same hashes, the same restart;
/// PINGs for as long as the module's recovery took.
fn without_module(setup: &Setup, cfg: &Config, window: Duration) -> Side {
    let busy = quiet::settle(Duration::from_secs(60));
    let mut server = Server::plain_with(&setup.server_bin, &["--appendonly", "yes"]);
    let mut c = server.conn();
    let empty = harness::used_memory(&mut c);
    write_rows(&server, cfg.rows);
    let full = harness::used_memory(&mut c);
    server.restart(PATIENCE);
    let monitor = quiet::Monitor::start();
    let prober = Prober::start(&server, cfg.ping_every);
    std::thread::sleep(window);
    let pings = prober.finish();
    Side { empty, full, module_bytes: 0, window, finished: true, pings, busy: busy.or(monitor.finish("the baseline")) }
}

fn bytes(b: f64) -> String {
    format!("{b:.0} B")
}

/// Runs figure 6.
pub fn run(setup: &Setup, cfg: &Config) -> Section {
    println!("== 6. pending rows: memory and recovery");
    let mut notes = Vec::new();
    let ours = with_module(setup, cfg, &mut notes);
    println!("  with module: {} per row, recovery {}", bytes(ours.per_row(cfg.rows)), ms(ours.window));
    let base = without_module(setup, cfg, ours.window);
    println!("  without module: {} per row", bytes(base.per_row(cfg.rows)));
    for (what, side) in [("with the module", &ours), ("without the module", &base)] {
        if let Some(b) = &side.busy {
            notes.push(format!("{what}: {b}"));
        }
        if side.pings.errors > 0 {
            notes.push(format!("{what}: {} PINGs failed", side.pings.errors));
        }
    }
    if !ours.finished {
        notes.push(format!("the recovery had not finished after {}", ms(PATIENCE)));
    }
    let values = value_bytes(cfg.rows);
    let extra = ours.per_row(cfg.rows) - base.per_row(cfg.rows) - values;
    let worst = |s: &Side| s.pings.latency.max;
    let rows = vec![
        Row {
            name: "module memory per pending row, beyond the changed values (ours); used_memory per row without the \
                   module (baseline)"
                .into(),
            ours: bytes(extra),
            baseline: bytes(base.per_row(cfg.rows)),
            ratio: format!("{:.2}×", extra / base.per_row(cfg.rows).max(1.0)),
            target: format!("≤ {}", bytes(MEMORY_TARGET)),
            met: Met::from(extra <= MEMORY_TARGET),
        },
        Row::info(
            "used_memory per row: rows pending with the module / the same hashes without it",
            bytes(ours.per_row(cfg.rows)),
            bytes(base.per_row(cfg.rows)),
            format!("+{}", bytes(ours.per_row(cfg.rows) - base.per_row(cfg.rows))),
        ),
        Row::info(
            "of which the module's own heap (module_bytes) / the changed values (field names and values)",
            bytes(ours.module_bytes as f64 / cfg.rows as f64),
            bytes(values),
            "—".into(),
        ),
        Row {
            name: format!(
                "worst PING while {} journaled rows are recovered at start (baseline: no module, same data, same time)",
                thousands(cfg.rows)
            ),
            ours: ms(worst(&ours)),
            baseline: ms(worst(&base)),
            ratio: format!("{:.1}×", worst(&ours).as_secs_f64() / worst(&base).as_secs_f64().max(1e-9)),
            target: format!("≤ {}", ms(PING_TARGET)),
            met: if ours.finished { Met::from(worst(&ours) <= PING_TARGET) } else { Met::No },
        },
        Row::info(
            "PING round trip p50 / p99 during the recovery",
            format!("{} / {}", ms(ours.pings.latency.p50), ms(ours.pings.latency.p99)),
            format!("{} / {}", ms(base.pings.latency.p50), ms(base.pings.latency.p99)),
            format!("{} PINGs", thousands(ours.pings.count as u64)),
        ),
        Row::info(
            "recovery: first PONG after the restart → every journaled row queued",
            ms(ours.window),
            "—".into(),
            rate(per_second(cfg.rows, ours.window)),
        ),
    ];
    Section {
        title: "6. Pending rows: memory and recovery at start".into(),
        method: vec![
            format!(
                "Ours: a fresh server with the module and the write-behind `items` mapping, `postgres-url` pointed at a \
                 closed port (nothing drains) and `appendonly yes`. One connection writes `HSET items:<id> name <text> \
                 score <int> tag <text>` for {} distinct ids, pipelined 1000 deep; every row is then pending. \
                 Baseline: the same server binary without the module, the same writes.",
                thousands(cfg.rows)
            ),
            "Memory: `used_memory` after the writes minus before them, per row, on both servers. The module's cost \
             per pending row is ours minus the baseline minus the bytes of the field names and values the HSET set \
             (which the journal must hold whatever its design): the in-memory queue, the journal's own structure, \
             and what Redis's allocator rounds up."
                .into(),
            format!(
                "Recovery: both servers are stopped with `SHUTDOWN` (which writes out the AOF) and started again on \
                 their data. From the first PONG after the load, another client sends `PING` one at a time with a \
                 {} ms pause; ours until `SYNC.STATUS items` shows `recovery: done` (every journaled row queued \
                 again), the baseline for the same length of time. The baseline is the plain server right after \
                 loading the same hashes: what a restart costs clients without the module.",
                cfg.ping_every.as_millis()
            ),
        ],
        rows,
        notes,
    }
}
