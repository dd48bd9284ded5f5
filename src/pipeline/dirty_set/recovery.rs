//! Reading the journal back into the queue after a restart or a promotion, for at
//! most [`BUDGET`] per step, so a journal of a million rows is recovered in steps,
//! with clients served between them: first the logs an older version kept as
//! keys (the one hash of the oldest, then a `SCAN` for per-row keys), moved into
//! memory; then a walk over the logs in memory. A write to a row whose log is not queued yet queues that
//! log first ([`recover_row`]), so the older records come before the newer write
//! (an increment must not be lost or counted twice, and a later set must stay on
//! top).

use super::legacy;
use crate::model::change::Change;
use crate::model::doubt::{increments_of, Doubt};
use crate::model::journal_log::writes;
use crate::model::queue::{Journaled, RowKey};
use crate::model::row_id::check_id;
use crate::pipeline::dirty_set::DirtySet;
use crate::redis::journal::logs::{self, SHARDS};
use crate::redis::journal::{self, keys};
use crate::redis::redis_io::{bytes, call, notice, warn};
use compact_str::CompactString;
use redis_module::{Context, RedisValue};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::time::{Duration, Instant};

/// Most time one server cron tick spends recovering.
const BUDGET: Duration = Duration::from_millis(2);

/// Keys asked of one `SCAN`.
const CHUNK: &[u8] = b"250";

const WAITING: u8 = 0;
const LEGACY: u8 = 1;
const SCANNING: u8 = 2;
const WALKING: u8 = 3;
const DONE: u8 = 4;

/// Where the recovery of the journal stands: waiting for the server to serve as
/// a primary, reading the oldest version's journal hash, scanning for logs kept
/// as keys, walking the logs in memory, or done. Written on the main thread only; read by any thread.
#[derive(Default)]
pub struct Recovery {
    phase: AtomicU8,
    /// The `SCAN` cursor, then where the walk goes on ([`walk_cursor`]).
    cursor: AtomicU64,
    queued: AtomicU64,
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
            LEGACY | SCANNING | WALKING => format!("recovering: {queued} changes queued"),
            _ if queued == 0 => "done".into(),
            _ => format!("done: {queued} changes queued"),
        }
    }

    pub(super) fn count(&self, queued: u64) {
        self.queued.fetch_add(queued, Ordering::Relaxed);
    }
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
    let recovery = set.recovery();
    let phase = recovery.phase.load(Ordering::SeqCst);
    if phase != WAITING {
        return phase;
    }
    recovery.cursor.store(0, Ordering::Relaxed);
    recovery.queued.store(0, Ordering::Relaxed);
    let next = if legacy::begin(ctx, recovery) { LEGACY } else { SCANNING };
    recovery.phase.store(next, Ordering::SeqCst);
    next
}

fn recover_within(ctx: &Context, set: &DirtySet, budget: Option<Duration>) {
    let started = Instant::now();
    let over = || budget.is_some_and(|b| started.elapsed() >= b);
    let recovery = set.recovery();
    if begin(ctx, set) == LEGACY {
        if !legacy::step(ctx, set, &over) {
            return;
        }
        recovery.phase.store(SCANNING, Ordering::SeqCst);
    }
    if recovery.phase.load(Ordering::SeqCst) == SCANNING {
        if !scan_keys(ctx, set, &over) {
            return;
        }
        recovery.cursor.store(walk_cursor(SHARDS, POSITION_MASK), Ordering::Relaxed);
        recovery.phase.store(WALKING, Ordering::SeqCst);
    }
    if recovery.phase.load(Ordering::SeqCst) != WALKING || !walk(ctx, set, &over) {
        return;
    }
    legacy::finish(ctx, set);
    recovery.phase.store(DONE, Ordering::SeqCst);
    let count = recovery.queued.load(Ordering::Relaxed);
    if count > 0 {
        notice(&format!("queued {count} unsynced change(s) from the journal"));
    }
}

/// Moves the logs kept as keys into memory, a `SCAN` chunk at a time; true when
/// the scan has ended.
fn scan_keys(ctx: &Context, set: &DirtySet, over: &dyn Fn() -> bool) -> bool {
    let recovery = set.recovery();
    let pattern = [keys::PREFIX, b"*"].concat();
    loop {
        let cursor = recovery.cursor.load(Ordering::Relaxed).to_string();
        let (next, found) = match call(ctx, "SCAN", &[cursor.as_bytes(), b"MATCH", &pattern, b"COUNT", CHUNK]) {
            Ok(RedisValue::Array(reply)) => scan_reply(&reply),
            Ok(_) => None,
            Err(e) => {
                warn(&format!("cannot scan for journal keys: {e}"));
                None
            }
        }
        .unwrap_or((0, Vec::new()));
        for journal in found {
            adopt(ctx, set, &journal);
        }
        recovery.cursor.store(next, Ordering::Relaxed);
        if next == 0 {
            return true;
        }
        if over() {
            return false;
        }
    }
}

/// Bits of a walk cursor that hold the position within a shard.
const POSITION_BITS: u32 = 48;
const POSITION_MASK: usize = (1 << POSITION_BITS) - 1;

