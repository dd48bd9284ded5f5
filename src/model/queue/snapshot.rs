//! Snapshots: what readers of Postgres (reload, listener) use to learn which
//! rows Redis changed while they read, so they never write an older value over a
//! newer Redis write.

use super::{Inner, Queue, RowKey};
use compact_str::CompactString;
use std::collections::HashSet;

/// A reader's view: rows Redis changed after [`Queue::snapshot`] was taken are
/// newer than what the reader read from Postgres. Closes itself on drop.
pub struct Snapshot<'q> {
    queue: &'q Queue,
    version: u64,
}

impl Snapshot<'_> {
    /// Whether Redis holds a change to `row` that the reader's rows may predate:
    /// one still on its way to Postgres, or one captured after the snapshot.
    pub fn redis_is_newer(&self, row: &RowKey) -> bool {
        self.queue.lock().redis_is_newer(row, self.version)
    }
}

impl Snapshot<'_> {
    /// The ids among `ids` of `mapping` for which [`Snapshot::redis_is_newer`]
    /// holds, under one lock.
    pub fn newer_among<'i>(&self, mapping: usize, ids: impl Iterator<Item = &'i str>) -> HashSet<&'i str> {
        let inner = self.queue.lock();
        let mut row = RowKey { mapping, id: CompactString::default() };
        ids.filter(|id| {
            row.id.clear();
            row.id.push_str(id);
            inner.redis_is_newer(&row, self.version)
        })
        .collect()
    }
}

impl Drop for Snapshot<'_> {
    fn drop(&mut self) {
        let mut inner = self.queue.lock();
        inner.open_snapshots -= 1;
        if inner.open_snapshots == 0 {
            inner.touched.clear();
        }
    }
}

impl Queue {
    /// Opens a snapshot for a reader about to read rows from Postgres.
    pub fn snapshot(&self) -> Snapshot<'_> {
        let mut inner = self.lock();
        inner.open_snapshots += 1;
        Snapshot { queue: self, version: inner.last_version }
    }
}

impl Inner {
    /// A row whose change just committed (or went back to wait) may now hold, in
    /// Postgres, a value that a reader's earlier read does not show: to an open
    /// snapshot the row counts as changed by Redis after it was taken.
    pub(super) fn note_settled(&mut self, row: &RowKey) {
        if self.open_snapshots > 0 {
            self.touched.insert(row.clone(), self.last_version + 1);
        }
    }

    /// Whether `row` has a change still on its way to Postgres, or one captured
    /// after `version`.
    fn redis_is_newer(&self, row: &RowKey, version: u64) -> bool {
        self.pending.contains_key(row)
            || self.in_flight.contains_key(row)
            || self.touched.get(row).is_some_and(|v| *v > version)
    }
}
