//! The in-memory queue of dirty rows shared by capture (producer) and the workers
//! (consumers). One entry per dirty row: later writes coalesce into it, a row is in
//! at most one batch at a time (so one row's changes never overtake each other),
//! and waiters (`SYNC.WAIT`, `SYNC.HSET`) are woken when rows settle.

use crate::change::{Change, Fields, RowOp};
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

#[derive(Default)]
struct Inner {
    order: VecDeque<RowKey>,
    pending: HashMap<RowKey, Entry>,
    in_flight: HashMap<RowKey, (u64, Instant)>,
    last_version: u64,
    watched: HashMap<RowKey, usize>,
    outcomes: HashMap<RowKey, (u64, Outcome)>,
    shutdown: bool,
}

/// What [`Queue::push`] recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct Pushed {
    /// Version of the pushed change.
    pub version: u64,
    /// The row's operation after coalescing.
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

impl Queue {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep going with it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a change to `row`; returns its version and the row's coalesced
    /// operation and acks (what the journal must remember).
    pub fn push(&self, row: RowKey, op: RowOp, fields: Fields, acks: Vec<String>) -> Pushed {
        let mut guard = self.lock();
        let inner = &mut *guard;
        inner.last_version += 1;
        let version = inner.last_version;
        let change = Change {
            op,
            fields,
            acks,
            version,
            first_version: version,
        };
        let entry = match inner.pending.entry(row) {
            std::collections::hash_map::Entry::Occupied(e) => {
                let entry = e.into_mut();
                entry.change.absorb(change);
                entry
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                inner.order.push_back(e.key().clone());
                e.insert(Entry {
                    change,
                    since: Instant::now(),
                })
            }
        };
        let pushed = Pushed {
            version,
            op: entry.change.op,
            acks: entry.change.acks.clone(),
        };
        drop(guard);
        self.work.notify_one();
        pushed
    }

    /// The version of the newest change captured so far.
    pub fn last_version(&self) -> u64 {
        self.lock().last_version
    }

