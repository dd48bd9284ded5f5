//! A map of queued rows that keeps, per mapping, how many rows it holds and when
//! their oldest write was captured, updated as rows come and go. `SYNC.STATUS`
//! and `INFO pgsync` run on the Redis main thread under the queue's mutex: they
//! read these figures instead of walking every row, so they cost the same with a
//! million rows pending as with none.
//!
//! The oldest capture time is exact to the millisecond: capture times are kept in
//! a per-mapping ordered count of [`Stamp`]s, so many rows captured in the same
//! millisecond cost one entry.
//!
//! A row's key is hashed once for every map and every step (which shard, where
//! in it, an insert after a failed lookup): see [`Hashed`].

use crate::model::queue::{RowKey, Stamp};
// aHash: fast, and seeded per process, so crafted key names cannot force collisions.
use ahash::AHashMap as HashMap;
use hashbrown::HashTable;
use std::collections::BTreeMap;
use std::sync::LazyLock;

/// A queued value that knows when its oldest write was captured. It must not
/// change while the value is in the map (the figures were taken from it).
pub trait Captured {
    /// Capture time of the oldest write in the value.
    fn since(&self) -> Stamp;
}

/// Count and capture times of one mapping's rows.
#[derive(Default)]
struct Figures {
    count: usize,
    /// Capture time → rows captured then.
    times: BTreeMap<Stamp, usize>,
}

/// The one hasher of every row map, so that a row hashed once can be looked up
/// in any of them.
static HASHER: LazyLock<ahash::RandomState> = LazyLock::new(ahash::RandomState::new);

/// The hash of a row's key, valid in every [`RowMap`]; the `*_hashed` methods
/// take it with the row it is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hashed(u64);

impl Hashed {
    /// Hashes `row`.
    pub fn of(row: &RowKey) -> Hashed {
        Hashed(HASHER.hash_one(row))
    }

    /// Its shard: bits the tables use neither for positions (the low ones) nor
    /// for their tags (the top seven).
    fn shard(self) -> usize {
        ((self.0 >> 40) % SHARDS as u64) as usize
    }
}

fn is<V>(row: &RowKey) -> impl Fn(&(RowKey, V)) -> bool + '_ {
    move |(key, _)| key == row
}

fn rehash<V>((row, _): &(RowKey, V)) -> u64 {
    HASHER.hash_one(row)
}

/// The map; see the module docs. The methods mirror `HashMap`'s; those named
/// `*_hashed` take a row already hashed.
pub struct RowMap<V> {
    // Sharded, so that growing never moves every row at once: a map of a
    // million rows doubling in one step stalled the server for hundreds of ms.
    shards: Vec<HashTable<(RowKey, V)>>,
    figures: HashMap<usize, Figures>,
}

impl<V> Default for RowMap<V> {
    fn default() -> Self {
        RowMap { shards: (0..SHARDS).map(|_| HashTable::new()).collect(), figures: HashMap::default() }
    }
}

/// Below this capacity a map is never shrunk: not worth a rehash.
const MIN_SHRINK_CAPACITY: usize = 1024;

/// Shards of a [`RowMap`]: growth moves at most 1/64 of the rows at a time.
const SHARDS: usize = 64;

impl<V: Captured> RowMap<V> {
    fn count_in(&mut self, mapping: usize, since: Stamp) {
        let figures = self.figures.entry(mapping).or_default();
        figures.count += 1;
        *figures.times.entry(since).or_default() += 1;
    }

    fn count_out(&mut self, mapping: usize, since: Stamp) {
        let Some(figures) = self.figures.get_mut(&mapping) else { return };
        figures.count = figures.count.saturating_sub(1);
        if let Some(n) = figures.times.get_mut(&since) {
            *n -= 1;
            if *n == 0 {
                figures.times.remove(&since);
            }
        }
    }

    /// Adds or replaces a row's value.
    pub fn insert(&mut self, row: RowKey, value: V) -> Option<V> {
        let hash = Hashed::of(&row);
        let Some((_, slot)) = self.shards[hash.shard()].find_mut(hash.0, is(&row)) else {
            self.insert_new(row, hash, value);
            return None;
        };
        let since = value.since();
        let old = std::mem::replace(slot, value);
        self.count_out(row.mapping, old.since());
        self.count_in(row.mapping, since);
        Some(old)
    }

    /// Adds `row`, which the map does not hold (a lookup just said so), with
    /// its `hash`.
    pub fn insert_new(&mut self, row: RowKey, hash: Hashed, value: V) {
        self.count_in(row.mapping, value.since());
        self.shards[hash.shard()].insert_unique(hash.0, (row, value), rehash);
    }

    /// Removes a row.
    pub fn remove(&mut self, row: &RowKey) -> Option<V> {
        let hash = Hashed::of(row);
        let ((_, old), _) = self.shards[hash.shard()].find_entry(hash.0, is(row)).ok()?.remove();
        self.count_out(row.mapping, old.since());
        Some(old)
    }

    /// A row's value.
    pub fn get(&self, row: &RowKey) -> Option<&V> {
        self.get_hashed(row, Hashed::of(row))
    }

