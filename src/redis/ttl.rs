//! Expiry of cached rows (a mapping's `"ttl"`): the module sets it whenever it
//! writes a row's hash (reload, listener, a write-through commit applied) and,
//! with `"ttl_on_write"`, when a writer writes one. Expiry is a cache event: it
//! never deletes a row (capture ignores it), and a later write to the expired
//! key changes only the fields it writes.

use crate::model::mapping::Mapping;
use crate::redis::hash_key::Key;
use crate::redis::redis_io::{replicate, string, warn};
use redis_module::{Context, RedisString};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Gives the open key `name` the mapping's expiry, if it has one and the key
/// exists: an absolute time, replicated as `PEXPIREAT` so the AOF and the
/// replicas expire it at the same moment.
pub fn set(ctx: &Context, m: &Mapping, key: &Key, name: &RedisString) {
    let Some(ttl) = m.ttl else { return };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let at = (now + ttl).as_millis() as i64;
    if !key.expire_at(at) {
        return;
    }
    let at = string(ctx, at.to_string().as_bytes());
    replicate(ctx, c"PEXPIREAT", &[name, &at]);
}

/// [`set`] for a key not open yet.
pub fn set_on(ctx: &Context, m: &Mapping, key: &[u8]) {
    if m.ttl.is_none() {
        return;
    }
    let name = string(ctx, key);
    match Key::open(ctx, &name) {
        Ok(open) => set(ctx, m, &open, &name),
        Err(e) => warn(&format!("cannot set the expiry of {}: {e}", key.escape_ascii())),
    }
}
