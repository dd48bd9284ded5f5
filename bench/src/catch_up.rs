//! Figure 9, the trigger path's bulk work over a large cached table: the worst
//! `PING` during `SYNC.RELOAD FLUSH`, and what a restart's catch-up costs (worst
//! `PING`, rows read, notifications published). Ours is the module under test;
//! the baseline is another build of the module (`--module-before`, e.g. the
//! commit before a change), measured in the same run on the same data.

use crate::harness::{self, Db, DbExt, Server, Setup};
use crate::probe::{Pings, Prober};
use crate::quiet;
use crate::report::{Met, Row, Section};
use crate::stats::{ms, thousands};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

/// Sizes of the catch-up phase.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Rows in the table, all cached in Redis.
    pub rows: u64,
    /// Rows changed in Postgres while Redis is down.
    pub changed: u64,
    /// Pause between two PINGs of the latency probe.
    pub ping_every: Duration,
}

pub const TABLE_SQL: &str = "CREATE TABLE items (id integer PRIMARY KEY, name text, score bigint, tag text)";

/// A read-only (hence listening) mapping that publishes every change it applies.
pub const MAPPING: &str = r#"{"mappings": [{"name": "items", "table": "items", "key_prefix": "items:",
    "primary_key": "id", "mode": "read-only", "notify": "sync:items",
    "fields": {"name": "name", "score": "score", "tag": "tag"}}]}"#;

/// Worst PING allowed.
pub const PING_TARGET: Duration = Duration::from_millis(50);
/// Longest wait for a load or a catch-up.
pub const PATIENCE: Duration = Duration::from_secs(600);

/// What one build of the module showed.
#[derive(Default)]
struct Side {
    /// Worst PING and elapsed time of `SYNC.RELOAD items FLUSH`.
    flush: Pings,
    flush_elapsed: Duration,
    /// The restart's catch-up.
    restart: Restart,
    notes: Vec<String>,
}

/// What a restart's catch-up showed (figures 9 and 11).
#[derive(Default)]
pub struct Restart {
    /// From the restarted server's first PONG to the listener's `listening`.
    pub pings: Pings,
    pub elapsed: Duration,
    /// From the first PONG to the last notification the subscriber received.
    pub last_message: Duration,
    /// Rows the catch-up read from Postgres: `reload_rows_read` of `SYNC.STATUS`
    /// (counted since the start, i.e. the restart) plus the rows of a logical
    /// stream's initial load (`logical stream: loaded N rows` in the log, which
    /// that counter does not include).
    pub rows_read: u64,
    /// `PUBLISH` calls since the restart (`INFO commandstats`), and the
    /// messages a subscriber connected right after the first PONG received.
    pub published: u64,
    pub received: u64,
}

/// Runs figure 9; without `before` (no baseline build) only ours is measured.
pub fn run(setup: &Setup, before: Option<&Path>, cfg: &Config) -> Section {
    println!("== 9. Catch-up and RELOAD FLUSH over a cached table");
    let db = items_db(&setup.pg_admin, cfg.rows);
    let ours = measure(setup, &setup.module, &db, cfg);
    let base = before.map(|module| measure(setup, module, &db, cfg));
    let mut notes = ours.notes.iter().map(|n| format!("ours: {n}")).collect::<Vec<_>>();
    if let Some(b) = &base {
        notes.extend(b.notes.iter().map(|n| format!("baseline: {n}")));
    }
    Section {
        title: "9. Catch-up and RELOAD FLUSH over a cached table".into(),
        method: method(cfg, before),
        rows: rows(cfg, &ours, base.as_ref()),
        notes,
    }
}

/// A database of its own on the Postgres of `admin`, with `items` holding `rows` rows.
pub fn items_db(admin: &str, rows: u64) -> Db {
    let db = Db::on(admin, TABLE_SQL);
    db.exec(&format!(
        "INSERT INTO items SELECT g, 'item-' || g, g, 'tag-' || (g % 97) FROM generate_series(1, {rows}) g"
    ));
    db.exec("VACUUM ANALYZE items");
    db
}

