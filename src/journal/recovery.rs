//! Reading the journal back into the queue after a restart or a promotion, a slot
//! at a time from the server cron, for at most [`BUDGET`] per tick: a journal of a
//! million rows is recovered in steps, with clients served between them. A write
//! to a row whose slot is not recovered yet recovers that slot first, so the older
//! records are queued before the newer write (increments must not be lost or
//! counted twice, and a later set must stay on top).

use super::{legacy, parse_field, store};
use crate::dirty_set::DirtySet;
use crate::journal_codec::decode;
use crate::queue::{Journaled, RowKey};
use crate::redis_io::{notice, warn};
use crate::row_id::check_id;
use crate::runtime::Runtime;
use redis_module::Context;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Most time one server cron tick spends recovering.
const BUDGET: Duration = Duration::from_millis(5);

const WAITING: u8 = 0;
const LEGACY: u8 = 1;
const SLOTS: u8 = 2;
const DONE: u8 = 3;

/// Where the recovery of the journal stands: waiting for the server to serve as
/// a primary, reading the previous version's journal, reading slots, or done.
/// Written on the main thread only; read by any thread.
#[derive(Default)]
pub struct Recovery {
    phase: AtomicU8,
    next_slot: AtomicU32,
    queued: AtomicU64,
    /// One bit per slot: recovered in this run (by the cron's walk, or early,
    /// for a write to one of its rows).
    recovered: Mutex<Vec<u64>>,
    pub(super) legacy: legacy::Progress,
}

impl Recovery {
    /// Recovery must run (again): at load, and on every change of role (a
    /// promoted replica picks up its primary's journal).
    pub fn restart(&self) {
        self.phase.store(WAITING, Ordering::SeqCst);
    }

    /// Whether every journal record is queued again (and this server is a primary
    /// that has served since).
    pub fn is_done(&self) -> bool {
        self.phase.load(Ordering::SeqCst) == DONE
    }

    /// The `recovery` figure of `SYNC.STATUS`.
    pub fn describe(&self) -> String {
        let queued = self.queued.load(Ordering::Relaxed);
        match self.phase.load(Ordering::SeqCst) {
            WAITING => "waiting".into(),
            LEGACY | SLOTS => format!("recovering: {queued} changes queued"),
            _ if queued == 0 => "done".into(),
            _ => format!("done: {queued} changes queued"),
        }
    }

    fn bits(&self) -> MutexGuard<'_, Vec<u64>> {
        self.recovered.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks `slot` recovered; false when it already was.
    fn claim(&self, slot: u16) -> bool {
        let mut bits = self.bits();
        let (word, bit) = (usize::from(slot / 64), 1u64 << (slot % 64));
        let fresh = bits[word] & bit == 0;
        bits[word] |= bit;
        fresh
    }

    pub(super) fn count(&self, queued: u64) {
        self.queued.fetch_add(queued, Ordering::Relaxed);
    }
}