    /// A row's value, given its hash.
    pub fn get_hashed(&self, row: &RowKey, hash: Hashed) -> Option<&V> {
        self.shards[hash.shard()].find(hash.0, is(row)).map(|(_, value)| value)
    }

    /// A row's value, to change anything but its capture time.
    pub fn get_mut(&mut self, row: &RowKey) -> Option<&mut V> {
        self.get_mut_hashed(row, Hashed::of(row))
    }

    /// A row's value, to change anything but its capture time, given its hash.
    pub fn get_mut_hashed(&mut self, row: &RowKey, hash: Hashed) -> Option<&mut V> {
        self.shards[hash.shard()].find_mut(hash.0, is(row)).map(|(_, value)| value)
    }

    /// The row whose key hashes to `hash`, if the map holds one (of two rows
    /// whose 64-bit hashes are equal, either one).
    pub fn key_of(&self, hash: Hashed) -> Option<&RowKey> {
        self.shards[hash.shard()].find(hash.0, |(row, _)| Hashed::of(row) == hash).map(|(row, _)| row)
    }

    /// Whether the row is in the map.
    pub fn contains_key(&self, row: &RowKey) -> bool {
        self.get(row).is_some()
    }

    /// Every value.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.shards.iter().flat_map(|shard| shard.iter().map(|(_, value)| value))
    }

    /// Removes every row.
    pub fn clear(&mut self) {
        self.shards.iter_mut().for_each(|shard| shard.clear());
        self.figures.clear();
    }

    /// Rows of `mapping`, and the capture time of the oldest of them.
    pub fn figures(&self, mapping: usize) -> (usize, Option<Stamp>) {
        let Some(figures) = self.figures.get(&mapping) else { return (0, None) };
        (figures.count, figures.times.keys().next().copied())
    }

    /// The mappings that have rows in the map (at most one per mapping).
    pub fn mappings(&self) -> impl Iterator<Item = usize> + '_ {
        self.figures.iter().filter(|(_, f)| f.count > 0).map(|(m, _)| *m)
    }

    /// Gives memory back once the map holds far fewer rows than it has room for
    /// (a drained backlog): a `HashMap` never shrinks on its own.
    pub fn shrink_if_sparse(&mut self) {
        for shard in &mut self.shards {
            let len = shard.len();
            if shard.capacity() > MIN_SHRINK_CAPACITY / SHARDS && len * 8 < shard.capacity() {
                shard.shrink_to(len * 2, rehash);
            }
        }
    }
}

/// Shrinks a map to twice its length when it uses less than an eighth of its
/// capacity. Halving steps keep the rehashing cost linear in what was removed.
pub fn shrink_map<K: Eq + std::hash::Hash, V>(map: &mut HashMap<K, V>) {
    let len = map.len();
    if map.capacity() > MIN_SHRINK_CAPACITY && len * 8 < map.capacity() {
        map.shrink_to(len * 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    struct At(Stamp);

    impl Captured for At {
        fn since(&self) -> Stamp {
            self.0
        }
    }

    fn row(mapping: usize, id: &str) -> RowKey {
        RowKey { mapping, id: id.into() }
    }

    #[test]
    fn figures_follow_inserts_replacements_and_removals() {
        let mut map = RowMap::default();
        // Stamps count from the first one taken: take it before `t0`, which a
        // stamp could not stand for otherwise (alone in its process, as under
        // nextest, this test takes the first).
        Stamp::now();
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_millis(5);
        map.insert(row(0, "a"), At(Stamp::of(t1)));
        map.insert(row(0, "b"), At(Stamp::of(t0)));
        map.insert(row(1, "c"), At(Stamp::of(t1)));
        let (count, oldest) = map.figures(0);
        assert_eq!(count, 2);
        let oldest = oldest.map(Stamp::instant);
        assert!(oldest.is_some_and(|o| o <= t0 && t0 - o < Duration::from_millis(1)));
        map.insert(row(0, "b"), At(Stamp::of(t1)));
        assert_eq!(map.figures(0).0, 2, "a replacement is no new row");
        assert!(map.figures(0).1.is_some_and(|o| o > Stamp::of(t0)), "the replaced time is gone");
        map.remove(&row(0, "a"));
        map.remove(&row(0, "b"));
        map.remove(&row(0, "b"));
        assert_eq!(map.figures(0), (0, None));
        assert_eq!(map.figures(1).0, 1);
        map.clear();
        assert_eq!(map.figures(1), (0, None));
    }

    #[test]
    fn a_drained_map_gives_its_memory_back() {
        let mut map = RowMap::default();
        let now = Stamp::now();
        for i in 0..100_000 {
            map.insert(row(0, &i.to_string()), At(now));
        }
        let capacity = |map: &RowMap<At>| map.shards.iter().map(|shard| shard.capacity()).sum::<usize>();
        let full = capacity(&map);
        for i in 10..100_000 {
            map.remove(&row(0, &i.to_string()));
        }
        map.shrink_if_sparse();
        assert!(capacity(&map) < full / 100, "{} of {full}", capacity(&map));
        assert_eq!(map.figures(0).0, 10);
    }
}
