//! Figure 11, Postgres → Redis by logical replication (`pgsync.cdc logical`)
//! against the trigger path (`pgsync.cdc notify`): the same table and the same
//! steps, one side after the other in the same run, on a private Postgres with
//! `wal_level = logical`. A restart's catch-up (figure 9's code), one UPDATE of
//! many rows, the lag of single-row commits at a steady rate (figure 3's paced
//! writer, watched by a subscriber instead of a poller), and Postgres's commit
//! rate with the module attached against without it.

use crate::catch_up::{self, Restart, Subscriber, CHANNELS, PATIENCE, PING_TARGET};
use crate::harness::{self, Db, DbExt, Server, Setup};
use crate::lag::{self, Marks, Seen};
use crate::private_pg::{PgSetup, PrivatePg};
use crate::probe::{Pings, Prober};
use crate::report::{Met, Row, Section};
use crate::stats::{ms, rate, thousands, Latency};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Sizes of figure 11.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// The table, the rows changed while Redis is down, the PING probe's pause.
    pub catch_up: catch_up::Config,
    /// Rows of the one big UPDATE.
    pub bulk: u64,
    /// The paced single-row commits (rate and duration; `poll_every` unused).
    pub lag: lag::Config,
    /// The rate of a second, gentler lag run (where the apply keeps up).
    pub lag_low: u64,
    /// Client threads of the commit-throughput run.
    pub clients: usize,
    /// How long each commit-throughput run lasts.
    pub commit_for: Duration,
}

const ROWS_READ_TARGET: u64 = 1_000;
const LISTENING_TARGET: Duration = Duration::from_secs(2);
const BULK_TARGET: Duration = Duration::from_secs(10);
const LAG_TARGET: Duration = Duration::from_millis(20);
const COMMITS_TARGET: f64 = 0.95;

/// What one change source showed.
#[derive(Default)]
struct Side {
    /// `SYNC.STATUS`'s `cdc`: the source the module chose, and why.
    cdc: String,
    /// Commits per second without the module (just before) and with it.
    commits_without: f64,
    commits_with: f64,
    bulk: Bulk,
    lag: Lag,
    lag_low: Lag,
    restart: Restart,
    notes: Vec<String>,
}

impl Side {
    fn commit_ratio(&self) -> f64 {
        self.commits_with / self.commits_without.max(1e-9)
    }
}

/// The one big UPDATE.
#[derive(Default)]
struct Bulk {
    /// The UPDATE statement itself (Postgres's time).
    statement: Duration,
    /// From the statement's start to every key right.
    elapsed: Duration,
    pings: Pings,
    /// Keys still wrong when the wait ended.
    wrong: u64,
}

/// The paced single-row commits.
#[derive(Default)]
struct Lag {
    /// Commit acknowledged → notification received.
    latency: Latency,
    written: u64,
    missing: u64,
    failures: u64,
    elapsed: Duration,
}

