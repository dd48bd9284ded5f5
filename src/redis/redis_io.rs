//! Small helpers over the Redis module API: replicated calls, binary-safe reading of
//! hashes, marking the module's own writes so capture ignores them, and logging
//! that is safe from any thread.

use redis_module::{CallOptions, CallOptionsBuilder, CallResult, Context, RedisValue, MODULE_CONTEXT};
use std::sync::atomic::{AtomicBool, Ordering};

/// Reads one pointer of the module API table (`api!(RedisModule_GetCommand)`), which
/// `RedisModule_Init` fills once at load and nothing writes again: `None` when the
/// server lacks that API, so callers can fall back instead of unwrapping.
macro_rules! api {
    ($name:ident) => {
        // SAFETY: see above; this copies one `Option<fn>` out of the table.
        unsafe { std::ptr::addr_of!(redis_module::raw::$name).read() }
    };
}
pub(crate) use api;

/// Set while the module itself writes keys; capture ignores those events. Only the
/// holder of the Redis lock reads or writes it, so there is no race.
static OWN_WRITE: AtomicBool = AtomicBool::new(false);

/// Whether the current keyspace event comes from one of the module's own writes.
pub fn is_own_write() -> bool {
    OWN_WRITE.load(Ordering::Relaxed)
}

/// The database the current client has selected (0 when unknown).
pub fn selected_db(ctx: &Context) -> i32 {
    // SAFETY: the API table is filled at load and never written again; the context
    // is the live one Redis handed to this callback.
    unsafe { std::ptr::addr_of!(redis_module::raw::RedisModule_GetSelectedDb).read().map_or(0, |get| get(ctx.ctx)) }
}

/// Runs `f` with capture switched off, for writes the module makes itself.
pub fn own_writes<T>(f: impl FnOnce() -> T) -> T {
    let _restore = RestoreOwnWrite(OWN_WRITE.swap(true, Ordering::Relaxed));
    f()
}

/// Puts the own-write flag back when dropped, so a panic caught above `own_writes`
/// cannot leave capture switched off for the rest of the process.
struct RestoreOwnWrite(bool);

impl Drop for RestoreOwnWrite {
    fn drop(&mut self) {
        OWN_WRITE.store(self.0, Ordering::Relaxed);
    }
}

/// A command called from the module that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The server's error reply (`WRONGTYPE ...`), as it wrote it.
    Reply(String),
    /// An error reply that is not UTF-8 text.
    Unreadable,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Reply(text) => f.write_str(text),
            CallError::Unreadable => f.write_str("unknown error"),
        }
    }
}

impl std::error::Error for CallError {}

fn call_with(ctx: &Context, options: &CallOptions, command: &str, args: &[&[u8]]) -> Result<RedisValue, CallError> {
    let reply: CallResult = ctx.call_ext(command, options, args);
    match reply {
        Ok(r) => Ok((&r).into()),
        Err(e) => Err(e.to_utf8_string().map_or(CallError::Unreadable, CallError::Reply)),
    }
}

/// Calls a Redis command, replicating it, and returns its reply or error.
pub fn call(ctx: &Context, command: &str, args: &[&[u8]]) -> Result<RedisValue, CallError> {
    // `replicate`: the write goes to the AOF and replicas with the command that
    // caused it; `errors_as_replies`: a failing call returns its error to us.
    call_with(ctx, &CallOptionsBuilder::new().replicate().errors_as_replies().build(), command, args)
}

/// Publishes a message (`command`: `PUBLISH` or `SPUBLISH`) without writing it
/// to the AOF or sending it to replicas: notifications are not data (a cluster
/// carries them to other nodes itself).
pub fn publish(ctx: &Context, command: &str, channel: &[u8], message: &[u8]) {
    let options = CallOptionsBuilder::new().errors_as_replies().build();
    if let Err(e) = call_with(ctx, &options, command, &[channel, message]) {
        warn(&format!("{command} failed: {e}"));
    }
}

/// The value of a server config (`CONFIG GET name`), if it has one.
pub fn config_value(ctx: &Context, name: &str) -> Option<Vec<u8>> {
    match call(ctx, "CONFIG", &[b"GET", name.as_bytes()]) {
        Ok(RedisValue::Array(pair)) => pair.get(1).and_then(bytes),
        _ => None,
    }
}

/// Whether a config-changed event's `names` include `config`.
pub fn names_config(names: &[&str], config: &str) -> bool {
    names.iter().any(|name| name.eq_ignore_ascii_case(config))
}

/// Calls a command and logs (rather than returns) a failure: for best-effort writes
/// such as ack streams, where a failure must not stop the rest.
pub fn call_logged(ctx: &Context, command: &str, args: &[&[u8]]) {
    if let Err(e) = call(ctx, command, args) {
        warn(&format!("{command} failed: {e}"));
    }
}

/// The bytes of a string reply.
pub fn bytes(value: &RedisValue) -> Option<Vec<u8>> {
    match value {
        RedisValue::SimpleString(s) | RedisValue::BulkString(s) => Some(s.as_bytes().to_vec()),
        RedisValue::StringBuffer(b) => Some(b.clone()),
        RedisValue::BulkRedisString(s) => Some(s.as_slice().to_vec()),
        _ => None,
    }
}

