//! A module data type that no key ever has, registered only for its auxiliary
//! data: RDB files (snapshots, AOF-rewrite preambles, full resyncs) carry the
//! module's own state that way, outside the keyspace (the journal's logs, the
//! logical stream's position).

use crate::model::guard::Panic;
use redis_module::raw;
use std::os::raw::{c_int, c_void};

/// Why the aux data of an RDB cannot be loaded (the load then fails, as Redis
/// asks of a module that cannot read its data).
#[derive(Debug)]
pub enum AuxError {
    /// The data was written in a layout this module does not read.
    Layout {
        /// Whose data (`journal`, `logical position`).
        what: &'static str,
        /// The layout found.
        found: c_int,
        /// The layout this module reads.
        reads: c_int,
    },
    /// Reading the data failed.
    Read(redis_module::error::Error),
    /// A bug: reading panicked.
    Bug(Panic),
}

impl std::fmt::Display for AuxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuxError::Layout { what, found, reads } => {
                write!(f, "the RDB's {what} has layout {found}; this module reads {reads}")
            }
            AuxError::Read(e) => e.fmt(f),
            AuxError::Bug(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for AuxError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AuxError::Layout { .. } => None,
            AuxError::Read(e) => Some(e),
            AuxError::Bug(e) => Some(e),
        }
    }
}

/// A read's error, for `?` in a loader.
impl From<redis_module::error::Error> for AuxError {
    fn from(e: redis_module::error::Error) -> AuxError {
        AuxError::Read(e)
    }
}

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

#[cfg(test)]
mod tests {
    use super::AuxError;

    #[test]
    fn a_layout_it_cannot_read_says_both_layouts() {
        let e = AuxError::Layout { what: "journal", found: 2, reads: 1 };
        assert_eq!(e.to_string(), "the RDB's journal has layout 2; this module reads 1");
    }
}
