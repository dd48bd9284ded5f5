//! A client blocked by a module command, through the raw API, because the
//! `redis-module` crate's `BlockedClient` has no timeout and no disconnect
//! callback. Redis calls back here when the deadline passes or the client goes
//! away; [`crate::server::waiters`] decides what happens then. Redis frees the handle
//! once `RM_UnblockClient` was called on it, which happens exactly once per
//! client: when it is answered, at its deadline, or when it disconnects.

use crate::model::guard;
use crate::server::redis_io::api;
use crate::server::replies;
use crate::server::waiters;
use redis_module::raw::{RedisModuleBlockedClient, RedisModuleCtx, RedisModuleString, REDISMODULE_OK};
use redis_module::{Context, RedisError, RedisResult, RedisValue};
use std::ffi::{c_int, c_void};
use std::time::Duration;

/// What a blocked client is answered: built on any thread, replied on the main
/// thread (so it holds only owned, thread-safe data).
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// An integer reply.
    Integer(i64),
    /// An error reply, with its code (`ERR ...`).
    Error(String),
}

impl From<Reply> for RedisResult {
    fn from(reply: Reply) -> RedisResult {
        match reply {
            Reply::Integer(n) => Ok(RedisValue::Integer(n)),
            Reply::Error(e) => Err(RedisError::String(e)),
        }
    }
}

/// A client blocked until [`Blocked::reply`]; dropping it unblocks the client
/// without a reply (for a client that is gone or was answered by its timeout).
pub struct Blocked(*mut RedisModuleBlockedClient);

// The handle is an opaque pointer that Redis allows to be unblocked from any thread.
unsafe impl Send for Blocked {}

impl Blocked {
    /// Blocks the client running the current command, for at most `timeout`
    /// (`None`: until answered). At the deadline Redis calls
    /// [`waiters::timed_out`]; when the client disconnects, [`waiters::disconnected`].
    pub fn new(ctx: &Context, timeout: Option<Duration>) -> Result<Blocked, RedisError> {
        let (Some(block), Some(on_disconnect)) =
            (api!(RedisModule_BlockClient), api!(RedisModule_SetDisconnectCallback))
        else {
            return Err(RedisError::Str("ERR this server cannot block clients for modules"));
        };
        // 0 means no deadline to Redis; a timeout rounds up to at least 1 ms.
        let ms = timeout.map_or(0, |t| i64::try_from(t.as_millis()).unwrap_or(i64::MAX).max(1));
        // SAFETY: `ctx` is the live context of the command being run on the main
        // thread; the callbacks are `extern "C"` functions of this module, which
        // cannot be unloaded.
        let handle = unsafe { block(ctx.ctx, Some(on_reply), Some(on_timeout), Some(free_reply), ms) };
        if handle.is_null() {
            return Err(RedisError::Str("ERR cannot block the client"));
        }
        // SAFETY: `handle` was just returned by RM_BlockClient and is not unblocked yet.
        unsafe { on_disconnect(handle, Some(on_disconnected)) };
        Ok(Blocked(handle))
    }

    /// Identifies the client in the timeout and disconnect callbacks.
    pub fn id(&self) -> usize {
        self.0 as usize
    }

    /// Answers the client with `reply` (sent by the main thread) and unblocks it.
    pub fn reply(self, reply: Reply) {
        self.unblock(Box::into_raw(Box::new(reply)).cast());
    }

    fn unblock(self, privdata: *mut c_void) {
        let handle = self.0;
        std::mem::forget(self);
        if let Some(unblock) = api!(RedisModule_UnblockClient) {
            // SAFETY: each `Blocked` owns its handle and unblocks it once (here or
            // on drop); Redis frees `privdata` through `free_reply`.
            unsafe { unblock(handle, privdata) };
        }
    }
}

impl Drop for Blocked {
    fn drop(&mut self) {
        Blocked(self.0).unblock(std::ptr::null_mut());
    }
}

/// The reply a client was unblocked with, when it is still connected.
extern "C" fn on_reply(ctx: *mut RedisModuleCtx, _argv: *mut *mut RedisModuleString, _argc: c_int) -> c_int {
    let reply = guard::catch(|| {
        let privdata = api!(RedisModule_GetBlockedClientPrivateData).map_or(std::ptr::null_mut(), |get| {
            // SAFETY: `ctx` is the reply context Redis passes to this callback.
            unsafe { get(ctx) }
        });
        // SAFETY: the only privdata ever passed to RM_UnblockClient is a
        // `Box<Reply>` (or null); Redis keeps it alive until `free_reply`.
        unsafe { privdata.cast::<Reply>().as_ref() }.cloned()
    });
    let reply = match reply {
        Ok(Some(reply)) => reply,
        Ok(None) => Reply::Error("ERR pgsync internal error: no reply".into()),
        Err(panic) => Reply::Error(replies::internal_text(&panic)),
    };
    Context::new(ctx).reply(reply.into());
    REDISMODULE_OK as c_int
}

/// Frees the reply handed to RM_UnblockClient, whether or not it was sent.
extern "C" fn free_reply(_ctx: *mut RedisModuleCtx, privdata: *mut c_void) {
    if !privdata.is_null() {
        // SAFETY: see `on_reply`; Redis calls this once per privdata.
        drop(unsafe { Box::from_raw(privdata.cast::<Reply>()) });
    }
}

/// The client's deadline passed (or `CLIENT UNBLOCK` asked): reply now.
extern "C" fn on_timeout(ctx: *mut RedisModuleCtx, _argv: *mut *mut RedisModuleString, _argc: c_int) -> c_int {
    let handle = api!(RedisModule_GetBlockedClientHandle).map_or(std::ptr::null_mut(), |get| {
        // SAFETY: `ctx` is the timeout context Redis passes to this callback.
        unsafe { get(ctx) }
    });
    let reply = guard::catch(|| waiters::timed_out(handle as usize))
        .unwrap_or_else(|panic| Reply::Error(replies::internal_text(&panic)));
    Context::new(ctx).reply(reply.into());
    REDISMODULE_OK as c_int
}

/// The client went away before it was answered.
extern "C" fn on_disconnected(_ctx: *mut RedisModuleCtx, handle: *mut RedisModuleBlockedClient) {
    guard::guard(|| waiters::disconnected(handle as usize));
}
