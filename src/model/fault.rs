//! Documented fault-injection hooks for the integration tests, which load the
//! real module into a real server and so cannot use `cfg(test)` code. Read once,
//! at the first check; unset (as in production) each costs a comparison of an
//! empty option.
//!
//! - `PGSYNC_TEST_PANIC_ON_ID=<id>`: a worker panics while writing the row with
//!   that primary-key value (in any mapping), to prove that a bug on one row
//!   dead-letters that row instead of stalling its mapping.
//! - `PGSYNC_TEST_ABORT_AFTER_COMMIT=<file>`: when that file exists, the next
//!   worker whose batch committed deletes it and aborts the server before apply
//!   clears the journal, as a `kill -9` at that moment would.

use std::sync::OnceLock;

/// The environment variable that names the row to panic on.
pub const PANIC_ON_ID: &str = "PGSYNC_TEST_PANIC_ON_ID";

static TARGET: OnceLock<Option<String>> = OnceLock::new();

/// The environment variable that names the file arming the abort after a commit.
pub const ABORT_AFTER_COMMIT: &str = "PGSYNC_TEST_ABORT_AFTER_COMMIT";

static ABORT_FILE: OnceLock<Option<std::path::PathBuf>> = OnceLock::new();

/// Aborts the server when the test armed it (see the module docs).
pub fn abort_if_armed() {
    let file =
        ABORT_FILE.get_or_init(|| std::env::var_os(ABORT_AFTER_COMMIT).filter(|v| !v.is_empty()).map(Into::into));
    if let Some(file) = file {
        if std::fs::remove_file(file).is_ok() {
            // What was replicated under the lock before the commit reaches the
            // replicas, as it would in the moment a real crash leaves.
            std::thread::sleep(std::time::Duration::from_millis(200));
            std::process::abort();
        }
    }
}

/// Panics when `id` is the row the test asked to panic on.
pub fn panic_if_targeted(id: &str) {
    let target = TARGET.get_or_init(|| std::env::var(PANIC_ON_ID).ok().filter(|v| !v.is_empty()));
    if target.as_deref() == Some(id) {
        panic!("injected by {PANIC_ON_ID} on row {id}");
    }
}
