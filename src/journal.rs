//! The durable side of the queue: a Redis hash that maps every dirty key to its
//! unsynced change (the fields set, removed or incremented), plus one entry per
//! ack uuid waiting on it. It is
//! written in the same command as the change it records, so AOF, RDB and
//! replication carry both together; after a restart or a promotion it is read back
//! into the queue, a chunk per server cron tick. One entry per dirty key bounds its
//! size and makes coalescing free; it holds the values, so a key evicted or expired
//! before its change is synced loses nothing.

use crate::change::{Change, FieldChange, RowOp, Write};
use crate::journal_codec::{decode, encode};
use crate::queue::RowKey;
use crate::redis_io::{bytes, call, call_logged, hgetall, notice, own_writes, warn};
use crate::row_id::check_id;
use crate::runtime::Runtime;
use redis_module::{Context, RedisValue};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The journal hash. The hashtag lets a future cluster mode pin it to a slot.
pub const JOURNAL_KEY: &str = "pgsync:{journal}";

/// Marks a journal field that holds an ack uuid waiting on a row, not a change.
/// No mapped key holds a NUL byte (ids with one are refused), so it cannot clash.
const ACK_MARK: &[u8] = b"\0ack\0";

/// The journal field recording that `uuid` waits for the change of `key`. Each
/// ack has its own field, so a hot key written with many uuids costs O(1) per
/// write, not a rewrite of every uuid it waits on.
pub fn ack_field(key: &[u8], uuid: &str) -> Vec<u8> {
    [key, ACK_MARK, uuid.as_bytes()].concat()
}

/// Records everything unsynced for the row written through `key`: the values
/// themselves, so a write survives its key being evicted or expiring first, and
/// the new ack uuids waiting on it.
pub fn mark(ctx: &Context, key: &[u8], unsynced: &Change, new_acks: &[String]) {
    let value = encode(unsynced.op, &unsynced.fields);
    let acks: Vec<Vec<u8>> = new_acks.iter().map(|uuid| ack_field(key, uuid)).collect();
    let mut args: Vec<&[u8]> = vec![JOURNAL_KEY.as_bytes(), key, &value];
    for field in &acks {
        args.push(field);
        args.push(b"");
    }
    own_writes(|| call_logged(ctx, "HSET", &args));
}

/// Forgets `key` once its change is settled and nothing newer is queued.
pub fn clear(ctx: &Context, key: &[u8]) {
    own_writes(|| call_logged(ctx, "HDEL", &[JOURNAL_KEY.as_bytes(), key]));
}

/// Forgets many settled entries (changes and acks) in one command.
pub fn clear_all(ctx: &Context, fields: &[Vec<u8>]) {
    if fields.is_empty() {
        return;
    }
    let mut args: Vec<&[u8]> = vec![JOURNAL_KEY.as_bytes()];
    args.extend(fields.iter().map(Vec::as_slice));
    own_writes(|| call_logged(ctx, "HDEL", &args));
}

/// Entries asked of one `HSCAN` during recovery.
const RECOVERY_CHUNK: &[u8] = b"1000";
/// Most time one server cron tick spends recovering; clients are served between
/// ticks, so a journal of a million rows never freezes the server.
const RECOVERY_BUDGET: Duration = Duration::from_millis(5);

const WAITING: u8 = 0;
const RUNNING: u8 = 1;
const DONE: u8 = 2;

/// Where the recovery of the journal stands: waiting for the server to serve as
/// a primary, running (an `HSCAN` cursor), or done. Written on the main thread
/// only; read by any thread.
#[derive(Default)]
pub struct Recovery {
    phase: AtomicU8,
    cursor: AtomicU64,
    queued: AtomicU64,
    /// Acks read back before the recovery is done: queued once it is, so that an
    /// ack never stands in the queue for a row whose change is still to be read.
    acks: Mutex<Vec<(RowKey, String)>>,
}

impl Recovery {
    /// Recovery must run (again): at load, and on every change of role (a
    /// promoted replica picks up its primary's journal).
    pub fn restart(&self) {
        self.phase.store(WAITING, Ordering::SeqCst);
    }

