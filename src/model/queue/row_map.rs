//! A map of queued rows that keeps, per mapping, how many rows it holds and when
//! their oldest write was captured, updated as rows come and go. `SYNC.STATUS`
//! and `INFO pgsync` run on the Redis main thread under the queue's mutex: they
//! read these figures instead of walking every row, so they cost the same with a
//! million rows pending as with none.
//!
//! The oldest capture time is exact to the millisecond: capture times are kept in
//! a per-mapping ordered count of [`Stamp`]s, so many rows captured in the same
//! millisecond cost one entry.

use crate::model::queue::{RowKey, Stamp};
// aHash: fast, and seeded per process, so crafted key names cannot force collisions.
use ahash::AHashMap as HashMap;
use std::collections::BTreeMap;

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

/// The map; see the module docs. The methods mirror `HashMap`'s.
pub struct RowMap<V> {
    // Sharded, so that growing never moves every row at once: a map of a
    // million rows doubling in one step stalled the server for hundreds of ms.
    shards: Vec<HashMap<RowKey, V>>,
    hasher: ahash::RandomState,
    figures: HashMap<usize, Figures>,
}

impl<V> Default for RowMap<V> {
    fn default() -> Self {
        RowMap {
            shards: (0..SHARDS).map(|_| HashMap::default()).collect(),
            hasher: ahash::RandomState::new(),
            figures: HashMap::default(),
        }
    }
}

/// Below this capacity a map is never shrunk: not worth a rehash.
const MIN_SHRINK_CAPACITY: usize = 1024;

/// Shards of a [`RowMap`]: growth moves at most 1/64 of the rows at a time.
const SHARDS: usize = 64;

impl<V: Captured> RowMap<V> {
    fn shard(&self, row: &RowKey) -> usize {
        (self.hasher.hash_one(row) >> 58) as usize % SHARDS
    }

    fn count_in(&mut self, row: &RowKey, value: &V) {
        let figures = self.figures.entry(row.mapping).or_default();
        figures.count += 1;
        *figures.times.entry(value.since()).or_default() += 1;
    }

    fn count_out(&mut self, mapping: usize, value: &V) {
        let since = value.since();
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
        self.count_in(&row, &value);
        let mapping = row.mapping;
        let shard = self.shard(&row);
        let old = self.shards[shard].insert(row, value);
        if let Some(old) = &old {
            self.count_out(mapping, old);
        }
        old
    }

    /// Removes a row.
    pub fn remove(&mut self, row: &RowKey) -> Option<V> {
        let shard = self.shard(row);
        let old = self.shards[shard].remove(row)?;
        self.count_out(row.mapping, &old);
        Some(old)
    }

    /// A row's value.
    pub fn get(&self, row: &RowKey) -> Option<&V> {
        self.shards[self.shard(row)].get(row)
    }

    /// A row's value, to change anything but its capture time.
    pub fn get_mut(&mut self, row: &RowKey) -> Option<&mut V> {
        let shard = self.shard(row);
        self.shards[shard].get_mut(row)
    }

    /// Whether the row is in the map.
    pub fn contains_key(&self, row: &RowKey) -> bool {
        self.shards[self.shard(row)].contains_key(row)
    }

    /// Every value.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.shards.iter().flat_map(|shard| shard.values())
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
        self.shards.iter_mut().for_each(|shard| shrink_above(shard, MIN_SHRINK_CAPACITY / SHARDS));
    }
}

/// Shrinks a map to twice its length when it uses less than an eighth of its
/// capacity. Halving steps keep the rehashing cost linear in what was removed.
pub fn shrink_map<K: Eq + std::hash::Hash, V>(map: &mut HashMap<K, V>) {
    shrink_above(map, MIN_SHRINK_CAPACITY);
}

fn shrink_above<K: Eq + std::hash::Hash, V>(map: &mut HashMap<K, V>, min: usize) {
    let len = map.len();
    if map.capacity() > min && len * 8 < map.capacity() {
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
