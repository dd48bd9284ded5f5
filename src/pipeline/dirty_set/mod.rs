//! The dirty set: every row with a change not yet in Postgres, held twice, in
//! memory (the queue, which workers take batches from) and durably (the journal,
//! a record per write). This type owns the rule that keeps the two in step, in
//! one place: a write is queued and journaled in the same command ([`mark`]); a
//! batch is taken without touching the journal ([`take`]); a failed batch goes
//! back, its records still in the journal ([`requeue`]); a settled batch leaves
//! in the journal only what was written since ([`settle`]); after a restart or a
//! promotion the journal is queued again ([`recover`]).
//!
//! [`mark`]: DirtySet::mark
//! [`take`]: DirtySet::take
//! [`requeue`]: DirtySet::requeue
//! [`settle`]: DirtySet::settle
//! [`recover`]: DirtySet::recover

mod legacy;
pub mod recovery;

use crate::model::change::{Change, Write};
use crate::model::doubt::Doubt;
use crate::model::journal_codec::{encode, encode_change};
use crate::model::mapping::Mappings;
use crate::model::queue::{BatchLimits, Entry, Journaled, Queue, RowKey};
use crate::redis::journal;
use recovery::Recovery;
use redis_module::Context;
use std::collections::HashMap;
use std::sync::Mutex;

/// Rows taken together for one round of writes to Postgres.
pub type Batch = Vec<(RowKey, Entry)>;

/// The dirty set; see the module docs.
pub struct DirtySet {
    queue: Queue,
    recovery: Recovery,
    mappings: Mappings,
    /// Recovered rows whose log a batch marked before committing: until a batch
    /// of theirs commits, what of their change may be in Postgres already
    /// (`model/doubt.rs`).
    doubts: Mutex<HashMap<RowKey, Vec<Doubt>>>,
}

impl DirtySet {
    /// An empty dirty set for these mappings (the journal is read on recovery).
    pub fn new(mappings: Mappings) -> DirtySet {
        DirtySet { queue: Queue::default(), recovery: Recovery::default(), mappings, doubts: Mutex::default() }
    }

    /// The in-memory half, for readers: waits, snapshots, backlog figures.
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// Where the recovery of the journal stands.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// The mappings, to name the rows of journaled keys.
    pub fn mappings(&self) -> &Mappings {
        &self.mappings
    }

    /// Queues a captured write of `row` (written through `key`) and journals it,
    /// in the command that made the write. Returns the write's version.
    pub fn mark(&self, ctx: &Context, row: RowKey, key: &[u8], write: Write) -> u64 {
        recovery::recover_row(ctx, self, key);
        let record = encode(write.op, &write.fields, &write.acks);
        let bytes = journal::framed_len(record.len());
        let pushed = self.queue.push_record(row, &record, Journaled::Fresh { bytes });
        match pushed.compaction {
            None => journal::append(ctx, key, &record),
            Some(compaction) => {
                let change = &compaction.change;
                journal::rewrite(ctx, key, &encode_change(change));
            }
        }
        pushed.version
    }

    /// Records that a recovered row's change may be partly in Postgres already.
    pub fn doubt(&self, row: RowKey, doubts: Vec<Doubt>) {
        self.lock_doubts().insert(row, doubts);
    }

    /// The doubts on each of `rows` (empty for most).
    pub fn doubts_of<'a>(&self, rows: impl Iterator<Item = &'a RowKey>) -> Vec<Vec<Doubt>> {
        let doubts = self.lock_doubts();
        rows.map(|row| doubts.get(row).cloned().unwrap_or_default()).collect()
    }

    fn lock_doubts(&self) -> std::sync::MutexGuard<'_, HashMap<RowKey, Vec<Doubt>>> {
        self.doubts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks, under the Redis lock and before the batch commits, the logs of its
    /// rows (written through `keys`) as written by the batch with commit marker
    /// `marker`: the prefix each log had when the batch was taken, that is all of
    /// it but what was queued for the row since.
    pub fn mark_in_flight(&self, ctx: &Context, rows: &[(&RowKey, String)], marker: i64) {
        for (row, key) in rows {
            let newer = self.queue.pending_journal_bytes(row);
            let prefix = journal::log_len(key.as_bytes()).saturating_sub(newer);
            if prefix > 0 {
                journal::mark(ctx, key.as_bytes(), marker, prefix);
            }
        }
    }

    /// Waits for work and takes a batch (see `Queue::take_batch`); the journal is
    /// untouched until the batch settles.
    pub fn take(&self, limits: BatchLimits, ready: &dyn Fn(usize) -> bool) -> Batch {
        self.queue.take_batch(limits, ready)
    }

    /// Puts a batch back after a failure that may heal; its records stay.
    pub fn requeue(&self, batch: Batch) {
        self.queue.requeue(batch);
    }

    /// A batch is done (committed, or its rows dead-lettered). `logs[i]` names
    /// the key row `i` is written through and the change queued for it since,
    /// both read under the Redis lock: the row's log is deleted, or rewritten to
    /// hold just that newer change; then the rows leave the queue.
    pub fn settle(&self, ctx: &Context, batch: &[(RowKey, Entry)], logs: &[(String, Option<Change>)]) {
        for (key, newer) in logs {
            match newer {
                None => journal::forget(ctx, key.as_bytes()),
                Some(newer) => journal::rewrite(ctx, key.as_bytes(), &encode_change(newer)),
            }
        }
        let mut doubts = self.lock_doubts();
        if !doubts.is_empty() {
            batch.iter().for_each(|(row, _)| {
                doubts.remove(row);
            });
        }
        drop(doubts);
        self.release(batch);
    }

    /// A batch leaves the queue without touching the journal: this server became
    /// a replica (the new primary owns the records), or its rows were given up.
    pub fn release(&self, batch: &[(RowKey, Entry)]) {
        self.queue.complete(batch.iter().map(|(row, _)| row));
    }

    /// One step of the journal's recovery (from the server cron), or all of it.
    pub fn recover(&self, ctx: &Context, all: bool) {
        match all {
            true => recovery::recover_all(ctx, self),
            false => recovery::recover_step(ctx, self),
        }
    }

    /// After a change of role: the queue starts again from the journal (a demoted
    /// server's changes are the new primary's now, and a promoted one must not
    /// keep rows requeued while it was a replica over the journal's newer records).
    pub fn restart(&self) {
        self.recovery.restart();
        self.queue.drop_pending();
        self.lock_doubts().clear();
    }
}

/// Rejected rows (`redis/deadletter/carry.rs`): a rejected change stays attached to
/// its row, so the row's later writes are merged on top of it.
impl DirtySet {
    /// Whether the dirty set holds a change of `row` (written through `key`),
    /// its journal read first when the recovery has not reached it yet.
    pub fn holds(&self, ctx: &Context, row: &RowKey, key: &[u8]) -> bool {
        recovery::recover_row(ctx, self, key);
        self.queue.holds(row)
    }

    /// A change of `row` was rejected while a newer one was queued: the newer
    /// is merged on top of it in the queue. Returns the merged change, which
    /// the row's journal must then hold ([`DirtySet::settle`] writes it).
    pub fn carry_rejected(&self, row: &RowKey, rejected: &Change) -> Option<Change> {
        let bytes = |merged: &Change| journal::framed_len(encode_change(merged).len());
        self.queue.carry_under(row, rejected, bytes)
    }
}
