//! `SYNC.FAILED`, `SYNC.RETRY` and `SYNC.DISCARD`: the operator's view of, and
//! actions on, the dead-letter list.

use super::runtime_or_err;
use crate::capture::{self, Target};
use crate::deadletter::{self, DeadLetter};
use crate::mapping::{KeyRole, Mode};
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
    let increments = serde_json::to_string(&e.increments).unwrap_or_default();
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
        text("increments"),
        text(&increments),
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

/// `SYNC.RETRY <entry>|ALL`: queues the entries' changes again, exactly as they
/// were rejected, and removes them from the list; replies with how many.
pub fn sync_retry(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    let rt = runtime_or_err()?;
    let mut queued = 0;
    for (entry, e) in select(ctx, &args)? {
        let Some((mapping, m)) = rt.mappings.by_name(&e.mapping) else {
            continue;
        };
        let (role, key) = match m.mode {
            Mode::WriteThrough => (KeyRole::Temp, m.temp_key(&e.id)),
            Mode::WriteBehind | Mode::ReadOnly => (KeyRole::Main, m.main_key(&e.id)),
        };
        let target = Target { mapping, role, id: e.id.clone() };
        capture::record(ctx, rt, &target, key.as_bytes(), e.to_write());
        deadletter::remove(ctx, &entry);
        queued += 1;
    }
    Ok(RedisValue::Integer(queued))
}

/// `SYNC.DISCARD <entry>|ALL`: drops entries; replies with how many.
pub fn sync_discard(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    let selected = select(ctx, &args)?;
    let removed = selected.iter().filter(|(entry, _)| deadletter::remove(ctx, entry)).count();
    Ok(RedisValue::Integer(removed as i64))
}
