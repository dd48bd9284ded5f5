//! The common writes to synced keys (HSET, HMSET, HSETNX, HINCRBY, HDEL, and
//! DEL/UNLINK) carried out with the key API rather than a command call: the
//! same checks (the caller's ACL for the command itself, the key's type; Redis
//! itself applies `maxmemory` to the `deny-oom` wrapper `SYNC.WRITE`), the same
//! reply and errors, keyspace events, and replication of the command as the
//! client sent it. A command call costs a
//! fake client, a command lookup and a reply object per write; this is most of
//! what capture used to add to a write. HINCRBYFLOAT (Redis formats a long
//! double), HSETEX and HGETDEL (field expiry) still go through a command call.

use crate::model::intent::Command;
use crate::redis::acl::Caller;
use crate::redis::hash_key::Key;
use crate::redis::redis_io::{self, own_writes, string};
use crate::redis::replies;
use redis_module::{raw, Context, NotifyEvent, RedisError, RedisString, RedisValue};

/// Whether `command` is run here rather than through a command call.
pub fn handles(command: Command) -> bool {
    matches!(
        command,
        Command::Hset
            | Command::Hmset
            | Command::Hsetnx
            | Command::Hincrby
            | Command::Hdel
            | Command::Del
            | Command::Unlink
    )
}

/// Runs `argv` (the command's name, then its arguments) as the calling client
/// would; the caller has checked [`handles`].
pub fn run(ctx: &Context, command: Command, argv: &[RedisString]) -> Result<RedisValue, RedisError> {
    Caller::of(ctx)?.check_command(ctx, argv)?;
    run_unchecked(ctx, command, argv)
}

/// Runs `argv` for the module itself (a source such as Kafka has no client
/// whose ACL applies), with the same writes, events and replication as [`run`].
pub fn run_unchecked(ctx: &Context, command: Command, argv: &[RedisString]) -> Result<RedisValue, RedisError> {
    let (reply, changed) = own_writes(|| match command {
        Command::Del | Command::Unlink => delete_keys(ctx, command, &argv[1..]),
        _ => write_hash(ctx, command, &argv[1], &argv[2..]),
    })?;
    // As Redis does: a write that changed nothing (HSETNX of a field there,
    // HDEL or DEL of nothing) is not sent to the AOF and the replicas.
    if changed {
        replicate(ctx, command, &argv[1..]);
    }
    Ok(reply)
}

/// A command's reply, and whether it changed the data.
type Outcome = (RedisValue, bool);

fn arity(command: Command) -> RedisError {
    replies::wrong_arity(&command.name().to_lowercase())
}

fn write_hash(
    ctx: &Context,
    command: Command,
    name: &RedisString,
    args: &[RedisString],
) -> Result<Outcome, RedisError> {
    let pairs_ok = !args.is_empty() && args.len().is_multiple_of(2);
    let ok = match command {
        Command::Hset | Command::Hmset => pairs_ok,
        Command::Hsetnx | Command::Hincrby => args.len() == 2,
        _ => !args.is_empty(),
    };
    if !ok {
        return Err(arity(command));
    }
    let delta = match command {
        Command::Hincrby => Some(integer(&args[1], replies::NOT_AN_INTEGER)?),
        _ => None,
    };
    let key = Key::open(ctx, name)?;
    if !key.is_hash_or_empty() {
        return Err(RedisError::WrongType);
    }
    let (reply, event) = match command {
        Command::Hset | Command::Hmset => {
            let added = args.chunks_exact(2).filter(|pair| !key.set(&pair[0], Some(&pair[1]))).count();
            let reply = match command {
                Command::Hmset => RedisValue::SimpleStringStatic("OK"),
                _ => RedisValue::Integer(added as i64),
            };
            (reply, Some("hset"))
        }
        Command::Hsetnx if key.get(&args[0]).is_some() => (RedisValue::Integer(0), None),
        Command::Hsetnx => {
            key.set(&args[0], Some(&args[1]));
            (RedisValue::Integer(1), Some("hset"))
        }
        Command::Hincrby => {
            let old = match key.get(&args[0]) {
                Some(value) => integer(&value, replies::HASH_NOT_AN_INTEGER)?,
                None => 0,
            };
            let sum = old.checked_add(delta.unwrap_or_default()).ok_or_else(replies::overflow)?;
            key.set(&args[0], Some(&string(ctx, sum.to_string().as_bytes())));
            (RedisValue::Integer(sum), Some("hincrby"))
        }
        _ => {
            let removed = args.iter().filter(|field| key.set(field, None)).count();
            (RedisValue::Integer(removed as i64), (removed > 0).then_some("hdel"))
        }
    };
    let emptied = key.kind() == raw::REDISMODULE_KEYTYPE_EMPTY;
    drop(key);
    if let Some(event) = event {
        ctx.notify_keyspace_event(NotifyEvent::HASH, event, name);
        if emptied {
            ctx.notify_keyspace_event(NotifyEvent::GENERIC, "del", name);
        }
    }
    Ok((reply, event.is_some()))
}

/// A 64-bit integer as Redis reads one (no spaces, no `+`, no leading zeros).
fn integer(value: &RedisString, error: &'static str) -> Result<i64, RedisError> {
    let bytes = value.as_slice();
    let canonical = std::str::from_utf8(bytes)
        .ok()
        .and_then(|t| t.parse::<i64>().ok())
        .filter(|n| n.to_string().as_bytes() == bytes);
    canonical.ok_or(RedisError::Str(error))
}

fn delete_keys(ctx: &Context, command: Command, names: &[RedisString]) -> Result<Outcome, RedisError> {
    if names.is_empty() {
        return Err(arity(command));
    }
    let mut deleted = 0;
    for name in names {
        let key = Key::open(ctx, name)?;
        if key.delete(command == Command::Unlink) {
            deleted += 1;
            drop(key);
            ctx.notify_keyspace_event(NotifyEvent::GENERIC, "del", name);
        }
    }
    Ok((RedisValue::Integer(deleted), deleted > 0))
}

/// Sends the command, as the client sent it, to the AOF and the replicas.
fn replicate(ctx: &Context, command: Command, args: &[RedisString]) {
    redis_io::replicate(ctx, command.c_name(), args);
}
