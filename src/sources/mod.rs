//! Postgres → Redis: the listener, `SYNC.RELOAD`, `TRUNCATE` handling, and the
//! apply of rows read from Postgres into their hashes.

pub mod apply_pg;
pub mod documents;
pub mod listen;
pub mod loader;
pub mod reload;
pub mod truncate;
