//! Figure 2, sync throughput: how fast a stream of HSETs becomes committed rows,
//! against the same rows upserted straight into Postgres with the same statement
//! shape, batch size and number of connections.

use crate::harness::{self, Db, DbExt, Server, Setup};
use crate::quiet::OwnCpu;
use crate::report::{Met, Row, Section};
use crate::stats::{ms, per_second, rate, thousands};
use crate::workload::{items_digest, raw_upsert, Item, ITEMS_MAPPING, RAW_UPSERT, RESET_ITEMS};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

/// Sizes of the throughput phase.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Total changes (HSETs) written.
    pub changes: u64,
    /// Distinct keys they go to.
    pub keys: u64,
    /// Writer connections to the server.
    pub writers: u64,
    /// Pipeline depth of each writer.
    pub depth: usize,
    /// Rows per statement (the module's `pgsync.batch-size`, and the raw baseline's).
    pub batch: usize,
    /// Connections (the module's `pgsync.workers`, and the raw baseline's).
    pub connections: usize,
}

impl Config {
    /// Change number `seq` of the stream: pass `seq / keys` over every key in order.
    pub fn item(&self, seq: u64) -> Item {
        Item::new(seq % self.keys + 1, seq)
    }

    /// `(count, sum(score))` the table must hold once every change landed.
    pub fn expected_digest(&self) -> (i64, i64) {
        let last_pass = (self.changes.saturating_sub(1) / self.keys) * self.keys;
        let sum: u64 = (0..self.keys)
            .map(|k| {
                let seq = last_pass + k;
                if seq < self.changes {
                    seq
                } else {
                    seq - self.keys
                }
            })
            .sum();
        (self.keys.min(self.changes) as i64, sum as i64)
    }
}

/// How a module run detects that every change landed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Completion {
    /// `SYNC.WAIT`, which blocks until every captured change settled.
    SyncWait,
    /// Polling `SYNC.STATUS` every 10 ms until nothing is pending or in flight.
    StatusPoll,
}

/// What a module run measured.
pub struct ModuleRun {
    /// From the first HSET to the last reply.
    pub writes_done: Duration,
    /// From the first HSET until every change landed.
    pub landed: Duration,
    /// Rows the module wrote (`synced`, summed over the servers that sync).
    pub rows_written: i64,
    /// CPU-seconds the bench's own processes used from the first HSET until every
    /// change landed, by command name.
    pub cpu: BTreeMap<String, f64>,
    left: Result<i64, String>,
    digest: Option<(i64, i64)>,
    commits: Option<i64>,
    errors: u64,
}

/// Which of a writer's connections takes row `id` (an index in
/// [`Target::writer_connections`]).
pub type Router = Arc<dyn Fn(u64) -> usize + Send + Sync>;

/// What a module run writes to: one server, or the primaries of a cluster.
pub trait Target {
    /// One writer's connections, one per server that takes writes.
    fn writer_connections(&self) -> Vec<redis::Connection>;
    /// Which connection takes which row.
    fn router(&self) -> Router;
    /// A connection to each server that syncs, to wait on and to read figures from.
    fn syncing(&self) -> Vec<redis::Connection>;
}

impl Target for Server {
    fn writer_connections(&self) -> Vec<redis::Connection> {
        vec![self.conn()]
    }

    fn router(&self) -> Router {
        Arc::new(|_| 0)
    }

    fn syncing(&self) -> Vec<redis::Connection> {
        vec![self.conn()]
    }
}

