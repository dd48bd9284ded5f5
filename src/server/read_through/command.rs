//! `SYNC.READ <command> <key> [args ...]`: a read of a `read_through` mapping's
//! key that the command filter found missing. When the key exists by now, or
//! its row is known absent, the command runs as it is. Otherwise the client
//! blocks (only it: the main thread goes on) until the loader has read the row,
//! and is then answered as if the row had been there. A client that cannot block
//! (MULTI, a script) gets the miss, and the row is loaded for the next read.

use crate::model::mapping::KeyRole;
use crate::model::queue::RowKey;
use crate::model::read_command::ReadCommand;
use crate::model::stats::MappingStats;
use crate::pipeline::capture::checked_id;
use crate::pipeline::runtime::Runtime;
use crate::redis::acl::Caller;
use crate::redis::config;
use crate::redis::read_through::answer::run_on_redis;
use crate::redis::read_through::loads;
use crate::redis::redis_io::{key_exists, selected_db};
use crate::redis::replies;
use crate::server::commands::runtime_or_err;
use compact_str::CompactString;
use redis_module::{Context, ContextFlags, RedisResult, RedisString, RedisValue};

/// Handles `SYNC.READ` (and, with the `getkeys-api` flag, Redis's question of
/// which arguments are keys, for ACLs and cluster routing).
pub fn sync_read(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    let read = args.get(1).and_then(|name| ReadCommand::from_name(name.as_slice()));
    if ctx.is_keys_position_request() {
        if let Some(read) = read {
            for pos in read.key_positions(args.len() - 1) {
                ctx.key_at_pos(pos as i32 + 1);
            }
        }
        return Ok(RedisValue::NoReply);
    }
    let Some(read) = read else {
        return Err(replies::read_runs());
    };
    let wrapped = &args[1..];
    let rt = runtime_or_err()?;
    // The wrapper's rights are not the command's: check the command itself.
    Caller::of(ctx)?.check_command(ctx, wrapped)?;
    // Only database 0 is synced.
    if !read.arity_ok(wrapped.len()) || selected_db(ctx) != 0 {
        return run_on_redis(ctx, wrapped);
    }
    let missing = missing_rows(ctx, rt, read, wrapped);
    if missing.is_empty() {
        return run_on_redis(ctx, wrapped);
    }
    let (absent, to_load): (Vec<RowKey>, Vec<RowKey>) = missing.into_iter().partition(loads::is_absent);
    for row in &absent {
        MappingStats::bump(&rt.mapping(row.mapping).stats.read_negative_hits, 1);
    }
    if to_load.is_empty() {
        return run_on_redis(ctx, wrapped);
    }
    if ctx.get_flags().intersects(ContextFlags::MULTI | ContextFlags::LUA | ContextFlags::DENY_BLOCKING) {
        if !rt.is_replica() {
            loads::warm(&to_load);
        }
        return run_on_redis(ctx, wrapped);
    }
    loads::wait_for(ctx, &rt.mappings, to_load, config::millis(&config::READ_THROUGH_TIMEOUT_MS))?;
    Ok(RedisValue::NoReply)
}

/// The rows of the command's keys that read through and that Redis does not
/// hold, each once; counted as misses. A key that can be no row's key (an id
/// that is not valid text) is not loaded: the command answers it from Redis.
fn missing_rows(ctx: &Context, rt: &Runtime, read: ReadCommand, wrapped: &[RedisString]) -> Vec<RowKey> {
    let mut rows: Vec<RowKey> = Vec::new();
    for key in read.key_positions(wrapped.len()).filter_map(|pos| wrapped.get(pos)) {
        let Some(resolved) = rt.mappings.resolve(key.as_slice()) else { continue };
        let m = rt.mapping(resolved.mapping).def;
        if !m.read_through || resolved.role != KeyRole::Main || key_exists(ctx, key) {
            continue;
        }
        // A key no write could make (`users:007`) names no row: Redis answers it.
        let Ok(id) = checked_id(rt, resolved.mapping, resolved.id) else { continue };
        MappingStats::bump(&rt.mapping(resolved.mapping).stats.read_misses, 1);
        let row = RowKey { mapping: resolved.mapping, id: CompactString::new(id) };
        if !rows.contains(&row) {
            rows.push(row);
        }
    }
    rows
}
