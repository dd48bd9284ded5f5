//! Postgres -> Redis apply: writes rows read from Postgres (by the listener, a
//! reload or a TRUNCATE's clearing) into their hashes, skipping the rows Redis
//! changed since the read began, since Redis is newer for those, and, in a
//! cluster, the rows whose key is another node's (`cluster::place`).

use crate::model::mapping::{Mapping, ValueType};
use crate::model::queue::Snapshot;
use crate::pg::reader::PgRow;
use crate::pipeline::runtime::Runtime;
use crate::redis::cluster::{self, Place};
use crate::redis::hash_key::Key;
use crate::redis::notify::{self, now_ms, Event, EventOp, Source};
use crate::redis::read_through::loads;
use crate::redis::redis_io::{own_writes, replicate, string, warn};
use crate::redis::redis_lock::with_redis_lock;
use crate::redis::ttl;
use crate::sources::apply_json::write_json_row;
use redis_module::{raw, Context, NotifyEvent, RedisString};

/// What [`apply_pg_rows`] did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Ids to read and apply again later: Redis changed them since the
    /// snapshot, or their slot is moving between cluster nodes.
    pub later: Vec<String>,
    /// Rows applied here: written, deleted, or found already holding what
    /// Postgres has; in a cluster, rows of other nodes' keys are neither written
    /// nor counted.
    pub written: usize,
}

/// Writes rows read from Postgres (listener, reload) into their hashes, under one
/// short lock: mapped fields are set, NULL columns removed, unmapped fields kept;
/// a hash that already holds the row as Postgres has it is left alone, with no
/// event but a reload's (a catch-up over a cached table publishes only what
/// changed; `notify_reload` announces every row a reload loads).
/// `gone` lists ids whose row no longer exists: their keys are deleted. Rows Redis
/// changed since `snapshot` (taken before the read) are skipped, since Redis is
/// newer for them, and so are keys this cluster node does not own; see [`Applied`].
pub fn apply_pg_rows(
    rt: &Runtime,
    mapping: usize,
    snapshot: &Snapshot<'_>,
    rows: &[PgRow],
    gone: &[String],
    source: Source,
) -> Applied {
    with_redis_lock(|ctx| apply_locked(ctx, rt, mapping, snapshot, rows, gone, source))
}

/// [`apply_pg_rows`] under the Redis lock the caller holds (`ctx`), so that
/// more can be written in the same step (the logical stream's position).
pub fn apply_locked(
    ctx: &Context,
    rt: &Runtime,
    mapping: usize,
    snapshot: &Snapshot<'_>,
    rows: &[PgRow],
    gone: &[String],
    source: Source,
) -> Applied {
    let m = &rt.mappings.all()[mapping];
    let mut applied = Applied::default();
    {
        // Checked under the Redis lock, so capture (which needs it) cannot dirty a row
        // between the check and the write; one queue lock for the whole chunk.
        let ids = rows.iter().map(|r| r.id.as_str()).chain(gone.iter().map(String::as_str));
        let newer_ids = snapshot.newer_among(mapping, ids);
        let newer = |id: &str| newer_ids.contains(id);
        loads::rows_changed(mapping, rows.iter().map(|r| r.id.as_str()).chain(gone.iter().map(String::as_str)));
        own_writes(|| {
            // Keys of other nodes are theirs to write; a key whose slot is moving is
            // read again once the move is over.
            let mut mine = |id: &str, key: &str| match cluster::place(ctx, key.as_bytes()) {
                _ if newer(id) => {
                    applied.later.push(id.to_string());
                    false
                }
                Place::Mine => {
                    applied.written += 1;
                    true
                }
                Place::Moving => {
                    applied.later.push(id.to_string());
                    false
                }
                Place::Elsewhere => false,
            };
            for row in rows {
                let key = m.main_key(&row.id);
                if !mine(&row.id, &key) {
                    continue;
                }
                let changed = write_row(ctx, m, &key, &row.fields);
                // `notify_reload` asks for an event per row loaded, changed or not.
                if (changed || source == Source::Reload) && notify::wanted(m, source) {
                    let fields = row.fields.iter().map(|(f, _)| f.clone()).collect();
                    let event = Event { key: &key, id: &row.id, op: EventOp::Upsert, source, fields, time: now_ms() };
                    notify::send(ctx, m, &rt.stats[mapping], &event);
                }
            }
            for id in gone {
                let key = m.main_key(id);
                if !mine(id, &key) {
                    continue;
                }
                delete_row(ctx, &key);
                let event = Event { key: &key, id, op: EventOp::Delete, source, fields: Vec::new(), time: now_ms() };
                notify::send(ctx, m, &rt.stats[mapping], &event);
            }
        });
    }
    applied
}

