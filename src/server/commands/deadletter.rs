//! `SYNC.FAILED`, `SYNC.RETRY` and `SYNC.DISCARD`: the operator's view of, and
//! actions on, the dead-letter list. Which entries a caller may see or touch is
//! decided from the entry ids alone (they name the row), so a listing reads only
//! the entries it returns.

use super::runtime_or_err;
use crate::model::mapping::{KeyRole, Mode};
use crate::pipeline::capture::{self, Target};
use crate::pipeline::runtime::Runtime;
use crate::redis::acl::{Access, Caller};
use crate::redis::cluster;
use crate::redis::deadletter::{self, DeadLetter};
use crate::redis::replies;
use crate::sources::kafka;
use redis_module::{Context, RedisError, RedisResult, RedisString, RedisValue};

const DEFAULT_COUNT: usize = 100;

/// `SYNC.FAILED [mapping] [COUNT n]`: the rows rejected longest ago, each as a
/// list of name, value pairs (entry, mapping, id, op, error, time_ms, fields,
/// increments as JSON, count, first_time_ms, first_error, and paths as JSON
/// when paths were set inside a JSON member).
pub fn sync_failed(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    let rt = runtime_or_err()?;
    let args: Vec<String> = args.iter().skip(1).map(|a| a.to_string_lossy()).collect();
    let mut mapping = None;
    let mut count = DEFAULT_COUNT;
    let mut i = 0;
    while i < args.len() {
        if args[i].eq_ignore_ascii_case("COUNT") {
            let n = args.get(i + 1).ok_or_else(replies::count_needs_number)?;
            count = n.parse().map_err(|_| replies::count_not_a_number())?;
            i += 2;
        } else if mapping.is_none() && i == 0 {
            rt.mappings.by_name(&args[i]).ok_or_else(|| replies::unknown_mapping(&args[i]))?;
            mapping = Some(args[i].clone());
            i += 1;
        } else {
            return Err(replies::failed_syntax());
        }
    }
    let caller = Caller::of(ctx)?;
    caller.check(ctx, &deadletter::keys(ctx).hash, Access::Read)?;
    let ids = deadletter::ids(ctx, count, &mut |entry| {
        let Some((m, id)) = deadletter::parse_entry_id(entry) else { return false };
        // An entry shows the row's fields: only readers of the row see it.
        mapping.as_ref().is_none_or(|wanted| wanted == m) && denied_key(ctx, &caller, rt, m, id, Use::Read).is_none()
    })
    .map_err(replies::error)?;
    let entries = deadletter::entries(ctx, ids).map_err(replies::error)?;
    Ok(RedisValue::Array(entries.into_iter().map(|(id, e)| entry_reply(id, e)).collect()))
}

fn entry_reply(id: String, e: DeadLetter) -> RedisValue {
    let text = |s: &str| RedisValue::BulkString(s.to_string());
    let fields = serde_json::to_string(&e.fields).unwrap_or_default();
    let increments = serde_json::to_string(&e.increments).unwrap_or_default();
    let first = if e.first_time_ms == 0 { e.time_ms } else { e.first_time_ms };
    let origin = e.kafka.map(|k| {
        vec![
            text("topic"),
            text(&k.topic),
            text("partition"),
            RedisValue::Integer(k.partition.into()),
            text("offset"),
            RedisValue::Integer(k.offset),
            text("record_key"),
            k.key.as_deref().map_or(RedisValue::Null, text),
            text("payload"),
            k.payload.as_deref().map_or(RedisValue::Null, text),
        ]
    });
    let mut reply = vec![
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
        text("count"),
        RedisValue::Integer(i64::try_from(e.count).unwrap_or(i64::MAX)),
        text("first_time_ms"),
        RedisValue::Integer(first as i64),
        text("first_error"),
        text(if e.first_error.is_empty() { &e.error } else { &e.first_error }),
    ];
    if !e.paths.is_empty() {
        // Only entries with path sets have them, so other replies keep their shape.
        reply.extend([text("paths"), text(&serde_json::to_string(&e.paths).unwrap_or_default())]);
    }
    reply.extend(origin.into_iter().flatten());
    RedisValue::Array(reply)
}

/// What a command does with an entry, which decides the keys the caller needs.
#[derive(Clone, Copy, PartialEq)]
enum Use {
    /// SYNC.FAILED shows it: read the row.
    Read,
    /// SYNC.DISCARD drops it: the row's pending change is given up, so write the row.
    Discard,
    /// SYNC.RETRY queues it again: write the row and the staging key it restages.
    Retry,
}

