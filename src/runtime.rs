//! The module's running state: mappings, queue, counters, the Postgres pool and the
//! background threads (workers and the schema checker), created once at load.

use crate::backoff::{Backoff, SharedBackoff};
use crate::config;
use crate::guard;
use crate::listen;
use crate::mapping::Mappings;
use crate::pg::connect::{Settings, Tls};
use crate::pg::error::Error;
use crate::pg::schema::{self, TableSchema};
use crate::pg::triggers;
use crate::queue::Queue;
use crate::redis_io::{notice, warn};
use crate::stats::{MappingStats, PostgresState};
use crate::worker;
use r2d2_postgres::PostgresConnectionManager;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

/// The Postgres connection pool type.
pub type Pool = r2d2::Pool<PostgresConnectionManager<Tls>>;

/// Everything the module shares between Redis callbacks and its threads.
pub struct Runtime {
    /// The mappings from the mapping file.
    pub mappings: Mappings,
    /// Dirty rows waiting for, or in, a batch.
    pub queue: Queue,
    /// Counters by mapping index.
    pub stats: Vec<MappingStats>,
    /// Whether Postgres is reachable.
    pub postgres: PostgresState,
    /// Postgres connections shared by workers and the schema checker.
    pub pool: Pool,
    /// True while this server is a replica: it must not write to Postgres.
    pub replica: AtomicBool,
    /// How far the journal left by a previous run (or a primary) is queued again.
    pub recovery: crate::journal::Recovery,
    /// Connection settings, for connections outside the pool (the listener).
    pub pg_config: postgres::Config,
    /// The TLS policy of every connection (`sslmode`, `sslrootcert`).
    pub tls: Tls,
    /// True while a reload runs.
    pub reload_running: AtomicBool,
    /// Rows loaded by the current (or last) reload.
    pub reload_rows: AtomicU64,
    /// True once `pgsync.reload-on-start` has been considered.
    pub start_reload_checked: AtomicBool,
    /// Retry delay of each mapping while its rows cannot be written.
    pub backoffs: Vec<SharedBackoff>,
    schemas: RwLock<Vec<Option<Arc<TableSchema>>>>,
    worker_slots: Mutex<Vec<bool>>,
}

static RUNTIME: OnceLock<Arc<Runtime>> = OnceLock::new();

/// The running module, once loaded.
pub fn get() -> Option<&'static Arc<Runtime>> {
    RUNTIME.get()
}

/// Builds the runtime from the configs and starts its threads. Postgres need not be
/// reachable: connections are made lazily and retried.
pub fn start(mappings: Mappings, settings: Settings, replica: bool) -> Result<(), String> {
    let Settings { config: mut pg_config, tls } = settings;
    pg_config.application_name("redis-pgsync");
    // Marks the module's sessions so the NOTIFY triggers do not echo its writes.
    let options = match pg_config.get_options() {
        Some(existing) => format!("{existing} -c pgsync.origin={}", triggers::ORIGIN),
        None => format!("-c pgsync.origin={}", triggers::ORIGIN),
    };
    pg_config.options(&options);
    if pg_config.get_connect_timeout().is_none() {
        pg_config.connect_timeout(Duration::from_secs(5));
    }
    let pool = r2d2::Pool::builder()
        .max_size(config::MAX_WORKERS as u32 + 2)
        .min_idle(Some(0))
        .connection_timeout(Duration::from_secs(2))
        .test_on_check_out(false)
        .error_handler(Box::new(crate::pg::error::KeepConnectError))
        .build_unchecked(PostgresConnectionManager::new(pg_config.clone(), tls.clone()));
    let count = mappings.all().len();
    let runtime = Arc::new(Runtime {
        stats: (0..count).map(|_| MappingStats::default()).collect(),
        queue: Queue::default(),
        postgres: PostgresState::default(),
        pool,
        replica: AtomicBool::new(replica),
        recovery: Default::default(),
        pg_config,
        tls,
        reload_running: AtomicBool::new(false),
        reload_rows: AtomicU64::new(0),
        start_reload_checked: AtomicBool::new(false),
        schemas: RwLock::new(vec![None; count]),
        backoffs: (0..count).map(|_| SharedBackoff::new(worker::FIRST_RETRY_DELAY)).collect(),
        worker_slots: Mutex::new(vec![false; config::MAX_WORKERS as usize]),
        mappings,
    });
    RUNTIME.set(runtime.clone()).map_err(|_| "pgsync is already loaded".to_string())?;
    let checker = runtime.clone();
    spawn("pgsync-schema", move || schema_checker(&checker))?;
    spawn("pgsync-listener", move || listen::run(&runtime))?;
    ensure_workers();
    Ok(())
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<(), String> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            if let Err(panic) = guard::catch(f) {
                warn(&format!("thread stopped by a bug: {panic}"));
            }
        })
        .map(|_| ())
        .map_err(|e| format!("cannot start a thread: {e}"))
}

