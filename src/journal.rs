//! The durable side of the queue: a Redis hash that maps every dirty key to its
//! pending operation (and ack uuids). It is written in the same command as the
//! change it records (a post-notification job), so AOF, RDB and replication carry
//! both together; after a restart or a promotion it is read back into the queue.
//! Dirty keys rather than an event log: one entry per key bounds its size and makes
//! coalescing free, and the key itself holds the latest state to write.

use crate::change::{Fields, RowOp, Write};
use crate::mapping::{check_id, KeyRole};
use crate::queue::RowKey;
use crate::redis_io::{bytes, call, call_logged, hgetall, notice, own_writes, warn};
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

fn requeue_entry(ctx: &Context, rt: &Runtime, key: &[u8], value: &[u8]) -> bool {
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
    let state = match hgetall(ctx, key) {
        Ok(state) => state,
        Err(e) => {
            warn(&format!("journal entry {} dropped: {e}", String::from_utf8_lossy(key)));
            return false;
        }
    };
    // The key holds the latest state: write-behind syncs whatever it is now (gone
    // means deleted); write-through syncs what is still staged.
    let whole_row = resolved.role == KeyRole::Main;
    let op = match (resolved.role, op) {
        (KeyRole::Main, _) if state.is_empty() => RowOp::Delete,
        (KeyRole::Main, RowOp::Replace) => RowOp::Replace,
        (KeyRole::Main, _) => RowOp::Upsert,
        (KeyRole::Temp, RowOp::Delete) => RowOp::Delete,
        (KeyRole::Temp, _) if state.is_empty() => return false,
        (KeyRole::Temp, op) => op,
    };
    let fields: Fields = match op {
        RowOp::Delete => Fields::new(),
        _ => state.into_iter().map(|(f, v)| (f, Some(v))).collect(),
    };
    let row = RowKey {
        mapping: resolved.mapping,
        id: id.to_string(),
    };
    rt.queue.push(
        row,
        Write {
            op,
            fields,
            whole_row,
            acks,
        },
    );
    true
}
