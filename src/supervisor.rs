//! The supervisor: loads the module (configs, mapping file, state), starts every
//! background thread (workers, schema checker, listener, reloads), follows the
//! server's cron and role changes, and stops and joins its threads at shutdown.
//!
//! Stopping: the shutdown event runs on the main thread, holding the Redis lock.
//! The threads are told to stop ([`SHUTDOWN`] wakes every one that sleeps, and
//! `Queue::shut_down` every worker that waits for work), then joined against one deadline shared by all, [`STOP_WAIT`].
//! A thread may be unable to stop in time: a worker waiting on a Postgres server
//! that stopped answering, a reload in the middle of its table, or any thread
//! waiting for the Redis lock this very thread holds. Waiting for those without a
//! bound would hang the server's exit, so they are left to end with the process,
//! and the log names them. Nothing is lost by that: every change not yet settled
//! is still in the journal and is synced after the restart.

use crate::model::guard::Panic;
use crate::model::mapping::{MappingError, Mappings};
use crate::model::shutdown::Shutdown;
use crate::pg;
use crate::pipeline::runtime::{self, Runtime};
use crate::pipeline::schema_checker;
use crate::pipeline::threads::{self, spawn};
use crate::pipeline::worker;
use crate::redis::cluster;
use crate::redis::config;
use crate::redis::eviction;
use crate::redis::read_through::loads;
use crate::redis::redis_io::{notice, warn, HookError};
use crate::redis::waiters;
use crate::server::filter;
use crate::server::read_through;
use crate::sources::documents::NoJsonModule;
use crate::sources::kafka;
use crate::sources::listen;
use crate::sources::loader;
use crate::sources::reload;
use redis_module::{Context, ContextFlags, RedisString};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// How long the shutdown waits, in all, for the threads to end.
pub const STOP_WAIT: Duration = Duration::from_secs(2);

/// The module's stop signal: set by [`stop`], it ends every thread's loop.
static SHUTDOWN: Shutdown = Shutdown::new();

/// Which worker slots have a running worker.
static WORKER_SLOTS: Mutex<[bool; config::MAX_WORKERS as usize]> = Mutex::new([false; config::MAX_WORKERS as usize]);

/// A lock that a panic elsewhere left poisoned still guards plain data: keep going.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Why the module does not load; the text follows `pgsync not loaded: ` in the log.
#[derive(Debug)]
pub enum LoadError {
    /// A module argument is refused.
    Args(config::ArgError),
    /// `pgsync.mappings` is not set.
    NoMappingsPath,
    /// `pgsync.postgres-url` is not set.
    NoPostgresUrl,
    /// The Postgres settings (URL, password file, TLS) cannot be used.
    Postgres(pg::connect_error::SettingsError),
    /// The mapping file cannot be used.
    Mappings(MappingError),
    /// A mapping needs the JSON module, and the server has none.
    Stores(NoJsonModule),
    /// The state is installed already.
    Install(runtime::InstallError),
    /// A thread cannot be started.
    Thread(threads::SpawnError),
    /// A Kafka source cannot start.
    Kafka(kafka::error::StartError),
    /// The server refuses a hook the module needs.
    Hook(HookError),
    /// A bug: the load panicked.
    Bug(Panic),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Args(e) => e.fmt(f),
            LoadError::NoMappingsPath => f.write_str("pgsync.mappings is not set (path of the JSON mapping file)"),
            LoadError::NoPostgresUrl => f.write_str("pgsync.postgres-url is not set"),
            LoadError::Postgres(e) => e.fmt(f),
            LoadError::Mappings(e) => e.fmt(f),
            LoadError::Stores(e) => e.fmt(f),
            LoadError::Install(e) => e.fmt(f),
            LoadError::Thread(e) => e.fmt(f),
            LoadError::Kafka(e) => e.fmt(f),
            LoadError::Hook(e) => e.fmt(f),
            LoadError::Bug(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoadError::Args(e) => Some(e),
            LoadError::NoMappingsPath | LoadError::NoPostgresUrl => None,
            LoadError::Postgres(e) => Some(e),
            LoadError::Mappings(e) => Some(e),
            LoadError::Stores(e) => Some(e),
            LoadError::Install(e) => Some(e),
            LoadError::Thread(e) => Some(e),
            LoadError::Kafka(e) => Some(e),
            LoadError::Hook(e) => Some(e),
            LoadError::Bug(e) => Some(e),
        }
    }
}

/// Each step's error becomes its kind, so `start` reads as its steps with `?`.
macro_rules! load_error_from {
    ($($kind:ident($error:ty)),* $(,)?) => {
        $(impl From<$error> for LoadError {
            fn from(e: $error) -> LoadError {
                LoadError::$kind(e)
            }
        })*
    };
}

load_error_from!(
    Args(config::ArgError),
    Postgres(pg::connect_error::SettingsError),
    Mappings(MappingError),
    Stores(NoJsonModule),
    Install(runtime::InstallError),
    Thread(threads::SpawnError),
    Kafka(kafka::error::StartError),
    Hook(HookError),
    Bug(Panic),
);

/// Loads the module: reads the configs and the mapping file, builds the state and
/// starts the threads. Postgres need not be reachable.
pub fn start(ctx: &Context, args: &[RedisString]) -> Result<(), LoadError> {
    let args: Vec<String> = args.iter().map(|a| a.to_string_lossy()).collect();
    config::check_module_args(&args)?;
    let path = config::string(&config::MAPPINGS_PATH);
    if path.is_empty() {
        return Err(LoadError::NoMappingsPath);
    }
    let url = crate::postgres_url::postgres_url(&args);
    if url.is_empty() {
        return Err(LoadError::NoPostgresUrl);
    }
    let password = pg::connect::password_override(&config::string(&config::PASSWORD_FILE))?;
    let settings = pg::connect::settings(&url, password.as_deref())?;
    let mappings = Mappings::load(&path)?;
    crate::sources::documents::check_stores(ctx, &mappings)?;
    let replica = ctx.get_flags().contains(ContextFlags::SLAVE);
    cluster::detect(ctx);
    if cluster::enabled() {
        crate::redis::journal::logs::index_slots();
    }
    let names: Vec<&str> = mappings.all().iter().map(|m| m.name.as_str()).collect();
    let summary = format!("pgsync loaded: mappings [{}], Postgres {}", names.join(", "), pg::conninfo::redact(&url));
    let rt = runtime::install(Runtime::new(mappings, settings, replica, &SHUTDOWN))?;
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
                Err(e) => warn(&e.to_string()),
            }
        }
    }
}

/// Whether worker `slot` should keep running. A worker that stops frees its slot
/// under the slots' lock, so `ensure_workers` cannot take it for still running.
fn keep_worker(rt: &Runtime, slot: usize) -> bool {
    let mut slots = lock(&WORKER_SLOTS);
    let keep = slot < config::count(&config::WORKERS) && !rt.shutdown.is_stopped();
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
                warn(&e.to_string());
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
    SHUTDOWN.stop();
    // Workers waiting for a batch wait on the queue: it hands out no more.
    rt.queue().shut_down();
    waiters::fail_all(crate::redis::replies::STOPPED, rt.queue());
    let busy = threads::join_all(STOP_WAIT);
    if !busy.is_empty() {
        warn(&format!(
            "{} thread(s) still busy at shutdown after {} ms, left to end with the server: {}",
            busy.len(),
            STOP_WAIT.as_millis(),
            busy.join(", ")
        ));
    }
}
