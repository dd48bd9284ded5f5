//! The journal's logs as a data structure: row key → log bytes, plus the marks
//! of in-flight batches on some logs. Pure; `redis/journal/logs.rs` holds the
//! one instance and replicates its changes.
//!
//! - **Sharded.** 64 maps, so that growing never moves every log at once (one
//!   map of a million logs doubling in one step would stall the server).
//! - **Walkable.** Each shard keeps its logs in a vector, found through a
//!   table of their positions, so a recovery can read them by position and
//!   resume where it stopped. Removing a log moves its shard's last log into
//!   its place, so a walk from the end of a shard towards its start never
//!   misses a log that was there when it began (it may see one twice).
//! - **Dense.** The table holds 4-byte positions and no hashes (a key is
//!   hashed again when its shard's table grows); the vector grows by doubling
//!   on its own schedule. An `IndexMap` held 8-byte positions, a stored hash
//!   per log, and room for as many logs as its table, which at 1M logs is
//!   nearly twice as many.
//! - **Counted.** The number of logs and their bytes are kept as they change, so
//!   `SYNC.STATUS` costs the same with a million logs as with none.
//! - **Indexed by cluster slot** when asked ([`LogMap::index_slots`], in a
//!   cluster): a reshard asks for a slot's logs whose row has no key on the node
//!   (a pending delete, an evicted key), which `CLUSTER GETKEYSINSLOT` cannot
//!   list, without walking every log.

use crate::model::slots::key_slot;
use ahash::{AHashMap, AHashSet};
use hashbrown::HashTable;
use smallvec::SmallVec;
use std::collections::HashMap;

/// Shards of a [`LogMap`].
pub const SHARDS: usize = 64;

/// A log's key, inline up to 24 bytes (most row keys): a lookup compares it in
/// the entry it already reads, without a cache miss on a separate allocation.
type LogKey = SmallVec<[u8; 24]>;

/// A log's records, after a u32 of how many bytes of them are in use, in one
/// boxed slice (16 bytes in the entry where a `Vec` takes 24). Exact when made
/// (most logs hold one record and never grow); an append that does not fit
/// grows it to half again what it needs, so a row written over and over
/// copies its log O(1) times per write amortized, not at every write (which
/// was ~5% of a routed HSET's time: the allocator moves a slice that changes
/// size class).
struct Log(Box<[u8]>);

/// Bytes of a [`Log`]'s length header.
const HEADER: usize = 4;

impl Log {
    fn new(bytes: &[u8]) -> Log {
        let mut out = Vec::with_capacity(HEADER + bytes.len());
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(bytes);
        Log(out.into_boxed_slice())
    }

    fn len(&self) -> usize {
        self.0.get(..HEADER).and_then(|h| h.try_into().ok()).map_or(0, u32::from_le_bytes) as usize
    }

    fn bytes(&self) -> &[u8] {
        self.0.get(HEADER..HEADER + self.len()).unwrap_or_default()
    }

    fn append(&mut self, more: &[u8]) {
        let used = HEADER + self.len();
        let needed = used + more.len();
        if needed <= self.0.len() {
            self.0[used..needed].copy_from_slice(more);
        } else {
            let room = needed + needed / 2;
            let mut grown = Vec::with_capacity(room);
            grown.extend_from_slice(&self.0[..used]);
            grown.extend_from_slice(more);
            // In full, so that the box keeps the room (a boxed slice is its length).
            grown.resize(room, 0);
            self.0 = grown.into_boxed_slice();
        }
        self.0[..HEADER].copy_from_slice(&((needed - HEADER) as u32).to_le_bytes());
    }
}

/// One shard; see the module docs.
#[derive(Default)]
struct Shard {
    logs: Vec<(LogKey, Log)>,
    /// Positions in `logs`, by the hash of their key.
    at: HashTable<u32>,
}

