//! The `pgsync.*` configs: their storage, limits and defaults, the check of module
//! arguments, and redaction of the Postgres password wherever the URL is shown.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Mutex;

/// `pgsync.postgres-url`: where the rows live (immutable; sensitive).
pub static POSTGRES_URL: Mutex<String> = Mutex::new(String::new());
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
/// Most worker threads `pgsync.workers` accepts.
pub const MAX_WORKERS: i64 = 64;

/// Names accepted as module arguments (`loadmodule lib.so <name> <value> ...`).
pub const NAMES: &[&str] =
    &["postgres-url", "mappings", "workers", "batch-size", "batch-delay-ms", "retry-max-delay-ms", "reload-on-start"];

/// Reads a string config.
pub fn string(value: &Mutex<String>) -> String {
    value.lock().map(|s| s.clone()).unwrap_or_else(|p| p.into_inner().clone())
}

/// Reads an integer config as a count, never below 1.
pub fn count(value: &AtomicI64) -> usize {
    usize::try_from(value.load(Ordering::Relaxed)).unwrap_or(1).max(1)
}

/// Reads a millisecond config as a duration.
pub fn millis(value: &AtomicI64) -> std::time::Duration {
    std::time::Duration::from_millis(u64::try_from(value.load(Ordering::Relaxed)).unwrap_or(0))
}

/// Checks module arguments: `name value` pairs with known names, so a typo fails
/// the load instead of being silently ignored.
pub fn check_module_args(args: &[String]) -> Result<(), String> {
    let mut it = args.iter();
    while let Some(name) = it.next() {
        let bare = name.strip_prefix("pgsync.").unwrap_or(name);
        if !NAMES.contains(&bare) {
            return Err(format!("unknown option \"{name}\"; known options: {}", NAMES.join(", ")));
        }
        if bare != name.as_str() {
            return Err(format!("write module arguments without the prefix: \"{bare}\", not \"{name}\""));
        }
        if it.next().is_none() {
            return Err(format!("option \"{name}\" has no value"));
        }
    }
    Ok(())
}

/// Hides the password of a Postgres URL or key=value connection string.
pub fn redact(url: &str) -> String {
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            let userinfo = &rest[..at];
            if let Some(colon) = userinfo.find(':') {
                return format!("{}{}:***{}", &url[..scheme_end + 3], &userinfo[..colon], &rest[at..]);
            }
        }
        return url.to_string();
    }
    url.split_whitespace()
        .map(|part| match part.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
            _ => part.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(redact("postgres://bob:s3cret@db:5432/app"), "postgres://bob:***@db:5432/app");
        assert_eq!(redact("postgres://bob@db/app"), "postgres://bob@db/app");
        assert_eq!(redact("host=db password=s3cret user=bob"), "host=db password=*** user=bob");
    }

    #[test]
    fn unknown_module_arguments_are_refused() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(check_module_args(&args(&["workers", "4", "mappings", "/x.json"])).is_ok());
        assert!(check_module_args(&args(&["wrokers", "4"])).unwrap_err().contains("wrokers"));
        assert!(check_module_args(&args(&["workers"])).unwrap_err().contains("no value"));
    }
}
