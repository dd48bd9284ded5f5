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

mod log;

use crate::model::slots::key_slot;
use ahash::{AHashMap, AHashSet};
use hashbrown::HashTable;
use log::Log;
use smallvec::SmallVec;
use std::collections::HashMap;

/// Shards of a [`LogMap`].
pub const SHARDS: usize = 64;

/// A log's key, inline up to 24 bytes (most row keys): a lookup compares it in
/// the entry it already reads, without a cache miss on a separate allocation.
type LogKey = SmallVec<[u8; 24]>;

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
mod tests;
