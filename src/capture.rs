//! Capture: the keyspace handlers that notice writes to mapped keys, and the
//! post-notification job that, inside the same command, decodes `#`, queues the
//! row as dirty and journals it. It copies no field values (the worker reads the
//! key when the batch is taken), so its work is O(1) for an ordinary write, and it
//! never touches Postgres. Expiry and eviction are not subscribed: they are cache
//! events, never deletes.

use crate::ack;
use crate::change::{decode_op, OpTag, RowOp, SyncOp, Write, OP_FIELD};
use crate::guard::guard;
use crate::journal;
use crate::mapping::{check_id, KeyRole, Mapping, Mode};
use crate::notify::{self, now_ms, Event, EventOp, Source};
use crate::queue::RowKey;
use crate::redis_io::{call_logged, hgetall, is_own_write, own_writes, selected_db, warn};
use crate::runtime::{self, Runtime};
use crate::stats::MappingStats;
use redis_module::{Context, ContextFlags, KeyType, NotifyEvent};

/// Keyspace handler for hash events (HSET, HDEL, HINCRBY, ...). Setting or
/// removing a field's TTL changes no data, and a field expiring is a cache event
/// like a key expiring: none of them reaches Postgres.
pub fn on_hash_event(ctx: &Context, _kind: NotifyEvent, event: &str, key: &[u8]) {
    if event == "hexpired" {
        remember_field_expiry(key);
        return;
    }
    if matches!(event, "hexpire" | "hpersist") {
        return;
    }
    guard(|| schedule_capture(ctx, key));
}

thread_local! {
    /// The key whose last field just expired: Redis follows with a `del` for it,
    /// which is the expiry's doing, not a delete. Only the main thread uses it.
    static EXPIRED_FIELD_KEY: std::cell::RefCell<Option<Vec<u8>>> = const { std::cell::RefCell::new(None) };
}

fn remember_field_expiry(key: &[u8]) {
    EXPIRED_FIELD_KEY.with(|k| *k.borrow_mut() = Some(key.to_vec()));
}

/// Whether this `del` is the one that follows a field expiry on the same key.
fn follows_field_expiry(key: &[u8]) -> bool {
    EXPIRED_FIELD_KEY.with(|k| k.borrow_mut().take().is_some_and(|expired| expired == key))
}

/// Keyspace handler for generic events: DEL/UNLINK, RENAME, RESTORE, COPY change
/// which rows exist in write-behind mode. Other generic events change no row.
pub fn on_generic_event(ctx: &Context, _kind: NotifyEvent, event: &str, key: &[u8]) {
    if matches!(event, "del" | "rename_from" | "rename_to" | "restore" | "copy_to" | "move_to" | "move_from") {
        if event == "del" && follows_field_expiry(key) {
            return;
        }
        guard(|| schedule_capture(ctx, key));
    }
}

/// Whether writes to this key are sent to Postgres.
fn captured(mapping: &Mapping, role: KeyRole) -> bool {
    matches!((mapping.mode, role), (Mode::WriteThrough, KeyRole::Temp) | (Mode::WriteBehind, KeyRole::Main))
}

/// Writes are unsafe inside a keyspace callback, so the capture is deferred to a
/// post-notification job, which still runs inside the same command.
fn schedule_capture(ctx: &Context, key: &[u8]) {
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
    // Mapped keys live in database 0, where the module applies its own writes.
    if selected_db(ctx) != 0 {
        return;
    }
    let Some(resolved) = rt.mappings.resolve(key) else {
        return;
    };
    let mapping = resolved.mapping;
    if !captured(&rt.mappings.all()[mapping], resolved.role) {
        return;
    }
    let key = key.to_vec();
    let scheduled = ctx.add_post_notification_job(move |ctx| {
        guard(|| {
            let _ = capture_key(ctx, rt, mapping, &key);
        })
    });
    if scheduled == redis_module::Status::Err {
        warn("could not schedule the capture of a write");
    }
}

/// What a mapped key holds at capture time, read through the key API (no command
/// call, nothing copied but the `#` field).
enum KeyState {
    Missing,
    Hash { op_field: Option<Vec<u8>> },
    WrongType,
}

fn inspect(ctx: &Context, key: &[u8]) -> KeyState {
    let name = ctx.create_string(key);
    let opened = ctx.open_key(&name);
    match opened.key_type() {
        KeyType::Empty => KeyState::Missing,
        KeyType::Hash => match opened.hash_get("#") {
            Ok(value) => KeyState::Hash { op_field: value.map(|v| v.as_slice().to_vec()) },
            Err(_) => KeyState::WrongType,
        },
        _ => KeyState::WrongType,
    }
}

