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

/// The marks of in-flight batches on a log: (the batch's commit marker, the
/// length of the log's prefix it wrote). See [`Op::Mark`].
pub type Marks = Vec<(i64, usize)>;

/// The logs, and the marks on some of them.
#[derive(Default)]
struct Journal {
    logs: Map,
    marks: ahash::HashMap<Vec<u8>, Marks>,
}

static JOURNAL: LazyLock<Mutex<Journal>> = LazyLock::new(|| Mutex::new(Journal::default()));

fn journal() -> MutexGuard<'static, Journal> {
    JOURNAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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
    /// Marks the log's first `len` bytes as written by a batch whose commit
    /// marker is `id` (bytes: `id` then `len`, each 8 bytes little endian),
    /// before that batch commits: after a crash or a promotion, a committed
    /// marker says those records are in Postgres already. Replacing or removing
    /// the log drops its marks.
    Mark,
}

/// The bytes of a mark.
pub fn mark_bytes(id: i64, len: usize) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&id.to_le_bytes());
    out[8..].copy_from_slice(&(len as u64).to_le_bytes());
    out
}

fn parse_mark(bytes: &[u8]) -> Option<(i64, usize)> {
    let id = i64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let len = u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?);
    Some((id, usize::try_from(len).ok()?))
}

impl Op {
    fn name(self) -> &'static CStr {
        match self {
            Op::Append => c"APPEND",
            Op::Set => c"SET",
            Op::Del => c"DEL",
            Op::Mark => c"MARK",
        }
    }

    /// The operation a replicated `SYNC.JOURNAL` names.
    pub fn parse(name: &[u8]) -> Option<Op> {
        [Op::Append, Op::Set, Op::Del, Op::Mark].into_iter().find(|op| name.eq_ignore_ascii_case(op.name().to_bytes()))
    }
}

