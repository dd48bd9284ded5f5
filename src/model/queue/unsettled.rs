//! Which changes have not settled yet, by version: what `SYNC.WAIT` waits for.

use std::collections::BTreeMap;

/// Counts of unsettled changes by their oldest version, so "is everything up to
/// version v settled?" costs a lookup rather than a scan of the queue.
#[derive(Default)]
pub(super) struct Unsettled(BTreeMap<u64, usize>);

impl Unsettled {
    pub(super) fn add(&mut self, version: u64) {
        *self.0.entry(version).or_default() += 1;
    }

    pub(super) fn remove(&mut self, version: u64) {
        if let Some(n) = self.0.get_mut(&version) {
            *n -= 1;
            if *n == 0 {
                self.0.remove(&version);
            }
        }
    }

    pub(super) fn up_to(&self, version: u64) -> usize {
        self.0.range(..=version).map(|(_, n)| n).sum()
    }

    pub(super) fn oldest(&self) -> Option<u64> {
        self.0.keys().next().copied()
    }
}
