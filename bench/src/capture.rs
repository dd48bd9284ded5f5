//! Figure 1, capture cost: HSET throughput, driven by the server's own load
//! generator (`valkey-benchmark`, or `redis-benchmark` for Redis), of the server
//! with the module and a write-behind mapping covering every written key, against
//! the same server binary with the same settings but without the module; and the
//! routed write's time per call (`SYNC.WRITE` in `INFO commandstats`) next to a
//! plain `HSET`'s.

use crate::harness::{self, Db, DbExt, Server, Setup};
use crate::quiet;
use crate::report::{Met, Row, Section};
use crate::stats::{median, rate, thousands};
use crate::workload::SCORES_MAPPING;
use std::process::Command;
use std::time::Duration;

/// Sizes of the capture phase.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Client connections of the load generator (`-c`).
    pub clients: usize,
    /// HSETs of the unpipelined variant (`-n`).
    pub ops_unpipelined: u64,
    /// HSETs of the pipelined variant.
    pub ops_pipelined: u64,
    /// Pipeline depth of the pipelined variant (`-P`).
    pub depth: usize,
    /// Distinct keys written (`-r`).
    pub keys: u64,
    /// Measurements of each server per variant (rotating order); the median counts.
    pub rounds: usize,
}

/// The command every client sends; `__rand_int__` is a 12-digit zero-padded
/// number below `-r`, a new one for each occurrence.
const HSET: [&str; 4] = ["HSET", "scores:__rand_int__", "score", "__rand_int__"];

/// Which server a measurement runs on.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// The server without the module (the baseline).
    Plain,
    /// The module writing to a reachable Postgres ("Postgres keeping up").
    Module,
    /// The module pointed at a closed port: changes only queue (capture alone).
    Queueing,
}

impl Kind {
    /// Every kind, in the order of round 0 (later rounds rotate it).
    const ALL: [Kind; 3] = [Kind::Plain, Kind::Module, Kind::Queueing];

    fn label(self) -> &'static str {
        match self {
            Kind::Plain => "without module",
            Kind::Module => "Postgres keeping up",
            Kind::Queueing => "capture alone (Postgres unreachable)",
        }
    }

    /// The command-stats entry of the write: the routed `SYNC.WRITE` with the module.
    fn stat(self) -> &'static str {
        match self {
            Kind::Plain => "cmdstat_hset",
            Kind::Module | Kind::Queueing => "cmdstat_sync.write",
        }
    }
}

/// The load generator that comes with the server binary: `valkey-benchmark` for
/// Valkey, `redis-benchmark` for Redis (any version drives any server).
pub fn load_tool(server_bin: &str) -> &'static str {
    let version = Command::new(server_bin).arg("--version").output().map(|o| o.stdout).unwrap_or_default();
    if String::from_utf8_lossy(&version).contains("Valkey") {
        "valkey-benchmark"
    } else {
        "redis-benchmark"
    }
}

/// One `INFO commandstats` entry: calls, µs per call, failed and rejected calls.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct CommandStat {
    calls: u64,
    usec_per_call: f64,
    failed: u64,
}

/// The entry `name` (`cmdstat_hset`) of an `INFO commandstats` reply.
fn command_stat(info: &str, name: &str) -> Option<CommandStat> {
    let line = info.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))?;
    let field = |f: &str| line.split(',').find_map(|kv| kv.strip_prefix(f)?.strip_prefix('='));
    let int = |f: &str| field(f).and_then(|v| v.trim().parse::<u64>().ok()).unwrap_or(0);
    Some(CommandStat {
        calls: int("calls"),
        usec_per_call: field("usec_per_call")?.trim().parse().ok()?,
        failed: int("failed_calls") + int("rejected_calls"),
    })
}

/// Requests per second from the load generator's `--csv` output (the `rps`
/// column of its one data line).
fn csv_rps(output: &str) -> Option<f64> {
    let line = output.lines().rev().find(|l| l.starts_with("\"HSET"))?;
    let fields: Vec<&str> = line.split("\",\"").collect();
    fields.get(1)?.trim_matches('"').parse().ok()
}

