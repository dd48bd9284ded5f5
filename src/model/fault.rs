//! A documented fault-injection hook for the integration tests, which load the
//! real module into a real server and so cannot use `cfg(test)` code: when the
//! server's environment has `PGSYNC_TEST_PANIC_ON_ID=<id>`, a worker panics while
//! writing the row with that primary-key value (in any mapping). It exists to
//! prove that a bug on one row dead-letters that row instead of stalling its
//! mapping. Read once, at the first check; unset (as in production) it costs a
//! comparison of an empty option.

use std::sync::OnceLock;

/// The environment variable that names the row to panic on.
pub const PANIC_ON_ID: &str = "PGSYNC_TEST_PANIC_ON_ID";

static TARGET: OnceLock<Option<String>> = OnceLock::new();

/// Panics when `id` is the row the test asked to panic on.
pub fn panic_if_targeted(id: &str) {
    let target = TARGET.get_or_init(|| std::env::var(PANIC_ON_ID).ok().filter(|v| !v.is_empty()));
    if target.as_deref() == Some(id) {
        panic!("injected by {PANIC_ON_ID} on row {id}");
    }
}
