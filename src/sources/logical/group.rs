//! Committed transactions gathered into one apply step. Every step takes the
//! Redis lock and stores the position, and a thread that asks for the lock
//! again at once first leaves the main thread its turn (`redis::redis_lock`):
//! applied one per step, single-row transactions reached about 1,600 a second
//! (BENCHMARKS.md figure 11) and the lag grew without bound beyond that. So the
//! transactions the stream has already delivered are gathered and applied as
//! one, up to [`MAX_ROWS`] rows or [`MAX_WAIT`] after the first: the position
//! stored is the last one's, and a crash before it replays them all, which is
//! harmless (a row written again to what it holds).

use super::txn::Txn;
use std::time::{Duration, Instant};

/// Rows after which a group is applied without waiting for the stream to pause.
pub const MAX_ROWS: usize = 1000;

/// How long the first transaction of a group waits for others at most.
pub const MAX_WAIT: Duration = Duration::from_millis(5);

/// Transactions received and not applied yet, merged in commit order.
#[derive(Default)]
pub struct Group {
    txn: Txn,
    end: Option<u64>,
    since: Option<Instant>,
}

impl Group {
    /// Adds a transaction that committed before `end`.
    pub fn add(&mut self, txn: Txn, end: u64) {
        self.since.get_or_insert_with(Instant::now);
        self.txn.then(txn);
        self.end = Some(end);
    }

    /// The position past the last transaction added, if any.
    pub fn end(&self) -> Option<u64> {
        self.end
    }

    /// Whether the group is to be applied now, even though more may follow.
    pub fn is_due(&self) -> bool {
        self.txn.row_count() >= MAX_ROWS || self.since.is_some_and(|since| since.elapsed() >= MAX_WAIT)
    }

    /// The merged transaction and its end, leaving the group empty.
    pub fn take(&mut self) -> Option<(Txn, u64)> {
        let group = std::mem::take(self);
        Some((group.txn, group.end?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::logical::txn::MappingChanges;

    fn rows(n: usize) -> Txn {
        let mut changes = MappingChanges::default();
        (0..n).for_each(|i| drop(changes.rows.insert(i.to_string(), None)));
        Txn { changes: [(0, changes)].into_iter().collect(), ..Txn::default() }
    }

    #[test]
    fn a_group_is_due_at_its_row_limit_and_keeps_the_last_end() {
        let mut group = Group::default();
        assert_eq!(group.take().map(|(_, end)| end), None, "nothing to apply");
        group.add(rows(10), 100);
        group.add(Txn { own: true, ..Txn::default() }, 150);
        assert_eq!(group.end(), Some(150), "the module's own transaction moves the position too");
        assert!(!group.is_due() || group.since.is_some_and(|s| s.elapsed() >= MAX_WAIT));
        group.add(rows(MAX_ROWS), 200);
        assert!(group.is_due());
        let (txn, end) = group.take().unwrap_or_default();
        assert_eq!((txn.row_count(), end), (MAX_ROWS, 200), "ids 0..9 were merged into the second's");
        assert_eq!(group.end(), None);
    }
}