fn measure(setup: &Setup, module: &Path, db: &Db, cfg: &Config) -> Side {
    let mut side = Side::default();
    let setup = Setup { module: PathBuf::from(module), ..setup.clone() };
    let mut server = start_cached(&setup, db, &[], &mut side.notes);
    let mut c = server.conn();
    let prober = Prober::start(&server, cfg.ping_every);
    let start = Instant::now();
    let flushed: redis::RedisResult<i64> = redis::cmd("SYNC.RELOAD").arg("items").arg("FLUSH").query(&mut c);
    side.flush_elapsed = start.elapsed();
    side.flush = prober.finish();
    if let Err(e) = flushed {
        side.notes.push(format!("SYNC.RELOAD items FLUSH failed: {e}"));
    }
    println!(
        "  {}: RELOAD FLUSH {} worst PING {}",
        module.display(),
        ms(side.flush_elapsed),
        ms(side.flush.latency.max)
    );
    side.restart = restart_catch_up(&mut server, db, cfg, &mut side.notes);
    println!("  {}: {}", module.display(), side.restart.summary());
    side
}

/// Starts a server with the module (AOF on, `extra` module settings) on `db`'s
/// `items` with [`MAPPING`], and waits until its listener is `listening` (its
/// first catch-up caches every row) and the machine settled.
pub fn start_cached(setup: &Setup, db: &Db, extra: &[(&str, &str)], notes: &mut Vec<String>) -> Server {
    let aof = ["--appendonly", "yes"];
    let server = Server::with_module_args(setup, db, MAPPING, "items", extra, &aof);
    if let Err(state) = wait_listening(&server) {
        notes.push(format!("the listener was `{state}` after the first load"));
    }
    if let Some(busy) = quiet::settle(Duration::from_secs(60)) {
        notes.push(busy);
    }
    server
}

/// Restarts `server` (`SHUTDOWN`, the AOF written) with `cfg.changed` rows
/// updated in Postgres while it is down, and measures the catch-up from the
/// first PONG to `listening`.
pub fn restart_catch_up(server: &mut Server, db: &Db, cfg: &Config, notes: &mut Vec<String>) -> Restart {
    let step = (cfg.rows / cfg.changed.max(1)).max(1);
    let log_before = server.log().len();
    server.restart_with(PATIENCE, || {
        db.exec(&format!("UPDATE items SET score = score + 1 WHERE id % {step} = 0 AND id <= {}", step * cfg.changed))
    });
    let counter = Subscriber::start(server, CHANNELS);
    let prober = Prober::start(server, cfg.ping_every);
    let start = Instant::now();
    if let Err(state) = wait_listening(server) {
        notes.push(format!("the listener was `{state}` after the restart"));
    }
    let elapsed = start.elapsed();
    let pings = prober.finish();
    // A source may show `listening` before it applied what it missed: the
    // subscriber stops only after a moment without messages.
    let heard = counter.finish(cfg.changed as usize);
    let received = heard.len() as u64;
    let last_message = heard.iter().map(|(at, _)| at.saturating_duration_since(start)).max().unwrap_or_default();
    let mut c = server.conn();
    let published = commandstat_calls(&mut c, "publish");
    let reloaded = harness::status_int(&mut c, "items", "reload_rows_read").max(0) as u64;
    let log = server.log();
    let loaded: u64 = log
        .get(log_before..)
        .unwrap_or_default()
        .split("logical stream: loaded ")
        .skip(1)
        .filter_map(|rest| rest.split(' ').next()?.parse::<u64>().ok())
        .sum();
    Restart { pings, elapsed, last_message, rows_read: reloaded + loaded, published, received }
}

