//! Where the journal lives in Redis: one hash per cluster slot,
//! `pgsync:journal:{<tag>}`, the tag being the server's canonical name of the slot
//! of the rows it holds. Small hashes keep every write O(size of the write), with
//! no rehash of one giant key; and in Redis Cluster a row's journal sits in the
//! row's own slot, so it moves and fails over with the row. Written with the key
//! API (no command call on the write path) and replicated explicitly, so the AOF
//! and the replicas get it in the same unit as the write that caused it.

use crate::redis_io::{api, hgetall, string, warn, HashPairs};
use redis_module::{raw, Context, RedisString};
use std::ffi::CStr;
use std::os::raw::c_int;

/// The number of cluster slots; a journal key per slot that holds dirty rows.
pub const SLOTS: u16 = 16384;

/// Every journal key starts with this.
pub const PREFIX: &[u8] = b"pgsync:journal:{";

/// The journal hash of the previous version, one for all rows; read once after
/// an upgrade, then gone.
pub const LEGACY_KEY: &[u8] = b"pgsync:{journal}";

/// The cluster slot of `key`, as the server computes it (also outside cluster
/// mode, so that a journal written there still sits in the right slots later).
pub fn slot_of(ctx: &Context, key: &[u8]) -> u16 {
    let name = string(ctx, key);
    match api!(RedisModule_ClusterKeySlot) {
        // SAFETY: `name` is a live string for the duration of the call.
        Some(slot) => (unsafe { slot(name.inner) } % u32::from(SLOTS)) as u16,
        None => 0,
    }
}

/// The journal key of `slot`.
pub fn key_of_slot(slot: u16) -> Vec<u8> {
    let tag = api!(RedisModule_ClusterCanonicalKeyNameInSlot)
        // SAFETY: the server returns a static string for every slot below 16384.
        .map(|name| unsafe { name(u32::from(slot)) })
        .filter(|p| !p.is_null())
        // SAFETY: checked non-null; a NUL-terminated static string.
        .map(|p| unsafe { CStr::from_ptr(p) }.to_bytes().to_vec())
        .unwrap_or_else(|| slot.to_string().into_bytes());
    [PREFIX, &tag, b"}"].concat()
}

/// Whether `key` is one of the journal's keys (for eviction warnings).
pub fn is_journal_key(key: &[u8]) -> bool {
    key.starts_with(PREFIX) || key == LEGACY_KEY
}

/// An open journal key, closed on drop.
struct Open(*mut raw::RedisModuleKey);

impl Open {
    fn writable(ctx: &Context, name: &RedisString) -> Option<Open> {
        let open = api!(RedisModule_OpenKey)?;
        // SAFETY: a live context and key name; the key is closed on drop.
        let key = unsafe { open(ctx.ctx, name.inner, (raw::REDISMODULE_READ | raw::REDISMODULE_WRITE) as c_int) };
        if key.is_null() {
            return None;
        }
        let open = Open(key);
        // SAFETY: `key` is the open key above.
        let kind = api!(RedisModule_KeyType).map(|t| unsafe { t(open.0) });
        match kind.map(|k| k as isize) {
            Some(raw::REDISMODULE_KEYTYPE_EMPTY | raw::REDISMODULE_KEYTYPE_HASH) => Some(open),
            _ => {
                warn(&format!("{} is not a hash; the journal cannot write to it", name.to_string_lossy()));
                None
            }
        }
    }

    /// Sets (`Some`) or deletes (`None`) one field.
    fn set(&self, field: &RedisString, value: Option<&RedisString>) {
        let Some(hash_set) = api!(RedisModule_HashSet) else { return };
        let value = value.map_or(raw::REDISMODULE_HASH_DELETE as *mut raw::RedisModuleString, |v| v.inner);
        // SAFETY: the key is open for writing; field and value are live strings;
        // the variadic list ends with NULL as the API requires.
        unsafe {
            hash_set(
                self.0,
                raw::REDISMODULE_HASH_NONE as c_int,
                field.inner,
                value,
                std::ptr::null_mut::<raw::RedisModuleString>(),
            )
        };
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        if let Some(close) = api!(RedisModule_CloseKey) {
            // SAFETY: opened by `Open::writable` and closed once.
            unsafe { close(self.0) };
        }
    }
}

/// Writes one record: `field` of the journal key `journal` holds `value`.
pub fn put(ctx: &Context, journal: &[u8], field: &[u8], value: &[u8]) {
    let name = string(ctx, journal);
    let Some(key) = Open::writable(ctx, &name) else { return };
    key.set(&string(ctx, field), Some(&string(ctx, value)));
    drop(key);
    replicate(ctx, c"HSET", &[journal, field, value]);
}

/// Deletes records of one journal key; the key goes when its last record does.
pub fn remove(ctx: &Context, journal: &[u8], fields: &[Vec<u8>]) {
    if fields.is_empty() {
        return;
    }
    let name = string(ctx, journal);
    let Some(key) = Open::writable(ctx, &name) else { return };
    for field in fields {
        key.set(&string(ctx, field), None);
    }
    drop(key);
    let mut args: Vec<&[u8]> = vec![journal];
    args.extend(fields.iter().map(Vec::as_slice));
    replicate(ctx, c"HDEL", &args);
}

/// Sends a journal write to the AOF and the replicas, with the command that made
/// it. Binary-safe (the crate's `replicate` takes C strings, and record fields
/// hold a NUL).
fn replicate(ctx: &Context, command: &CStr, args: &[&[u8]]) {
    let Some(replicate) = api!(RedisModule_Replicate) else { return };
    let strings: Vec<RedisString> = args.iter().map(|a| string(ctx, a)).collect();
    let mut argv: Vec<*mut raw::RedisModuleString> = strings.iter().map(|s| s.inner).collect();
    // SAFETY: `v` takes an array of live strings and its length; `strings` owns
    // them until after the call, and Redis copies what it keeps.
    let status = unsafe { replicate(ctx.ctx, command.as_ptr(), c"v".as_ptr(), argv.as_mut_ptr(), argv.len()) };
    if status != raw::REDISMODULE_OK as c_int {
        warn(&format!("could not replicate a journal write to {}", args[0].escape_ascii()));
    }
}

/// Every record of one journal key (a slot's: small), for recovery.
pub fn read_all(ctx: &Context, journal: &[u8]) -> HashPairs {
    hgetall(ctx, journal).unwrap_or_else(|e| {
        warn(&format!("cannot read the journal {}: {e}", journal.escape_ascii()));
        Vec::new()
    })
}
