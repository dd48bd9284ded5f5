//! `CLUSTER GETKEYSINSLOT` for a reshard that moves pending changes too.
//!
//! `redis-cli --cluster reshard` (and `rebalance`, and most tools) move a slot
//! by asking its node for the slot's keys until none is left, and `MIGRATE`
//! what it lists. A row whose change is pending but that has no key here (a
//! pending `DEL`, an evicted or expired key) has its change only in the
//! journal's memory, which the server cannot list, so the change would stay
//! behind while the row's next writes go to the new owner, and the two nodes
//! could reach Postgres in either order. The command filter therefore routes
//! `CLUSTER GETKEYSINSLOT` here: the server's own answer, completed (up to the
//! count asked for) with the journal-key name of each such row. `MIGRATE` of
//! that name goes through `SYNC.MIGRATE`, which writes the log as that key
//! just before it leaves (`migration.rs`); once it has left, the name is no
//! longer listed, and the tool's loop ends as usual.

use crate::model::row_id::check_id;
use crate::pipeline::runtime;
use crate::redis::client_call::ClientReply;
use crate::redis::cluster;
use crate::redis::journal;
use crate::redis::replies;
use redis_module::{CallOptionResp, CallOptionsBuilder, CallReply, CallResult, Context, RedisResult, RedisValue};

/// `SYNC.KEYSINSLOT CLUSTER GETKEYSINSLOT <slot> <count>`; see the module docs.
pub fn keys_in_slot(ctx: &Context, argv: &[Vec<u8>]) -> RedisResult {
    let options = CallOptionsBuilder::new().errors_as_replies().verify_acl().resp(CallOptionResp::Auto).build();
    let args: Vec<&[u8]> = argv.iter().skip(1).map(Vec::as_slice).collect();
    let reply: CallResult<'static> = ctx.call_ext("CLUSTER", &options, args.as_slice());
    let keys = match &reply {
        Ok(CallReply::Array(keys)) => keys,
        _ => return forward(ctx, reply),
    };
    let (Some(slot), Some(count)) = (number(argv.get(2)), number(argv.get(3))) else {
        return forward(ctx, reply);
    };
    let Some(rt) = runtime::get().filter(|rt| !rt.is_replica()) else {
        return forward(ctx, reply);
    };
    let mut listed: Vec<Vec<u8>> = keys
        .iter()
        .filter_map(|key| match key {
            Ok(CallReply::String(s)) => Some(s.as_bytes().to_vec()),
            _ => None,
        })
        .collect();
    let Ok(slot) = u16::try_from(slot) else { return forward(ctx, reply) };
    let room = usize::try_from(count).unwrap_or(0).saturating_sub(listed.len());
    // Only rows SYNC.MIGRATE can resolve: a name it could not move would be
    // listed again and again, and the tool's loop would never end.
    let moving = journal::logs::keys_in_slot(slot)
        .into_iter()
        .filter(|key| rt.mappings.resolve(key).is_some_and(|r| check_id(r.id).is_ok()))
        .filter(|key| !cluster::key_exists(ctx, key))
        .map(|key| journal::key_name(ctx, &key))
        .filter(|name| !listed.contains(name))
        .take(room)
        .collect::<Vec<_>>();
    listed.extend(moving);
    Ok(RedisValue::Array(listed.into_iter().map(RedisValue::StringBuffer).collect()))
}

fn number(arg: Option<&Vec<u8>>) -> Option<i64> {
    std::str::from_utf8(arg?).ok()?.parse().ok()
}

fn forward(ctx: &Context, reply: CallResult<'static>) -> RedisResult {
    match reply {
        Ok(reply) => ClientReply::Called(reply).forward(ctx),
        Err(e) => Err(replies::from_call(e.to_utf8_string(), "CLUSTER failed")),
    }
}
