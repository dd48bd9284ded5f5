//! The supervisor: loads the module (configs, mapping file, state), starts every
//! background thread (workers, schema checker, listener, reloads), follows the
//! server's cron and role changes, and stops and joins its threads at shutdown.
//!
//! Stopping: the shutdown event runs on the main thread, holding the Redis lock.
//! The threads are told to stop (`Queue::shut_down` wakes every one that sleeps or
//! waits for work), then joined against one deadline shared by all, [`STOP_WAIT`].
//! A thread may be unable to stop in time: a worker waiting on a Postgres server
//! that stopped answering, a reload in the middle of its table, or any thread
//! waiting for the Redis lock this very thread holds. Waiting for those without a
//! bound would hang the server's exit, so they are left to end with the process,
//! and the log names them. Nothing is lost by that: every change not yet settled
//! is still in the journal and is synced after the restart.

use crate::model::mapping::Mappings;
use crate::pg;
use crate::pipeline::runtime::{self, Runtime};
use crate::pipeline::schema_checker;
use crate::pipeline::worker;
use crate::redis::cluster;
use crate::redis::config;
use crate::redis::eviction;
use crate::server::filter;
use crate::redis::read_through::loads;
use crate::server::read_through;
use crate::redis::redis_io::{notice, warn};
use crate::redis::waiters;
use crate::sources::kafka;
use crate::sources::listen;
use crate::sources::loader;
use crate::sources::reload;
use redis_module::{Context, ContextFlags, RedisString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long the shutdown waits, in all, for the threads to end.
pub const STOP_WAIT: Duration = Duration::from_secs(2);

/// How often the shutdown looks whether the threads have ended.
const STOP_POLL: Duration = Duration::from_millis(10);

/// Every thread started and not joined yet.
static THREADS: Mutex<Vec<JoinHandle<()>>> = Mutex::new(Vec::new());

/// Which worker slots have a running worker.
static WORKER_SLOTS: Mutex<[bool; config::MAX_WORKERS as usize]> = Mutex::new([false; config::MAX_WORKERS as usize]);

/// A lock that a panic elsewhere left poisoned still guards plain data: keep going.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Loads the module: reads the configs and the mapping file, builds the state and
/// starts the threads. Postgres need not be reachable.
pub fn start(ctx: &Context, args: &[RedisString]) -> Result<(), String> {
    let args: Vec<String> = args.iter().map(|a| a.to_string_lossy()).collect();
    config::check_module_args(&args)?;
    let path = config::string(&config::MAPPINGS_PATH);
    if path.is_empty() {
        return Err("pgsync.mappings is not set (path of the JSON mapping file)".into());
    }
    let url = config::postgres_url(&args);
    if url.is_empty() {
        return Err("pgsync.postgres-url is not set".into());
    }
    let password = pg::connect::password_override(&config::string(&config::PASSWORD_FILE))?;
    let settings = pg::connect::settings(&url, password.as_deref())?;
    let mappings = Mappings::load(&path)?;
    crate::sources::documents::check_stores(ctx, &mappings)?;
    let replica = ctx.get_flags().contains(ContextFlags::SLAVE);
    cluster::detect(ctx);
    let names: Vec<&str> = mappings.all().iter().map(|m| m.name.as_str()).collect();
    let summary = format!("pgsync loaded: mappings [{}], Postgres {}", names.join(", "), pg::conninfo::redact(&url));
    let rt = runtime::install(Runtime::new(mappings, settings, replica))?;
    spawn("pgsync-schema", move || schema_checker::run(rt))?;
    spawn("pgsync-listener", move || listen::run(rt))?;
    if rt.mappings.any_read_through() || rt.mappings.all().iter().any(|m| m.fill_on_write) {
        let (tx, rx) = std::sync::mpsc::channel();
        loads::set_loader(tx);
        read_through::probe::init(ctx);
        spawn("pgsync-loader", move || loader::run(rt, rx))?;
    }
    kafka::start(rt, spawn)?;
    ensure_workers();
    filter::register(ctx)?;
    eviction::watch(ctx)?;
    std::panic::set_hook(Box::new(|info| warn(&format!("panic caught: {info}"))));
    notice(&summary);
    Ok(())
}

/// Starts a named thread under the panic guard, and keeps its handle to join it.
pub fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<(), String> {
    let handle = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            if let Err(panic) = crate::model::guard::catch(f) {
                warn(&format!("thread stopped by a bug: {panic}"));
            }
        })
        .map_err(|e| format!("cannot start the {name} thread: {e}"))?;
    let mut threads = lock(&THREADS);
    // Workers no longer wanted and finished reloads end on their own: joining them
    // here keeps the list as long as the threads that run.
    let (ended, running): (Vec<_>, Vec<_>) = std::mem::take(&mut *threads).into_iter().partition(|t| t.is_finished());
    *threads = running;
    threads.push(handle);
    drop(threads);
    for thread in ended {
        // Err means the thread panicked, and its guard has logged it already.
        let _ = thread.join();
    }
    Ok(())
}

/// Starts workers up to `pgsync.workers`; extra ones stop on their own.
pub fn ensure_workers() {
    let Some(rt) = runtime::get() else { return };
    let wanted = config::count(&config::WORKERS);
    let mut slots = lock(&WORKER_SLOTS);
    for slot in 0..wanted.min(slots.len()) {
        if !slots[slot] {
            let name = format!("pgsync-worker-{slot}");
            match spawn(&name, move || worker::run(rt, || keep_worker(rt, slot))) {
                Ok(()) => slots[slot] = true,
                Err(e) => warn(&e),
            }
        }
    }
}

