//! Capture: records, inside the command that wrote a mapped key, exactly what the
//! write changed (fields set, removed or incremented, or the row deleted), queues
//! it and journals the row's unsynced change, all in the same atomic step as the
//! write. Hash writes and DEL/UNLINK reach it through `SYNC.WRITE`/`SYNC.DELETE`
//! (see `filter.rs`), so their arguments say what they meant. Whole-key commands
//! that are not rerouted (RENAME, RESTORE, COPY, MOVE) and writes by other modules
//! arrive as keyspace events (`server/events.rs`) and are captured as the key's
//! whole hash. Expiry,
//! eviction and other deletions that nobody asked for are cache events and never
//! reach Postgres.

use crate::model::change::{decode_op, FieldChange, Fields, RowOp, SyncOp, Write, OP_FIELD};
use crate::model::intent::Command;
use crate::model::key_text::KeyType;
use crate::model::mapping::{KeyRole, Mapping, Mode};
use crate::model::queue::RowKey;
use crate::model::row_id::{check_id, IdError};
use crate::model::stats::MappingStats;
use crate::pipeline::runtime::Runtime;
use crate::redis::ack;
use crate::redis::client_call::{client_argv, run_as_client};
use crate::redis::deadletter;
use crate::redis::notify::{self, now_ms, Event, EventOp, Source};
use crate::redis::read_through::loads;
use crate::redis::redis_io::{selected_db, warn};
use crate::redis::replies;
use crate::redis::ttl;
use compact_str::CompactString;
use redis_module::{Context, ContextFlags, RedisError};
use std::time::Duration;

/// The row a captured key writes to.
pub struct Target {
    /// Index of the mapping.
    pub mapping: usize,
    /// Whether the key is the staging key (write-through) or the row's own hash.
    pub role: KeyRole,
    /// The row's primary key, checked and canonical (inline when short: no
    /// allocation per captured write).
    pub id: CompactString,
}

impl Target {
    /// The queue's name for the row.
    pub fn row(&self) -> RowKey {
        RowKey { mapping: self.mapping, id: self.id.clone() }
    }
}

/// Whether writes to a key of this mapping and role are sent to Postgres.
pub fn captured(mapping: &Mapping, role: KeyRole) -> bool {
    matches!((mapping.mode, role), (Mode::WriteThrough, KeyRole::Temp) | (Mode::WriteBehind, KeyRole::Main))
}

/// Whether this server captures writes now: a primary, in database 0 (where the
/// module applies its own writes), not replaying its AOF or a primary's stream.
pub fn capturing(ctx: &Context, rt: &Runtime) -> bool {
    let flags = ctx.get_flags();
    !rt.is_replica() && !flags.intersects(ContextFlags::LOADING | ContextFlags::REPLICATED) && selected_db(ctx) == 0
}

/// A write to a key of a mapping whose id can be no row's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRefusal {
    /// The mapping (its index).
    pub mapping: usize,
    /// The mapping's name, for the message.
    pub name: String,
    /// The key written.
    pub key: Vec<u8>,
    /// Why its id is refused.
    pub why: IdError,
}

impl std::fmt::Display for KeyRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: write to {} refused: {}", self.name, self.key.escape_ascii(), self.why)
    }
}

impl std::error::Error for KeyRefusal {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.why)
    }
}

/// The row behind `key` when writes to it are captured: `None` for keys the module
/// does not sync, `Err` for a key whose id can be no row's key.
pub fn target(rt: &Runtime, key: &[u8]) -> Option<Result<Target, KeyRefusal>> {
    let resolved = rt.mappings.resolve(key)?;
    let m = rt.mapping(resolved.mapping).def;
    if !captured(m, resolved.role) {
        return None;
    }
    Some(match checked_id(rt, resolved.mapping, resolved.id) {
        Ok(id) => Ok(Target { mapping: resolved.mapping, role: resolved.role, id: CompactString::new(id) }),
        Err(why) => Err(KeyRefusal { mapping: resolved.mapping, name: m.name.clone(), key: key.to_vec(), why }),
    })
}

/// The id of a key of `mapping` when it can be a row's key: valid text, and
/// each key column spelled as Postgres prints it (see `model::key_text`).
/// Pure Rust, for the main thread. Before the first schema check the key types
/// are unknown; the worker checks the id again against the schema before any SQL.
pub fn checked_id<'a>(rt: &Runtime, mapping: usize, id: &'a [u8]) -> Result<&'a str, IdError> {
    let id = check_id(id)?;
    let key = &rt.mapping(mapping).def.key;
    match rt.schema(mapping) {
        Some(schema) => key.check(id, &schema.key_types).inspect_err(|_| {
            // A label added to an enum key since the schema was read is unknown
            // here: the checker reads the schema again (at most this often), so
            // the label is accepted from then on.
            if schema.key_types.iter().any(KeyType::is_enum) && schema.read_at.elapsed() > ENUM_REREAD {
                rt.refresh_schema(mapping);
            }
        })?,
        None => key.split(id)?,
    };
    Ok(id)
}

/// How old a schema with an enum key column must be before a refused key (or
/// value, `value_refusal.rs`) has it read again: bad keys sent in a loop cost
/// the catalog a query this often.
pub const ENUM_REREAD: Duration = Duration::from_secs(1);

/// Counts and logs a write refused before it reached Redis or Postgres.
pub fn refuse(rt: &Runtime, mapping: usize, message: &str) {
    warn(message);
    let stats = rt.mapping(mapping).stats;
    MappingStats::bump(&stats.refused, 1);
    stats.set_last_error(message);
}

