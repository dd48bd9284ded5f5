//! The `SYNC.*` commands. Handlers are thin: check arguments, call into the queue
//! or capture, turn the result into a reply. Blocking commands block only their own
//! client: `SYNC.HSET`, `SYNC.JSONSET` and `SYNC.WAIT` wait in [`waiters`] (no thread each), and
//! `SYNC.RELOAD`'s own thread replies when it ends.

pub mod cdc;
pub mod deadletter;
pub mod docs;
pub mod journal;
pub mod json_write;
pub mod write;

use crate::model::change::{RowOp, Write};
use crate::model::guard;
use crate::model::intent::Command;
use crate::model::mapping::{Mapping, Mode, ValueType};
use crate::model::row_id::check_id;
use crate::pipeline::capture::{self, Target};
use crate::pipeline::runtime::{self, Runtime};
use crate::pipeline::threads;
use crate::redis::acl::{Access, Caller};
use crate::redis::blocked::Reply;
use crate::redis::client_call::{client_argv, run_as_client, ClientReply};
use crate::redis::config;
use crate::redis::notify::Source;
use crate::redis::replies;
use crate::redis::waiters;
use crate::server::status;
use crate::sources::reload::{self, ReloadGuard};
use redis_module::{
    BlockedClient, Context, ContextFlags, NextArg, RedisError, RedisResult, RedisString, RedisValue, ThreadSafeContext,
};
use std::time::Duration;

/// Runs a command handler, turning a panic (a bug) into an error reply: a panic
/// must never unwind into redis-server.
pub fn guarded(
    ctx: &Context,
    args: Vec<RedisString>,
    handler: fn(&Context, Vec<RedisString>) -> RedisResult,
) -> RedisResult {
    guard::catch(|| handler(ctx, args)).unwrap_or_else(|panic| Err(replies::internal(&panic.0)))
}

pub(crate) fn runtime_or_err() -> Result<&'static Runtime, RedisError> {
    runtime::get().map(|rt| &**rt).ok_or_else(replies::not_running)
}

fn refuse_when_cannot_block(ctx: &Context, command: &str) -> Result<(), RedisError> {
    let flags = ctx.get_flags();
    if flags.intersects(ContextFlags::MULTI | ContextFlags::LUA | ContextFlags::DENY_BLOCKING) {
        return Err(replies::cannot_block_in(command));
    }
    Ok(())
}

/// Runs a reload in its own thread, which replies when it ends; only this client
/// blocks. One reload runs at a time (`running`), so this is at most one thread.
fn reload_in_background(
    ctx: &Context,
    rt: &'static Runtime,
    running: ReloadGuard<'static>,
    mappings: Vec<usize>,
    flush: bool,
) -> RedisResult {
    let blocked: BlockedClient = ctx.block_client();
    let spawned = threads::spawn("pgsync-reload", move || {
        let reply = guard::catch(|| {
            let _running = running;
            match reload::run(rt, &mappings, flush, Source::Reload) {
                Ok(rows) => Ok(RedisValue::Integer(rows as i64)),
                Err(e) => Err(replies::reload_failed(e)),
            }
        })
        .unwrap_or_else(|_| Err(replies::reload_bug()));
        ThreadSafeContext::with_blocked_client(blocked).reply(reply);
    });
    match spawned {
        Ok(()) => Ok(RedisValue::NoReply),
        Err(e) => Err(replies::error(e)),
    }
}

/// `SYNC.MIGRATE MIGRATE ...`: the command filter routes `MIGRATE` here in a
/// cluster, so a row's keys and unsynced change leave together (`migration.rs`).
pub fn sync_migrate(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    let argv: Vec<Vec<u8>> = args.iter().skip(2).map(|a| a.as_slice().to_vec()).collect();
    if args.len() < 2 {
        return Err(RedisError::WrongArity);
    }
    crate::server::migration::migrate(ctx, &argv)
}

/// `SYNC.KEYSINSLOT CLUSTER GETKEYSINSLOT slot count`: the command filter routes
/// `CLUSTER GETKEYSINSLOT` here in a cluster, so a reshard also moves the
/// pending changes of rows without a key (`slot_keys.rs`).
pub fn sync_keysinslot(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    if args.len() < 2 {
        return Err(RedisError::WrongArity);
    }
    let argv: Vec<Vec<u8>> = args.iter().skip(1).map(|a| a.as_slice().to_vec()).collect();
    crate::server::slot_keys::keys_in_slot(ctx, &argv)
}