/// Writes one row read from Postgres into its hash with the key API (a command
/// call per row cost a reload a third of its speed): mapped fields set, NULL
/// columns removed, replicated and announced as `HDEL` and `HSET` would be; and
/// the mapping's expiry, if it has one. Returns false, having written nothing,
/// when the hash already holds every field as `fields` has it (it keeps its
/// expiry). A `"type": "json"` mapping's row goes to its JSON document instead
/// (`apply_json`).
pub(crate) fn write_row(ctx: &Context, m: &Mapping, key: &str, fields: &[(String, Option<String>)]) -> bool {
    if m.value_type == ValueType::Json {
        return write_json_row(ctx, m, key, fields);
    }
    let name = string(ctx, key.as_bytes());
    let hash = match Key::open(ctx, &name) {
        Ok(hash) if hash.is_hash_or_empty() => hash,
        Ok(_) => {
            warn(&format!("{key} holds no hash; the row read from Postgres is not written"));
            return false;
        }
        Err(e) => {
            warn(&format!("cannot write {key}: {e}"));
            return false;
        }
    };
    if holds_row(ctx, &hash, fields) {
        return false;
    }
    let (mut set, mut unset): (Vec<RedisString>, Vec<RedisString>) = (Vec::new(), Vec::new());
    for (field, value) in fields {
        let field = string(ctx, field.as_bytes());
        match value {
            Some(value) => {
                let value = string(ctx, value.as_bytes());
                hash.set(&field, Some(&value));
                set.extend([field, value]);
            }
            None if hash.set(&field, None) => unset.push(field),
            None => {}
        }
    }
    let emptied = hash.kind() == raw::REDISMODULE_KEYTYPE_EMPTY;
    ttl::set(ctx, m, &hash, &name);
    drop(hash);
    for (command, event, args) in [(c"HDEL", "hdel", &unset), (c"HSET", "hset", &set)] {
        if args.is_empty() {
            continue;
        }
        ctx.notify_keyspace_event(NotifyEvent::HASH, event, &name);
        let argv: Vec<&RedisString> = std::iter::once(&name).chain(args.iter()).collect();
        replicate(ctx, command, &argv);
    }
    if emptied && !unset.is_empty() {
        ctx.notify_keyspace_event(NotifyEvent::GENERIC, "del", &name);
    }
    true
}

/// Whether the open `hash` holds each field as `fields` has it: the value for a
/// column with one, no field for a NULL column. Other fields do not count.
fn holds_row(ctx: &Context, hash: &Key, fields: &[(String, Option<String>)]) -> bool {
    fields.iter().all(|(field, value)| {
        let held = hash.get(&string(ctx, field.as_bytes()));
        held.as_ref().map(RedisString::as_slice) == value.as_ref().map(String::as_bytes)
    })
}

/// Adds to an existing hash the row's fields it lacks, never changing a field it
/// holds (a writer's value is newer): `fill_on_write` after a write to a key
/// Redis did not hold. Replicated and announced as `HSET`.
pub(crate) fn fill_missing_fields(ctx: &Context, key: &str, fields: &[(String, Option<String>)]) {
    let name = string(ctx, key.as_bytes());
    let hash = match Key::open(ctx, &name) {
        Ok(hash) if hash.kind() == raw::REDISMODULE_KEYTYPE_HASH => hash,
        Ok(_) => return,
        Err(e) => return warn(&format!("cannot fill {key}: {e}")),
    };
    let mut set: Vec<RedisString> = Vec::new();
    for (field, value) in fields {
        let Some(value) = value else { continue };
        let field = string(ctx, field.as_bytes());
        if hash.get(&field).is_none() {
            let value = string(ctx, value.as_bytes());
            hash.set(&field, Some(&value));
            set.extend([field, value]);
        }
    }
    drop(hash);
    if !set.is_empty() {
        ctx.notify_keyspace_event(NotifyEvent::HASH, "hset", &name);
        let argv: Vec<&RedisString> = std::iter::once(&name).chain(set.iter()).collect();
        replicate(ctx, c"HSET", &argv);
    }
}

/// Deletes the hash of a row that no longer exists in Postgres.
fn delete_row(ctx: &Context, key: &str) {
    let name = string(ctx, key.as_bytes());
    match Key::open(ctx, &name) {
        Ok(hash) if hash.delete(false) => {
            drop(hash);
            ctx.notify_keyspace_event(NotifyEvent::GENERIC, "del", &name);
            replicate(ctx, c"DEL", &[&name]);
        }
        Ok(_) => {}
        Err(e) => warn(&format!("cannot delete {key}: {e}")),
    }
}
