//! A module data type that no key ever has, registered only for its auxiliary
//! data: RDB files (snapshots, AOF-rewrite preambles, full resyncs) carry the
//! module's own state that way, outside the keyspace (the journal's logs, the
//! logical stream's position).

use redis_module::raw;
use std::os::raw::{c_int, c_void};

/// Saves the aux data (`when` is before or after the keys).
pub type AuxSave = extern "C" fn(rdb: *mut raw::RedisModuleIO, when: c_int);

/// Loads the aux data of encoding version `encver`.
pub type AuxLoad = extern "C" fn(rdb: *mut raw::RedisModuleIO, encver: c_int, when: c_int) -> c_int;

/// The methods of a key-less type whose aux data `aux_save` writes (before the
/// keys) and `aux_load` reads back.
pub const fn methods(aux_load: AuxLoad, aux_save: AuxSave) -> raw::RedisModuleTypeMethods {
    raw::RedisModuleTypeMethods {
        version: raw::REDISMODULE_TYPE_METHOD_VERSION as u64,
        rdb_load: Some(no_key_load),
        rdb_save: Some(no_key_save),
        aof_rewrite: None,
        mem_usage: None,
        digest: None,
        free: Some(no_key_free),
        aux_load: Some(aux_load),
        aux_save: Some(aux_save),
        aux_save_triggers: raw::REDISMODULE_AUX_BEFORE_RDB as c_int,
        free_effort: None,
        unlink: None,
        copy: None,
        defrag: None,
        mem_usage2: None,
        free_effort2: None,
        unlink2: None,
        copy2: None,
        // Called instead of `aux_save` where the server has it: writing nothing
        // when there is nothing to save keeps such an RDB loadable without the module.
        aux_save2: Some(aux_save),
    }
}

/// No key ever has this type; an RDB that claims one is refused.
extern "C" fn no_key_load(_rdb: *mut raw::RedisModuleIO, _encver: c_int) -> *mut c_void {
    std::ptr::null_mut()
}

extern "C" fn no_key_save(_rdb: *mut raw::RedisModuleIO, _value: *mut c_void) {}

extern "C" fn no_key_free(_value: *mut c_void) {}