    /// Waits for work and takes up to `max` rows that are not already in a batch.
    /// When fewer than `max` are ready it lingers up to `delay` for more. Returns an
    /// empty batch on shutdown, or after `idle` with nothing to do.
    pub fn take_batch(&self, max: usize, delay: Duration, idle: Duration) -> Vec<(RowKey, Entry)> {
        let mut inner = self.lock();
        let idle_until = Instant::now() + idle;
        while !inner.shutdown && inner.order.len() <= inner.in_flight_queued() {
            let now = Instant::now();
            if now >= idle_until {
                return Vec::new();
            }
            inner = self.wait(&self.work, inner, idle_until - now);
        }
        let linger_until = Instant::now() + delay;
        while !inner.shutdown && inner.order.len() < max {
            let now = Instant::now();
            if now >= linger_until {
                break;
            }
            inner = self.wait(&self.work, inner, linger_until - now);
        }
        if inner.shutdown {
            return Vec::new();
        }
        let mut batch = Vec::new();
        let mut busy = Vec::new();
        while batch.len() < max {
            let Some(row) = inner.order.pop_front() else { break };
            if inner.in_flight.contains_key(&row) {
                busy.push(row);
                continue;
            }
            if let Some(entry) = inner.pending.remove(&row) {
                inner
                    .in_flight
                    .insert(row.clone(), (entry.change.first_version, entry.since));
                batch.push((row, entry));
            }
        }
        for row in busy.into_iter().rev() {
            inner.order.push_front(row);
        }
        batch
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

    /// Whether a change to `row` newer than the one being applied is queued.
    pub fn has_pending(&self, row: &RowKey) -> bool {
        self.lock().pending.contains_key(row)
    }

    /// Whether `row` has a change not yet settled: Redis is newer than Postgres
    /// for it, so a row read from Postgres must not overwrite it.
    pub fn is_dirty(&self, row: &RowKey) -> bool {
        let inner = self.lock();
        inner.pending.contains_key(row) || inner.in_flight.contains_key(row)
    }

    /// Number of rows holding a change with version `<= version` not yet settled.
    pub fn unsettled_up_to(&self, version: u64) -> usize {
        let inner = self.lock();
        inner.unsettled_up_to(version)
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
        let mut inner = self.lock();
        inner.release_watch(row);
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
        for (row, (_, since)) in &inner.in_flight {
            if row.mapping == mapping {
                b.in_flight += 1;
                consider(*since);
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

    fn wait<'a>(&self, cv: &Condvar, guard: MutexGuard<'a, Inner>, d: Duration) -> MutexGuard<'a, Inner> {
        match cv.wait_timeout(guard, d) {
            Ok((g, _)) => g,
            Err(p) => p.into_inner().0,
        }
    }
}

impl Inner {
    fn release_watch(&mut self, row: &RowKey) {
        if let Some(n) = self.watched.get_mut(row) {
            *n -= 1;
            if *n == 0 {
                self.watched.remove(row);
                self.outcomes.remove(row);
            }
        }
    }

    /// Queued rows that are blocked behind a batch already in flight.
    fn in_flight_queued(&self) -> usize {
        self.order.iter().filter(|r| self.in_flight.contains_key(*r)).count()
    }

    fn unsettled_up_to(&self, version: u64) -> usize {
        let pending = self
            .pending
            .values()
            .filter(|e| e.change.first_version <= version)
            .count();
        let flying = self.in_flight.values().filter(|(v, _)| *v <= version).count();
        pending + flying
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str) -> RowKey {
        RowKey {
            mapping: 0,
            id: id.into(),
        }
    }

    fn fields(v: &str) -> Fields {
        [(b"score".to_vec(), Some(v.as_bytes().to_vec()))].into_iter().collect()
    }

    const NOW: Duration = Duration::ZERO;

    #[test]
    fn writes_to_one_row_coalesce() {
        let q = Queue::default();
        q.push(row("1"), RowOp::Upsert, fields("1"), vec![]);
        let v = q.push(row("1"), RowOp::Upsert, fields("2"), vec![]).version;
        let batch = q.take_batch(10, NOW, NOW);
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].1.change.version, v);
        assert_eq!(batch[0].1.change.fields, fields("2"));
    }

    #[test]
    fn a_row_in_flight_is_not_taken_twice() {
        let q = Queue::default();
        q.push(row("1"), RowOp::Upsert, fields("1"), vec![]);
        let first = q.take_batch(10, NOW, NOW);
        q.push(row("1"), RowOp::Upsert, fields("2"), vec![]);
        q.push(row("2"), RowOp::Upsert, fields("2"), vec![]);
        let second = q.take_batch(10, NOW, NOW);
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].0, row("2"));
        q.complete(&row("1"), first[0].1.change.version, Ok(()));
        let third = q.take_batch(10, NOW, NOW);
        assert_eq!(third[0].0, row("1"));
        assert_eq!(third[0].1.change.fields, fields("2"));
    }

    #[test]
    fn requeued_rows_keep_newer_writes_on_top() {
        let q = Queue::default();
        q.push(row("1"), RowOp::Upsert, fields("1"), vec!["a".into()]);
        let batch = q.take_batch(10, NOW, NOW);
        q.push(row("1"), RowOp::Upsert, fields("2"), vec!["b".into()]);
        assert_eq!(q.unsettled_up_to(1), 1);
        q.requeue(batch);
        let again = q.take_batch(10, NOW, NOW);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].1.change.fields, fields("2"));
        assert_eq!(again[0].1.change.acks, vec!["a".to_string(), "b".to_string()]);
        assert_eq!(again[0].1.change.first_version, 1);
    }

    #[test]
    fn waiters_see_outcomes() {
        let q = Queue::default();
        q.watch(&row("1"));
        let v = q.push(row("1"), RowOp::Upsert, fields("x"), vec![]).version;
        let batch = q.take_batch(10, NOW, NOW);
        q.complete(&batch[0].0, v, Err("bad".into()));
        assert_eq!(q.wait_row(&row("1"), v), Some(Err("bad".into())));
        assert_eq!(q.wait_all(v, Some(Instant::now())), 0);
    }
}
