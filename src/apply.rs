//! Apply: before a batch is written, read each dirty key's current state (one
//! short lock); after it is committed (or rows rejected), take the Redis lock once
//! more and bring Redis in line: merge committed fields into `<prefix><id>`, clear
//! the staged fields that were synced (keeping any written meanwhile), send acks
//! and notifications, update the journal, and answer `SYNC.HSET` clients.

use crate::ack;
use crate::change::{Fields, RowOp, OP_FIELD};
use crate::deadletter;
use crate::journal;
use crate::mapping::{Mapping, Mode};
use crate::notify::{self, now_ms, Event, EventOp, Source};
use crate::pg::reader::PgRow;
use crate::queue::{Entry, Outcome, RowKey, Snapshot};
use crate::redis_io::{bytes, call, call_logged, hgetall, own_writes, warn};
use crate::runtime::Runtime;
use crate::stats::MappingStats;
use crate::waiters;
use redis_module::{Context, RedisValue, ThreadSafeContext};

/// The key a row's writers write: the staging key (write-through) or the row's
/// own hash (write-behind).
fn written_key(m: &Mapping, id: &str) -> String {
    match m.mode {
        Mode::WriteThrough => m.temp_key(id),
        Mode::WriteBehind | Mode::ReadOnly => m.main_key(id),
    }
}

/// Reads the current state of every row of a batch that is not a delete, under one
/// short lock. A write-behind hash that is gone turns a replace into a delete and
/// an upsert into nothing (it expired or was evicted: not a delete).
pub fn read_batch(rt: &Runtime, batch: &mut [(RowKey, Entry)]) {
    let tsc = ThreadSafeContext::new();
    let ctx = tsc.lock();
    for (row, entry) in batch.iter_mut() {
        let change = &mut entry.change;
        if change.op == RowOp::Delete {
            change.fields = Fields::new();
            continue;
        }
        let m = &rt.mappings.all()[row.mapping];
        let state = hgetall(&ctx, written_key(m, &row.id).as_bytes()).unwrap_or_default();
        change.fields = state.into_iter().filter(|(f, _)| f != OP_FIELD).map(|(f, v)| (f, Some(v))).collect();
        if change.fields.is_empty() && change.op == RowOp::Replace {
            change.op = RowOp::Delete;
        }
    }
}

/// Whether a row turned out to have nothing to write (its key vanished).
pub fn nothing_to_write(entry: &Entry) -> bool {
    entry.change.op == RowOp::Upsert && entry.change.fields.is_empty()
}

/// Applies a settled batch; `outcomes[i]` belongs to `batch[i]`.
pub fn apply_batch(rt: &Runtime, batch: &[(RowKey, Entry)], outcomes: &[Outcome]) {
    let tsc = ThreadSafeContext::new();
    let ctx = tsc.lock();
    own_writes(|| {
        let mut settled_keys: Vec<String> = Vec::new();
        for ((row, entry), outcome) in batch.iter().zip(outcomes) {
            let key = written_key(&rt.mappings.all()[row.mapping], &row.id);
            apply_row(&ctx, rt, row, entry, outcome, &key);
            // The journal keeps what is still queued for the row, and nothing else.
            match rt.queue.pending_change(row) {
                None => settled_keys.push(key),
                Some((op, acks)) => journal::mark(&ctx, key.as_bytes(), op, &acks),
            }
        }
        journal::clear_all(&ctx, &settled_keys);
        rt.queue.complete(batch.iter().map(|(row, _)| row));
        for ((row, entry), outcome) in batch.iter().zip(outcomes) {
            waiters::settle(row, entry.change.version, outcome);
        }
    });
}

