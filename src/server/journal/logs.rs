//! The journal's logs, in the module's own memory: one log per row with unsynced
//! writes, named by the key the row is written through (`users:42`, or
//! `__{users:42}` for write-through), holding the row's records. Nothing of it is
//! a Redis key, so `DBSIZE`, `SCAN`, eviction and a stray `DEL` never see it.
//!
//! It persists and replicates with the data:
//! - every change to a log is sent to the AOF and the replicas as a
//!   `SYNC.JOURNAL` command (APPEND, SET or DEL), in the same unit as the write
//!   that caused it; a replica or an AOF replay runs that command to rebuild the
//!   same log ([`apply_replicated`]);
//! - an RDB (a snapshot, the base of a rewritten AOF, a full resync) holds every
//!   log as the module's auxiliary data (`persist.rs`).
//!
//! Only the holder of the Redis lock touches the logs (the main thread, or a
//! worker inside a thread-safe context's lock), so the mutex is never contended,
//! and is free whenever Redis forks a child that saves them.

use crate::server::redis_io::{api, warn};
use indexmap::IndexMap;
use redis_module::Context;
use std::ffi::{c_char, CStr};
use std::sync::{LazyLock, Mutex, MutexGuard};

type Map = IndexMap<Vec<u8>, Vec<u8>, ahash::RandomState>;

static LOGS: LazyLock<Mutex<Map>> = LazyLock::new(|| Mutex::new(Map::default()));

fn logs() -> MutexGuard<'static, Map> {
    LOGS.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A change to one log, as replicated.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Op {
    /// Appends bytes (records) to the log, creating it if needed.
    Append,
    /// Replaces the log with the bytes.
    Set,
    /// Removes the log.
    Del,
}

impl Op {
    fn name(self) -> &'static CStr {
        match self {
            Op::Append => c"APPEND",
            Op::Set => c"SET",
            Op::Del => c"DEL",
        }
    }

    /// The operation a replicated `SYNC.JOURNAL` names.
    pub fn parse(name: &[u8]) -> Option<Op> {
        [Op::Append, Op::Set, Op::Del].into_iter().find(|op| name.eq_ignore_ascii_case(op.name().to_bytes()))
    }
}

/// Applies `op` to the log of `key` without replicating it.
fn apply(map: &mut Map, op: Op, key: &[u8], bytes: &[u8]) -> bool {
    match op {
        Op::Append => match map.get_mut(key) {
            Some(log) => log.extend_from_slice(bytes),
            None => {
                map.insert(key.to_vec(), bytes.to_vec());
            }
        },
        Op::Set => {
            map.insert(key.to_vec(), bytes.to_vec());
        }
        Op::Del => {
            let removed = map.swap_remove(key).is_some();
            give_back(map);
            return removed;
        }
    }
    true
}

/// A drained backlog gives its memory back: once the logs fill less than an
/// eighth of the map, it shrinks to twice their number (a rehash of the few
/// left, amortized over the many removals since it grew).
fn give_back(map: &mut Map) {
    if map.capacity() > 4096 && map.len() * 8 < map.capacity() {
        map.shrink_to(map.len() * 2);
    }
}

/// Changes the log of `key` and sends the change to the AOF and the replicas.
pub fn write(ctx: &Context, op: Op, key: &[u8], bytes: &[u8]) {
    if apply(&mut logs(), op, key, bytes) {
        replicate(ctx, op, key, bytes);
    }
}

/// A `SYNC.JOURNAL` from the primary or the AOF: the same change, unreplicated
/// (the caller replicates it verbatim to chained replicas).
pub fn apply_replicated(op: Op, key: &[u8], bytes: &[u8]) {
    apply(&mut logs(), op, key, bytes);
}

/// The log of `key`, if there is one.
pub fn read(key: &[u8]) -> Option<Vec<u8>> {
    logs().get(key).cloned()
}

/// Whether `key` has a log.
pub fn contains(key: &[u8]) -> bool {
    logs().contains_key(key)
}

/// How many rows have a log, and their bytes (keys and records).
pub fn size() -> (usize, usize) {
    let logs = logs();
    (logs.len(), logs.iter().map(|(k, v)| k.len() + v.len()).sum())
}

/// How many logs there are (a recovery walks positions below this).
pub fn len() -> usize {
    logs().len()
}

/// The key of the log at `index`. Removing a log moves the last one into its
/// place, so a walk from the end towards 0 never misses a log that was there
/// when it started (it may see one twice).
pub fn key_at(index: usize) -> Option<Vec<u8>> {
    logs().get_index(index).map(|(key, _)| key.clone())
}

/// Forgets every log: the data went with `FLUSHALL` or is about to be loaded anew.
pub fn clear() {
    let mut logs = logs();
    logs.clear();
    logs.shrink_to_fit();
}

/// Calls `f` on every log, for a save.
pub fn for_each(mut f: impl FnMut(&[u8], &[u8])) {
    logs().iter().for_each(|(key, log)| f(key, log));
}

/// Replaces every log, after a load.
pub fn replace_all(entries: Vec<(Vec<u8>, Vec<u8>)>) {
    let mut logs = logs();
    logs.clear();
    logs.extend(entries);
}

/// Sends `SYNC.JOURNAL <op> <key> [<bytes>]` to the AOF and the replicas, with
/// binary buffers (no Redis string is made on the write path).
fn replicate(ctx: &Context, op: Op, key: &[u8], bytes: &[u8]) {
    let Some(replicate) = api!(RedisModule_Replicate) else { return };
    let command = c"SYNC.JOURNAL";
    let name = op.name();
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
            Op::Append | Op::Set => replicate(
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
    fn ops_change_one_log() {
        let mut map = Map::default();
        assert!(apply(&mut map, Op::Append, b"a", b"1"));
        assert!(apply(&mut map, Op::Append, b"a", b"2"));
        assert_eq!(map.get(&b"a"[..]).map(Vec::as_slice), Some(&b"12"[..]));
        apply(&mut map, Op::Set, b"a", b"3");
        assert_eq!(map.get(&b"a"[..]).map(Vec::as_slice), Some(&b"3"[..]));
        assert!(apply(&mut map, Op::Del, b"a", b""));
        assert!(!apply(&mut map, Op::Del, b"a", b""), "nothing to delete: nothing to replicate");
    }

    #[test]
    fn a_walk_from_the_end_misses_no_log_when_others_are_removed() {
        let mut map = Map::default();
        for i in 0..10u8 {
            apply(&mut map, Op::Set, &[i], b"x");
        }
        let mut seen = std::collections::HashSet::new();
        let mut cursor = map.len();
        while cursor > 0 {
            cursor = cursor.min(map.len());
            if cursor == 0 {
                break;
            }
            let key = map.get_index(cursor - 1).map(|(k, _)| k.clone()).unwrap_or_default();
            seen.insert(key.clone());
            cursor -= 1;
            // Each step removes a log not seen yet, or one seen, as settles do.
            if key[0] % 3 == 0 {
                map.swap_remove(&[key[0] / 2][..]);
            }
        }
        for (key, _) in &map {
            assert!(seen.contains(key), "log {key:?} missed");
        }
    }

    #[test]
    fn op_names_parse_back() {
        for op in [Op::Append, Op::Set, Op::Del] {
            assert_eq!(Op::parse(op.name().to_bytes()), Some(op));
        }
        assert_eq!(Op::parse(b"append"), Some(Op::Append));
        assert_eq!(Op::parse(b"GET"), None);
    }
}