impl Shard {
    /// The position of the log of `key`, whose hash is `hash`.
    fn find(&self, hash: u64, key: &[u8]) -> Option<usize> {
        let logs = &self.logs;
        self.at.find(hash, |&i| logs.get(i as usize).is_some_and(|(k, _)| k.as_slice() == key)).map(|&i| i as usize)
    }

    fn get_mut(&mut self, hash: u64, key: &[u8]) -> Option<&mut Log> {
        let at = self.find(hash, key)?;
        self.logs.get_mut(at).map(|(_, log)| log)
    }

    /// Adds the log of `key`, which has none.
    fn push(&mut self, hasher: &ahash::RandomState, hash: u64, key: &[u8], log: Log) {
        // A shard never holds 2^32 logs: they would take more than 192 GiB.
        let position = self.logs.len() as u32;
        self.logs.push((LogKey::from_slice(key), log));
        let logs = &self.logs;
        self.at.insert_unique(hash, position, |&i| rehash(hasher, logs, i));
    }

    /// Removes the log of `key`; the shard's last log takes its position.
    fn swap_remove(&mut self, hasher: &ahash::RandomState, hash: u64, key: &[u8]) -> Option<Log> {
        let logs = &self.logs;
        let found = self.at.find_entry(hash, |&i| logs.get(i as usize).is_some_and(|(k, _)| k.as_slice() == key));
        let (position, _) = found.ok()?.remove();
        let (_, log) = self.logs.swap_remove(position as usize);
        if let Some((moved, _)) = self.logs.get(position as usize) {
            let last = self.logs.len() as u32;
            if let Some(slot) = self.at.find_mut(hasher.hash_one(moved.as_slice()), |&i| i == last) {
                *slot = position;
            }
        }
        Some(log)
    }

    /// A drained shard gives its memory back: once its logs fill less than an
    /// eighth of it, it shrinks to twice their number (a rehash of the few left,
    /// amortized over the many removals since it grew).
    fn give_back(&mut self, hasher: &ahash::RandomState) {
        if self.at.capacity() > 1024 && self.logs.len() * 8 < self.at.capacity() {
            let logs = &self.logs;
            self.at.shrink_to(logs.len() * 2, |&i| rehash(hasher, logs, i));
            self.logs.shrink_to(self.logs.len() * 2);
        }
    }
}

/// The hash of the key of the log at position `i`, for a table that moves its
/// positions.
fn rehash(hasher: &ahash::RandomState, logs: &[(LogKey, Log)], i: u32) -> u64 {
    logs.get(i as usize).map_or(0, |(key, _)| hasher.hash_one(key.as_slice()))
}

/// The marks of in-flight batches on a log: (the batch's commit marker, the
/// length of the log's prefix it wrote).
pub type Marks = Vec<(i64, usize)>;

/// A change to one log.
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

/// The logs; see the module docs.
pub struct LogMap {
    shards: Vec<Shard>,
    hasher: ahash::RandomState,
    marks: HashMap<Vec<u8>, Marks>,
    /// Slot → the keys of its logs; `None` outside a cluster.
    slots: Option<AHashMap<u16, AHashSet<Vec<u8>>>>,
    count: usize,
    bytes: usize,
}

impl Default for LogMap {
    fn default() -> Self {
        LogMap {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            hasher: ahash::RandomState::new(),
            marks: HashMap::new(),
            slots: None,
            count: 0,
            bytes: 0,
        }
    }
}

impl LogMap {
    /// The hash of `key`, and its shard: bits the table uses neither for a
    /// position (the low ones) nor for its tags (the top seven).
    fn locate(&self, key: &[u8]) -> (u64, usize) {
        let hash = self.hasher.hash_one(key);
        (hash, ((hash >> 40) % SHARDS as u64) as usize)
    }

