//! Where the logical stream stands, as Redis holds it: the position (LSN) past
//! the last transaction applied, and which slot and tables it belongs to. It is
//! set under the Redis lock in the same step as the rows that transaction
//! produced, replicated with them as `SYNC.CDC SET` (to the AOF and the
//! replicas, so a promoted replica resumes where its primary stopped), and saved
//! in every RDB as the aux data of a key-less type of its own. Clients cannot
//! run `SYNC.CDC` (`server/commands/cdc.rs`): the position is the module's own.

use crate::model::guard::{catch, guard};
use crate::redis::aux_type;
use crate::redis::redis_io::{api, warn};
use redis_module::native_types::RedisType;
use redis_module::{raw, Context};
use std::os::raw::{c_char, c_int};
use std::sync::Mutex;

/// The stored position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// Every transaction that ends before this LSN is applied.
    pub lsn: u64,
    /// The slot and tables the position is for (see `fingerprint`).
    pub scope: String,
}

static POSITION: Mutex<Option<Position>> = Mutex::new(None);

fn slot() -> std::sync::MutexGuard<'static, Option<Position>> {
    POSITION.lock().unwrap_or_else(|p| p.into_inner())
}

/// The position Redis holds, if any.
pub fn get() -> Option<Position> {
    slot().clone()
}

/// What a position is valid for: the slot and the sorted listened tables. A
/// position of another slot, or one that misses a table, cannot resume.
pub fn fingerprint(slot: &str, tables: &[String]) -> String {
    let mut tables = tables.to_vec();
    tables.sort();
    format!("{slot}|{}", tables.join(","))
}

/// Stores `position` (under the Redis lock held by `ctx`) and replicates it.
pub fn store(ctx: &Context, position: Position) {
    replicate(ctx, Some(&position));
    *slot() = Some(position);
}

/// Forgets the position (under the Redis lock): a fresh load starts.
pub fn forget(ctx: &Context) {
    replicate(ctx, None);
    *slot() = None;
}

/// The data it described is gone (a flush of database 0): forget the position.
pub fn on_flush() {
    *slot() = None;
}

/// A change the primary replicated (`SYNC.CDC SET <lsn> <scope>` or `DEL`):
/// `Some(position)` sets it, `None` forgets it.
pub fn apply_replicated(position: Option<Position>) {
    *slot() = position;
}

fn replicate(ctx: &Context, position: Option<&Position>) {
    let Some(replicate) = api!(RedisModule_Replicate) else { return };
    let status = match position {
        Some(p) => {
            let lsn = p.lsn.to_string();
            // SAFETY: the format names a C string then two (pointer, length)
            // buffers, matching the arguments; Redis copies them before returning.
            unsafe {
                replicate(
                    ctx.ctx,
                    c"SYNC.CDC".as_ptr(),
                    c"cbb".as_ptr(),
                    c"SET".as_ptr(),
                    lsn.as_ptr() as *const c_char,
                    lsn.len(),
                    p.scope.as_ptr() as *const c_char,
                    p.scope.len(),
                )
            }
        }
        // SAFETY: the format names one C string, matching the argument.
        None => unsafe { replicate(ctx.ctx, c"SYNC.CDC".as_ptr(), c"c".as_ptr(), c"DEL".as_ptr()) },
    };
    if status != raw::REDISMODULE_OK as c_int {
        warn("cannot replicate the logical stream's position");
    }
}

/// Layout of the aux data: the LSN, then the scope.
const ENCODING: i32 = 1;

/// The key-less type whose aux data carries the position in RDB files.
pub static POSITION_TYPE: RedisType = RedisType::new("pgsync-cd", ENCODING, aux_type::methods(aux_load, aux_save));

/// Writes the position, when there is one (nothing otherwise, so such an RDB
/// loads without the module).
extern "C" fn aux_save(rdb: *mut raw::RedisModuleIO, _when: c_int) {
    guard(|| {
        let Some(p) = get() else { return };
        raw::save_unsigned(rdb, p.lsn);
        raw::save_slice(rdb, p.scope.as_bytes());
    });
}

extern "C" fn aux_load(rdb: *mut raw::RedisModuleIO, encver: c_int, _when: c_int) -> c_int {
    let loaded = catch(|| {
        if encver != ENCODING {
            return Err(aux_type::AuxError::Layout { what: "logical position", found: encver, reads: ENCODING });
        }
        let lsn = raw::load_unsigned(rdb)?;
        let scope = raw::load_string_buffer(rdb)?;
        let scope = String::from_utf8_lossy(scope.as_ref()).into_owned();
        *slot() = Some(Position { lsn, scope });
        Ok(())
    })
    .unwrap_or_else(|panic| Err(aux_type::AuxError::Bug(panic)));
    match loaded {
        Ok(()) => raw::REDISMODULE_OK as c_int,
        Err(e) => {
            warn(&format!("cannot load the logical stream's position from the RDB: {e}"));
            raw::REDISMODULE_ERR as c_int
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fingerprint;

    #[test]
    fn a_position_belongs_to_its_slot_and_tables_in_any_order() {
        let a = fingerprint("pgsync", &["public.b".into(), "public.a".into()]);
        assert_eq!(a, fingerprint("pgsync", &["public.a".into(), "public.b".into()]));
        assert_ne!(a, fingerprint("other", &["public.a".into(), "public.b".into()]));
        assert_ne!(a, fingerprint("pgsync", &["public.a".into()]), "a table added needs a load");
    }
}
