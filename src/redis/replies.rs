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

/// To clients blocked on a row whose pending change a flush of the data dropped.
pub const JOURNAL_FLUSHED: &str = "ERR the row's pending change was dropped with the data (FLUSHALL or FLUSHDB)";

/// To clients blocked on a row when the server shuts down.
pub const STOPPED: &str = "ERR pgsync stopped before the row was synced; it lands after the restart";

/// An error of the module's own, as a reply: `ERR <why>`.
pub fn error(why: impl std::fmt::Display) -> RedisError {
    RedisError::String(format!("ERR {why}"))
}

/// A command called for a client failed: Redis's own error text, or `ERR
/// <failed>` when it has none readable.
pub fn from_call(text: Option<String>, failed: &str) -> RedisError {
    RedisError::String(text.unwrap_or_else(|| format!("ERR {failed}")))
}

// The key API and blocking, which a supported server always has.

/// The server lacks the key API.
pub fn no_key_api() -> RedisError {
    RedisError::Str("ERR the key API is missing")
}

/// The key could not be opened.
pub fn cannot_open_key() -> RedisError {
    RedisError::Str("ERR cannot open the key")
}

/// The server lacks the blocking API.
pub fn no_blocking_api() -> RedisError {
    RedisError::Str("ERR this server cannot block clients for modules")
}

/// Redis refused to block the client.
pub fn cannot_block() -> RedisError {
    RedisError::Str("ERR cannot block the client")
}

/// A blocking command inside MULTI or a script.
pub fn cannot_block_in(command: &str) -> RedisError {
    RedisError::String(format!("ERR {command} blocks and cannot run inside MULTI or a script"))
}

// Hash writes through the key API: Redis's own replies for the same errors.

/// Redis's reply to a command with the wrong number of arguments.
pub fn wrong_arity(command: &str) -> RedisError {
    RedisError::String(format!("ERR wrong number of arguments for '{command}' command"))
}

/// Redis's reply to an increment that is not an integer.
pub const NOT_AN_INTEGER: &str = "ERR value is not an integer or out of range";

/// Redis's reply to an increment of a field that does not hold an integer.
pub const HASH_NOT_AN_INTEGER: &str = "ERR hash value is not an integer";

/// Redis's reply to an increment that would overflow.
pub fn overflow() -> RedisError {
    RedisError::Str("ERR increment or decrement would overflow")
}

// Clients waiting for their rows (`SYNC.HSET`, `SYNC.WAIT`).

/// Postgres rejected the row a client waited for.
pub fn rejected_text(why: &str) -> String {
    format!("ERR Postgres rejected the row: {why}")
}

/// A waiting client timed out and its wait was already gone.
pub const TIMED_OUT: &str = "ERR pgsync: timed out";

/// `SYNC.HSET` timed out (`after`: ` after N ms`, or empty).
pub fn not_committed_text(after: &str) -> String {
    format!(
        "ERR pgsync: the row is not committed yet{after} (pgsync.hset-timeout-ms); \
         the change stays queued and lands when Postgres is back"
    )
}

/// The reply of a `SYNC.HSET` client whose row moved away before it synced.
pub const MOVED_AWAY: &str =
    "ERR pgsync: the row moved to another cluster node (resharding); that node syncs its change";

// Read-through.

/// A read whose load failed or timed out, with `pgsync.read-through-on-error error`.
pub fn read_through_failed(why: &str) -> RedisError {
    RedisError::String(format!("ERR pgsync read-through: {why}"))
}

/// A read of a row to load while the loader does not run.
pub fn read_through_not_running() -> RedisError {
    RedisError::Str("ERR pgsync read-through is not running")
}

/// `SYNC.DELETE` wrapping another command than it runs.
pub const DELETE_RUNS: &str = "ERR SYNC.DELETE runs DEL or UNLINK";

/// `SYNC.REMOVE` wrapping another command than it runs.
pub const REMOVE_RUNS: &str = "ERR SYNC.REMOVE runs HDEL or HGETDEL";

/// `SYNC.WRITE` wrapping another command than it runs.
pub const WRITE_RUNS: &str = "ERR SYNC.WRITE runs HSET, HMSET, HSETNX, HSETEX, HINCRBY or HINCRBYFLOAT";

/// `SYNC.READ` wrapping a command it does not serve.
pub fn read_runs() -> RedisError {
    RedisError::Str("ERR SYNC.READ runs HGET, HMGET, HGETALL, HEXISTS, HLEN, HKEYS, HVALS, HSTRLEN, EXISTS or TYPE")
}

// The `SYNC.*` commands' arguments.

/// A key of no mapping.
pub fn no_mapping_for_key(key: &[u8]) -> RedisError {
    RedisError::String(format!("ERR key {} matches no mapping", String::from_utf8_lossy(key)))
}

