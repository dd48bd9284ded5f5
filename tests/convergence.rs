//! Both stores end equal: random writers on a cache that holds half the rows
//! (a model check, with and without eviction and a Postgres outage), and readers
//! of Postgres (reload, listener) racing writers.

mod common;

use common::*;
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

const CLIENTS: usize = 8;
const ROWS: i32 = 1000;
/// Ids up to this carry counters and are never deleted; the others are deleted
/// and rewritten, each by one client only.
const COUNTED: i32 = 500;

fn model_sql() -> String {
    let counters: Vec<String> = (0..CLIENTS).map(|t| format!("c{t} bigint")).collect();
    let values: Vec<String> = (0..CLIENTS).map(|_| "100 + i".to_string()).collect();
    format!(
        "CREATE TABLE acc (id integer PRIMARY KEY, u text, f1 text, f2 text, {}); \
         INSERT INTO acc SELECT i, 'u' || i, 'a' || i, 'b' || i, {} FROM generate_series(1, {ROWS}) i",
        counters.join(", "),
        values.join(", ")
    )
}

const MODEL_MAPPING: &str = r#"{"mappings": [{"name": "acc", "table": "acc", "key_prefix": "acc:",
    "primary_key": "id", "mode": "write-behind"}]}"#;

/// What one client did to the rows it alone writes, and to its own counters.
#[derive(Default)]
struct ClientLog {
    /// Counter id → sum of this client's acknowledged increments.
    sums: BTreeMap<i32, i64>,
    /// Deletable id → its last acknowledged write: `None` a delete, else (f1, f2).
    last: BTreeMap<i32, Option<(String, String)>>,
    /// Deletable ids deleted at least once.
    deleted: BTreeSet<i32>,
}

/// What one acknowledged command means for the client's log.
enum Effect {
    Added(i32, i64),
    Wrote(i32, String, String),
    Deleted(i32),
    Shared,
}

fn run_client(port: u16, t: usize, ops: usize, pipelined: bool, progress: &AtomicUsize) -> ClientLog {
    let mut c = connect(port);
    let mut rng = rand::thread_rng();
    let mut log = ClientLog::default();
    let own: Vec<i32> = (COUNTED + 1..=ROWS).filter(|id| *id as usize % CLIENTS == t).collect();
    let round = if pipelined { 100 } else { 1 };
    let mut done = 0;
    while done < ops {
        let mut pipe = redis::pipe();
        let mut effects = Vec::new();
        for _ in 0..round {
            let effect = if rng.gen_bool(0.5) {
                let id = rng.gen_range(1..=COUNTED);
                let key = format!("acc:{id}");
                match rng.gen_range(0..20) {
                    0..=6 => {
                        pipe.cmd("HSET").arg(&key).arg("f1").arg(format!("x{}", rng.gen::<u16>())).arg("f2").arg(t);
                        Effect::Shared
                    }
                    7..=8 => {
                        pipe.cmd("HDEL").arg(&key).arg("f1");
                        Effect::Shared
                    }
                    _ => {
                        let delta = rng.gen_range(-5..10);
                        pipe.cmd("HINCRBY").arg(&key).arg(format!("c{t}")).arg(delta);
                        Effect::Added(id, delta)
                    }
                }
            } else {
                let id = own[rng.gen_range(0..own.len())];
                let key = format!("acc:{id}");
                if rng.gen_range(0..10) < 7 {
                    let (a, b) = (format!("y{}", rng.gen::<u16>()), format!("z{t}"));
                    pipe.cmd("HSET").arg(&key).arg("f1").arg(&a).arg("f2").arg(&b);
                    Effect::Wrote(id, a, b)
                } else {
                    pipe.cmd("DEL").arg(&key);
                    Effect::Deleted(id)
                }
            };
            effects.push(effect);
        }
        let acknowledged = pipe.query::<redis::Value>(&mut c);
        // Unpipelined under maxmemory a write may be refused (OOM): it was not
        // acknowledged, so it does not count.
        assert!(acknowledged.is_ok() || !pipelined, "pipeline failed: {acknowledged:?}");
        if acknowledged.is_ok() {
            for effect in effects {
                match effect {
                    Effect::Added(id, delta) => *log.sums.entry(id).or_default() += delta,
                    Effect::Wrote(id, a, b) => {
                        log.last.insert(id, Some((a, b)));
                    }
                    Effect::Deleted(id) => {
                        log.last.insert(id, None);
                        log.deleted.insert(id);
                    }
                    Effect::Shared => {}
                }
            }
        }
        done += round;
        progress.fetch_add(round, Ordering::Relaxed);
    }
    log
}

