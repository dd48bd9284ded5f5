//! The in-memory queue of dirty rows shared by capture (producer) and the workers
//! (consumers). One entry per dirty row: later writes coalesce into it, a row is in
//! at most one batch at a time (so one row's changes never overtake each other),
//! and `SYNC.WAIT` learns which changes have settled. Readers of Postgres (reload,
//! listener) open a snapshot to learn which rows Redis changed after they read them.

mod compaction;
mod entry;
mod line;
mod pending;
pub(crate) mod row_map;
mod snapshot;
mod unsettled;

pub use compaction::Journaled;
use compaction::COMPACTION_SLACK;
use entry::Flight;
pub use entry::{Entry, Outcome, Rejected, RowKey, Stamp};
use line::Line;
pub use pending::Pending;
pub use snapshot::Snapshot;
use unsettled::Unsettled;

use crate::model::queue::row_map::{shrink_map, Hashed, RowMap};
// aHash: fast, and seeded per process, so crafted key names cannot force collisions.
use ahash::AHashMap as HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Most queued rows one take walks past (rows in flight, or of a mapping that is
/// backing off) before it settles for a smaller batch.
const MAX_SKIPPED: usize = 10_000;

#[derive(Default)]
struct Inner {
    order: Line,
    // Both keep per-mapping counts and oldest capture times (for `backlog`, and
    // so that `take` sees which mappings have rows without walking them).
    pending: RowMap<Pending>,
    in_flight: RowMap<Flight>,
    last_version: u64,
    unsettled: Unsettled,
    hurry: bool,
    idle_workers: usize,
    batch_hint: usize,
    open_snapshots: usize,
    touched: HashMap<RowKey, u64>,
    shutdown: bool,
}

/// What [`Queue::push`] recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct Pushed {
    /// Version of the pushed change.
    pub version: u64,
    /// Set when the row's journal log is to be rewritten as one record: its
    /// records have grown to more than twice what they were when last
    /// rewritten, and no batch holds the row (its log is then its pending
    /// change alone). This keeps the journal's work O(size of the write),
    /// amortized, for a row written over and over while Postgres is down.
    pub rewrite: bool,
}

/// How much one batch may take, and how long a worker waits for it.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Most rows in the batch (`pgsync.batch-size`).
    pub rows: usize,
    /// Most bytes of changes in the batch, but at least one row.
    pub bytes: usize,
    /// How long to wait for a fuller batch (`pgsync.batch-delay-ms`).
    pub linger: Duration,
    /// How long to wait for any work before returning empty-handed.
    pub idle: Duration,
}

/// Pending and in-flight figures of one mapping.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Backlog {
    /// Rows waiting for a worker.
    pub pending: usize,
    /// Rows in a batch being written.
    pub in_flight: usize,
    /// Capture time of the oldest unsynced write.
    pub oldest: Option<Instant>,
}

/// What [`Queue::hand_off`] did with a row.
#[derive(Debug)]
pub enum HandOff {
    /// The row is in a batch being written: it stays.
    InFlight,
    /// The row's queued change, taken out (`None`: nothing was queued).
    Taken(Option<Pending>),
}

