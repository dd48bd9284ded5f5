//! `SYNC.WRITE` and `SYNC.DELETE`: a write command to mapped keys, run and
//! captured in one step. The command filter (`filter.rs`) routes clients' hash
//! writes and DEL/UNLINK of mapped keys here, so capture sees the command's own
//! arguments: what it set, removed or incremented, whether or not Redis held the
//! key. The command itself runs as the caller would have run it (their ACL, the
//! OOM rule, the same reply or error), and replicates as itself.

use super::runtime_or_err;
use crate::model::change::{FieldChange, Fields, RowOp, Write};
use crate::model::intent::{self, Command, Effect};
use crate::model::mapping::{KeyRole, Mode, ValueType};
use crate::model::queue::RowKey;
use crate::pipeline::capture::{self, record, refuse, set_fields, Target};
use crate::pipeline::runtime::Runtime;
use crate::redis::client_call::run_as_client;
use crate::redis::read_through::loads;
use crate::redis::redis_io::key_exists;
use crate::redis::replies;
use crate::server::value_refusal;
use redis_module::{Context, RedisError, RedisResult, RedisString, RedisValue};

/// The wrapper commands, by what they run. Growing writes and removals are
/// apart so that Redis applies its own `maxmemory` rule (`deny-oom`) to the
/// wrapper as it would to the command.
#[derive(Clone, Copy, PartialEq)]
enum Wrapper {
    /// `SYNC.WRITE`: writes that can grow a hash.
    Write,
    /// `SYNC.REMOVE`: HDEL, HGETDEL.
    Remove,
    /// `SYNC.DELETE`: DEL, UNLINK.
    Delete,
}

fn wrapper_of(command: Command) -> Wrapper {
    match command {
        Command::Del | Command::Unlink => Wrapper::Delete,
        c if !c.deny_oom() => Wrapper::Remove,
        _ => Wrapper::Write,
    }
}

fn command_arg(args: &[RedisString], wrapper: Wrapper) -> Result<Command, RedisError> {
    let name = args.get(1).map(|a| a.as_slice()).unwrap_or_default();
    match Command::from_name(name) {
        Some(c) if wrapper_of(c) == wrapper => Ok(c),
        _ => Err(RedisError::Str(match wrapper {
            Wrapper::Delete => replies::DELETE_RUNS,
            Wrapper::Remove => replies::REMOVE_RUNS,
            Wrapper::Write => replies::WRITE_RUNS,
        })),
    }
}

/// The row a key writes to, `None` when its writes are not captured here.
pub(super) fn target_of(ctx: &Context, rt: &Runtime, key: &[u8]) -> Result<Option<Target>, RedisError> {
    if !capture::capturing(ctx, rt) {
        return Ok(None);
    }
    match capture::target(rt, key) {
        None => Ok(None),
        Some(Ok(target)) => Ok(Some(target)),
        Some(Err(refusal)) => {
            let message = refusal.to_string();
            refuse(rt, refusal.mapping, &message);
            Err(replies::refused(&message))
        }
    }
}

/// `SYNC.WRITE <command> <key> [args ...]`: runs a hash write that can grow the
/// hash on a mapped key and records exactly what it changed.
pub fn sync_write(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    hash_write(ctx, args, Wrapper::Write)
}

/// `SYNC.REMOVE HDEL|HGETDEL <key> [args ...]`: as `SYNC.WRITE`, for removals
/// (allowed under `maxmemory`, as in Redis).
pub fn sync_remove(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    hash_write(ctx, args, Wrapper::Remove)
}

