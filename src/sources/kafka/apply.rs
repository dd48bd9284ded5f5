//! Kafka → Redis apply: writes a batch of one partition's records into their
//! hashes and the partition's next offset into its Redis key, under one Redis
//! lock, so the AOF and the replicas get data and offset in one unit and a
//! restart resumes exactly after the last record applied. Each record is
//! written as the command a client would send (`HSET`/`HDEL`, or `DEL` for a
//! tombstone, through `direct_write`: keyspace events, replication) and
//! captured like a client's write (`capture::record`: queue and journal), so
//! write-behind carries it to Postgres and the change event follows the commit.
//! A record that cannot be applied goes to the dead-letter list with its raw
//! bytes; the stream goes on.
//!
//! In a cluster every primary reads the whole topic and applies only the
//! records whose keys it owns (a malformed record: the node owning its
//! dead-letter entry's name), so each record is applied once, by its owner.
//! Its offset keys carry the node's home tag; when that slot leaves, they move
//! to the next one (here before a batch, or in `SYNC.MIGRATE` through
//! [`absorb_offset`]) instead of leaving with it.

use super::client::Fetched;
use crate::model::change::{FieldChange, Fields, RowOp, Write};
use crate::model::intent::Command;
use crate::model::kafka::{decode, retagged_offset_key, Decoded, KafkaOrigin, KafkaSource, OFFSET_PREFIX};
use crate::model::mapping::{Mapping, Mode};
use crate::pipeline::capture::{self, Target};
use crate::pipeline::runtime::Runtime;
use crate::redis::cluster::{self, Place};
use crate::redis::deadletter;
use crate::redis::direct_write;
use crate::redis::redis_io::{self, string, warn};
use redis_module::{Context, RedisString, ThreadSafeContext};
use std::collections::HashMap;
use std::sync::Mutex;

/// What became of a batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    /// Written: how many records were applied and how many dead-lettered.
    Done {
        /// Records written into Redis.
        applied: u64,
        /// Records sent to the dead-letter list.
        dead: u64,
        /// Records stepped over: another cluster node owns their keys.
        skipped: u64,
        /// The next offset now stored: past the batch, or, when `held`, the
        /// first record not applied.
        next: i64,
        /// The batch stopped at a record whose key's slot is moving between
        /// cluster nodes: it is fetched again once the move is over.
        held: bool,
    },
    /// The offset key no longer holds what the consumer expected (a promotion,
    /// a restore, a flush): nothing was written; read the offsets again.
    Stale,
    /// This server is not a writing primary now (a replica, or loading its data).
    Idle,
}

/// The offsets a consumer resumes from, read under one lock: per partition, the
/// stored next offset (`None`: never consumed). `None` when this server does
/// not write now (a replica, or still loading).
pub fn read_offsets(rt: &Runtime, source: &KafkaSource, partitions: &[i32]) -> Option<Vec<Option<i64>>> {
    let tsc = ThreadSafeContext::new();
    let ctx = tsc.lock();
    if !capture::capturing(&ctx, rt) {
        return None;
    }
    let keys: Vec<String> = partitions.iter().map(|p| offset_key(&ctx, source, *p)).collect();
    let mut offsets: Vec<Option<i64>> = keys.iter().map(|key| read_offset(&ctx, key)).collect();
    if offsets.iter().any(Option::is_none) {
        bring_home(&ctx, source, partitions, &keys);
        offsets = keys.iter().map(|key| read_offset(&ctx, key)).collect();
    }
    Some(offsets)
}

