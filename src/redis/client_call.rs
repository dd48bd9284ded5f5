//! Running a write command on a client's behalf (`SYNC.WRITE`, `SYNC.HSET`, the
//! `#` operations): as the client would run it, and with its reply forwarded
//! exactly as Redis gave it.

use crate::model::intent::Command;
use crate::redis::direct_write;
use crate::redis::redis_io::{api, own_writes, string};
use crate::redis::replies;
use redis_module::{
    CallOptionResp, CallOptionsBuilder, CallReply, CallResult, Context, RedisError, RedisResult, RedisString,
    RedisValue,
};

/// A command's reply, kept as Redis gave it. Converting a command call's reply
/// into a `RedisValue` would turn bulk strings into status replies (a value
/// holding `\r\n` would break the protocol, and one holding NUL would abort the
/// server), so it is forwarded as it is.
pub enum ClientReply {
    /// The reply of a command call.
    Called(CallReply<'static>),
    /// The reply of a write carried out with the key API (`direct_write`).
    Direct(RedisValue),
}

impl ClientReply {
    /// The reply as an integer (HSET's count, HINCRBY's new value).
    pub fn integer(&self) -> Option<i64> {
        match self {
            ClientReply::Called(CallReply::I64(n)) => Some(n.to_i64()),
            ClientReply::Direct(RedisValue::Integer(n)) => Some(*n),
            _ => None,
        }
    }

    /// The reply as bytes: a string (HINCRBYFLOAT's new value) or an integer's text.
    pub fn bytes(&self) -> Option<Vec<u8>> {
        match self {
            ClientReply::Called(CallReply::String(s)) => Some(s.as_bytes().to_vec()),
            _ => self.integer().map(|n| n.to_string().into_bytes()),
        }
    }

    /// Sends the reply to the calling client unchanged.
    pub fn forward(&self, ctx: &Context) -> RedisResult {
        let called = match self {
            ClientReply::Direct(value) => return Ok(value.clone()),
            ClientReply::Called(reply) => reply,
        };
        match (api!(RedisModule_ReplyWithCallReply), called.get_raw()) {
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

/// Runs `argv` (a write command's name and arguments) as the calling client: with
/// the key API when `direct_write` handles the command, else as a command call.
pub fn run_as_client(ctx: &Context, command: Command, argv: &[RedisString]) -> Result<ClientReply, RedisError> {
    if direct_write::handles(command) {
        return direct_write::run(ctx, command, argv).map(ClientReply::Direct);
    }
    let args: Vec<&[u8]> = argv[1..].iter().map(|a| a.as_slice()).collect();
    call_as_client(ctx, command, &args)
}

/// The argument vector of a command the module runs for the client: its name,
/// then `args`, then `more` (arguments the client sent, already strings).
pub fn client_argv(ctx: &Context, name: &[u8], args: &[&[u8]], more: &[RedisString]) -> Vec<RedisString> {
    let given = more.iter().map(|a| RedisString::create_from_slice(ctx.ctx, a.as_slice()));
    std::iter::once(name).chain(args.iter().copied()).map(|a| string(ctx, a)).chain(given).collect()
}

/// Runs a write command as the calling client: its ACL is checked, deny-oom
/// commands are refused under `maxmemory`, the write replicates (as itself), and
/// capture ignores the keyspace events it raises (the caller captures it).
fn call_as_client(ctx: &Context, command: Command, args: &[&[u8]]) -> Result<ClientReply, RedisError> {
    call_named_as_client(ctx, command.name(), command.deny_oom(), args)
}

/// [`call_as_client`] for a command named `name` (another module's, such as
/// RedisJSON's), refused under `maxmemory` when `deny_oom`.
pub fn call_named_as_client(
    ctx: &Context,
    name: &str,
    deny_oom: bool,
    args: &[&[u8]],
) -> Result<ClientReply, RedisError> {
    let mut options = CallOptionsBuilder::new().replicate().errors_as_replies().verify_acl().resp(CallOptionResp::Auto);
    if deny_oom {
        options = options.verify_oom();
    }
    let options = options.build();
    let reply: CallResult = own_writes(|| ctx.call_ext(name, &options, args));
    reply.map(ClientReply::Called).map_err(|e| replies::from_call(e.to_utf8_string(), "unknown error"))
}