/// Every row of Postgres: id → column → text.
fn pg_rows(db: &TestDb) -> BTreeMap<i32, BTreeMap<String, Option<String>>> {
    let mut cols = vec!["u".to_string(), "f1".to_string(), "f2".to_string()];
    cols.extend((0..CLIENTS).map(|t| format!("c{t}")));
    let select: Vec<String> = cols.iter().map(|c| format!("{c}::text")).collect();
    let sql = format!("SELECT id, {} FROM acc", select.join(", "));
    db.client()
        .query(&sql, &[])
        .expect("read acc")
        .iter()
        .map(|r| (r.get(0), cols.iter().enumerate().map(|(i, c)| (c.clone(), r.get(i + 1))).collect()))
        .collect()
}

/// Runs the model: loads the even rows into Redis, lets the clients write, and
/// checks every row against what they were told. `outage` stops Postgres for
/// the first half of the writes; `headroom` sets `maxmemory` to that many bytes
/// above what the loaded data uses, so that the writes evict.
fn model_check(
    ops: usize,
    pipelined: bool,
    outage: Option<&PrivatePg>,
    headroom: Option<u64>,
    db: &TestDb,
    server: &Server,
) {
    let mut c = server.conn();
    eventually("schema checked", || status(&mut c, "acc")["schema"] == "ok");
    for (id, cols) in pg_rows(db) {
        if id % 2 == 0 {
            let mut cmd = redis::cmd("HSET");
            cmd.arg(format!("acc:{id}"));
            for (col, v) in cols {
                cmd.arg(col).arg(v.unwrap_or_default());
            }
            let _: i64 = cmd.query(&mut c).unwrap();
        }
    }
    sync_wait(&mut c);
    if let Some(headroom) = headroom {
        let used = info_number(&mut c, "memory", "used_memory");
        let _: () = redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(used + headroom).query(&mut c).unwrap();
    }
    if let Some(pg) = outage {
        pg.down();
    }
    let progress = Arc::new(AtomicUsize::new(0));
    let per_client = ops / CLIENTS;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|t| {
            let (port, progress) = (server.port, progress.clone());
            std::thread::spawn(move || run_client(port, t, per_client, pipelined, &progress))
        })
        .collect();
    if let Some(pg) = outage {
        while progress.load(Ordering::Relaxed) < ops / 2 {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        pg.up();
    }
    let logs: Vec<ClientLog> = clients.into_iter().map(|h| h.join().expect("client")).collect();
    sync_wait(&mut c);
    assert_eq!(status(&mut c, "acc")["failed"], "0");

    let pg = pg_rows(db);
    for id in 1..=ROWS {
        let key = format!("acc:{id}");
        let cached = hgetall(&mut c, &key);
        let row = pg.get(&id);
        // Whatever Redis holds of a row, Postgres holds too.
        if !cached.is_empty() {
            let row = row.unwrap_or_else(|| panic!("{key} is cached but has no row"));
            for (field, value) in &cached {
                assert_eq!(row[field].as_deref(), Some(value.as_str()), "{key} field {field}");
            }
        }
        if id <= COUNTED {
            let row = row.unwrap_or_else(|| panic!("row {id} was never deleted"));
            assert_eq!(row["u"].as_deref(), Some(format!("u{id}").as_str()), "untouched column of {id}");
            for (t, log) in logs.iter().enumerate() {
                let expected = 100 + id as i64 + log.sums.get(&id).copied().unwrap_or(0);
                assert_eq!(row[&format!("c{t}")], Some(expected.to_string()), "counter c{t} of {id}");
            }
            continue;
        }
        let log = &logs[id as usize % CLIENTS];
        match log.last.get(&id) {
            None => {
                let row = row.unwrap_or_else(|| panic!("untouched row {id} is gone"));
                assert_eq!(row["f1"], Some(format!("a{id}")), "untouched row {id}");
            }
            Some(None) => {
                assert!(row.is_none(), "row {id} was deleted last");
                assert!(cached.is_empty(), "{key} was deleted last");
            }
            Some(Some((a, b))) => {
                let row = row.unwrap_or_else(|| panic!("row {id} was written last"));
                assert_eq!(
                    (row["f1"].as_deref(), row["f2"].as_deref()),
                    (Some(a.as_str()), Some(b.as_str())),
                    "row {id}"
                );
                let u = if log.deleted.contains(&id) { None } else { Some(format!("u{id}")) };
                assert_eq!(row["u"], u, "untouched column of {id}");
            }
        }
    }
}

