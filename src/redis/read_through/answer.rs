//! What a client that waited for a load is answered, on the main thread: the
//! command run on what Redis holds now (a primary wrote the row, or learned it
//! does not exist, or a writer got there first), the reply built from the rows
//! read (a replica, which writes nothing), or the configured reply to a failed or
//! timed-out load.

use super::loads::{self, Loaded};
use crate::model::mapping::Mappings;
use crate::model::queue::RowKey;
use crate::model::read_command::{ReadCommand, ReadReply};
use crate::redis::blocked::Answer;
use crate::redis::client_call::ClientReply;
use crate::redis::config;
use crate::redis::redis_io::key_exists;
use compact_str::CompactString;
use redis_module::redisvalue::RedisValueKey;
use redis_module::{
    CallOptionResp, CallOptionsBuilder, CallResult, Context, RedisError, RedisResult, RedisString, RedisValue,
};

/// How a waiting client is answered.
pub enum ReadAnswer {
    /// Run the command on what Redis holds now.
    FromRedis,
    /// Answer from the rows read from Postgres (a replica writes nothing); the
    /// command's keys resolve to rows with `mappings`.
    FromRows { mappings: &'static Mappings, rows: Vec<(RowKey, Loaded)> },
    /// The load failed: why.
    Failed(String),
}

impl Answer for ReadAnswer {
    fn send(&self, ctx: &Context, argv: &[RedisString]) {
        let wrapped = argv.get(1..).unwrap_or_default();
        let reply = match self {
            ReadAnswer::FromRedis => run_on_redis(ctx, wrapped),
            ReadAnswer::FromRows { mappings, rows } => from_rows(ctx, mappings, wrapped, rows),
            ReadAnswer::Failed(why) => on_error(ctx, wrapped, why),
        };
        ctx.reply(reply);
    }

    fn timed_out(id: usize, ctx: &Context, argv: &[RedisString]) {
        loads::forget(id);
        let ms = config::millis(&config::READ_THROUGH_TIMEOUT_MS).as_millis();
        let why = format!("Postgres did not answer within {ms} ms (pgsync.read-through-timeout-ms)");
        ctx.reply(on_error(ctx, argv.get(1..).unwrap_or_default(), &why));
    }

    fn disconnected(id: usize) {
        loads::forget(id);
    }
}

/// Runs the read command `wrapped` (its name first) on what Redis holds, with
/// its reply forwarded as Redis gave it. The caller's rights were checked before
/// it blocked, so the call does not check them again.
pub fn run_on_redis(ctx: &Context, wrapped: &[RedisString]) -> RedisResult {
    let Some((name, args)) = wrapped.split_first() else {
        return Err(RedisError::WrongArity);
    };
    let options = CallOptionsBuilder::new().errors_as_replies().resp(CallOptionResp::Auto).build();
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
    let reply: CallResult = ctx.call_ext(name.to_string_lossy().as_str(), &options, args.as_slice());
    match reply {
        Ok(reply) => ClientReply::Called(reply).forward(ctx),
        Err(e) => Err(RedisError::String(e.to_utf8_string().unwrap_or_else(|| "ERR unknown error".into()))),
    }
}

/// The reply to a load that failed or timed out: an error naming `why`, or, with
/// `pgsync.read-through-on-error nil`, the command run on what Redis holds.
fn on_error(ctx: &Context, wrapped: &[RedisString], why: &str) -> RedisResult {
    if config::read_errors_as_nil() {
        return run_on_redis(ctx, wrapped);
    }
    Err(RedisError::String(format!("ERR pgsync read-through: {why}")))
}

/// A replica's reply, built from the rows it read: a key Redis holds by now
/// (its primary wrote it) is answered from Redis.
fn from_rows(ctx: &Context, mappings: &Mappings, wrapped: &[RedisString], rows: &[(RowKey, Loaded)]) -> RedisResult {
    let Some(read) = wrapped.first().and_then(|n| ReadCommand::from_name(n.as_slice())) else {
        return run_on_redis(ctx, wrapped);
    };
    let row_of = |key: &RedisString| {
        let resolved = mappings.resolve(key.as_slice())?;
        let id = std::str::from_utf8(resolved.id).ok()?;
        Some(RowKey { mapping: resolved.mapping, id: CompactString::new(id) })
    };
    if read == ReadCommand::Exists {
        let count = wrapped[1..]
            .iter()
            .filter(|key| key_exists(ctx, key) || row_of(key).is_some_and(|row| loads::row_of(rows, &row).is_some()))
            .count();
        return Ok(RedisValue::Integer(count as i64));
    }
    let Some(key) = wrapped.get(1) else { return run_on_redis(ctx, wrapped) };
    if key_exists(ctx, key) {
        return run_on_redis(ctx, wrapped);
    }
    let row = row_of(key).and_then(|row| loads::row_of(rows, &row));
    let args: Vec<&[u8]> = wrapped[2..].iter().map(|a| a.as_slice()).collect();
    Ok(to_value(read.reply_for_row(row, &args)))
}

fn to_value(reply: ReadReply) -> RedisValue {
    let bulk = |b: Vec<u8>| RedisValue::StringBuffer(b);
    match reply {
        ReadReply::Nil => RedisValue::Null,
        ReadReply::Int(n) => RedisValue::Integer(n),
        ReadReply::Status(s) => RedisValue::SimpleStringStatic(s),
        ReadReply::Bulk(b) => bulk(b),
        ReadReply::Array(items) => {
            RedisValue::Array(items.into_iter().map(|i| i.map_or(RedisValue::Null, bulk)).collect())
        }
        ReadReply::Map(pairs) => {
            RedisValue::OrderedMap(pairs.into_iter().map(|(f, v)| (RedisValueKey::BulkString(f), bulk(v))).collect())
        }
    }
}
