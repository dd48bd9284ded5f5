//! The in-memory queue of dirty rows shared by capture (producer) and the workers
//! (consumers). One entry per dirty row: later writes coalesce into it, a row is in
//! at most one batch at a time (so one row's changes never overtake each other),
//! and waiters (`SYNC.WAIT`, `SYNC.HSET`) are woken when rows settle. Readers of
//! Postgres (reload, listener) open a snapshot to learn which rows Redis changed
//! after they read them.

use crate::change::{combine, Change, RowOp, Write};
use std::collections::{HashMap, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Identifies a mapped row: mapping index and primary-key text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RowKey {
    /// Index into the mappings.
    pub mapping: usize,
    /// Primary-key value as it appears in the Redis key.
    pub id: String,
}

/// A queued change and when its oldest write was captured.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The coalesced change.
    pub change: Change,
    /// Capture time of the oldest write merged in (for lag).
    pub since: Instant,
}

/// How a settled row ended: committed, or rejected with Postgres's message.
pub type Outcome = Result<(), String>;

/// What is known of a row while its batch is being written.
#[derive(Debug, Clone)]
struct Flight {
    first_version: u64,
    since: Instant,
    op: RowOp,
    acks: Vec<String>,
}

#[derive(Default)]
struct Inner {
    order: VecDeque<RowKey>,
    pending: HashMap<RowKey, Entry>,
    in_flight: HashMap<RowKey, Flight>,
    last_version: u64,
    watched: HashMap<RowKey, usize>,
    outcomes: HashMap<RowKey, (u64, Outcome)>,
    open_snapshots: usize,
    touched: HashMap<RowKey, u64>,
    shutdown: bool,
}

/// What [`Queue::push`] recorded: the version, and what the journal must remember
/// for the row (its pending change on top of any change still in flight, so a
/// crash before the in-flight one commits loses neither).
#[derive(Debug, Clone, PartialEq)]
pub struct Pushed {
    /// Version of the pushed change.
    pub version: u64,
    /// The row's operation, in-flight and pending combined.
    pub op: RowOp,
    /// Every ack uuid waiting on the row.
    pub acks: Vec<String>,
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

/// The shared queue; see the module docs.
#[derive(Default)]
pub struct Queue {
    inner: Mutex<Inner>,
    work: Condvar,
    settled: Condvar,
}

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
        let inner = self.queue.lock();
        inner.pending.contains_key(row)
            || inner.in_flight.contains_key(row)
            || inner.touched.get(row).is_some_and(|v| *v > self.version)
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

    /// Records a write to `row`; see [`Pushed`].
    pub fn push(&self, row: RowKey, write: Write) -> Pushed {
        let mut guard = self.lock();
        let inner = &mut *guard;
        inner.last_version += 1;
        let version = inner.last_version;
        if inner.open_snapshots > 0 {
            inner.touched.insert(row.clone(), version);
        }
        let change = Change::new(write, version);
        let (mut op, mut acks) = match inner.pending.get_mut(&row) {
            Some(entry) => {
                entry.change.absorb(change);
                (entry.change.op, entry.change.acks.clone())
            }
            None => {
                let summary = (change.op, change.acks.clone());
                inner.order.push_back(row.clone());
                inner.pending.insert(
                    row.clone(),
                    Entry {
                        change,
                        since: Instant::now(),
                    },
                );
                summary
            }
        };
        if let Some(flight) = inner.in_flight.get(&row) {
            op = combine(flight.op, op);
            acks = flight.acks.iter().chain(&acks).cloned().collect();
        }
        drop(guard);
        self.work.notify_one();
        Pushed { version, op, acks }
    }

    /// The version of the newest change captured so far.
    pub fn last_version(&self) -> u64 {
        self.lock().last_version
    }

