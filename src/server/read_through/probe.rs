//! The command filter's check of whether a key exists, so that a read of a key
//! Redis holds runs as it is, and only a miss goes through `SYNC.READ`. The
//! filter has no context of its own: it looks in the calling client's database
//! through a detached context, without side effects (no expiry, no LRU touch, no
//! keyspace hit or miss counted: the command itself does those).

use crate::server::redis_io::api;
use redis_module::raw;
use std::os::raw::c_int;
use std::sync::atomic::{AtomicPtr, Ordering};

/// The context the filter opens keys with, created once at load.
static DETACHED: AtomicPtr<raw::RedisModuleCtx> = AtomicPtr::new(std::ptr::null_mut());

/// Creates the filter's context; called once at load with the load context.
pub fn init(ctx: &redis_module::Context) {
    if let Some(detached) = api!(RedisModule_GetDetachedThreadSafeContext) {
        // SAFETY: `ctx` is the load context; the detached context lives as long as
        // the process (the module cannot be unloaded).
        DETACHED.store(unsafe { detached(ctx.ctx) }, Ordering::Release);
    }
}

/// Whether `key` is absent (or expired) in the database of the client whose
/// command is being filtered. When that cannot be told (a script's client, an
/// API missing), it answers true: `SYNC.READ` then checks with the command's
/// own context, so the answer only costs speed, never correctness.
pub(crate) fn is_missing(fctx: *mut raw::RedisModuleCommandFilterCtx, key: &[u8]) -> bool {
    let ctx = DETACHED.load(Ordering::Acquire);
    let (
        Some(client_id),
        Some(info_by_id),
        Some(select),
        Some(create),
        Some(free),
        Some(open),
        Some(kind),
        Some(close),
    ) = (
        api!(RedisModule_CommandFilterGetClientId),
        api!(RedisModule_GetClientInfoById),
        api!(RedisModule_SelectDb),
        api!(RedisModule_CreateString),
        api!(RedisModule_FreeString),
        api!(RedisModule_OpenKey),
        api!(RedisModule_KeyType),
        api!(RedisModule_CloseKey),
    )
    else {
        return true;
    };
    if ctx.is_null() {
        return true;
    }
    let mut info = raw::RedisModuleClientInfo { version: 1, flags: 0, id: 0, addr: [0; 46], port: 0, db: 0 };
    // SAFETY: this runs on the main thread inside the filter callback, which holds
    // the server; `fctx` is the live filter context, `info` a version-1 struct,
    // the string is created and freed here, and the key is closed before return.
    unsafe {
        let id = client_id(fctx);
        if info_by_id((&mut info as *mut raw::RedisModuleClientInfo).cast(), id) != raw::REDISMODULE_OK as c_int {
            return true;
        }
        if select(ctx, c_int::from(info.db)) != raw::REDISMODULE_OK as c_int {
            return true;
        }
        let name = create(std::ptr::null_mut(), key.as_ptr().cast(), key.len());
        let flags = (raw::REDISMODULE_READ | raw::REDISMODULE_OPEN_KEY_NOEFFECTS) as c_int;
        let opened = open(ctx, name, flags);
        let missing = opened.is_null() || kind(opened) == raw::REDISMODULE_KEYTYPE_EMPTY as c_int;
        if !opened.is_null() {
            close(opened);
        }
        free(std::ptr::null_mut(), name);
        missing
    }
}
