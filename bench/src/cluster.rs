//! Figure 8, Redis Cluster: figure 2's stream of HSETs written to a 3-primary
//! cluster (with and without a replica per primary) and to a single node, every
//! server with the module and the same per-node settings; the cluster's
//! throughput over the single node's, and how many Postgres connections the
//! module holds meanwhile (sampled from `pg_stat_activity`).

use crate::harness::{Db, Server, Setup};
use crate::report::{Row, Section};
use crate::stats::{median, ms, per_second, rate, thousands};
use crate::throughput::{self, Completion, ModuleRun, Router, Target};
use crate::workload::{Item, ITEMS_MAPPING};
use redis::cluster_routing::get_slot;
use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Sizes of the cluster phase.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// The stream, per-node settings and writers: figure 2's.
    pub stream: throughput::Config,
    /// Measurements of each setup; the table shows medians.
    pub rounds: usize,
}

/// How often the connection sampler asks `pg_stat_activity`.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// The cluster CLI: `valkey-cli`, else `redis-cli` (both build either server's cluster).
fn cli() -> &'static str {
    let found = |name: &str| Command::new(name).arg("--version").output().is_ok_and(|o| o.status.success());
    if found("valkey-cli") {
        "valkey-cli"
    } else {
        "redis-cli"
    }
}

/// A running cluster, killed on drop with its nodes.
struct Cluster {
    nodes: Vec<Server>,
    /// Indexes in `nodes` of the primaries, in the order writers' connections use.
    primaries: Vec<usize>,
    /// For every hash slot, the index in `primaries` of its owner.
    owner: Arc<Vec<u8>>,
}

impl Cluster {
    /// Starts 3 primaries with `replicas` replicas each, every node with the module
    /// set up for `cfg`, creates the cluster and waits until it is healthy.
    fn start(setup: &Setup, db: &Db, cfg: &throughput::Config, replicas: usize) -> Cluster {
        let settings = throughput::module_settings(cfg);
        let pairs: Vec<(&str, &str)> = settings.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let nodes: Vec<Server> = (0..3 * (1 + replicas))
            .map(|_| {
                let bus = crate::harness::free_port().to_string();
                // nodes.conf lands in the server's own temp dir (`--dir`).
                let args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-port", &bus];
                Server::with_module_args(setup, db, ITEMS_MAPPING, "items", &pairs, &args)
            })
            .collect();
        let mut create = vec!["--cluster".to_string(), "create".into()];
        create.extend(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)));
        create.extend(["--cluster-replicas".into(), replicas.to_string(), "--cluster-yes".into()]);
        match Command::new(cli()).args(&create).output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => panic!("{} --cluster create failed:\n{}", cli(), String::from_utf8_lossy(&out.stdout)),
            Err(e) => panic!("cannot run {}: {e}", cli()),
        }
        wait_healthy(&nodes);
        let slots = slot_ranges(&nodes[0]);
        let mut primaries: Vec<usize> = Vec::new();
        let mut owner = vec![0u8; 16384];
        for (first, last, port) in slots {
            let node = nodes.iter().position(|n| n.port == port).expect("a slot owner among the nodes");
            let index = primaries.iter().position(|&p| p == node).unwrap_or_else(|| {
                primaries.push(node);
                primaries.len() - 1
            });
            owner[first as usize..=last as usize].fill(index as u8);
        }
        Cluster { nodes, primaries, owner: Arc::new(owner) }
    }
}

impl Target for Cluster {
    fn writer_connections(&self) -> Vec<redis::Connection> {
        self.syncing()
    }

    fn router(&self) -> Router {
        let owner = Arc::clone(&self.owner);
        Arc::new(move |id| owner[get_slot(Item::key(id).as_bytes()) as usize] as usize)
    }

    fn syncing(&self) -> Vec<redis::Connection> {
        self.primaries.iter().map(|&i| self.nodes[i].conn()).collect()
    }
}