/// A mapping name that is not in the mapping file.
pub fn unknown_mapping(name: &str) -> RedisError {
    RedisError::String(format!("ERR unknown mapping \"{name}\""))
}

/// `SYNC.HSET` on a mapping of another mode.
pub fn not_write_through(mapping: &str, mode: &str) -> RedisError {
    RedisError::String(format!("ERR mapping \"{mapping}\" is {mode}; SYNC.HSET needs a write-through mapping"))
}

/// `SYNC.HSET` on a mapping whose rows are JSON documents.
pub fn json_rows_need_jsonset(mapping: &str) -> RedisError {
    RedisError::String(format!(
        "ERR mapping \"{mapping}\" keeps its rows as JSON documents; write them with SYNC.JSONSET"
    ))
}

/// Why a hash write to a key of a `"type": "json"` mapping is refused (the
/// text after `refused: `, see [`refused`]).
pub const JSON_ROWS_TAKE_JSON: &str =
    "the mapping keeps its rows as JSON documents; write them with JSON.SET (or SYNC.JSONSET)";

/// `SYNC.JSONSET` on a mapping that does not write JSON rows to Postgres.
pub fn jsonset_needs_json_mapping(mapping: &str, mode: &str, json: bool) -> RedisError {
    let what = if json { format!("is {mode}") } else { "keeps its rows as hashes (use SYNC.HSET)".to_string() };
    RedisError::String(format!(
        "ERR mapping \"{mapping}\" {what}; SYNC.JSONSET needs a \"type\": \"json\" write-through or write-behind mapping"
    ))
}

/// `SYNC.HSET` given the `#` field.
pub fn hset_takes_no_op_field() -> RedisError {
    RedisError::Str("ERR SYNC.HSET does not take the # field")
}

/// `SYNC.HSET` on a key whose writes are not synced.
pub fn not_synced() -> RedisError {
    RedisError::Str("ERR the key is not synced")
}

/// `SYNC.WAIT` given a bad timeout.
pub fn bad_timeout() -> RedisError {
    RedisError::Str("ERR timeout-ms must be a non-negative integer")
}

/// A reload that failed.
pub fn reload_failed(why: impl std::fmt::Display) -> RedisError {
    RedisError::String(format!("ERR reload failed: {why}"))
}

/// A reload thread that panicked.
pub fn reload_bug() -> RedisError {
    RedisError::Str("ERR pgsync internal error during the reload")
}

/// `SYNC.FAILED`'s `COUNT` without its number.
pub fn count_needs_number() -> RedisError {
    RedisError::Str("ERR COUNT needs a number")
}

/// `SYNC.FAILED`'s `COUNT` not a number.
pub fn count_not_a_number() -> RedisError {
    RedisError::Str("ERR COUNT must be a non-negative integer")
}

/// `SYNC.FAILED` with other arguments.
pub fn failed_syntax() -> RedisError {
    RedisError::Str("ERR syntax: SYNC.FAILED [mapping] [COUNT n]")
}

/// `SYNC.RETRY`/`SYNC.DISCARD` of an entry that is not listed.
pub fn no_failed_entry(entry: &str) -> RedisError {
    RedisError::String(format!("ERR no failed entry \"{entry}\""))
}

/// `SYNC.RETRY` of a row whose key another cluster node serves.
pub fn slot_not_served(key: &str) -> RedisError {
    RedisError::String(format!(
        "ERR pgsync: {key} is in a slot this cluster node does not serve; write the row on its node"
    ))
}

/// `SYNC.RETRY` of a row with a newer change on its way.
pub fn newer_change_pending(id: &str, mapping: &str) -> RedisError {
    RedisError::String(format!(
        "ERR pgsync: row {id} of {mapping} has a newer change on its way; retry once it has settled (SYNC.WAIT)"
    ))
}

/// A client ran `SYNC.CDC`: the logical stream's position is the module's own.
pub fn cdc_is_internal() -> RedisError {
    RedisError::Str("ERR SYNC.CDC is internal to pgsync: the module replicates its own position")
}

/// A replicated `SYNC.CDC SET` whose position is not a number.
pub fn bad_cdc_position() -> RedisError {
    RedisError::Str("ERR bad position")
}

/// A replica asked for part of a JSON row it does not hold.
pub fn replica_json_path() -> RedisError {
    RedisError::Str(
        "ERR pgsync read-through: a replica answers JSON.GET of a row it does not hold only for the whole \
         document (no path, $ or .); read it on the primary",
    )
}

/// `SYNC.JSONWRITE` named a command it does not wrap.
pub const JSONWRITE_RUNS: &str = "ERR SYNC.JSONWRITE runs RedisJSON's write commands";
