//! ACL checks of the `SYNC.*` commands. Redis checks a command's categories and
//! the keys it declares; ours touch keys they derive from their arguments and the
//! mappings (the staging key, the dead-letter hash, the rows of its entries, every
//! key under a prefix), so each command checks those here against the caller's
//! user, as if the caller had touched them with ordinary commands. A refusal is a
//! `NOPERM` error and an `ACL LOG` entry, like Redis's own.

pub mod rules;

pub use rules::Access;

use crate::redis::redis_io::api;
use redis_module::{raw, Context, RedisError, RedisString};
use std::ptr::{self, NonNull};

/// The ACL user of the client running the current command, released on drop.
pub struct Caller {
    user: NonNull<raw::RedisModuleUser>,
}

impl Caller {
    /// The user of the client that called the current command.
    pub fn of(ctx: &Context) -> Result<Caller, RedisError> {
        let refused = || RedisError::Str("NOPERM the calling user cannot be looked up");
        let lookup = api!(RedisModule_GetModuleUserFromUserName).ok_or_else(refused)?;
        let name = ctx.get_current_user();
        // SAFETY: `name` is a live string for the duration of the call; the user
        // returned is ours to free (see Drop).
        let user = unsafe { lookup(name.inner) };
        NonNull::new(user).map(|user| Caller { user }).ok_or_else(refused)
    }

    /// Whether the user may read (or write) `key`.
    pub fn may(&self, ctx: &Context, key: &[u8], access: Access) -> bool {
        let Some(check) = api!(RedisModule_ACLCheckKeyPermissions) else {
            return false;
        };
        let key = crate::redis::redis_io::string(ctx, key);
        // SAFETY: the user and the string are alive for the call.
        unsafe { check(self.user.as_ptr(), key.inner, key_flags(access)) == raw::REDISMODULE_OK as i32 }
    }

    /// `Ok` when the user may read (or write) `key`; else a `NOPERM` error.
    pub fn check(&self, ctx: &Context, key: &[u8], access: Access) -> Result<(), RedisError> {
        match self.may(ctx, key, access) {
            true => Ok(()),
            false => Err(self.refuse(ctx, key, access)),
        }
    }

    /// `Ok` when the user may read (or write) every key that starts with `prefix`;
    /// else a `NOPERM` error naming `what` needs it.
    pub fn check_prefix(&self, ctx: &Context, prefix: &[u8], access: Access, what: &str) -> Result<(), RedisError> {
        if self.may_prefix(ctx, prefix, access) {
            return Ok(());
        }
        let pattern = [prefix, b"*"].concat();
        self.log_refusal(ctx, &pattern);
        Err(RedisError::String(format!("{}: {what}", refusal(&pattern, access))))
    }

    /// `Ok` when the user may run `argv` (a command's name and arguments) as a
    /// client would; else the `NOPERM` error Redis gives, logged in `ACL LOG`.
    pub fn check_command(&self, ctx: &Context, argv: &[RedisString]) -> Result<(), RedisError> {
        let Some(check) = api!(RedisModule_ACLCheckCommandPermissions) else {
            return Ok(());
        };
        // Checked on every routed write: a short command's strings go on the stack.
        let mut short = [ptr::null_mut(); 8];
        let mut long = Vec::new();
        let ptrs: &mut [*mut raw::RedisModuleString] = match short.get_mut(..argv.len()) {
            Some(short) => short,
            None => {
                long.resize(argv.len(), ptr::null_mut());
                &mut long
            }
        };
        ptrs.iter_mut().zip(argv).for_each(|(p, a)| *p = a.inner);
        // SAFETY: the user and the strings are alive for the call.
        let allowed =
            unsafe { check(self.user.as_ptr(), ptrs.as_mut_ptr(), ptrs.len() as i32) } == raw::REDISMODULE_OK as i32;
        if allowed {
            return Ok(());
        }
        // Logged and named as Redis names its own refusals: the command in lower case.
        let name = argv.first().map(|a| a.to_string_lossy().to_lowercase()).unwrap_or_default();
        if let Some(add) = api!(RedisModule_ACLAddLogEntry) {
            let object = crate::redis::redis_io::string(ctx, name.as_bytes());
            // SAFETY: the context, user and string are alive for the call.
            unsafe {
                add(
                    ctx.ctx,
                    self.user.as_ptr(),
                    object.inner,
                    raw::RedisModuleACLLogEntryReason_REDISMODULE_ACL_LOG_CMD,
                )
            };
        }
        Err(RedisError::String(format!("NOPERM User has no permissions to run the '{name}' command")))
    }

    /// The `NOPERM` error for `key` (a key, or a pattern of keys), logged in
    /// `ACL LOG` as Redis logs its own refusals.
    pub fn refuse(&self, ctx: &Context, key: &[u8], access: Access) -> RedisError {
        self.log_refusal(ctx, key);
        RedisError::String(refusal(key, access))
    }

    /// Whether the user may read (or write) every key that starts with `prefix`.
    pub fn may_prefix(&self, ctx: &Context, prefix: &[u8], access: Access) -> bool {
        let prefix_string = crate::redis::redis_io::string(ctx, prefix);
        if let Some(check) = api!(RedisModule_ACLCheckKeyPrefixPermissions) {
            // SAFETY: the user and the string are alive for the call.
            return unsafe {
                check(self.user.as_ptr(), prefix_string.inner, key_flags(access)) == raw::REDISMODULE_OK as i32
            };
        }
        // Servers without the prefix check (Valkey 8, Redis < 8.0): read the user's
        // rules and match their patterns the way Redis 8 does.
        let Some(describe) = api!(RedisModule_GetModuleUserACLString) else {
            return false;
        };
        // SAFETY: the user is alive; the returned string has no context and is
        // freed by RedisString's Drop.
        let rules = RedisString::from_redis_module_string(ptr::null_mut(), unsafe { describe(self.user.as_ptr()) });
        !rules.inner.is_null() && rules::root_covers_prefix(&rules.to_string_lossy(), prefix, access)
    }

    /// Adds an `ACL LOG` entry for a refused key, as Redis does for its own refusals.
    fn log_refusal(&self, ctx: &Context, key: &[u8]) {
        let Some(add) = api!(RedisModule_ACLAddLogEntry) else {
            return;
        };
        let object = crate::redis::redis_io::string(ctx, key);
        // SAFETY: the context, user and string are alive for the call.
        unsafe {
            add(ctx.ctx, self.user.as_ptr(), object.inner, raw::RedisModuleACLLogEntryReason_REDISMODULE_ACL_LOG_KEY)
        };
    }
}

impl Drop for Caller {
    fn drop(&mut self) {
        if let Some(free) = api!(RedisModule_FreeModuleUser) {
            // SAFETY: the user came from GetModuleUserFromUserName and is freed once.
            unsafe { free(self.user.as_ptr()) };
        }
    }
}

/// The key-spec flags Redis maps to read or write permission.
fn key_flags(access: Access) -> i32 {
    let flags = match access {
        Access::Read => raw::REDISMODULE_CMD_KEY_ACCESS,
        Access::Write => {
            raw::REDISMODULE_CMD_KEY_UPDATE | raw::REDISMODULE_CMD_KEY_INSERT | raw::REDISMODULE_CMD_KEY_DELETE
        }
    };
    flags as i32
}

/// The text of a `NOPERM` error for `key`.
fn refusal(key: &[u8], access: Access) -> String {
    let verb = match access {
        Access::Read => "read",
        Access::Write => "write",
    };
    format!("NOPERM No permissions to {verb} '{}'", String::from_utf8_lossy(key))
}
