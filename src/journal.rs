//! The durable side of the queue: a Redis hash that maps every dirty key to its
//! pending operation (and ack uuids). It is written in the same command as the
//! change it records (a post-notification job), so AOF, RDB and replication carry
//! both together; after a restart or a promotion it is read back into the queue.
//! Dirty keys rather than an event log: one entry per key bounds its size and makes
//! coalescing free, and the key itself holds the latest state to write.

use crate::change::{RowOp, Write};
use crate::mapping::{check_id, KeyRole};
use crate::queue::RowKey;
use crate::redis_io::{bytes, call, call_logged, notice, own_writes, warn};
use crate::runtime::Runtime;
use redis_module::{Context, RedisValue};

/// The journal hash. The hashtag lets a future cluster mode pin it to a slot.
pub const JOURNAL_KEY: &str = "pgsync:{journal}";

fn op_code(op: RowOp) -> &'static str {
    match op {
        RowOp::Upsert => "u",
        RowOp::Delete => "d",
        RowOp::Replace => "r",
    }
}

/// Records that `key` has an unsynced change (`op`, waiting acks).
pub fn mark(ctx: &Context, key: &[u8], op: RowOp, acks: &[String]) {
    let mut value = op_code(op).to_string();
    for uuid in acks {
        value.push(' ');
        value.push_str(uuid);
    }
    own_writes(|| call_logged(ctx, "HSET", &[JOURNAL_KEY.as_bytes(), key, value.as_bytes()]));
}

/// Forgets `key` once its change is settled and nothing newer is queued.
pub fn clear(ctx: &Context, key: &[u8]) {
    own_writes(|| call_logged(ctx, "HDEL", &[JOURNAL_KEY.as_bytes(), key]));
}

/// Forgets many settled keys in one command.
pub fn clear_all(ctx: &Context, keys: &[String]) {
    if keys.is_empty() {
        return;
    }
    let mut args: Vec<&[u8]> = vec![JOURNAL_KEY.as_bytes()];
    args.extend(keys.iter().map(|k| k.as_bytes()));
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
        if requeue_entry(rt, &pair[0], &pair[1]) {
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

fn requeue_entry(rt: &Runtime, key: &[u8], value: &[u8]) -> bool {
    let Some(resolved) = rt.mappings.resolve(key) else {
        return false;
    };
    let Ok(id) = check_id(resolved.id) else { return false };
    let text = String::from_utf8_lossy(value);
    let mut parts = text.split(' ');
    let op = match parts.next() {
        Some("u") => RowOp::Upsert,
        Some("d") => RowOp::Delete,
        Some("r") => RowOp::Replace,
        _ => return false,
    };
    let acks: Vec<String> = parts.map(str::to_string).collect();
    // The key itself holds the state to write; the worker reads it with the batch.
    let whole_row = resolved.role == KeyRole::Main;
    let row = RowKey { mapping: resolved.mapping, id: id.to_string() };
    rt.queue.push(row, Write { op, whole_row, acks });
    true
}