    /// Waits for work and takes up to `max` rows that are not already in a batch
    /// and whose mapping is `ready`. When fewer than `max` are queued it lingers up
    /// to `delay` for more. Returns an empty batch on shutdown, or after `idle`
    /// with nothing to take.
    pub fn take_batch(
        &self,
        max: usize,
        delay: Duration,
        idle: Duration,
        ready: &dyn Fn(usize) -> bool,
    ) -> Vec<(RowKey, Entry)> {
        let mut inner = self.lock();
        let idle_until = Instant::now() + idle;
        let mut lingered = false;
        loop {
            if inner.shutdown {
                return Vec::new();
            }
            if !inner.order.is_empty() && !lingered && inner.order.len() < max && !delay.is_zero() {
                lingered = true;
                let linger_until = Instant::now() + delay;
                while !inner.shutdown && inner.order.len() < max {
                    let now = Instant::now();
                    if now >= linger_until {
                        break;
                    }
                    inner = self.wait(&self.work, inner, linger_until - now);
                }
            }
            let batch = inner.take(max, ready);
            if !batch.is_empty() {
                return batch;
            }
            let now = Instant::now();
            if now >= idle_until {
                return Vec::new();
            }
            inner = self.wait(&self.work, inner, idle_until - now);
        }
    }

    /// Puts rows back after a failure that may heal (Postgres down); a newer change
    /// captured meanwhile stays on top of the old one.
    pub fn requeue(&self, batch: Vec<(RowKey, Entry)>) {
        let mut inner = self.lock();
        for (row, mut old) in batch.into_iter().rev() {
            inner.in_flight.remove(&row);
            match inner.pending.remove(&row) {
                Some(newer) => {
                    old.change.absorb(newer.change);
                    inner.pending.insert(row, old);
                }
                None => {
                    inner.order.push_front(row.clone());
                    inner.pending.insert(row, old);
                }
            }
        }
        drop(inner);
        self.work.notify_all();
        self.settled.notify_all();
    }

    /// Marks a row of a finished batch as settled with its outcome.
    pub fn complete(&self, row: &RowKey, version: u64, outcome: Outcome) {
        let mut inner = self.lock();
        inner.in_flight.remove(row);
        if inner.watched.contains_key(row) {
            inner.outcomes.insert(row.clone(), (version, outcome));
        }
        drop(inner);
        self.work.notify_all();
        self.settled.notify_all();
    }

    /// The operation and acks of the change queued for `row` (not in flight), if any.
    pub fn pending_change(&self, row: &RowKey) -> Option<(RowOp, Vec<String>)> {
        self.lock()
            .pending
            .get(row)
            .map(|e| (e.change.op, e.change.acks.clone()))
    }

