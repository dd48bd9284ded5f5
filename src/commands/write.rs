//! `SYNC.WRITE` and `SYNC.DELETE`: a write command to mapped keys, run and
//! captured in one step. The command filter (`filter.rs`) routes clients' hash
//! writes and DEL/UNLINK of mapped keys here, so capture sees the command's own
//! arguments: what it set, removed or incremented, whether or not Redis held the
//! key. The command itself runs as the caller would have run it (their ACL, the
//! OOM rule, the same reply or error), and replicates as itself.

use super::runtime_or_err;
use crate::capture::{self, record, refuse, set_fields, Target};
use crate::change::{FieldChange, Fields, RowOp, Write};
use crate::intent::{self, Command, Effect};
use crate::mapping::{KeyRole, Mode};
use crate::redis_io::own_writes;
use crate::runtime::Runtime;
use redis_module::{
    CallOptionResp, CallOptionsBuilder, CallResult, Context, RedisError, RedisResult, RedisString, RedisValue,
};

/// Runs a write command as the calling client: its ACL is checked, deny-oom
/// commands are refused under `maxmemory`, the write replicates, and capture
/// ignores the keyspace events it raises (the caller captures it).
pub fn run(ctx: &Context, command: Command, args: &[&[u8]]) -> RedisResult {
    let mut options = CallOptionsBuilder::new().replicate().errors_as_replies().verify_acl().resp(CallOptionResp::Auto);
    if command.deny_oom() {
        options = options.verify_oom();
    }
    let options = options.build();
    let reply: CallResult = own_writes(|| ctx.call_ext(command.name(), &options, args));
    match reply {
        Ok(r) => Ok((&r).into()),
        Err(e) => Err(RedisError::String(e.to_utf8_string().unwrap_or_else(|| "ERR unknown error".into()))),
    }
}

fn command_arg(args: &[RedisString], deletes: bool) -> Result<Command, RedisError> {
    let name = args.get(1).map(|a| a.as_slice()).unwrap_or_default();
    match Command::from_name(name) {
        Some(c) if c.deletes_keys() == deletes => Ok(c),
        _ if deletes => Err(RedisError::Str("ERR SYNC.DELETE runs DEL or UNLINK")),
        _ => Err(RedisError::Str(
            "ERR SYNC.WRITE runs HSET, HMSET, HSETNX, HSETEX, HINCRBY, HINCRBYFLOAT, HDEL or HGETDEL",
        )),
    }
}

/// The row a key writes to, `None` when its writes are not captured here.
fn target_of(ctx: &Context, rt: &Runtime, key: &[u8]) -> Result<Option<Target>, RedisError> {
    if !capture::capturing(ctx, rt) {
        return Ok(None);
    }
    match capture::target(rt, key) {
        None => Ok(None),
        Some(Ok(target)) => Ok(Some(target)),
        Some(Err((mapping, message))) => {
            refuse(rt, mapping, &message);
            Err(RedisError::String(format!("ERR pgsync: {message}")))
        }
    }
}

/// `SYNC.WRITE <command> <key> [args ...]`: runs a hash write on a mapped key and
/// records exactly what it changed.
pub fn sync_write(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    if args.len() < 3 {
        return Err(RedisError::WrongArity);
    }
    let command = command_arg(&args, false)?;
    let rt = runtime_or_err()?;
    let all: Vec<&[u8]> = args[2..].iter().map(|a| a.as_slice()).collect();
    let (key, rest) = (all[0], &all[1..]);
    let (Some(target), Some(effect)) = (target_of(ctx, rt, key)?, intent::parse(command, rest)) else {
        // Not a synced key, or arguments Redis will refuse with its own error.
        return run(ctx, command, &all);
    };
    if let (Command::Hset | Command::Hmset, Effect::Set(pairs)) = (command, &effect) {
        let (pairs, op) = intent::take_op_field(pairs.clone());
        if let Some(op) = op {
            let written = pairs.len();
            return capture::tagged_write(ctx, rt, &target, key, &op, pairs)
                .map(|_| RedisValue::Integer(written as i64))
                .map_err(|e| {
                    let message = format!("write to {} refused: {e}", key.escape_ascii());
                    refuse(rt, target.mapping, &message);
                    RedisError::String(format!("ERR pgsync: {message}"))
                });
        }
    }
    let reply = run(ctx, command, &all)?;
    let fields = match effect {
        Effect::Set(_) if Effect::conditional(command) && !matches!(reply, RedisValue::Integer(1)) => Fields::new(),
        Effect::Set(pairs) => set_fields(pairs),
        Effect::Incr { field, delta } => {
            let redis_after = match &reply {
                RedisValue::Integer(n) => n.to_string().into_bytes(),
                other => crate::redis_io::bytes(other).unwrap_or_default(),
            };
            [(field, FieldChange::Add { delta, redis_after })].into_iter().collect()
        }
        Effect::Remove(names) => names.into_iter().map(|f| (f, FieldChange::Remove)).collect(),
    };
    if !fields.is_empty() {
        record(ctx, rt, &target, key, Write { op: RowOp::Upsert, fields, acks: Vec::new() });
    }
    Ok(reply)
}

/// `SYNC.DELETE DEL|UNLINK key [key ...]`: deletes keys; each write-behind row key
/// among them deletes its row, whether or not Redis held it. A key that can be no
/// row's key refuses the whole command, so nothing is half done.
pub fn sync_delete(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    if args.len() < 3 {
        return Err(RedisError::WrongArity);
    }
    let command = command_arg(&args, true)?;
    let rt = runtime_or_err()?;
    let keys: Vec<&[u8]> = args[2..].iter().map(|a| a.as_slice()).collect();
    let mut rows = Vec::new();
    for key in &keys {
        if let Some(target) = target_of(ctx, rt, key)? {
            let m = &rt.mappings.all()[target.mapping];
            // DEL of a write-through staging key only drops what is staged.
            if m.mode == Mode::WriteBehind && target.role == KeyRole::Main {
                rows.push((*key, target));
            }
        }
    }
    let reply = run(ctx, command, &keys)?;
    for (key, target) in rows {
        record(ctx, rt, &target, key, Write { op: RowOp::Delete, fields: Fields::new(), acks: Vec::new() });
    }
    Ok(reply)
}
