//! Figure 4, `SYNC.HSET` latency: a write-through write that replies once its row
//! is committed, against a direct single-row upsert round trip to Postgres.

use crate::harness::{Db, Server, Setup};
use crate::report::{Met, Row, Section};
use crate::stats::{ms, thousands, Latency};
use crate::workload::USERS_MAPPING;
use std::time::{Duration, Instant};

/// Sizes of the `SYNC.HSET` phase.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Timed calls per variant.
    pub calls: u64,
    /// Untimed calls before them.
    pub warmup: u64,
}

/// Direct upsert of one `users` row, every value bound as text and cast.
const DIRECT_UPSERT: &str = "INSERT INTO users (id, username, email, password_hash, first_name, last_name, \
     date_of_birth, score, created_at, updated_at) VALUES ($1::text::integer, $2, $3, $4, $5, $6, $7::text::date, \
     $8::text::integer, $9::text::timestamp, $10::text::timestamp) ON CONFLICT (id) DO UPDATE SET \
     username = EXCLUDED.username, email = EXCLUDED.email, password_hash = EXCLUDED.password_hash, \
     first_name = EXCLUDED.first_name, last_name = EXCLUDED.last_name, date_of_birth = EXCLUDED.date_of_birth, \
     score = EXCLUDED.score, created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at";

/// Column values of user `id` in the order of [`DIRECT_UPSERT`] (after the id).
fn user_values(id: u64) -> [String; 9] {
    [
        format!("user{id}"),
        format!("user{id}@example.com"),
        "d1e8a70b5ccab1dc2f56bbf7e99f064a660c08e361a35751b9c483c88943d082".into(),
        "Fulano".into(),
        "deTal".into(),
        "1981-01-01".into(),
        (id % 1_000_000).to_string(),
        "2024-06-21".into(),
        "2024-06-21".into(),
    ]
}

/// Hash fields of the users mapping, in the order of [`user_values`].
const USER_FIELDS: [&str; 9] =
    ["username", "email", "pwhash", "first", "last", "dob", "score", "created_at", "updated_at"];

/// Times `calls` sequential `call(id)` for ids from `first` after `warmup` untimed ones.
fn timed(cfg: &Config, first: u64, mut call: impl FnMut(u64) -> bool) -> (Latency, u64) {
    let mut failures = 0;
    for id in first..first + cfg.warmup {
        failures += u64::from(!call(id));
    }
    let mut samples = Vec::with_capacity(cfg.calls as usize);
    for id in first + cfg.warmup..first + cfg.warmup + cfg.calls {
        let t = Instant::now();
        failures += u64::from(!call(id));
        samples.push(t.elapsed());
    }
    (Latency::of(&mut samples), failures)
}

/// `SYNC.HSET users:<id> ...` for every id; false on an error reply.
fn sync_hset_call(conn: &mut redis::Connection, id: u64) -> bool {
    let mut cmd = redis::cmd("SYNC.HSET");
    cmd.arg(format!("users:{id}"));
    for (field, value) in USER_FIELDS.iter().zip(user_values(id)) {
        cmd.arg(*field).arg(value);
    }
    match cmd.query::<i64>(conn) {
        Ok(_) => true,
        Err(e) => {
            eprintln!("SYNC.HSET users:{id}: {e}");
            false
        }
    }
}

/// The direct round trip of one upsert.
fn direct(db: &Db, cfg: &Config) -> (Latency, u64) {
    let mut client = db.client();
    let statement = client.prepare(DIRECT_UPSERT).expect("prepare users upsert");
    timed(cfg, 2_000_000, |id| {
        let id_text = id.to_string();
        let values = user_values(id);
        let mut params: Vec<&(dyn postgres::types::ToSql + Sync)> = vec![&id_text];
        params.extend(values.iter().map(|v| v as &(dyn postgres::types::ToSql + Sync)));
        client.execute(&statement, &params).is_ok()
    })
}

