//! Keyspace events: whole-key commands that are not rerouted through `SYNC.*`
//! (RENAME, RESTORE, COPY, MOVE) and hash writes by other modules, captured as
//! the key's whole hash (`pipeline/capture.rs`); a key arriving by resharding is
//! handed to `migration.rs`.

use crate::model::change::{Fields, RowOp, Write, OP_FIELD};
use crate::model::guard::guard;
use crate::model::mapping::Mode;
use crate::pipeline::capture::{capturing, record, refuse, set_fields, target, Target};
use crate::pipeline::runtime::{self, Runtime};
use crate::redis::cluster;
use crate::redis::redis_io::{hgetall, is_own_write, warn};
use crate::server::migration;
use redis_module::{Context, NotifyEvent};

/// Keyspace handler for hash events. Writes by clients come through `SYNC.WRITE`,
/// which captures them itself (its own call of the command is an own write); an
/// event here is a write by another module, captured as the key's whole hash.
/// Field TTLs and field expiry change no data and never reach Postgres.
pub fn on_hash_event(ctx: &Context, _kind: NotifyEvent, event: &str, key: &[u8]) {
    if matches!(event, "hexpire" | "hpersist" | "hexpired") {
        return;
    }
    guard(|| schedule_whole_key(ctx, key, false));
}

/// Keyspace handler for generic events. RENAME (the old key's row is deleted, the
/// new key's hash upserted), RESTORE, COPY and MOVE are captured as whole keys.
/// `del` is not: DEL and UNLINK come through `SYNC.DELETE`, and every other `del`
/// (a hash's last field removed or expired, MIGRATE moving a key away) deletes
/// nothing in Postgres. A key arriving by `RESTORE-ASKING` (resharding) is no
/// write either (`migration.rs`).
pub fn on_generic_event(ctx: &Context, _kind: NotifyEvent, event: &str, key: &[u8]) {
    if event == "restore" && cluster::arriving() {
        return guard(|| migration::on_arrival(ctx, key));
    }
    let gone = match event {
        "rename_from" | "move_from" => true,
        "rename_to" | "restore" | "copy_to" | "move_to" => false,
        _ => return,
    };
    guard(|| schedule_whole_key(ctx, key, gone));
}

/// Writes are unsafe inside a keyspace callback, so the capture is deferred to a
/// post-notification job, which still runs inside the same command.
fn schedule_whole_key(ctx: &Context, key: &[u8], gone: bool) {
    if is_own_write() {
        return;
    }
    let Some(rt) = runtime::get() else { return };
    if !capturing(ctx, rt) {
        return;
    }
    let target = match target(rt, key) {
        None => return,
        Some(Err(refusal)) => return refuse(rt, refusal.mapping, &refusal.to_string()),
        Some(Ok(target)) => target,
    };
    let key = key.to_vec();
    let scheduled = ctx.add_post_notification_job(move |ctx| {
        guard(|| capture_whole_key(ctx, rt, &target, &key, gone));
    });
    if scheduled == redis_module::Status::Err {
        warn("could not schedule the capture of a write");
    }
}

fn capture_whole_key(ctx: &Context, rt: &Runtime, target: &Target, key: &[u8], gone: bool) {
    let m = rt.mapping(target.mapping).def;
    if gone {
        if m.mode == Mode::WriteBehind {
            record(ctx, rt, target, key, Write { op: RowOp::Delete, fields: Fields::new(), acks: Vec::new() });
        }
        return;
    }
    match hgetall(ctx, key) {
        Ok(pairs) => {
            let fields = set_fields(pairs.into_iter().filter(|(f, _)| f != OP_FIELD).collect());
            record(ctx, rt, target, key, Write { op: RowOp::Upsert, fields, acks: Vec::new() });
        }
        Err(e) => {
            let message = format!("{}: write to {} refused: {e}", m.name, key.escape_ascii());
            refuse(rt, target.mapping, &message);
        }
    }
}
