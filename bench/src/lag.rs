//! Figure 3, lag: at a steady rate of changes, how long after a write is
//! acknowledged its row becomes visible to another Postgres client. A poller on
//! its own connection looks for new rows; both the module run and the direct
//! INSERT baseline are measured by the same poller.

use crate::harness::{self, Db, DbExt, Server, Setup};
use crate::report::{Met, Row, Section};
use crate::stats::{ms, per_second, rate, thousands, Latency};
use crate::workload::{Item, ITEMS_MAPPING, RESET_ITEMS};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Sizes of the lag phase.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Changes per second the writer paces itself to.
    pub rate: u64,
    /// How long the writer writes.
    pub duration: Duration,
    /// Pause between two polls.
    pub poll_every: Duration,
}

impl Config {
    /// Ids the writer may use (slots of [`Marks`]).
    pub fn capacity(&self) -> usize {
        (self.rate as f64 * self.duration.as_secs_f64() * 1.1) as usize + 16
    }
}

/// Times recorded per row id (nanoseconds since the run's epoch, 0 = not yet).
pub struct Marks {
    epoch: Instant,
    pub sent: Vec<AtomicU64>,
    pub replied: Vec<AtomicU64>,
    pub total: AtomicU64,
    writing: AtomicBool,
}

impl Marks {
    /// Marks for ids below `capacity`.
    pub fn new(capacity: usize) -> Marks {
        let zeros = || (0..capacity).map(|_| AtomicU64::new(0)).collect();
        Marks {
            epoch: Instant::now(),
            sent: zeros(),
            replied: zeros(),
            total: AtomicU64::new(0),
            writing: AtomicBool::new(true),
        }
    }

    fn now(&self) -> u64 {
        self.at(Instant::now())
    }

    /// `t` as a mark (nanoseconds since the epoch, plus one).
    pub fn at(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_nanos() as u64 + 1
    }
}

/// What the poller (or figure 11's subscriber) saw.
pub struct Seen {
    /// Per id, the mark of when it was first seen (0 = never).
    pub visible: Vec<u64>,
    polls: u64,
    poll_time: Duration,
}

impl Seen {
    /// What a watcher other than the poller saw (no polls of its own).
    pub fn visible(visible: Vec<u64>) -> Seen {
        Seen { visible, polls: 0, poll_time: Duration::ZERO }
    }
}

/// Paces `write(id)` for ids 1.. at `cfg.rate` per second for `cfg.duration`
/// (send times follow a fixed schedule, so a stall is followed by a catch-up, not
/// a lower rate). Returns the number of failed writes and the time it took.
pub fn paced_writer(cfg: &Config, marks: &Marks, mut write: impl FnMut(u64) -> bool) -> (u64, Duration) {
    let period = Duration::from_secs_f64(1.0 / cfg.rate as f64);
    let start = Instant::now();
    let mut failures = 0;
    let mut id: u64 = 1;
    while (id as usize) < marks.sent.len() {
        let due = start + period * (id as u32 - 1);
        if due.duration_since(start) >= cfg.duration {
            break;
        }
        let now = Instant::now();
        if due > now {
            thread::sleep(due - now);
        }
        marks.sent[id as usize].store(marks.now(), Ordering::Relaxed);
        if !write(id) {
            failures += 1;
        }
        marks.replied[id as usize].store(marks.now(), Ordering::Relaxed);
        marks.total.store(id, Ordering::Release);
        id += 1;
    }
    marks.writing.store(false, Ordering::Release);
    (failures, start.elapsed())
}

