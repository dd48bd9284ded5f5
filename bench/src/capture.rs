//! Figure 1, capture cost: HSET throughput, driven by the server's own load
//! generator (`valkey-benchmark`, or `redis-benchmark` for Redis), of the server
//! with the module and a write-behind mapping covering every written key, against
//! the same server binary with the same settings but without the module; and the
//! routed write's time per call (`SYNC.WRITE` in `INFO commandstats`) next to a
//! plain `HSET`'s. Figure 10 measures RedisJSON writes (`JSON.SET`,
//! `JSON.NUMINCRBY`, routed through `SYNC.JSONWRITE`) the same way, both servers
//! with RedisJSON loaded.

use crate::harness::{self, Db, DbExt, Server, Setup};
use crate::quiet;
use crate::report::{Met, Row, Section};
use crate::stats::{median, rate, thousands};
use crate::workload::{ACCTS_MAPPING, SCORES_MAPPING};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Sizes of the capture phases (figures 1 and 10).
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Client connections of the load generator (`-c`).
    pub clients: usize,
    /// Calls of the unpipelined variant (`-n`).
    pub ops_unpipelined: u64,
    /// Calls of the pipelined variant.
    pub ops_pipelined: u64,
    /// Pipeline depth of the pipelined variant (`-P`).
    pub depth: usize,
    /// Distinct keys written (`-r`).
    pub keys: u64,
    /// Measurements of each server per variant (rotating order); the median counts.
    pub rounds: usize,
}

/// The command of figure 1; `__rand_int__` is a 12-digit zero-padded number
/// below `-r`, a new one for each occurrence.
const HSET: [&str; 4] = ["HSET", "scores:__rand_int__", "score", "__rand_int__"];

/// Figure 10's path set. The value is `1` and a random number: JSON refuses a
/// number with leading zeros, and every value stays a `bigint`.
const JSON_SET: [&str; 4] = ["JSON.SET", "acct:__rand_int__", "$.score", "1__rand_int__"];

/// Figure 10's increment.
const JSON_NUMINCRBY: [&str; 4] = ["JSON.NUMINCRBY", "acct:__rand_int__", "$.score", "1"];

/// The document every `acct:` key holds before figure 10's load: RedisJSON
/// refuses a path write into a missing key (the module would create it), so both
/// servers start with every key present and do the same work.
const ACCT_DOCUMENT: &str = r#"{"score":0}"#;

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

    fn index(self) -> usize {
        Kind::ALL.iter().position(|k| *k == self).unwrap_or(0)
    }
}

/// What one capture measurement loads: a write command from the load generator,
/// on keys a write-behind mapping covers.
struct Workload {
    /// The command every client sends.
    command: [&'static str; 4],
    /// The mapping file's text, its mapping's name and table.
    mapping: &'static str,
    mapping_name: &'static str,
    table: &'static str,
    /// Key prefix and document written to every key before the load (`None`:
    /// keys start absent).
    prefill: Option<(&'static str, &'static str)>,
    /// Modules loaded before pgsync, and alone on the server without it.
    preload: Vec<PathBuf>,
    /// The servers compared, the baseline first.
    kinds: &'static [Kind],
    /// The command the filter routes the write to (`SYNC.WRITE`).
    routed: &'static str,
}

impl Workload {
    /// The command's name (`HSET`).
    fn name(&self) -> &'static str {
        self.command[0]
    }

    /// The command-stats entry of the write on a server of `kind`.
    fn stat(&self, kind: Kind) -> String {
        let command = if kind == Kind::Plain { self.name() } else { self.routed };
        format!("cmdstat_{}", command.to_lowercase())
    }

