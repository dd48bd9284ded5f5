//! The module's error replies, named: each text is written once, so clients and
//! docs can rely on it and a grep finds every place that sends it.

use redis_module::RedisError;

/// A write refused before it ran (a key that is no row's key, a bad `#`).
pub fn refused(message: &str) -> RedisError {
    RedisError::String(format!("ERR pgsync: {message}"))
}

/// The text of a bug caught at an entry point (a panic), as a reply.
pub fn internal_text(panic: &str) -> String {
    format!("ERR pgsync internal error: {panic}")
}

/// A bug caught at an entry point (a panic).
pub fn internal(panic: &str) -> RedisError {
    RedisError::String(internal_text(panic))
}

/// A command that needs the module's state before it is loaded.
pub fn not_running() -> RedisError {
    RedisError::Str("ERR pgsync is not running")
}

/// `SYNC.JOURNAL` sent by a client: only a primary's replication stream and the
/// AOF carry it.
pub fn journal_is_internal() -> RedisError {
    RedisError::Str("ERR pgsync: SYNC.JOURNAL is the module's replication of its journal; clients cannot send it")
}

/// To clients blocked on a row when the server becomes a replica.
pub const DEMOTED: &str = "ERR this server became a replica; the new primary syncs the row";

/// To clients blocked on a row when the server shuts down.
pub const STOPPED: &str = "ERR pgsync stopped before the row was synced; it lands after the restart";
