//! Figure 5, `SYNC.RELOAD`: how fast a table of rows becomes hashes, against
//! `redis-cli --pipe` loading the same hashes into a plain server, and the worst
//! `PING` latency another client sees meanwhile.

use crate::harness::{self, Db, DbExt, Server, Setup, TempDir};
use crate::probe::{Pings, Prober};
use crate::quiet;
use crate::report::{Met, Row, Section};
use crate::stats::{median, ms, per_second, rate, thousands};
use crate::workload::Item;
use std::io::{BufWriter, Write};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Sizes of the reload phase.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Rows in the table (and hashes loaded by `--pipe`).
    pub rows: u64,
    /// Measurements of each side (alternating which goes first); the median counts.
    pub rounds: usize,
    /// Pause between two PINGs of the latency probe.
    pub ping_every: Duration,
}

/// The table, as in the brief of this figure (the same shape as the `items` table
/// of the other figures, in a database of its own).
const TABLE_SQL: &str = "CREATE TABLE items (id integer PRIMARY KEY, name text, score bigint, tag text)";

/// Read-only mapping of `items` (it also installs the NOTIFY trigger).
const MAPPING: &str = r#"{"mappings": [{"name": "items", "table": "items", "key_prefix": "items:",
    "primary_key": "id", "mode": "read-only", "fields": {"name": "name", "score": "score", "tag": "tag"}}]}"#;

/// The client program of the baseline.
const REDIS_CLI: &str = "redis-cli";

/// Row `id` of the table: the same values as `Item::new(id, id)`.
fn fill_sql(rows: u64) -> String {
    format!(
        "INSERT INTO items (id, name, score, tag) \
         SELECT g, 'item-' || g, g, 'tag-' || (g % 97) FROM generate_series(1, {rows}) AS g"
    )
}

/// One timed load (either side).
struct Load {
    elapsed: Duration,
    /// Rows the load reported (SYNC.RELOAD's reply; `--pipe`'s replies).
    reported: Result<u64, String>,
    /// Keys in the server afterwards.
    keys: u64,
    /// Whether a sample hash holds exactly the expected row.
    sample_ok: bool,
    pings: Pings,
    memory: u64,
    /// Set when the machine was busy before or during the load.
    busy: Option<String>,
}

/// `DBSIZE`, and whether `items:<mid>` holds the row `Item::new(mid, mid)`.
fn check(server: &Server, rows: u64) -> (u64, bool) {
    let mut c = server.conn();
    let keys: u64 = redis::cmd("DBSIZE").query(&mut c).unwrap_or(0);
    let id = rows.div_ceil(2).max(1);
    let want = Item::new(id, id);
    let got: Vec<(String, String)> = redis::cmd("HGETALL").arg(format!("items:{id}")).query(&mut c).unwrap_or_default();
    let mut got = got;
    got.sort();
    let mut expected = vec![
        ("name".to_string(), want.name),
        ("score".to_string(), want.score.to_string()),
        ("tag".to_string(), want.tag),
    ];
    expected.sort();
    (keys, got == expected)
}

