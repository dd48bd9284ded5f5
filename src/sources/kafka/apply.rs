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
//! Its offset keys carry the node's home tag (`offsets.rs`).
//!
//! The rules live here, over the narrow [`RecordStore`] trait, so that they are
//! unit-tested with an in-memory fake (`apply/tests.rs`); `apply/live.rs` is the
//! store over Redis and capture.

mod live;
#[cfg(test)]
mod tests;

use super::client::Fetched;
use crate::model::change::{FieldChange, Fields, RowOp, Write};
use crate::model::intent::Command;
use crate::model::kafka::{decode, DecodeError, Decoded, KafkaOrigin, KafkaSource};
use crate::model::mapping::{Mapping, Mode};
use crate::pipeline::capture::KeyRefusal;
use crate::pipeline::runtime::Runtime;
use crate::redis::cluster::Place;
use crate::redis::deadletter;
use redis_module::{Context, ThreadSafeContext};
use std::fmt;

// `SYNC.MIGRATE` asks here whether a key is an offset and keeps it.
pub use super::offsets::{absorb_offset, is_offset_key};

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

/// Why a record cannot be applied; its text is what the dead letter says.
#[derive(Debug)]
pub enum Refusal {
    /// The record cannot be read as a row (the decoder's reason).
    Undecodable(DecodeError),
    /// The mapping has no Kafka source (any more: a retry after a reload).
    NoSource,
    /// A retried record's row lives on another cluster node.
    OtherNode {
        /// The row's key.
        key: String,
    },
    /// The row's key is not one the mapping writes to Postgres.
    NotSynced {
        /// The row's key.
        key: String,
    },
    /// Capture refuses the key (boxed: the refusal is large, and rare).
    Capture(Box<KeyRefusal>),
    /// The write command failed (Redis's error text).
    Command(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Undecodable(why) => why.fmt(f),
            Refusal::Capture(why) => why.fmt(f),
            Refusal::Command(why) => f.write_str(why),
            Refusal::NoSource => f.write_str("the mapping has no kafka source"),
            Refusal::OtherNode { key } => {
                write!(f, "{key} lives on another cluster node: retry there (SYNC.RETRY is per node)")
            }
            Refusal::NotSynced { key } => write!(f, "{key} is not a key this mapping writes to Postgres"),
        }
    }
}

impl std::error::Error for Refusal {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Refusal::Undecodable(why) => Some(why),
            Refusal::Capture(why) => Some(why.as_ref()),
            _ => None,
        }
    }
}

/// One record's write: the commands a client would send, in order (each
/// `argv` starts with the command's name), and the change captured after them.
#[derive(Debug, PartialEq)]
pub(crate) struct Plan {
    /// The key the change is captured under (see [`row_key`]).
    pub key: String,
    /// The commands and their arguments.
    pub commands: Vec<(Command, Vec<Vec<u8>>)>,
    /// The change to capture once the commands are written.
    pub write: Write,
}

/// What applying records needs of Redis, under the Redis lock the caller
/// holds. Narrow so that the rules above it run against a fake.
pub(crate) trait RecordStore {
    /// Whether this server writes now: a primary, not loading its data.
    fn writing(&self) -> bool;

    /// The key holding `partition`'s next offset on this node.
    fn offset_key(&self, source: &KafkaSource, partition: i32) -> String;

    /// The next offset `key` holds (`None`: none, or not a number).
    fn read_offset(&self, key: &str) -> Option<i64>;

    /// Stores `next` in `key`.
    fn write_offset(&self, key: &str, next: i64);

    /// Where `key` stands in a cluster (always [`Place::Mine`] outside one).
    fn place(&self, key: &str) -> Place;

    /// Runs a record's commands and captures its change; `Err` when it cannot.
    fn write(&self, plan: Plan) -> Result<(), Refusal>;

    /// Puts a record that cannot be applied on the dead-letter list.
    fn dead_letter(&self, m: &Mapping, origin: KafkaOrigin, why: &Refusal);
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
    let m = rt.mapping(mapping).def;
    let Some(source) = &m.kafka else { return Applied::Idle };
    let tsc = ThreadSafeContext::new();
    let ctx = tsc.lock();
    let batch = Batch { m, source, partition, expected, records, next };
    apply_batch(&live::LiveStore { ctx: &ctx, rt }, &batch)
}

/// One partition's fetched records and where they stand.
pub(crate) struct Batch<'a> {
    /// The mapping they feed.
    pub m: &'a Mapping,
    /// Its Kafka source.
    pub source: &'a KafkaSource,
    /// The partition they come from.
    pub partition: i32,
    /// The next offset the consumer believes is stored.
    pub expected: Option<i64>,
    /// The records, in offset order.
    pub records: &'a [Fetched],
    /// The offset after the last record.
    pub next: i64,
}

