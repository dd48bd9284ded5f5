//! The journal's logs, in the module's own memory: one log per row with unsynced
//! writes, named by the key the row is written through (`users:42`, or
//! `__{users:42}` for write-through), holding the row's records. Nothing of it is
//! a Redis key, so `DBSIZE`, `SCAN`, eviction and a stray `DEL` never see it.
//!
//! It persists and replicates with the data:
//! - every change to a log is sent to the AOF and the replicas as a
//!   `SYNC.JOURNAL` command (APPEND, SET, DEL or MARK), in the same unit as the write
//!   that caused it; a replica or an AOF replay runs that command to rebuild the
//!   same log ([`apply_replicated`]);
//! - an RDB (a snapshot, the base of a rewritten AOF, a full resync) holds every
//!   log as the module's auxiliary data (`persist.rs`).
//!
//! The structure itself is `model/log_map/`. Only the holder of the Redis
//! lock touches the logs (the main thread, or a
//! worker inside a thread-safe context's lock), so the mutex is never contended,
//! and is free whenever Redis forks a child that saves them.

use crate::model::log_map::LogMap;
pub use crate::model::log_map::{mark_bytes, Marks, Op, SHARDS};
use crate::redis::redis_io::{api, warn};
use redis_module::Context;
use std::ffi::{c_char, CStr};
use std::sync::{LazyLock, Mutex, MutexGuard};

static LOGS: LazyLock<Mutex<LogMap>> = LazyLock::new(|| Mutex::new(LogMap::default()));

fn logs() -> MutexGuard<'static, LogMap> {
    LOGS.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The name of an operation, as replicated.
fn name(op: Op) -> &'static CStr {
    match op {
        Op::Append => c"APPEND",
        Op::Set => c"SET",
        Op::Del => c"DEL",
        Op::Mark => c"MARK",
    }
}

/// The operation a replicated `SYNC.JOURNAL` names.
pub fn parse_op(text: &[u8]) -> Option<Op> {
    [Op::Append, Op::Set, Op::Del, Op::Mark].into_iter().find(|op| text.eq_ignore_ascii_case(name(*op).to_bytes()))
}

/// Changes the log of `key` and sends the change to the AOF and the replicas.
pub fn write(ctx: &Context, op: Op, key: &[u8], bytes: &[u8]) {
    if logs().apply(op, key, bytes) {
        replicate(ctx, op, key, bytes);
    }
}

/// A `SYNC.JOURNAL` from the primary or the AOF: the same change, unreplicated
/// (the caller replicates it verbatim to chained replicas).
pub fn apply_replicated(op: Op, key: &[u8], bytes: &[u8]) {
    logs().apply(op, key, bytes);
}

/// The log of `key`, if there is one.
pub fn read(key: &[u8]) -> Option<Vec<u8>> {
    logs().get(key).map(<[u8]>::to_vec)
}

/// The log of `key` and its marks.
pub fn read_marked(key: &[u8]) -> Option<(Vec<u8>, Marks)> {
    let logs = logs();
    Some((logs.get(key)?.to_vec(), logs.marks(key)))
}

/// The length of the log of `key` (0 without one).
pub fn log_len(key: &[u8]) -> usize {
    logs().get(key).map_or(0, <[u8]>::len)
}

/// Whether `key` has a log.
pub fn contains(key: &[u8]) -> bool {
    logs().get(key).is_some()
}

/// How many rows have a log, and their bytes (keys and records).
pub fn size() -> (usize, usize) {
    logs().size()
}

/// How many logs shard `shard` holds (a recovery walks positions below this).
pub fn shard_len(shard: usize) -> usize {
    logs().shard_len(shard)
}

/// The key of the log at `index` of shard `shard` (see `LogMap` on walks).
pub fn key_at(shard: usize, index: usize) -> Option<Vec<u8>> {
    logs().key_at(shard, index).map(<[u8]>::to_vec)
}

/// Keeps the logs indexed by cluster slot from now on (in a cluster).
pub fn index_slots() {
    logs().index_slots();
}

/// The keys of the logs in cluster slot `slot` (in a cluster).
pub fn keys_in_slot(slot: u16) -> Vec<Vec<u8>> {
    logs().keys_in_slot(slot).cloned().collect()
}

/// Forgets every log: the data went with `FLUSHALL` or is about to be loaded anew.
pub fn clear() {
    logs().clear();
}

/// Calls `log` on every log, for a save.
pub fn for_each_log(log: impl FnMut(&[u8], &[u8])) {
    logs().for_each_log(log);
}

/// Calls `mark` on every mark, for a save.
pub fn for_each_mark(mark: impl FnMut(&[u8], i64, usize)) {
    logs().for_each_mark(mark);
}

/// How many marks there are, for a save.
pub fn mark_count() -> usize {
    logs().mark_count()
}

/// Replaces every log and mark, after a load.
pub fn replace_all(entries: Vec<(Vec<u8>, Vec<u8>)>, marks: Vec<(Vec<u8>, i64, usize)>) {
    let mut logs = logs();
    logs.clear();
    for (key, bytes) in entries {
        logs.apply(Op::Set, &key, &bytes);
    }
    for (key, id, len) in marks {
        logs.apply(Op::Mark, &key, &mark_bytes(id, len));
    }
}

/// Sends `SYNC.JOURNAL <op> <key> [<bytes>]` to the AOF and the replicas, with
/// binary buffers (no Redis string is made on the write path).
fn replicate(ctx: &Context, op: Op, key: &[u8], bytes: &[u8]) {
    let Some(replicate) = api!(RedisModule_Replicate) else { return };
    let command = c"SYNC.JOURNAL";
    let name = name(op);
    // SAFETY: the format names a C string then one or two (pointer, length)
    // buffers, matching the arguments; Redis copies them before returning.
    let status = unsafe {
        match op {
            Op::Del => replicate(
                ctx.ctx,
                command.as_ptr(),
                c"cb".as_ptr(),
                name.as_ptr(),
                key.as_ptr() as *const c_char,
                key.len(),
            ),
            Op::Append | Op::Set | Op::Mark => replicate(
                ctx.ctx,
                command.as_ptr(),
                c"cbb".as_ptr(),
                name.as_ptr(),
                key.as_ptr() as *const c_char,
                key.len(),
                bytes.as_ptr() as *const c_char,
                bytes.len(),
            ),
        }
    };
    if status != redis_module::raw::REDISMODULE_OK as std::os::raw::c_int {
        warn("could not replicate a change of the journal");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_names_parse_back() {
        for op in [Op::Append, Op::Set, Op::Del, Op::Mark] {
            assert_eq!(parse_op(name(op).to_bytes()), Some(op));
        }
        assert_eq!(parse_op(b"append"), Some(Op::Append));
        assert_eq!(parse_op(b"GET"), None);
    }
}