/// `SYNC.HSET key field value [field value ...]`: write-through that replies only
/// after the row is committed in Postgres, or with Postgres's error.
pub fn sync_hset(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    if args.len() < 4 || !args.len().is_multiple_of(2) {
        return Err(RedisError::WrongArity);
    }
    let rt = runtime_or_err()?;
    if args[2..].chunks(2).any(|p| p[0].as_slice() == crate::model::change::OP_FIELD) {
        return Err(replies::hset_takes_no_op_field());
    }
    let (target, staged) = committed_write(ctx, rt, args[1].as_slice(), "SYNC.HSET", |m| match m.mode {
        Mode::WriteThrough if m.value_type == ValueType::Hash => Ok(()),
        Mode::WriteThrough => Err(replies::json_rows_need_jsonset(&m.name)),
        _ => Err(replies::not_write_through(&m.name, m.mode.as_str())),
    })?;
    let reply = run_as_client(ctx, Command::Hset, &client_argv(ctx, b"HSET", &[staged.as_bytes()], &args[2..]))?;
    let pairs = args[2..].chunks_exact(2).map(|p| (p[0].as_slice().to_vec(), p[1].as_slice().to_vec())).collect();
    let write = Write { op: RowOp::Upsert, fields: capture::set_fields(pairs), acks: Vec::new() };
    let version = capture::record(ctx, rt, &target, staged.as_bytes(), write);
    reply_when_committed(ctx, rt, &target, version, Reply::Integer(reply.integer().unwrap_or(0)), &reply)
}

/// The checks of a write that replies once committed (`SYNC.HSET`,
/// `SYNC.JSONSET`) on `key` (the row's key or its staging key): the client can
/// block, the mapping is one `accepts`, this server is a primary, the key is a
/// row's, and the caller may write both the key written (the staging key in
/// write-through, the row key in write-behind) and the row key, which the
/// commit writes. Returns the row and the key to write.
pub(crate) fn committed_write(
    ctx: &Context,
    rt: &Runtime,
    key: &[u8],
    command: &str,
    accepts: impl FnOnce(&Mapping) -> Result<(), RedisError>,
) -> Result<(Target, String), RedisError> {
    refuse_when_cannot_block(ctx, command)?;
    let resolved = rt.mappings.resolve(key).ok_or_else(|| replies::no_mapping_for_key(key))?;
    let m = rt.mapping(resolved.mapping).def;
    accepts(m)?;
    if rt.is_replica() {
        return Err(RedisError::Str("READONLY this server is a replica"));
    }
    let id = check_id(resolved.id).map_err(replies::error)?;
    let written = match m.mode {
        Mode::WriteThrough => m.temp_key(id),
        Mode::WriteBehind | Mode::ReadOnly | Mode::Document => m.main_key(id),
    };
    // Redis checked the key as given; the command writes both the staging key
    // and, once committed, the row.
    let caller = Caller::of(ctx)?;
    caller.check(ctx, written.as_bytes(), Access::Write)?;
    caller.check(ctx, m.main_key(id).as_bytes(), Access::Write)?;
    match capture::target(rt, written.as_bytes()) {
        Some(Ok(target)) => Ok((target, written)),
        Some(Err(refusal)) => {
            let message = refusal.to_string();
            capture::refuse(rt, refusal.mapping, &message);
            Err(replies::refused(&message))
        }
        None => Err(replies::not_synced()),
    }
}

/// Blocks the client until the change `version` of `target`'s row is committed,
/// then it gets `committed` (or Postgres's error, or the timeout's); a write
/// that sent nothing to Postgres (`None`) is answered `now` at once.
pub(crate) fn reply_when_committed(
    ctx: &Context,
    rt: &Runtime,
    target: &Target,
    version: Option<u64>,
    committed: Reply,
    now: &ClientReply,
) -> RedisResult {
    let Some(version) = version else { return now.forward(ctx) };
    // Still under the Redis lock: apply cannot settle the row before the
    // client is registered.
    waiters::wait_for_row(ctx, target.row(), version, committed, config::hset_timeout())?;
    rt.queue().hurry();
    Ok(RedisValue::NoReply)
}