    /// Applies `op` to the log of `key`; false when it changed nothing.
    pub fn apply(&mut self, op: Op, key: &[u8], bytes: &[u8]) -> bool {
        let (hash, shard) = self.locate(key);
        let map = &mut self.shards[shard];
        match op {
            Op::Append => match map.get_mut(hash, key) {
                Some(log) => {
                    log.append(bytes);
                    self.bytes += bytes.len();
                }
                None => {
                    map.push(&self.hasher, hash, key, Log::new(bytes));
                    self.count += 1;
                    self.bytes += key.len() + bytes.len();
                    self.index(key);
                }
            },
            Op::Set => {
                match map.get_mut(hash, key) {
                    Some(log) => {
                        self.bytes = self.bytes - log.len() + bytes.len();
                        *log = Log::new(bytes);
                    }
                    None => {
                        map.push(&self.hasher, hash, key, Log::new(bytes));
                        self.count += 1;
                        self.bytes += key.len() + bytes.len();
                        self.index(key);
                    }
                }
                self.marks.remove(key);
            }
            Op::Del => {
                let Some(old) = map.swap_remove(&self.hasher, hash, key) else { return false };
                self.count -= 1;
                self.bytes -= key.len() + old.len();
                map.give_back(&self.hasher);
                self.marks.remove(key);
                self.unindex(key);
            }
            Op::Mark => {
                let Some(mark) = parse_mark(bytes).filter(|_| map.find(hash, key).is_some()) else { return false };
                self.marks.entry(key.to_vec()).or_default().push(mark);
            }
        }
        true
    }

    /// From now on, keeps the keys of each cluster slot's logs (see the module
    /// docs); indexes the logs already here.
    pub fn index_slots(&mut self) {
        if self.slots.is_none() {
            self.slots = Some(AHashMap::new());
            let keys: Vec<Vec<u8>> =
                self.shards.iter().flat_map(|shard| shard.logs.iter().map(|(key, _)| key.to_vec())).collect();
            keys.iter().for_each(|key| self.index(key));
        }
    }

    fn index(&mut self, key: &[u8]) {
        if let Some(slots) = &mut self.slots {
            slots.entry(key_slot(key)).or_default().insert(key.to_vec());
        }
    }

    fn unindex(&mut self, key: &[u8]) {
        let Some(slots) = &mut self.slots else { return };
        let slot = key_slot(key);
        if let Some(keys) = slots.get_mut(&slot) {
            keys.remove(key);
            if keys.is_empty() {
                slots.remove(&slot);
            }
        }
    }

    /// The keys of the logs in cluster slot `slot` (none unless indexed).
    pub fn keys_in_slot(&self, slot: u16) -> impl Iterator<Item = &Vec<u8>> {
        self.slots.as_ref().and_then(|slots| slots.get(&slot)).into_iter().flatten()
    }