/// Polls `items` for ids at or above the lowest one not seen yet, recording when
/// each first became visible, until every written id was seen or `deadline`.
fn poller(mut client: postgres::Client, marks: &Marks, every: Duration, patience: Duration) -> Seen {
    let statement = client.prepare("SELECT id FROM items WHERE id >= $1").expect("prepare poll");
    let mut visible = vec![0u64; marks.sent.len()];
    let mut low: usize = 1;
    let (mut polls, mut poll_time) = (0u64, Duration::ZERO);
    let mut deadline: Option<Instant> = None;
    loop {
        let t = Instant::now();
        let rows = client.query(&statement, &[&(low as i32)]);
        let now = marks.now();
        poll_time += t.elapsed();
        polls += 1;
        for r in rows.iter().flatten() {
            let id = r.get::<_, i32>(0) as usize;
            if id < visible.len() && visible[id] == 0 {
                visible[id] = now;
            }
        }
        while low < visible.len() && visible[low] != 0 {
            low += 1;
        }
        let writing = marks.writing.load(Ordering::Acquire);
        let total = marks.total.load(Ordering::Acquire) as usize;
        if !writing {
            if low > total {
                break;
            }
            let d = *deadline.get_or_insert_with(|| Instant::now() + patience);
            if Instant::now() > d {
                break;
            }
        }
        thread::sleep(every);
    }
    Seen { visible, polls, poll_time }
}

/// Latencies from `from` (send or reply marks) to visibility; counts ids never seen.
pub fn latencies(marks: &Marks, from: &[AtomicU64], seen: &Seen) -> (Latency, u64) {
    let total = marks.total.load(Ordering::Acquire) as usize;
    let mut samples = Vec::with_capacity(total);
    let mut missing = 0;
    for (start, visible) in from.iter().zip(&seen.visible).take(total + 1).skip(1) {
        match *visible {
            0 => missing += 1,
            v => samples.push(Duration::from_nanos(v.saturating_sub(start.load(Ordering::Relaxed)))),
        }
    }
    (Latency::of(&mut samples), missing)
}

/// Client-side round trips (send to reply).
pub fn round_trips(marks: &Marks) -> Latency {
    let total = marks.total.load(Ordering::Acquire) as usize;
    let mut samples: Vec<Duration> = (1..=total)
        .map(|id| {
            let s = marks.sent[id].load(Ordering::Relaxed);
            Duration::from_nanos(marks.replied[id].load(Ordering::Relaxed).saturating_sub(s))
        })
        .collect();
    Latency::of(&mut samples)
}

/// Result of one paced run.
struct Run {
    from_reply: Latency,
    from_send: Latency,
    round_trip: Latency,
    missing: u64,
    failures: u64,
    written: u64,
    elapsed: Duration,
    polls: u64,
    poll_time: Duration,
}

/// Runs the paced writer with `write` while the poller watches `db`.
fn paced_run(db: &Db, cfg: &Config, write: impl FnMut(u64) -> bool) -> Run {
    let marks = Arc::new(Marks::new(cfg.capacity()));
    let client = db.client();
    let poll = {
        let (marks, every) = (Arc::clone(&marks), cfg.poll_every);
        thread::spawn(move || poller(client, &marks, every, Duration::from_secs(30)))
    };
    let (failures, elapsed) = paced_writer(cfg, &marks, write);
    let seen = poll.join().expect("poller thread");
    let (from_reply, missing) = latencies(&marks, &marks.replied, &seen);
    let (from_send, _) = latencies(&marks, &marks.sent, &seen);
    Run {
        from_reply,
        from_send,
        round_trip: round_trips(&marks),
        missing,
        failures,
        written: marks.total.load(Ordering::Acquire),
        elapsed,
        polls: seen.polls,
        poll_time: seen.poll_time,
    }
}

/// The module run: one connection HSETs `items:<id>` for new ids.
fn module_run(setup: &Setup, db: &Db, cfg: &Config) -> Run {
    db.exec(RESET_ITEMS);
    harness::checkpoint(db);
    let server = Server::with_module(setup, db, ITEMS_MAPPING, "items", &[]);
    let mut conn = server.conn();
    paced_run(db, cfg, move |id| Item::new(id, id).hset().query::<i64>(&mut conn).is_ok())
}

/// The baseline: one Postgres connection INSERTs the same rows, autocommit.
fn direct_run(db: &Db, cfg: &Config) -> Run {
    db.exec(RESET_ITEMS);
    harness::checkpoint(db);
    let mut client = db.client();
    let insert =
        client.prepare("INSERT INTO items (id, name, score, tag) VALUES ($1, $2, $3, $4)").expect("prepare insert");
    paced_run(db, cfg, move |id| {
        let item = Item::new(id, id);
        client.execute(&insert, &[&(id as i32), &item.name, &(item.score as i64), &item.tag]).is_ok()
    })
}