    /// Opens a snapshot for a reader about to read rows from Postgres.
    pub fn snapshot(&self) -> Snapshot<'_> {
        let mut inner = self.lock();
        inner.open_snapshots += 1;
        Snapshot {
            queue: self,
            version: inner.last_version,
        }
    }

    /// Number of rows holding a change with version `<= version` not yet settled.
    pub fn unsettled_up_to(&self, version: u64) -> usize {
        self.lock().unsettled_up_to(version)
    }

    /// Blocks until every change up to `version` is settled or `deadline` passes;
    /// returns how many rows are still unsettled.
    pub fn wait_all(&self, version: u64, deadline: Option<Instant>) -> usize {
        let mut inner = self.lock();
        loop {
            let left = inner.unsettled_up_to(version);
            if left == 0 || inner.shutdown {
                return left;
            }
            let wait = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(w) if !w.is_zero() => w,
                    _ => return left,
                },
                None => Duration::from_secs(1),
            };
            inner = self.wait(&self.settled, inner, wait);
        }
    }

    /// Starts recording outcomes for `row` so [`Queue::wait_row`] can report them.
    pub fn watch(&self, row: &RowKey) {
        *self.lock().watched.entry(row.clone()).or_default() += 1;
    }

    /// Stops watching `row` without waiting (the change was never queued).
    pub fn unwatch(&self, row: &RowKey) {
        self.lock().release_watch(row);
    }

    /// Blocks until the change with `version` to a watched `row` settles, then stops
    /// watching it. Returns `None` on shutdown.
    pub fn wait_row(&self, row: &RowKey, version: u64) -> Option<Outcome> {
        let mut inner = self.lock();
        let result = loop {
            if let Some((v, outcome)) = inner.outcomes.get(row) {
                if *v >= version {
                    break Some(outcome.clone());
                }
            }
            if inner.shutdown {
                break None;
            }
            inner = self.wait(&self.settled, inner, Duration::from_secs(1));
        };
        inner.release_watch(row);
        result
    }

    /// Pending and in-flight figures for one mapping.
    pub fn backlog(&self, mapping: usize) -> Backlog {
        let inner = self.lock();
        let mut b = Backlog::default();
        let mut consider = |since: Instant| {
            b.oldest = Some(b.oldest.map_or(since, |o: Instant| o.min(since)));
        };
        for (row, entry) in &inner.pending {
            if row.mapping == mapping {
                b.pending += 1;
                consider(entry.since);
            }
        }
        for (row, flight) in &inner.in_flight {
            if row.mapping == mapping {
                b.in_flight += 1;
                consider(flight.since);
            }
        }
        b
    }

    /// Forgets every queued change (not those in flight), waking the waiters.
    pub fn drop_pending(&self) {
        let mut inner = self.lock();
        inner.pending.clear();
        inner.order.clear();
        drop(inner);
        self.settled.notify_all();
    }

    /// Wakes every waiter and makes workers return; used when the module stops.
    pub fn shut_down(&self) {
        self.lock().shutdown = true;
        self.work.notify_all();
        self.settled.notify_all();
    }

    /// Whether [`Queue::shut_down`] was called.
    pub fn is_shut_down(&self) -> bool {
        self.lock().shutdown
    }

    /// Sleeps up to `d`, waking early on shutdown.
    pub fn sleep(&self, d: Duration) {
        let until = Instant::now() + d;
        let mut inner = self.lock();
        while !inner.shutdown {
            let now = Instant::now();
            if now >= until {
                break;
            }
            inner = self.wait(&self.settled, inner, until - now);
        }
    }
}

impl Inner {
    /// Takes up to `max` queued rows that are not in flight and whose mapping is
    /// ready; the rest keep their place in line.
    fn take(&mut self, max: usize, ready: &dyn Fn(usize) -> bool) -> Vec<(RowKey, Entry)> {
        let mut batch = Vec::new();
        let mut skipped = Vec::new();
        while batch.len() < max {
            let Some(row) = self.order.pop_front() else { break };
            if self.in_flight.contains_key(&row) || !ready(row.mapping) {
                skipped.push(row);
                continue;
            }
            if let Some(entry) = self.pending.remove(&row) {
                let flight = Flight {
                    first_version: entry.change.first_version,
                    since: entry.since,
                    op: entry.change.op,
                    acks: entry.change.acks.clone(),
                };
                self.in_flight.insert(row.clone(), flight);
                batch.push((row, entry));
            }
        }
        for row in skipped.into_iter().rev() {
            self.order.push_front(row);
        }
        batch
    }

    fn release_watch(&mut self, row: &RowKey) {
        if let Some(n) = self.watched.get_mut(row) {
            *n -= 1;
            if *n == 0 {
                self.watched.remove(row);
                self.outcomes.remove(row);
            }
        }
    }

