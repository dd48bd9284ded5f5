//! `SYNC.FAILED`, `SYNC.RETRY` and `SYNC.DISCARD`: the operator's view of, and
//! actions on, the dead-letter list.

use super::runtime_or_err;
use crate::capture;
use crate::change::{RowOp, Write};
use crate::deadletter::{self, DeadLetter};
use crate::journal;
use crate::mapping::Mode;
use crate::queue::RowKey;
use crate::redis_io::{call, own_writes};
use crate::runtime::Runtime;
use redis_module::{Context, RedisError, RedisResult, RedisString, RedisValue};

const DEFAULT_COUNT: usize = 100;

/// `SYNC.FAILED [mapping] [COUNT n]`: the oldest rejected changes, each as a list
/// of name, value pairs (entry, mapping, id, op, error, time_ms, fields as JSON).
pub fn sync_failed(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    let rt = runtime_or_err()?;
    let args: Vec<String> = args.iter().skip(1).map(|a| a.to_string_lossy()).collect();
    let mut mapping = None;
    let mut count = DEFAULT_COUNT;
    let mut i = 0;
    while i < args.len() {
        if args[i].eq_ignore_ascii_case("COUNT") {
            let n = args.get(i + 1).ok_or(RedisError::Str("ERR COUNT needs a number"))?;
            count = n.parse().map_err(|_| RedisError::Str("ERR COUNT must be a non-negative integer"))?;
            i += 2;
        } else if mapping.is_none() && i == 0 {
            rt.mappings
                .by_name(&args[i])
                .ok_or_else(|| RedisError::String(format!("ERR unknown mapping \"{}\"", args[i])))?;
            mapping = Some(args[i].clone());
            i += 1;
        } else {
            return Err(RedisError::Str("ERR syntax: SYNC.FAILED [mapping] [COUNT n]"));
        }
    }
    let entries = deadletter::list(ctx).map_err(|e| RedisError::String(format!("ERR {e}")))?;
    Ok(RedisValue::Array(
        entries
            .into_iter()
            .filter(|(_, e)| mapping.as_ref().is_none_or(|m| &e.mapping == m))
            .take(count)
            .map(|(id, e)| entry_reply(id, e))
            .collect(),
    ))
}

fn entry_reply(id: String, e: DeadLetter) -> RedisValue {
    let text = |s: &str| RedisValue::BulkString(s.to_string());
    let fields = serde_json::to_string(&e.fields).unwrap_or_default();
    RedisValue::Array(vec![
        text("entry"),
        text(&id),
        text("mapping"),
        text(&e.mapping),
        text("id"),
        text(&e.id),
        text("op"),
        text(&e.op),
        text("error"),
        text(&e.error),
        text("time_ms"),
        RedisValue::Integer(e.time_ms as i64),
        text("fields"),
        text(&fields),
    ])
}

/// Entries selected by `<entry>|ALL`.
fn select(ctx: &Context, args: &[RedisString]) -> Result<Vec<(String, DeadLetter)>, RedisError> {
    if args.len() != 2 {
        return Err(RedisError::WrongArity);
    }
    let wanted = args[1].to_string_lossy();
    let entries = deadletter::list(ctx).map_err(|e| RedisError::String(format!("ERR {e}")))?;
    if wanted.eq_ignore_ascii_case("ALL") {
        return Ok(entries);
    }
    let found: Vec<_> = entries.into_iter().filter(|(id, _)| *id == wanted).collect();
    if found.is_empty() {
        return Err(RedisError::String(format!("ERR no failed entry \"{wanted}\"")));
    }
    Ok(found)
}

/// `SYNC.RETRY <entry>|ALL`: queues the entries again and removes them from the
/// list; replies with how many were queued. Write-through entries are staged again
/// as they were; write-behind entries sync the key's current state.
pub fn sync_retry(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    let rt = runtime_or_err()?;
    let mut queued = 0;
    for (entry, e) in select(ctx, &args)? {
        let Some((mapping, m)) = rt.mappings.by_name(&e.mapping) else {
            continue;
        };
        let result = match m.mode {
            Mode::WriteThrough if e.op == "delete" => Ok(requeue_delete(ctx, rt, mapping, &e)),
            Mode::WriteThrough => restage(ctx, m.temp_key(&e.id).as_bytes(), &e)
                .and_then(|_| capture::capture_key(ctx, rt, mapping, m.temp_key(&e.id).as_bytes())),
            Mode::WriteBehind | Mode::ReadOnly => capture::capture_key(ctx, rt, mapping, m.main_key(&e.id).as_bytes()),
        };
        if let Err(err) = result {
            return Err(RedisError::String(format!("ERR cannot retry {entry}: {err}")));
        }
        deadletter::remove(ctx, &entry);
        queued += 1;
    }
    Ok(RedisValue::Integer(queued))
}

fn restage(ctx: &Context, key: &[u8], e: &DeadLetter) -> Result<(), String> {
    let mut args: Vec<&[u8]> = vec![key];
    for (f, v) in &e.fields {
        if let Some(v) = v {
            args.push(f.as_bytes());
            args.push(v.as_bytes());
        }
    }
    if args.len() == 1 {
        return Err("the entry has no fields to write".into());
    }
    own_writes(|| call(ctx, "HSET", &args)).map(|_| ())
}

fn requeue_delete(ctx: &Context, rt: &Runtime, mapping: usize, e: &DeadLetter) -> Option<u64> {
    let m = &rt.mappings.all()[mapping];
    let write = Write { op: RowOp::Delete, whole_row: false, acks: Vec::new() };
    let pushed = rt.queue.push(RowKey { mapping, id: e.id.clone() }, write);
    journal::mark(ctx, m.temp_key(&e.id).as_bytes(), pushed.op, &pushed.acks);
    Some(pushed.version)
}

/// `SYNC.DISCARD <entry>|ALL`: drops entries; replies with how many.
pub fn sync_discard(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    let selected = select(ctx, &args)?;
    let removed = selected.iter().filter(|(entry, _)| deadletter::remove(ctx, entry)).count();
    Ok(RedisValue::Integer(removed as i64))
}