#[test]
fn random_writes_on_a_half_cold_cache_end_equal() {
    let db = test_db(&model_sql());
    let server = Server::with_mapping(&db, MODEL_MAPPING, &[("workers", "4")], &[]);
    let ops = std::env::var("PGSYNC_STRESS_WRITES").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    model_check(ops, true, None, None, &db, &server);
}

#[test]
fn acknowledged_writes_survive_eviction_and_an_outage() {
    let pg = PrivatePg::start();
    let db = TestDb::on(&pg.admin_url(), &model_sql());
    let server = Server::with_mapping(
        &db,
        MODEL_MAPPING,
        &[("workers", "4"), ("retry-max-delay-ms", "200")],
        &["--maxmemory-policy", "allkeys-lru"],
    );
    let mut c = server.conn();
    let ops = std::env::var("PGSYNC_STRESS_WRITES").ok().and_then(|v| v.parse::<usize>().ok()).unwrap_or(200_000) / 5;
    // Little room beyond the loaded half: writes to the cold half evict.
    model_check(ops, false, Some(&pg), Some(100_000), &db, &server);
    let evicted = info_number(&mut c, "stats", "evicted_keys");
    assert!(evicted > 0, "the test must evict");
}

const LISTENED_MAPPING: &str = r#"{"mappings": [{"name": "acc", "table": "acc", "key_prefix": "acc:",
    "primary_key": "id", "mode": "write-behind", "listen": true}]}"#;

/// Postgres equals Redis on `f1`, `f2` for `ids`, and every row has its key.
fn stores_agree(db: &TestDb, c: &mut redis::Connection, ids: std::ops::RangeInclusive<i32>) -> bool {
    let pg = pg_rows(db);
    ids.clone().all(|id| {
        let cached = hgetall(c, &format!("acc:{id}"));
        let row = &pg[&id];
        !cached.is_empty() && ["f1", "f2"].iter().all(|f| cached.get(*f).map(String::as_str) == row[*f].as_deref())
    })
}

const WIDE_ROWS: i32 = 20_000;

#[test]
fn reload_with_flush_racing_writers_leaves_no_key_stale_or_missing() {
    // Many chunks, so that the reload reads rows long after its snapshot; writers
    // also create rows the reload has never seen.
    let sql = format!(
        "CREATE TABLE wide (id integer PRIMARY KEY, f1 text); \
         INSERT INTO wide SELECT i, 'p' || i FROM generate_series(1, {WIDE_ROWS}) i"
    );
    let db = test_db(&sql);
    let mapping = r#"{"mappings": [{"name": "wide", "table": "wide", "key_prefix": "wide:",
        "primary_key": "id", "mode": "write-behind"}]}"#;
    let server = Server::with_mapping(&db, mapping, &[("workers", "2")], &[]);
    let mut c = server.conn();
    eventually("schema checked", || status(&mut c, "wide")["schema"] == "ok");
    let _: i64 = redis::cmd("SYNC.RELOAD").query(&mut c).unwrap();
    let stop = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let (port, stop) = (server.port, stop.clone());
            std::thread::spawn(move || {
                let mut c = connect(port);
                let mut rng = rand::thread_rng();
                let mut n = 0;
                while stop.load(Ordering::Relaxed) == 0 {
                    let mut pipe = redis::pipe();
                    for _ in 0..50 {
                        n += 1;
                        let key = format!("wide:{}", rng.gen_range(1..=WIDE_ROWS + 2000));
                        pipe.cmd("HSET").arg(key).arg("f1").arg(format!("w{t}-{n}")).ignore();
                    }
                    let _: () = pipe.query(&mut c).expect("writes");
                }
            })
        })
        .collect();
    for _ in 0..6 {
        let _: i64 = redis::cmd("SYNC.RELOAD").arg("wide").arg("FLUSH").query(&mut c).unwrap();
    }
    stop.store(1, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    sync_wait(&mut c);
    let rows: BTreeMap<i32, String> =
        db.client().query("SELECT id, f1 FROM wide", &[]).unwrap().iter().map(|r| (r.get(0), r.get(1))).collect();
    let mut wrong = Vec::new();
    for id in 1..=WIDE_ROWS + 2000 {
        let cached = hgetall(&mut c, &format!("wide:{id}")).remove("f1");
        if cached.as_ref() != rows.get(&id) {
            wrong.push((id, cached, rows.get(&id).cloned()));
        }
    }
    assert!(wrong.is_empty(), "{} keys stale or missing, e.g. {:?}", wrong.len(), &wrong[..wrong.len().min(3)]);
}