/// Moves the offsets a cluster node finds under the tag of another of its slots
/// to `keys`, their names under its home tag, where they are missing. A replica
/// promoted while its primary's home slot was leaving finds them there: the old
/// primary moved them under its next slot's tag, and servers that do not
/// replicate a slot's migrating state (Redis 8.2) give the new primary the old
/// home tag. So does a node restarted after its home slot changed. Without
/// this the partitions would be consumed again from their start. One pass over
/// the owned slots, only when an offset is missing (a start or a promotion).
fn bring_home(ctx: &Context, source: &KafkaSource, partitions: &[i32], keys: &[String]) {
    let mut missing: Vec<(i32, &String)> =
        partitions.iter().copied().zip(keys).filter(|(_, key)| !cluster::key_exists(ctx, key.as_bytes())).collect();
    for slot in cluster::owned_slots(ctx) {
        if missing.is_empty() {
            return;
        }
        let tag = String::from_utf8_lossy(&cluster::slot_tag(slot)).into_owned();
        missing.retain(|(partition, home)| {
            let found = source.offset_key_in(&tag, *partition);
            if found == **home || !cluster::key_exists(ctx, found.as_bytes()) {
                return true;
            }
            move_offset(ctx, found.as_bytes(), home);
            false
        });
    }
}

/// The offset key each (topic, group, partition) was last used under on this
/// node: a cluster node's home tag changes when that slot starts leaving.
static LAST_KEYS: Mutex<Option<HashMap<String, String>>> = Mutex::new(None);

/// The offset key of `partition` on this node. In a cluster it carries the
/// node's home tag; when that tag changed since the key was last used, the
/// offset moves to the new key first (the old one's slot is leaving). Needs
/// the Redis lock.
fn offset_key(ctx: &Context, source: &KafkaSource, partition: i32) -> String {
    let Some(tag) = cluster::home_tag(ctx) else { return source.offset_key(partition) };
    let current = source.offset_key_in(&String::from_utf8_lossy(&tag), partition);
    let mut last = LAST_KEYS.lock().unwrap_or_else(|p| p.into_inner());
    let previous = last.get_or_insert_with(HashMap::new).insert(source.offset_key(partition), current.clone());
    if let Some(previous) = previous.filter(|p| *p != current) {
        move_offset(ctx, previous.as_bytes(), &current);
    }
    current
}

/// Moves the offset in `from` (if this node has it) to `to` (unless `to` has
/// one already), replicated, and deletes `from`.
fn move_offset(ctx: &Context, from: &[u8], to: &str) {
    if !cluster::key_exists(ctx, from) {
        return;
    }
    if !cluster::key_exists(ctx, to.as_bytes()) {
        if let Some(next) = read_offset(ctx, &String::from_utf8_lossy(from)) {
            write_offset(ctx, to, next);
        }
    }
    redis_io::call_logged(ctx, "DEL", &[from]);
}

/// `SYNC.MIGRATE` of a cluster node's offset key: it stays with this node,
/// under its current home tag, and is not migrated. Returns whether it was
/// taken care of (`false`: no offset key, or the node has no home slot left,
/// and then it leaves with its slot).
pub fn absorb_offset(ctx: &Context, key: &[u8]) -> bool {
    let Some(tag) = cluster::home_tag(ctx) else { return false };
    let Some(to) = retagged_offset_key(key, &tag) else { return false };
    if to == key {
        return false;
    }
    move_offset(ctx, key, &String::from_utf8_lossy(&to));
    true
}

/// Whether `key` is an offset key of a Kafka source.
pub fn is_offset_key(key: &[u8]) -> bool {
    key.starts_with(OFFSET_PREFIX.as_bytes())
}

