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
    xids: Vec<u32>,
}

/// A group to apply.
#[derive(Debug, Default)]
pub struct Ready {
    /// Its transactions, merged.
    pub txn: Txn,
    /// The position past the last of them.
    pub end: u64,
    /// The transactions that named documents to rebuild: those are read once
    /// Postgres shows them to new snapshots.
    pub xids: Vec<u32>,
}

impl Group {
    /// Adds a transaction that committed before `end`.
    pub fn add(&mut self, txn: Txn, end: u64) {
        self.since.get_or_insert_with(Instant::now);
        if !txn.own && !txn.roots.is_empty() {
            self.xids.push(txn.xid);
        }
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

    /// What to apply, leaving the group empty.
    pub fn take(&mut self) -> Option<Ready> {
        let group = std::mem::take(self);
        Some(Ready { txn: group.txn, end: group.end?, xids: group.xids })
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
        assert!(group.take().is_none(), "nothing to apply");
        group.add(rows(10), 100);
        let mut own = Txn { own: true, xid: 7, ..Txn::default() };
        own.roots.entry(1).or_default().ids.insert("4".into());
        group.add(own, 150);
        assert_eq!(group.end(), Some(150), "the module's own transaction moves the position too");
        assert!(!group.is_due() || group.since.is_some_and(|s| s.elapsed() >= MAX_WAIT));
        let mut named = rows(MAX_ROWS);
        named.xid = 9;
        named.roots.entry(1).or_default().ids.insert("5".into());
        group.add(named, 200);
        assert!(group.is_due());
        let ready = group.take().unwrap_or_default();
        assert_eq!((ready.txn.row_count(), ready.end), (MAX_ROWS + 1, 200), "ids 0..9 merged into the second's");
        assert_eq!(ready.xids, [9], "only a transaction of others that named roots is waited for");
        assert_eq!(group.end(), None);
    }
}
