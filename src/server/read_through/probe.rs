//! The command filter's check of whether a key exists, so that a read of a key
//! Redis holds runs as it is, and only a miss goes through `SYNC.READ`. The
//! filter has no context of its own: it looks through a detached context,
//! without side effects (no expiry, no LRU touch, no keyspace hit or miss
//! counted: the command itself does those).
//!
//! It looks in database 0, the only one synced, whatever the client selected:
//! asking Redis which database a client is in costs a `getpeername` system call
//! and the formatting of its address (a fifth of a pipelined HGETALL's time,
//! measured). A key found there runs as it is, which is right in any database;
//! a key missing there goes to `SYNC.READ`, which sees the client's database and
//! loads only in database 0.

use crate::redis::redis_io::api;
use redis_module::raw;
use std::os::raw::c_int;
use std::sync::atomic::{AtomicPtr, Ordering};

/// The context the filter opens keys with (database 0), created once at load.
static DETACHED: AtomicPtr<raw::RedisModuleCtx> = AtomicPtr::new(std::ptr::null_mut());

/// Creates the filter's context; called once at load with the load context.
pub fn init(ctx: &redis_module::Context) {
    if let Some(detached) = api!(RedisModule_GetDetachedThreadSafeContext) {
        // SAFETY: `ctx` is the load context; the detached context lives as long as
        // the process (the module cannot be unloaded).
        DETACHED.store(unsafe { detached(ctx.ctx) }, Ordering::Release);
    }
}

/// Whether `key` (a filtered command's argument) is absent, or expired, in
/// database 0. When that cannot be told (an API missing), it answers true:
/// `SYNC.READ` then checks with the command's own context, so the answer only
/// costs speed, never correctness.
pub(crate) fn is_missing(key: *mut raw::RedisModuleString) -> bool {
    let ctx = DETACHED.load(Ordering::Acquire);
    let (Some(open), Some(kind), Some(close)) =
        (api!(RedisModule_OpenKey), api!(RedisModule_KeyType), api!(RedisModule_CloseKey))
    else {
        return true;
    };
    if ctx.is_null() || key.is_null() {
        return true;
    }
    // SAFETY: the filter runs on the thread that holds the server; `key` is the
    // filter's argument, alive for the filter call; the key is closed here.
    unsafe {
        let flags = (raw::REDISMODULE_READ | raw::REDISMODULE_OPEN_KEY_NOEFFECTS) as c_int;
        let opened = open(ctx, key, flags);
        let missing = opened.is_null() || kind(opened) == raw::REDISMODULE_KEYTYPE_EMPTY as c_int;
        if !opened.is_null() {
            close(opened);
        }
        missing
    }
}
