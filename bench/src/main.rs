//! Benchmarks of the redis-pgsync module. Starts its own servers (with and without
//! the module) and its own Postgres database, measures each figure together with a
//! baseline on the same machine, prints the results and writes them as Markdown.
//!
//! Usage: `pgsync-bench --module <libredis_pgsync.so> [--server <bin>] [--pg <admin url>]
//! [--out BENCHMARKS.md] [--commit <text>] [--quick] [--phases 1,2,3,4,5,6,7,8,9,10,11]
//! [--module-before <libredis_pgsync.so>]` (figure 9's baseline: another build of the module)

mod capture;
mod catch_up;
mod cluster;
mod harness;
mod lag;
mod load;
mod logical;
mod pending;
#[path = "../../tests/common/private_pg.rs"]
#[allow(dead_code)]
mod private_pg;
mod probe;
mod quiet;
mod read_through;
mod reload;
mod report;
#[path = "../../tests/common/scratch.rs"]
mod scratch;
mod stats;
mod sync_hset;
mod throughput;
mod workload;

use harness::{Db, Setup};
use report::{Machine, Report, Section};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Command-line options.
struct Options {
    setup: Setup,
    out: PathBuf,
    commit: Option<String>,
    quick: bool,
    phases: Vec<u32>,
    /// The module build figure 9 compares against.
    module_before: Option<PathBuf>,
}

fn usage() -> ! {
    eprintln!(
        "usage: pgsync-bench --module <libredis_pgsync.so> [--server <bin>] [--pg <admin url>] \
         [--out <file.md>] [--commit <text>] [--quick] [--phases 1,2,3,4,5,6,7,8,9,10,11] \
         [--module-before <libredis_pgsync.so>]"
    );
    std::process::exit(2)
}

fn parse_args() -> Options {
    let mut module = None;
    let mut server_bin = "valkey-server".to_string();
    let mut pg_admin = "postgres://postgres@127.0.0.1:5432/postgres".to_string();
    let mut out = PathBuf::from("BENCHMARKS.md");
    let (mut commit, mut quick, mut phases) = (None, false, vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
    let mut module_before = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match arg.as_str() {
            "--module" => module = Some(PathBuf::from(value())),
            "--server" => server_bin = value(),
            "--pg" => pg_admin = value(),
            "--out" => out = PathBuf::from(value()),
            "--commit" => commit = Some(value()),
            "--quick" => quick = true,
            "--module-before" => module_before = Some(PathBuf::from(value())),
            "--phases" => phases = value().split(',').filter_map(|p| p.trim().parse().ok()).collect(),
            _ => usage(),
        }
    }
    let module = module.unwrap_or_else(|| usage());
    if !module.is_file() {
        eprintln!("module {} does not exist: build it first", module.display());
        std::process::exit(2);
    }
    Options {
        setup: Setup { module: module.canonicalize().unwrap_or(module), server_bin, pg_admin },
        out,
        commit,
        quick,
        phases,
        module_before,
    }
}

/// The sizes of every phase: the full run, or a quick smoke run.
struct Sizes {
    capture: capture::Config,
    throughput: throughput::Config,
    lag: lag::Config,
    sync_hset: sync_hset::Config,
    reload: reload::Config,
    pending: pending::Config,
    read_through: read_through::Config,
    cluster: cluster::Config,
    catch_up: catch_up::Config,
    logical: logical::Config,
}

