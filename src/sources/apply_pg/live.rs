//! The [`RowStore`] over the Redis key API: a row read from Postgres written
//! into its hash (or JSON document), replicated and announced as the commands
//! a client would send; a gone row's key deleted; events published.

use super::RowStore;
use crate::model::mapping::{Mapping, ValueType};
use crate::pipeline::runtime::Runtime;
use crate::redis::cluster::{self, Place};
use crate::redis::hash_key::Key;
use crate::redis::notify::{self, Event};
use crate::redis::read_through::loads;
use crate::redis::redis_io::{replicate, string, warn};
use crate::redis::ttl;
use crate::sources::apply_json::write_json_row;
use redis_module::{raw, Context, NotifyEvent, RedisString};

/// The live store: the Redis lock's context, and the counters events update.
pub(super) struct LiveStore<'a> {
    /// The context of the Redis lock the caller holds.
    pub ctx: &'a Context,
    /// The running module, for each mapping's counters.
    pub rt: &'a Runtime,
}

impl RowStore for LiveStore<'_> {
    fn place(&self, key: &str) -> Place {
        cluster::place(self.ctx, key.as_bytes())
    }

    fn write(&self, m: &Mapping, key: &str, fields: &[(String, Option<String>)]) -> bool {
        write_row(self.ctx, m, key, fields)
    }

    fn delete(&self, key: &str) {
        delete_row(self.ctx, key)
    }

    fn announce(&self, m: &Mapping, mapping: usize, event: &Event<'_>) {
        notify::send(self.ctx, m, self.rt.mapping(mapping).stats, event);
    }

    fn rows_changed(&self, mapping: usize, ids: &[&str]) {
        loads::rows_changed(mapping, ids.iter().copied());
    }
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