/// A walk's cursor: the shards still to walk (the current one last), and the
/// position in the current shard below which the walk goes on.
fn walk_cursor(shards_left: usize, position: usize) -> u64 {
    ((shards_left as u64) << POSITION_BITS) | (position & POSITION_MASK) as u64
}

/// Queues the logs in memory, shard by shard, each from its last position
/// towards its first (see `model/log_map/`); true when the walk has ended.
fn walk(ctx: &Context, set: &DirtySet, over: &dyn Fn() -> bool) -> bool {
    let recovery = set.recovery();
    let cursor = recovery.cursor.load(Ordering::Relaxed);
    let mut shards_left = (cursor >> POSITION_BITS) as usize;
    let mut position = cursor as usize & POSITION_MASK;
    let mut steps = 0u32;
    while let Some(shard) = shards_left.checked_sub(1) {
        match position.min(logs::shard_len(shard)).checked_sub(1) {
            None => {
                shards_left = shard;
                position = POSITION_MASK;
                continue;
            }
            Some(index) => {
                if let Some(key) = logs::key_at(shard, index) {
                    recover_log(ctx, set, &key);
                }
                position = index;
            }
        }
        steps += 1;
        // The clock is read every few logs: a log's queueing takes microseconds.
        if steps.is_multiple_of(64) && over() {
            recovery.cursor.store(walk_cursor(shards_left, position), Ordering::Relaxed);
            return false;
        }
    }
    recovery.cursor.store(0, Ordering::Relaxed);
    true
}

/// The cursor and the keys of a `SCAN` reply.
fn scan_reply(reply: &[RedisValue]) -> Option<(u64, Vec<Vec<u8>>)> {
    let [cursor, RedisValue::Array(keys)] = reply else { return None };
    let cursor = std::str::from_utf8(&bytes(cursor)?).ok()?.parse().ok()?;
    Some((cursor, keys.iter().filter_map(bytes).collect()))
}

/// Called by capture before it queues a write: until the recovery is done, the
/// log of the written row is queued first (if the queue does not hold it yet).
pub fn recover_row(ctx: &Context, set: &DirtySet, key: &[u8]) {
    if set.recovery().is_done() {
        return;
    }
    if begin(ctx, set) == LEGACY {
        legacy::recover_key(ctx, set, key);
    }
    let journal = keys::key_for(ctx, key);
    if keys::read(ctx, &journal).is_some() {
        return adopt(ctx, set, &journal);
    }
    recover_log(ctx, set, key);
}

/// Moves a log kept as a key into memory and queues it: found after an upgrade,
/// or arrived from another node (resharding moved its row here), whose changes
/// are this node's to sync now.
pub fn adopt(ctx: &Context, set: &DirtySet, journal: &[u8]) {
    let Some(key) = journal::from_key(ctx, journal) else { return };
    // A row already queued keeps its place: its queued change came from this log's
    // older records and newer writes; the moved records join them in the log and
    // are queued with the rest at the next start.
    recover_log(ctx, set, &key);
}

/// Queues the log of the row written through `key` (a worker decodes it when
/// it takes the row), unless the queue holds its row already: a row written
/// since the start had its log queued first (or had none), and a walk may see a
/// log twice; queueing a log again would count its increments twice.
fn recover_log(ctx: &Context, set: &DirtySet, key: &[u8]) {
    let Some(row) = row_of(set, key) else {
        warn(&format!("dropped the journal of {}: it names no mapped row", key.escape_ascii()));
        return journal::forget(ctx, key);
    };
    if set.queue().holds(&row) {
        return;
    }
    let Some((log, marks)) = logs::read_marked(key) else { return };
    // Read whole once here, so that a log no version of the module could
    // have written is dropped with a line in the log, not carried along.
    if writes(&log).is_none() {
        warn(&format!("dropped the unreadable journal of {}", key.escape_ascii()));
        return journal::forget(ctx, key);
    }
    let doubts: Vec<Doubt> = marks.iter().filter_map(|&(marker, prefix)| doubt(&log, marker, prefix)).collect();
    if !doubts.is_empty() {
        set.doubt(row.clone(), doubts);
    }
    set.queue().push(&row, Journaled::Recovered { bytes: log.len() });
    set.recovery().count(1);
}

/// What a batch marked `marker` may have committed of a log: the increments of
/// its first `prefix` bytes, coalesced.
fn doubt(log: &[u8], marker: i64, prefix: usize) -> Option<Doubt> {
    let mut writes = writes(log.get(..prefix)?)?.into_iter().map(|(_, write)| Change::new(write, 0));
    let mut change = writes.next()?;
    writes.for_each(|newer| change.absorb(newer));
    Some(Doubt { marker, prefix, increments: increments_of(&change.fields) })
}

/// The row a journaled key writes to, if it still maps to one.
pub(super) fn row_of(set: &DirtySet, key: &[u8]) -> Option<RowKey> {
    let resolved = set.mappings().resolve(key)?;
    let id = check_id(resolved.id).ok()?;
    Some(RowKey { mapping: resolved.mapping, id: CompactString::new(id) })
}
