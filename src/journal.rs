//! The durable side of the queue: a Redis hash that maps every dirty key to its
//! unsynced change (the fields set, removed or incremented, and ack uuids). It is
//! written in the same command as the change it records, so AOF, RDB and
//! replication carry both together; after a restart or a promotion it is read back
//! into the queue. One entry per dirty key bounds its size and makes coalescing
//! free; it holds the values, so a key evicted or expired before its change is
//! synced loses nothing.

use crate::change::{Change, FieldChange, RowOp, Write};
use crate::journal_codec::{decode, encode};
use crate::queue::RowKey;
use crate::redis_io::{bytes, call, call_logged, hgetall, notice, own_writes, warn};
use crate::row_id::check_id;
use crate::runtime::Runtime;
use redis_module::{Context, ContextFlags, RedisValue};
use std::sync::atomic::Ordering;

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

/// Queues again every change the journal holds; returns how many.
pub fn recover(ctx: &Context, rt: &Runtime) -> usize {
    let entries = match call(ctx, "HGETALL", &[JOURNAL_KEY.as_bytes()]) {
        Ok(RedisValue::Array(items)) => items.iter().filter_map(bytes).collect::<Vec<_>>(),
        Ok(_) => Vec::new(),
        Err(e) => {
            warn(&format!("cannot read the journal {JOURNAL_KEY}: {e}"));
            return 0;
        }
    };
    let mut count = 0;
    for pair in entries.chunks_exact(2) {
        if requeue_entry(ctx, rt, &pair[0], &pair[1]) {
            count += 1;
        } else {
            clear(ctx, &pair[0]);
        }
    }
    if count > 0 {
        notice(&format!("queued {count} unsynced change(s) from the journal"));
    }
    count
}

/// Queues the journal again, once after each start or promotion (cron does it,
/// or `SYNC.WAIT` first, which must count those changes); nothing on a replica or
/// while the dataset is loading.
pub fn recover_once(ctx: &Context, rt: &Runtime) {
    if rt.is_replica() || ctx.get_flags().contains(ContextFlags::LOADING) {
        return;
    }
    if !rt.recovered.swap(true, Ordering::Relaxed) {
        recover(ctx, rt);
    }
}

fn requeue_entry(ctx: &Context, rt: &Runtime, field: &[u8], value: &[u8]) -> bool {
    let (key, ack) = match field.windows(ACK_MARK.len()).position(|w| w == ACK_MARK) {
        Some(at) => (&field[..at], Some(&field[at + ACK_MARK.len()..])),
        None => (field, None),
    };
    let Some(resolved) = rt.mappings.resolve(key) else {
        return false;
    };
    let Ok(id) = check_id(resolved.id) else { return false };
    let decoded = match ack {
        // An ack waits on the row's change, whichever entry comes back first.
        Some(uuid) => Some(Write {
            op: RowOp::Upsert,
            fields: Default::default(),
            acks: vec![String::from_utf8_lossy(uuid).into()],
        }),
        None => decode(value).or_else(|| legacy_entry(ctx, key, value)),
    };
    let Some(write) = decoded else {
        warn(&format!("dropped an unreadable journal entry for {}", String::from_utf8_lossy(key)));
        return false;
    };
    rt.queue.push(RowKey { mapping: resolved.mapping, id: id.to_string() }, write);
    true
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