/// A hash's fields and values, in Redis's order.
pub type HashPairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Every field and value of a hash: empty when the key is missing, an error when
/// the key holds another type.
pub fn hgetall(ctx: &Context, key: &[u8]) -> Result<HashPairs, CallError> {
    match call(ctx, "HGETALL", &[key])? {
        RedisValue::Array(items) => {
            let flat: Vec<Vec<u8>> = items.iter().filter_map(bytes).collect();
            Ok(flat.chunks_exact(2).map(|p| (p[0].clone(), p[1].clone())).collect())
        }
        RedisValue::Map(map) => Ok(map
            .into_iter()
            .filter_map(|(k, v)| {
                let k = match k {
                    redis_module::redisvalue::RedisValueKey::String(s) => s.into_bytes(),
                    redis_module::redisvalue::RedisValueKey::BulkString(b) => b,
                    _ => return None,
                };
                bytes(&v).map(|v| (k, v))
            })
            .collect()),
        _ => Ok(Vec::new()),
    }
}

/// Logs a warning to the Redis log; safe from any thread.
pub fn warn(message: &str) {
    match outside_redis() {
        true => eprintln!("warning: {message}"),
        false => MODULE_CONTEXT.log_warning(&clean(message)),
    }
}

/// Logs a notice to the Redis log; safe from any thread.
pub fn notice(message: &str) {
    match outside_redis() {
        true => eprintln!("notice: {message}"),
        false => MODULE_CONTEXT.log_notice(&clean(message)),
    }
}

/// Whether no server loaded the module (unit tests run rules that log): the
/// crate's logger would panic there.
fn outside_redis() -> bool {
    api!(RedisModule_Log).is_none()
}

/// Redis takes a log line as a printf format and a C string: escape `%` and drop
/// NUL bytes, both of which key names and Postgres messages can carry.
fn clean(message: &str) -> String {
    message.replace('\0', "\\0").replace('%', "%%")
}

/// A Redis string holding exactly `bytes`. The crate's `create_string` goes
/// through a C string and panics on a NUL byte, which keys and values may hold.
pub fn string(ctx: &Context, bytes: &[u8]) -> redis_module::RedisString {
    redis_module::RedisString::create_from_slice(ctx.ctx, bytes)
}

/// Sends a write the module made with the key API to the AOF and the replicas,
/// as `command` with `args`, in the unit of the command (or lock) that made it.
/// Binary-safe: the crate's `replicate` goes through C strings.
pub fn replicate<S: std::borrow::Borrow<redis_module::RedisString>>(
    ctx: &Context,
    command: &std::ffi::CStr,
    args: &[S],
) {
    let Some(replicate) = api!(RedisModule_Replicate) else { return };
    let (c, name) = (ctx.ctx, command.as_ptr());
    // The common shapes (a key, a field, a value; a key and a record) go as one
    // `s` per string: Redis sizes its argument vector from the format, where a
    // `v` vector makes it grow that vector again (a `realloc` per write).
    // SAFETY: each `s` takes one live string, `v` an array of live strings and
    // its length; Redis keeps references of its own.
    let status = unsafe {
        match args {
            [a] => replicate(c, name, c"s".as_ptr(), a.borrow().inner),
            [a, b] => replicate(c, name, c"ss".as_ptr(), a.borrow().inner, b.borrow().inner),
            [a, b, d] => replicate(c, name, c"sss".as_ptr(), a.borrow().inner, b.borrow().inner, d.borrow().inner),
            _ => {
                let mut argv: Vec<*mut redis_module::raw::RedisModuleString> =
                    args.iter().map(|a| a.borrow().inner).collect();
                replicate(c, name, c"v".as_ptr(), argv.as_mut_ptr(), argv.len())
            }
        }
    };
    if status != redis_module::raw::REDISMODULE_OK as std::os::raw::c_int {
        warn(&format!("could not replicate a {} of the module's", command.to_string_lossy()));
    }
}

/// Whether `key` exists in the calling client's database (an expired key does
/// not, and reading it lets Redis reclaim it as any read would).
pub fn key_exists(ctx: &Context, key: &redis_module::RedisString) -> bool {
    ctx.open_key(key).key_type() != redis_module::KeyType::Empty
}

/// A hook into the server that the load needs and the server would not give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookError {
    /// The server has no keyspace events API to notify evictions.
    NoEvictionEvents,
    /// The subscription to eviction events was refused.
    EvictionSubscription,
    /// The command filter was refused.
    CommandFilter,
    /// The server has no API to describe commands (`COMMAND DOCS`).
    NoCommandInfo,
    /// The command to describe is not registered.
    NotRegistered,
    /// The server refused the description.
    CommandInfoRefused,
}

impl std::fmt::Display for HookError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HookError::NoEvictionEvents => "the server cannot notify evictions",
            HookError::EvictionSubscription => "cannot subscribe to eviction events",
            HookError::CommandFilter => "cannot register the command filter",
            HookError::NoCommandInfo => "the server has no RM_SetCommandInfo",
            HookError::NotRegistered => "command not registered",
            HookError::CommandInfoRefused => "RM_SetCommandInfo refused it (see the lines above in the log)",
        })
    }
}

impl std::error::Error for HookError {}

#[cfg(test)]
mod tests {
    use super::{is_own_write, own_writes};

    #[test]
    fn log_lines_cannot_inject_format_directives() {
        assert_eq!(super::clean("users:%s\0"), "users:%%s\\0");
    }

    // The only unit test that touches the flag, so parallel tests cannot race on it.
    #[test]
    fn own_writes_restores_the_flag_even_when_it_unwinds() {
        assert!(!is_own_write());
        let nested = own_writes(|| {
            own_writes(|| assert!(is_own_write()));
            is_own_write()
        });
        assert!(nested, "the inner scope must restore the outer one's flag");
        assert!(!is_own_write());
        let caught = crate::model::guard::catch(|| own_writes(|| panic!("bug while writing")));
        assert_eq!(caught.map_err(|panic| panic.0), Err("bug while writing".to_string()));
        assert!(!is_own_write(), "a caught panic left capture switched off");
    }
}