/// Applies `records` of `partition` (in offset order) and stores `next` as the
/// partition's next offset, in one locked step, provided the offset key still
/// holds `expected`.
pub fn apply_records(
    rt: &Runtime,
    mapping: usize,
    partition: i32,
    expected: Option<i64>,
    records: &[Fetched],
    next: i64,
) -> Applied {
    let m = &rt.mappings.all()[mapping];
    let Some(source) = &m.kafka else { return Applied::Idle };
    let tsc = ThreadSafeContext::new();
    let ctx = tsc.lock();
    // Checked under the lock: a role change happens on the main thread, which
    // holds it, so no write below can land on a server that just became a replica.
    if !capture::capturing(&ctx, rt) {
        return Applied::Idle;
    }
    let offset_key = offset_key(&ctx, source, partition);
    if read_offset(&ctx, &offset_key) != expected {
        return Applied::Stale;
    }
    let (mut applied, mut dead, mut skipped, mut held) = (0, 0, 0, None);
    for record in records {
        let decoded = decode(source, record.key.as_deref(), record.value.as_deref());
        let place = match cluster::enabled() {
            true => cluster::place(&ctx, owner_key(m, source, partition, record.offset, &decoded).as_bytes()),
            false => Place::Mine,
        };
        match place {
            Place::Mine => {}
            Place::Elsewhere => {
                skipped += 1;
                continue;
            }
            Place::Moving => {
                held = Some(record.offset);
                break;
            }
        }
        let origin = || KafkaOrigin {
            topic: source.topic.clone(),
            partition,
            offset: record.offset,
            key: record.key.as_deref().map(|k| String::from_utf8_lossy(k).into_owned()),
            payload: record.value.as_deref().map(|v| String::from_utf8_lossy(v).into_owned()),
        };
        match decoded.and_then(|decoded| apply_decoded(&ctx, rt, m, decoded)) {
            Ok(()) => applied += 1,
            Err(why) => {
                dead_letter(&ctx, rt, m, origin(), &why);
                dead += 1;
            }
        }
    }
    let next = held.unwrap_or(next);
    write_offset(&ctx, &offset_key, next);
    Applied::Done { applied, dead, skipped, next, held: held.is_some() }
}

/// The key whose node applies a record in a cluster: the key it writes, or for
/// a record that names no row, its dead-letter entry's name.
fn owner_key(
    m: &Mapping,
    source: &KafkaSource,
    partition: i32,
    offset: i64,
    decoded: &Result<Decoded, String>,
) -> String {
    match decoded {
        Ok(decoded) => row_key(m, decoded.id()),
        Err(_) => deadletter::record_entry_id(
            &m.name,
            &KafkaOrigin { topic: source.topic.clone(), partition, offset, key: None, payload: None },
        ),
    }
}

/// The key a record of row `id` is written to: the staging key of a
/// write-through mapping (as its writers do), else the row's hash.
fn row_key(m: &Mapping, id: &str) -> String {
    match m.mode {
        Mode::WriteThrough => m.temp_key(id),
        Mode::WriteBehind | Mode::ReadOnly | Mode::Document => m.main_key(id),
    }
}

/// `SYNC.RETRY` of a dead-lettered record: applies it again (with the mapping
/// as loaded now); if it still cannot be applied, it goes back to the list.
/// Returns whether it was applied.
pub fn retry(ctx: &Context, rt: &Runtime, mapping: usize, origin: KafkaOrigin) -> bool {
    let m = &rt.mappings.all()[mapping];
    let (key, value) = (origin.key.as_deref().map(str::as_bytes), origin.payload.as_deref().map(str::as_bytes));
    let outcome = m
        .kafka
        .as_ref()
        .ok_or_else(|| "the mapping has no kafka source".to_string())
        .and_then(|source| decode(source, key, value))
        .and_then(|decoded| owned_here(ctx, m, &decoded).map(|()| decoded))
        .and_then(|decoded| apply_decoded(ctx, rt, m, decoded));
    match outcome {
        Ok(()) => true,
        Err(why) => {
            dead_letter(ctx, rt, m, origin, &why);
            false
        }
    }
}

/// In a cluster, whether this node writes the key a retried record names: a
/// dead letter lives on one node, the row it names may live on another.
fn owned_here(ctx: &Context, m: &Mapping, decoded: &Decoded) -> Result<(), String> {
    if !cluster::enabled() {
        return Ok(());
    }
    let row = row_key(m, decoded.id());
    match cluster::place(ctx, row.as_bytes()) {
        Place::Mine => Ok(()),
        Place::Moving | Place::Elsewhere => {
            Err(format!("{row} lives on another cluster node: retry there (SYNC.RETRY is per node)"))
        }
    }
}