impl Sizes {
    fn new(quick: bool) -> Sizes {
        let scale = if quick { 10 } else { 1 };
        let throughput = throughput::Config {
            changes: 500_000 / scale,
            keys: 100_000 / scale,
            writers: 4,
            depth: 64,
            batch: 500,
            connections: 2,
        };
        let catch_up = catch_up::Config { rows: 1_000_000 / scale, changed: 100, ping_every: Duration::from_millis(1) };
        Sizes {
            capture: capture::Config {
                clients: 50,
                ops_unpipelined: 200_000 / scale,
                ops_pipelined: 800_000 / scale,
                depth: 16,
                keys: 100_000,
                rounds: if quick { 1 } else { 3 },
            },
            throughput,
            lag: lag::Config {
                rate: 10_000,
                duration: Duration::from_secs(if quick { 2 } else { 10 }),
                poll_every: Duration::from_micros(500),
            },
            sync_hset: sync_hset::Config { calls: 2_000 / scale, warmup: 100 },
            reload: reload::Config {
                rows: 1_000_000 / scale,
                rounds: if quick { 1 } else { 3 },
                ping_every: Duration::from_millis(1),
            },
            pending: pending::Config { rows: 1_000_000 / scale, ping_every: Duration::from_millis(1) },
            read_through: read_through::Config {
                rows: 100_000 / scale,
                misses: 5_000 / scale,
                clients: 50,
                hits_unpipelined: 200_000 / scale,
                hits_pipelined: 800_000 / scale,
                depth: 16,
                rounds: if quick { 1 } else { 3 },
            },
            cluster: cluster::Config { stream: throughput, rounds: if quick { 1 } else { 3 } },
            catch_up,
            logical: logical::Config {
                catch_up,
                bulk: 200_000 / scale,
                lag: lag::Config {
                    rate: 5_000,
                    duration: Duration::from_secs(if quick { 2 } else { 10 }),
                    poll_every: Duration::from_millis(1),
                },
                lag_low: 1_000,
                clients: 8,
                commit_for: Duration::from_secs(if quick { 3 } else { 10 }),
            },
        }
    }
}

fn run_phases(opts: &Options, sizes: &Sizes, db: &Db) -> Vec<Section> {
    let mut sections = Vec::new();
    for phase in &opts.phases {
        let settled = quiet::wait_for_idle(quiet::THRESHOLD, Duration::from_secs(180));
        let monitor = quiet::Monitor::start();
        let mut section = match phase {
            1 => capture::run(&opts.setup, db, &sizes.capture),
            2 => throughput::run(&opts.setup, db, &sizes.throughput),
            3 => lag::run(&opts.setup, db, &sizes.lag),
            4 => sync_hset::run(&opts.setup, db, &sizes.sync_hset),
            5 => reload::run(&opts.setup, &sizes.reload),
            6 => pending::run(&opts.setup, &sizes.pending),
            7 => read_through::run(&opts.setup, db, &sizes.read_through),
            8 => cluster::run(&opts.setup, db, &sizes.cluster),
            9 => catch_up::run(&opts.setup, opts.module_before.as_deref(), &sizes.catch_up),
            10 => capture::run_json(&opts.setup, db, &sizes.capture),
            11 => logical::run(&opts.setup, &sizes.logical),
            _ => continue,
        };
        let (busy, waited) = settled;
        section.notes.push(quiet::note(busy, waited, quiet::THRESHOLD));
        section.notes.extend(monitor.finish("this phase"));
        report::print_section(&section);
        sections.push(section);
    }
    sections
}

fn run_facts(opts: &Options, elapsed: Duration) -> Vec<(String, String)> {
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let mut facts = vec![
        ("date".to_string(), date),
        ("server binary".into(), format!("`{}`", opts.setup.server_bin)),
        ("module".into(), format!("`{}`", opts.setup.module.display())),
        ("bench run time".into(), format!("{:.0} s", elapsed.as_secs_f64())),
    ];
    if let Some(c) = &opts.commit {
        facts.insert(1, ("module commit".into(), c.clone()));
    }
    if opts.quick {
        facts.push(("sizes".into(), "**quick smoke run (--quick): sizes divided by 10**".into()));
    }
    facts
}

fn main() {
    let opts = parse_args();
    let started = Instant::now();
    let machine = Machine::describe(&opts.setup.server_bin, &opts.setup.pg_admin);
    println!("pgsync-bench: {} on {} CPUs, {}", machine.server, machine.cpus, machine.postgres);
    let sizes = Sizes::new(opts.quick);
    let db = Db::on(&opts.setup.pg_admin, workload::SCHEMA_SQL);
    let sections = run_phases(&opts, &sizes, &db);
    drop(db);
    let report = Report { machine, run: run_facts(&opts, started.elapsed()), sections };
    report.print();
    match std::fs::write(&opts.out, report.markdown()) {
        Ok(()) => println!("\nwrote {}", opts.out.display()),
        Err(e) => eprintln!("cannot write {}: {e}", opts.out.display()),
    }
}
