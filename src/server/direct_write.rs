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
use crate::server::acl::Caller;
use crate::server::redis_io::{api, own_writes, string};
use redis_module::{raw, Context, NotifyEvent, RedisError, RedisString, RedisValue};
use std::ffi::CString;
use std::os::raw::c_int;
use std::ptr;

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
    let reply = own_writes(|| match command {
        Command::Del | Command::Unlink => delete_keys(ctx, command, &argv[1..]),
        _ => write_hash(ctx, command, &argv[1], &argv[2..]),
    })?;
    replicate(ctx, command, &argv[1..]);
    Ok(reply)
}

fn arity(command: Command) -> RedisError {
    RedisError::String(format!("ERR wrong number of arguments for '{}' command", command.name().to_lowercase()))
}

/// A key open for writing, closed on drop.
struct Key(*mut raw::RedisModuleKey);

impl Key {
    fn open(ctx: &Context, name: &RedisString) -> Result<Key, RedisError> {
        let open = api!(RedisModule_OpenKey).ok_or(RedisError::Str("ERR the key API is missing"))?;
        // SAFETY: a live context and key name; closed on drop.
        let key = unsafe { open(ctx.ctx, name.inner, (raw::REDISMODULE_READ | raw::REDISMODULE_WRITE) as c_int) };
        if key.is_null() {
            return Err(RedisError::Str("ERR cannot open the key"));
        }
        Ok(Key(key))
    }

    fn kind(&self) -> isize {
        // SAFETY: the key is open.
        api!(RedisModule_KeyType).map_or(raw::REDISMODULE_KEYTYPE_EMPTY, |t| unsafe { t(self.0) } as isize)
    }

    /// The field's value, if the hash holds it.
    fn get(&self, field: &RedisString) -> Option<RedisString> {
        let get = api!(RedisModule_HashGet)?;
        let mut value: *mut raw::RedisModuleString = ptr::null_mut();
        // SAFETY: the key is open; the list ends with NULL; the value returned is
        // ours to free (RedisString's Drop), since no auto memory is on.
        unsafe { get(self.0, raw::REDISMODULE_HASH_NONE as c_int, field.inner, &mut value, ptr::null_mut::<c_int>()) };
        (!value.is_null()).then(|| RedisString::from_redis_module_string(ptr::null_mut(), value))
    }

    /// Sets (`Some`) or deletes (`None`) a field; true when it existed before.
    fn set(&self, field: &RedisString, value: Option<&RedisString>) -> bool {
        let Some(hash_set) = api!(RedisModule_HashSet) else { return false };
        let value = value.map_or(raw::REDISMODULE_HASH_DELETE as *mut raw::RedisModuleString, |v| v.inner);
        // SAFETY: the key is open for writing; the list ends with NULL. Without
        // COUNT_ALL the result counts fields that existed (updated or deleted).
        let existed = unsafe {
            hash_set(
                self.0,
                raw::REDISMODULE_HASH_NONE as c_int,
                field.inner,
                value,
                ptr::null_mut::<raw::RedisModuleString>(),
            )
        };
        existed > 0
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        if let Some(close) = api!(RedisModule_CloseKey) {
            // SAFETY: opened once, closed once.
            unsafe { close(self.0) };
        }
    }
}

fn write_hash(
    ctx: &Context,
    command: Command,
    name: &RedisString,
    args: &[RedisString],
) -> Result<RedisValue, RedisError> {
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
        Command::Hincrby => Some(integer(&args[1], "ERR value is not an integer or out of range")?),
        _ => None,
    };
    let key = Key::open(ctx, name)?;
    if ![raw::REDISMODULE_KEYTYPE_EMPTY, raw::REDISMODULE_KEYTYPE_HASH].contains(&key.kind()) {
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
                Some(value) => integer(&value, "ERR hash value is not an integer")?,
                None => 0,
            };
            let sum = old
                .checked_add(delta.unwrap_or_default())
                .ok_or(RedisError::Str("ERR increment or decrement would overflow"))?;
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
    Ok(reply)
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

fn delete_keys(ctx: &Context, command: Command, names: &[RedisString]) -> Result<RedisValue, RedisError> {
    if names.is_empty() {
        return Err(arity(command));
    }
    let mut deleted = 0;
    for name in names {
        let key = Key::open(ctx, name)?;
        if key.kind() == raw::REDISMODULE_KEYTYPE_EMPTY {
            continue;
        }
        let remove = match command {
            Command::Unlink => api!(RedisModule_UnlinkKey),
            _ => api!(RedisModule_DeleteKey),
        };
        // SAFETY: the key is open for writing.
        if remove.is_some_and(|remove| unsafe { remove(key.0) } == raw::REDISMODULE_OK as c_int) {
            deleted += 1;
            drop(key);
            ctx.notify_keyspace_event(NotifyEvent::GENERIC, "del", name);
        }
    }
    Ok(RedisValue::Integer(deleted))
}

/// Sends the command, as the client sent it, to the AOF and the replicas.
fn replicate(ctx: &Context, command: Command, args: &[RedisString]) {
    let (Some(replicate), Ok(name)) = (api!(RedisModule_Replicate), CString::new(command.name())) else { return };
    let mut argv: Vec<*mut raw::RedisModuleString> = args.iter().map(|a| a.inner).collect();
    // SAFETY: `v` takes an array of live strings and its length; Redis copies them.
    unsafe { replicate(ctx.ctx, name.as_ptr(), c"v".as_ptr(), argv.as_mut_ptr(), argv.len()) };
}
