//! The module's running state: mappings, queue, counters, schemas and the Postgres
//! pool, created once at load and shared by Redis callbacks and the module's
//! threads. Starting and stopping those threads is the supervisor's job
//! (`src/supervisor.rs`).

use crate::model::backoff::{SharedBackoff, FIRST_RETRY_DELAY};
use crate::model::mapping::{Mapping, Mappings};
use crate::model::queue::Queue;
use crate::model::shutdown::Shutdown;
use crate::model::stats::{MappingStats, PostgresState};
use crate::pg::connect::Settings;
use crate::pg::error::Error;
use crate::pg::schema::TableSchema;
use crate::pg::tls::Tls;
use crate::pg::triggers;
use crate::pipeline::dirty_set::DirtySet;
use crate::redis::config;
use r2d2_postgres::PostgresConnectionManager;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

/// The Postgres connection pool type.
pub type Pool = r2d2::Pool<PostgresConnectionManager<Tls>>;

/// Everything the module shares between Redis callbacks and its threads.
pub struct Runtime {
    /// The mappings from the mapping file.
    pub mappings: Mappings,
    /// Dirty rows waiting for, or in, a batch.
    pub dirty: DirtySet,
    /// Counters by mapping index: reached through [`Runtime::mapping`].
    stats: Vec<MappingStats>,
    /// Whether Postgres is reachable.
    pub postgres: PostgresState,
    /// Postgres connections shared by workers and the schema checker.
    pub pool: Pool,
    /// True while this server is a replica: it must not write to Postgres.
    pub replica: AtomicBool,
    /// Connection settings, for connections outside the pool (the listener).
    pub pg_config: postgres::Config,
    /// The TLS policy of every connection (`sslmode`, `sslrootcert`).
    pub tls: Tls,
    /// True while a reload runs.
    pub reload_running: AtomicBool,
    /// Rows loaded by the current (or last) reload.
    pub reload_rows: AtomicU64,
    /// What reloads hand the listener (changes they heard, catch-ups they made
    /// unnecessary).
    pub handover: crate::model::handover::Handover,
    /// True once `pgsync.reload-on-start` has been considered.
    pub start_reload_checked: AtomicBool,
    /// The module's stop signal, owned by the supervisor: every thread's loop
    /// ends on it.
    pub shutdown: &'static Shutdown,
    /// Retry delay of each mapping while its rows cannot be written.
    pub backoffs: Vec<SharedBackoff>,
    schemas: RwLock<Vec<Option<Arc<TableSchema>>>>,
    /// Mappings whose schema the checker reads again while the one it has stays
    /// in use (an enum key column may have gained labels).
    stale_schemas: Vec<AtomicBool>,
}

/// One mapping and the module's counters for it, as one argument: what most
/// functions need to know of a mapping, instead of an index into the mappings
/// and another into the counters.
#[derive(Clone, Copy)]
pub struct MappingRef<'a> {
    /// Its index: how the queue, the schemas and the backoffs name it.
    pub index: usize,
    /// The mapping as the mapping file declares it.
    pub def: &'a Mapping,
    /// Its counters and shown state.
    pub stats: &'a MappingStats,
}

static RUNTIME: OnceLock<Arc<Runtime>> = OnceLock::new();

/// The running module, once loaded.
pub fn get() -> Option<&'static Arc<Runtime>> {
    RUNTIME.get()
}

/// Why the state cannot be installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstallError {
    /// A state is installed already (the module is loaded once per process).
    AlreadyLoaded,
    /// The state set is not there to read back (cannot happen: kept for the
    /// `Option` rather than an `expect`).
    NotRunning,
}

impl std::fmt::Display for InstallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            InstallError::AlreadyLoaded => "pgsync is already loaded",
            InstallError::NotRunning => "pgsync is not running",
        })
    }
}

impl std::error::Error for InstallError {}

/// Makes `runtime` the running module's state; refuses a second one.
pub fn install(runtime: Runtime) -> Result<&'static Arc<Runtime>, InstallError> {
    RUNTIME.set(Arc::new(runtime)).map_err(|_| InstallError::AlreadyLoaded)?;
    RUNTIME.get().ok_or(InstallError::NotRunning)
}

impl Runtime {
    /// The in-memory half of the dirty set, for readers (waits, snapshots, figures).
    pub fn queue(&self) -> &Queue {
        self.dirty.queue()
    }

