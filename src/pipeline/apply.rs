//! Apply: after a batch is committed (or rows rejected), take the Redis lock once
//! and bring Redis in line: merge committed fields into `<prefix><id>`
//! (write-through), set incremented fields to the sums Postgres computed, clear the
//! staged fields that were synced (keeping any written meanwhile), dead-letter
//! rejected rows (a write-behind row's newer queued write carries the rejected
//! change) and resolve the entries of rows that landed, send acks and
//! notifications, update the journal, and answer `SYNC.HSET` clients. Rows read
//! from Postgres are written into Redis by `apply_pg`.
//!
//! The rules of a row's apply live here, over the narrow [`Store`] trait of
//! what they do to Redis, so that they are unit-tested with an in-memory fake
//! (`apply/tests.rs`); `apply/live.rs` is the store over the Redis lock's
//! context.

mod live;
#[cfg(test)]
mod tests;

use crate::model::change::{Change, FieldChange, RowOp};
use crate::model::json_intent;
use crate::model::json_row::{self, MemberKind};
use crate::model::mapping::{Mapping, Mode, ValueType};
use crate::model::queue::{Entry, Outcome, Rejected, RowKey};
use crate::model::stats::MappingStats;
use crate::pg::writer::{Returned, RowOutcome};
use crate::pipeline::runtime::Runtime;
use crate::redis::deadletter;
use crate::redis::notify::{now_ms, Event, EventOp, Source};
use crate::redis::redis_io::{own_writes, warn};
use crate::redis::waiters;
use redis_module::{Context, ContextFlags, ThreadSafeContext};
use std::fmt::Display;

/// What apply does to Redis, as the rules need it: the row's keys (hashes and
/// RedisJSON documents), and the messages that follow an outcome.
pub(crate) trait Store {
    /// Why a document could not be read or written.
    type Error: Display;

