//! A client blocked by a module command, through the raw API, because the
//! `redis-module` crate's `BlockedClient` has no timeout and no disconnect
//! callback. Redis calls back here when the deadline passes or the client goes
//! away; the [`Answer`] type of the blocked client decides what happens then
//! ([`crate::redis::waiters`] for `SYNC.HSET`/`SYNC.WAIT`, read-through for
//! loads). Redis frees the handle once `RM_UnblockClient` was called on it,
//! which happens exactly once per client: when it is answered, at its deadline,
//! or when it disconnects.

use crate::model::guard;
use crate::redis::redis_io::api;
use crate::redis::replies;
use crate::redis::waiters;
use redis_module::raw::{RedisModuleBlockedClient, RedisModuleCtx, RedisModuleString, REDISMODULE_OK};
use redis_module::{decode_args, Context, RedisError, RedisResult, RedisString, RedisValue};
use std::ffi::{c_int, c_void};
use std::marker::PhantomData;
use std::time::Duration;

/// What a blocked client gets: built on any thread, sent on the main thread.
pub trait Answer: Send + 'static {
    /// Replies to the client; `argv` is the command it blocked in.
    fn send(&self, ctx: &Context, argv: &[RedisString]);
    /// Replies to a client whose deadline passed (or that `CLIENT UNBLOCK`
    /// freed) and forgets it; `id` is [`Blocked::id`].
    fn timed_out(id: usize, ctx: &Context, argv: &[RedisString]);
    /// Forgets a client that went away before it was answered.
    fn disconnected(id: usize);
}

/// What a `SYNC.HSET`, `SYNC.JSONSET` or `SYNC.WAIT` client is answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// An integer reply.
    Integer(i64),
    /// `+OK` (`SYNC.JSONSET`, as `JSON.SET` replies).
    Ok,
    /// An error reply, with its code (`ERR ...`).
    Error(String),
}

impl From<Reply> for RedisResult {
    fn from(reply: Reply) -> RedisResult {
        match reply {
            Reply::Integer(n) => Ok(RedisValue::Integer(n)),
            Reply::Ok => Ok(RedisValue::SimpleStringStatic("OK")),
            Reply::Error(e) => Err(RedisError::String(e)),
        }
    }
}

impl Answer for Reply {
    fn send(&self, ctx: &Context, _argv: &[RedisString]) {
        ctx.reply(self.clone().into());
    }

    fn timed_out(id: usize, ctx: &Context, _argv: &[RedisString]) {
        ctx.reply(waiters::timed_out(id).into());
    }

    fn disconnected(id: usize) {
        waiters::disconnected(id);
    }
}

/// A client blocked until [`Blocked::reply`]; dropping it unblocks the client
/// without a reply (for a client that is gone or was answered by its timeout).
pub struct Blocked<A: Answer = Reply>(*mut RedisModuleBlockedClient, PhantomData<A>);

// The handle is an opaque pointer that Redis allows to be unblocked from any thread.
unsafe impl<A: Answer> Send for Blocked<A> {}

impl<A: Answer> Blocked<A> {
    /// Blocks the client running the current command, for at most `timeout`
    /// (`None`: until answered). At the deadline Redis calls
    /// [`Answer::timed_out`]; when the client disconnects, [`Answer::disconnected`].
    pub fn new(ctx: &Context, timeout: Option<Duration>) -> Result<Blocked<A>, RedisError> {
        let (Some(block), Some(on_disconnect)) =
            (api!(RedisModule_BlockClient), api!(RedisModule_SetDisconnectCallback))
        else {
            return Err(replies::no_blocking_api());
        };
        // 0 means no deadline to Redis; a timeout rounds up to at least 1 ms.
        let ms = timeout.map_or(0, |t| i64::try_from(t.as_millis()).unwrap_or(i64::MAX).max(1));
        // SAFETY: `ctx` is the live context of the command being run on the main
        // thread; the callbacks are `extern "C"` functions of this module, which
        // cannot be unloaded.
        let handle = unsafe { block(ctx.ctx, Some(on_reply::<A>), Some(on_timeout::<A>), Some(free_reply::<A>), ms) };
        if handle.is_null() {
            return Err(replies::cannot_block());
        }
        // SAFETY: `handle` was just returned by RM_BlockClient and is not unblocked yet.
        unsafe { on_disconnect(handle, Some(on_disconnected::<A>)) };
        Ok(Blocked(handle, PhantomData))
    }

    /// Identifies the client in the timeout and disconnect callbacks.
    pub fn id(&self) -> usize {
        self.0 as usize
    }

    /// Answers the client with `reply` (sent by the main thread) and unblocks it.
    pub fn reply(self, answer: A) {
        self.unblock(Box::into_raw(Box::new(answer)).cast());
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

impl<A: Answer> Drop for Blocked<A> {
    fn drop(&mut self) {
        Blocked::<A>(self.0, PhantomData).unblock(std::ptr::null_mut());
    }
}

/// The answer a client was unblocked with, when it is still connected.
extern "C" fn on_reply<A: Answer>(ctx: *mut RedisModuleCtx, argv: *mut *mut RedisModuleString, argc: c_int) -> c_int {
    let context = Context::new(ctx);
    let sent = guard::catch(|| {
        let privdata = api!(RedisModule_GetBlockedClientPrivateData).map_or(std::ptr::null_mut(), |get| {
            // SAFETY: `ctx` is the reply context Redis passes to this callback.
            unsafe { get(ctx) }
        });
        // SAFETY: the only privdata ever passed to RM_UnblockClient of a
        // `Blocked<A>` is a `Box<A>` (or null); Redis keeps it alive until `free_reply`.
        match unsafe { privdata.cast::<A>().as_ref() } {
            Some(answer) => answer.send(&context, &decode_args(ctx, argv, argc)),
            None => {
                context.reply(Err(replies::internal("no reply")));
            }
        }
    });
    if let Err(panic) = sent {
        context.reply(Err(RedisError::String(replies::internal_text(&panic.0))));
    }
    REDISMODULE_OK as c_int
}

/// Frees the answer handed to RM_UnblockClient, whether or not it was sent.
extern "C" fn free_reply<A: Answer>(_ctx: *mut RedisModuleCtx, privdata: *mut c_void) {
    if !privdata.is_null() {
        // SAFETY: see `on_reply`; Redis calls this once per privdata.
        drop(unsafe { Box::from_raw(privdata.cast::<A>()) });
    }
}

/// The client's deadline passed (or `CLIENT UNBLOCK` asked): reply now.
extern "C" fn on_timeout<A: Answer>(ctx: *mut RedisModuleCtx, argv: *mut *mut RedisModuleString, argc: c_int) -> c_int {
    let handle = api!(RedisModule_GetBlockedClientHandle).map_or(std::ptr::null_mut(), |get| {
        // SAFETY: `ctx` is the timeout context Redis passes to this callback.
        unsafe { get(ctx) }
    });
    let context = Context::new(ctx);
    let sent = guard::catch(|| A::timed_out(handle as usize, &context, &decode_args(ctx, argv, argc)));
    if let Err(panic) = sent {
        context.reply(Err(RedisError::String(replies::internal_text(&panic.0))));
    }
    REDISMODULE_OK as c_int
}

/// The client went away before it was answered.
extern "C" fn on_disconnected<A: Answer>(_ctx: *mut RedisModuleCtx, handle: *mut RedisModuleBlockedClient) {
    guard::guard(|| A::disconnected(handle as usize));
}
