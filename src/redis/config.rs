//! The `pgsync.*` configs: their storage, limits and defaults, the check of module
//! arguments. How `CONFIG GET` shows the Postgres URL (without its password) is
//! `src/postgres_url.rs`'s: hiding it is a Postgres rule.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Mutex;

/// `pgsync.postgres-url`: where the rows live (immutable; sensitive).
pub static POSTGRES_URL: SecretUrl = SecretUrl(Mutex::new(String::new()));
/// `pgsync.postgres-password-file`: file holding the Postgres password (immutable).
pub static PASSWORD_FILE: Mutex<String> = Mutex::new(String::new());
/// `pgsync.log-values`: whether log lines may show row values (from Postgres's
/// error details); off by default, since rows can hold secrets.
pub static LOG_VALUES: AtomicBool = AtomicBool::new(false);
/// `pgsync.mappings`: path of the JSON mapping file (immutable).
pub static MAPPINGS_PATH: Mutex<String> = Mutex::new(String::new());
/// `pgsync.workers`: number of threads writing to Postgres.
pub static WORKERS: AtomicI64 = AtomicI64::new(DEFAULT_WORKERS);
/// `pgsync.batch-size`: most rows per batch.
pub static BATCH_SIZE: AtomicI64 = AtomicI64::new(DEFAULT_BATCH_SIZE);
/// `pgsync.batch-delay-ms`: how long a worker lingers for a fuller batch.
pub static BATCH_DELAY_MS: AtomicI64 = AtomicI64::new(DEFAULT_BATCH_DELAY_MS);
/// `pgsync.retry-max-delay-ms`: cap of the exponential backoff while Postgres is down.
pub static RETRY_MAX_DELAY_MS: AtomicI64 = AtomicI64::new(DEFAULT_RETRY_MAX_DELAY_MS);
/// `pgsync.deadletter-max`: most entries (rows) the dead-letter list keeps.
pub static DEADLETTER_MAX: AtomicI64 = AtomicI64::new(DEFAULT_DEADLETTER_MAX);
/// `pgsync.batch-max-bytes`: most bytes of changes per batch (a larger row goes alone).
pub static BATCH_MAX_BYTES: AtomicI64 = AtomicI64::new(DEFAULT_BATCH_MAX_BYTES);
/// `pgsync.max-row-bytes`: a row whose values are larger is dead-lettered, not sent.
pub static MAX_ROW_BYTES: AtomicI64 = AtomicI64::new(DEFAULT_MAX_ROW_BYTES);

/// `pgsync.hset-timeout-ms`: how long `SYNC.HSET` waits for the commit before it
/// replies with an error (the change stays queued); 0 waits as long as it takes.
pub static HSET_TIMEOUT_MS: AtomicI64 = AtomicI64::new(DEFAULT_HSET_TIMEOUT_MS);

/// `pgsync.read-through-timeout-ms`: how long a read of a missing row waits for
/// Postgres before it gets `pgsync.read-through-on-error`'s reply.
pub static READ_THROUGH_TIMEOUT_MS: AtomicI64 = AtomicI64::new(DEFAULT_READ_THROUGH_TIMEOUT_MS);
/// `pgsync.read-through-negative-ttl-ms`: how long a row Postgres does not have
/// is remembered as absent (0: never).
pub static READ_THROUGH_NEGATIVE_TTL_MS: AtomicI64 = AtomicI64::new(DEFAULT_READ_THROUGH_NEGATIVE_TTL_MS);

redis_module::enum_configuration! {
    /// What a read of a missing row gets when Postgres cannot answer in time.
    #[allow(non_camel_case_types)]
    #[derive(Debug, PartialEq, Eq)]
    pub enum OnReadError {
        /// An error reply naming the cause.
        error = 0,
        /// The reply for a key that does not exist, as without read-through.
        nil = 1,
    }
}

/// `pgsync.read-through-on-error`: `error` or `nil`.
pub static READ_THROUGH_ON_ERROR: Mutex<OnReadError> = Mutex::new(OnReadError::error);