/// Starts workers up to `pgsync.workers`; extra ones stop on their own.
pub fn ensure_workers() {
    let Some(rt) = get() else { return };
    let wanted = config::count(&config::WORKERS);
    let mut slots = rt.worker_slots.lock().unwrap_or_else(|p| p.into_inner());
    for slot in 0..wanted.min(slots.len()) {
        if !slots[slot] {
            let name = format!("pgsync-worker-{slot}");
            match spawn(&name, move || worker::run(slot)) {
                Ok(()) => slots[slot] = true,
                Err(e) => warn(&e),
            }
        }
    }
}

impl Runtime {
    /// Whether worker `slot` should keep running; marks it stopped when not.
    pub fn keep_worker(&self, slot: usize) -> bool {
        let mut slots = self.worker_slots.lock().unwrap_or_else(|p| p.into_inner());
        let keep = slot < config::count(&config::WORKERS) && !self.queue.is_shut_down();
        if !keep {
            slots[slot] = false;
        }
        keep
    }

    /// The checked schema of a mapping's table, once loaded.
    pub fn schema(&self, mapping: usize) -> Option<Arc<TableSchema>> {
        let schemas = self.schemas.read().unwrap_or_else(|p| p.into_inner());
        schemas.get(mapping).cloned().flatten()
    }

    /// The checked schema of a mapping's table, or why it cannot be used yet.
    pub fn usable_schema(&self, mapping: usize) -> Result<Arc<TableSchema>, Error> {
        self.schema(mapping).ok_or_else(|| {
            let why = self.stats[mapping].schema_error().unwrap_or_else(|| "not checked yet".into());
            let name = &self.mappings.all()[mapping].name;
            Error::new(crate::pg::error::ErrorKind::Schema, format!("table of mapping \"{name}\" unusable: {why}"))
        })
    }

    /// Forgets a mapping's schema so the checker reads it again (after a 42xxx error).
    pub fn invalidate_schema(&self, mapping: usize) {
        let mut schemas = self.schemas.write().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = schemas.get_mut(mapping) {
            *slot = None;
        }
    }

    fn set_schema(&self, mapping: usize, schema: TableSchema) {
        let mut schemas = self.schemas.write().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = schemas.get_mut(mapping) {
            *slot = Some(Arc::new(schema));
        }
    }

    /// Whether this server may write to Postgres now.
    pub fn is_replica(&self) -> bool {
        self.replica.load(Ordering::Relaxed)
    }
}

/// Loads and checks each mapping's table until all are fine, then re-checks any the
/// workers invalidate. Errors go to the log and to `SYNC.STATUS`. Also gives the
/// queue's unused memory back.
fn schema_checker(rt: &Runtime) {
    while !rt.queue.is_shut_down() {
        let missing: Vec<usize> = (0..rt.mappings.all().len()).filter(|&i| rt.schema(i).is_none()).collect();
        if !missing.is_empty() {
            match rt.pool.get() {
                Ok(mut conn) => {
                    rt.postgres.mark_up();
                    for i in missing {
                        let mapping = &rt.mappings.all()[i];
                        match schema::load(&mut conn, mapping) {
                            Ok(schema) => {
                                if rt.stats[i].schema_error().is_some() {
                                    notice(&format!("mapping \"{}\": schema is fine now", mapping.name));
                                }
                                rt.stats[i].set_schema_error(None);
                                rt.set_schema(i, schema);
                            }
                            Err(e) => report_schema_error(rt, i, &e),
                        }
                    }
                }
                Err(e) => {
                    let e = Error::from(e);
                    if rt.postgres.describe() != "down" {
                        warn(&format!("Postgres unreachable, will keep retrying: {e}"));
                    }
                    rt.postgres.mark_down(&e.message);
                }
            }
        }
        // Once a second is often enough to give back a drained backlog's memory,
        // and keeps the shrinking off the main thread and the workers' path.
        rt.queue.release_memory();
        rt.queue.sleep(Duration::from_secs(1));
    }
}

fn report_schema_error(rt: &Runtime, mapping: usize, e: &Error) {
    if rt.stats[mapping].schema_error().as_deref() != Some(e.message.as_str()) {
        warn(&format!("schema check failed: {e}"));
    }
    rt.stats[mapping].set_schema_error(Some(e.message.clone()));
    rt.stats[mapping].set_last_error(&e.message);
}

/// Reloads every mapping in the background, retrying until it succeeds: the
/// recovery of `pgsync.reload-on-start` after Redis lost its data.
pub fn reload_on_start() {
    let Some(rt) = get() else { return };
    let started = spawn("pgsync-reload", move || {
        let all: Vec<usize> = (0..rt.mappings.all().len()).collect();
        let mut backoff = Backoff::new(Duration::from_millis(200));
        while !rt.queue.is_shut_down() {
            let outcome = crate::reload::begin(rt)
                .map_err(|e| Error::new(crate::pg::error::ErrorKind::Unavailable, e))
                .and_then(|_guard| crate::reload::run(rt, &all, false, crate::notify::Source::Reload));
            match outcome {
                Ok(rows) => {
                    notice(&format!("reload on start loaded {rows} rows"));
                    return;
                }
                Err(e) => {
                    warn(&format!("reload on start failed, will retry: {e}"));
                    rt.queue.sleep(backoff.failed(config::millis(&config::RETRY_MAX_DELAY_MS)));
                }
            }
        }
    });
    if let Err(e) = started {
        warn(&e);
    }
}
