//! Rows that Postgres does not have, remembered briefly, so a stream of reads of
//! a missing row does not send a query each. Bounded: past `capacity` entries the
//! oldest are forgotten first. Pure: time is passed in, unit-tested.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Keys known to be absent until a deadline.
pub struct NegativeCache<K> {
    until: HashMap<K, Instant>,
    /// Insertion order, for expiry and eviction; may hold keys already forgotten
    /// or re-inserted later (checked against `until`).
    order: VecDeque<(K, Instant)>,
    capacity: usize,
}

impl<K: Hash + Eq + Clone> NegativeCache<K> {
    /// An empty cache of at most `capacity` keys.
    pub fn new(capacity: usize) -> NegativeCache<K> {
        NegativeCache { until: HashMap::new(), order: VecDeque::new(), capacity: capacity.max(1) }
    }

    /// Whether `key` is known absent at `now`.
    pub fn contains(&self, key: &K, now: Instant) -> bool {
        self.until.get(key).is_some_and(|until| *until > now)
    }

    /// Remembers `key` as absent for `ttl` from `now`.
    pub fn insert(&mut self, key: K, now: Instant, ttl: Duration) {
        self.expire(now);
        while self.until.len() >= self.capacity {
            let Some((old, at)) = self.order.pop_front() else { break };
            self.forget_if(&old, at);
        }
        let until = now + ttl;
        self.until.insert(key.clone(), until);
        self.order.push_back((key, until));
    }

    /// Forgets `key` (the row was written: it may exist now).
    pub fn remove(&mut self, key: &K) {
        self.until.remove(key);
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.until.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        while self.order.front().is_some_and(|(_, until)| *until <= now) {
            if let Some((key, at)) = self.order.pop_front() {
                self.forget_if(&key, at);
            }
        }
        // Removed keys leave their place in `order` behind; keep it bounded too.
        if self.order.len() > 2 * self.capacity {
            let until = &self.until;
            self.order.retain(|(k, at)| until.get(k) == Some(at));
        }
    }

    fn forget_if(&mut self, key: &K, at: Instant) {
        if self.until.get(key) == Some(&at) {
            self.until.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_until_the_deadline() {
        let t0 = Instant::now();
        let ttl = Duration::from_millis(100);
        let mut c = NegativeCache::new(10);
        c.insert("a", t0, ttl);
        assert!(c.contains(&"a", t0 + Duration::from_millis(99)));
        assert!(!c.contains(&"a", t0 + ttl));
        assert!(!c.contains(&"b", t0));
        c.remove(&"a");
        assert!(!c.contains(&"a", t0));
        assert!(c.is_empty());
    }

    #[test]
    fn stays_bounded_and_forgets_the_oldest_first() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(60);
        let mut c = NegativeCache::new(3);
        for (i, k) in ["a", "b", "c", "d"].into_iter().enumerate() {
            c.insert(k, t0 + Duration::from_millis(i as u64), ttl);
        }
        assert!(!c.contains(&"a", t0) && c.contains(&"b", t0) && c.contains(&"d", t0));
        // Re-inserting a key renews it; its old place in the order is ignored.
        c.insert("b", t0 + Duration::from_millis(10), ttl);
        c.insert("e", t0 + Duration::from_millis(11), ttl);
        assert!(c.contains(&"b", t0) && !c.contains(&"c", t0));
        for i in 0..1000 {
            c.insert("x", t0 + Duration::from_millis(20 + i), ttl);
            c.remove(&"x");
        }
        assert!(c.order.len() <= 2 * 3 + 1);
    }

    #[test]
    fn expired_entries_are_dropped_on_insert() {
        let t0 = Instant::now();
        let mut c = NegativeCache::new(100);
        c.insert("a", t0, Duration::from_millis(1));
        c.insert("b", t0 + Duration::from_millis(5), Duration::from_millis(1));
        assert_eq!(c.until.len(), 1);
    }
}
