//! The command filter that routes clients' writes to synced keys through
//! `SYNC.WRITE` / `SYNC.REMOVE` / `SYNC.DELETE` (RedisJSON writes to JSON keys through
//! `SYNC.JSONWRITE`), so that capture learns what each write meant from
//! its arguments (a keyspace event names only the key), and reads of missing
//! `read_through` keys through `SYNC.READ`, which loads them. It runs before every
//! command, also inside MULTI (when a command is queued) and in scripts, so it only
//! compares the command name and, for the few write commands, one key prefix.
//! The module's own calls are not filtered (`NOSELF`, and its own-write flag).
//! In a cluster it also routes `MIGRATE` through `SYNC.MIGRATE` and `CLUSTER
//! GETKEYSINSLOT` through `SYNC.KEYSINSLOT`, and tells `cluster.rs` which
//! command runs next (see `server/migration.rs`, `server/slot_keys.rs`).

use crate::model::intent::Command;
use crate::model::json_intent::JsonCommand;
use crate::model::mapping::{KeyRole, Mode, ValueType};
use crate::model::read_command::ReadCommand;
use crate::model::stats::MappingStats;
use crate::pipeline::capture::captured;
use crate::pipeline::runtime;
use crate::redis::cluster;
use crate::redis::redis_io::{is_own_write, HookError};
use crate::server::read_through::probe;
use redis_module::raw;
use std::os::raw::c_int;

const WRITE: &[u8] = b"SYNC.WRITE";
const REMOVE: &[u8] = b"SYNC.REMOVE";
const DELETE: &[u8] = b"SYNC.DELETE";
const READ: &[u8] = b"SYNC.READ";
const JSON_WRITE: &[u8] = b"SYNC.JSONWRITE";

/// Registers the filter; called once at load with the load context.
pub fn register(ctx: &redis_module::Context) -> Result<(), HookError> {
    let ctx = ctx.ctx;
    // SAFETY: the API table is filled at load; `ctx` is the load context.
    let registered = unsafe {
        raw::RedisModule_RegisterCommandFilter
            .map(|register| register(ctx, Some(route_writes), raw::REDISMODULE_CMDFILTER_NOSELF as c_int))
    };
    match registered {
        Some(filter) if !filter.is_null() => Ok(()),
        _ => Err(HookError::CommandFilter),
    }
}

/// Argument `pos` as Redis holds it, valid for the filter call.
fn arg_string(fctx: *mut raw::RedisModuleCommandFilterCtx, pos: c_int) -> Option<*mut raw::RedisModuleString> {
    // SAFETY: `fctx` is the live filter context.
    let s = unsafe { raw::RedisModule_CommandFilterArgGet?(fctx, pos) };
    (!s.is_null()).then_some(s)
}

/// The bytes of argument `pos`, borrowed from Redis for the filter call.
fn arg<'a>(fctx: *mut raw::RedisModuleCommandFilterCtx, pos: c_int) -> Option<&'a [u8]> {
    let s = arg_string(fctx, pos)?;
    // SAFETY: the string stays valid for the duration of this filter call, which
    // outlives every use below.
    unsafe {
        let mut len = 0usize;
        let p = raw::RedisModule_StringPtrLen?(s, &mut len);
        (!p.is_null()).then(|| std::slice::from_raw_parts(p.cast::<u8>(), len))
    }
}

/// Which wrapper, if any, a command with these arguments goes through.
fn wrapper(fctx: *mut raw::RedisModuleCommandFilterCtx) -> Option<&'static [u8]> {
    // SAFETY: as in `arg`.
    let count = unsafe { raw::RedisModule_CommandFilterArgsCount.map_or(0, |f| f(fctx)) };
    let name = arg(fctx, 0)?;
    if let Some(wrapper) = cluster::on_command(name, || arg(fctx, 1)) {
        return Some(wrapper);
    }
    if count < 2 {
        return None;
    }
    match Command::from_name(name) {
        Some(command) => write_wrapper(fctx, count, command),
        None => match JsonCommand::from_name(name) {
            Some(command) => json_wrapper(fctx, count, command),
            None => read_wrapper(fctx, count, name),
        },
    }
}