/// Runs the load generator against `server`: `total` HSETs over `keys` random
/// keys from `clients` connections, `depth` per round trip. Requests per second.
fn drive(tool: &str, server: &Server, cfg: &Config, total: u64, depth: usize) -> Result<f64, String> {
    let output = Command::new(tool)
        .args(["-h", "127.0.0.1", "-p", &server.port.to_string(), "--csv"])
        .args(["-c", &cfg.clients.to_string(), "-n", &total.to_string()])
        .args(["-r", &cfg.keys.to_string(), "-P", &depth.to_string()])
        .args(HSET)
        .output()
        .map_err(|e| format!("cannot run {tool}: {e} (scripts/install-deps.sh installs it)"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    csv_rps(&text).ok_or_else(|| format!("{tool} printed no rate: {text} {}", String::from_utf8_lossy(&output.stderr)))
}

/// The outcome of one measurement.
struct Measurement {
    /// HSETs per second, as the load generator counted them.
    ops: f64,
    /// The write's command-stats entry for the timed load.
    stat: CommandStat,
    /// With the module: rows not yet in Postgres when the load ended.
    pending: Option<i64>,
    /// The server's `used_memory` after the timed load.
    memory: u64,
    /// Set when the machine was busy with other work during the measurement.
    busy: Option<String>,
}

/// One measurement on a fresh server: a warm-up of 5% (every key's first write
/// is an insert), command stats reset, then the timed load.
fn measure(setup: &Setup, db: &Db, tool: &str, kind: Kind, cfg: &Config, total: u64, depth: usize) -> Measurement {
    db.exec("TRUNCATE scores");
    harness::checkpoint(db);
    let busy = quiet::settle(Duration::from_secs(60));
    let server = match kind {
        Kind::Plain => Server::plain(&setup.server_bin),
        Kind::Module => Server::with_module(setup, db, SCORES_MAPPING, "scores", &[]),
        Kind::Queueing => Server::with_module_queueing(setup, SCORES_MAPPING, "scores", &[]),
    };
    let mut c = server.conn();
    let warm = drive(tool, &server, cfg, (total / 20).max(cfg.clients as u64), depth);
    // Nothing drains while queueing (SYNC.WAIT would only time out): the warm-up's
    // rows simply stay queued.
    if kind == Kind::Module && warm.is_ok() {
        let _ = harness::sync_wait(&mut c, Duration::from_secs(60));
    }
    let _: redis::RedisResult<()> = redis::cmd("CONFIG").arg("RESETSTAT").query(&mut c);
    let monitor = quiet::Monitor::start();
    let ops = warm.and_then(|_| drive(tool, &server, cfg, total, depth));
    let busy = busy.or(monitor.finish("this measurement"));
    let info: String = redis::cmd("INFO").arg("commandstats").query(&mut c).unwrap_or_default();
    let pending = (kind != Kind::Plain)
        .then(|| harness::status_int(&mut c, "scores", "pending") + harness::status_int(&mut c, "scores", "in_flight"));
    let ops = ops.unwrap_or_else(|e| {
        eprintln!("warning: {e}");
        0.0
    });
    Measurement {
        ops,
        stat: command_stat(&info, kind.stat()).unwrap_or_default(),
        pending,
        memory: harness::used_memory(&mut c),
        busy,
    }
}

/// Per-kind results of one variant, in [`Kind::ALL`] order.
#[derive(Default)]
struct Results {
    ops: [Vec<f64>; 3],
    usec: [Vec<f64>; 3],
    memory: [Vec<u64>; 3],
}

/// Measures one variant (`depth` 1 = unpipelined) in rounds that rotate which
/// server goes first.
fn variant(setup: &Setup, db: &Db, tool: &str, cfg: &Config, total: u64, depth: usize) -> (Results, Vec<String>) {
    let mut results = Results::default();
    let mut notes = Vec::new();
    for round in 0..cfg.rounds {
        let mut order = Kind::ALL;
        order.rotate_left(round % Kind::ALL.len());
        for kind in order {
            let m = measure(setup, db, tool, kind, cfg, total, depth);
            println!(
                "  capture depth {depth} round {round} {}: {}, {:.2} µs per call",
                kind.label(),
                rate(m.ops),
                m.stat.usec_per_call
            );
            let what = format!("depth {depth} round {round} {}", kind.label());
            if let Some(b) = m.busy {
                notes.push(format!("{what}: {b}"));
            }
            // The load generator counts error replies as requests: the server's
            // own figures say whether every HSET was the write it should be.
            if m.stat.failed > 0 || m.stat.calls < total {
                notes.push(format!(
                    "{what}: **{} calls of `{}` for {} HSETs sent, {} failed or rejected**",
                    thousands(m.stat.calls),
                    kind.stat(),
                    thousands(total),
                    thousands(m.stat.failed)
                ));
            }
            if let Some(p) = m.pending {
                notes.push(format!(
                    "{what}: {} rows were waiting for Postgres when the load ended",
                    thousands(p.max(0) as u64)
                ));
            }
            let i = Kind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
            results.ops[i].push(m.ops);
            results.usec[i].push(m.stat.usec_per_call);
            results.memory[i].push(m.memory);
        }
    }
    let list = |v: &[f64]| v.iter().map(|x| rate(*x)).collect::<Vec<_>>().join(", ");
    let usecs = |v: &[f64]| v.iter().map(|x| format!("{x:.2}")).collect::<Vec<_>>().join(", ");
    let mems = |v: &[u64]| v.iter().map(|b| harness::mib(*b)).collect::<Vec<_>>().join(", ");
    let per_kind = |f: &dyn Fn(usize) -> String| {
        Kind::ALL.iter().enumerate().map(|(i, k)| format!("{}: {}", k.label(), f(i))).collect::<Vec<_>>().join("; ")
    };
    notes.push(format!("depth {depth}: HSETs/s by round, {}", per_kind(&|i| list(&results.ops[i]))));
    notes.push(format!("depth {depth}: µs per call by round, {}", per_kind(&|i| usecs(&results.usec[i]))));
    notes.push(format!("depth {depth}: used_memory after the timed load, {}", per_kind(&|i| mems(&results.memory[i]))));
    (results, notes)
}

/// Targets of one variant: throughput ratio with Postgres keeping up, and with
/// capture alone.
type Targets = (f64, f64);

/// Most µs per call of the routed write, as a multiple of a plain HSET's.
const USEC_TARGET: f64 = 1.5;

/// The rows of one variant: throughput ratios, then µs per call, for each mode.
fn rows(cfg: &Config, depth: usize, r: &Results, targets: Targets) -> (Vec<Row>, Vec<Row>) {
    let shape = match depth {
        1 => format!("{} connections, unpipelined", cfg.clients),
        d => format!("{} connections, pipelined {d} deep", cfg.clients),
    };
    let base = median(&r.ops[0]);
    let base_usec = median(&r.usec[0]);
    let mut throughput = Vec::new();
    let mut usec = Vec::new();
    for (i, kind) in [(1, Kind::Module), (2, Kind::Queueing)] {
        let ours = median(&r.ops[i]);
        let ratio = ours / base.max(1e-9);
        let target = if kind == Kind::Queueing { targets.1 } else { targets.0 };
        throughput.push(Row {
            name: format!("{}: HSET ops/s, {shape}", kind.label()),
            ours: rate(ours),
            baseline: rate(base),
            ratio: format!("{ratio:.3}"),
            target: format!("≥ {target:.2}"),
            met: Met::from(ratio >= target),
        });
        let ours_usec = median(&r.usec[i]);
        let times = ours_usec / base_usec.max(1e-9);
        usec.push(Row {
            name: format!("{}, {shape}: µs per call, SYNC.WRITE (ours) vs HSET (baseline)", kind.label()),
            ours: format!("{ours_usec:.2} µs"),
            baseline: format!("{base_usec:.2} µs"),
            ratio: format!("{times:.2}×"),
            target: format!("≤ {USEC_TARGET:.1}×"),
            met: Met::from(ours_usec > 0.0 && times <= USEC_TARGET),
        });
    }
    (throughput, usec)
}

/// Runs figure 1.
pub fn run(setup: &Setup, db: &Db, cfg: &Config) -> Section {
    println!("== 1. capture cost");
    let tool = load_tool(&setup.server_bin);
    let (r1, notes1) = variant(setup, db, tool, cfg, cfg.ops_unpipelined, 1);
    let (r16, notes16) = variant(setup, db, tool, cfg, cfg.ops_pipelined, cfg.depth);
    let (t1, u1) = rows(cfg, 1, &r1, (0.70, 0.90));
    let (t16, u16) = rows(cfg, cfg.depth, &r16, (0.50, 0.75));
    // Grouped by mode: capture alone (unpipelined, pipelined), then keeping up;
    // then the µs per call in the same order.
    let rows = vec![
        t1[1].clone(),
        t16[1].clone(),
        t1[0].clone(),
        t16[0].clone(),
        u1[1].clone(),
        u16[1].clone(),
        u1[0].clone(),
        u16[0].clone(),
    ];
    let command = HSET.join(" ");
    Section {
        title: "1. Capture cost (HSET throughput)".into(),
        method: vec![
            format!(
                "Load from `{tool}` (the load generator that comes with the server), as a user would measure: \
                 `{tool} -c {} -n <N> -r {} -P <depth> {command}`: {} connections, random keys among {} \
                 (`scores:` and a 12-digit zero-padded number: the `scores` table's key column is `text`, so \
                 every such name is a canonical id). Baseline: the same server binary, started with the same \
                 settings but without the module, in the same run. Fresh server per measurement. Ours, in two \
                 modes, each compared with the same baseline:",
                cfg.clients,
                thousands(cfg.keys),
                cfg.clients,
                thousands(cfg.keys)
            ),
            "- **capture alone (Postgres unreachable)**: the module with the write-behind `scores` mapping \
             covering every key, but `postgres-url` pointing at a closed local port \
             (`postgres://postgres@127.0.0.1:1/none`), so every HSET is captured and journaled and its change \
             only queues in Redis: nothing drains, and nothing competes for the CPU but the capture itself \
             (and the workers' reconnect attempts, backing off up to `retry-max-delay-ms`, 5 s).\n\
             - **Postgres keeping up**: the same, pointed at the run's database, so every HSET is captured, \
             journaled and synced by 2 workers meanwhile."
                .into(),
            format!(
                "Unpipelined: {} HSETs; pipelined: {} HSETs, {} per round trip. Each measurement is preceded by a \
                 warm-up of 5% of its size (not timed; when Postgres keeps up it is synced with `SYNC.WAIT` before \
                 the timed part starts), then `CONFIG RESETSTAT`. {} measurement(s) per server, rotating which \
                 server goes first; the table shows the medians.",
                thousands(cfg.ops_unpipelined),
                thousands(cfg.ops_pipelined),
                cfg.depth,
                cfg.rounds
            ),
            "µs per call: `usec_per_call` of `INFO commandstats` after the timed load: `SYNC.WRITE` with the \
             module (the command filter routes each client's `HSET` on a mapped key to it: the write, its \
             replication and its capture), `HSET` without. It is the server's own time for the command, \
             without the network and the event loop that throughput includes."
                .into(),
            "Load generator, server, the module's workers and Postgres all share the same CPUs, so when Postgres \
             keeps up the module's background work (workers building batches, Postgres executing them) competes \
             with the server for CPU during the timed window: this is part of the measured cost. Capture alone \
             shows the write path by itself."
                .into(),
        ],
        rows,
        notes: [notes1, notes16].concat(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_load_generators_rate_and_the_command_stats() {
        let csv = "\"test\",\"rps\",\"avg_latency_ms\"\n\"HSET scores:__rand_int__ score __rand_int__\",\"56433.41\",\"0.562\"\n";
        assert_eq!(csv_rps(csv), Some(56433.41));
        assert_eq!(csv_rps("\"test\",\"rps\"\n"), None);
        let info = "# Commandstats\r\ncmdstat_hset:calls=250000,usec=198603,usec_per_call=0.79,rejected_calls=2,failed_calls=1\r\n\
                    cmdstat_sync.write:calls=7,usec=21,usec_per_call=3.00,rejected_calls=0,failed_calls=0\r\n";
        assert_eq!(
            command_stat(info, "cmdstat_hset"),
            Some(CommandStat { calls: 250_000, usec_per_call: 0.79, failed: 3 })
        );
        assert_eq!(command_stat(info, "cmdstat_sync.write").map(|s| s.calls), Some(7));
        assert_eq!(command_stat(info, "cmdstat_hsetnx"), None);
    }
}