/// Applies `op` to the log of `key` without replicating it; false when it
/// changed nothing.
fn apply(journal: &mut Journal, op: Op, key: &[u8], bytes: &[u8]) -> bool {
    let map = &mut journal.logs;
    match op {
        Op::Append => match map.get_mut(key) {
            Some(log) => log.extend_from_slice(bytes),
            None => {
                map.insert(key.to_vec(), bytes.to_vec());
            }
        },
        Op::Set => {
            map.insert(key.to_vec(), bytes.to_vec());
            journal.marks.remove(key);
        }
        Op::Del => {
            let removed = map.swap_remove(key).is_some();
            give_back(map);
            journal.marks.remove(key);
            return removed;
        }
        Op::Mark => {
            let Some(mark) = parse_mark(bytes).filter(|_| map.contains_key(key)) else { return false };
            journal.marks.entry(key.to_vec()).or_default().push(mark);
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
    if apply(&mut journal(), op, key, bytes) {
        replicate(ctx, op, key, bytes);
    }
}

/// A `SYNC.JOURNAL` from the primary or the AOF: the same change, unreplicated
/// (the caller replicates it verbatim to chained replicas).
pub fn apply_replicated(op: Op, key: &[u8], bytes: &[u8]) {
    apply(&mut journal(), op, key, bytes);
}

/// The log of `key`, if there is one.
pub fn read(key: &[u8]) -> Option<Vec<u8>> {
    journal().logs.get(key).cloned()
}

/// The log of `key` and its marks.
pub fn read_marked(key: &[u8]) -> Option<(Vec<u8>, Marks)> {
    let journal = journal();
    let log = journal.logs.get(key)?.clone();
    Some((log, journal.marks.get(key).cloned().unwrap_or_default()))
}

/// The length of the log of `key` (0 without one).
pub fn log_len(key: &[u8]) -> usize {
    journal().logs.get(key).map_or(0, Vec::len)
}

/// Whether `key` has a log.
pub fn contains(key: &[u8]) -> bool {
    journal().logs.contains_key(key)
}

/// How many rows have a log, and their bytes (keys and records).
pub fn size() -> (usize, usize) {
    let journal = journal();
    (journal.logs.len(), journal.logs.iter().map(|(k, v)| k.len() + v.len()).sum())
}

/// How many logs there are (a recovery walks positions below this).
pub fn len() -> usize {
    journal().logs.len()
}

/// The key of the log at `index`. Removing a log moves the last one into its
/// place, so a walk from the end towards 0 never misses a log that was there
/// when it started (it may see one twice).
pub fn key_at(index: usize) -> Option<Vec<u8>> {
    journal().logs.get_index(index).map(|(key, _)| key.clone())
}

/// Forgets every log: the data went with `FLUSHALL` or is about to be loaded anew.
pub fn clear() {
    let mut journal = journal();
    journal.logs.clear();
    journal.logs.shrink_to_fit();
    journal.marks.clear();
    journal.marks.shrink_to_fit();
}

/// Calls `log` on every log, then `mark` on every mark, for a save.
pub fn for_each(mut log: impl FnMut(&[u8], &[u8]), mut mark: impl FnMut(&[u8], i64, usize)) {
    let journal = journal();
    journal.logs.iter().for_each(|(key, bytes)| log(key, bytes));
    for (key, marks) in &journal.marks {
        marks.iter().for_each(|(id, len)| mark(key, *id, *len));
    }
}

/// How many marks there are, for a save.
pub fn mark_count() -> usize {
    journal().marks.values().map(Vec::len).sum()
}

/// Replaces every log and mark, after a load.
pub fn replace_all(entries: Vec<(Vec<u8>, Vec<u8>)>, marks: Vec<(Vec<u8>, i64, usize)>) {
    let mut journal = journal();
    journal.logs.clear();
    journal.marks.clear();
    journal.logs.extend(entries);
    for (key, id, len) in marks {
        journal.marks.entry(key).or_default().push((id, len));
    }
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
    fn ops_change_one_log() {
        let mut journal = Journal::default();
        assert!(apply(&mut journal, Op::Append, b"a", b"1"));
        assert!(apply(&mut journal, Op::Append, b"a", b"2"));
        assert_eq!(journal.logs.get(&b"a"[..]).map(Vec::as_slice), Some(&b"12"[..]));
        apply(&mut journal, Op::Set, b"a", b"3");
        assert_eq!(journal.logs.get(&b"a"[..]).map(Vec::as_slice), Some(&b"3"[..]));
        assert!(apply(&mut journal, Op::Del, b"a", b""));
        assert!(!apply(&mut journal, Op::Del, b"a", b""), "nothing to delete: nothing to replicate");
    }

    #[test]
    fn marks_live_until_the_log_is_replaced_or_removed() {
        let mut journal = Journal::default();
        assert!(!apply(&mut journal, Op::Mark, b"a", &mark_bytes(7, 1)), "no log, no mark");
        apply(&mut journal, Op::Append, b"a", b"12");
        assert!(apply(&mut journal, Op::Mark, b"a", &mark_bytes(7, 2)));
        apply(&mut journal, Op::Append, b"a", b"3");
        assert!(apply(&mut journal, Op::Mark, b"a", &mark_bytes(-8, 3)));
        assert_eq!(journal.marks.get(&b"a"[..]), Some(&vec![(7, 2), (-8, 3)]));
        apply(&mut journal, Op::Set, b"a", b"4");
        assert_eq!(journal.marks.get(&b"a"[..]), None);
        apply(&mut journal, Op::Mark, b"a", &mark_bytes(9, 1));
        apply(&mut journal, Op::Del, b"a", b"");
        assert!(journal.marks.is_empty());
        assert!(!apply(&mut journal, Op::Mark, b"a", b"short"), "a cut mark is ignored");
    }

    #[test]
    fn a_walk_from_the_end_misses_no_log_when_others_are_removed() {
        let mut journal = Journal::default();
        for i in 0..10u8 {
            apply(&mut journal, Op::Set, &[i], b"x");
        }
        let map = &mut journal.logs;
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
        for (key, _) in map.iter() {
            assert!(seen.contains(key), "log {key:?} missed");
        }
    }

    #[test]
    fn op_names_parse_back() {
        for op in [Op::Append, Op::Set, Op::Del, Op::Mark] {
            assert_eq!(Op::parse(op.name().to_bytes()), Some(op));
        }
        assert_eq!(Op::parse(b"append"), Some(Op::Append));
        assert_eq!(Op::parse(b"GET"), None);
    }
}
