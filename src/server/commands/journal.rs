//! `SYNC.JOURNAL APPEND|SET|DEL key [bytes]`: a change to the journal's logs as
//! the primary replicated it, run by replicas and by an AOF replay
//! (`redis/journal/logs.rs`). Clients cannot run it: a log is the module's own.

use crate::redis::journal::logs::{self, parse_op, Op};
use crate::redis::replies;
use redis_module::{Context, ContextFlags, RedisError, RedisResult, RedisString, RedisValue};

/// Applies a replicated change to the journal, and passes it on to this
/// server's own replicas and AOF.
pub fn sync_journal(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    if !ctx.get_flags().intersects(ContextFlags::REPLICATED | ContextFlags::LOADING) {
        return Err(replies::journal_is_internal());
    }
    let op = args.get(1).and_then(|name| parse_op(name.as_slice()));
    let (op, key, bytes) = match (op, &args[..]) {
        (Some(Op::Del), [_, _, key]) => (Op::Del, key, &[][..]),
        (Some(op @ (Op::Append | Op::Set | Op::Mark)), [_, _, key, bytes]) => (op, key, bytes.as_slice()),
        _ => return Err(RedisError::WrongArity),
    };
    logs::apply_replicated(op, key.as_slice(), bytes);
    ctx.replicate_verbatim();
    Ok(RedisValue::SimpleStringStatic("OK"))
}
