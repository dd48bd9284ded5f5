//! Figure 7, read-through: `HGETALL` of rows Redis does not hold, loaded from
//! Postgres on the miss, against a direct `SELECT` by key; and `HGETALL` of rows
//! Redis holds (hits), with a `read_through` mapping covering every key, against
//! the same server binary without the module.

use crate::harness::{self, Db, DbExt, Server, Setup};
use crate::load::{self, CommandOf};
use crate::quiet;
use crate::report::{Met, Row, Section};
use crate::stats::{median, ms, per_second, rate, thousands, Latency};
use crate::workload::RESET_ITEMS;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Sizes of the read-through phase.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Rows in `items` (and keys read).
    pub rows: u64,
    /// Timed misses (and direct SELECTs), one connection, sequential.
    pub misses: u64,
    /// Client connections of the hit load.
    pub clients: usize,
    /// HGETALLs of the unpipelined hit load.
    pub hits_unpipelined: u64,
    /// HGETALLs of the pipelined hit load.
    pub hits_pipelined: u64,
    /// Pipeline depth of the pipelined hit load.
    pub depth: usize,
    /// Measurements of each server per hit variant (alternating order).
    pub rounds: usize,
}

/// The write-behind `items` mapping, reading through.
const READ_THROUGH_MAPPING: &str = r#"{"mappings": [{"name": "items", "table": "items", "key_prefix": "items:",
    "primary_key": "id", "mode": "write-behind", "read_through": true,
    "fields": {"name": "name", "score": "score", "tag": "tag"}}]}"#;

/// The same row shape as the module reads, by key.
const SELECT_BY_KEY: &str = "SELECT id::text, name, score::text, tag FROM items WHERE id = $1::text::integer";

fn fill_items(db: &Db, rows: u64) {
    db.exec(RESET_ITEMS);
    db.exec(&format!(
        "INSERT INTO items SELECT i, 'item-' || i, i, 'tag-' || (i % 97) FROM generate_series(1, {rows}) i; ANALYZE items"
    ));
    harness::checkpoint(db);
}

/// Times `calls` sequential calls of `call(id)` over distinct ids from 1.
fn timed(calls: u64, mut call: impl FnMut(u64) -> bool) -> (Latency, u64) {
    let mut samples = Vec::with_capacity(calls as usize);
    let mut failures = 0;
    for id in 1..=calls {
        let t = Instant::now();
        failures += u64::from(!call(id));
        samples.push(t.elapsed());
    }
    (Latency::of(&mut samples), failures)
}

/// Misses: every `HGETALL items:<id>` finds no key and loads the row.
fn misses(setup: &Setup, db: &Db, cfg: &Config) -> (Latency, Latency, Vec<String>) {
    let server = Server::with_module(setup, db, READ_THROUGH_MAPPING, "items", &[]);
    let mut c = server.conn();
    let (ours, f1) = timed(cfg.misses, |id| {
        let row: redis::RedisResult<Vec<String>> = redis::cmd("HGETALL").arg(format!("items:{id}")).query(&mut c);
        row.is_ok_and(|r| r.len() == 6)
    });
    let loads = harness::status_int(&mut c, "items", "read_loads");
    drop(server);
    let mut client = db.client();
    let statement = client.prepare(SELECT_BY_KEY).expect("prepare select");
    let (base, f2) =
        timed(cfg.misses, |id| client.query_opt(&statement, &[&id.to_string()]).is_ok_and(|r| r.is_some()));
    let notes = vec![format!(
        "{} misses, each a row Redis did not hold, {loads} loader queries; failed or wrong: {f1} (ours), {f2} (direct)",
        thousands(cfg.misses)
    )];
    (ours, base, notes)
}

/// Random-looking reads of the `rows` keys: `HGETALL items:<seq * 7919 % rows + 1>`.
fn hgetalls(rows: u64) -> CommandOf {
    Arc::new(move |seq| {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(format!("items:{}", seq.wrapping_mul(7919) % rows + 1));
        cmd
    })
}

/// A server holding every row: the module's loaded by `SYNC.RELOAD`, the plain
/// one by HSETs of the same values.
fn warm_server(setup: &Setup, db: &Db, with_module: bool, rows: u64) -> Server {
    if with_module {
        let server = Server::with_module(setup, db, READ_THROUGH_MAPPING, "items", &[]);
        let _: redis::RedisResult<i64> = redis::cmd("SYNC.RELOAD").query(&mut server.conn());
        return server;
    }
    let server = Server::plain(&setup.server_bin);
    let mut c = server.conn();
    for chunk in (1..=rows).collect::<Vec<_>>().chunks(1000) {
        let mut pipe = redis::pipe();
        for id in chunk {
            pipe.cmd("HSET")
                .arg(format!("items:{id}"))
                .arg("name")
                .arg(format!("item-{id}"))
                .arg("score")
                .arg(id)
                .arg("tag")
                .arg(format!("tag-{}", id % 97))
                .ignore();
        }
        let _: redis::RedisResult<()> = pipe.query(&mut c);
    }
    server
}