    /// Builds the state from the configs, stopped by `shutdown`. Postgres need
    /// not be reachable: connections are made lazily and retried.
    pub fn new(mappings: Mappings, settings: Settings, replica: bool, shutdown: &'static Shutdown) -> Runtime {
        let Settings { config: mut pg_config, tls } = settings;
        pg_config.application_name("redis-pgsync");
        let options = crate::pg::connect::session_options(pg_config.get_options(), triggers::ORIGIN);
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
        Runtime {
            stats: (0..count).map(|_| MappingStats::default()).collect(),
            dirty: DirtySet::new(mappings.clone()),
            postgres: PostgresState::default(),
            pool,
            replica: AtomicBool::new(replica),
            pg_config,
            tls,
            reload_running: AtomicBool::new(false),
            reload_rows: AtomicU64::new(0),
            handover: crate::model::handover::Handover::new(count),
            start_reload_checked: AtomicBool::new(false),
            shutdown,
            schemas: RwLock::new(vec![None; count]),
            stale_schemas: (0..count).map(|_| AtomicBool::new(false)).collect(),
            backoffs: (0..count).map(|_| SharedBackoff::new(FIRST_RETRY_DELAY)).collect(),
            mappings,
        }
    }

    /// Mapping `index` (an index the mappings handed out: always in range).
    pub fn mapping(&self, index: usize) -> MappingRef<'_> {
        MappingRef { index, def: &self.mappings.all()[index], stats: &self.stats[index] }
    }

    /// Every mapping, in the mapping file's order.
    pub fn each_mapping(&self) -> impl Iterator<Item = MappingRef<'_>> {
        (0..self.mappings.all().len()).map(|index| self.mapping(index))
    }

    /// The checked schema of a mapping's table, once loaded.
    pub fn schema(&self, mapping: usize) -> Option<Arc<TableSchema>> {
        let schemas = self.schemas.read().unwrap_or_else(|p| p.into_inner());
        schemas.get(mapping).cloned().flatten()
    }

    /// Whether the checker has looked at a mapping's table since it was last
    /// invalidated: it found it usable, or said why not.
    pub fn schema_checked(&self, mapping: usize) -> bool {
        self.schema(mapping).is_some() || self.mapping(mapping).stats.schema_error().is_some()
    }

    /// The checked schema of a mapping's table, or why it cannot be used yet.
    pub fn usable_schema(&self, mapping: usize) -> Result<Arc<TableSchema>, Error> {
        self.schema(mapping).ok_or_else(|| {
            let why = self.mapping(mapping).stats.schema_error().unwrap_or_else(|| "not checked yet".into());
            let name = &self.mapping(mapping).def.name;
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

    /// Asks the checker to read a mapping's schema again; the current one stays
    /// in use meanwhile, so its checks never lapse.
    pub fn refresh_schema(&self, mapping: usize) {
        if let Some(stale) = self.stale_schemas.get(mapping) {
            stale.store(true, Ordering::Relaxed);
        }
    }

    /// Whether a mapping's schema was asked to be read again (and forgets it).
    pub fn take_stale_schema(&self, mapping: usize) -> bool {
        self.stale_schemas.get(mapping).is_some_and(|stale| stale.swap(false, Ordering::Relaxed))
    }

    /// Records a mapping's checked schema.
    pub fn set_schema(&self, mapping: usize, schema: TableSchema) {
        let mut schemas = self.schemas.write().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = schemas.get_mut(mapping) {
            *slot = Some(Arc::new(schema));
        }
    }

    /// Where the dead-letter list counts the entries it drops.
    pub fn drop_counters(&self) -> crate::redis::deadletter::DropCounters<'_> {
        crate::redis::deadletter::DropCounters { mappings: &self.mappings, stats: &self.stats }
    }

    /// Whether this server may write to Postgres now.
    pub fn is_replica(&self) -> bool {
        self.replica.load(Ordering::Relaxed)
    }

    /// Why rows read from Postgres may not be written into Redis now: a replica's
    /// keys come from its primary, and before the journal is recovered a row could be
    /// written over a Redis change that is journaled but not queued again yet.
    pub fn not_ready(&self) -> Option<&'static str> {
        if self.is_replica() {
            Some("waiting: this server is a replica")
        } else if !self.dirty.recovery().is_done() {
            Some("waiting for the journal recovery")
        } else {
            None
        }
    }
}