/// The first key (or key pattern) `caller` may not touch for `use_` of the entry
/// of row `id` of mapping `mapping`, or `None` when it may. An entry of a mapping
/// no longer loaded belongs to no known key: it is for users who may touch every key.
fn denied_key(
    ctx: &Context,
    caller: &Caller,
    rt: &Runtime,
    mapping: &str,
    id: &str,
    use_: Use,
) -> Option<(Vec<u8>, Access)> {
    let access = if use_ == Use::Read { Access::Read } else { Access::Write };
    let Some((_, m)) = rt.mappings.by_name(mapping) else {
        return (!caller.may_prefix(ctx, b"", access)).then(|| (b"*".to_vec(), access));
    };
    let mut keys = vec![m.main_key(id)];
    if use_ == Use::Retry && m.mode == Mode::WriteThrough {
        keys.push(m.temp_key(id));
    }
    keys.into_iter().map(String::into_bytes).find(|key| !caller.may(ctx, key, access)).map(|key| (key, access))
}

/// Entry ids selected by `<entry>|ALL` that the caller may use as `use_`: ALL
/// passes over the others (walking the list a step at a time); a named entry the
/// caller may not touch is refused.
fn select(ctx: &Context, rt: &Runtime, args: &[RedisString], use_: Use) -> Result<Vec<String>, RedisError> {
    if args.len() != 2 {
        return Err(RedisError::WrongArity);
    }
    let caller = Caller::of(ctx)?;
    // Both commands read the list and remove entries from it.
    let list = deadletter::keys(ctx).hash;
    caller.check(ctx, &list, Access::Read)?;
    caller.check(ctx, &list, Access::Write)?;
    let wanted = args[1].to_string_lossy();
    if wanted.eq_ignore_ascii_case("ALL") {
        return deadletter::ids(ctx, usize::MAX, &mut |entry| {
            deadletter::parse_entry_id(entry).is_some_and(|(m, id)| denied_key(ctx, &caller, rt, m, id, use_).is_none())
        })
        .map_err(replies::error);
    }
    let known = deadletter::exists(ctx, &wanted).map_err(replies::error)?;
    let Some((mapping, id)) = deadletter::parse_entry_id(&wanted).filter(|_| known) else {
        return Err(replies::no_failed_entry(&wanted));
    };
    if let Some((key, access)) = denied_key(ctx, &caller, rt, mapping, id, use_) {
        return Err(caller.refuse(ctx, &key, access));
    }
    Ok(vec![wanted])
}

/// `SYNC.RETRY <entry>|ALL`: queues the entries' changes again (the fields no
/// later landed write superseded: see `deadletter::landed`) and removes them
/// from the list; a Kafka record is applied again. A write-behind row with a
/// queued change carries its entry in it already; a write-through row with a
/// newer change on its way waits for it (named: an error). Replies with how
/// many were queued or applied.
pub fn sync_retry(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    let rt = runtime_or_err()?;
    let mut queued = 0;
    let named = args.len() == 2 && !args[1].to_string_lossy().eq_ignore_ascii_case("ALL");
    for entry in select(ctx, rt, &args, Use::Retry)? {
        let Some(e) = deadletter::get(ctx, &entry).map_err(replies::error)? else {
            continue;
        };
        let Some((mapping, m)) = rt.mappings.by_name(&e.mapping) else {
            continue;
        };
        if let Some(origin) = e.kafka {
            // A Kafka record is applied again as it came; if it still cannot be,
            // its entry stays, its failure counted.
            if kafka::apply::retry(ctx, rt, mapping, origin) {
                deadletter::remove(ctx, &entry);
                queued += 1;
            }
            continue;
        }
        let (role, key) = match m.mode {
            Mode::WriteThrough => (KeyRole::Temp, m.temp_key(&e.id)),
            Mode::WriteBehind | Mode::ReadOnly | Mode::Document => (KeyRole::Main, m.main_key(&e.id)),
        };
        // In a cluster the row's journal log must go to its own slot: a row that
        // moved to another node is retried there (after SYNC.DISCARD here).
        if !cluster::owns_key(ctx, key.as_bytes()) {
            if named {
                return Err(replies::slot_not_served(&key));
            }
            continue;
        }
        let target = Target { mapping, role, id: e.id.as_str().into() };
        let row = target.row();
        if m.mode == Mode::WriteBehind {
            // Gone first, or the capture would carry it a second time; a row
            // with a queued change carries it already.
            deadletter::remove(ctx, &entry);
            if !rt.dirty.holds(ctx, &row, key.as_bytes()) {
                capture::record(ctx, rt, &target, key.as_bytes(), e.to_write());
            }
        } else if rt.queue().holds(&row) {
            // A newer staged change of the row is on its way: retried now, the
            // entry's fields would be written over it. Its landing prunes them.
            if named {
                return Err(replies::newer_change_pending(&e.id, &e.mapping));
            }
            continue;
        } else {
            capture::record(ctx, rt, &target, key.as_bytes(), e.to_write());
            deadletter::remove(ctx, &entry);
        }
        queued += 1;
    }
    Ok(RedisValue::Integer(queued))
}

/// `SYNC.DISCARD <entry>|ALL`: drops entries; replies with how many.
pub fn sync_discard(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    let rt = runtime_or_err()?;
    let selected = select(ctx, rt, &args, Use::Discard)?;
    let removed = selected.iter().filter(|entry| deadletter::remove(ctx, entry)).count();
    Ok(RedisValue::Integer(removed as i64))
}