/// The shared queue; see the module docs.
#[derive(Default)]
pub struct Queue {
    inner: Mutex<Inner>,
    work: Condvar,
    settled: Condvar,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep going with it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait<'a>(&self, cv: &Condvar, guard: MutexGuard<'a, Inner>, d: Duration) -> MutexGuard<'a, Inner> {
        match cv.wait_timeout(guard, d) {
            Ok((g, _)) => g,
            Err(p) => p.into_inner().0,
        }
    }

    /// Records a write to `row`, journaled as `journaled` says; see [`Pushed`].
    pub fn push(&self, row: &RowKey, journaled: Journaled) -> Pushed {
        let mut guard = self.lock();
        let inner = &mut *guard;
        inner.last_version += 1;
        let version = inner.last_version;
        if inner.open_snapshots > 0 {
            inner.touched.insert(row.clone(), version);
        }
        let (bytes, fresh) = match journaled {
            Journaled::Fresh { bytes } => (bytes, true),
            Journaled::Recovered { bytes } => (bytes, false),
        };
        let mut wake = false;
        let mut rewrite = false;
        // Hashed once for the lookup, the insert that may follow, and the
        // in-flight check of a rewrite.
        let hash = Hashed::of(row);
        match inner.pending.get_mut_hashed(row, hash) {
            Some(entry) => {
                entry.append(version, bytes);
                // The in-flight lookup last: it costs a probe.
                rewrite = fresh && entry.grown(COMPACTION_SLACK) && inner.in_flight.get_hashed(row, hash).is_none();
            }
            None => {
                inner.unsettled.add(version);
                inner.order.push_back(hash);
                // Wake an idle worker for the first row, and for every further
                // batch's worth: a wake-up per write would cost more than the write.
                let queued = inner.order.len();
                wake = inner.idle_workers > 0 && (queued == 1 || queued.is_multiple_of(inner.batch_hint.max(1)));
                inner.pending.insert_new(row.clone(), hash, Pending::new(version, bytes));
            }
        }
        drop(guard);
        if wake {
            // All: a worker lingering for a fuller batch waits on the same condvar
            // and must not swallow the wake-up meant for an idle one.
            self.work.notify_all();
        }
        Pushed { version, rewrite }
    }

    /// The row's journal log now holds its pending change as one record of
    /// `bytes` (a rewrite after [`Pushed::rewrite`], a rejected change merged
    /// under it, or what was left once a batch settled); false when nothing of
    /// the row is pending.
    pub fn rewritten(&self, row: &RowKey, bytes: usize) -> bool {
        let mut inner = self.lock();
        inner.pending.get_mut(row).map(|entry| entry.rewritten(bytes)).is_some()
    }

    /// The version of the newest change captured so far.
    pub fn last_version(&self) -> u64 {
        self.lock().last_version
    }

    /// Waits for work and takes up to `limits.rows` rows that are not already in
    /// a batch and whose mapping is `ready`, and no more rows than fit in
    /// `limits.bytes` (a larger row goes alone). When fewer are queued it lingers
    /// up to `limits.linger` for more, unless someone is in a hurry. Returns an
    /// empty batch on shutdown, or after `limits.idle` with nothing to take.
    /// The rows come with what the queue keeps of them: the log holds their
    /// change.
    pub fn take_batch(&self, limits: BatchLimits, ready: &dyn Fn(usize) -> bool) -> Vec<(RowKey, Pending)> {
        let BatchLimits { rows: max, bytes: max_bytes, linger: delay, idle } = limits;
        let mut inner = self.lock();
        inner.batch_hint = max;
        let idle_until = Instant::now() + idle;
        let mut lingered = false;
        loop {
            if inner.shutdown {
                return Vec::new();
            }
            if !inner.order.is_empty() && !lingered && !delay.is_zero() {
                lingered = true;
                let linger_until = Instant::now() + delay;
                while !inner.shutdown && !inner.hurry && inner.order.len() < max {
                    let now = Instant::now();
                    if now >= linger_until {
                        break;
                    }
                    inner = self.wait(&self.work, inner, linger_until - now);
                }
            }
            let batch = inner.take(max, max_bytes, ready);
            if !batch.is_empty() {
                inner.hurry = false;
                return batch;
            }
            let now = Instant::now();
            if now >= idle_until {
                return Vec::new();
            }
            inner.idle_workers += 1;
            inner = self.wait(&self.work, inner, idle_until - now);
            inner.idle_workers -= 1;
        }
    }

    /// Puts rows back after a failure that may heal (Postgres down); a newer change
    /// captured meanwhile stays on top of the old one.
    pub fn requeue(&self, batch: Vec<(RowKey, Entry)>) {
        let mut inner = self.lock();
        for (row, old) in batch.into_iter().rev() {
            inner.in_flight.remove(&row);
            inner.note_settled(&row);
            let mut old = Pending::of(&old);
            match inner.pending.remove(&row) {
                Some(newer) => {
                    inner.unsettled.remove(newer.first_version);
                    old.then(newer);
                    inner.pending.insert(row, old);
                }
                None => {
                    inner.order.push_front(Hashed::of(&row));
                    inner.pending.insert(row, old);
                }
            }
        }
        drop(inner);
        self.work.notify_all();
        self.settled.notify_all();
    }

    /// Marks the rows of a finished batch as settled.
    pub fn complete<'a>(&self, rows: impl IntoIterator<Item = &'a RowKey>) {
        let mut inner = self.lock();
        for row in rows {
            if let Some(flight) = inner.in_flight.remove(row) {
                inner.unsettled.remove(flight.first_version);
            }
            inner.note_settled(row);
        }
        drop(inner);
        // Rows that waited behind this batch may be taken now.
        self.work.notify_all();
        self.settled.notify_all();
    }

    /// Asks the workers to take the next batch at once instead of lingering for a
    /// fuller one: someone (`SYNC.HSET`) waits for it.
    pub fn hurry(&self) {
        self.lock().hurry = true;
        self.work.notify_all();
    }

    /// What the queue keeps of the change queued for `row` (not in flight), if any.
    pub fn pending(&self, row: &RowKey) -> Option<Pending> {
        self.lock().pending.get(row).copied()
    }

    /// The journal bytes of the change queued for `row` behind its batch (0 when
    /// none): what its log gained since the batch was taken.
    pub fn pending_journal_bytes(&self, row: &RowKey) -> usize {
        self.lock().pending.get(row).map_or(0, |e| e.journal_bytes)
    }

    /// Number of rows holding a change with version `<= version` not yet settled.
    pub fn unsettled_up_to(&self, version: u64) -> usize {
        self.lock().unsettled.up_to(version)
    }

    /// The oldest version not yet settled: every change before it has landed
    /// (or was rejected or dropped). `None` when nothing is unsettled.
    pub fn oldest_unsettled(&self) -> Option<u64> {
        self.lock().unsettled.oldest()
    }

    /// Pending and in-flight figures for one mapping, in O(1) of the queue's size:
    /// the maps keep them as rows come and go (see `row_map`).
    pub fn backlog(&self, mapping: usize) -> Backlog {
        let inner = self.lock();
        let (pending, pending_since) = inner.pending.figures(mapping);
        let (in_flight, flight_since) = inner.in_flight.figures(mapping);
        let oldest = match (pending_since, flight_since) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
        .map(Stamp::instant);
        Backlog { pending, in_flight, oldest }
    }

    /// Whether `row` has a change queued or in flight.
    pub fn holds(&self, row: &RowKey) -> bool {
        let inner = self.lock();
        inner.pending.contains_key(row) || inner.in_flight.contains_key(row)
    }

    /// Gives back the memory of a drained backlog: maps and the order keep their
    /// capacity after rows leave, which after a million pending rows is hundreds
    /// of MiB. Shrinks only what is far larger than needed, so it is cheap to call
    /// often.
    pub fn release_memory(&self) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        inner.pending.shrink_if_sparse();
        inner.in_flight.shrink_if_sparse();
        shrink_map(&mut inner.touched);
        inner.order.shrink();
    }

    /// Takes `row`'s queued change out of the queue, for a hand-off to another
    /// node (resharding: the row's journal log leaves with its keys, and the node
    /// receiving them syncs it). `Err(())` when the row is in a batch: its outcome
    /// is not known yet, so it must not leave now.
    pub fn hand_off(&self, row: &RowKey) -> HandOff {
        let mut inner = self.lock();
        if inner.in_flight.contains_key(row) {
            return HandOff::InFlight;
        }
        let entry = inner.pending.remove(row);
        if let Some(entry) = &entry {
            // Its place in line is skipped by `take`, which finds no entry there.
            inner.unsettled.remove(entry.first_version);
        }
        drop(inner);
        self.settled.notify_all();
        HandOff::Taken(entry)
    }

    /// Puts back a change [`Queue::hand_off`] took, when the row did not leave
    /// after all (the `MIGRATE` failed): same versions, front of the line.
    pub fn take_back(&self, row: RowKey, entry: Pending) {
        let mut inner = self.lock();
        inner.unsettled.add(entry.first_version);
        inner.order.push_front(Hashed::of(&row));
        inner.pending.insert(row, entry);
        drop(inner);
        self.work.notify_all();
    }

    /// Forgets every queued change (not those in flight), waking the waiters.
    pub fn drop_pending(&self) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        for entry in inner.pending.values() {
            inner.unsettled.remove(entry.first_version);
        }
        inner.pending.clear();
        inner.order.clear();
        drop(guard);
        self.settled.notify_all();
    }

    /// Hands out no more batches and wakes every waiter, so workers return; the
    /// supervisor calls it when the module stops.
    pub fn shut_down(&self) {
        self.lock().shutdown = true;
        self.work.notify_all();
        self.settled.notify_all();
    }
}