impl Lag {
    /// The commit rate driven.
    fn rate(&self) -> f64 {
        self.written as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Runs figure 11 on a private Postgres of its own.
pub fn run(setup: &Setup, cfg: &Config) -> Section {
    println!("== 11. Postgres → Redis: logical replication against the trigger path");
    let pg = PrivatePg::start_with(PgSetup::logical());
    let db = catch_up::items_db(&pg.admin_url(), cfg.catch_up.rows);
    let logical = measure(setup, &db, cfg, "logical");
    let notify = measure(setup, &db, cfg, "notify");
    drop(db);
    drop(pg);
    let mut notes: Vec<String> = logical.notes.iter().map(|n| format!("logical: {n}")).collect();
    notes.extend(notify.notes.iter().map(|n| format!("trigger path: {n}")));
    Section {
        title: "11. Postgres → Redis: logical replication against the trigger path".into(),
        method: method(cfg),
        rows: rows(cfg, &logical, &notify),
        notes,
    }
}

/// One side: the commit rate without and with the module, then the big UPDATE,
/// the lag and the restart's catch-up, with `pgsync.cdc` set to `cdc`.
fn measure(setup: &Setup, db: &Db, cfg: &Config, cdc: &str) -> Side {
    let mut side = Side::default();
    detach(db, &mut side.notes);
    side.commits_without = commits(db, cfg);
    let mut server = catch_up::start_cached(setup, db, &[("cdc", cdc)], &mut side.notes);
    side.cdc = harness::status_text(&mut server.conn(), "items", "cdc");
    side.commits_with = commits(db, cfg);
    println!(
        "  {cdc} ({}): commits/s without {} with {} ({:.2})",
        side.cdc,
        rate(side.commits_without),
        rate(side.commits_with),
        side.commit_ratio()
    );
    barrier(&server, db, &format!("{cdc}-1"), &mut side.notes);
    side.bulk = bulk(&server, db, cfg, &format!("bulk-{cdc}"));
    println!(
        "  {cdc}: UPDATE of {} rows: every key right after {} (statement {}), worst PING {}, {} wrong",
        thousands(cfg.bulk),
        ms(side.bulk.elapsed),
        ms(side.bulk.statement),
        ms(side.bulk.pings.latency.max),
        side.bulk.wrong
    );
    barrier(&server, db, &format!("{cdc}-2"), &mut side.notes);
    side.lag = paced_lag(&server, db, cfg, cfg.lag, &format!("lag-{cdc}"), &mut side.notes);
    let low = lag::Config { rate: cfg.lag_low, ..cfg.lag };
    side.lag_low = paced_lag(&server, db, cfg, low, &format!("low-{cdc}"), &mut side.notes);
    println!(
        "  {cdc}: lag at {}: p50 {} p99 {} ({} missing); at {}: p50 {} p99 {} ({} missing)",
        rate(side.lag.rate()),
        ms(side.lag.latency.p50),
        ms(side.lag.latency.p99),
        side.lag.missing,
        rate(side.lag_low.rate()),
        ms(side.lag_low.latency.p50),
        ms(side.lag_low.latency.p99),
        side.lag_low.missing
    );
    barrier(&server, db, &format!("{cdc}-3"), &mut side.notes);
    side.restart = catch_up::restart_catch_up(&mut server, db, &cfg.catch_up, &mut side.notes);
    println!("  {cdc}: {}", side.restart.summary());
    drop(server);
    detach(db, &mut side.notes);
    side
}

/// Removes what a module left on the database: triggers on `items`, publications
/// and (inactive) replication slots, so the next run starts without them.
fn detach(db: &Db, notes: &mut Vec<String>) {
    db.exec(
        "DO $$ DECLARE t record; BEGIN
           FOR t IN SELECT tgname FROM pg_trigger WHERE tgrelid = 'items'::regclass AND NOT tgisinternal LOOP
             EXECUTE format('DROP TRIGGER %I ON items', t.tgname);
           END LOOP;
           FOR t IN SELECT pubname FROM pg_publication LOOP
             EXECUTE format('DROP PUBLICATION %I', t.pubname);
           END LOOP;
         END $$",
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut client = db.client();
    loop {
        let slots: Vec<(String, bool)> = client
            .query("SELECT slot_name::text, active FROM pg_replication_slots", &[])
            .map(|rows| rows.iter().map(|r| (r.get(0), r.get(1))).collect())
            .unwrap_or_default();
        for (slot, _) in slots.iter().filter(|(_, active)| !active) {
            let _ = client.execute("SELECT pg_drop_replication_slot($1)", &[slot]);
        }
        if slots.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            notes.push(format!("replication slots left: {slots:?}"));
            return;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Single-row UPDATEs of random rows from `cfg.clients` threads for
/// `cfg.commit_for`; commits per second.
fn commits(db: &Db, cfg: &Config) -> f64 {
    harness::checkpoint(db);
    let done = Arc::new(AtomicBool::new(false));
    let total = Arc::new(AtomicU64::new(0));
    let rows = cfg.catch_up.rows.max(1);
    let threads: Vec<_> = (0..cfg.clients as u64)
        .map(|t| {
            let (done, total, mut client) = (Arc::clone(&done), Arc::clone(&total), db.client());
            thread::spawn(move || {
                let update = client.prepare("UPDATE items SET score = score + 1 WHERE id = $1").expect("prepare");
                let mut x = 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(t + 1);
                let mut n = 0;
                while !done.load(Ordering::Relaxed) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    if client.execute(&update, &[&((x % rows + 1) as i32)]).is_ok() {
                        n += 1;
                    }
                }
                total.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();
    let start = Instant::now();
    thread::sleep(cfg.commit_for);
    done.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    total.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// Writes `mark` into row 1's `name` and waits until Redis shows it: every
/// change committed before has been applied (both sources apply in commit order).
fn barrier(server: &Server, db: &Db, mark: &str, notes: &mut Vec<String>) {
    db.exec(&format!("UPDATE items SET name = '{mark}' WHERE id = 1"));
    let mut c = server.conn();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let name: Option<String> = redis::cmd("HGET").arg("items:1").arg("name").query(&mut c).unwrap_or(None);
        if name.as_deref() == Some(mark) {
            return;
        }
        if Instant::now() > deadline {
            notes.push(format!("`{mark}` did not reach Redis within {} s", PATIENCE.as_secs()));
            return;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Keys among `ids` whose `tag` is not `tag` (pipelined, 5,000 a round trip).
fn wrong_tags(c: &mut redis::Connection, ids: impl Iterator<Item = u64>, tag: &str) -> u64 {
    let ids: Vec<u64> = ids.collect();
    let mut wrong = 0;
    for chunk in ids.chunks(5_000) {
        let mut pipe = redis::pipe();
        for id in chunk {
            pipe.cmd("HGET").arg(format!("items:{id}")).arg("tag");
        }
        let tags: Vec<Option<String>> = pipe.query(c).unwrap_or_default();
        wrong += chunk.len() as u64 - tags.iter().filter(|t| t.as_deref() == Some(tag)).count() as u64;
    }
    wrong
}

/// One UPDATE of rows 1..=`cfg.bulk` (a new `tag`) in one transaction, timed
/// from its start until every one of those keys shows it, with the PING probe.
fn bulk(server: &Server, db: &Db, cfg: &Config, tag: &str) -> Bulk {
    let n = cfg.bulk;
    let mut c = server.conn();
    let prober = Prober::start(server, cfg.catch_up.ping_every);
    let start = Instant::now();
    db.exec(&format!("UPDATE items SET tag = '{tag}' WHERE id <= {n}"));
    let statement = start.elapsed();
    let sample = || (1..=100).map(move |i| (n * i / 100).max(1));
    let mut wrong = n;
    while start.elapsed() < PATIENCE {
        if wrong_tags(&mut c, sample(), tag) == 0 {
            wrong = wrong_tags(&mut c, 1..=n, tag);
            if wrong == 0 {
                break;
            }
        }
        thread::sleep(Duration::from_millis(10));
    }
    let elapsed = start.elapsed();
    Bulk { statement, elapsed, pings: prober.finish(), wrong }
}

/// Single-row autocommit UPDATEs of rows 1, 2, ... paced to `pace.rate`
/// (`name` set to `<value>-<id>`, new to each run: an unchanged row is not announced);
/// each lag runs from the commit's acknowledgement to its notification
/// (published in the same step as the key's write).
fn paced_lag(server: &Server, db: &Db, cfg: &Config, pace: lag::Config, value: &str, notes: &mut Vec<String>) -> Lag {
    let capacity = pace.capacity().min(cfg.catch_up.rows as usize + 1);
    let marks = Marks::new(capacity);
    let subscriber = Subscriber::start(server, CHANNELS);
    // Without other traffic the server flushes what a module thread published
    // to subscribers only when its event loop next wakes (up to 1/hz = 100 ms
    // later): PINGs every millisecond keep it awake, as a busy server would be.
    let prober = Prober::start(server, Duration::from_millis(1));
    let mut client = db.client();
    let update = client.prepare("UPDATE items SET name = $2 WHERE id = $1").expect("prepare");
    let forks = || harness::info_number(&mut server.conn(), "stats", "total_forks");
    let forks_before = forks();
    let (failures, elapsed) = lag::paced_writer(&pace, &marks, |id| {
        client.execute(&update, &[&(id as i32), &format!("{value}-{id}")]).is_ok()
    });
    barrier(server, db, &format!("{value}-done"), notes);
    // A fork (an automatic AOF rewrite) stops the server's main thread for its
    // duration, and every change applied meanwhile waits for it.
    if forks() > forks_before {
        let took = harness::info_number(&mut server.conn(), "stats", "latest_fork_usec");
        notes.push(format!(
            "{value}: the server forked during the run (an AOF rewrite); the latest fork took {} ms",
            took / 1000
        ));
    }
    prober.finish();
    let mut visible = vec![0u64; capacity];
    for (at, channel) in subscriber.finish(0) {
        let id = channel.strip_prefix("sync:items:").and_then(|id| id.parse::<usize>().ok());
        if let Some(slot) = id.and_then(|id| visible.get_mut(id)) {
            if *slot == 0 {
                *slot = marks.at(at);
            }
        }
    }
    let (latency, missing) = lag::latencies(&marks, &marks.replied, &Seen::visible(visible));
    Lag { latency, written: marks.total.load(Ordering::Acquire), missing, failures, elapsed }
}

fn method(cfg: &Config) -> Vec<String> {
    vec![
        format!(
            "A private Postgres (initdb in a temp dir, `wal_level = logical`, `fsync = off`) holds figure 9's `items` \
             with {} rows. Each side runs the same steps on it, logical first: a server with `appendonly yes` and the \
             module, figure 9's `read-only` mapping (`\"notify\": \"sync:items\"`) and `cdc logical` (ours) or `cdc \
             notify` (baseline: the trigger path), waits until `listening` (every row cached); afterwards the \
             module's triggers, publication and slot are dropped.",
            thousands(cfg.catch_up.rows)
        ),
        format!(
            "Commit throughput: {} threads, each its own connection, run autocommit single-row `UPDATE items SET \
             score = score + 1 WHERE id = $1` on random rows for {} s, once just before the side's server starts (no \
             module attached: no trigger, no slot) and once with it listening; the ratio is with / without.",
            cfg.clients,
            cfg.commit_for.as_secs()
        ),
        format!(
            "One UPDATE: `UPDATE items SET tag = '<new>' WHERE id <= {}` in one transaction; time from the statement's \
             start until every one of those keys shows the new tag (a sample of 100 keys polled every 10 ms, then \
             all checked), while figure 9's PING probe runs ({} ms pause).",
            thousands(cfg.bulk),
            cfg.catch_up.ping_every.as_millis()
        ),
        format!(
            "Lag: figure 3's paced writer, {} single-row autocommit UPDATEs/s (`name` of rows 1, 2, ...) for {} s on \
             one connection; a subscriber (`PSUBSCRIBE sync:items:*`) records when each row's notification arrives \
             (published in the same step as the key's write); lag = notification − the commit's acknowledgement. \
             Each run writes values new to it; meanwhile a client sends `PING` every 1 ms: \
             without other traffic the server sends what a module thread published only when its event loop next \
             wakes (up to 100 ms at `hz 10`; a first run without the PINGs measured p50 ≈ 50 ms, p99 ≈ 100 ms on \
             both paths at 1,000/s). The rate actually driven is shown. Then the same at {} commits/s.",
            thousands(cfg.lag.rate),
            cfg.lag.duration.as_secs(),
            thousands(cfg.lag_low)
        ),
        format!(
            "Restart catch-up: figure 9's: `SHUTDOWN` (the AOF is written), {} rows updated in Postgres, the server \
             started again on its AOF; PING probe and subscriber from the first PONG until `listening`. Rows read: \
             `reload_rows_read` of `SYNC.STATUS` plus the rows of a logical initial load if one ran (the log's \
             `logical stream: loaded N rows`); notifications: the messages the subscriber received from the first \
             PONG until, after `listening`, as many as rows changed have arrived and 200 ms passed without one (or \
             10 s passed); `cmdstat_publish` calls since the restart are shown too. The logical path shows \
             `listening` as soon as it streams, before it applied what it missed (Postgres first decodes the WAL \
             again from the slot's restart point): the time to the last notification is shown beside the time to \
             `listening`.",
            thousands(cfg.catch_up.changed)
        ),
        "Before each step a barrier (a change to row 1, awaited in Redis) makes sure nothing of the previous step \
         is still being applied. Both sides share the machine with whatever else runs on it: times and rates are \
         noisy, counts are not."
            .into(),
    ]
}

fn rows(cfg: &Config, ours: &Side, base: &Side) -> Vec<Row> {
    let times = |a: Duration, b: Duration| format!("{:.2}×", a.as_secs_f64() / b.as_secs_f64().max(1e-9));
    let r = &ours.restart;
    vec![
        Row::info("`SYNC.STATUS` `cdc`", format!("`{}`", ours.cdc), format!("`{}`", base.cdc), "—".into()),
        Row {
            name: format!(
                "restart catch-up over {} cached rows, {} changed: rows read from Postgres",
                thousands(cfg.catch_up.rows),
                thousands(cfg.catch_up.changed)
            ),
            ours: thousands(r.rows_read),
            baseline: thousands(base.restart.rows_read),
            ratio: "—".into(),
            target: format!("≤ {}", thousands(ROWS_READ_TARGET)),
            met: Met::from(r.rows_read <= ROWS_READ_TARGET),
        },
        Row {
            name: "restart catch-up: notifications (messages a `PSUBSCRIBE sync:items:*` client received)".into(),
            ours: thousands(r.received),
            baseline: thousands(base.restart.received),
            ratio: "—".into(),
            target: format!("= {}", thousands(cfg.catch_up.changed)),
            met: Met::from(r.received == cfg.catch_up.changed),
        },
        Row::info(
            "restart catch-up: `cmdstat_publish` calls since the restart",
            thousands(r.published),
            thousands(base.restart.published),
            "—".into(),
        ),
        Row {
            name: "restart catch-up: first PONG → `listening`".into(),
            ours: ms(r.elapsed),
            baseline: ms(base.restart.elapsed),
            ratio: times(r.elapsed, base.restart.elapsed),
            target: format!("≤ {}", ms(LISTENING_TARGET)),
            met: Met::from(r.elapsed <= LISTENING_TARGET),
        },
        Row::info(
            "restart catch-up: first PONG → the last notification",
            ms(r.last_message),
            ms(base.restart.last_message),
            times(r.last_message, base.restart.last_message),
        ),
        Row::info(
            "restart catch-up: worst PING",
            ms(r.pings.latency.max),
            ms(base.restart.pings.latency.max),
            times(r.pings.latency.max, base.restart.pings.latency.max),
        ),
        Row {
            name: format!("one UPDATE of {} rows in one transaction → every key right", thousands(cfg.bulk)),
            ours: ms(ours.bulk.elapsed),
            baseline: ms(base.bulk.elapsed),
            ratio: times(ours.bulk.elapsed, base.bulk.elapsed),
            target: format!("≤ {}", ms(BULK_TARGET)),
            met: Met::from(ours.bulk.elapsed <= BULK_TARGET && ours.bulk.wrong == 0),
        },
        Row {
            name: "one UPDATE: worst PING meanwhile".into(),
            ours: ms(ours.bulk.pings.latency.max),
            baseline: ms(base.bulk.pings.latency.max),
            ratio: times(ours.bulk.pings.latency.max, base.bulk.pings.latency.max),
            target: format!("≤ {}", ms(PING_TARGET)),
            met: Met::from(ours.bulk.pings.latency.max <= PING_TARGET),
        },
        Row::info(
            "one UPDATE: the statement itself / keys still wrong at the end",
            format!("{} / {}", ms(ours.bulk.statement), thousands(ours.bulk.wrong)),
            format!("{} / {}", ms(base.bulk.statement), thousands(base.bulk.wrong)),
            "—".into(),
        ),
        Row {
            name: format!(
                "lag, commit → key visible, p99 ({} single-row commits/s asked; driven: {} / {})",
                thousands(cfg.lag.rate),
                rate(ours.lag.rate()),
                rate(base.lag.rate())
            ),
            ours: ms(ours.lag.latency.p99),
            baseline: ms(base.lag.latency.p99),
            ratio: times(ours.lag.latency.p99, base.lag.latency.p99),
            target: format!("≤ {}", ms(LAG_TARGET)),
            met: Met::from(ours.lag.latency.p99 <= LAG_TARGET && ours.lag.missing == 0 && ours.lag.written > 0),
        },
        Row::info(
            "lag p50 / max; commits never announced, failed",
            format!(
                "{} / {}; {}, {}",
                ms(ours.lag.latency.p50),
                ms(ours.lag.latency.max),
                thousands(ours.lag.missing),
                thousands(ours.lag.failures)
            ),
            format!(
                "{} / {}; {}, {}",
                ms(base.lag.latency.p50),
                ms(base.lag.latency.max),
                thousands(base.lag.missing),
                thousands(base.lag.failures)
            ),
            "—".into(),
        ),
        Row::info(
            &format!(
                "lag p50 / p99 at {} commits/s asked (driven: {} / {})",
                thousands(cfg.lag_low),
                rate(ours.lag_low.rate()),
                rate(base.lag_low.rate())
            ),
            format!("{} / {}", ms(ours.lag_low.latency.p50), ms(ours.lag_low.latency.p99)),
            format!("{} / {}", ms(base.lag_low.latency.p50), ms(base.lag_low.latency.p99)),
            times(ours.lag_low.latency.p99, base.lag_low.latency.p99),
        ),
        Row {
            name: format!(
                "Postgres commit throughput with the module / without ({} clients, single-row UPDATEs)",
                cfg.clients
            ),
            ours: format!("{:.2}", ours.commit_ratio()),
            baseline: format!("{:.2}", base.commit_ratio()),
            ratio: "—".into(),
            target: format!("≥ {COMMITS_TARGET:.2}"),
            met: Met::from(ours.commit_ratio() >= COMMITS_TARGET),
        },
        Row::info(
            "commits/s without the module → with it",
            format!("{} → {}", rate(ours.commits_without), rate(ours.commits_with)),
            format!("{} → {}", rate(base.commits_without), rate(base.commits_with)),
            "—".into(),
        ),
    ]
}
