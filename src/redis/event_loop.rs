//! Waking the server's event loop after a module thread published something.
//! Redis sends a client what a module thread wrote to it (a `PUBLISH` to a
//! subscriber, an `XADD` that unblocks an `XREAD BLOCK`) only when its event
//! loop next runs; an idle server sleeps up to `1000 / hz` ms (100 ms at the
//! default `hz 10`) before it does. A one-shot event (`RM_EventLoopAddOneShot`,
//! safe to call from any thread) wakes it at once. Wake-ups are coalesced: while
//! one is pending, another publish adds nothing.

use crate::redis::redis_io::api;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, Ordering};

static PENDING: AtomicBool = AtomicBool::new(false);

/// Makes the event loop run soon, so that what was just published reaches
/// its subscribers without waiting for the next timer tick.
pub fn wake() {
    if PENDING.swap(true, Ordering::AcqRel) {
        return;
    }
    let Some(add) = api!(RedisModule_EventLoopAddOneShot) else {
        PENDING.store(false, Ordering::Release);
        return;
    };
    // SAFETY: the callback is a plain function that ignores its argument, and
    // Redis documents this call as safe from any thread.
    let status = unsafe { add(Some(woken), std::ptr::null_mut()) };
    if status != redis_module::raw::REDISMODULE_OK as std::os::raw::c_int {
        PENDING.store(false, Ordering::Release);
    }
}

/// Runs on the main thread, in the event loop: being run was the point.
extern "C" fn woken(_: *mut c_void) {
    PENDING.store(false, Ordering::Release);
}