#[test]
fn writes_in_both_stores_at_once_converge() {
    let db = test_db(&model_sql());
    let server = Server::with_mapping(&db, LISTENED_MAPPING, &[("workers", "2")], &[]);
    let mut c = server.conn();
    eventually("listening", || status(&mut c, "acc")["listener"] == "listening");
    let _: i64 = redis::cmd("SYNC.RELOAD").query(&mut c).unwrap();
    let hot = 1..=280;
    let port = server.port;
    let redis_writer = std::thread::spawn(move || {
        let mut c = connect(port);
        let mut rng = rand::thread_rng();
        for n in 0..3000 {
            let key = format!("acc:{}", rng.gen_range(1..=280));
            hset(&mut c, &key, &[("f1", &format!("r{n}")), ("f2", &format!("r{n}"))]);
        }
    });
    let url = db.url.clone();
    let pg_writer = std::thread::spawn(move || {
        let mut pg = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
        let mut rng = rand::thread_rng();
        for n in 0..1500 {
            let id: i32 = rng.gen_range(1..=280);
            pg.execute("UPDATE acc SET f1 = $1, f2 = $1 WHERE id = $2", &[&format!("p{n}"), &id]).expect("update");
        }
    });
    redis_writer.join().unwrap();
    pg_writer.join().unwrap();
    sync_wait(&mut c);
    eventually("both stores agree on every row", || stores_agree(&db, &mut c, hot.clone()));
}

/// Ends, every few milliseconds, whichever of the module's Postgres sessions on
/// `db` is running a statement, until `stop` is set, counting them in `killed`.
fn kill_active_sessions(
    db_url: String,
    stop: Arc<std::sync::atomic::AtomicBool>,
    killed: Arc<std::sync::atomic::AtomicI64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut client = postgres::Client::connect(&db_url, postgres::NoTls).expect("killer connection");
        while !stop.load(Ordering::Relaxed) {
            let n: i64 = client
                .query_one(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = \
                     'redis-pgsync' AND datname = current_database() AND state = 'active' AND pid <> pg_backend_pid()",
                    &[],
                )
                .map(|r| r.get(0))
                .unwrap_or(0);
            killed.fetch_add(n, Ordering::Relaxed);
            std::thread::sleep(std::time::Duration::from_millis(rand::thread_rng().gen_range(5..40)));
        }
    })
}

#[test]
fn increments_count_once_when_connections_die_mid_commit() {
    const KEYS: i32 = 100;
    const PER_CLIENT: usize = 10_000;
    let db = test_db("CREATE TABLE ctr (id integer PRIMARY KEY, n bigint)");
    let server = Server::with_mapping(&db, CTR_MAPPING, &[("retry-max-delay-ms", "50"), ("batch-delay-ms", "0")], &[]);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let killed = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let killer = kill_active_sessions(db.url.clone(), stop.clone(), killed.clone());
    let writers: Vec<_> = (0..2)
        .map(|_| {
            let (port, killed) = (server.port, killed.clone());
            std::thread::spawn(move || {
                let mut c = connect(port);
                let mut rng = rand::thread_rng();
                let mut written = 0;
                // A quick machine can write PER_CLIENT before the killer has
                // ended a session: go on until it has (within a bound).
                while written < PER_CLIENT || (killed.load(Ordering::Relaxed) == 0 && written < 50 * PER_CLIENT) {
                    let mut pipe = redis::pipe();
                    for _ in 0..100 {
                        pipe.cmd("HINCRBY").arg(format!("ctr:{}", rng.gen_range(1..=KEYS))).arg("n").arg(1).ignore();
                    }
                    let _: () = pipe.query(&mut c).unwrap_or_else(|e| panic!("after {written}: {e}"));
                    written += 100;
                }
                written
            })
        })
        .collect();
    let written: usize = writers.into_iter().map(|w| w.join().expect("writer")).sum();
    stop.store(true, Ordering::Relaxed);
    killer.join().expect("killer");
    let killed = killed.load(Ordering::Relaxed);
    assert!(killed > 0, "the test must end sessions while they write");
    let mut c = server.conn();
    sync_wait(&mut c);
    let total: i64 = db.client().query_one("SELECT coalesce(sum(n), 0)::bigint FROM ctr", &[]).unwrap().get(0);
    assert_eq!(total, written as i64, "every increment counted exactly once ({killed} sessions ended)");
    for id in 1..=KEYS {
        let pg: Option<i64> =
            db.client().query_opt("SELECT n FROM ctr WHERE id = $1", &[&id]).unwrap().map(|r| r.get(0));
        let redis: Option<i64> = redis::cmd("HGET").arg(format!("ctr:{id}")).arg("n").query(&mut c).unwrap();
        assert_eq!(redis, pg, "ctr:{id}");
    }
}