    /// Whether every journal entry is queued again (and this server is a primary
    /// that has served since).
    pub fn is_done(&self) -> bool {
        self.phase.load(Ordering::SeqCst) == DONE
    }

    /// The `recovery` figure of `SYNC.STATUS`.
    pub fn describe(&self) -> String {
        let queued = self.queued.load(Ordering::Relaxed);
        match self.phase.load(Ordering::SeqCst) {
            WAITING => "waiting".into(),
            RUNNING => format!("recovering: {queued} changes queued"),
            _ if queued == 0 => "done".into(),
            _ => format!("done: {queued} changes queued"),
        }
    }
}

/// Blocks a background thread until the journal is recovered (readers of
/// Postgres must not write a row over a journaled change not queued again yet).
/// Gives up when this server is a replica (its keys are its primary's) or stops.
pub fn wait_until_recovered(rt: &Runtime) -> Result<(), &'static str> {
    while !rt.recovery.is_done() {
        if rt.is_replica() {
            return Err("this server is a replica");
        }
        if rt.queue.is_shut_down() {
            return Err("pgsync is stopping");
        }
        rt.queue.sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// One step of the recovery, from the server cron: queues again the journal's
/// entries an `HSCAN` chunk at a time, for at most [`RECOVERY_BUDGET`]. Rows
/// already queued are skipped: `HSCAN` may return an entry twice, and a row
/// written meanwhile had its entry queued by [`recover_row`] first.
pub fn recover_step(ctx: &Context, rt: &Runtime) {
    recover_within(ctx, rt, Some(RECOVERY_BUDGET));
}

/// Finishes the recovery now, however long the journal: for `SYNC.WAIT` right
/// after a promotion, which must count every journaled change.
pub fn recover_all(ctx: &Context, rt: &Runtime) {
    if !rt.is_replica() {
        recover_within(ctx, rt, None);
    }
}

fn recover_within(ctx: &Context, rt: &Runtime, budget: Option<Duration>) {
    let recovery = &rt.recovery;
    match recovery.phase.load(Ordering::SeqCst) {
        DONE => return,
        WAITING => {
            recovery.cursor.store(0, Ordering::Relaxed);
            recovery.queued.store(0, Ordering::Relaxed);
            recovery.phase.store(RUNNING, Ordering::SeqCst);
        }
        _ => {}
    }
    let started = Instant::now();
    loop {
        let cursor = recovery.cursor.load(Ordering::Relaxed).to_string();
        let (next, items) =
            match call(ctx, "HSCAN", &[JOURNAL_KEY.as_bytes(), cursor.as_bytes(), b"COUNT", RECOVERY_CHUNK]) {
                Ok(RedisValue::Array(reply)) => scan_reply(&reply),
                Ok(_) => None,
                Err(e) => {
                    warn(&format!("cannot read the journal {JOURNAL_KEY}: {e}"));
                    None
                }
            }
            .unwrap_or((0, Vec::new()));
        let mut queued = 0;
        for pair in items.chunks_exact(2) {
            match requeue_entry(ctx, rt, &pair[0], &pair[1]) {
                Requeued::Queued => queued += 1,
                Requeued::AlreadyQueued => {}
                Requeued::Unusable => clear(ctx, &pair[0]),
            }
        }
        recovery.queued.fetch_add(queued, Ordering::Relaxed);
        recovery.cursor.store(next, Ordering::Relaxed);
        if next == 0 {
            queue_recovered_acks(rt);
            recovery.phase.store(DONE, Ordering::SeqCst);
            let count = recovery.queued.load(Ordering::Relaxed);
            if count > 0 {
                notice(&format!("queued {count} unsynced change(s) from the journal"));
            }
            return;
        }
        if budget.is_some_and(|b| started.elapsed() >= b) {
            return;
        }
    }
}

/// The cursor and the flat field/value list of an `HSCAN` reply.
fn scan_reply(reply: &[RedisValue]) -> Option<(u64, Vec<Vec<u8>>)> {
    let [cursor, RedisValue::Array(items)] = reply else { return None };
    let cursor = std::str::from_utf8(&bytes(cursor)?).ok()?.parse().ok()?;
    Some((cursor, items.iter().filter_map(bytes).collect()))
}

/// Called by capture before it queues a write, until the recovery is done: a row
/// whose journal entry is not queued yet gets it queued first, so the entry the
/// write journals keeps the older change too (else the write would overwrite it).
pub fn recover_row(ctx: &Context, rt: &Runtime, row: &RowKey, key: &[u8]) {
    if rt.recovery.is_done() || rt.queue.holds(row) {
        return;
    }
    if let Ok(value) = call(ctx, "HGET", &[JOURNAL_KEY.as_bytes(), key]) {
        if let Some(value) = bytes(&value) {
            if let Requeued::Queued = requeue_entry(ctx, rt, key, &value) {
                rt.recovery.queued.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// What became of one journal entry.
enum Requeued {
    Queued,
    /// Its row is queued already (recovered earlier in this recovery), or it is an
    /// ack kept for the end of the recovery.
    AlreadyQueued,
    /// No mapped row, or a value that cannot be read: the entry is dropped.
    Unusable,
}

fn requeue_entry(ctx: &Context, rt: &Runtime, field: &[u8], value: &[u8]) -> Requeued {
    let (key, ack) = match field.windows(ACK_MARK.len()).position(|w| w == ACK_MARK) {
        Some(at) => (&field[..at], Some(&field[at + ACK_MARK.len()..])),
        None => (field, None),
    };
    let Some(resolved) = rt.mappings.resolve(key) else {
        return Requeued::Unusable;
    };
    let Ok(id) = check_id(resolved.id) else { return Requeued::Unusable };
    let row = RowKey { mapping: resolved.mapping, id: id.to_string() };
    if let Some(uuid) = ack {
        let mut acks = rt.recovery.acks.lock().unwrap_or_else(|p| p.into_inner());
        acks.push((row, String::from_utf8_lossy(uuid).into_owned()));
        return Requeued::AlreadyQueued;
    }
    if rt.queue.holds(&row) {
        return Requeued::AlreadyQueued;
    }
    let Some(write) = decode(value).or_else(|| legacy_entry(ctx, key, value)) else {
        warn(&format!("dropped an unreadable journal entry for {}", String::from_utf8_lossy(key)));
        return Requeued::Unusable;
    };
    rt.queue.push(row, write);
    Requeued::Queued
}

/// Queues the acks read back during the recovery, now that every change is: each
/// joins its row's change, or (when that already landed) is answered at once.
fn queue_recovered_acks(rt: &Runtime) {
    let acks = std::mem::take(&mut *rt.recovery.acks.lock().unwrap_or_else(|p| p.into_inner()));
    for (row, uuid) in acks {
        rt.queue.push(row, Write { op: RowOp::Upsert, fields: Default::default(), acks: vec![uuid] });
    }
}

/// An entry of the first journal format (`u|d|r` and acks, no values), left by an
/// older version of the module: the key itself then holds the state to write.
fn legacy_entry(ctx: &Context, key: &[u8], value: &[u8]) -> Option<Write> {
    let text = std::str::from_utf8(value).ok()?;
    let mut parts = text.split(' ');
    let op = match parts.next()? {
        "u" => RowOp::Upsert,
        "d" => RowOp::Delete,
        "r" => RowOp::Replace,
        _ => return None,
    };
    let acks = parts.map(str::to_string).collect();
    let fields = match op {
        RowOp::Delete => Default::default(),
        RowOp::Upsert | RowOp::Replace => hgetall(ctx, key)
            .unwrap_or_default()
            .into_iter()
            .filter(|(f, _)| f != crate::change::OP_FIELD)
            .map(|(f, v)| (f, FieldChange::Set(v)))
            .collect(),
    };
    Some(Write { op, fields, acks })
}

/// Whether `key` is a journal key: the hash [`JOURNAL_KEY`], or a per-slot
/// journal key `pgsync:journal:{<tag>}`.
pub fn is_journal_key(key: &[u8]) -> bool {
    key.starts_with(JOURNAL_KEY.as_bytes()) || key.starts_with(b"pgsync:journal:")
}