fn apply_row(ctx: &Context, rt: &Runtime, row: &RowKey, entry: &Entry, outcome: &Outcome, written: &str) {
    let m = &rt.mappings.all()[row.mapping];
    let stats = &rt.stats[row.mapping];
    let change = &entry.change;
    if nothing_to_write(entry) {
        ack::send(ctx, m, &row.id, &change.acks, outcome);
        return;
    }
    match outcome {
        Ok(()) => {
            MappingStats::bump(&stats.synced, 1);
            if m.mode == Mode::WriteThrough {
                merge_into_main(ctx, &m.main_key(&row.id), change.op, &change.fields);
            }
        }
        Err(e) => {
            MappingStats::bump(&stats.failed, 1);
            let logged = if crate::config::log_values() { e.clone() } else { crate::pg::error::without_values(e) };
            let message = format!("{}: row {} rejected: {logged}", m.name, row.id);
            warn(&message);
            stats.set_last_error(&message);
            deadletter::add(ctx, m, row, change, e);
        }
    }
    if m.mode == Mode::WriteThrough {
        clear_synced_fields(ctx, written, &change.fields);
    }
    if outcome.is_ok() {
        let key = m.main_key(&row.id);
        let (op, fields) = match change.op {
            RowOp::Delete => (EventOp::Delete, Vec::new()),
            RowOp::Upsert | RowOp::Replace => {
                (EventOp::Upsert, change.fields.keys().map(|f| String::from_utf8_lossy(f).into_owned()).collect())
            }
        };
        let event = Event { key: &key, id: &row.id, op, source: Source::Redis, fields, time: now_ms() };
        notify::send(ctx, m, &event);
    }
    ack::send(ctx, m, &row.id, &change.acks, outcome);
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

/// Writes rows read from Postgres (listener, reload) into their hashes, under one
/// short lock: mapped fields are set, NULL columns removed, unmapped fields kept.
/// `gone` lists ids whose row no longer exists: their keys are deleted. Rows Redis
/// changed since `snapshot` (taken before the read) are skipped, since Redis is
/// newer for them; their ids are returned.
pub fn apply_pg_rows(
    rt: &Runtime,
    mapping: usize,
    snapshot: &Snapshot<'_>,
    rows: &[PgRow],
    gone: &[String],
    source: Source,
) -> Vec<String> {
    let m = &rt.mappings.all()[mapping];
    let mut skipped = Vec::new();
    let tsc = ThreadSafeContext::new();
    let ctx = tsc.lock();
    // Checked under the Redis lock, so capture (which needs it) cannot dirty a row
    // between the check and the write; one queue lock for the whole chunk.
    let ids = rows.iter().map(|r| r.id.as_str()).chain(gone.iter().map(String::as_str));
    let newer_ids = snapshot.newer_among(mapping, ids);
    let newer = |id: &str| newer_ids.contains(id);
    own_writes(|| {
        for row in rows {
            if newer(&row.id) {
                skipped.push(row.id.clone());
                continue;
            }
            let key = m.main_key(&row.id);
            let mut set: Vec<&[u8]> = vec![key.as_bytes()];
            let mut unset: Vec<&[u8]> = vec![key.as_bytes()];
            for (field, value) in &row.fields {
                match value {
                    Some(v) => {
                        set.push(field.as_bytes());
                        set.push(v.as_bytes());
                    }
                    None => unset.push(field.as_bytes()),
                }
            }
            if unset.len() > 1 {
                call_logged(&ctx, "HDEL", &unset);
            }
            if set.len() > 1 {
                call_logged(&ctx, "HSET", &set);
            }
            let fields = row.fields.iter().map(|(f, _)| f.clone()).collect();
            let event = Event { key: &key, id: &row.id, op: EventOp::Upsert, source, fields, time: now_ms() };
            notify::send(&ctx, m, &event);
        }
        for id in gone {
            if newer(id) {
                skipped.push(id.clone());
                continue;
            }
            let key = m.main_key(id);
            call_logged(&ctx, "DEL", &[key.as_bytes()]);
            let event = Event { key: &key, id, op: EventOp::Delete, source, fields: Vec::new(), time: now_ms() };
            notify::send(&ctx, m, &event);
        }
    });
    skipped
}