    /// The log of `key`.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        let (hash, shard) = self.locate(key);
        let shard = &self.shards[shard];
        shard.find(hash, key).and_then(|at| shard.logs.get(at)).map(|(_, log)| log.bytes())
    }

    /// The marks on the log of `key`.
    pub fn marks(&self, key: &[u8]) -> Marks {
        self.marks.get(key).cloned().unwrap_or_default()
    }

    /// How many logs there are, and their bytes (keys and records).
    pub fn size(&self) -> (usize, usize) {
        (self.count, self.bytes)
    }

    /// How many logs shard `shard` holds.
    pub fn shard_len(&self, shard: usize) -> usize {
        self.shards.get(shard).map_or(0, |shard| shard.logs.len())
    }

    /// The key of the log at `index` of shard `shard`.
    pub fn key_at(&self, shard: usize, index: usize) -> Option<&[u8]> {
        self.shards.get(shard)?.logs.get(index).map(|(key, _)| key.as_slice())
    }

    /// Calls `log` on every log.
    pub fn for_each_log(&self, mut log: impl FnMut(&[u8], &[u8])) {
        self.shards.iter().flat_map(|shard| &shard.logs).for_each(|(key, bytes)| log(key, bytes.bytes()));
    }

    /// Calls `mark` on every mark.
    pub fn for_each_mark(&self, mut mark: impl FnMut(&[u8], i64, usize)) {
        for (key, marks) in &self.marks {
            marks.iter().for_each(|(id, len)| mark(key, *id, *len));
        }
    }

    /// How many marks there are.
    pub fn mark_count(&self) -> usize {
        self.marks.values().map(Vec::len).sum()
    }

    /// Empties the map and gives its memory back.
    pub fn clear(&mut self) {
        let hasher = self.hasher.clone();
        let slots = self.slots.as_ref().map(|_| AHashMap::new());
        *self = LogMap { hasher, slots, ..LogMap::default() };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_change_one_log_and_the_totals() {
        let mut logs = LogMap::default();
        assert!(logs.apply(Op::Append, b"a", b"1"));
        assert!(logs.apply(Op::Append, b"a", b"2"));
        assert_eq!(logs.get(b"a"), Some(&b"12"[..]));
        assert_eq!(logs.size(), (1, 3));
        logs.apply(Op::Set, b"a", b"345");
        logs.apply(Op::Set, b"b", b"6");
        assert_eq!(logs.get(b"a"), Some(&b"345"[..]));
        assert_eq!(logs.size(), (2, 6));
        assert!(logs.apply(Op::Del, b"a", b""));
        assert!(!logs.apply(Op::Del, b"a", b""), "nothing to delete: nothing to replicate");
        assert_eq!(logs.size(), (1, 2));
    }

    #[test]
    fn the_slot_index_follows_the_logs_and_survives_a_clear() {
        let mut logs = LogMap::default();
        logs.apply(Op::Append, b"users:1", b"1");
        logs.index_slots();
        logs.apply(Op::Set, b"__{users:2}", b"2");
        logs.apply(Op::Append, b"users:2", b"3");
        let in_slot = |logs: &LogMap, key: &[u8]| {
            let mut keys: Vec<Vec<u8>> = logs.keys_in_slot(key_slot(key)).cloned().collect();
            keys.sort();
            keys
        };
        assert_eq!(in_slot(&logs, b"users:1"), vec![b"users:1".to_vec()], "indexed when the index began");
        assert_eq!(in_slot(&logs, b"users:2"), vec![b"__{users:2}".to_vec(), b"users:2".to_vec()]);
        logs.apply(Op::Del, b"users:2", b"");
        assert_eq!(in_slot(&logs, b"users:2"), vec![b"__{users:2}".to_vec()]);
        logs.clear();
        assert!(in_slot(&logs, b"users:1").is_empty());
        logs.apply(Op::Append, b"users:1", b"4");
        assert_eq!(in_slot(&logs, b"users:1"), vec![b"users:1".to_vec()], "still indexing after a clear");
        assert_eq!(LogMap::default().keys_in_slot(key_slot(b"users:1")).count(), 0, "no index outside a cluster");
    }

    #[test]
    fn a_growing_log_keeps_room_and_every_byte() {
        let mut logs = LogMap::default();
        let mut expected = Vec::new();
        for i in 0..200u8 {
            let record = vec![i; usize::from(i % 7)];
            logs.apply(Op::Append, b"hot", &record);
            expected.extend_from_slice(&record);
            assert_eq!(logs.get(b"hot"), Some(&expected[..]));
        }
        assert_eq!(logs.size(), (1, 3 + expected.len()));
        logs.apply(Op::Set, b"hot", b"one");
        assert_eq!(logs.get(b"hot"), Some(&b"one"[..]), "a rewrite is exact again");
        let mut log = Log::new(b"ab");
        assert_eq!(log.0.len(), HEADER + 2, "a new log has no room");
        log.append(b"c");
        assert!(log.0.len() > HEADER + 3, "a grown one has");
        let room = log.0.len();
        log.append(b"d");
        assert_eq!((log.0.len(), log.bytes()), (room, &b"abcd"[..]), "an append that fits stays in place");
    }

    #[test]
    fn marks_live_until_the_log_is_replaced_or_removed() {
        let mut logs = LogMap::default();
        assert!(!logs.apply(Op::Mark, b"a", &mark_bytes(7, 1)), "no log, no mark");
        logs.apply(Op::Append, b"a", b"12");
        assert!(logs.apply(Op::Mark, b"a", &mark_bytes(7, 2)));
        logs.apply(Op::Append, b"a", b"3");
        assert!(logs.apply(Op::Mark, b"a", &mark_bytes(-8, 3)));
        assert_eq!(logs.marks(b"a"), vec![(7, 2), (-8, 3)]);
        logs.apply(Op::Set, b"a", b"4");
        assert!(logs.marks(b"a").is_empty());
        logs.apply(Op::Mark, b"a", &mark_bytes(9, 1));
        logs.apply(Op::Del, b"a", b"");
        assert_eq!(logs.mark_count(), 0);
        assert!(!logs.apply(Op::Mark, b"a", b"short"), "a cut mark is ignored");
    }

    #[test]
    fn a_drained_map_finds_the_logs_left_and_gives_its_memory_back() {
        let mut logs = LogMap::default();
        for i in 0..100_000u32 {
            logs.apply(Op::Set, &i.to_le_bytes(), b"x");
        }
        let capacity = |logs: &LogMap| logs.shards.iter().map(|shard| shard.at.capacity()).sum::<usize>();
        let full = capacity(&logs);
        for i in 10..100_000u32 {
            assert!(logs.apply(Op::Del, &i.to_le_bytes(), b""));
        }
        assert!(capacity(&logs) < full / 3, "{} of {full}", capacity(&logs));
        for i in 0..10u32 {
            assert_eq!(logs.get(&i.to_le_bytes()), Some(&b"x"[..]));
        }
        assert_eq!(logs.size(), (10, 50));
    }

    /// What the logs hold per pending row of figure 6 (`PGSYNC_MEMORY_ROWS`
    /// rows, 200,000 by default: key `items:<id>`, one 60-byte record), printed
    /// for `--nocapture`; the budget catches a regression.
    #[test]
    fn memory_per_pending_row() {
        use crate::model::counting_alloc::per_thread::heap_of;
        let rows: usize = std::env::var("PGSYNC_MEMORY_ROWS").ok().and_then(|n| n.parse().ok()).unwrap_or(200_000);
        let record = [7u8; 60];
        let (logs, bytes) = heap_of(|| {
            let mut logs = LogMap::default();
            (0..rows).for_each(|id| {
                logs.apply(Op::Append, format!("items:{id}").as_bytes(), &record);
            });
            logs
        });
        let per_row = bytes as f64 / rows as f64;
        println!(
            "{rows} logs, bytes per row: {per_row:.1}, of which the records {} (map entry {} B)",
            record.len(),
            std::mem::size_of::<(LogKey, Log)>()
        );
        assert_eq!(logs.size().0, rows);
        assert!(per_row < 150.0, "{per_row:.1} B per log");
    }

    #[test]
    fn a_walk_from_the_end_of_each_shard_misses_no_log_when_others_are_removed() {
        let mut logs = LogMap::default();
        for i in 0..2000u32 {
            logs.apply(Op::Set, &i.to_le_bytes(), b"x");
        }
        let mut seen = std::collections::HashSet::new();
        for shard in (0..SHARDS).rev() {
            let mut position = logs.shard_len(shard);
            while let Some(index) = position.min(logs.shard_len(shard)).checked_sub(1) {
                let key = logs.key_at(shard, index).map(<[u8]>::to_vec).unwrap_or_default();
                seen.insert(key.clone());
                position = index;
                // Each step removes some log, seen or not, as settles do.
                let other = u32::from_le_bytes(key[..4].try_into().unwrap_or_default()) / 2;
                logs.apply(Op::Del, &other.to_le_bytes(), b"");
            }
        }
        for shard in 0..SHARDS {
            for index in 0..logs.shard_len(shard) {
                let key = logs.key_at(shard, index).map(<[u8]>::to_vec).unwrap_or_default();
                assert!(seen.contains(&key), "log {key:?} missed");
                assert!(logs.get(&key).is_some(), "log {key:?} moved and lost");
            }
        }
    }
}
