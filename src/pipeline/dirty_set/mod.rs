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
use crate::model::journal_log::{coalesce, frame_into, framed_len};
use crate::model::mapping::Mappings;
use crate::model::queue::{BatchLimits, Entry, Journaled, Pending, Queue, RowKey};
use crate::redis::journal::{self, logs};
use crate::redis::redis_lock::with_redis_lock;
use crate::redis::{replies, waiters};
use recovery::Recovery;
use redis_module::{Context, ContextFlags};
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
        let pushed = self.queue.push(&row, Journaled::Fresh { bytes: framed_len(record.len()) });
        if !pushed.rewrite {
            journal::append(ctx, key, &record);
            return pushed.version;
        }
        // No batch holds the row: its whole log, with this write, is its change.
        let mut log = logs::read(key).unwrap_or_default();
        frame_into(&mut log, &record);
        let one = encode_change(&coalesce(&log, pushed.version, pushed.version));
        journal::rewrite(ctx, key, &one);
        self.queue.rewritten(&row, framed_len(one.len()));
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

    /// Waits for work and takes a batch (see `Queue::take_batch`), then reads
    /// its rows' changes from their logs under the Redis lock (one step for the
    /// batch) and decodes them outside it. Of a row's log, the batch takes what
    /// was there before the writes queued since. A row whose log is gone (a
    /// `FLUSHALL`), or every row once this server is a replica, leaves the
    /// queue unwritten, its waiters told why.
    pub fn take(&self, limits: BatchLimits, ready: &dyn Fn(usize) -> bool) -> Batch {
        let taken = self.queue.take_batch(limits, ready);
        if taken.is_empty() {
            return Vec::new();
        }
        let logs = with_redis_lock(|ctx| {
            if ctx.get_flags().contains(ContextFlags::SLAVE) {
                return None;
            }
            Some(taken.iter().map(|(row, _)| self.taken_log(row)).collect::<Vec<_>>())
        });
        let Some(logs) = logs else {
            self.drop_taken(&taken, replies::DEMOTED);
            return Vec::new();
        };
        let mut batch = Vec::with_capacity(taken.len());
        let mut gone = Vec::new();
        for ((row, pending), log) in taken.into_iter().zip(logs) {
            match log {
                Some(log) => {
                    let change = coalesce(&log, pending.version, pending.first_version);
                    batch.push((row, Entry { change, since: pending.since, journal_bytes: log.len() }));
                }
                None => gone.push((row, pending)),
            }
        }
        self.drop_taken(&gone, replies::JOURNAL_FLUSHED);
        batch
    }

    /// The records of `row`'s log that a batch takes: all but the writes
    /// queued for it since. Under the Redis lock.
    fn taken_log(&self, row: &RowKey) -> Option<Vec<u8>> {
        let key = self.mappings.all().get(row.mapping)?.written_key(&row.id);
        let mut log = logs::read(key.as_bytes())?;
        log.truncate(log.len().saturating_sub(self.queue.pending_journal_bytes(row)));
        (!log.is_empty()).then_some(log)
    }

    /// Taken rows that will not be written: out of the queue, waiters told `why`.
    fn drop_taken(&self, rows: &[(RowKey, Pending)], why: &str) {
        if rows.is_empty() {
            return;
        }
        self.queue.complete(rows.iter().map(|(row, _)| row));
        for (row, pending) in rows {
            waiters::fail(row, pending.version, why);
        }
    }

    /// The change queued for `row` (written through `key`) behind its batch,
    /// read from its log. Under the Redis lock.
    pub fn pending_change(&self, row: &RowKey, key: &str) -> Option<Change> {
        let pending = self.queue.pending(row)?;
        let log = logs::read(key.as_bytes())?;
        let start = log.len().saturating_sub(pending.journal_bytes);
        Some(coalesce(&log[start..], pending.version, pending.first_version))
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
        for ((row, _), (key, newer)) in batch.iter().zip(logs) {
            match newer {
                None => journal::forget(ctx, key.as_bytes()),
                Some(newer) => {
                    let one = encode_change(newer);
                    journal::rewrite(ctx, key.as_bytes(), &one);
                    self.queue.rewritten(row, framed_len(one.len()));
                }
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

    /// A change of `row` was rejected while `pending` was queued: the newer is
    /// merged on top of it (per field the newer wins, increments add), keeping
    /// the queued change's versions, so the row tries them together. Returns
    /// the merged change, which the row's journal must then hold
    /// ([`DirtySet::settle`] writes it); `None` when nothing is queued.
    pub fn carry_rejected(&self, row: &RowKey, rejected: &Change, pending: Option<Change>) -> Option<Change> {
        let pending = pending?;
        let mut merged = rejected.without_acks();
        // Versions are the queued change's: what `SYNC.WAIT` waits for is its writes.
        let (version, first_version) = (pending.version, pending.first_version);
        merged.absorb(pending);
        merged.version = version;
        merged.first_version = first_version;
        self.queue.rewritten(row, framed_len(encode_change(&merged).len())).then_some(merged)
    }
}