/// Blocks a background thread until the journal is recovered (readers of
/// Postgres must not write a row over a journaled change not queued again yet).
/// Gives up when this server is a replica (its keys are its primary's) or stops.
pub fn wait_until_recovered(rt: &Runtime) -> Result<(), &'static str> {
    while !rt.dirty.recovery().is_done() {
        if rt.is_replica() {
            return Err("this server is a replica");
        }
        if rt.queue().is_shut_down() {
            return Err("pgsync is stopping");
        }
        rt.queue().sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// One step of the recovery, from the server cron.
pub fn recover_step(ctx: &Context, set: &DirtySet) {
    recover_within(ctx, set, Some(BUDGET));
}

/// Finishes the recovery now, however long the journal: for `SYNC.WAIT` right
/// after a promotion, which must count every journaled change.
pub fn recover_all(ctx: &Context, set: &DirtySet) {
    recover_within(ctx, set, None);
}

/// Starts a recovery if none runs; returns the phase it is in.
fn begin(ctx: &Context, set: &DirtySet) -> u8 {
    let recovery = &set.recovery();
    let phase = recovery.phase.load(Ordering::SeqCst);
    if phase != WAITING {
        return phase;
    }
    recovery.next_slot.store(0, Ordering::Relaxed);
    recovery.queued.store(0, Ordering::Relaxed);
    *recovery.bits() = vec![0; usize::from(store::SLOTS / 64)];
    // Record ids are versions: new ones must not collide with the records an
    // earlier run (or a former primary) left. Versions count at most one per
    // nanosecond, so the clock is past every one of them.
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    set.queue().advance_versions(nanos);
    let next = if legacy::begin(ctx, recovery) { LEGACY } else { SLOTS };
    recovery.phase.store(next, Ordering::SeqCst);
    next
}

fn recover_within(ctx: &Context, set: &DirtySet, budget: Option<Duration>) {
    let started = Instant::now();
    let over = || budget.is_some_and(|b| started.elapsed() >= b);
    let recovery = &set.recovery();
    if begin(ctx, set) == LEGACY {
        if !legacy::step(ctx, set, &over) {
            return;
        }
        recovery.phase.store(SLOTS, Ordering::SeqCst);
    }
    if recovery.phase.load(Ordering::SeqCst) != SLOTS {
        return;
    }
    loop {
        let slot = recovery.next_slot.load(Ordering::Relaxed);
        if slot >= u32::from(store::SLOTS) {
            break;
        }
        recover_slot(ctx, set, slot as u16);
        recovery.next_slot.store(slot + 1, Ordering::Relaxed);
        if over() {
            return;
        }
    }
    legacy::finish(ctx, set);
    recovery.phase.store(DONE, Ordering::SeqCst);
    let count = recovery.queued.load(Ordering::Relaxed);
    if count > 0 {
        notice(&format!("queued {count} unsynced change(s) from the journal"));
    }
}

/// Called by capture before it queues a write: until the recovery is done, the
/// records of the written key's slot are queued first.
pub fn recover_slot_of(ctx: &Context, set: &DirtySet, key: &[u8]) {
    if set.recovery().is_done() {
        return;
    }
    if begin(ctx, set) == LEGACY {
        legacy::recover_key(ctx, set, key);
    }
    recover_slot(ctx, set, store::slot_of(ctx, key));
}

/// A record read back: the row's key, its id, its field and its value.
type Record = (Vec<u8>, u64, Vec<u8>, Vec<u8>);

/// Queues every record of one slot again, each row's in the order written.
fn recover_slot(ctx: &Context, set: &DirtySet, slot: u16) {
    if !set.recovery().claim(slot) {
        return;
    }
    let journal = store::key_of_slot(slot);
    let mut records: Vec<Record> = Vec::new();
    let mut unusable = Vec::new();
    for (field, value) in store::read_all(ctx, &journal) {
        match parse_field(&field) {
            Some((key, id)) => records.push((key.to_vec(), id, field.clone(), value)),
            None => unusable.push(field),
        }
    }
    records.sort_unstable_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    let mut queued = 0;
    // (key, whether its row is taken from this slot): decided at a row's first record.
    let mut current: Option<(Vec<u8>, bool)> = None;
    for (key, id, field, value) in records {
        let (Some(row), Some(write)) = (row_of(set, &key), decode(&value)) else {
            warn(&format!("dropped an unreadable journal record for {}", key.escape_ascii()));
            unusable.push(field);
            continue;
        };
        if current.as_ref().is_none_or(|(k, _)| *k != key) {
            // A row the queue holds already (still in a batch after a role
            // flip-flop) keeps the records it tracks; reading them again would
            // count its increments twice.
            current = Some((key.clone(), !set.queue().holds(&row)));
        }
        if current.as_ref().is_some_and(|(_, take)| *take) {
            set.queue().push(row, write, Journaled::Recovered { id, bytes: value.len() + field.len() });
            queued += 1;
        }
    }
    store::remove(ctx, &journal, &unusable);
    set.recovery().count(queued);
}

/// The row a journaled key writes to, if it still maps to one.
pub(super) fn row_of(set: &DirtySet, key: &[u8]) -> Option<RowKey> {
    let resolved = set.mappings().resolve(key)?;
    let id = check_id(resolved.id).ok()?;
    Some(RowKey { mapping: resolved.mapping, id: id.to_string() })
}
