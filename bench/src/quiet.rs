//! The machine may be shared (tests, builds): before each phase, wait until the
//! CPUs are mostly idle, watch how much CPU other processes take while it runs,
//! and say so in the report.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Busy and total jiffies of all CPUs, from the first line of `/proc/stat`.
fn cpu_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    if v.len() < 5 {
        return None;
    }
    let total: u64 = v.iter().take(8).sum();
    let idle = v[3] + v[4];
    Some((total - idle, total))
}

/// Fraction of CPU time (0..1, all CPUs) spent busy over `window`.
pub fn busy_over(window: Duration) -> Option<f64> {
    let (b0, t0) = cpu_jiffies()?;
    thread::sleep(window);
    let (b1, t1) = cpu_jiffies()?;
    Some((b1 - b0) as f64 / (t1 - t0).max(1) as f64)
}

/// Waiting for an idle machine is bounded over the whole run, so a machine that is
/// never idle does not stretch the run past its time budget.
const TOTAL_WAIT_BUDGET: Duration = Duration::from_secs(150);

/// Milliseconds of [`TOTAL_WAIT_BUDGET`] used so far.
static WAITED_MS: AtomicU64 = AtomicU64::new(0);

/// Waits up to `patience` (and what is left of the run's waiting budget) until the
/// CPUs are at most `threshold` busy over one second; returns the last measured
/// busy fraction and how long it waited.
pub fn wait_for_idle(threshold: f64, patience: Duration) -> (Option<f64>, Duration) {
    let used = Duration::from_millis(WAITED_MS.load(Ordering::Relaxed));
    let patience = patience.min(TOTAL_WAIT_BUDGET.saturating_sub(used));
    let start = Instant::now();
    loop {
        let busy = busy_over(Duration::from_secs(1));
        WAITED_MS.fetch_add(1000, Ordering::Relaxed);
        match busy {
            Some(b) if b > threshold && start.elapsed() < patience => {
                println!("  machine busy ({:.0}% CPU from other processes), waiting", b * 100.0);
            }
            _ => return (busy, start.elapsed()),
        }
    }
}

/// A note describing how idle the machine was before a phase.
pub fn note(busy: Option<f64>, waited: Duration, threshold: f64) -> String {
    match busy {
        Some(b) if b > threshold => format!(
            "the machine was still {:.0}% busy with other processes when this phase started (waited {:.0} s): \
             figures may be disturbed",
            b * 100.0,
            waited.as_secs_f64()
        ),
        Some(b) => format!(
            "CPU use by other processes just before this phase: {:.0}% (waited {:.0} s for it)",
            b * 100.0,
            waited.as_secs_f64()
        ),
        None => "could not read /proc/stat to check the machine was idle".into(),
    }
}

/// Busy fraction above which the machine does not count as idle.
pub const THRESHOLD: f64 = 0.15;

/// Waits (up to `patience`) for an idle machine; a warning when it never came.
pub fn settle(patience: Duration) -> Option<String> {
    let (busy, waited) = wait_for_idle(THRESHOLD, patience);
    match busy {
        Some(b) if b <= THRESHOLD => None,
        _ => Some(note(busy, waited, THRESHOLD)),
    }
}

/// Clock ticks per second of `/proc/<pid>/stat` times (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU ticks used so far by one process, and whether it is someone else's.
#[derive(Debug, Clone)]
struct Usage {
    comm: String,
    ticks: u64,
    foreign: bool,
}

/// Whether a process is not part of this benchmark: not the bench itself, not a
/// server it started, not a Postgres backend of this run's database. Postgres's
/// own background processes are shared and count as ours.
fn is_foreign(me: u32, ppid: u32, pid: u32, comm: &str) -> bool {
    if pid == me || ppid == me {
        return false;
    }
    if comm == "postgres" {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        let client = cmdline.contains("127.0.0.1(") || cmdline.contains("[local]");
        // The run's database is `scratch::unique("pgsync_test")`: pgsync_test_<our pid>_<n>.
        return client && !cmdline.contains(&format!(" pgsync_test_{me}_"));
    }
    true
}

/// One pass over `/proc`: the usage of every process.
fn scan(me: u32) -> HashMap<u32, Usage> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_string();
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let num = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
        let foreign = is_foreign(me, num(1) as u32, pid, &comm);
        out.insert(pid, Usage { ticks: num(11) + num(12), comm, foreign });
    }
    out
}

/// CPU ticks used so far by the benchmark's own processes (itself, the servers it
/// started, Postgres and the backends of its database), by pid.
pub struct OwnCpu(HashMap<u32, Usage>);

impl OwnCpu {
    /// Reads them now.
    pub fn now() -> OwnCpu {
        OwnCpu(scan(std::process::id()).into_iter().filter(|(_, u)| !u.foreign).collect())
    }

    /// CPU-seconds used since `before`, by command name (a process that ended
    /// meanwhile is not counted).
    pub fn since(&self, before: &OwnCpu) -> BTreeMap<String, f64> {
        let mut by_comm = BTreeMap::new();
        for (pid, u) in &self.0 {
            let delta = u.ticks.saturating_sub(before.0.get(pid).map_or(0, |b| b.ticks));
            *by_comm.entry(u.comm.clone()).or_insert(0.0) += delta as f64 / TICKS_PER_SECOND;
        }
        by_comm
    }
}

/// Watches, in the background, how much CPU other processes use.
pub struct Monitor {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<BTreeMap<String, f64>>,
    started: Instant,
}

impl Monitor {
    /// Starts sampling `/proc` four times a second.
    pub fn start() -> Monitor {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = thread::spawn(move || {
            let me = std::process::id();
            let mut by_comm = BTreeMap::new();
            let mut last = scan(me);
            while !flag.load(Ordering::Relaxed) {
                thread::sleep(Duration::from_millis(250));
                let now = scan(me);
                for (pid, u) in now.iter().filter(|(_, u)| u.foreign) {
                    let before = last.get(pid).map_or(0, |p| p.ticks);
                    let delta = u.ticks.saturating_sub(before) as f64 / TICKS_PER_SECOND;
                    if delta > 0.0 {
                        *by_comm.entry(u.comm.clone()).or_insert(0.0) += delta;
                    }
                }
                last = now;
            }
            by_comm
        });
        Monitor { stop, handle, started: Instant::now() }
    }

    /// Stops sampling; a note when other processes used a noticeable share of the
    /// CPUs meanwhile (more than 5% of the available CPU time, and at least half a
    /// CPU-second).
    pub fn finish(self, what: &str) -> Option<String> {
        self.stop.store(true, Ordering::Relaxed);
        let elapsed = self.started.elapsed().as_secs_f64();
        let by_comm = self.handle.join().unwrap_or_default();
        let total: f64 = by_comm.values().sum();
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
        let share = total / (elapsed * cpus).max(1e-9);
        if share <= 0.05 || total < 0.5 {
            return None;
        }
        let mut top: Vec<(String, f64)> = by_comm.into_iter().collect();
        top.sort_by(|a, b| b.1.total_cmp(&a.1));
        let top: Vec<String> = top.iter().take(4).map(|(c, s)| format!("{c} {s:.1} s")).collect();
        Some(format!(
            "**disturbed**: other processes used {:.0}% of the CPU time during {what} ({:.1} CPU-s in {:.0} s; top: {}); \
             its figures are less reliable than those of an idle machine",
            share * 100.0,
            total,
            elapsed,
            top.join(", ")
        ))
    }
}