impl Inner {
    /// Takes up to `max` queued rows (and `max_bytes` of changes, but at least
    /// one row) that are not in flight and whose mapping is ready; the rest keep
    /// their place in line.
    fn take(&mut self, max: usize, max_bytes: usize, ready: &dyn Fn(usize) -> bool) -> Vec<(RowKey, Pending)> {
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        // While Postgres is down every mapping waits: say so without walking a
        // queue that may hold millions of rows, on every wake-up.
        if !self.pending.mappings().any(ready) {
            return batch;
        }
        let mut skipped = Vec::new();
        while batch.len() < max && skipped.len() < MAX_SKIPPED {
            let Some(hash) = self.order.pop_front() else { break };
            // No row pending under this hash: it was handed off; its place goes too.
            let Some(row) = self.pending.key_of(hash).cloned() else { continue };
            if self.in_flight.contains_key(&row) || !ready(row.mapping) {
                skipped.push(hash);
                continue;
            }
            let size = self.pending.get_hashed(&row, hash).map_or(0, |p| p.journal_bytes);
            if !batch.is_empty() && bytes.saturating_add(size) > max_bytes {
                // Big rows go in a batch of their own: one message to Postgres
                // holds a whole batch, and it must stay far below its 1 GiB limit.
                self.order.push_front(hash);
                break;
            }
            bytes = bytes.saturating_add(size);
            if let Some(entry) = self.pending.remove(&row) {
                let flight = Flight { since: entry.since, first_version: entry.first_version };
                self.in_flight.insert(row.clone(), flight);
                batch.push((row, entry));
            }
        }
        for row in skipped.into_iter().rev() {
            self.order.push_front(row);
        }
        batch
    }
}

#[cfg(test)]
mod tests;