/// Whether worker `slot` should keep running. A worker that stops frees its slot
/// under the slots' lock, so `ensure_workers` cannot take it for still running.
fn keep_worker(rt: &Runtime, slot: usize) -> bool {
    let mut slots = lock(&WORKER_SLOTS);
    let keep = slot < config::count(&config::WORKERS) && !rt.queue().is_shut_down();
    if !keep {
        slots[slot] = false;
    }
    keep
}

/// Once the server serves: starts the journal's recovery, and reloads an empty
/// dataset when `pgsync.reload-on-start` asks for it.
pub fn on_cron(ctx: &Context) {
    let Some(rt) = runtime::get() else { return };
    // Slots can change hands without a command here (gossip after a failover).
    cluster::invalidate();
    if rt.is_replica() || ctx.get_flags().contains(ContextFlags::LOADING) {
        return;
    }
    if !rt.dirty.recovery().is_done() && !RECOVERING.swap(true, Ordering::SeqCst) {
        recovery_tick(ctx, ());
    }
    if !rt.start_reload_checked.swap(true, Ordering::Relaxed) && config::RELOAD_ON_START.load(Ordering::Relaxed) {
        let empty = matches!(ctx.call("DBSIZE", &[] as &[&str]), Ok(redis_module::RedisValue::Integer(0)));
        if empty {
            if let Err(e) = spawn("pgsync-reload", move || reload::on_start(rt)) {
                warn(&e);
            }
        }
    }
}

/// Set while a recovery timer is armed, so the cron arms one at a time.
static RECOVERING: AtomicBool = AtomicBool::new(false);

/// Pause between two recovery steps: clients are served in it.
const RECOVERY_PAUSE: Duration = Duration::from_millis(1);

/// One step of the journal's recovery (a few ms), then the next one a moment
/// later: a timer rather than the cron, which runs only `hz` times a second and
/// made a million rows take minutes.
fn recovery_tick(ctx: &Context, _: ()) {
    let step = || {
        let rt = runtime::get()?;
        if rt.is_replica() || ctx.get_flags().contains(ContextFlags::LOADING) {
            return None;
        }
        rt.dirty.recover(ctx, false);
        Some(!rt.dirty.recovery().is_done())
    };
    // A step that panicked arms no timer; the next cron starts again.
    if crate::model::guard::catch(step).ok().flatten() == Some(true) {
        ctx.create_timer(RECOVERY_PAUSE, recovery_tick, ());
    } else {
        RECOVERING.store(false, Ordering::SeqCst);
    }
}

/// Replicas never write to Postgres; a promoted replica picks up its primary's journal.
pub fn on_role_changed(replica: bool) {
    let Some(rt) = runtime::get() else { return };
    rt.replica.store(replica, Ordering::Relaxed);
    cluster::invalidate();
    // A replica's journal is its primary's; a promoted one recovers it.
    rt.dirty.restart();
    if replica {
        waiters::fail_all(crate::redis::replies::DEMOTED, rt.queue());
    }
}

/// The shutdown handle: stops the threads, answers every waiting client, and joins
/// the threads within [`STOP_WAIT`] (see the module's comment for why it is bounded).
pub fn stop() {
    let Some(rt) = runtime::get() else { return };
    rt.queue().shut_down();
    waiters::fail_all(crate::redis::replies::STOPPED, rt.queue());
    let threads = std::mem::take(&mut *lock(&THREADS));
    let busy = join_within(threads, STOP_WAIT);
    if !busy.is_empty() {
        warn(&format!(
            "{} thread(s) still busy at shutdown after {} ms, left to end with the server: {}",
            busy.len(),
            STOP_WAIT.as_millis(),
            busy.join(", ")
        ));
    }
}

/// Joins the threads that end before `wait` has passed; returns the names of the others.
fn join_within(threads: Vec<JoinHandle<()>>, wait: Duration) -> Vec<String> {
    let deadline = Instant::now() + wait;
    let mut running = threads;
    loop {
        let (ended, still): (Vec<_>, Vec<_>) = running.into_iter().partition(|t| t.is_finished());
        for thread in ended {
            // Err means the thread panicked, and its guard has logged it already.
            let _ = thread.join();
        }
        running = still;
        if running.is_empty() || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(STOP_POLL);
    }
    running.iter().map(|t| t.thread().name().unwrap_or("unnamed").to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::join_within;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn ended_threads_are_joined_and_busy_ones_named() {
        let (release, blocked) = mpsc::channel::<()>();
        let busy = std::thread::Builder::new()
            .name("busy".into())
            .spawn(move || {
                let _ = blocked.recv();
            })
            .unwrap();
        let done = std::thread::spawn(|| {});
        while !done.is_finished() {
            std::thread::yield_now();
        }
        let left = join_within(vec![done, busy], Duration::from_millis(50));
        assert_eq!(left, vec!["busy".to_string()]);
        release.send(()).unwrap();
    }

    #[test]
    fn nothing_is_left_once_every_thread_ends() {
        let threads = (0..3).map(|_| std::thread::spawn(|| {})).collect();
        assert!(join_within(threads, Duration::from_secs(60)).is_empty());
    }
}
