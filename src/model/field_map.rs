//! A small map from field name to value, kept as one vector sorted by name. A
//! captured change names a handful of fields; a `BTreeMap` allocates a node of
//! room for eleven on its first insert (hundreds of bytes per pending row), and
//! walks pointers to find one. Lookups here are a binary search over one
//! allocation sized to what the row holds. Pure, unit-tested.

/// A map of field names to `V`, iterated in name order.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldMap<V>(Vec<(Vec<u8>, V)>);

impl<V> Default for FieldMap<V> {
    fn default() -> Self {
        FieldMap(Vec::new())
    }
}

impl<V> FieldMap<V> {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    fn find(&self, name: &[u8]) -> Result<usize, usize> {
        self.0.binary_search_by(|(n, _)| n.as_slice().cmp(name))
    }

    /// Sets `name` to `value`; returns the value it replaced.
    pub fn insert(&mut self, name: Vec<u8>, value: V) -> Option<V> {
        match self.find(&name) {
            Ok(at) => Some(std::mem::replace(&mut self.0[at].1, value)),
            Err(at) => {
                self.0.insert(at, (name, value));
                None
            }
        }
    }

    /// The value of `name`, to change in place.
    pub fn get_mut(&mut self, name: &[u8]) -> Option<&mut V> {
        self.find(name).ok().map(|at| &mut self.0[at].1)
    }

    /// The value of `name`.
    pub fn get(&self, name: &[u8]) -> Option<&V> {
        self.find(name).ok().map(|at| &self.0[at].1)
    }

    /// Whether `name` is in the map.
    pub fn contains_key(&self, name: &[u8]) -> bool {
        self.find(name).is_ok()
    }

    /// Removes `name`; returns its value.
    pub fn remove(&mut self, name: &[u8]) -> Option<V> {
        self.find(name).ok().map(|at| self.0.remove(at).1)
    }

    /// Keeps only the entries `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&Vec<u8>, &mut V) -> bool) {
        self.0.retain_mut(|(n, v)| keep(n, v));
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Removes every entry.
    pub fn clear(&mut self) {
        self.0.clear();
    }

    /// The entries in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&Vec<u8>, &V)> {
        self.0.iter().map(|(n, v)| (n, v))
    }

    /// The names in order.
    pub fn keys(&self) -> impl Iterator<Item = &Vec<u8>> {
        self.0.iter().map(|(n, _)| n)
    }

    /// The values in name order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.0.iter().map(|(_, v)| v)
    }
}

impl<V> FromIterator<(Vec<u8>, V)> for FieldMap<V> {
    /// Collects pairs; a name given twice keeps its last value, as a map would.
    /// The vector is exactly as long as the map: a pending row holds it for its
    /// whole wait, and growing by doubling would leave room for four.
    fn from_iter<I: IntoIterator<Item = (Vec<u8>, V)>>(pairs: I) -> Self {
        let mut pairs: Vec<(Vec<u8>, V)> = pairs.into_iter().collect();
        // Stable: of equal names the later pair ends up last, and is kept.
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        // The usual write names each field once: keep the vector it came in.
        if pairs.windows(2).all(|w| w[0].0 != w[1].0) {
            pairs.shrink_to_fit();
            return FieldMap(pairs);
        }
        let mut map: Vec<(Vec<u8>, V)> = Vec::with_capacity(pairs.len());
        for (name, value) in pairs {
            match map.last_mut() {
                Some(last) if last.0 == name => last.1 = value,
                _ => map.push((name, value)),
            }
        }
        map.shrink_to_fit();
        FieldMap(map)
    }
}

impl<V> IntoIterator for FieldMap<V> {
    type Item = (Vec<u8>, V);
    type IntoIter = std::vec::IntoIter<(Vec<u8>, V)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a, V> IntoIterator for &'a FieldMap<V> {
    type Item = (&'a Vec<u8>, &'a V);
    type IntoIter = std::iter::Map<std::slice::Iter<'a, (Vec<u8>, V)>, fn(&'a (Vec<u8>, V)) -> (&'a Vec<u8>, &'a V)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(n, v)| (n, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_as_an_ordered_map() {
        let mut map: FieldMap<i32> = [(b"b".to_vec(), 1), (b"a".to_vec(), 2), (b"b".to_vec(), 3)].into_iter().collect();
        assert_eq!(map.keys().cloned().collect::<Vec<_>>(), vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(map.get(b"b"), Some(&3), "the last value of a name wins");
        assert_eq!(map.insert(b"c".to_vec(), 4), None);
        assert_eq!(map.insert(b"a".to_vec(), 5), Some(2));
        *map.get_mut(b"c").expect("present") += 1;
        assert_eq!(map.remove(b"b"), Some(3));
        assert!(!map.contains_key(b"b"));
        map.retain(|name, _| name != b"a");
        assert_eq!(map.into_iter().collect::<Vec<_>>(), vec![(b"c".to_vec(), 5)]);
    }
}