/// Waits until the mapping's listener is up (its trigger installed), so the timed
/// reload does not overlap the module's start-up work.
fn wait_listening(server: &Server) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut c = server.conn();
    loop {
        let listener = harness::status_text(&mut c, "items", "listener");
        if listener == "listening" || Instant::now() > deadline {
            return listener;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Ours: `SYNC.RELOAD items` into a fresh server with the module.
fn reload_once(setup: &Setup, db: &Db, cfg: &Config, notes: &mut Vec<String>) -> Load {
    let busy = quiet::settle(Duration::from_secs(60));
    let server = Server::with_module(setup, db, MAPPING, "items", &[]);
    let mut c = server.conn();
    let schema = harness::status_text(&mut c, "items", "schema");
    if schema != "ok" {
        notes.push(format!("SYNC.STATUS items showed schema `{schema}` before the reload"));
    }
    let listener = wait_listening(&server);
    if listener != "listening" {
        notes.push(format!("the listener was `{listener}` before the reload, not `listening`"));
    }
    let monitor = quiet::Monitor::start();
    let prober = Prober::start(&server, cfg.ping_every);
    let start = Instant::now();
    let reply: redis::RedisResult<i64> = redis::cmd("SYNC.RELOAD").arg("items").query(&mut c);
    let elapsed = start.elapsed();
    let pings = prober.finish();
    let busy = busy.or(monitor.finish("this reload"));
    let (keys, sample_ok) = check(&server, cfg.rows);
    let last_error = harness::status_text(&mut c, "items", "last_error");
    if !last_error.is_empty() {
        notes.push(format!("SYNC.STATUS items after the reload: last_error `{last_error}`"));
    }
    Load {
        elapsed,
        reported: reply.map(|n| n.max(0) as u64).map_err(|e| e.to_string()),
        keys,
        sample_ok,
        pings,
        memory: harness::used_memory(&mut c),
        busy,
    }
}

/// Writes `HSET items:<id> name .. score .. tag ..` for every row, in RESP, to `path`.
fn write_protocol(path: &std::path::Path, rows: u64) -> std::io::Result<u64> {
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    for id in 1..=rows {
        let item = Item::new(id, id);
        let key = format!("items:{id}");
        let score = item.score.to_string();
        let args: [&str; 8] = ["HSET", &key, "name", &item.name, "score", &score, "tag", &item.tag];
        write!(out, "*{}\r\n", args.len())?;
        for a in args {
            write!(out, "${}\r\n{a}\r\n", a.len())?;
        }
    }
    out.flush()?;
    Ok(std::fs::metadata(path)?.len())
}

/// `errors: E, replies: R` from `redis-cli --pipe`'s last line.
fn pipe_counts(output: &str) -> Option<(u64, u64)> {
    let line = output.lines().rev().find(|l| l.contains("replies:"))?;
    let num = |name: &str| line.split(name).nth(1)?.trim().split(|c: char| !c.is_ascii_digit()).next()?.parse().ok();
    Some((num("errors:")?, num("replies:")?))
}

/// Baseline: `redis-cli -p <port> --pipe < file` into a fresh plain server.
fn pipe_once(setup: &Setup, cfg: &Config, file: &std::path::Path) -> Load {
    let busy = quiet::settle(Duration::from_secs(60));
    let server = Server::plain(&setup.server_bin);
    let monitor = quiet::Monitor::start();
    let prober = Prober::start(&server, cfg.ping_every);
    let start = Instant::now();
    let output = std::fs::File::open(file).and_then(|stdin| {
        Command::new(REDIS_CLI)
            .args(["-h", "127.0.0.1", "-p", &server.port.to_string(), "--pipe"])
            .stdin(Stdio::from(stdin))
            .stderr(Stdio::piped())
            .output()
    });
    let elapsed = start.elapsed();
    let pings = prober.finish();
    let busy = busy.or(monitor.finish("this --pipe load"));
    let reported = match output {
        Ok(o) => {
            let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
            match pipe_counts(&text) {
                Some((0, replies)) if o.status.success() => Ok(replies),
                Some((errors, replies)) => Err(format!("{errors} errors in {replies} replies")),
                None => Err(format!("{}: {}", o.status, text.trim())),
            }
        }
        Err(e) => Err(format!("cannot run {REDIS_CLI}: {e}")),
    };
    let (keys, sample_ok) = check(&server, cfg.rows);
    Load { elapsed, reported, keys, sample_ok, pings, memory: harness::used_memory(&mut server.conn()), busy }
}

/// Notes about one load's outcome; empty when it loaded every row correctly.
fn load_notes(what: &str, cfg: &Config, l: &Load) -> Vec<String> {
    let mut notes = Vec::new();
    match &l.reported {
        Ok(n) if *n == cfg.rows => {}
        Ok(n) => notes.push(format!("{what}: reported {} rows, expected {}", thousands(*n), thousands(cfg.rows))),
        Err(e) => notes.push(format!("{what}: failed: {e}")),
    }
    if l.keys != cfg.rows {
        notes.push(format!(
            "{what}: the server holds {} keys afterwards, expected {}",
            thousands(l.keys),
            thousands(cfg.rows)
        ));
    }
    if !l.sample_ok {
        notes.push(format!("{what}: the sample hash does not hold the expected row"));
    }
    if l.pings.errors > 0 {
        notes.push(format!("{what}: {} PINGs failed", l.pings.errors));
    }
    notes.extend(l.busy.iter().map(|b| format!("{what}: {b}")));
    notes
}

/// Runs figure 5.
pub fn run(setup: &Setup, cfg: &Config) -> Section {
    println!("== 5. SYNC.RELOAD");
    let db = Db::on(&setup.pg_admin, TABLE_SQL);
    let filled = Instant::now();
    db.exec(&fill_sql(cfg.rows));
    db.exec("VACUUM ANALYZE items");
    harness::checkpoint(&db);
    println!("  table filled with {} rows in {}", thousands(cfg.rows), ms(filled.elapsed()));
    let dir = TempDir::new("pgsync_bench_pipe");
    let file = dir.0.join("items.resp");
    let bytes = write_protocol(&file, cfg.rows).unwrap_or_else(|e| panic!("cannot write {}: {e}", file.display()));
    let cli_version = Command::new(REDIS_CLI)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|e| format!("unknown ({e})"));
    let mut notes = Vec::new();
    let (mut ours, mut base) = (Vec::new(), Vec::new());
    for round in 0..cfg.rounds {
        for reload_side in [round % 2 == 0, round % 2 == 1] {
            if reload_side {
                let l = reload_once(setup, &db, cfg, &mut notes);
                record_round(&format!("round {round} SYNC.RELOAD"), cfg, &l, &mut notes);
                ours.push(l);
            } else {
                let l = pipe_once(setup, cfg, &file);
                record_round(&format!("round {round} redis-cli --pipe"), cfg, &l, &mut notes);
                base.push(l);
            }
        }
    }
    drop(dir);
    drop(db);
    Section {
        title: "5. SYNC.RELOAD".into(),
        method: method(cfg, bytes, &cli_version),
        rows: rows(cfg, &ours, &base),
        notes: [notes, round_notes(cfg, &ours, &base)].concat(),
    }
}

fn method(cfg: &Config, bytes: u64, cli_version: &str) -> Vec<String> {
    vec![
        format!(
            "A database of its own holds `items (id integer PRIMARY KEY, name text, score bigint, tag text)` with \
             {} rows, filled with `INSERT ... SELECT g, 'item-' || g, g, 'tag-' || (g % 97) FROM \
             generate_series(1, {})`, then `VACUUM ANALYZE` and `CHECKPOINT`.",
            thousands(cfg.rows),
            cfg.rows
        ),
        "Ours: a fresh server with the module and a `read-only` mapping of `items` onto `items:<id>` (fields name, \
         score, tag; the mapping also installs the NOTIFY trigger and starts the listener). Once `SYNC.STATUS items` \
         shows schema `ok` and the listener `listening`, `SYNC.RELOAD items` is sent and timed from send to its \
         reply (the number of rows loaded). The module reads the table through a cursor and writes 1000 rows per \
         short Redis lock."
            .into(),
        format!(
            "Baseline: the same {} rows as `HSET items:<id> name <name> score <score> tag <tag>` commands in RESP \
             ({:.1} MiB file, written before the timer starts), loaded with `{REDIS_CLI} -p <port> --pipe < file` \
             ({cli_version}) into a fresh server of the same binary without the module, timed from starting \
             `redis-cli` to its exit. Both end with the same {} hashes (checked: `DBSIZE` and one sample hash).",
            thousands(cfg.rows),
            bytes as f64 / (1024.0 * 1024.0),
            thousands(cfg.rows)
        ),
        format!(
            "Meanwhile another client on its own connection sends `PING`, one at a time with a {} ms pause between \
             them, and records each round trip; the table shows the worst one seen during the load (the time a \
             client can be kept waiting by the load). {} measurement(s) of each side, alternating which goes first; \
             the table shows the medians (worst PING: the median over the rounds of each round's worst).",
            cfg.ping_every.as_millis(),
            cfg.rounds
        ),
        "Client, server, the module's reload thread and Postgres share the same CPUs.".into(),
    ]
}

impl Load {
    /// Whether it loaded every row, so its time counts.
    fn complete(&self, rows: u64) -> bool {
        matches!(self.reported, Ok(n) if n == rows) && self.keys == rows && self.sample_ok
    }
}

fn rows(cfg: &Config, ours: &[Load], base: &[Load]) -> Vec<Row> {
    let ours: Vec<&Load> = ours.iter().filter(|l| l.complete(cfg.rows)).collect();
    let base: Vec<&Load> = base.iter().filter(|l| l.complete(cfg.rows)).collect();
    if ours.is_empty() || base.is_empty() {
        let side = |v: &[&Load]| if v.is_empty() { "failed" } else { "measured" }.to_string();
        return vec![Row {
            name: format!("{} rows → hashes (no complete load: see notes)", thousands(cfg.rows)),
            ours: side(&ours),
            baseline: side(&base),
            ratio: "—".into(),
            target: "≥ 0.90".into(),
            met: Met::NotMeasured,
        }];
    }
    let (ours, base) = (ours.as_slice(), base.as_slice());
    let throughput = |v: &[&Load]| median(&v.iter().map(|l| per_second(cfg.rows, l.elapsed)).collect::<Vec<_>>());
    let secs = |v: &[&Load], f: fn(&Load) -> Duration| {
        Duration::from_secs_f64(median(&v.iter().map(|l| f(l).as_secs_f64()).collect::<Vec<_>>()))
    };
    let (r_ours, r_base) = (throughput(ours), throughput(base));
    let ratio = r_ours / r_base.max(1e-9);
    let worst_ours = secs(ours, |l| l.pings.latency.max);
    let worst_base = secs(base, |l| l.pings.latency.max);
    let limit = Duration::from_millis(50);
    let times = |a: Duration, b: Duration| format!("{:.1}×", a.as_secs_f64() / b.as_secs_f64().max(1e-9));
    vec![
        Row {
            name: format!("{} rows → hashes: rows/s, SYNC.RELOAD vs redis-cli --pipe", thousands(cfg.rows)),
            ours: rate(r_ours),
            baseline: rate(r_base),
            ratio: format!("{ratio:.3}"),
            target: "≥ 0.90".into(),
            met: Met::from(ratio >= 0.9),
        },
        Row {
            name: "worst PING round trip during the load (ours: SYNC.RELOAD; baseline: --pipe)".into(),
            ours: ms(worst_ours),
            baseline: ms(worst_base),
            ratio: times(worst_ours, worst_base),
            target: format!("≤ {}", ms(limit)),
            met: Met::from(worst_ours <= limit),
        },
        Row::info(
            "elapsed",
            ms(secs(ours, |l| l.elapsed)),
            ms(secs(base, |l| l.elapsed)),
            times(secs(ours, |l| l.elapsed), secs(base, |l| l.elapsed)),
        ),
        Row::info(
            "PING round trip p50 / p99 during the load",
            format!("{} / {}", ms(secs(ours, |l| l.pings.latency.p50)), ms(secs(ours, |l| l.pings.latency.p99))),
            format!("{} / {}", ms(secs(base, |l| l.pings.latency.p50)), ms(secs(base, |l| l.pings.latency.p99))),
            "—".into(),
        ),
    ]
}

fn round_notes(cfg: &Config, ours: &[Load], base: &[Load]) -> Vec<String> {
    let list = |v: &[Load]| {
        v.iter()
            .map(|l| {
                format!(
                    "{} (worst PING {}, {} PINGs)",
                    rate(per_second(cfg.rows, l.elapsed)),
                    ms(l.pings.latency.max),
                    thousands(l.pings.count as u64)
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mems = |v: &[Load]| v.iter().map(|l| harness::mib(l.memory)).collect::<Vec<_>>().join(", ");
    vec![
        format!("rounds, SYNC.RELOAD: {}", list(ours)),
        format!("rounds, redis-cli --pipe: {}", list(base)),
        format!(
            "server used_memory after the load, with module (SYNC.RELOAD): {}; without (--pipe): {}",
            mems(ours),
            mems(base)
        ),
    ]
}

/// Prints one load's figures and adds its notes.
fn record_round(label: &str, cfg: &Config, l: &Load, notes: &mut Vec<String>) {
    let speed = rate(per_second(cfg.rows, l.elapsed));
    println!("  {label}: {} ({speed}), worst PING {}", ms(l.elapsed), ms(l.pings.latency.max));
    notes.extend(load_notes(label, cfg, l));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipe_summary_is_parsed() {
        let out = "All data transferred. Waiting for the last reply...\n\
                   Last reply received from server.\nerrors: 0, replies: 1000000\n";
        assert_eq!(pipe_counts(out), Some((0, 1_000_000)));
    }
}