fn hash_write(ctx: &Context, args: Vec<RedisString>, wrapper: Wrapper) -> RedisResult {
    if args.len() < 3 {
        return Err(RedisError::WrongArity);
    }
    let command = command_arg(&args, wrapper)?;
    let rt = runtime_or_err()?;
    let key = args[2].as_slice();
    let argv = &args[1..];
    let Some(target) = target_of(ctx, rt, key)? else {
        return run_as_client(ctx, command, argv)?.forward(ctx);
    };
    let m = rt.mapping(target.mapping).def;
    if m.value_type == ValueType::Json {
        // A hash where the mapping keeps JSON documents would be a row nobody
        // reads back, and a staging hash apply never clears.
        let message = format!("{}: write to {} refused: {}", m.name, key.escape_ascii(), replies::JSON_ROWS_TAKE_JSON);
        refuse(rt, target.mapping, &message);
        return Err(replies::refused(&message));
    }
    let fill = fill_after(ctx, rt, &target, &args[2]);
    let rest: Vec<&[u8]> = args[3..].iter().map(|a| a.as_slice()).collect();
    let Some(effect) = intent::parse(command, &rest) else {
        return unparsed_write(ctx, rt, &target, command, argv);
    };
    value_refusal::check(ctx, rt, &target, argv, &effect)?;
    let effect = match (command, effect) {
        (Command::Hset | Command::Hmset, Effect::Set(pairs)) => match intent::take_op_field(pairs) {
            (pairs, Some(op)) => {
                let written = pairs.len();
                let fields = set_fields(pairs.clone());
                let write = |to: &[u8]| capture::hset(ctx, to, &pairs);
                let done = capture::tagged_write(ctx, rt, &target, key, &op, fields, write)?;
                if done.is_some() {
                    if let Some(row) = fill {
                        loads::fill_after_write(row);
                    }
                }
                return Ok(RedisValue::Integer(written as i64));
            }
            (pairs, None) => Effect::Set(pairs),
        },
        (_, effect) => effect,
    };
    let reply = run_as_client(ctx, command, argv)?;
    let fields = match effect {
        Effect::Set(_) if Effect::conditional(command) && reply.integer() != Some(1) => Fields::new(),
        Effect::Set(pairs) => set_fields(pairs),
        Effect::Incr { field, delta } => {
            let redis_after = reply.bytes().unwrap_or_default();
            [(field, FieldChange::Add { delta, redis_after })].into_iter().collect()
        }
        Effect::Remove(names) => names.into_iter().map(|f| (f, FieldChange::Remove)).collect(),
    };
    if !fields.is_empty()
        && record(ctx, rt, &target, key, Write { op: RowOp::Upsert, fields, acks: Vec::new() }).is_some()
    {
        if let Some(row) = fill {
            loads::fill_after_write(row);
        }
    }
    reply.forward(ctx)
}

/// The row to fill once this write lands (`fill_on_write`): a write-behind
/// write to a key Redis does not hold leaves only the fields it wrote.
/// (Write-through rows are filled when their commit is applied.)
fn fill_after(ctx: &Context, rt: &Runtime, target: &Target, key: &RedisString) -> Option<RowKey> {
    let m = rt.mapping(target.mapping).def;
    (m.fill_on_write && m.mode == Mode::WriteBehind && target.role == KeyRole::Main && !key_exists(ctx, key))
        .then(|| target.row())
}

/// A write whose arguments capture cannot read, though Redis may still accept
/// them (`HINCRBYFLOAT k f 0x10`: Redis parses a long double): when it succeeds,
/// the increment's result is recorded as the field's value, so nothing goes
/// unsynced. Any other unreadable write is one Redis refuses too.
fn unparsed_write(ctx: &Context, rt: &Runtime, target: &Target, command: Command, argv: &[RedisString]) -> RedisResult {
    let reply = run_as_client(ctx, command, argv)?;
    if let (Command::Hincrby | Command::Hincrbyfloat, [_, key, field, _], Some(value)) = (command, argv, reply.bytes())
    {
        let fields = [(field.to_vec(), FieldChange::Set(value))].into_iter().collect();
        record(ctx, rt, target, key.as_slice(), Write { op: RowOp::Upsert, fields, acks: Vec::new() });
    }
    reply.forward(ctx)
}

/// `SYNC.DELETE DEL|UNLINK key [key ...]`: deletes keys; each write-behind row key
/// among them deletes its row, whether or not Redis held it. A key that can be no
/// row's key refuses the whole command, so nothing is half done.
pub fn sync_delete(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    if args.len() < 3 {
        return Err(RedisError::WrongArity);
    }
    let command = command_arg(&args, Wrapper::Delete)?;
    let rt = runtime_or_err()?;
    let keys: Vec<&[u8]> = args[2..].iter().map(|a| a.as_slice()).collect();
    let mut rows = Vec::new();
    for key in &keys {
        if let Some(target) = target_of(ctx, rt, key)? {
            let m = rt.mapping(target.mapping).def;
            // DEL of a write-through staging key only drops what is staged.
            if m.mode == Mode::WriteBehind && target.role == KeyRole::Main {
                rows.push((*key, target));
            }
        }
    }
    let reply = run_as_client(ctx, command, &args[1..])?;
    for (key, target) in rows {
        record(ctx, rt, &target, key, Write { op: RowOp::Delete, fields: Fields::new(), acks: Vec::new() });
    }
    reply.forward(ctx)
}