    fn unsettled_up_to(&self, version: u64) -> usize {
        let pending = self
            .pending
            .values()
            .filter(|e| e.change.first_version <= version)
            .count();
        let flying = self.in_flight.values().filter(|f| f.first_version <= version).count();
        pending + flying
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::Fields;

    fn row(id: &str) -> RowKey {
        RowKey {
            mapping: 0,
            id: id.into(),
        }
    }

    fn write(op: RowOp, v: &str, acks: &[&str]) -> Write {
        let fields: Fields = [(b"score".to_vec(), Some(v.as_bytes().to_vec()))].into_iter().collect();
        Write {
            op,
            fields,
            whole_row: false,
            acks: acks.iter().map(|a| a.to_string()).collect(),
        }
    }

    fn upsert(v: &str) -> Write {
        write(RowOp::Upsert, v, &[])
    }

    const NOW: Duration = Duration::ZERO;
    const ALL: &dyn Fn(usize) -> bool = &|_| true;

    fn take(q: &Queue) -> Vec<(RowKey, Entry)> {
        q.take_batch(10, NOW, NOW, ALL)
    }

    #[test]
    fn writes_to_one_row_coalesce() {
        let q = Queue::default();
        q.push(row("1"), upsert("1"));
        let v = q.push(row("1"), upsert("2")).version;
        let batch = take(&q);
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].1.change.version, v);
        assert_eq!(batch[0].1.change.fields, upsert("2").fields);
    }

    #[test]
    fn a_row_in_flight_is_not_taken_twice() {
        let q = Queue::default();
        q.push(row("1"), upsert("1"));
        let first = take(&q);
        q.push(row("1"), upsert("2"));
        q.push(row("2"), upsert("2"));
        let second = take(&q);
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].0, row("2"));
        q.complete(&row("1"), first[0].1.change.version, Ok(()));
        let third = take(&q);
        assert_eq!(third[0].0, row("1"));
        assert_eq!(third[0].1.change.fields, upsert("2").fields);
    }

    #[test]
    fn rows_of_a_mapping_that_is_not_ready_wait_their_turn() {
        let q = Queue::default();
        q.push(
            RowKey {
                mapping: 1,
                id: "1".into(),
            },
            upsert("1"),
        );
        q.push(row("2"), upsert("2"));
        let batch = q.take_batch(10, NOW, NOW, &|m| m == 0);
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].0, row("2"));
        assert_eq!(take(&q)[0].0.mapping, 1);
    }

    #[test]
    fn requeued_rows_keep_newer_writes_on_top() {
        let q = Queue::default();
        q.push(row("1"), write(RowOp::Upsert, "1", &["a"]));
        let batch = take(&q);
        q.push(row("1"), write(RowOp::Upsert, "2", &["b"]));
        assert_eq!(q.unsettled_up_to(1), 1);
        q.requeue(batch);
        let again = take(&q);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].1.change.fields, upsert("2").fields);
        assert_eq!(again[0].1.change.acks, vec!["a".to_string(), "b".to_string()]);
        assert_eq!(again[0].1.change.first_version, 1);
    }

    #[test]
    fn the_journal_hears_of_a_delete_still_in_flight() {
        let q = Queue::default();
        q.push(row("1"), write(RowOp::Delete, "", &["gone"]));
        let _flying = take(&q);
        let pushed = q.push(row("1"), write(RowOp::Upsert, "1", &["back"]));
        assert_eq!(pushed.op, RowOp::Replace);
        assert_eq!(pushed.acks, ["gone", "back"]);
    }

    #[test]
    fn snapshots_see_rows_changed_after_them() {
        let q = Queue::default();
        q.push(row("1"), upsert("1"));
        let batch = take(&q);
        let snapshot = q.snapshot();
        q.complete(&row("1"), batch[0].1.change.version, Ok(()));
        assert!(!snapshot.redis_is_newer(&row("1")), "settled before the snapshot");
        let v = q.push(row("1"), upsert("2")).version;
        let batch = take(&q);
        q.complete(&row("1"), v, Ok(()));
        drop(batch);
        assert!(
            snapshot.redis_is_newer(&row("1")),
            "changed after the snapshot, even though settled"
        );
        drop(snapshot);
        assert!(!q.snapshot().redis_is_newer(&row("1")));
    }

    #[test]
    fn waiters_see_outcomes() {
        let q = Queue::default();
        q.watch(&row("1"));
        let v = q.push(row("1"), upsert("x")).version;
        let batch = take(&q);
        q.complete(&batch[0].0, v, Err("bad".into()));
        assert_eq!(q.wait_row(&row("1"), v), Some(Err("bad".into())));
        assert_eq!(q.wait_all(v, Some(Instant::now())), 0);
    }
}
