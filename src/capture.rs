//! Capture: the keyspace handler that notices writes to mapped keys, and the
//! post-notification job that, inside the same command, reads the staged hash,
//! decodes `#`, queues the change and journals it. Work here is O(size of the hash)
//! and never touches Postgres.

use crate::ack;
use crate::change::{decode_op, Fields, OpTag, RowOp, SyncOp, OP_FIELD};
use crate::journal;
use crate::mapping::{check_id, KeyRole, Mode};
use crate::queue::RowKey;
use crate::redis_io::{call, call_logged, hgetall, is_own_write, own_writes, warn};
use crate::runtime::{self, Runtime};
use crate::stats::MappingStats;
use redis_module::{Context, ContextFlags, NotifyEvent};

/// Keyspace handler for hash events. Writes are unsafe here, so the work is
/// deferred to a post-notification job, which still runs inside the same command.
pub fn on_hash_event(ctx: &Context, _kind: NotifyEvent, _event: &str, key: &[u8]) {
    if is_own_write() {
        return;
    }
    let Some(rt) = runtime::get() else { return };
    // A replica, or a server replaying its AOF, receives the journal entries along
    // with the writes; capturing again would duplicate them.
    let flags = ctx.get_flags();
    if rt.is_replica() || flags.intersects(ContextFlags::LOADING | ContextFlags::REPLICATED) {
        return;
    }
    let Some(resolved) = rt.mappings.resolve(key) else {
        return;
    };
    let mapping = resolved.mapping;
    if rt.mappings.all()[mapping].mode != Mode::WriteThrough || resolved.role != KeyRole::Temp {
        return;
    }
    let key = key.to_vec();
    let scheduled = ctx.add_post_notification_job(move |ctx| {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| capture_staged(ctx, rt, mapping, &key)));
    });
    if scheduled == redis_module::Status::Err {
        warn("could not schedule the capture of a write; is the server older than 7.2?");
    }
}

/// Captures the staged write in `__{<prefix><id>}`; returns the queued version when
/// the change goes to Postgres.
pub fn capture_staged(ctx: &Context, rt: &Runtime, mapping: usize, key: &[u8]) -> Result<Option<u64>, String> {
    let m = &rt.mappings.all()[mapping];
    let mut staged = hgetall(ctx, key);
    if staged.is_empty() {
        return Ok(None);
    }
    let tag = match staged.iter().position(|(f, _)| f == OP_FIELD) {
        Some(pos) => {
            let (_, value) = staged.remove(pos);
            own_writes(|| call_logged(ctx, "HDEL", &[key, OP_FIELD]));
            decode_op(&value)
        }
        None => Ok(OpTag {
            op: SyncOp::Replicate,
            uuid: None,
        }),
    };
    let id_bytes = &key[3 + m.key_prefix.len()..key.len() - 1];
    let checked = tag.and_then(|tag| check_id(id_bytes).map(|id| (tag, id)));
    let (tag, id) = match checked {
        Ok(ok) => ok,
        Err(e) => {
            let message = format!("{}: write to {} refused: {e}", m.name, String::from_utf8_lossy(key));
            refuse(ctx, rt, mapping, key, &message);
            return Err(message);
        }
    };
    let acks: Vec<String> = tag.uuid.into_iter().collect();
    let row = RowKey {
        mapping,
        id: id.to_string(),
    };
    let main_key = m.main_key(id);
    match tag.op {
        SyncOp::Replicate | SyncOp::Delete => {
            let (op, fields): (RowOp, Fields) = if tag.op == SyncOp::Delete {
                // The staged write is consumed now; later writes start afresh.
                own_writes(|| call_logged(ctx, "DEL", &[key]));
                (RowOp::Delete, Fields::new())
            } else {
                (RowOp::Upsert, staged.into_iter().map(|(f, v)| (f, Some(v))).collect())
            };
            let pushed = rt.queue.push(row, op, fields, acks);
            journal::mark(ctx, key, pushed.op, &pushed.acks);
            Ok(Some(pushed.version))
        }
        SyncOp::RedisOnlyUpsert => {
            own_writes(|| {
                let mut args: Vec<&[u8]> = vec![main_key.as_bytes()];
                for (f, v) in &staged {
                    args.push(f);
                    args.push(v);
                }
                call_logged(ctx, "HSET", &args);
                call_logged(ctx, "DEL", &[key]);
            });
            ack::send(ctx, m, id, &acks, &Ok(()));
            Ok(None)
        }
        SyncOp::RedisOnlyDelete => {
            own_writes(|| {
                call_logged(ctx, "DEL", &[main_key.as_bytes()]);
                call_logged(ctx, "DEL", &[key]);
            });
            ack::send(ctx, m, id, &acks, &Ok(()));
            Ok(None)
        }
    }
}

/// Drops a staged write that cannot be synced (bad key or `#`), and says why.
fn refuse(ctx: &Context, rt: &Runtime, mapping: usize, key: &[u8], message: &str) {
    warn(message);
    let stats = &rt.stats[mapping];
    MappingStats::bump(&stats.failed, 1);
    stats.set_last_error(message);
    own_writes(|| {
        if let Err(e) = call(ctx, "DEL", &[key]) {
            warn(&format!("cannot remove {}: {e}", String::from_utf8_lossy(key)));
        }
    });
}