/// `SYNC.WAIT [timeout-ms]`: blocks until every change captured before the call has
/// reached Postgres (or was rejected); replies with how many rows are still pending
/// (0 when all landed). A timeout of 0 or none waits as long as it takes.
pub fn sync_wait(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    if args.len() > 2 {
        return Err(RedisError::WrongArity);
    }
    let mut rest = args.into_iter().skip(1);
    let timeout_ms = match rest.next() {
        Some(arg) => arg.parse_integer().ok().filter(|ms| *ms >= 0).ok_or_else(replies::bad_timeout)?,
        None => 0,
    };
    let rt = runtime_or_err()?;
    // After a start or a promotion the journal's changes are queued by the next
    // cron; they were captured before this call, so queue them now to count them.
    if !rt.is_replica() {
        rt.dirty.recover(ctx, true);
    }
    let version = rt.queue().last_version();
    // O(1): the oldest unsettled change, not a count of them all.
    if rt.queue().oldest_unsettled().is_none_or(|oldest| oldest > version) {
        return Ok(RedisValue::Integer(0));
    }
    refuse_when_cannot_block(ctx, "SYNC.WAIT")?;
    let timeout = (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms as u64));
    // Under the Redis lock, like apply: nothing settles between the check above
    // and the registration.
    waiters::wait_for_all(ctx, rt.queue(), version, timeout)?;
    Ok(RedisValue::NoReply)
}

/// `SYNC.STATUS [mapping]`: the figures of every mapping, or of one.
pub fn sync_status(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    if args.len() > 2 {
        return Err(RedisError::WrongArity);
    }
    let rt = runtime_or_err()?;
    crate::redis::cluster::refresh(ctx);
    let mut rest = args.into_iter().skip(1);
    match rest.next_string().ok() {
        Some(name) => {
            let (i, _) = rt.mappings.by_name(&name).ok_or_else(|| replies::unknown_mapping(&name))?;
            Ok(status::mapping_reply(rt, i))
        }
        None => Ok(RedisValue::Array(
            rt.each_mapping()
                .map(|m| m.index)
                .flat_map(|i| [RedisValue::BulkString(rt.mapping(i).def.name.clone()), status::mapping_reply(rt, i)])
                .collect(),
        )),
    }
}

/// `SYNC.RELOAD [mapping ...] [FLUSH]`: loads the tables from Postgres into their
/// hashes and replies with the number of rows; FLUSH also deletes the mappings' keys
/// that have no row. Blocks only its own client; Redis keeps serving.
pub fn sync_reload(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    let rt = runtime_or_err()?;
    let mut flush = false;
    let mut mappings = Vec::new();
    for arg in args.iter().skip(1) {
        let arg = arg.to_string_lossy();
        if arg.eq_ignore_ascii_case("FLUSH") {
            flush = true;
            continue;
        }
        let (i, _) = rt.mappings.by_name(&arg).ok_or_else(|| replies::unknown_mapping(&arg))?;
        if !mappings.contains(&i) {
            mappings.push(i);
        }
    }
    if mappings.is_empty() {
        mappings = rt.each_mapping().map(|m| m.index).collect();
    }
    if rt.is_replica() {
        return Err(RedisError::Str("READONLY SYNC.RELOAD writes keys; run it on the primary"));
    }
    check_reload_access(ctx, rt, &mappings)?;
    refuse_when_cannot_block(ctx, "SYNC.RELOAD")?;
    let running = reload::begin(rt).map_err(replies::error)?;
    reload_in_background(ctx, rt, running, mappings, flush)
}

/// A reload writes (and with FLUSH deletes) any key under each mapping's prefix,
/// and appends to the changelog stream when reload events are announced: the
/// caller must be allowed all of it.
fn check_reload_access(ctx: &Context, rt: &Runtime, mappings: &[usize]) -> Result<(), RedisError> {
    let caller = Caller::of(ctx)?;
    for &i in mappings {
        let m = rt.mapping(i).def;
        let what = format!("SYNC.RELOAD writes the keys of mapping \"{}\"", m.name);
        caller.check_prefix(ctx, m.key_prefix.as_bytes(), Access::Write, &what)?;
        if let (true, Some(log)) = (m.notify_reload, &m.changelog) {
            let stream = crate::redis::notify::changelog_key(ctx, &log.stream).unwrap_or_default();
            caller.check(ctx, &stream, Access::Write)?;
        }
    }
    Ok(())
}