/// Waits (up to 60 s) until every node reports `cluster_state:ok`, knows every
/// node, and every replica's link to its primary is up.
fn wait_healthy(nodes: &[Server]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let known = format!("cluster_known_nodes:{}", nodes.len());
    for node in nodes {
        let mut c = node.conn();
        loop {
            let cluster: String = redis::cmd("CLUSTER").arg("INFO").query(&mut c).unwrap_or_default();
            let replication: String = redis::cmd("INFO").arg("replication").query(&mut c).unwrap_or_default();
            let linked = replication.contains("role:master") || replication.contains("master_link_status:up");
            if cluster.contains("cluster_state:ok") && cluster.contains(&known) && linked {
                break;
            }
            if Instant::now() > deadline {
                eprintln!("warning: cluster node {} not healthy after 60 s:\n{cluster}", node.port);
                break;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

/// `(first slot, last slot, port of its primary)` as `node` sees them.
fn slot_ranges(node: &Server) -> Vec<(u16, u16, u16)> {
    let ranges: Vec<redis::Value> = redis::cmd("CLUSTER").arg("SLOTS").query(&mut node.conn()).expect("CLUSTER SLOTS");
    ranges
        .iter()
        .filter_map(|range| {
            let redis::Value::Array(items) = range else { return None };
            let redis::Value::Array(primary) = items.get(2)? else { return None };
            Some((
                redis::from_redis_value(items.first()?).ok()?,
                redis::from_redis_value(items.get(1)?).ok()?,
                redis::from_redis_value(primary.get(1)?).ok()?,
            ))
        })
        .collect()
}

/// The module's connections to the run's database, as `pg_stat_activity` shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Connections {
    /// The pool's (`application_name = 'redis-pgsync'`): workers, schema checks,
    /// reloads, read-through loads.
    pool: i64,
    /// Of those, running a statement at the time.
    active: i64,
    /// The listeners' (`redis-pgsync-listener`).
    listener: i64,
}

impl Connections {
    /// Counts them now; zero when Postgres cannot be asked.
    fn now(client: &mut postgres::Client) -> Connections {
        let sql = "SELECT count(*) FILTER (WHERE application_name = 'redis-pgsync'), \
                   count(*) FILTER (WHERE application_name = 'redis-pgsync' AND state = 'active'), \
                   count(*) FILTER (WHERE application_name = 'redis-pgsync-listener') \
                   FROM pg_stat_activity WHERE datname = current_database()";
        client
            .query_one(sql, &[])
            .map(|r| Connections { pool: r.get(0), active: r.get(1), listener: r.get(2) })
            .unwrap_or_default()
    }

    fn max(self, other: Connections) -> Connections {
        Connections {
            pool: self.pool.max(other.pool),
            active: self.active.max(other.active),
            listener: self.listener.max(other.listener),
        }
    }

    fn total(self) -> i64 {
        self.pool + self.listener
    }
}

/// A thread counting the module's connections every [`SAMPLE_EVERY`], keeping the peak.
struct Sampler {
    stop: Arc<AtomicBool>,
    handle: thread::JoinHandle<Connections>,
}

impl Sampler {
    fn start(db: &Db) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let mut client = db.client();
        let stopped = Arc::clone(&stop);
        let handle = thread::spawn(move || {
            let mut peak = Connections::default();
            while !stopped.load(Ordering::Relaxed) {
                peak = peak.max(Connections::now(&mut client));
                thread::sleep(SAMPLE_EVERY);
            }
            peak
        });
        Sampler { stop, handle }
    }

    fn finish(self) -> Connections {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or_default()
    }
}

/// One measured run: the module run, the peak of the module's connections during
/// it, and the connections held once the servers were up, before the first write.
struct Measured {
    run: ModuleRun,
    peak: Connections,
    started: Connections,
}

/// Runs the stream on what `start` starts, sampling connections all along.
fn measure<T: Target>(db: &Db, cfg: &throughput::Config, start: impl FnOnce() -> T) -> Measured {
    let sampler = Sampler::start(db);
    let mut started = Connections::default();
    let run = throughput::module_run(db, cfg, Completion::SyncWait, || {
        let target = start();
        started = Connections::now(&mut db.client());
        target
    });
    Measured { run, peak: sampler.finish(), started }
}

/// The setups compared, in the order each round runs them.
const SETUPS: [(&str, usize); 3] =
    [("single node", 0), ("cluster, 3 primaries + 3 replicas", 1), ("cluster, 3 primaries, no replicas", 0)];

/// Runs figure 8.
pub fn run(setup: &Setup, db: &Db, cfg: &Config) -> Section {
    println!("== 8. cluster");
    let s = &cfg.stream;
    let mut runs: Vec<Vec<Measured>> = SETUPS.iter().map(|_| Vec::new()).collect();
    for round in 0..cfg.rounds {
        for (i, (name, replicas)) in SETUPS.iter().enumerate() {
            let m = if i == 0 {
                measure(db, s, || throughput::single_node(setup, db, s))
            } else {
                measure(db, s, || Cluster::start(setup, db, s, *replicas))
            };
            println!(
                "  round {} {name}: landed {} ({}), peak connections {} ({} active), rows written {}",
                round + 1,
                ms(m.run.landed),
                rate(per_second(s.changes, m.run.landed)),
                m.peak.total(),
                m.peak.active,
                m.run.rows_written
            );
            runs[i].push(m);
        }
    }
    let want = s.expected_digest();
    let mut notes = Vec::new();
    for ((name, _), measured) in SETUPS.iter().zip(&runs) {
        for (round, m) in measured.iter().enumerate() {
            notes.extend(throughput::module_notes(&format!("{name}, round {}", round + 1), &m.run, want));
        }
    }
    notes.push(coalescing_note(s, &runs));
    notes.extend(sizing_notes(db, s));
    Section {
        title: "8. Redis Cluster: sync throughput and Postgres connections".into(),
        method: method(cfg),
        rows: rows(s, &runs),
        notes,
    }
}

fn method(cfg: &Config) -> Vec<String> {
    let s = &cfg.stream;
    vec![
        format!(
            "Figure 2's stream ({} HSETs over {} keys, {} passes, from {} writer threads) written to three setups, every \
             server loading the module with the write-behind `items` mapping and the same per-node settings \
             (`workers {}`, `batch-size {}`): a single node; a Redis Cluster of 3 primaries with one replica each \
             (`--cluster-replicas 1`, as a deployment runs it: 6 servers); the same cluster without replicas (3 servers). \
             Clusters are built with `{} --cluster create` on free ports (`--cluster-enabled yes`, `nodes.conf` in each \
             node's own directory). In the cluster each writer holds one connection per primary and sends every HSET to \
             its key's primary (slot map from `CLUSTER SLOTS`), pipelined {} deep per primary, so per-key order holds as \
             on the single node. Time runs from the first HSET until `SYNC.WAIT` has returned on every primary; the \
             table must then hold every key's last change (row count and sum of score, checked after every run).",
            thousands(s.changes),
            thousands(s.keys),
            s.changes / s.keys.max(1),
            s.writers,
            s.connections,
            s.batch,
            cli(),
            s.depth
        ),
        format!(
            "Postgres connections: a separate thread counts the module's backends in `pg_stat_activity` of the run's \
             database every {} ms, from before the servers start until they are gone: `application_name = \
             'redis-pgsync'` (the pool: workers, schema checks, reloads, read-through loads; `active` = running a \
             statement at that moment) and `redis-pgsync-listener` (none here: `items` does not listen). \
             {} round(s), rotating the three setups; rates are medians, connection counts the largest seen.",
            SAMPLE_EVERY.as_millis(),
            cfg.rounds
        ),
        "Everything runs on this machine's 2 CPUs: 3 or 6 servers, their module threads (2 workers each), the 4 \
         writers and Postgres share them. A cluster only adds CPU work here (more processes, the replication stream \
         to the replicas and the replicas applying it: the HSETs with their journal entries, and the primaries' \
         writes of each synced row's outcome), so a ratio below 1 is expected: the figure shows what sharding costs on one machine, not what 3 machines would gain."
            .into(),
    ]
}

/// Medians of a setup's runs: changes/s and elapsed time.
fn medians(cfg: &throughput::Config, runs: &[Measured]) -> (f64, Duration) {
    let rates: Vec<f64> = runs.iter().map(|m| per_second(cfg.changes, m.run.landed)).collect();
    let secs: Vec<f64> = runs.iter().map(|m| m.run.landed.as_secs_f64()).collect();
    (median(&rates), Duration::from_secs_f64(median(&secs)))
}

/// Mean CPU-seconds per run, by command name, largest first, with their total.
fn cpu(runs: &[Measured]) -> (String, f64) {
    let mut by_comm: BTreeMap<String, f64> = BTreeMap::new();
    for m in runs {
        for (comm, secs) in &m.run.cpu {
            *by_comm.entry(comm.clone()).or_insert(0.0) += secs / runs.len().max(1) as f64;
        }
    }
    let mut top: Vec<(String, f64)> = by_comm.into_iter().filter(|(_, s)| *s >= 0.05).collect();
    top.sort_by(|a, b| b.1.total_cmp(&a.1));
    let total = top.iter().map(|(_, s)| s).sum();
    let text: Vec<String> = top.iter().map(|(c, s)| format!("{c} {s:.1}")).collect();
    let per_row = total / mean_rows(runs).max(1.0) * 1e6;
    (format!("{} = {total:.1} CPU-s ({per_row:.0} µs per row written)", text.join(" + ")), total)
}

/// Mean rows written per run (`synced`).
fn mean_rows(runs: &[Measured]) -> f64 {
    runs.iter().map(|m| m.run.rows_written as f64).sum::<f64>() / runs.len().max(1) as f64
}

/// Why the cluster is slower here, in the run's own figures: how many changes
/// each setup coalesced into one row.
fn coalescing_note(cfg: &throughput::Config, runs: &[Vec<Measured>]) -> String {
    let per_row: Vec<String> = SETUPS
        .iter()
        .zip(runs)
        .map(|((name, _), r)| format!("{name} {:.1}", cfg.changes as f64 / mean_rows(r).max(1.0)))
        .collect();
    format!(
        "Changes coalesced into one written row (changes / rows written, mean): {}. A primary of the cluster takes a \
         third of the stream, so its workers keep up with it and a key is rarely still pending when its next change \
         arrives; the cluster therefore writes several times the rows the single node writes, each costing Postgres \
         and the module (the apply of the outcome, replicated to the replicas) about as much CPU as on the single node \
         (the CPU row above). On 2 CPUs that extra work, and with replicas 3 more servers applying the replication \
         stream, is what the cluster's lower rate is made of (`perf record -a` of this phase: the servers' main \
         threads spend their module time in the apply of written rows, `direct_write` and its replication, and in \
         capture; of cluster-specific work only the server's own routing of each command, `getNodeByQuery`, shows \
         up, at 0.3% of the samples).",
        per_row.join(", ")
    )
}

fn peak(runs: &[Measured]) -> Connections {
    runs.iter().fold(Connections::default(), |p, m| p.max(m.peak))
}

fn started(runs: &[Measured]) -> Connections {
    runs.iter().fold(Connections::default(), |p, m| p.max(m.started))
}

fn rows(cfg: &throughput::Config, runs: &[Vec<Measured>]) -> Vec<Row> {
    let (single_rate, single_time) = medians(cfg, &runs[0]);
    let single_peak = peak(&runs[0]);
    let per_node = cfg.connections;
    let ratio = |a: f64, b: f64| format!("{:.3}", a / b.max(1e-9));
    let mut rows = Vec::new();
    for (i, (name, replicas)) in SETUPS.iter().enumerate().skip(1) {
        let (r, t) = medians(cfg, &runs[i]);
        let p = peak(&runs[i]);
        let servers = 3 * (1 + replicas);
        rows.push(Row::info(
            &format!("{name}: changes/s, first HSET → SYNC.WAIT on every primary (ours) vs single node"),
            format!("{} ({})", rate(r), ms(t)),
            format!("{} ({})", rate(single_rate), ms(single_time)),
            ratio(r, single_rate),
        ));
        rows.push(Row::info(
            &format!("{name}: peak Postgres connections of the module ({servers} servers)"),
            format!("3 × {per_node} workers → peak {} ({} active)", p.total(), p.active),
            format!("{per_node} workers → peak {} ({} active)", single_peak.total(), single_peak.active),
            ratio(p.total() as f64, single_peak.total() as f64),
        ));
        let (ours_cpu, ours_total) = cpu(&runs[i]);
        let (single_cpu, single_total) = cpu(&runs[0]);
        rows.push(Row::info(
            &format!("{name}: CPU-seconds from the first HSET until landed, by process (mean of the runs)"),
            ours_cpu,
            single_cpu,
            ratio(ours_total, single_total),
        ));
        rows.push(Row::info(
            &format!("{name}: connections held once started, before the first write"),
            started(&runs[i]).total().to_string(),
            started(&runs[0]).total().to_string(),
            "—".into(),
        ));
    }
    let written = |m: &[Measured]| m.iter().map(|r| thousands(r.run.rows_written.max(0) as u64)).collect::<Vec<_>>();
    rows.push(Row::info(
        "rows written to Postgres per run (`synced`, summed over the primaries)",
        format!("with replicas {}; without {}", written(&runs[1]).join(", "), written(&runs[2]).join(", ")),
        written(&runs[0]).join(", "),
        "—".into(),
    ));
    rows
}

/// The sizing rule, what it predicts for this run, and this Postgres server's `max_connections`.
fn sizing_notes(db: &Db, cfg: &throughput::Config) -> Vec<String> {
    let show = |name: &str| {
        db.client().query_one(&format!("SHOW {name}"), &[]).map(|r| r.get::<_, String>(0)).unwrap_or_default()
    };
    let (max, reserved) = (show("max_connections"), show("superuser_reserved_connections"));
    let w = cfg.connections;
    vec![format!(
        "Sizing (docs/cluster.md, \"Postgres connections\"): each primary holds one pool connection per worker \
         (`pgsync.workers`, {w} here) for as long as the worker runs, plus at most one each, while they work, for the \
         schema checker, a `SYNC.RELOAD` and the read-through loader, and one for the listener when a mapping has \
         `\"listen\": true`; a replica writes nothing and its listener waits, but its schema check (and any \
         read-through miss it serves) takes a pool connection. A pool connection given back stays open, idle, for up \
         to 10 minutes (r2d2's idle timeout), and the pool never holds more than 66 (64 workers + 2). Steady, with \
         writes only: primaries × workers + replicas, here {w}, {} and {} + 3 = {} for the three setups (the peaks \
         above); at most: primaries × (workers + 3 + listener) + replicas × 2. Keep that under Postgres's \
         max_connections ({max} on this server, {reserved} of them reserved for superusers) minus the applications' \
         own connections.",
        3 * w,
        3 * w,
        3 * w + 3
    )]
}