impl Restart {
    /// One line for the console.
    pub fn summary(&self) -> String {
        format!(
            "catch-up {} (last notification at {}) worst PING {}, {} rows read, {} published, {} received",
            ms(self.elapsed),
            ms(self.last_message),
            ms(self.pings.latency.max),
            self.rows_read,
            self.published,
            self.received
        )
    }
}

/// Waits until the listener shows `listening`; its last state when it does not in time.
pub fn wait_listening(server: &Server) -> Result<(), String> {
    let deadline = Instant::now() + PATIENCE;
    let mut c = server.conn();
    loop {
        let state = harness::status_text(&mut c, "items", "listener");
        if state == "listening" {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(state);
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// `calls` of `cmdstat_<command>` in `INFO commandstats` (0 when absent).
pub fn commandstat_calls(c: &mut redis::Connection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(c).unwrap_or_default();
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

/// The mapping's notification channels, `sync:items:<id>`.
pub const CHANNELS: &str = "sync:items:*";

/// A `PSUBSCRIBE <pattern>` client recording when each message arrived and on
/// which channel.
pub struct Subscriber {
    handle: thread::JoinHandle<Vec<(Instant, String)>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Messages to wait for after the stop, up to [`LATE`].
    expect: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// How long a stopped subscriber still waits for the messages it expects: a
/// source may show `listening` well before it applied what it missed (logical
/// decoding first reads the WAL again from the slot's restart point).
const LATE: Duration = Duration::from_secs(10);

impl Subscriber {
    /// Subscribes (before returning) and starts recording.
    pub fn start(server: &Server, pattern: &str) -> Subscriber {
        let mut conn = server.conn();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let expect = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (flag, wanted) = (stop.clone(), expect.clone());
        let (ready, subscribed) = std::sync::mpsc::channel();
        let pattern = pattern.to_string();
        let handle = thread::spawn(move || {
            let mut heard = Vec::new();
            let mut sub = conn.as_pubsub();
            let ok = sub.psubscribe(&pattern).is_ok();
            let _ = ready.send(());
            if !ok {
                return heard;
            }
            let _ = sub.set_read_timeout(Some(Duration::from_millis(200)));
            let mut stopped_at = None;
            loop {
                match sub.get_message() {
                    Ok(m) => heard.push((Instant::now(), m.get_channel_name().to_string())),
                    Err(_) if flag.load(std::sync::atomic::Ordering::Relaxed) => {
                        let since = *stopped_at.get_or_insert_with(Instant::now);
                        let expected = wanted.load(std::sync::atomic::Ordering::Relaxed);
                        if heard.len() >= expected || since.elapsed() >= LATE {
                            return heard;
                        }
                    }
                    Err(_) => {}
                }
            }
        });
        let _ = subscribed.recv_timeout(Duration::from_secs(10));
        Subscriber { handle, stop, expect }
    }

    /// Stops once nothing has arrived for a moment and at least `expected`
    /// messages have (or [`LATE`] passed without them); the messages received.
    pub fn finish(self, expected: usize) -> Vec<(Instant, String)> {
        self.expect.store(expected, std::sync::atomic::Ordering::Relaxed);
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle.join().unwrap_or_default()
    }
}

fn method(cfg: &Config, before: Option<&Path>) -> Vec<String> {
    vec![
        format!(
            "A database of its own holds `items (id integer PRIMARY KEY, name text, score bigint, tag text)` with {} \
             rows. A server with `appendonly yes` and the module, a `read-only` mapping of `items` with `\"notify\": \
             \"sync:items\"`, waits until its listener is `listening` (its first catch-up caches every row).",
            thousands(cfg.rows)
        ),
        format!(
            "RELOAD FLUSH: `SYNC.RELOAD items FLUSH` over the {} cached rows, none changed, while another client sends \
             `PING` one at a time with a {} ms pause and records each round trip.",
            thousands(cfg.rows),
            cfg.ping_every.as_millis()
        ),
        format!(
            "Restart catch-up: `SHUTDOWN` (the AOF is written), {} rows updated in Postgres (`score + 1`), the server \
             started again on its AOF. From the first PONG, the PING probe runs and a subscriber (`PSUBSCRIBE \
             sync:items:*`) counts messages, until `SYNC.STATUS items` shows the listener `listening`. Rows read: \
             `reload_rows_read` of `SYNC.STATUS` (since the restart); published: `cmdstat_publish` calls since the restart.",
            thousands(cfg.changed)
        ),
        match before {
            Some(path) => format!(
                "Ours: the module under test. Baseline: the build `{}` (the module before this change), on the same \
                 data in the same run, one measurement each.",
                path.display()
            ),
            None => "No baseline build was given (`--module-before`): only ours is measured.".into(),
        },
    ]
}

fn rows(cfg: &Config, ours: &Side, base: Option<&Side>) -> Vec<Row> {
    let other = |f: &dyn Fn(&Side) -> String| base.map_or("—".to_string(), f);
    let times = |a: Duration, f: fn(&Side) -> Duration| {
        base.map_or("—".to_string(), |b| format!("{:.2}×", a.as_secs_f64() / f(b).as_secs_f64().max(1e-9)))
    };
    vec![
        Row {
            name: format!("worst PING during SYNC.RELOAD FLUSH over {} cached rows", thousands(cfg.rows)),
            ours: ms(ours.flush.latency.max),
            baseline: other(&|b| ms(b.flush.latency.max)),
            ratio: times(ours.flush.latency.max, |b| b.flush.latency.max),
            target: format!("≤ {}", ms(PING_TARGET)),
            met: Met::from(ours.flush.latency.max <= PING_TARGET),
        },
        Row {
            name: format!("worst PING during the restart catch-up over {} cached rows", thousands(cfg.rows)),
            ours: ms(ours.restart.pings.latency.max),
            baseline: other(&|b| ms(b.restart.pings.latency.max)),
            ratio: times(ours.restart.pings.latency.max, |b| b.restart.pings.latency.max),
            target: format!("≤ {}", ms(PING_TARGET)),
            met: Met::from(ours.restart.pings.latency.max <= PING_TARGET),
        },
        Row {
            name: format!("notifications published by the restart catch-up ({} rows changed)", thousands(cfg.changed)),
            ours: thousands(ours.restart.published),
            baseline: other(&|b| thousands(b.restart.published)),
            ratio: "—".into(),
            target: format!("= {}", thousands(cfg.changed)),
            met: Met::from(ours.restart.published == cfg.changed),
        },
        Row::info(
            "messages the subscriber received during the catch-up",
            thousands(ours.restart.received),
            other(&|b| thousands(b.restart.received)),
            "—".into(),
        ),
        Row::info(
            "rows read from Postgres by the restart catch-up (≤ 1,000 needs logical replication)",
            thousands(ours.restart.rows_read),
            other(&|b| thousands(b.restart.rows_read)),
            "—".into(),
        ),
        Row::info(
            "SYNC.RELOAD FLUSH elapsed",
            ms(ours.flush_elapsed),
            other(&|b| ms(b.flush_elapsed)),
            times(ours.flush_elapsed, |b| b.flush_elapsed),
        ),
        Row::info(
            "restart: first PONG → listening",
            ms(ours.restart.elapsed),
            other(&|b| ms(b.restart.elapsed)),
            times(ours.restart.elapsed, |b| b.restart.elapsed),
        ),
        Row::info(
            "PING p99 during RELOAD FLUSH / during the catch-up",
            format!("{} / {}", ms(ours.flush.latency.p99), ms(ours.restart.pings.latency.p99)),
            other(&|b| format!("{} / {}", ms(b.flush.latency.p99), ms(b.restart.pings.latency.p99))),
            "—".into(),
        ),
    ]
}