/// The module settings of a run: `workers` and `batch-size` from `cfg`.
pub fn module_settings(cfg: &Config) -> [(&'static str, String); 2] {
    [("workers", cfg.connections.to_string()), ("batch-size", cfg.batch.to_string())]
}

/// Starts one server with the module and the `items` mapping, set up for `cfg`.
pub fn single_node(setup: &Setup, db: &Db, cfg: &Config) -> Server {
    let settings = module_settings(cfg);
    let pairs: Vec<(&str, &str)> = settings.iter().map(|(n, v)| (*n, v.as_str())).collect();
    Server::with_module(setup, db, ITEMS_MAPPING, "items", &pairs)
}

/// Writer `t` of `cfg.writers`: every key `k` with `k % writers == t`, pass after
/// pass, so one key's changes always come from one connection, in order. Each
/// change goes to the connection `route` picks, pipelined `cfg.depth` deep there.
fn writer(conns: &mut [redis::Connection], route: &Router, cfg: &Config, t: u64) -> u64 {
    let mut pipes: Vec<(redis::Pipeline, usize)> = conns.iter().map(|_| (redis::pipe(), 0)).collect();
    let mut errors = 0;
    for seq in (0..cfg.changes).filter(|s| (s % cfg.keys) % cfg.writers == t) {
        let item = cfg.item(seq);
        let n = route(item.id);
        pipes[n].0.add_command(item.hset()).ignore();
        pipes[n].1 += 1;
        if pipes[n].1 == cfg.depth {
            errors += flush(&mut conns[n], &mut pipes[n]);
        }
    }
    for (conn, pipe) in conns.iter_mut().zip(pipes.iter_mut()) {
        errors += flush(conn, pipe);
    }
    errors
}

/// Sends a writer's queued HSETs to one server; returns how many failed.
fn flush(conn: &mut redis::Connection, (pipe, queued): &mut (redis::Pipeline, usize)) -> u64 {
    let failed = if *queued > 0 && pipe.query::<()>(conn).is_err() { *queued as u64 } else { 0 };
    *pipe = redis::pipe();
    *queued = 0;
    failed
}

/// Starts `cfg.writers` writer threads on `target`, held at a barrier until the
/// returned barrier is passed.
fn spawn_writers(target: &impl Target, cfg: &Config) -> (Arc<Barrier>, Vec<thread::JoinHandle<u64>>) {
    let barrier = Arc::new(Barrier::new(cfg.writers as usize + 1));
    let handles = (0..cfg.writers)
        .map(|t| {
            let mut conns = target.writer_connections();
            let route = target.router();
            let barrier = Arc::clone(&barrier);
            let cfg = *cfg;
            thread::spawn(move || {
                barrier.wait();
                writer(&mut conns, &route, &cfg, t)
            })
        })
        .collect();
    (barrier, handles)
}

/// Writes the stream through the module on the target `start` starts, and waits
/// until it landed on every server that syncs.
pub fn module_run<T: Target>(db: &Db, cfg: &Config, completion: Completion, start: impl FnOnce() -> T) -> ModuleRun {
    db.exec(RESET_ITEMS);
    harness::checkpoint(db);
    let commits_before = db.xact_commits();
    let target = start();
    let (barrier, handles) = spawn_writers(&target, cfg);
    let mut control = target.syncing();
    let cpu_before = OwnCpu::now();
    barrier.wait();
    let start = Instant::now();
    let errors: u64 = handles.into_iter().map(|h| h.join().unwrap_or(0)).sum();
    let writes_done = start.elapsed();
    let left = control.iter_mut().try_fold(0, |sum, c| {
        let left = match completion {
            Completion::SyncWait => harness::sync_wait(c, Duration::from_secs(300)),
            Completion::StatusPoll => harness::poll_drained(c, "items", Duration::from_secs(300)),
        };
        left.map(|n| sum + n)
    });
    let landed = start.elapsed();
    let cpu = OwnCpu::now().since(&cpu_before);
    let rows_written = control.iter_mut().map(|c| harness::status_int(c, "items", "synced")).sum();
    let digest = items_digest(&mut db.client()).ok();
    // The module's backends report their commit counts when they exit.
    drop(control);
    drop(target);
    thread::sleep(Duration::from_millis(500));
    ModuleRun {
        writes_done,
        landed,
        rows_written,
        cpu,
        left,
        digest,
        commits: db.xact_commits().zip(commits_before).map(|(a, b)| a - b),
        errors,
    }
}

/// Notes about a module run's health.
pub fn module_notes(what: &str, m: &ModuleRun, want: (i64, i64)) -> Vec<String> {
    let mut notes = Vec::new();
    if m.errors > 0 {
        notes.push(format!("{what}: {} HSETs failed", m.errors));
    }
    match &m.left {
        Ok(0) => {}
        Ok(n) => notes.push(format!("{what}: gave up waiting with {n} rows still pending (300 s)")),
        Err(e) => notes.push(format!("{what}: waiting failed: {e}")),
    }
    notes.extend(digest_note(what, m.digest, want));
    if let Some(c) = m.commits {
        notes.push(format!(
            "{what}: {} rows written in {} Postgres transactions (pg_stat_database; ≈ one per batch, plus a few of \
             the module's schema checks and the bench's own queries): ≈ {:.0} rows per batch",
            thousands(m.rows_written.max(0) as u64),
            thousands(c.max(0) as u64),
            m.rows_written as f64 / c.max(1) as f64
        ));
    }
    notes
}

/// Upserts `items` straight into Postgres: `cfg.connections` threads take batches of
/// `cfg.batch` rows in order from a shared counter. Returns the elapsed time and
/// how many statements failed.
fn raw_run(db: &Db, cfg: &Config, items: Arc<Vec<Item>>) -> (Duration, u64) {
    db.exec(RESET_ITEMS);
    harness::checkpoint(db);
    let next = Arc::new(AtomicU64::new(0));
    let barrier = Arc::new(Barrier::new(cfg.connections + 1));
    let handles: Vec<_> = (0..cfg.connections)
        .map(|_| {
            let mut client = db.client();
            let statement = client.prepare(RAW_UPSERT).expect("prepare raw upsert");
            let (items, next, barrier, batch) =
                (Arc::clone(&items), Arc::clone(&next), Arc::clone(&barrier), cfg.batch);
            thread::spawn(move || {
                barrier.wait();
                let mut failed = 0;
                loop {
                    let from = next.fetch_add(1, Ordering::Relaxed) as usize * batch;
                    if from >= items.len() {
                        return failed;
                    }
                    let to = (from + batch).min(items.len());
                    if let Err(e) = raw_upsert(&mut client, &statement, &items[from..to]) {
                        eprintln!("raw upsert failed: {e}");
                        failed += 1;
                    }
                }
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let failed = handles.into_iter().map(|h| h.join().unwrap_or(1)).sum();
    (start.elapsed(), failed)
}

/// The final state of every key: the last change of each.
fn final_rows(cfg: &Config) -> Vec<Item> {
    let first = cfg.changes.saturating_sub(cfg.keys);
    (first..cfg.changes).map(|seq| cfg.item(seq)).collect()
}

/// A note when the table does not hold what every change landing would leave.
pub fn digest_note(what: &str, got: Option<(i64, i64)>, want: (i64, i64)) -> Option<String> {
    match got {
        Some(d) if d == want => None,
        Some(d) => Some(format!(
            "{what}: table holds (rows, sum of score) = {d:?}, expected {want:?}: NOT every change landed as written"
        )),
        None => Some(format!("{what}: could not read the table back")),
    }
}

/// Runs figure 2.
pub fn run(setup: &Setup, db: &Db, cfg: &Config) -> Section {
    println!("== 2. sync throughput");
    let want = cfg.expected_digest();
    let m = module_run(db, cfg, Completion::SyncWait, || single_node(setup, db, cfg));
    println!(
        "  module (SYNC.WAIT): writes {} landed {} rows written {}",
        ms(m.writes_done),
        ms(m.landed),
        m.rows_written
    );
    let polled = module_run(db, cfg, Completion::StatusPoll, || single_node(setup, db, cfg));
    println!(
        "  module (SYNC.STATUS polling): writes {} landed {} rows written {}",
        ms(polled.writes_done),
        ms(polled.landed),
        polled.rows_written
    );
    let mut notes = module_notes("module run (SYNC.WAIT)", &m, want);
    notes.extend(module_notes("module run (SYNC.STATUS polling)", &polled, want));
    let all: Arc<Vec<Item>> = Arc::new((0..cfg.changes).map(|s| cfg.item(s)).collect());
    let (raw_all, failed_all) = raw_run(db, cfg, all);
    notes.extend(digest_note("raw run of every change", items_digest(&mut db.client()).ok(), want));
    println!("  raw, every change: {}", ms(raw_all));
    let (raw_final, failed_final) = raw_run(db, cfg, Arc::new(final_rows(cfg)));
    notes.extend(digest_note("raw run of the final rows", items_digest(&mut db.client()).ok(), want));
    println!("  raw, final rows: {}", ms(raw_final));
    if failed_all + failed_final > 0 {
        notes.push(format!("{} raw statements failed", failed_all + failed_final));
    }
    Section {
        title: "2. Sync throughput".into(),
        method: method(cfg),
        rows: rows(cfg, &m, &polled, raw_all, raw_final),
        notes,
    }
}

fn method(cfg: &Config) -> Vec<String> {
    vec![
        format!(
            "Ours: {} writer connections pipelined {} deep send {} HSETs (`items:<id>` with name, score, tag) over {} keys: \
             {} passes over every key in order, so each key is written {} times, 100,000 changes apart. Then `SYNC.WAIT` \
             (300 s bound) blocks until every captured change is committed. Time is measured from the first write to the \
             return of `SYNC.WAIT`. Module settings: `workers {}`, `batch-size {}`, `batch-delay-ms` 1 (default). \
             The module coalesces changes to a key that is still pending, so it writes fewer rows than changes \
             (its `synced` counter is shown below).",
            cfg.writers,
            cfg.depth,
            thousands(cfg.changes),
            thousands(cfg.keys),
            cfg.changes / cfg.keys.max(1),
            cfg.changes / cfg.keys.max(1),
            cfg.connections,
            cfg.batch
        ),
        format!(
            "Baselines, straight to Postgres with the same batch size ({}) and number of connections ({}), each \
             connection taking the next batch in order, one prepared `INSERT INTO items ... SELECT ... FROM \
             unnest($1::text[], $2::text[], $3::text[], $4::text[]) ON CONFLICT (id) DO UPDATE` per batch, autocommit \
             (the module sends one statement per batch too, without BEGIN/COMMIT; its statement is an \
             `UPDATE ... FROM unnest(...)` followed by an `INSERT ... ON CONFLICT` of the rows not updated, see \
             `src/pg/sql.rs`): (a) every one of the {} changes as its own row, no coalescing; (b) only the {} distinct \
             final rows. Every run starts from an empty (truncated) table after a CHECKPOINT, and ends with the same \
             table contents (checked: row count and sum of score).",
            cfg.batch,
            cfg.connections,
            thousands(cfg.changes),
            thousands(cfg.keys)
        ),
        "The module run is done twice: once finishing with `SYNC.WAIT` as described (the figure with a target), \
         once finishing by polling `SYNC.STATUS items` every 10 ms until `pending` and `in_flight` are 0 \
         (informational: it shows how much the waiting `SYNC.WAIT` itself costs the module)."
            .into(),
        "Ratios: changes/s of the module over rows/s of baseline (a) — both apply the same change stream and end in \
         the same state, the module may coalesce; distinct final rows/s of the module over rows/s of baseline (b) — \
         the stricter comparison: the module must take all the changes through Redis and still land the final rows \
         as fast as a client that only writes those rows."
            .into(),
    ]
}

fn rows(cfg: &Config, m: &ModuleRun, polled: &ModuleRun, raw_all: Duration, raw_final: Duration) -> Vec<Row> {
    let changes_raw = per_second(cfg.changes, raw_all);
    let rows_raw = per_second(cfg.keys, raw_final);
    let ratio = |ours: f64, base: f64| format!("{:.3}", ours / base.max(1e-9));
    let changes = |r: &ModuleRun| per_second(cfg.changes, r.landed);
    let distinct = |r: &ModuleRun| per_second(cfg.keys, r.landed);
    let target_row = |name: String, ours: f64, base: f64, target: f64| Row {
        name,
        ours: rate(ours),
        baseline: rate(base),
        ratio: ratio(ours, base),
        target: format!("≥ {target:.2}"),
        met: Met::from(ours / base.max(1e-9) >= target),
    };
    let intake = |r: &ModuleRun| {
        format!("{} / {}", rate(per_second(cfg.changes, r.writes_done)), ms(r.landed.saturating_sub(r.writes_done)))
    };
    vec![
        target_row(
            format!(
                "{} changes, first HSET → SYNC.WAIT: changes/s vs raw upsert of every change (a)",
                thousands(cfg.changes)
            ),
            changes(m),
            changes_raw,
            0.85,
        ),
        target_row(
            format!("{} distinct final rows/s vs raw upsert of the final rows (b)", thousands(cfg.keys)),
            distinct(m),
            rows_raw,
            0.50,
        ),
        Row::info(
            "same, completion seen by polling SYNC.STATUS instead of SYNC.WAIT: changes/s vs (a)",
            rate(changes(polled)),
            rate(changes_raw),
            ratio(changes(polled), changes_raw),
        ),
        Row::info(
            "same, polling SYNC.STATUS: distinct final rows/s vs (b)",
            rate(distinct(polled)),
            rate(rows_raw),
            ratio(distinct(polled), rows_raw),
        ),
        Row::info(
            "elapsed (module: SYNC.WAIT run / polling run)",
            format!("{} / {}", ms(m.landed), ms(polled.landed)),
            format!("(a) {} / (b) {}", ms(raw_all), ms(raw_final)),
            "—".into(),
        ),
        Row::info(
            "rows written to Postgres (module: `synced`, after coalescing)",
            format!("{} / {}", thousands(m.rows_written.max(0) as u64), thousands(polled.rows_written.max(0) as u64)),
            format!("(a) {} / (b) {}", thousands(cfg.changes), thousands(cfg.keys)),
            "—".into(),
        ),
        Row::info(
            "module: HSET intake (first to last reply) / drain after the last reply",
            format!("{} ; {}", intake(m), intake(polled)),
            "—".into(),
            "—".into(),
        ),
    ]
}