/// `SYNC.JSONWRITE` for a RedisJSON write to a captured `"type": "json"` key.
fn json_wrapper(
    fctx: *mut raw::RedisModuleCommandFilterCtx,
    count: c_int,
    command: JsonCommand,
) -> Option<&'static [u8]> {
    if is_own_write() {
        return None;
    }
    let rt = runtime::get()?;
    if rt.is_replica() {
        return None;
    }
    let synced = |pos: usize| {
        let resolved =
            c_int::try_from(pos).ok().and_then(|pos| arg(fctx, pos)).and_then(|key| rt.mappings.resolve(key));
        resolved.is_some_and(|r| {
            let m = rt.mapping(r.mapping).def;
            m.value_type == ValueType::Json && captured(m, r.role)
        })
    };
    command.key_positions(usize::try_from(count).unwrap_or(0)).into_iter().any(synced).then_some(JSON_WRITE)
}

/// `SYNC.READ` for a read of a `read_through` key that Redis does not hold; a
/// read of keys Redis holds runs as it is (counted as a hit), so hits cost only
/// this check.
fn read_wrapper(fctx: *mut raw::RedisModuleCommandFilterCtx, count: c_int, name: &[u8]) -> Option<&'static [u8]> {
    let rt = runtime::get()?;
    if !rt.mappings.any_read_through() || is_own_write() {
        return None;
    }
    let read = ReadCommand::from_name(name)?;
    for pos in read.key_positions(usize::try_from(count).unwrap_or(0)) {
        let pos = c_int::try_from(pos).ok()?;
        let key = arg(fctx, pos)?;
        let Some(resolved) = rt.mappings.resolve(key) else { continue };
        if resolved.role != KeyRole::Main || !rt.mapping(resolved.mapping).def.read_through {
            continue;
        }
        if probe::is_missing(arg_string(fctx, pos)?) {
            return Some(READ);
        }
        MappingStats::bump(&rt.mapping(resolved.mapping).stats.read_hits, 1);
    }
    None
}

/// The wrapper of a write command, if it writes a synced key.
fn write_wrapper(fctx: *mut raw::RedisModuleCommandFilterCtx, count: c_int, command: Command) -> Option<&'static [u8]> {
    // The module's own writes from background threads (apply, reload): `NOSELF`
    // does not cover calls made through a thread-safe context.
    if is_own_write() {
        return None;
    }
    let rt = runtime::get()?;
    if rt.is_replica() {
        return None;
    }
    if command.deletes_keys() {
        let row_key = |key: &[u8]| {
            rt.mappings
                .resolve(key)
                .is_some_and(|r| r.role == KeyRole::Main && rt.mapping(r.mapping).def.mode == Mode::WriteBehind)
        };
        return (1..count).any(|i| arg(fctx, i).is_some_and(row_key)).then_some(DELETE);
    }
    let key = arg(fctx, 1)?;
    let resolved = rt.mappings.resolve(key)?;
    // Removals have their own wrapper: Redis refuses `deny-oom` commands under
    // maxmemory, and HDEL is not one.
    let wrapper = if command.deny_oom() { WRITE } else { REMOVE };
    captured(rt.mapping(resolved.mapping).def, resolved.role).then_some(wrapper)
}

extern "C" fn route_writes(fctx: *mut raw::RedisModuleCommandFilterCtx) {
    // A panic must not unwind into redis-server; the command then runs unrouted.
    let routed = crate::model::guard::catch(|| wrapper(fctx));
    let Ok(Some(name)) = routed else { return };
    // SAFETY: the new string is created without a context and handed to Redis,
    // which owns it from then on, as ArgInsert requires.
    unsafe {
        let (Some(create), Some(insert)) = (raw::RedisModule_CreateString, raw::RedisModule_CommandFilterArgInsert)
        else {
            return;
        };
        let s = create(std::ptr::null_mut(), name.as_ptr().cast(), name.len());
        insert(fctx, 0, s);
    }
}