/// Runs figure 4.
pub fn run(setup: &Setup, db: &Db, cfg: &Config) -> Section {
    println!("== 4. SYNC.HSET latency");
    let server = Server::with_module(setup, db, USERS_MAPPING, "users", &[]);
    let mut conn = server.conn();
    let (ours, f1) = timed(cfg, 1, |id| sync_hset_call(&mut conn, id));
    println!("  SYNC.HSET: p50 {} p99 {}", ms(ours.p50), ms(ours.p99));
    let set: redis::RedisResult<()> =
        redis::cmd("CONFIG").arg("SET").arg("pgsync.batch-delay-ms").arg(0).query(&mut conn);
    let (no_delay, f2) = timed(cfg, 1_000_000, |id| sync_hset_call(&mut conn, id));
    println!("  SYNC.HSET, batch-delay-ms 0: p50 {} p99 {}", ms(no_delay.p50), ms(no_delay.p99));
    drop(server);
    let (base, f3) = direct(db, cfg);
    println!("  direct upsert: p50 {} p99 {}", ms(base.p50), ms(base.p99));
    let mut notes = vec![format!(
        "{} timed calls per variant after {} untimed; failed calls: {f1} (default), {f2} (batch-delay-ms 0), {f3} (direct)",
        thousands(cfg.calls),
        thousands(cfg.warmup)
    )];
    if let Err(e) = set {
        notes.push(format!("CONFIG SET pgsync.batch-delay-ms 0 failed: {e}"));
    }
    Section { title: "4. SYNC.HSET latency".into(), method: method(), rows: rows(&ours, &no_delay, &base), notes }
}

fn method() -> Vec<String> {
    vec![
        "One connection, sequential calls, each a new row of the seed scenario's `users` table \
         (`examples/schema.sql`, write-through mapping `examples/pgsync.json`) with all nine fields. \
         Ours: `SYNC.HSET users:<id> username .. email .. pwhash .. first .. last .. dob .. score .. created_at .. updated_at ..`, \
         which replies once the row is committed; default settings (batch-delay-ms 1). \
         Baseline: one prepared `INSERT INTO users (...) VALUES (...) ON CONFLICT (id) DO UPDATE SET ...` of the same \
         values straight to Postgres, autocommit; the client-side round trip is timed for both."
            .into(),
        "An extra, informational row repeats ours after `CONFIG SET pgsync.batch-delay-ms 0` (a worker then takes a \
         batch as soon as a row is ready instead of lingering up to 1 ms for a fuller one)."
            .into(),
    ]
}

fn rows(ours: &Latency, no_delay: &Latency, base: &Latency) -> Vec<Row> {
    let diff = |a: Duration, b: Duration| {
        let d = a.as_secs_f64() - b.as_secs_f64();
        format!("{:+.3} ms ({:.2}×)", d * 1000.0, a.as_secs_f64() / b.as_secs_f64().max(1e-9))
    };
    let limit = base.p50 + Duration::from_micros(300);
    vec![
        Row {
            name: "p50".into(),
            ours: ms(ours.p50),
            baseline: ms(base.p50),
            ratio: diff(ours.p50, base.p50),
            target: "≤ direct + 0.300 ms".into(),
            met: Met::from(ours.p50 <= limit),
        },
        Row::info("p99", ms(ours.p99), ms(base.p99), diff(ours.p99, base.p99)),
        Row::info("mean", ms(ours.mean), ms(base.mean), diff(ours.mean, base.mean)),
        Row::info(
            "p50 with batch-delay-ms 0 (not the default)",
            ms(no_delay.p50),
            ms(base.p50),
            diff(no_delay.p50, base.p50),
        ),
        Row::info(
            "p99 with batch-delay-ms 0 (not the default)",
            ms(no_delay.p99),
            ms(base.p99),
            diff(no_delay.p99, base.p99),
        ),
    ]
}