/// Keeps only the fields that reach a column: with an explicit `fields` map, the
/// others stay in Redis and cost the queue and journal nothing.
fn mapped_only(m: &Mapping, mut fields: Fields) -> Fields {
    fields.remove(OP_FIELD);
    if let Some(map) = &m.fields {
        fields.retain(|f, _| std::str::from_utf8(f).is_ok_and(|f| map.contains_key(f)));
    }
    fields
}

/// Field/value pairs as `Set` changes (a field named twice keeps its last value).
pub fn set_fields(pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Fields {
    pairs.into_iter().map(|(f, v)| (f, FieldChange::Set(v))).collect()
}

/// Queues a captured write of a row and journals it, in the command that made
/// the write. Returns the change's version, or `None` when
/// nothing goes to Postgres (a write of unmapped fields only: its acks are done).
pub fn record(ctx: &Context, rt: &Runtime, target: &Target, key: &[u8], write: Write) -> Option<u64> {
    let m = rt.mapping(target.mapping).def;
    // Write-through merges every staged field into the cached row after the commit,
    // unmapped ones included; write-behind need not remember fields SQL ignores.
    let fields = match m.mode {
        Mode::WriteBehind => mapped_only(m, write.fields),
        Mode::WriteThrough | Mode::ReadOnly | Mode::Document => {
            write.fields.into_iter().filter(|(f, _)| f != OP_FIELD).collect()
        }
    };
    let write = Write { fields, ..write };
    let write = match m.mode {
        Mode::WriteBehind => deadletter::carry(ctx, m, &target.id, write, || rt.dirty.holds(ctx, &target.row(), key)),
        Mode::WriteThrough | Mode::ReadOnly | Mode::Document => write,
    };
    loads::rows_changed(target.mapping, std::iter::once(target.id.as_str()));
    // Refreshed on every captured write that leaves the hash there, mapped
    // fields or not (a cache entry in use should stay).
    if m.ttl_on_write && write.op != RowOp::Delete {
        ttl::set_on(ctx, m, key);
    }
    if write.op == RowOp::Upsert && write.fields.is_empty() {
        ack::send(ctx, m, &target.id, &write.acks, &Ok(()));
        return None;
    }
    Some(rt.dirty.mark(ctx, target.row(), key, write))
}

/// Carries out an rgsync `#` operation written with HSET (or as the `#` member
/// of a root `JSON.SET`): `=` writes the other fields and syncs them, `~`
/// deletes in Redis and Postgres, `+` and `-` change Redis only. `write`
/// writes the other fields into a key as the client (the key written, or the
/// cached row's for `+`). Returns the version when the change goes to Postgres.
pub fn tagged_write(
    ctx: &Context,
    rt: &Runtime,
    target: &Target,
    key: &[u8],
    op_value: &[u8],
    fields: Fields,
    write: impl FnOnce(&[u8]) -> Result<(), RedisError>,
) -> Result<Option<u64>, RedisError> {
    let m = rt.mapping(target.mapping).def;
    let tag = decode_op(op_value).map_err(|e| {
        let message = format!("{}: write to {} refused: {e}", m.name, key.escape_ascii());
        refuse(rt, target.mapping, &message);
        replies::refused(&message)
    })?;
    let acks: Vec<String> = tag.uuid.into_iter().collect();
    let main_key = m.main_key(&target.id);
    let names = || fields.keys().map(|f| String::from_utf8_lossy(f).into_owned()).collect();
    match tag.op {
        SyncOp::Replicate => {
            write(key)?;
            Ok(record(ctx, rt, target, key, Write { op: RowOp::Upsert, fields, acks }))
        }
        SyncOp::Delete => {
            delete(ctx, &[main_key.as_bytes(), key])?;
            Ok(record(ctx, rt, target, key, Write { op: RowOp::Delete, fields: Fields::new(), acks }))
        }
        SyncOp::RedisOnlyUpsert => {
            write(main_key.as_bytes())?;
            // A Redis-only write is still a writer's write to the cached row.
            if m.ttl_on_write {
                ttl::set_on(ctx, m, main_key.as_bytes());
            }
            announce(ctx, rt, target, &main_key, EventOp::Upsert, names());
            ack::send(ctx, m, &target.id, &acks, &Ok(()));
            Ok(None)
        }
        SyncOp::RedisOnlyDelete => {
            delete(ctx, &[main_key.as_bytes(), key])?;
            announce(ctx, rt, target, &main_key, EventOp::Delete, Vec::new());
            ack::send(ctx, m, &target.id, &acks, &Ok(()));
            Ok(None)
        }
    }
}

/// The `#` operations write as the client would (its ACL, the OOM rule), also to
/// the cached row's key, which the client did not name.
pub fn hset(ctx: &Context, key: &[u8], pairs: &[(Vec<u8>, Vec<u8>)]) -> Result<(), RedisError> {
    if pairs.is_empty() {
        return Ok(());
    }
    let mut args: Vec<&[u8]> = vec![key];
    for (f, v) in pairs {
        args.push(f);
        args.push(v);
    }
    run_as_client(ctx, Command::Hset, &client_argv(ctx, b"HSET", &args, &[])).map(|_| ())
}

fn delete(ctx: &Context, keys: &[&[u8]]) -> Result<(), RedisError> {
    run_as_client(ctx, Command::Del, &client_argv(ctx, b"DEL", keys, &[])).map(|_| ())
}

/// Publishes a Redis-only change (`#` `+` or `-`).
fn announce(ctx: &Context, rt: &Runtime, target: &Target, key: &str, op: EventOp, fields: Vec<String>) {
    let event = Event { key, id: &target.id, op, source: Source::Redis, fields, time: now_ms() };
    notify::send(ctx, rt.mapping(target.mapping).def, rt.mapping(target.mapping).stats, &event);
}
