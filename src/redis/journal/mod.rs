//! The journal: the durable half of the dirty set (`dirty_set.rs` keeps it in
//! step with the in-memory queue). Every row with unsynced writes has a log of
//! records, one per write, values and acks included, kept in the module's memory
//! (`logs.rs`), appended in the same command as the write and replicated with it
//! as `SYNC.JOURNAL`, and saved in the RDB as the module's auxiliary data
//! (`persist.rs`): the AOF, the RDB and the replicas carry the write and its
//! record together, and no key of the keyspace holds them. A settled change
//! leaves the log holding only what was written since, and after a restart or a
//! promotion the logs are queued again ([`recovery`]). Logs kept as keys (by the
//! previous version, or travelling between cluster nodes) are moved into memory
//! when found (`keys.rs`). See docs/journal.md.

pub(crate) mod keys;
pub mod logs;
pub mod persist;

pub use keys::is_journal_key;

use crate::model::journal_log::{frame, records};
use crate::redis::redis_io::warn;
use logs::Op;
use redis_module::Context;

/// Appends the record of a write to the log of the row written through `key`.
pub fn append(ctx: &Context, key: &[u8], record: &[u8]) {
    logs::write(ctx, Op::Append, key, &frame(record));
}

/// Replaces the log of the row written through `key` with one record (a
/// compaction, or what is still pending once a batch settles).
pub fn rewrite(ctx: &Context, key: &[u8], record: &[u8]) {
    logs::write(ctx, Op::Set, key, &frame(record));
}

/// Deletes the log of the row written through `key`: nothing of it is unsynced.
pub fn forget(ctx: &Context, key: &[u8]) {
    logs::write(ctx, Op::Del, key, &[]);
}

/// Marks the first `prefix` bytes of the log of the row written through `key` as
/// written by the batch with commit marker `marker` (see `logs::Op::Mark`).
pub fn mark(ctx: &Context, key: &[u8], marker: i64, prefix: usize) {
    logs::write(ctx, Op::Mark, key, &logs::mark_bytes(marker, prefix));
}

/// The length of the log of the row written through `key`.
pub fn log_len(key: &[u8]) -> usize {
    logs::log_len(key)
}

/// Whether the row written through `key` has unsynced records.
pub fn has_log(key: &[u8]) -> bool {
    logs::contains(key)
}

/// Whether `key` names a log kept as a key (not the previous version's hash).
pub fn is_log_key(key: &[u8]) -> bool {
    key.starts_with(keys::PREFIX)
}

/// The row key a log kept as a key was named after.
pub fn row_key_of(log: &[u8]) -> Option<&[u8]> {
    keys::row_key_of(log)
}

/// The name of the key the log of the row written through `key` is written to
/// when it travels (a key of the row's slot).
pub fn key_name(ctx: &Context, key: &[u8]) -> Vec<u8> {
    keys::key_for(ctx, key)
}

/// Moves the log of the row written through `key` out of memory into a key of
/// the row's slot, for `MIGRATE` to carry; returns that key's name.
pub fn to_key(ctx: &Context, key: &[u8]) -> Option<Vec<u8>> {
    let log = logs::read(key)?;
    let name = key_name(ctx, key);
    keys::write(ctx, &name, &log);
    logs::write(ctx, Op::Del, key, &[]);
    Some(name)
}

/// Moves a log kept as the key `journal` into memory (after an upgrade, after
/// `MIGRATE` brought it, or after a `MIGRATE` that failed to carry it away); the
/// key's records come before any the row has in memory. Returns the row key;
/// `None` (with a log line, the key deleted) for a key naming no row or holding
/// no whole records.
pub fn from_key(ctx: &Context, journal: &[u8]) -> Option<Vec<u8>> {
    let old = keys::read(ctx, journal)?;
    keys::delete(ctx, journal);
    let Some(row_key) = keys::row_key_of(journal).map(<[u8]>::to_vec) else {
        warn(&format!("dropped the journal {}: it names no row", journal.escape_ascii()));
        return None;
    };
    if records(&old).is_none() {
        warn(&format!("dropped the unreadable journal {}", journal.escape_ascii()));
        return None;
    }
    match logs::read(&row_key) {
        None => logs::write(ctx, Op::Set, &row_key, &old),
        Some(newer) => logs::write(ctx, Op::Set, &row_key, &[old, newer].concat()),
    }
    Some(row_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_keys_name_their_row() {
        assert_eq!(keys::row_key_of(b"pgsync:journal:{items:42}"), Some(&b"items:42"[..]));
        assert_eq!(keys::row_key_of(b"pgsync:journal:{x7}__{users:1}"), Some(&b"__{users:1}"[..]));
        assert_eq!(keys::row_key_of(b"items:42"), None);
    }
}