/// `pgsync.cdc`'s values (a module of its own: the macro imports names).
mod cdc_setting {
    redis_module::enum_configuration! {
        /// How Postgres -> Redis learns of changes (`pgsync.cdc`).
        #[allow(non_camel_case_types)]
        #[derive(Debug, PartialEq, Eq, Copy)]
        pub enum Cdc {
            /// Logical replication when Postgres allows it, else triggers.
            auto = 0,
            /// Logical replication only: without it, listening waits and says why.
            logical = 1,
            /// Triggers and NOTIFY.
            notify = 2,
        }
    }
}
pub use cdc_setting::Cdc;

/// `pgsync.cdc`: `auto`, `logical` or `notify` (read when the listener connects).
pub static CDC: Mutex<Cdc> = Mutex::new(Cdc::auto);
/// `pgsync.cdc-slot`: the replication slot (and publication) of this Redis primary.
pub static CDC_SLOT: Mutex<String> = Mutex::new(String::new());
/// `pgsync.cdc-max-lag-bytes`: WAL kept for the slot past which a warning is logged.
pub static CDC_MAX_LAG_BYTES: AtomicI64 = AtomicI64::new(DEFAULT_CDC_MAX_LAG_BYTES);
/// Default of `pgsync.cdc-slot`.
pub const DEFAULT_CDC_SLOT: &str = "pgsync";
/// Default of `pgsync.cdc-max-lag-bytes`: 1 GiB.
pub const DEFAULT_CDC_MAX_LAG_BYTES: i64 = 1 << 30;

/// `pgsync.reload-on-start`: reload every mapping when the module starts on an
/// empty dataset (the recovery after Redis lost its data).
pub static RELOAD_ON_START: AtomicBool = AtomicBool::new(false);

/// Default of `pgsync.workers`.
pub const DEFAULT_WORKERS: i64 = 2;
/// Default of `pgsync.batch-size`.
pub const DEFAULT_BATCH_SIZE: i64 = 500;
/// Default of `pgsync.batch-delay-ms`.
pub const DEFAULT_BATCH_DELAY_MS: i64 = 1;
/// Default of `pgsync.retry-max-delay-ms`.
pub const DEFAULT_RETRY_MAX_DELAY_MS: i64 = 5000;
/// Default of `pgsync.deadletter-max`.
pub const DEFAULT_DEADLETTER_MAX: i64 = 10_000;
/// Default of `pgsync.batch-max-bytes`: 16 MiB.
pub const DEFAULT_BATCH_MAX_BYTES: i64 = 16 << 20;
/// Default of `pgsync.max-row-bytes`: 64 MiB.
pub const DEFAULT_MAX_ROW_BYTES: i64 = 64 << 20;
/// Most bytes `pgsync.batch-max-bytes` and `pgsync.max-row-bytes` accept: Postgres
/// refuses a protocol message over 1 GiB, and a row travels in one.
pub const MAX_BYTES: i64 = 1_000_000_000;
/// Default of `pgsync.hset-timeout-ms`.
pub const DEFAULT_HSET_TIMEOUT_MS: i64 = 10_000;
/// Default of `pgsync.read-through-timeout-ms`.
pub const DEFAULT_READ_THROUGH_TIMEOUT_MS: i64 = 1000;
/// Default of `pgsync.read-through-negative-ttl-ms`.
pub const DEFAULT_READ_THROUGH_NEGATIVE_TTL_MS: i64 = 1000;
/// Most worker threads `pgsync.workers` accepts.
pub const MAX_WORKERS: i64 = 64;

/// Names accepted as module arguments (`loadmodule lib.so <name> <value> ...`).
pub const NAMES: &[&str] = &[
    "postgres-url",
    "postgres-password-file",
    "mappings",
    "workers",
    "batch-size",
    "batch-delay-ms",
    "retry-max-delay-ms",
    "hset-timeout-ms",
    "reload-on-start",
    "deadletter-max",
    "batch-max-bytes",
    "max-row-bytes",
    "log-values",
    "read-through-timeout-ms",
    "read-through-negative-ttl-ms",
    "read-through-on-error",
    "cdc",
    "cdc-slot",
    "cdc-max-lag-bytes",
];

