//! The journal of the previous version, one hash `pgsync:{journal}` for every row:
//! after an upgrade its entries are moved, an `HSCAN` chunk at a time, into the
//! per-slot journal and the queue, and the old hash shrinks until it is gone.
//! Entries hold `P2` values or, older still, `u|d|r` and acks with no values (the
//! key itself then holds the state to write).

use super::recovery::{row_of, Recovery};
use crate::model::change::{FieldChange, RowOp, Write, OP_FIELD};
use crate::model::journal_codec::decode;
use crate::model::queue::RowKey;
use crate::pipeline::dirty_set::DirtySet;
use crate::redis::journal::keys::LEGACY_KEY;
use crate::redis::redis_io::{bytes, call, call_logged, hgetall, own_writes, warn};
use redis_module::{Context, RedisValue};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Marks a field that held an ack uuid waiting on a row.
const ACK_MARK: &[u8] = b"\0ack\0";

/// Entries asked of one `HSCAN`.
const CHUNK: &[u8] = b"1000";

/// The `HSCAN` cursor, and the acks read so far: they are queued once every
/// change is, so an ack never stands alone for a row whose change is still unread.
#[derive(Default)]
pub struct Progress {
    cursor: AtomicU64,
    acks: Mutex<Vec<(RowKey, Vec<u8>, String)>>,
}

/// Starts a pass over the old journal; false when there is none.
pub fn begin(ctx: &Context, recovery: &Recovery) -> bool {
    recovery.legacy.cursor.store(0, Ordering::Relaxed);
    matches!(call(ctx, "EXISTS", &[LEGACY_KEY]), Ok(RedisValue::Integer(1)))
}

/// Moves old entries until `over()` says the tick's time is spent; true when the
/// old journal has been read to its end.
pub fn step(ctx: &Context, set: &DirtySet, over: &dyn Fn() -> bool) -> bool {
    loop {
        let cursor = set.recovery().legacy.cursor.load(Ordering::Relaxed).to_string();
        let (next, items) = match call(ctx, "HSCAN", &[LEGACY_KEY, cursor.as_bytes(), b"COUNT", CHUNK]) {
            Ok(RedisValue::Array(reply)) => scan_reply(&reply),
            Ok(_) => None,
            Err(e) => {
                warn(&format!("cannot read the old journal: {e}"));
                None
            }
        }
        .unwrap_or((0, Vec::new()));
        for pair in items.chunks_exact(2) {
            move_entry(ctx, set, &pair[0], &pair[1]);
        }
        set.recovery().legacy.cursor.store(next, Ordering::Relaxed);
        if next == 0 {
            return true;
        }
        if over() {
            return false;
        }
    }
}

/// Moves the old entry of one key, if it has one, before a write to it.
pub fn recover_key(ctx: &Context, set: &DirtySet, key: &[u8]) {
    if let Ok(Some(value)) = call(ctx, "HGET", &[LEGACY_KEY, key]).map(|v| bytes(&v)) {
        move_entry(ctx, set, key, &value);
    }
}

/// Queues the acks read from the old journal, each journaled anew, now that
/// every change is queued.
pub fn finish(ctx: &Context, set: &DirtySet) {
    let acks = std::mem::take(&mut *set.recovery().legacy.acks.lock().unwrap_or_else(|p| p.into_inner()));
    for (row, key, uuid) in acks {
        let write = Write { op: RowOp::Upsert, fields: Default::default(), acks: vec![uuid] };
        set.mark(ctx, row, &key, write);
    }
}

fn scan_reply(reply: &[RedisValue]) -> Option<(u64, Vec<Vec<u8>>)> {
    let [cursor, RedisValue::Array(items)] = reply else { return None };
    let cursor = std::str::from_utf8(&bytes(cursor)?).ok()?.parse().ok()?;
    Some((cursor, items.iter().filter_map(bytes).collect()))
}

/// Deletes one old entry first (so that journaling it anew cannot find it again),
/// then queues and journals it in the new format.
fn move_entry(ctx: &Context, set: &DirtySet, field: &[u8], value: &[u8]) {
    own_writes(|| call_logged(ctx, "HDEL", &[LEGACY_KEY, field]));
    let (key, ack) = match field.windows(ACK_MARK.len()).position(|w| w == ACK_MARK) {
        Some(at) => (&field[..at], Some(&field[at + ACK_MARK.len()..])),
        None => (field, None),
    };
    let Some(row) = row_of(set, key) else { return };
    if let Some(uuid) = ack {
        let mut acks = set.recovery().legacy.acks.lock().unwrap_or_else(|p| p.into_inner());
        acks.push((row, key.to_vec(), String::from_utf8_lossy(uuid).into_owned()));
        return;
    }
    match decode(value).or_else(|| valueless_entry(ctx, key, value)) {
        Some(write) => {
            set.mark(ctx, row, key, write);
            set.recovery().count(1);
        }
        None => warn(&format!("dropped an unreadable journal entry for {}", key.escape_ascii())),
    }
}

/// An entry of the first format (`u|d|r` and acks, no values): the key itself
/// holds the state to write.
fn valueless_entry(ctx: &Context, key: &[u8], value: &[u8]) -> Option<Write> {
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
            .filter(|(f, _)| f != OP_FIELD)
            .map(|(f, v)| (f, FieldChange::Set(v)))
            .collect(),
    };
    Some(Write { op, fields, acks })
}