/// The rules of [`apply_records`] over any [`RecordStore`], which must hold the
/// Redis lock: a role change happens on the main thread, which holds it, so no
/// write can land on a server that just became a replica.
pub(crate) fn apply_batch(store: &impl RecordStore, batch: &Batch<'_>) -> Applied {
    let Batch { m, source, partition, expected, records, next } = *batch;
    if !store.writing() {
        return Applied::Idle;
    }
    let offset_key = store.offset_key(source, partition);
    if store.read_offset(&offset_key) != expected {
        return Applied::Stale;
    }
    let (mut applied, mut dead, mut skipped, mut held) = (0, 0, 0, None);
    for record in records {
        let decoded = decode(source, record.key.as_deref(), record.value.as_deref()).map_err(Refusal::Undecodable);
        match store.place(&owner_key(m, source, partition, record.offset, &decoded)) {
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
        match decoded.and_then(|decoded| store.write(plan(m, decoded))) {
            Ok(()) => applied += 1,
            Err(why) => {
                let origin = KafkaOrigin {
                    topic: source.topic.clone(),
                    partition,
                    offset: record.offset,
                    key: record.key.as_deref().map(|k| String::from_utf8_lossy(k).into_owned()),
                    payload: record.value.as_deref().map(|v| String::from_utf8_lossy(v).into_owned()),
                };
                store.dead_letter(m, origin, &why);
                dead += 1;
            }
        }
    }
    let next = held.unwrap_or(next);
    store.write_offset(&offset_key, next);
    Applied::Done { applied, dead, skipped, next, held: held.is_some() }
}

/// The key whose node applies a record in a cluster: the key it writes, or for
/// a record that names no row, its dead-letter entry's name.
fn owner_key(
    m: &Mapping,
    source: &KafkaSource,
    partition: i32,
    offset: i64,
    decoded: &Result<Decoded, Refusal>,
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

/// The write of one decoded record of mapping `m`: an upsert sets the fields
/// with a value and removes the null ones, keeping the others (a merge, as a
/// client's `HSET`/`HDEL`); a tombstone deletes the row's hash and, for
/// write-through, anything staged (as rgsync's `# ~`).
pub(crate) fn plan(m: &Mapping, decoded: Decoded) -> Plan {
    let key = row_key(m, decoded.id());
    let argv = |name: &[u8], key: &str| vec![name.to_vec(), key.as_bytes().to_vec()];
    match decoded {
        Decoded::Upsert { fields, .. } => {
            let (set, removed): (Vec<_>, Vec<_>) = fields.into_iter().partition(|(_, v)| v.is_some());
            let mut commands = Vec::new();
            if !set.is_empty() {
                let mut hset = argv(b"HSET", &key);
                for (field, value) in &set {
                    hset.push(field.as_bytes().to_vec());
                    hset.push(value.clone().unwrap_or_default());
                }
                commands.push((Command::Hset, hset));
            }
            if !removed.is_empty() {
                let mut hdel = argv(b"HDEL", &key);
                hdel.extend(removed.iter().map(|(field, _)| field.as_bytes().to_vec()));
                commands.push((Command::Hdel, hdel));
            }
            let fields: Fields = set
                .into_iter()
                .chain(removed)
                .map(|(f, v)| (f.into_bytes(), v.map_or(FieldChange::Remove, FieldChange::Set)))
                .collect();
            Plan { key, commands, write: Write { op: RowOp::Upsert, fields, acks: Vec::new() } }
        }
        Decoded::Delete { id } => {
            let mut del = argv(b"DEL", &m.main_key(&id));
            if m.mode == Mode::WriteThrough {
                del.push(key.as_bytes().to_vec());
            }
            let write = Write { op: RowOp::Delete, fields: Fields::new(), acks: Vec::new() };
            Plan { key, commands: vec![(Command::Del, del)], write }
        }
    }
}

/// `SYNC.RETRY` of a dead-lettered record: applies it again (with the mapping
/// as loaded now); if it still cannot be applied, it goes back to the list.
/// Returns whether it was applied.
pub fn retry(ctx: &Context, rt: &Runtime, mapping: usize, origin: KafkaOrigin) -> bool {
    retry_record(&live::LiveStore { ctx, rt }, rt.mapping(mapping).def, origin)
}

/// The rules of [`retry`] over any [`RecordStore`].
pub(crate) fn retry_record(store: &impl RecordStore, m: &Mapping, origin: KafkaOrigin) -> bool {
    let (key, value) = (origin.key.as_deref().map(str::as_bytes), origin.payload.as_deref().map(str::as_bytes));
    let outcome = m
        .kafka
        .as_ref()
        .ok_or(Refusal::NoSource)
        .and_then(|source| decode(source, key, value).map_err(Refusal::Undecodable))
        .and_then(|decoded| owned_here(store, m, &decoded).map(|()| decoded))
        .and_then(|decoded| store.write(plan(m, decoded)));
    match outcome {
        Ok(()) => true,
        Err(why) => {
            store.dead_letter(m, origin, &why);
            false
        }
    }
}

/// In a cluster, whether this node writes the key a retried record names: a
/// dead letter lives on one node, the row it names may live on another.
fn owned_here(store: &impl RecordStore, m: &Mapping, decoded: &Decoded) -> Result<(), Refusal> {
    let key = row_key(m, decoded.id());
    match store.place(&key) {
        Place::Mine => Ok(()),
        Place::Moving | Place::Elsewhere => Err(Refusal::OtherNode { key }),
    }
}
