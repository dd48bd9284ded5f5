//! Which changes have not settled yet, by version: what `SYNC.WAIT` waits for.

use std::collections::BTreeMap;

/// Versions per group: one bit each in a group's mask.
const GROUP: u64 = 64;

/// The versions of unsettled changes (each a row's oldest queued write, so no
/// version is held twice), so "is everything up to version v settled?" costs a
/// walk of groups rather than of the queue. Kept as one bit per version, in
/// groups of 64 consecutive versions: new rows take consecutive versions, so a
/// backlog of rows written once costs about a bit per row, where an ordered map
/// of version → count cost ~34 bytes; rows far apart cost one group each,
/// as much as that map did.
#[derive(Default)]
pub(super) struct Unsettled(BTreeMap<u64, u64>);

impl Unsettled {
    pub(super) fn add(&mut self, version: u64) {
        *self.0.entry(version / GROUP).or_default() |= 1 << (version % GROUP);
    }

    pub(super) fn remove(&mut self, version: u64) {
        let group = version / GROUP;
        if let Some(mask) = self.0.get_mut(&group) {
            *mask &= !(1 << (version % GROUP));
            if *mask == 0 {
                self.0.remove(&group);
            }
        }
    }

    pub(super) fn up_to(&self, version: u64) -> usize {
        let last = version / GROUP;
        // Bits of the last group at or below `version`.
        let below = u64::MAX >> (GROUP - 1 - version % GROUP);
        self.0
            .range(..=last)
            .map(|(group, mask)| match *group == last {
                true => mask & below,
                false => *mask,
            })
            .map(|mask| mask.count_ones() as usize)
            .sum()
    }

    pub(super) fn oldest(&self) -> Option<u64> {
        self.0.first_key_value().map(|(group, mask)| group * GROUP + u64::from(mask.trailing_zeros()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_the_oldest_follow_adds_and_removes_across_groups() {
        let mut unsettled = Unsettled::default();
        assert_eq!(unsettled.oldest(), None);
        for version in [1, 63, 64, 65, 127, 128, 1000] {
            unsettled.add(version);
        }
        assert_eq!(unsettled.oldest(), Some(1));
        assert_eq!(unsettled.up_to(0), 0);
        assert_eq!(unsettled.up_to(1), 1);
        assert_eq!(unsettled.up_to(63), 2);
        assert_eq!(unsettled.up_to(64), 3);
        assert_eq!(unsettled.up_to(126), 4);
        assert_eq!(unsettled.up_to(127), 5);
        assert_eq!(unsettled.up_to(u64::MAX), 7);
        unsettled.remove(1);
        unsettled.remove(63);
        assert_eq!(unsettled.oldest(), Some(64), "an emptied group is gone");
        unsettled.remove(64);
        unsettled.remove(2);
        assert_eq!((unsettled.oldest(), unsettled.up_to(127)), (Some(65), 2));
        unsettled.add(3);
        assert_eq!(unsettled.oldest(), Some(3), "a row put back keeps its old version");
    }
}
