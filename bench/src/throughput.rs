//! Figure 2, sync throughput: how fast a stream of HSETs becomes committed rows,
//! against the same rows upserted straight into Postgres with the same statement
//! shape, batch size and number of connections.

use crate::harness::{self, Db, Server, Setup};
use crate::report::{Met, Row, Section};
use crate::stats::{ms, per_second, rate, thousands};
use crate::workload::{items_digest, raw_upsert, Item, ITEMS_MAPPING, RAW_UPSERT, RESET_ITEMS};
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
    fn item(&self, seq: u64) -> Item {
        Item::new(seq % self.keys + 1, seq)
    }

    /// `(count, sum(score))` the table must hold once every change landed.
    fn expected_digest(&self) -> (i64, i64) {
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

/// What the module run measured.
struct ModuleRun {
    writes_done: Duration,
    landed: Duration,
    rows_written: i64,
    left: Result<i64, String>,
    digest: Option<(i64, i64)>,
}

/// Writer `t` of `cfg.writers`: every key `k` with `k % writers == t`, pass after
/// pass, so one key's changes always come from one connection, in order.
fn writer(conn: &mut redis::Connection, cfg: &Config, t: u64) -> u64 {
    let seqs: Vec<u64> = (0..cfg.changes).filter(|s| (s % cfg.keys) % cfg.writers == t).collect();
    let mut errors = 0;
    for chunk in seqs.chunks(cfg.depth) {
        let mut pipe = redis::pipe();
        for &seq in chunk {
            pipe.add_command(cfg.item(seq).hset()).ignore();
        }
        if pipe.query::<()>(conn).is_err() {
            errors += chunk.len() as u64;
        }
    }
    errors
}

/// Writes the stream through the module and waits with `SYNC.WAIT` until it landed.
fn module_run(setup: &Setup, db: &Db, cfg: &Config) -> (ModuleRun, u64) {
    db.exec(RESET_ITEMS);
    harness::checkpoint(db);
    let workers = cfg.connections.to_string();
    let batch = cfg.batch.to_string();
    let server = Server::with_module(
        setup,
        db,
        ITEMS_MAPPING,
        "items",
        &[("workers", &workers), ("batch-size", &batch)],
    );
    let barrier = Arc::new(Barrier::new(cfg.writers as usize + 1));
    let handles: Vec<_> = (0..cfg.writers)
        .map(|t| {
            let mut conn = server.conn();
            let barrier = Arc::clone(&barrier);
            let cfg = *cfg;
            thread::spawn(move || {
                barrier.wait();
                writer(&mut conn, &cfg, t)
            })
        })
        .collect();
    let mut control = server.conn();
    barrier.wait();
    let start = Instant::now();
    let errors: u64 = handles.into_iter().map(|h| h.join().unwrap_or(0)).sum();
    let writes_done = start.elapsed();
    let left = harness::sync_wait(&mut control, Duration::from_secs(300));
    let landed = start.elapsed();
    let run = ModuleRun {
        writes_done,
        landed,
        rows_written: harness::status_int(&mut control, "items", "synced"),
        left,
        digest: items_digest(&mut db.client()).ok(),
    };
    (run, errors)
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

fn digest_note(what: &str, got: Option<(i64, i64)>, want: (i64, i64)) -> Option<String> {
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
    let mut notes = Vec::new();
    let (m, errors) = module_run(setup, db, cfg);
    println!(
        "  module: writes {} landed {} rows written {}",
        ms(m.writes_done),
        ms(m.landed),
        m.rows_written
    );
    if errors > 0 {
        notes.push(format!("{errors} HSETs failed during the module run"));
    }
    match &m.left {
        Ok(0) => {}
        Ok(n) => notes.push(format!("SYNC.WAIT returned with {n} rows still pending (timeout)")),
        Err(e) => notes.push(format!("SYNC.WAIT failed: {e}")),
    }
    notes.extend(digest_note("module run", m.digest, want));

    let all: Arc<Vec<Item>> = Arc::new((0..cfg.changes).map(|s| cfg.item(s)).collect());
    let (raw_all, failed_all) = raw_run(db, cfg, all);
    notes.extend(digest_note(
        "raw run of every change",
        items_digest(&mut db.client()).ok(),
        want,
    ));
    println!("  raw, every change: {}", ms(raw_all));
    let (raw_final, failed_final) = raw_run(db, cfg, Arc::new(final_rows(cfg)));
    notes.extend(digest_note(
        "raw run of the final rows",
        items_digest(&mut db.client()).ok(),
        want,
    ));
    println!("  raw, final rows: {}", ms(raw_final));
    if failed_all + failed_final > 0 {
        notes.push(format!("{} raw statements failed", failed_all + failed_final));
    }
    Section {
        title: "2. Sync throughput".into(),
        method: method(cfg),
        rows: rows(cfg, &m, raw_all, raw_final),
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
        "Ratios: changes/s of the module over rows/s of baseline (a) — both apply the same change stream and end in \
         the same state, the module may coalesce; distinct final rows/s of the module over rows/s of baseline (b) — \
         the stricter comparison: the module must take all the changes through Redis and still land the final rows \
         as fast as a client that only writes those rows."
            .into(),
    ]
}

fn rows(cfg: &Config, m: &ModuleRun, raw_all: Duration, raw_final: Duration) -> Vec<Row> {
    let changes_ours = per_second(cfg.changes, m.landed);
    let changes_raw = per_second(cfg.changes, raw_all);
    let rows_ours = per_second(cfg.keys, m.landed);
    let rows_raw = per_second(cfg.keys, raw_final);
    let r1 = changes_ours / changes_raw.max(1e-9);
    let r2 = rows_ours / rows_raw.max(1e-9);
    vec![
        Row {
            name: format!(
                "{} changes, first HSET → SYNC.WAIT: changes/s vs raw upsert of every change (a)",
                thousands(cfg.changes)
            ),
            ours: rate(changes_ours),
            baseline: rate(changes_raw),
            ratio: format!("{r1:.3}"),
            target: "≥ 0.80".into(),
            met: Met::from(r1 >= 0.8),
        },
        Row {
            name: format!(
                "{} distinct final rows/s vs raw upsert of the final rows (b)",
                thousands(cfg.keys)
            ),
            ours: rate(rows_ours),
            baseline: rate(rows_raw),
            ratio: format!("{r2:.3}"),
            target: "≥ 0.80".into(),
            met: Met::from(r2 >= 0.8),
        },
        Row::info(
            "elapsed",
            ms(m.landed),
            format!("(a) {} / (b) {}", ms(raw_all), ms(raw_final)),
            "—".into(),
        ),
        Row::info(
            "rows written to Postgres (module: `synced` after coalescing)",
            thousands(m.rows_written.max(0) as u64),
            format!("(a) {} / (b) {}", thousands(cfg.changes), thousands(cfg.keys)),
            "—".into(),
        ),
        Row::info(
            "module: HSET intake (first to last reply) / drain after the last reply",
            format!(
                "{} / {}",
                rate(per_second(cfg.changes, m.writes_done)),
                ms(m.landed.saturating_sub(m.writes_done))
            ),
            "—".into(),
            "—".into(),
        ),
    ]
}