/// Runs figure 3.
pub fn run(setup: &Setup, db: &Db, cfg: &Config) -> Section {
    println!("== 3. lag");
    let ours = module_run(setup, db, cfg);
    println!("  module: p50 {} p99 {}", ms(ours.from_reply.p50), ms(ours.from_reply.p99));
    let base = direct_run(db, cfg);
    println!("  direct: p50 {} p99 {}", ms(base.from_send.p50), ms(base.from_send.p99));
    Section {
        title: "3. Lag at a steady rate".into(),
        method: method(cfg),
        rows: rows(&ours, &base),
        notes: notes(&ours, &base),
    }
}

fn method(cfg: &Config) -> Vec<String> {
    vec![
        format!(
            "One writer paces itself to {} changes/s for {} s (a fixed send schedule: a late send is followed by \
             catch-up, not by a lower rate), each change a new row. Ours: `HSET items:<id> name .. score .. tag ..` to \
             the server with the module (write-behind, default settings: 2 workers, batch-size 500, batch-delay-ms 1). \
             Baseline: a single-row autocommit `INSERT INTO items ... VALUES (...)` of the same row straight to \
             Postgres on one connection (when one connection cannot keep up with the \
             schedule it simply runs as fast as it can; the achieved rates are in the notes).",
            thousands(cfg.rate),
            cfg.duration.as_secs_f64()
        ),
        format!(
            "Visibility is detected by a poller on its own Postgres connection that runs \
             `SELECT id FROM items WHERE id >= <lowest id not seen yet>` every {} µs and stamps each id the first time \
             it is returned; all stamps come from one monotonic clock in the benchmark process. Ours is the time from \
             the HSET reply to that stamp (the lag a writer sees after its write was acknowledged); the baseline is the \
             time from sending the INSERT to that stamp (the INSERT round trip, measured the same way). Both include \
             the poller's detection delay (up to one poll period plus one poll query, see notes).",
            cfg.poll_every.as_micros()
        ),
    ]
}

fn lag_row(name: &str, ours: Duration, base: Duration, target: Option<Duration>) -> Row {
    let ratio = format!("{:.1}×", ours.as_secs_f64() / base.as_secs_f64().max(1e-9));
    match target {
        Some(t) => Row {
            name: name.into(),
            ours: ms(ours),
            baseline: ms(base),
            ratio,
            target: format!("≤ {}", ms(t)),
            met: Met::from(ours <= t),
        },
        None => Row::info(name, ms(ours), ms(base), ratio),
    }
}

fn rows(ours: &Run, base: &Run) -> Vec<Row> {
    let (o, b) = (&ours.from_reply, &base.from_send);
    vec![
        lag_row("p50 (ours: HSET reply → visible; baseline: INSERT send → visible)", o.p50, b.p50, None),
        lag_row(
            "p99 (ours: HSET reply → visible; baseline: INSERT send → visible)",
            o.p99,
            b.p99,
            Some(Duration::from_millis(10)),
        ),
        lag_row("max (ours: HSET reply → visible; baseline: INSERT send → visible)", o.max, b.max, None),
        Row::info(
            "client round trip p50 / p99 (HSET; INSERT)",
            format!("{} / {}", ms(ours.round_trip.p50), ms(ours.round_trip.p99)),
            format!("{} / {}", ms(base.round_trip.p50), ms(base.round_trip.p99)),
            "—".into(),
        ),
        Row::info(
            "send → visible p50 / p99",
            format!("{} / {}", ms(ours.from_send.p50), ms(ours.from_send.p99)),
            format!("{} / {}", ms(base.from_send.p50), ms(base.from_send.p99)),
            "—".into(),
        ),
    ]
}

fn run_note(what: &str, r: &Run) -> String {
    let achieved = per_second(r.written, r.elapsed);
    let poll = r.poll_time / (r.polls.max(1) as u32);
    format!(
        "{what}: {} rows written ({} achieved), {} failed, {} never seen; {} polls, mean poll query {}",
        thousands(r.written),
        rate(achieved),
        r.failures,
        r.missing,
        thousands(r.polls),
        ms(poll)
    )
}

fn notes(ours: &Run, base: &Run) -> Vec<String> {
    vec![run_note("module", ours), run_note("baseline", base)]
}