    fn server(&self, setup: &Setup, db: &Db, kind: Kind) -> Server {
        let before: Vec<&Path> = self.preload.iter().map(PathBuf::as_path).collect();
        match kind {
            Kind::Plain => {
                let args: Vec<String> =
                    before.iter().flat_map(|m| ["--loadmodule".to_string(), m.display().to_string()]).collect();
                Server::plain_with(&setup.server_bin, &args.iter().map(String::as_str).collect::<Vec<_>>())
            }
            Kind::Module => Server::with_module_after(setup, &before, db, self.mapping, self.mapping_name, &[]),
            Kind::Queueing => Server::with_module_queueing(setup, self.mapping, self.mapping_name, &[]),
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
/// column of the data line of `command`, `HSET`).
fn csv_rps(output: &str, command: &str) -> Option<f64> {
    let line = output.lines().rev().find(|l| l.strip_prefix('"').is_some_and(|l| l.starts_with(command)))?;
    let fields: Vec<&str> = line.split("\",\"").collect();
    fields.get(1)?.trim_matches('"').parse().ok()
}

/// Runs the load generator against `server`: `total` calls over `keys` random
/// keys from `clients` connections, `depth` per round trip. Requests per second.
fn drive(tool: &str, server: &Server, w: &Workload, cfg: &Config, total: u64, depth: usize) -> Result<f64, String> {
    let output = Command::new(tool)
        .args(["-h", "127.0.0.1", "-p", &server.port.to_string(), "--csv"])
        .args(["-c", &cfg.clients.to_string(), "-n", &total.to_string()])
        .args(["-r", &cfg.keys.to_string(), "-P", &depth.to_string()])
        .args(w.command)
        .output()
        .map_err(|e| format!("cannot run {tool}: {e} (scripts/install-deps.sh installs it)"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    csv_rps(&text, w.name())
        .ok_or_else(|| format!("{tool} printed no rate: {text} {}", String::from_utf8_lossy(&output.stderr)))
}

/// Writes `document` at the root of every key the load generator can pick
/// (`prefix` and a 12-digit zero-padded number below `keys`), 1,000 per round trip.
fn prefill(c: &mut redis::Connection, prefix: &str, document: &str, keys: u64) -> redis::RedisResult<()> {
    for start in (0..keys).step_by(1000) {
        let mut pipe = redis::pipe();
        for n in start..(start + 1000).min(keys) {
            pipe.cmd("JSON.SET").arg(format!("{prefix}{n:012}")).arg("$").arg(document).ignore();
        }
        pipe.query::<()>(c)?;
    }
    Ok(())
}

/// The outcome of one measurement.
struct Measurement {
    /// Calls per second, as the load generator counted them.
    ops: f64,
    /// The write's command-stats entry for the timed load.
    stat: CommandStat,
    /// With the module: rows not yet in Postgres when the load ended.
    pending: Option<i64>,
    /// The server's `used_memory` after the timed load.
    memory: u64,
    /// Set when the machine was busy with other work during the measurement.
    busy: Option<String>,
    /// What went wrong before the timed load, if anything.
    trouble: Option<String>,
}

/// One measurement on a fresh server: the prefill (if any), a warm-up of 5%
/// (every key's first write is an insert), command stats reset, then the timed
/// load of `total` calls, `depth` per round trip.
fn measure(
    setup: &Setup,
    db: &Db,
    tool: &str,
    (w, kind): (&Workload, Kind),
    cfg: &Config,
    (total, depth): (u64, usize),
) -> Measurement {
    db.exec(&format!("TRUNCATE {}", w.table));
    harness::checkpoint(db);
    let busy = quiet::settle(Duration::from_secs(60));
    let server = w.server(setup, db, kind);
    let mut c = server.conn();
    let mut trouble = None;
    if let Some((prefix, document)) = w.prefill {
        if let Err(e) = prefill(&mut c, prefix, document, cfg.keys) {
            trouble = Some(format!("prefill failed: {e}"));
        }
    }
    let warm = drive(tool, &server, w, cfg, (total / 20).max(cfg.clients as u64), depth);
    // Nothing drains while queueing (SYNC.WAIT would only time out): the warm-up's
    // rows simply stay queued.
    if kind == Kind::Module && warm.is_ok() {
        if let Err(e) = harness::sync_wait(&mut c, Duration::from_secs(120)) {
            trouble = Some(format!("SYNC.WAIT before the timed load: {e}"));
        }
    }
    let _: redis::RedisResult<()> = redis::cmd("CONFIG").arg("RESETSTAT").query(&mut c);
    let monitor = quiet::Monitor::start();
    let ops = warm.and_then(|_| drive(tool, &server, w, cfg, total, depth));
    let busy = busy.or(monitor.finish("this measurement"));
    let info: String = redis::cmd("INFO").arg("commandstats").query(&mut c).unwrap_or_default();
    let pending = (kind != Kind::Plain).then(|| {
        harness::status_int(&mut c, w.mapping_name, "pending")
            + harness::status_int(&mut c, w.mapping_name, "in_flight")
    });
    let ops = ops.unwrap_or_else(|e| {
        eprintln!("warning: {e}");
        0.0
    });
    Measurement {
        ops,
        stat: command_stat(&info, &w.stat(kind)).unwrap_or_default(),
        pending,
        memory: harness::used_memory(&mut c),
        busy,
        trouble,
    }
}

/// Per-kind results of one variant, in [`Kind::ALL`] order (empty for a kind
/// the workload does not measure).
#[derive(Default)]
struct Results {
    ops: [Vec<f64>; 3],
    usec: [Vec<f64>; 3],
    memory: [Vec<u64>; 3],
}

/// Measures one variant (`depth` 1 = unpipelined) in rounds that rotate which
/// server goes first.
fn variant(
    setup: &Setup,
    db: &Db,
    tool: &str,
    w: &Workload,
    cfg: &Config,
    total: u64,
    depth: usize,
) -> (Results, Vec<String>) {
    let name = w.name();
    let mut results = Results::default();
    let mut notes = Vec::new();
    for round in 0..cfg.rounds {
        let mut order = w.kinds.to_vec();
        order.rotate_left(round % w.kinds.len());
        for kind in order {
            let m = measure(setup, db, tool, (w, kind), cfg, (total, depth));
            println!(
                "  {name} depth {depth} round {round} {}: {}, {:.2} µs per call",
                kind.label(),
                rate(m.ops),
                m.stat.usec_per_call
            );
            let what = format!("{name} depth {depth} round {round} {}", kind.label());
            if let Some(b) = m.busy {
                notes.push(format!("{what}: {b}"));
            }
            if let Some(t) = m.trouble {
                notes.push(format!("{what}: **{t}**"));
            }
            // The load generator counts error replies as requests: the server's
            // own figures say whether every call was the write it should be.
            if m.stat.failed > 0 || m.stat.calls < total {
                notes.push(format!(
                    "{what}: **{} calls of `{}` for {} {name} sent, {} failed or rejected**",
                    thousands(m.stat.calls),
                    w.stat(kind),
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
            let i = kind.index();
            results.ops[i].push(m.ops);
            results.usec[i].push(m.stat.usec_per_call);
            results.memory[i].push(m.memory);
        }
    }
    let list = |v: &[f64]| v.iter().map(|x| rate(*x)).collect::<Vec<_>>().join(", ");
    let usecs = |v: &[f64]| v.iter().map(|x| format!("{x:.2}")).collect::<Vec<_>>().join(", ");
    let mems = |v: &[u64]| v.iter().map(|b| harness::mib(*b)).collect::<Vec<_>>().join(", ");
    let per_kind = |f: &dyn Fn(usize) -> String| {
        w.kinds.iter().map(|k| format!("{}: {}", k.label(), f(k.index()))).collect::<Vec<_>>().join("; ")
    };
    notes.push(format!("{name} depth {depth}: calls/s by round, {}", per_kind(&|i| list(&results.ops[i]))));
    notes.push(format!("{name} depth {depth}: µs per call by round, {}", per_kind(&|i| usecs(&results.usec[i]))));
    notes.push(format!(
        "{name} depth {depth}: used_memory after the timed load, {}",
        per_kind(&|i| mems(&results.memory[i]))
    ));
    (results, notes)
}

/// Targets of one variant: throughput ratio with Postgres keeping up, and with
/// capture alone.
type Targets = (f64, f64);

/// Most µs per call of the routed write, as a multiple of the plain command's.
const USEC_TARGET: f64 = 1.5;

/// The rows of one variant: throughput ratios, then µs per call, for each mode
/// the workload measures beside the baseline.
fn rows(w: &Workload, cfg: &Config, depth: usize, r: &Results, targets: Targets) -> (Vec<Row>, Vec<Row>) {
    let shape = match depth {
        1 => format!("{} connections, unpipelined", cfg.clients),
        d => format!("{} connections, pipelined {d} deep", cfg.clients),
    };
    let name = w.name();
    let base = median(&r.ops[Kind::Plain.index()]);
    let base_usec = median(&r.usec[Kind::Plain.index()]);
    let mut throughput = Vec::new();
    let mut usec = Vec::new();
    for &kind in w.kinds.iter().filter(|k| **k != Kind::Plain) {
        let i = kind.index();
        let ours = median(&r.ops[i]);
        let ratio = ours / base.max(1e-9);
        let target = if kind == Kind::Queueing { targets.1 } else { targets.0 };
        throughput.push(Row {
            name: format!("{}: {name} ops/s, {shape}", kind.label()),
            ours: rate(ours),
            baseline: rate(base),
            ratio: format!("{ratio:.3}"),
            target: format!("≥ {target:.2}"),
            met: Met::from(ratio >= target),
        });
        let ours_usec = median(&r.usec[i]);
        let times = ours_usec / base_usec.max(1e-9);
        usec.push(Row {
            name: format!("{}, {shape}: µs per call, {} (ours) vs {name} (baseline)", kind.label(), w.routed),
            ours: format!("{ours_usec:.2} µs"),
            baseline: format!("{base_usec:.2} µs"),
            ratio: format!("{times:.2}×"),
            target: format!("≤ {USEC_TARGET:.1}×"),
            met: Met::from(ours_usec > 0.0 && times <= USEC_TARGET),
        });
    }
    (throughput, usec)
}

/// Measures `w` unpipelined and pipelined: its throughput rows, µs-per-call rows
/// (each in `w.kinds` order, unpipelined before pipelined within a mode) and notes.
fn figure(setup: &Setup, db: &Db, w: &Workload, cfg: &Config) -> (Vec<Row>, Vec<Row>, Vec<String>) {
    let tool = load_tool(&setup.server_bin);
    let (r1, notes1) = variant(setup, db, tool, w, cfg, cfg.ops_unpipelined, 1);
    let (r16, notes16) = variant(setup, db, tool, w, cfg, cfg.ops_pipelined, cfg.depth);
    let (t1, u1) = rows(w, cfg, 1, &r1, (0.70, 0.90));
    let (t16, u16) = rows(w, cfg, cfg.depth, &r16, (0.50, 0.75));
    // Grouped by mode, the last kind first (capture alone before keeping up for
    // HSET), unpipelined before pipelined.
    let interleave =
        |a: Vec<Row>, b: Vec<Row>| a.into_iter().zip(b).rev().flat_map(|(x, y)| [x, y]).collect::<Vec<_>>();
    (interleave(t1, t16), interleave(u1, u16), [notes1, notes16].concat())
}

/// Runs figure 1.
pub fn run(setup: &Setup, db: &Db, cfg: &Config) -> Section {
    println!("== 1. capture cost");
    let tool = load_tool(&setup.server_bin);
    let w = Workload {
        command: HSET,
        mapping: SCORES_MAPPING,
        mapping_name: "scores",
        table: "scores",
        prefill: None,
        preload: Vec::new(),
        kinds: &Kind::ALL,
        routed: "SYNC.WRITE",
    };
    let (throughput, usec, notes) = figure(setup, db, &w, cfg);
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
        rows: [throughput, usec].concat(),
        notes,
    }
}

/// RedisJSON's `rejson.so`, as `scripts/install-deps.sh` puts it (the tests'
/// default): `PGSYNC_REJSON`, else `/usr/local/lib/redis-pgsync/rejson.so`.
fn rejson_path() -> PathBuf {
    PathBuf::from(std::env::var("PGSYNC_REJSON").unwrap_or_else(|_| "/usr/local/lib/redis-pgsync/rejson.so".into()))
}

/// Runs figure 10: `JSON.SET` and `JSON.NUMINCRBY` on a write-behind
/// `"type": "json"` mapping with Postgres keeping up, against the same server
/// with RedisJSON and without the module.
pub fn run_json(setup: &Setup, db: &Db, cfg: &Config) -> Section {
    println!("== 10. JSON capture cost");
    let title = "10. JSON capture cost (JSON.SET and JSON.NUMINCRBY throughput)".to_string();
    let tool = load_tool(&setup.server_bin);
    let rejson = rejson_path();
    if !rejson.is_file() {
        let missing =
            format!("{} is missing (scripts/install-deps.sh installs it): nothing measured", rejson.display());
        return Section { title, notes: vec![missing], ..Section::default() };
    }
    let (mut throughput, mut usec, mut notes) = (Vec::new(), Vec::new(), Vec::new());
    for command in [JSON_SET, JSON_NUMINCRBY] {
        let w = Workload {
            command,
            mapping: ACCTS_MAPPING,
            mapping_name: "accts",
            table: "accts",
            prefill: Some(("acct:", ACCT_DOCUMENT)),
            preload: vec![rejson.clone()],
            kinds: &[Kind::Plain, Kind::Module],
            routed: "SYNC.JSONWRITE",
        };
        let (t, u, n) = figure(setup, db, &w, cfg);
        throughput.extend(t);
        usec.extend(u);
        notes.extend(n);
    }
    let (set, incr) = (JSON_SET.join(" "), JSON_NUMINCRBY.join(" "));
    Section {
        title,
        method: vec![
            format!(
                "As figure 1, with RedisJSON (`{}`) loaded on both servers: `{tool} -c {} -n <N> -r {} -P <depth> \
                 {set}` (a path set of one member; the value is `1` followed by the random 12-digit number, as \
                 JSON refuses leading zeros), then the same with `{incr}`: {} connections, random keys among {}. \
                 Ours: the module with a write-behind `\"type\": \"json\"` mapping of `acct:<id>` onto \
                 `accts (id text PRIMARY KEY, score bigint)` (the member `score`), Postgres keeping up (2 workers \
                 syncing meanwhile; a `JSON.NUMINCRBY` lands as `score = coalesce(score, 0) + 1` and Redis then \
                 takes Postgres's sum, as for `HINCRBY`). Baseline: the same server binary with RedisJSON and \
                 without the module, in the same run. Fresh server per measurement.",
                rejson.display(),
                cfg.clients,
                thousands(cfg.keys),
                cfg.clients,
                thousands(cfg.keys)
            ),
            format!(
                "Every one of the {} keys is first written on both servers as `{ACCT_DOCUMENT}` (`JSON.SET key $ \
                 ...`, pipelined 1,000 deep, not timed; with the module these rows are synced before anything is \
                 timed): RedisJSON refuses a path set or an increment on a missing key, where the module would \
                 create the document, so without it the two servers would not do the same work. Then, as in \
                 figure 1, a warm-up of 5% (synced with `SYNC.WAIT`), `CONFIG RESETSTAT` and the timed load: \
                 unpipelined {} calls, pipelined {} calls, {} per round trip; {} measurement(s) per server, \
                 rotating which goes first; the table shows the medians.",
                thousands(cfg.keys),
                thousands(cfg.ops_unpipelined),
                thousands(cfg.ops_pipelined),
                cfg.depth,
                cfg.rounds
            ),
            "µs per call: `usec_per_call` of `INFO commandstats`: `SYNC.JSONWRITE` with the module (the command \
             filter routes a RedisJSON write on a mapped key to it: it reads what the arguments change, runs the \
             RedisJSON command and records the change), `json.set` / `json.numincrby` without. Targets are figure \
             1's for Postgres keeping up. Load generator, servers, workers and Postgres share the same 2 CPUs."
                .into(),
        ],
        rows: [throughput, usec].concat(),
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_load_generators_rate_and_the_command_stats() {
        let csv = "\"test\",\"rps\",\"avg_latency_ms\"\n\"HSET scores:__rand_int__ score __rand_int__\",\"56433.41\",\"0.562\"\n";
        assert_eq!(csv_rps(csv, "HSET"), Some(56433.41));
        assert_eq!(csv_rps(csv, "JSON.SET"), None);
        let json = "\"test\",\"rps\"\n\"JSON.SET acct:__rand_int__ $.score 1__rand_int__\",\"41000.50\",\"0.9\"\n";
        assert_eq!(csv_rps(json, "JSON.SET"), Some(41000.5));
        assert_eq!(csv_rps("\"test\",\"rps\"\n", "HSET"), None);
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