/// The Postgres URL config: `CONFIG GET` (and so `CONFIG GET *`) shows it with the
/// password hidden (`src/postgres_url.rs`); the module reads the real one with
/// [`SecretUrl::get`].
pub struct SecretUrl(Mutex<String>);

impl SecretUrl {
    /// The URL as configured, password included.
    pub fn get(&self) -> String {
        string(&self.0)
    }

    /// Sets the URL (`CONFIG SET`, module arguments).
    pub fn set(&self, url: String) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = url;
    }
}

/// Reads a string config.
pub fn string(value: &Mutex<String>) -> String {
    value.lock().map(|s| s.clone()).unwrap_or_else(|p| p.into_inner().clone())
}

/// Whether log lines may show row values (`pgsync.log-values`).
pub fn log_values() -> bool {
    LOG_VALUES.load(Ordering::Relaxed)
}

/// Reads an integer config as a count, never below 1.
pub fn count(value: &AtomicI64) -> usize {
    usize::try_from(value.load(Ordering::Relaxed)).unwrap_or(1).max(1)
}

/// Reads a millisecond config as a duration.
pub fn millis(value: &AtomicI64) -> std::time::Duration {
    std::time::Duration::from_millis(u64::try_from(value.load(Ordering::Relaxed)).unwrap_or(0))
}

/// `SYNC.HSET`'s timeout (`pgsync.hset-timeout-ms`); `None` when it waits as long
/// as it takes.
pub fn hset_timeout() -> Option<std::time::Duration> {
    Some(millis(&HSET_TIMEOUT_MS)).filter(|t| !t.is_zero())
}

/// The `pgsync.cdc` setting.
pub fn cdc() -> Cdc {
    *CDC.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether a read whose load failed gets nil rather than an error.
pub fn read_errors_as_nil() -> bool {
    *READ_THROUGH_ON_ERROR.lock().unwrap_or_else(|p| p.into_inner()) == OnReadError::nil
}

/// A module argument the load refuses (the argument as given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgError {
    /// No option has this name.
    Unknown(String),
    /// The name carries the `pgsync.` prefix, which arguments leave out.
    Prefixed(String),
    /// The last name has no value after it.
    NoValue(String),
}

impl std::fmt::Display for ArgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ArgError::Unknown(name) => write!(f, "unknown option \"{name}\"; known options: {}", NAMES.join(", ")),
            ArgError::Prefixed(name) => {
                let bare = name.strip_prefix("pgsync.").unwrap_or(name);
                write!(f, "write module arguments without the prefix: \"{bare}\", not \"{name}\"")
            }
            ArgError::NoValue(name) => write!(f, "option \"{name}\" has no value"),
        }
    }
}

impl std::error::Error for ArgError {}

/// Checks module arguments: `name value` pairs with known names, so a typo fails
/// the load instead of being silently ignored.
pub fn check_module_args(args: &[String]) -> Result<(), ArgError> {
    let mut it = args.iter();
    while let Some(name) = it.next() {
        let bare = name.strip_prefix("pgsync.").unwrap_or(name);
        if !NAMES.contains(&bare) {
            return Err(ArgError::Unknown(name.clone()));
        }
        if bare != name.as_str() {
            return Err(ArgError::Prefixed(name.clone()));
        }
        if it.next().is_none() {
            return Err(ArgError::NoValue(name.clone()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_module_arguments_are_refused() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(check_module_args(&args(&["workers", "4", "mappings", "/x.json"])).is_ok());
        assert_eq!(check_module_args(&args(&["wrokers", "4"])), Err(ArgError::Unknown("wrokers".into())));
        assert_eq!(check_module_args(&args(&["workers"])).unwrap_err().to_string(), "option \"workers\" has no value");
        assert_eq!(
            check_module_args(&args(&["pgsync.workers", "4"])).unwrap_err().to_string(),
            "write module arguments without the prefix: \"workers\", not \"pgsync.workers\""
        );
    }
}