/// Captures a write to a mapped key: the staged hash `__{<prefix><id>}`
/// (write-through) or the hash `<prefix><id>` itself (write-behind). Only the fact
/// that the row is dirty is queued (and journaled); the worker reads the key when
/// the batch is taken. Returns the queued version when the change goes to Postgres.
pub fn capture_key(ctx: &Context, rt: &Runtime, mapping: usize, key: &[u8]) -> Result<Option<u64>, String> {
    let m = &rt.mappings.all()[mapping];
    let write_behind = m.mode == Mode::WriteBehind;
    let id_bytes = if write_behind { &key[m.key_prefix.len()..] } else { &key[3 + m.key_prefix.len()..key.len() - 1] };
    let refused = |why: String| {
        let message = format!("{}: write to {} refused: {why}", m.name, String::from_utf8_lossy(key));
        refuse(rt, mapping, &message);
        Err(message)
    };
    let op_field = match inspect(ctx, key) {
        KeyState::WrongType => return refused("the key is not a hash".into()),
        KeyState::Missing if !write_behind => return Ok(None),
        KeyState::Missing => None,
        KeyState::Hash { op_field } => op_field,
    };
    let tag = match op_field {
        Some(value) => {
            own_writes(|| call_logged(ctx, "HDEL", &[key, OP_FIELD]));
            decode_op(&value)
        }
        None => Ok(OpTag { op: SyncOp::Replicate, uuid: None }),
    };
    let (tag, id) = match tag.and_then(|tag| check_id(id_bytes).map(|id| (tag, id))) {
        Ok(ok) => ok,
        Err(e) => {
            // A staged write that can never sync is dropped; a cached row is kept.
            if !write_behind {
                own_writes(|| call_logged(ctx, "DEL", &[key]));
            }
            return refused(e);
        }
    };
    let acks: Vec<String> = tag.uuid.into_iter().collect();
    let main_key = m.main_key(id);
    let queue = |op: RowOp, acks: Vec<String>| {
        let write = Write { op, whole_row: write_behind, acks };
        let pushed = rt.queue.push(RowKey { mapping, id: id.to_string() }, write);
        if pushed.journal_changed {
            journal::mark(ctx, key, pushed.op, &pushed.acks);
        }
        Ok(Some(pushed.version))
    };
    let exists_now = || matches!(inspect(ctx, key), KeyState::Hash { .. });
    match tag.op {
        SyncOp::Replicate if exists_now() => queue(RowOp::Upsert, acks),
        // Write-behind: the hash is gone, so is the row.
        SyncOp::Replicate if write_behind => queue(RowOp::Delete, acks),
        // Write-through: staging nothing but `#` writes nothing.
        SyncOp::Replicate => {
            ack::send(ctx, m, id, &acks, &Ok(()));
            Ok(None)
        }
        SyncOp::Delete => {
            // The staged write (or the cached row) is consumed now.
            own_writes(|| call_logged(ctx, "DEL", &[key]));
            queue(RowOp::Delete, acks)
        }
        SyncOp::RedisOnlyUpsert => {
            let staged = hgetall(ctx, key).unwrap_or_default();
            if !write_behind {
                own_writes(|| {
                    let mut args: Vec<&[u8]> = vec![main_key.as_bytes()];
                    for (f, v) in &staged {
                        args.push(f);
                        args.push(v);
                    }
                    if args.len() > 1 {
                        call_logged(ctx, "HSET", &args);
                    }
                    call_logged(ctx, "DEL", &[key]);
                });
            }
            let fields = staged.iter().map(|(f, _)| String::from_utf8_lossy(f).into_owned()).collect();
            announce(ctx, m, &main_key, id, EventOp::Upsert, fields);
            ack::send(ctx, m, id, &acks, &Ok(()));
            Ok(None)
        }
        SyncOp::RedisOnlyDelete => {
            own_writes(|| {
                call_logged(ctx, "DEL", &[main_key.as_bytes()]);
                call_logged(ctx, "DEL", &[key]);
            });
            announce(ctx, m, &main_key, id, EventOp::Delete, Vec::new());
            ack::send(ctx, m, id, &acks, &Ok(()));
            Ok(None)
        }
    }
}

/// Publishes a Redis-only change (`#` `+` or `-`).
fn announce(ctx: &Context, m: &Mapping, key: &str, id: &str, op: EventOp, fields: Vec<String>) {
    notify::send(ctx, m, &Event { key, id, op, source: Source::Redis, fields, time: now_ms() });
}

/// Reports a write that cannot be synced (bad key, bad `#`, wrong type).
fn refuse(rt: &Runtime, mapping: usize, message: &str) {
    warn(message);
    let stats = &rt.stats[mapping];
    MappingStats::bump(&stats.failed, 1);
    stats.set_last_error(message);
}