fn dead_letter(ctx: &Context, rt: &Runtime, m: &Mapping, origin: KafkaOrigin, why: &str) {
    warn(&format!(
        "{}: Kafka record {}/{} offset {} dead-lettered: {why}",
        m.name, origin.topic, origin.partition, origin.offset
    ));
    deadletter::add_record(ctx, rt.drop_counters(), m, origin, why);
}

/// Writes one decoded record of mapping `m` into its key and captures it;
/// `Err` says why it cannot be.
fn apply_decoded(ctx: &Context, rt: &Runtime, m: &Mapping, decoded: Decoded) -> Result<(), String> {
    let row_key = row_key(m, decoded.id());
    let target: Target = match capture::target(rt, row_key.as_bytes()) {
        Some(Ok(target)) => target,
        Some(Err((_, why))) => return Err(why),
        None => return Err(format!("{row_key} is not a key this mapping writes to Postgres")),
    };
    match decoded {
        Decoded::Upsert { fields, .. } => {
            let (set, removed): (Vec<_>, Vec<_>) = fields.into_iter().partition(|(_, v)| v.is_some());
            let mut argv = vec![string(ctx, b"HSET"), string(ctx, row_key.as_bytes())];
            for (field, value) in &set {
                argv.push(string(ctx, field.as_bytes()));
                argv.push(string(ctx, value.as_deref().unwrap_or_default()));
            }
            if !set.is_empty() {
                run(ctx, Command::Hset, &argv)?;
            }
            if !removed.is_empty() {
                let mut argv = vec![string(ctx, b"HDEL"), string(ctx, row_key.as_bytes())];
                argv.extend(removed.iter().map(|(field, _)| string(ctx, field.as_bytes())));
                run(ctx, Command::Hdel, &argv)?;
            }
            let fields: Fields = set
                .into_iter()
                .chain(removed)
                .map(|(f, v)| (f.into_bytes(), v.map_or(FieldChange::Remove, FieldChange::Set)))
                .collect();
            capture::record(
                ctx,
                rt,
                &target,
                row_key.as_bytes(),
                Write { op: RowOp::Upsert, fields, acks: Vec::new() },
            );
        }
        Decoded::Delete { id } => {
            // As rgsync's `# ~`: the cached row and anything staged go, and the row.
            let mut argv = vec![string(ctx, b"DEL"), string(ctx, m.main_key(&id).as_bytes())];
            if m.mode == Mode::WriteThrough {
                argv.push(string(ctx, row_key.as_bytes()));
            }
            run(ctx, Command::Del, &argv)?;
            let write = Write { op: RowOp::Delete, fields: Fields::new(), acks: Vec::new() };
            capture::record(ctx, rt, &target, row_key.as_bytes(), write);
        }
    }
    Ok(())
}

fn run(ctx: &Context, command: Command, argv: &[RedisString]) -> Result<(), String> {
    direct_write::run_unchecked(ctx, command, argv).map(|_| ()).map_err(|e| e.to_string())
}

/// The next offset stored in `key` (`None`: none, or not a number, which is logged).
fn read_offset(ctx: &Context, key: &str) -> Option<i64> {
    let name = string(ctx, key.as_bytes());
    let value = match ctx.open_key(&name).read() {
        Ok(value) => value?.to_vec(),
        Err(e) => {
            warn(&format!("cannot read the Kafka offset {key}: {e}"));
            return None;
        }
    };
    let parsed = std::str::from_utf8(&value).ok().and_then(|t| t.parse().ok());
    if parsed.is_none() {
        warn(&format!("the Kafka offset {key} holds no number; consuming from the partition's start"));
    }
    parsed
}

/// Stores `next` in `key` with the key API and replicates it as `SET`, in the
/// unit of the lock that wrote the records.
fn write_offset(ctx: &Context, key: &str, next: i64) {
    let name = string(ctx, key.as_bytes());
    let text = next.to_string();
    let written = ctx.open_key_writable(&name).write(&text);
    if let Err(e) = written {
        return warn(&format!("cannot store the Kafka offset {key}: {e}"));
    }
    let value = string(ctx, text.as_bytes());
    redis_io::replicate(ctx, c"SET", &[&name, &value]);
}
