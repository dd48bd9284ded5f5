//! Resharding: keys moving between the nodes of a cluster are neither a delete
//! nor a new row, and a row's unsynced change moves with it, exactly once.
//!
//! A row's unsynced change lives in its journal log, in the module's memory
//! (`redis/journal/`). Just before the row's keys leave, the log is written as a
//! key of the row's own slot, so `MIGRATE` carries it to the node that owns the
//! row next, which moves it into its own memory and queues it ([`on_arrival`])
//! and syncs it. The node it left must
//! then forget it, and must never have the row in a batch whose outcome is
//! unknown while the log travels: the receiving node would write the same
//! change again (a `HINCRBY` counted twice, or an older value landing after a
//! newer one). So the command filter routes `MIGRATE` through `SYNC.MIGRATE`
//! ([`migrate`]), which, in the one command and under the Redis lock:
//!
//! 1. widens the keys to whole rows: a row's hash, staging key and log leave
//!    in the same `MIGRATE` (else a write redirected to the new node between two
//!    `MIGRATE`s would start a log there, and the old log would then collide);
//! 2. holds back, this time, every key of a row that is in a batch being
//!    written; `redis-cli --cluster reshard` (and `rebalance`) ask for the slot's
//!    keys again until none is left, and by then the batch has settled, leaving
//!    in the log only what was written since;
//! 3. takes the other rows' changes out of the queue before the keys leave
//!    (workers take batches without the Redis lock), runs `MIGRATE`, and puts
//!    back the changes of rows whose log is still here (`MIGRATE` failed);
//!    clients waiting in `SYNC.HSET` for a row that left are told so.
//!
//! The node's own dead-letter list, when its slot leaves, is merged into the
//! list under the node's next home tag instead (`deadletter::absorb`).
//!
//! `MIGRATE` deletes the keys here (a `del` event, which capture never takes for
//! a row delete: DEL and UNLINK reach it as `SYNC.DELETE`), and the new node
//! restores them with `RESTORE-ASKING`, which capture does not take for a write.

use crate::model::mapping::Mode;
use crate::model::migrate_args::MigrateArgs;
use crate::model::queue::{HandOff, Pending, RowKey};
use crate::model::row_id::check_id;
use crate::pipeline::runtime::{self, Runtime};
use crate::redis::client_call::ClientReply;
use crate::redis::cluster;
use crate::redis::deadletter;
use crate::redis::journal;
use crate::redis::redis_io::warn;
use crate::redis::replies;
use crate::redis::waiters;
use crate::sources::kafka::apply as kafka_apply;
use redis_module::{CallOptionResp, CallOptionsBuilder, CallResult, Context, RedisResult, RedisValue};
use std::collections::HashSet;

/// A row's keys on this node.
struct RowUnit {
    row: RowKey,
    /// Its hash and staging key (those that exist here).
    data: Vec<Vec<u8>>,
    /// The keys (hash, staging key) whose journal log is here.
    logs: Vec<Vec<u8>>,
}

/// The row a key belongs to (its hash, staging key or log), with its keys here.
fn unit_of(ctx: &Context, rt: &Runtime, key: &[u8]) -> Option<RowUnit> {
    let row_key = journal::row_key_of(key).filter(|_| journal::is_log_key(key)).unwrap_or(key);
    let resolved = rt.mappings.resolve(row_key)?;
    let id = check_id(resolved.id).ok()?.to_string();
    let m = rt.mapping(resolved.mapping).def;
    let mut names = vec![m.main_key(&id).into_bytes()];
    if m.mode == Mode::WriteThrough {
        names.push(m.temp_key(&id).into_bytes());
    }
    let logs = names.iter().filter(|name| journal::has_log(name)).cloned().collect();
    let data = names.into_iter().filter(|name| cluster::key_exists(ctx, name)).collect();
    Some(RowUnit { row: RowKey { mapping: resolved.mapping, id: id.into() }, data, logs })
}

/// A row whose change was taken out of the queue for this `MIGRATE`.
struct Handed {
    row: RowKey,
    /// The keys its logs were written to, for `MIGRATE` to carry.
    logs: Vec<Vec<u8>>,
    entry: Option<Pending>,
}

