//! `SYNC.CDC SET <lsn> <scope> | DEL`: the logical stream's position as the
//! primary replicated it, run by replicas and by an AOF replay
//! (`redis/cdc_position.rs`). Clients cannot run it: the position is the module's own.

use crate::redis::cdc_position::{self, Position};
use crate::redis::replies;
use redis_module::{Context, ContextFlags, RedisError, RedisResult, RedisString, RedisValue};

/// Applies a replicated position, and passes it on to this server's own
/// replicas and AOF.
pub fn sync_cdc(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    if !ctx.get_flags().intersects(ContextFlags::REPLICATED | ContextFlags::LOADING) {
        return Err(replies::cdc_is_internal());
    }
    let position = match &args[..] {
        [_, op, lsn, scope] if op.as_slice().eq_ignore_ascii_case(b"SET") => {
            let lsn = lsn.try_as_str()?.parse::<u64>().map_err(|_| replies::bad_cdc_position())?;
            Some(Position { lsn, scope: scope.try_as_str()?.to_string() })
        }
        [_, op] if op.as_slice().eq_ignore_ascii_case(b"DEL") => None,
        _ => return Err(RedisError::WrongArity),
    };
    cdc_position::apply_replicated(position);
    ctx.replicate_verbatim();
    Ok(RedisValue::SimpleStringStatic("OK"))
}
