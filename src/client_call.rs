//! Running a write command on a client's behalf (`SYNC.WRITE`, `SYNC.HSET`, the
//! `#` operations): as the client would run it, and with its reply forwarded
//! exactly as Redis gave it.

use crate::intent::Command;
use crate::redis_io::{api, own_writes};
use redis_module::{
    CallOptionResp, CallOptionsBuilder, CallReply, CallResult, Context, RedisError, RedisResult, RedisValue,
};

/// A command's reply, kept as Redis gave it. Converting it into a `RedisValue`
/// would turn bulk strings into status replies (a value holding `\r\n` would break
/// the protocol, and one holding NUL would abort the server), so it is forwarded
/// as it is.
pub struct ClientReply(CallReply<'static>);

impl ClientReply {
    /// The reply as an integer (HSET's count, HINCRBY's new value).
    pub fn integer(&self) -> Option<i64> {
        match &self.0 {
            CallReply::I64(n) => Some(n.to_i64()),
            _ => None,
        }
    }

    /// The reply as bytes: a string (HINCRBYFLOAT's new value) or an integer's text.
    pub fn bytes(&self) -> Option<Vec<u8>> {
        match &self.0 {
            CallReply::String(s) => Some(s.as_bytes().to_vec()),
            CallReply::I64(n) => Some(n.to_i64().to_string().into_bytes()),
            _ => None,
        }
    }

    /// Sends the reply to the calling client unchanged.
    pub fn forward(&self, ctx: &Context) -> RedisResult {
        match (api!(RedisModule_ReplyWithCallReply), self.0.get_raw()) {
            (Some(reply), Some(raw)) => {
                // SAFETY: `ctx` is the live command context and `raw` the reply
                // this value owns, alive for the whole call; Redis copies it.
                unsafe { reply(ctx.ctx, raw) };
                Ok(RedisValue::NoReply)
            }
            _ => Ok(self.integer().map_or(RedisValue::Null, RedisValue::Integer)),
        }
    }
}

/// Runs a write command as the calling client: its ACL is checked, deny-oom
/// commands are refused under `maxmemory`, the write replicates (as itself), and
/// capture ignores the keyspace events it raises (the caller captures it).
pub fn call_as_client(ctx: &Context, command: Command, args: &[&[u8]]) -> Result<ClientReply, RedisError> {
    let mut options = CallOptionsBuilder::new().replicate().errors_as_replies().verify_acl().resp(CallOptionResp::Auto);
    if command.deny_oom() {
        options = options.verify_oom();
    }
    let options = options.build();
    let reply: CallResult = own_writes(|| ctx.call_ext(command.name(), &options, args));
    reply
        .map(ClientReply)
        .map_err(|e| RedisError::String(e.to_utf8_string().unwrap_or_else(|| "ERR unknown error".into())))
}