const CTR_MAPPING: &str = r#"{"mappings": [{"name": "ctr", "table": "ctr", "key_prefix": "ctr:", "primary_key": "id", "mode": "write-behind"}]}"#;

/// A server syncing `ctr` that aborts right after its first commit once `armed`
/// exists (the module's `PGSYNC_TEST_ABORT_AFTER_COMMIT` hook).
fn aborting_server(db: &TestDb, armed: &std::path::Path, args: &[&str]) -> Server {
    let file = write_mapping(CTR_MAPPING);
    let armed = armed.display().to_string();
    Server::start_with_env(
        &[("postgres-url", db.url.as_str()), ("mappings", file.as_str()), ("retry-max-delay-ms", "200")],
        args,
        &[("PGSYNC_TEST_ABORT_AFTER_COMMIT", armed.as_str())],
    )
}

fn pg_counter(db: &TestDb, id: i32) -> Option<i64> {
    db.client().query_opt("SELECT n FROM ctr WHERE id = $1", &[&id]).unwrap().map(|r| r.get(0))
}

#[test]
fn an_increment_committed_just_before_a_crash_or_a_failover_counts_once() {
    let db = test_db("CREATE TABLE ctr (id integer PRIMARY KEY, n bigint)");
    let dir = TempDir::new("pgsync_abort");
    let armed = dir.0.join("armed");

    // kill -9 between the commit and the clearing of the journal.
    let mut server = aborting_server(&db, &armed, &["--appendonly", "yes", "--appendfsync", "always"]);
    let mut c = server.conn();
    hset(&mut c, "ctr:2", &[("n", "1")]);
    sync_wait(&mut c);
    std::fs::write(&armed, b"").unwrap();
    let _: i64 = redis::cmd("HINCRBY").arg("ctr:1").arg("n").arg(5).query(&mut c).unwrap();
    let _: i64 = redis::cmd("HINCRBY").arg("ctr:2").arg("n").arg(5).query(&mut c).unwrap();
    server.wait_for_exit();
    assert!(!armed.exists(), "the hook fired");
    assert_eq!((pg_counter(&db, 1), pg_counter(&db, 2)), (Some(5), Some(6)), "committed before the crash");
    server.restart();
    let mut c = server.conn();
    let _: i64 = redis::cmd("HINCRBY").arg("ctr:1").arg("n").arg(2).query(&mut c).unwrap();
    sync_wait(&mut c);
    assert_eq!((pg_counter(&db, 1), pg_counter(&db, 2)), (Some(7), Some(6)), "each increment once");
    let redis: (i64, i64) = (hget_i64(&mut c, "ctr:1"), hget_i64(&mut c, "ctr:2"));
    assert_eq!(redis, (7, 6));

    // A replica promoted after its primary committed and died before clearing.
    let mut primary = aborting_server(&db, &armed, &[]);
    let replica = Server::start_with_env(
        &[("postgres-url", db.url.as_str()), ("mappings", &write_mapping(CTR_MAPPING)), ("retry-max-delay-ms", "200")],
        &["--replicaof", "127.0.0.1", &primary.port.to_string()],
        &[],
    );
    let mut r = replica.conn();
    eventually("replica in sync", || {
        let info: String = redis::cmd("INFO").arg("replication").query(&mut r).unwrap();
        info.contains("master_link_status:up")
    });
    let mut p = primary.conn();
    std::fs::write(&armed, b"").unwrap();
    let _: i64 = redis::cmd("HINCRBY").arg("ctr:3").arg("n").arg(5).query(&mut p).unwrap();
    primary.wait_for_exit();
    assert_eq!(pg_counter(&db, 3), Some(5), "committed before the primary died");
    let _: () = redis::cmd("REPLICAOF").arg("NO").arg("ONE").query(&mut r).unwrap();
    eventually("the promoted replica synced", || {
        let left: i64 = redis::cmd("SYNC.WAIT").arg(1000).query(&mut r).unwrap();
        left == 0 && status(&mut r, "ctr")["recovery"].starts_with("done")
    });
    assert_eq!(pg_counter(&db, 3), Some(5), "the promoted replica did not count it again");
    assert_eq!(hget_i64(&mut r, "ctr:3"), 5);
}

fn hget_i64(c: &mut redis::Connection, key: &str) -> i64 {
    redis::cmd("HGET").arg(key).arg("n").query(c).unwrap()
}

fn write_mapping(mapping: &str) -> String {
    let file = std::env::temp_dir().join(format!("{}.json", unique("pgsync_ctr")));
    std::fs::write(&file, mapping).expect("mapping file");
    file.display().to_string()
}
