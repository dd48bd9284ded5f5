//! Apply: after a batch is committed (or rows rejected), take the Redis lock once
//! and bring Redis in line: merge committed fields into `<prefix><id>`, clear the
//! staged fields that were synced (keeping any written meanwhile), send acks, clear
//! journal entries, and wake the waiters.

use crate::ack;
use crate::change::RowOp;
use crate::deadletter;
use crate::journal;
use crate::mapping::Mode;
use crate::queue::{Entry, Outcome, RowKey};
use crate::redis_io::{bytes, call, call_logged, own_writes, warn};
use crate::runtime::Runtime;
use crate::stats::MappingStats;
use redis_module::{Context, RedisValue, ThreadSafeContext};

/// Applies a settled batch; `outcomes[i]` belongs to `batch[i]`.
pub fn apply_batch(rt: &Runtime, batch: &[(RowKey, Entry)], outcomes: &[Outcome]) {
    let tsc = ThreadSafeContext::new();
    let ctx = tsc.lock();
    own_writes(|| {
        for ((row, entry), outcome) in batch.iter().zip(outcomes) {
            apply_row(&ctx, rt, row, entry, outcome);
        }
    });
}

fn apply_row(ctx: &Context, rt: &Runtime, row: &RowKey, entry: &Entry, outcome: &Outcome) {
    let m = &rt.mappings.all()[row.mapping];
    let stats = &rt.stats[row.mapping];
    let change = &entry.change;
    let staged_key = match m.mode {
        Mode::WriteThrough => m.temp_key(&row.id),
        Mode::WriteBehind | Mode::ReadOnly => m.main_key(&row.id),
    };
    match outcome {
        Ok(()) => {
            MappingStats::bump(&stats.synced, 1);
            if m.mode == Mode::WriteThrough {
                merge_into_main(ctx, &m.main_key(&row.id), change.op, &change.fields);
            }
        }
        Err(e) => {
            MappingStats::bump(&stats.failed, 1);
            let message = format!("{}: row {} rejected: {e}", m.name, row.id);
            warn(&message);
            stats.set_last_error(&message);
            deadletter::add(ctx, m, row, change, e);
        }
    }
    if m.mode == Mode::WriteThrough {
        clear_synced_fields(ctx, &staged_key, &change.fields);
    }
    ack::send(ctx, m, &row.id, &change.acks, outcome);
    if !rt.queue.has_pending(row) {
        journal::clear(ctx, staged_key.as_bytes());
    }
    rt.queue.complete(row, change.version, outcome.clone());
}

fn merge_into_main(ctx: &Context, main_key: &str, op: RowOp, fields: &crate::change::Fields) {
    if op != RowOp::Upsert {
        call_logged(ctx, "DEL", &[main_key.as_bytes()]);
    }
    let mut args: Vec<&[u8]> = vec![main_key.as_bytes()];
    for (f, v) in fields {
        if let Some(v) = v {
            args.push(f);
            args.push(v);
        }
    }
    if args.len() > 1 {
        call_logged(ctx, "HSET", &args);
    }
}

/// Removes the staged fields whose value is still the one that was synced; a field
/// rewritten meanwhile stays for the next round.
fn clear_synced_fields(ctx: &Context, staged_key: &str, fields: &crate::change::Fields) {
    if fields.is_empty() {
        return;
    }
    let key = staged_key.as_bytes();
    let names: Vec<&[u8]> = fields.keys().map(Vec::as_slice).collect();
    let mut args = vec![key];
    args.extend(&names);
    let current = match call(ctx, "HMGET", &args) {
        Ok(RedisValue::Array(values)) => values,
        Ok(_) => return,
        Err(e) => {
            warn(&format!("cannot read {staged_key}: {e}"));
            return;
        }
    };
    let mut delete = vec![key];
    for ((name, synced), now) in fields.iter().zip(&current) {
        if bytes(now).as_ref() == synced.as_ref() {
            delete.push(name);
        }
    }
    if delete.len() > 1 {
        call_logged(ctx, "HDEL", &delete);
    }
}