    /// Whether Redis holds `key`.
    fn exists(&self, key: &str) -> bool;
    /// `HSET key field value ...`.
    fn hash_set(&self, key: &str, pairs: &[(&[u8], &[u8])]);
    /// `HDEL key field ...`.
    fn hash_remove(&self, key: &str, fields: &[&[u8]]);
    /// `DEL key`.
    fn delete(&self, key: &str);
    /// The hash's values of `fields`, in order; `None` when it cannot be read.
    fn hash_values(&self, key: &str, fields: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, Self::Error>;
    /// Merges `members` (name, JSON text, `None` to remove) into the document
    /// at `key`; a missing key becomes one.
    fn json_merge(&self, key: &str, members: &[(String, Option<String>)]) -> Result<(), Self::Error>;
    /// The document's members `names` as JSON text; `None` when the key holds
    /// no JSON object.
    fn json_members(&self, key: &str, names: &[&[u8]]) -> Option<Vec<Option<String>>>;
    /// Removes `names` from the document at `key`, and the key once empty.
    fn json_remove(&self, key: &str, names: &[&[u8]]) -> Result<(), Self::Error>;
    /// Gives a row key the mapping's `ttl`, if it has one.
    fn expire(&self, m: &Mapping, key: &str);
    /// Loads the rest of a row a commit wrote only some fields of (`fill_on_write`).
    fn fill(&self, row: &RowKey);
    /// Publishes a change event.
    fn announce(&self, m: &Mapping, stats: &MappingStats, event: &Event<'_>);
    /// Tells the row's ack streams how it ended.
    fn ack(&self, m: &Mapping, id: &str, uuids: &[String], outcome: &Outcome);
    /// Adds the row's rejected change to the dead-letter list.
    fn dead_letter(&self, m: &Mapping, row: &RowKey, change: &Change, error: &str);
    /// Resolves the row's dead-letter entry now that `change` landed; whether one was.
    fn landed(&self, m: &Mapping, row: &RowKey, change: &Change) -> bool;
}

/// Applies a settled batch; `outcomes[i]` belongs to `batch[i]`.
pub fn apply_batch(rt: &Runtime, batch: &[(RowKey, Entry)], outcomes: &[RowOutcome]) {
    let tsc = ThreadSafeContext::new();
    let ctx = tsc.lock();
    if demoted(&ctx, rt) {
        return settle_without_writes(rt, batch);
    }
    own_writes(|| {
        // Each row's written key and the change queued for it since: read once,
        // for apply and for the journal.
        let mut logs = Vec::with_capacity(batch.len());
        let store = live::LiveStore { ctx: &ctx, rt };
        let rejections = Rejections { listed: deadletter::any(&ctx) };
        for ((row, entry), outcome) in batch.iter().zip(outcomes) {
            let key = rt.mapping(row.mapping).def.written_key(&row.id);
            let mut pending = rt.dirty.pending_change(row, &key);
            apply_row(&store, rt, row, &entry.change, outcome, &key, pending.as_ref());
            rejections.settle(&store, rt, row, &entry.change, outcome, &mut pending);
            logs.push((key, pending));
        }
        rt.dirty.settle(&ctx, batch, &logs);
        for ((row, entry), outcome) in batch.iter().zip(outcomes) {
            waiters::settle(row, entry.change.version, &settled(outcome));
        }
        waiters::settle_waits(rt.queue());
    });
}

/// Before a batch that increments commits: marks its rows' journal logs with
/// its commit marker, so that a crash or a promotion before apply clears them
/// cannot count what it committed twice (`DirtySet::mark_in_flight`). A row of
/// the batch that Postgres then rejects carries the mark too: should the server
/// die before apply, that row is written again without those increments (it is
/// a dead letter either way).
pub fn mark_in_flight(rt: &Runtime, batch: &[(RowKey, Entry)], marker: i64) {
    let tsc = ThreadSafeContext::new();
    let ctx = tsc.lock();
    if demoted(&ctx, rt) {
        return;
    }
    let rows: Vec<(&RowKey, String)> =
        batch.iter().map(|(row, _)| (row, rt.mapping(row.mapping).def.written_key(&row.id))).collect();
    rt.dirty.mark_in_flight(&ctx, &rows, marker);
}

/// Whether this server became a replica while the batch was being written: its
/// keys and journal now come from the new primary, which syncs these rows again
/// from its own journal.
fn demoted(ctx: &Context, rt: &Runtime) -> bool {
    rt.is_replica() || ctx.get_flags().contains(ContextFlags::SLAVE)
}

/// Settles a batch that committed after a demotion: no key, journal entry, ack or
/// dead letter is written (the new primary owns them); the queue forgets the rows
/// and their `SYNC.HSET` clients get the demotion's error.
fn settle_without_writes(rt: &Runtime, batch: &[(RowKey, Entry)]) {
    rt.dirty.release(batch);
    for (row, entry) in batch {
        waiters::fail(row, entry.change.version, crate::redis::replies::DEMOTED);
    }
}

/// A row's apply: the committed change into its keys, or its rejection into
/// the dead letters; then its change event (when it landed) and its acks.
fn apply_row(
    store: &impl Store,
    rt: &Runtime,
    row: &RowKey,
    change: &Change,
    outcome: &RowOutcome,
    written: &str,
    pending: Option<&Change>,
) {
    let m = rt.mapping(row.mapping).def;
    let stats = rt.mapping(row.mapping).stats;
    match outcome {
        Ok(returned) => {
            MappingStats::bump(&stats.synced, 1);
            let sums = sums(m, change, returned);
            match m.mode {
                Mode::WriteThrough => {
                    let main = m.main_key(&row.id);
                    // The commit wrote only some fields of a row Redis did not hold.
                    let fill = m.fill_on_write && change.op == RowOp::Upsert && !store.exists(&main);
                    match m.value_type {
                        ValueType::Hash => merge_into_main(store, &main, change, &sums),
                        ValueType::Json => merge_into_document(store, rt, row.mapping, &main, change, &sums),
                    }
                    store.expire(m, &main);
                    if fill {
                        store.fill(row);
                    }
                }
                Mode::WriteBehind | Mode::ReadOnly | Mode::Document => {
                    correct_sums(store, m, written, change, &sums, pending)
                }
            }
        }
        Err(e) => {
            MappingStats::bump(&stats.failed, 1);
            let logged = if crate::redis::config::log_values() { e.message.clone() } else { e.without_values() };
            let message = format!("{}{logged}", rejection_prefix(m, &row.id));
            warn(&message);
            stats.set_row_rejected(&row.id, &message);
            store.dead_letter(m, row, change, &e.message);
        }
    }
    if m.mode == Mode::WriteThrough {
        clear_synced_fields(store, m, written, change);
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
        store.announce(m, stats, &event);
    }
    store.ack(m, &row.id, &change.acks, &settled(outcome));
}

/// What waiters and ack streams are told of a row's outcome: Postgres's
/// message when it was rejected.
fn settled(outcome: &RowOutcome) -> Outcome {
    outcome.as_ref().map(|_| ()).map_err(|e| Rejected(e.message.clone()))
}

/// How the log line and `last_error` of a row's rejection begin.
fn rejection_prefix(m: &Mapping, id: &str) -> String {
    format!("{}: row {id} rejected: ", m.name)
}

/// What a batch's outcomes do to the rows' dead-letter entries.
struct Rejections {
    /// Whether the list held any entry when the batch was applied: rows landing
    /// while it is empty have none to resolve.
    listed: bool,
}

impl Rejections {
    /// A write-behind row rejected while a newer write was queued carries its
    /// change into that write (`pending` becomes the merged change, which the
    /// journal then holds). A row that landed resolves its entry, and its
    /// rejection leaves the mapping's `last_error`.
    fn settle(
        &self,
        store: &impl Store,
        rt: &Runtime,
        row: &RowKey,
        change: &Change,
        outcome: &RowOutcome,
        pending: &mut Option<Change>,
    ) {
        let m = rt.mapping(row.mapping).def;
        match outcome {
            Err(_) if m.mode == Mode::WriteBehind && pending.is_some() => {
                *pending = rt.dirty.carry_rejected(row, change, pending.take());
            }
            Err(_) => {}
            Ok(_) if self.listed && store.landed(m, row, change) => {
                rt.mapping(row.mapping).stats.clear_row_rejected(&row.id);
            }
            Ok(_) => {}
        }
    }
}

/// The values Postgres computed for the incremented fields and those paths were
/// set inside: field → new value.
fn sums(m: &Mapping, change: &Change, returned: &Returned) -> Vec<(Vec<u8>, Option<String>)> {
    change
        .fields
        .iter()
        .filter(|(_, c)| matches!(c, FieldChange::Add { .. } | FieldChange::Paths(_)))
        .filter_map(|(field, _)| {
            let column = m.column_for(std::str::from_utf8(field).ok()?)?;
            returned.get(column).map(|v| (field.clone(), v.clone()))
        })
        .collect()
}

/// Write-behind: an increment was added to the row's own value, or paths set
/// inside it, which Redis may not have held (the key or member was not
/// cached): set each such field to the value Postgres computed, unless a newer
/// write to that field is still on its way (its own commit brings the value
/// later). A key that is gone stays gone. A JSON row's members are set in its
/// document, as numbers (sums) or as the JSON they hold (paths set).
fn correct_sums(
    store: &impl Store,
    m: &Mapping,
    key: &str,
    change: &Change,
    sums: &[(Vec<u8>, Option<String>)],
    pending: Option<&Change>,
) {
    let sums: Vec<_> = sums.iter().filter(|(f, _)| !pending.is_some_and(|p| p.touches(f))).collect();
    if sums.is_empty() || !store.exists(key) {
        return;
    }
    if m.value_type == ValueType::Json {
        let member = |(f, v): &&(Vec<u8>, Option<String>)| {
            let kind = match change.fields.get(f) {
                Some(FieldChange::Paths(_)) => MemberKind::Json,
                _ => MemberKind::Number,
            };
            (String::from_utf8_lossy(f).into_owned(), v.as_deref().map(|v| kind.member(v)))
        };
        let members: Vec<_> = sums.iter().map(member).collect();
        if let Err(e) = store.json_merge(key, &members) {
            warn(&format!("cannot set the sums in {key}: {e}"));
        }
        return;
    }
    for (field, value) in sums {
        match value {
            Some(v) => store.hash_set(key, &[(field, v.as_bytes())]),
            None => store.hash_remove(key, &[field]),
        }
    }
}

/// Write-through: what the committed change makes each field of the cached
/// row: its value, or `None` for a removed one. An increment's value is the sum
/// Postgres computed; without one (an unmapped field), Redis's own result.
fn committed_fields<'a>(
    change: &'a Change,
    sums: &'a [(Vec<u8>, Option<String>)],
) -> Vec<(&'a [u8], Option<&'a [u8]>)> {
    let mut fields = Vec::with_capacity(change.fields.len());
    for (field, value) in &change.fields {
        match value {
            FieldChange::Set(v) => fields.push((field.as_slice(), Some(v.as_slice()))),
            FieldChange::Remove => fields.push((field.as_slice(), None)),
            FieldChange::Add { redis_after, .. } if !sums.iter().any(|(f, _)| f == field) => {
                fields.push((field.as_slice(), Some(redis_after.as_slice())))
            }
            FieldChange::Add { .. } | FieldChange::Paths(_) => {}
        }
    }
    fields.extend(sums.iter().map(|(f, v)| (f.as_slice(), v.as_deref().map(str::as_bytes))));
    fields
}

/// Write-through: the committed change becomes the cached row's state.
fn merge_into_main(store: &impl Store, key: &str, change: &Change, sums: &[(Vec<u8>, Option<String>)]) {
    if change.op != RowOp::Upsert {
        store.delete(key);
    }
    let mut set = Vec::new();
    let mut unset = Vec::new();
    for (field, value) in committed_fields(change, sums) {
        match value {
            Some(v) => set.push((field, v)),
            None => unset.push(field),
        }
    }
    if !unset.is_empty() {
        store.hash_remove(key, &unset);
    }
    if !set.is_empty() {
        store.hash_set(key, &set);
    }
}

/// Write-through of a JSON row: the committed change merged into the row's
/// document (a missing key becomes one), each value typed after its column as
/// rows read from Postgres are; members it does not name stay.
fn merge_into_document(
    store: &impl Store,
    rt: &Runtime,
    mapping: usize,
    main_key: &str,
    change: &Change,
    sums: &[(Vec<u8>, Option<String>)],
) {
    if change.op != RowOp::Upsert {
        store.delete(main_key);
    }
    if change.op == RowOp::Delete {
        return;
    }
    let m = rt.mapping(mapping).def;
    let schema = rt.schema(mapping);
    let kind = |field: &str| {
        let column = m.column_for(field)?;
        // Before the schema is known, a mapped member keeps its text's own JSON.
        schema.as_ref()?.columns.get(column).map(|c| MemberKind::of(&c.key_type.0))
    };
    let members: Vec<(String, Option<String>)> = committed_fields(change, sums)
        .into_iter()
        .map(|(field, value)| {
            let field = String::from_utf8_lossy(field).into_owned();
            let member = value.map(|v| json_row::committed_member(kind(&field), &String::from_utf8_lossy(v)));
            (field, member)
        })
        .collect();
    if let Err(e) = store.json_merge(main_key, &members) {
        warn(&format!("{main_key}: {e}; the committed change is in Postgres, not in this key"));
    }
}

/// Removes the staged fields whose value is still the one that was synced; a field
/// rewritten meanwhile stays for the next round. A JSON staging key loses those
/// members (compared as the text captured for them), and goes once empty.
fn clear_synced_fields(store: &impl Store, m: &Mapping, staged_key: &str, change: &Change) {
    // A removal leaves nothing in a staging hash, but a `null` member in a
    // staging document (`JSON.SET __{acct:1} $ '{"email": null}'`).
    let synced: Vec<(&[u8], Option<&[u8]>)> = change
        .fields
        .iter()
        .filter_map(|(f, c)| match c {
            FieldChange::Set(v) => Some((f.as_slice(), Some(v.as_slice()))),
            FieldChange::Add { redis_after, .. } => Some((f.as_slice(), Some(redis_after.as_slice()))),
            FieldChange::Remove if m.value_type == ValueType::Json => Some((f.as_slice(), None)),
            // Staged nowhere: a path set is captured only where Redis does not hold the member.
            FieldChange::Remove | FieldChange::Paths(_) => None,
        })
        .collect();
    if synced.is_empty() {
        return;
    }
    let names: Vec<&[u8]> = synced.iter().map(|(f, _)| *f).collect();
    let current: Vec<Option<Vec<u8>>> = match m.value_type {
        ValueType::Hash => match store.hash_values(staged_key, &names) {
            Ok(values) => values,
            Err(e) => {
                warn(&format!("cannot read {staged_key}: {e}"));
                return;
            }
        },
        ValueType::Json => match store.json_members(staged_key, &names) {
            Some(members) => {
                let captured = |(name, json): (&&[u8], Option<String>)| {
                    json.map(|j| json_intent::captured_text(m, &String::from_utf8_lossy(name), &j))
                };
                names.iter().zip(members).map(captured).collect()
            }
            None => {
                warn(&format!("cannot read {staged_key}: it holds no JSON object"));
                return;
            }
        },
    };
    let unchanged: Vec<&[u8]> = synced
        .iter()
        .zip(&current)
        .filter(|((_, value), now)| match (m.value_type, now.as_deref(), value) {
            (ValueType::Hash, now, value) => now == *value,
            // RedisJSON prints what it holds its own way (`{"a":[1]}` for `{"a": [1]}`).
            (ValueType::Json, Some(now), Some(value)) => {
                json_row::same(&String::from_utf8_lossy(now), &String::from_utf8_lossy(value))
            }
            (ValueType::Json, now, value) => now.is_none() && value.is_none(),
        })
        .map(|((name, _), _)| *name)
        .collect();
    if unchanged.is_empty() {
        return;
    }
    match m.value_type {
        ValueType::Hash => store.hash_remove(staged_key, &unchanged),
        ValueType::Json => {
            if let Err(e) = store.json_remove(staged_key, &unchanged) {
                warn(&format!("cannot clear {staged_key}: {e}"));
            }
        }
    }
}