/// `SYNC.MIGRATE MIGRATE ...`: `MIGRATE` as the client sent it, with the keys
/// widened to whole rows and rows in flight held back; see the module docs.
pub fn migrate(ctx: &Context, argv: &[Vec<u8>]) -> RedisResult {
    let rt = runtime::get().filter(|rt| !rt.is_replica());
    let (Some(rt), Some(args)) = (rt, MigrateArgs::parse(argv)) else {
        return call_migrate(ctx, argv);
    };
    let mut keys: Vec<Vec<u8>> = Vec::new();
    let mut listed: HashSet<Vec<u8>> = HashSet::new();
    let mut rows: HashSet<RowKey> = HashSet::new();
    let mut handed: Vec<Handed> = Vec::new();
    let mut add = |key: Vec<u8>| {
        if listed.insert(key.clone()) {
            keys.push(key);
        }
    };
    for key in &args.keys {
        // The node's dead letters stay with it (under its new home tag) while it
        // keeps a slot of its own.
        if !args.copy && deadletter::is_deadletter_key(key) && deadletter::absorb(ctx, rt.drop_counters(), key) {
            continue;
        }
        // So do its Kafka offsets.
        if !args.copy && kafka_apply::is_offset_key(key) && kafka_apply::absorb_offset(ctx, key) {
            continue;
        }
        let Some(unit) = unit_of(ctx, rt, key) else {
            // A COPY leaves the rows here: their logs stay, or two nodes would sync them.
            if !(args.copy && journal::is_log_key(key)) {
                add(key.clone());
            }
            continue;
        };
        if !rows.insert(unit.row.clone()) {
            continue;
        }
        if args.copy || unit.logs.is_empty() {
            unit.data.into_iter().for_each(&mut add);
            continue;
        }
        match rt.queue().hand_off(&unit.row) {
            HandOff::InFlight => continue,
            HandOff::Taken(entry) => {
                let logs: Vec<Vec<u8>> = unit.logs.iter().filter_map(|key| journal::to_key(ctx, key)).collect();
                unit.data.into_iter().chain(logs.iter().cloned()).for_each(&mut add);
                handed.push(Handed { row: unit.row, logs, entry });
            }
        }
    }
    let reply = if keys.is_empty() {
        // As MIGRATE replies when none of its keys is here; the caller asks again.
        Ok(RedisValue::SimpleStringStatic("NOKEY"))
    } else {
        call_migrate(ctx, &args.with_keys(&keys))
    };
    for Handed { row, logs, entry } in handed {
        // A log `MIGRATE` did not carry goes back into memory.
        let left: Vec<&Vec<u8>> = logs.iter().filter(|log| cluster::key_exists(ctx, log)).collect();
        left.iter().for_each(|log| {
            journal::from_key(ctx, log);
        });
        let stayed = !left.is_empty();
        match (stayed, entry) {
            (true, Some(entry)) => rt.queue().take_back(row, entry),
            // Not queued yet (the journal's recovery runs): the recovery finds it.
            (true, None) => {}
            (false, _) => waiters::fail(&row, u64::MAX, replies::MOVED_AWAY),
        }
    }
    waiters::settle_waits(rt.queue());
    reply
}

/// Runs `MIGRATE` as the calling client (its ACL; the `DEL` of the moved keys
/// replicated) and forwards its reply.
fn call_migrate(ctx: &Context, argv: &[Vec<u8>]) -> RedisResult {
    let options =
        CallOptionsBuilder::new().replicate().errors_as_replies().verify_acl().resp(CallOptionResp::Auto).build();
    let args: Vec<&[u8]> = argv.iter().map(Vec::as_slice).collect();
    let reply: CallResult = ctx.call_ext("MIGRATE", &options, args.as_slice());
    match reply {
        Ok(reply) => ClientReply::Called(reply).forward(ctx),
        Err(e) => Err(replies::from_call(e.to_utf8_string(), "MIGRATE failed")),
    }
}

/// A key restored by `RESTORE-ASKING` (a `MIGRATE` from another node): a row's
/// hash is not a new row, nothing is captured; a row's log is moved into memory
/// and queued, since this node owns the row and its unsynced change now.
pub fn on_arrival(ctx: &Context, key: &[u8]) {
    if !journal::is_log_key(key) {
        return;
    }
    let Some(rt) = runtime::get().filter(|rt| !rt.is_replica()) else { return };
    let key = key.to_vec();
    // Reading and (for a log naming no row) deleting keys is unsafe inside a
    // keyspace callback; a post-notification job runs in the same command.
    let scheduled = ctx.add_post_notification_job(move |ctx| {
        crate::model::guard::guard(|| crate::pipeline::dirty_set::recovery::adopt(ctx, &rt.dirty, &key));
    });
    if scheduled == redis_module::Status::Err {
        warn("could not schedule the queueing of a journal log that arrived by MIGRATE");
    }
}
