//! A Redis key opened with the key API, for hash writes without a command call
//! (`SYNC.WRITE`'s common commands, rows read from Postgres).

use crate::redis::redis_io::api;
use crate::redis::replies;
use redis_module::{raw, Context, RedisError, RedisString};
use std::os::raw::c_int;
use std::ptr;

/// A key open for writing, closed on drop.
pub struct Key(*mut raw::RedisModuleKey);

impl Key {
    /// Whether the key holds a hash, or nothing yet.
    pub fn is_hash_or_empty(&self) -> bool {
        [raw::REDISMODULE_KEYTYPE_EMPTY, raw::REDISMODULE_KEYTYPE_HASH].contains(&self.kind())
    }

    /// Makes the key expire at `at_ms` (Unix time in ms); false when there is no
    /// key to expire.
    pub fn expire_at(&self, at_ms: i64) -> bool {
        let (Some(expire), false) = (api!(RedisModule_SetAbsExpire), self.kind() == raw::REDISMODULE_KEYTYPE_EMPTY)
        else {
            return false;
        };
        // SAFETY: the key is open for writing.
        unsafe { expire(self.0, at_ms) == raw::REDISMODULE_OK as c_int }
    }

    /// Deletes the key (`unlink`: its value freed in the background, as
    /// `UNLINK` does); true when it held something.
    pub fn delete(&self, unlink: bool) -> bool {
        let remove = if unlink { api!(RedisModule_UnlinkKey) } else { api!(RedisModule_DeleteKey) };
        let (Some(remove), false) = (remove, self.kind() == raw::REDISMODULE_KEYTYPE_EMPTY) else {
            return false;
        };
        // SAFETY: the key is open for writing.
        unsafe { remove(self.0) == raw::REDISMODULE_OK as c_int }
    }

    /// Opens `name` for reading and writing.
    pub fn open(ctx: &Context, name: &RedisString) -> Result<Key, RedisError> {
        let open = api!(RedisModule_OpenKey).ok_or_else(replies::no_key_api)?;
        // SAFETY: a live context and key name; closed on drop.
        let key = unsafe { open(ctx.ctx, name.inner, (raw::REDISMODULE_READ | raw::REDISMODULE_WRITE) as c_int) };
        if key.is_null() {
            return Err(replies::cannot_open_key());
        }
        Ok(Key(key))
    }

    /// The key's type (`REDISMODULE_KEYTYPE_*`).
    pub fn kind(&self) -> isize {
        // SAFETY: the key is open.
        api!(RedisModule_KeyType).map_or(raw::REDISMODULE_KEYTYPE_EMPTY, |t| unsafe { t(self.0) } as isize)
    }

    /// The field's value, if the hash holds it.
    pub fn get(&self, field: &RedisString) -> Option<RedisString> {
        let get = api!(RedisModule_HashGet)?;
        let mut value: *mut raw::RedisModuleString = ptr::null_mut();
        // SAFETY: the key is open; the list ends with NULL; the value returned is
        // ours to free (RedisString's Drop), since no auto memory is on.
        unsafe { get(self.0, raw::REDISMODULE_HASH_NONE as c_int, field.inner, &mut value, ptr::null_mut::<c_int>()) };
        (!value.is_null()).then(|| RedisString::from_redis_module_string(ptr::null_mut(), value))
    }

    /// Sets (`Some`) or deletes (`None`) a field; true when it existed before.
    pub fn set(&self, field: &RedisString, value: Option<&RedisString>) -> bool {
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