/// Hits at one depth: rounds alternating which server goes first; medians.
fn hits(setup: &Setup, db: &Db, cfg: &Config, total: u64, depth: usize, notes: &mut Vec<String>) -> Row {
    let mut ops: [Vec<f64>; 2] = Default::default();
    for round in 0..cfg.rounds {
        for with_module in if round % 2 == 0 { [false, true] } else { [true, false] } {
            let busy = quiet::settle(Duration::from_secs(60));
            let server = warm_server(setup, db, with_module, cfg.rows);
            let keys: i64 = redis::cmd("DBSIZE").query(&mut server.conn()).unwrap_or(0);
            load::run(&server, cfg.clients, total / 20, depth, &hgetalls(cfg.rows));
            let monitor = quiet::Monitor::start();
            let run = load::run(&server, cfg.clients, total, depth, &hgetalls(cfg.rows));
            let label = if with_module { "with module" } else { "without module" };
            if let Some(b) = busy.or(monitor.finish("this measurement")) {
                notes.push(format!("depth {depth} round {round} {label}: {b}"));
            }
            if run.errors > 0 || keys != cfg.rows as i64 {
                notes.push(format!("depth {depth} {label}: {} errors, {keys} keys held", run.errors));
            }
            let per_s = per_second(run.ops - run.errors, run.elapsed);
            println!("  hits depth {depth} round {round} {label}: {}", rate(per_s));
            ops[usize::from(with_module)].push(per_s);
        }
    }
    let list = |v: &[f64]| v.iter().map(|x| rate(*x)).collect::<Vec<_>>().join(", ");
    notes.push(format!("depth {depth}: rounds without module: {}; with module: {}", list(&ops[0]), list(&ops[1])));
    let (base, ours) = (median(&ops[0]), median(&ops[1]));
    let ratio = ours / base.max(1e-9);
    let shape = if depth == 1 { "unpipelined".to_string() } else { format!("pipelined {depth} deep") };
    Row {
        name: format!("hits: HGETALL ops/s, {} connections, {shape}", cfg.clients),
        ours: rate(ours),
        baseline: rate(base),
        ratio: format!("{ratio:.3}"),
        target: "≥ 0.95".into(),
        met: Met::from(ratio >= 0.95),
    }
}

/// Runs figure 7.
pub fn run(setup: &Setup, db: &Db, cfg: &Config) -> Section {
    println!("== 7. read-through");
    fill_items(db, cfg.rows);
    let (ours, base, mut notes) = misses(setup, db, cfg);
    println!(
        "  miss HGETALL: p50 {} p99 {}; direct SELECT: p50 {} p99 {}",
        ms(ours.p50),
        ms(ours.p99),
        ms(base.p50),
        ms(base.p99)
    );
    let diff = |a: Duration, b: Duration| {
        format!(
            "{:+.3} ms ({:.2}×)",
            (a.as_secs_f64() - b.as_secs_f64()) * 1000.0,
            a.as_secs_f64() / b.as_secs_f64().max(1e-9)
        )
    };
    let mut rows = vec![
        Row::info("misses: HGETALL p50", ms(ours.p50), ms(base.p50), diff(ours.p50, base.p50)),
        Row::info("misses: HGETALL p99", ms(ours.p99), ms(base.p99), diff(ours.p99, base.p99)),
    ];
    rows.push(hits(setup, db, cfg, cfg.hits_unpipelined, 1, &mut notes));
    rows.push(hits(setup, db, cfg, cfg.hits_pipelined, cfg.depth, &mut notes));
    Section { title: "7. Read-through (HGETALL on misses and on hits)".into(), method: method(cfg), rows, notes }
}

fn method(cfg: &Config) -> Vec<String> {
    vec![
        format!(
            "`items` holds {} rows. **Misses**: a server with the module and a write-behind `items` mapping with \
             `\"read_through\": true`, empty at the start; one connection sends {} sequential \
             `HGETALL items:<id>` of distinct ids, each a miss that blocks the client while the loader reads the \
             row and writes it into Redis. Baseline: the same {} reads as a prepared \
             `SELECT id::text, name, score::text, tag FROM items WHERE id = $1` straight to Postgres. \
             Client-side round trips are timed.",
            thousands(cfg.rows),
            thousands(cfg.misses),
            thousands(cfg.misses)
        ),
        format!(
            "**Hits**: every row cached (the module's server by `SYNC.RELOAD`, the plain server by HSETs of the same \
             values); {} client threads send `HGETALL` of keys spread over all rows, {} unpipelined and {} pipelined \
             {} deep, after an untimed warm-up of 5%. Ours: the server with the module (the command filter checks \
             each read of a mapped key and lets a hit run as it is); baseline: the same server binary without the \
             module. {} measurement(s) per server, alternating which goes first; medians.",
            cfg.clients,
            thousands(cfg.hits_unpipelined),
            thousands(cfg.hits_pipelined),
            cfg.depth,
            cfg.rounds
        ),
    ]
}
