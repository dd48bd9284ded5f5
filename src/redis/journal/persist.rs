//! The journal in RDB files: the module's auxiliary data, saved before the
//! keyspace in every RDB Redis writes (`SAVE`, `BGSAVE`, the base of a rewritten
//! AOF, a full resync to a replica, `DEBUG RELOAD`) and loaded back with it. The
//! data type registered for this holds no keys; it exists to carry the aux data.
//! An empty journal writes nothing (`aux_save2`), so an RDB saved with nothing
//! pending loads on a server without the module.
//!
//! A flush of database 0 (`FLUSHALL`, `FLUSHDB`, and the emptying that precedes
//! a full resync or `DEBUG RELOAD`) forgets every log: the data they described
//! is gone, and what is loaded next brings its own journal.

use super::logs;
use crate::model::guard::{catch, guard};
use crate::redis::aux_type;
use crate::redis::redis_io::{config_value, names_config, warn};
use redis_module::native_types::RedisType;
use redis_module::{raw, Context};
use redis_module_macros::config_changed_event_handler;
use std::os::raw::{c_int, c_void};

/// Version of the aux data's layout: a count, then (row key, log) pairs; a
/// count, then (row key, marker id, prefix length) marks.
const ENCODING: i32 = 1;

/// The module's data type, registered at load; it carries the journal's aux data.
pub static JOURNAL_TYPE: RedisType = RedisType::new("pgsync-jl", ENCODING, aux_type::methods(aux_load, aux_save));

/// Writes every log. Runs in the forked child of a `BGSAVE`, or on the main
/// thread for `SAVE`: either way no other thread holds the logs.
extern "C" fn aux_save(rdb: *mut raw::RedisModuleIO, _when: c_int) {
    guard(|| {
        let (count, _) = logs::size();
        if count == 0 {
            return;
        }
        raw::save_unsigned(rdb, count as u64);
        logs::for_each_log(|key, log| {
            raw::save_slice(rdb, key);
            raw::save_slice(rdb, log);
        });
        raw::save_unsigned(rdb, logs::mark_count() as u64);
        logs::for_each_mark(|key, id, len| {
            raw::save_slice(rdb, key);
            raw::save_signed(rdb, id);
            raw::save_unsigned(rdb, len as u64);
        });
    });
}

/// Reads the logs an RDB holds; they replace those in memory.
extern "C" fn aux_load(rdb: *mut raw::RedisModuleIO, encver: c_int, _when: c_int) -> c_int {
    let loaded = catch(|| {
        if encver != ENCODING {
            return Err(aux_type::AuxError::Layout { what: "journal", found: encver, reads: ENCODING });
        }
        let count = raw::load_unsigned(rdb)?;
        let mut entries = Vec::with_capacity(count.min(1 << 20) as usize);
        for _ in 0..count {
            let key = raw::load_string_buffer(rdb)?.as_ref().to_vec();
            let log = raw::load_string_buffer(rdb)?.as_ref().to_vec();
            entries.push((key, log));
        }
        let count = raw::load_unsigned(rdb)?;
        let mut marks = Vec::with_capacity(count.min(1 << 20) as usize);
        for _ in 0..count {
            let key = raw::load_string_buffer(rdb)?.as_ref().to_vec();
            let id = raw::load_signed(rdb)?;
            let len = raw::load_unsigned(rdb)?;
            marks.push((key, id, len as usize));
        }
        logs::replace_all(entries, marks);
        Ok(())
    })
    .unwrap_or_else(|panic| Err(aux_type::AuxError::Bug(panic)));
    match loaded {
        Ok(()) => raw::REDISMODULE_OK as c_int,
        Err(e) => {
            warn(&format!("cannot load the journal from the RDB: {e}"));
            raw::REDISMODULE_ERR as c_int
        }
    }
}

/// At load: subscribes to flushes (see the module docs), and warns if AOF
/// rewrites would leave the journal out.
pub fn watch(ctx: &Context) {
    let event = raw::RedisModuleEvent { id: raw::REDISMODULE_EVENT_FLUSHDB, dataver: 1 };
    raw::subscribe_to_server_event(ctx.ctx, event, Some(on_flush));
    check_preamble(ctx);
}

#[config_changed_event_handler]
fn on_config_changed(ctx: &Context, names: &[&str]) {
    if names_config(names, "aof-use-rdb-preamble") {
        guard(|| check_preamble(ctx));
    }
}

/// A rewritten AOF carries module aux data only in its RDB preamble: without
/// one, a rewrite while changes are pending would drop them from the file.
fn check_preamble(ctx: &Context) {
    if config_value(ctx, "aof-use-rdb-preamble").as_deref() == Some(b"no") {
        warn(PREAMBLE_RISK);
    }
}

/// The warning for `aof-use-rdb-preamble no`.
pub const PREAMBLE_RISK: &str = "aof-use-rdb-preamble is no: an AOF rewrite (BGREWRITEAOF, auto-aof-rewrite) \
     writes no module data, so changes pending at that moment would be missing from the rewritten AOF after a \
     restart; set aof-use-rdb-preamble yes (the default)";

extern "C" fn on_flush(_ctx: *mut raw::RedisModuleCtx, _event: raw::RedisModuleEvent, sub: u64, data: *mut c_void) {
    if sub != raw::REDISMODULE_SUBEVENT_FLUSHDB_START || data.is_null() {
        return;
    }
    // SAFETY: Redis passes a RedisModuleFlushInfo with the flush event.
    let db = unsafe { (*(data as *const raw::RedisModuleFlushInfo)).dbnum };
    // -1: every database. Only database 0 is synced.
    if db == -1 || db == 0 {
        guard(logs::clear);
        // The logical stream's position described the data flushed too.
        guard(crate::redis::cdc_position::on_flush);
    }
}
