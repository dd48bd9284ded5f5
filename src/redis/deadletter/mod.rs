//! The dead-letter list: changes Postgres rejected, with the error and the time,
//! kept in Redis so they survive restarts and reach replicas. Operators list them
//! (`SYNC.FAILED`), queue them again after fixing the cause (`SYNC.RETRY`) or drop
//! them (`SYNC.DISCARD`).
//!
//! One entry per row: a row rejected again replaces its entry (the latest change
//! and error) and counts the failure, so a hot key that keeps failing costs one
//! entry. A rejected row's later writes carry its entry (`carry.rs`). The
//! entries live in the hash [`DEADLETTER_KEY`] (entry id → JSON); the sorted set [`ORDER_KEY`] orders the entry ids by their latest failure, so
//! listing reads only the entries it returns and the cap drops the stalest ones
//! (`pgsync.deadletter-max`). The entry id is `<mapping>:<row id>`: it names the
//! row, so ACL and mapping filters need no entry read. A Kafka record that
//! could not be applied (not JSON, no id) is an entry of its own, named
//! `<mapping>:kafka:<topic>:<partition>:<offset>`, holding the raw record.

use crate::model::change::{Change, Delta, FieldChange, Fields, RowOp, Write};
use crate::model::json_path_set::PathSet;
use crate::model::kafka::KafkaOrigin;
use crate::model::mapping::{Mapping, Mappings};
use crate::model::queue::RowKey;
use crate::model::stats::MappingStats;
use crate::redis::cluster;
use crate::redis::config;
use crate::redis::redis_io::{bytes, call, call_logged, own_writes, warn, CallError};
use redis_module::key::KeyFlags;
use redis_module::{Context, KeyType, RedisValue};

mod carry;
pub use carry::{carry, landed};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

/// The dead-letter hash of a single server: entry id → JSON entry.
pub const DEADLETTER_KEY: &str = "pgsync:{deadletter}";
/// The order of a single server's entries: entry id scored by the time (µs) of its latest failure.
pub const ORDER_KEY: &str = "pgsync:{deadletter}:order";

/// The dead-letter keys of this node: [`DEADLETTER_KEY`] and [`ORDER_KEY`] on
/// a single server; in a cluster, `pgsync:deadletter:{<tag>}` and
/// `pgsync:deadletter:{<tag>}:order`, the tag putting them in a slot this node
/// owns (`cluster::home_tag`), so every primary keeps its own list.
pub struct Keys {
    /// entry id → JSON entry; ACL checks of the list are made against it.
    pub hash: Vec<u8>,
    /// entry ids by time of the latest rejection.
    pub order: Vec<u8>,
}

/// Prefix of the dead-letter keys of cluster nodes.
pub const CLUSTER_PREFIX: &str = "pgsync:deadletter:{";

/// This node's dead-letter keys; see [`Keys`]. Needs the Redis lock.
pub fn keys(ctx: &Context) -> Keys {
    match cluster::home_tag(ctx) {
        Some(tag) => {
            let hash = [CLUSTER_PREFIX.as_bytes(), &tag, b"}"].concat();
            Keys { order: [hash.as_slice(), b":order"].concat(), hash }
        }
        None => Keys { hash: DEADLETTER_KEY.as_bytes().to_vec(), order: ORDER_KEY.as_bytes().to_vec() },
    }
}

/// Whether `key` is a dead-letter key (of this node or another one).
pub fn is_deadletter_key(key: &[u8]) -> bool {
    key == DEADLETTER_KEY.as_bytes() || key == ORDER_KEY.as_bytes() || key.starts_with(CLUSTER_PREFIX.as_bytes())
}

/// How many index members one step of a walk reads.
const STEP: usize = 500;

/// One rejected row: its latest rejected change and how often it was rejected.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeadLetter {
    /// Mapping name.
    pub mapping: String,
    /// Primary-key value.
    pub id: String,
    /// `upsert`, `delete` or `replace`.
    pub op: String,
    /// The fields that were set (non-UTF-8 bytes shown lossily); `null` = removed.
    pub fields: BTreeMap<String, Option<String>>,
    /// The fields that were incremented, with the increment.
    #[serde(default)]
    pub increments: BTreeMap<String, String>,
    /// The `json`/`jsonb` fields paths were set inside, each with its sets in
    /// order (path, as JSONPath below the member, and the JSON value).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub paths: BTreeMap<String, Vec<ShownPathSet>>,
    /// The latest error.
    pub error: String,
    /// The first error since the entry was made.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub first_error: String,
    /// When it was last rejected, in ms since the Unix epoch.
    pub time_ms: u64,
    /// When it was first rejected (since the entry was made), in ms.
    #[serde(default)]
    pub first_time_ms: u64,
    /// How many times the row was rejected since the entry was made.
    #[serde(default = "one")]
    pub count: u64,
    /// For a Kafka record that could not be applied: where it came from and its
    /// raw bytes (`op` is then `record`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaOrigin>,
}

fn one() -> u64 {
    1
}

/// A path set as an entry shows it: `{"path": "$.address.city", "names":
/// ["address", "city"], "value": "\"Bergen\""}` (`names` is what a retry sets).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ShownPathSet {
    /// The path below the member, as JSONPath, for people.
    pub path: String,
    /// The member names of the path.
    pub names: Vec<String>,
    /// The JSON value set there.
    pub value: String,
}

impl ShownPathSet {
    fn of(set: &PathSet) -> ShownPathSet {
        ShownPathSet { path: set.shown(), names: set.path.clone(), value: set.value.clone() }
    }
}

impl DeadLetter {
    /// The rejected change as a write to queue again (`SYNC.RETRY`).
    pub fn to_write(&self) -> Write {
        let op = match self.op.as_str() {
            "delete" => RowOp::Delete,
            "replace" => RowOp::Replace,
            _ => RowOp::Upsert,
        };
        let mut fields: Fields = self
            .fields
            .iter()
            .map(|(f, v)| {
                let change = v.as_ref().map_or(FieldChange::Remove, |v| FieldChange::Set(v.clone().into_bytes()));
                (f.clone().into_bytes(), change)
            })
            .collect();
        for (f, delta) in &self.increments {
            let float = delta.contains(['.', 'e', 'E', 'i', 'n']);
            if let Some(delta) = Delta::parse(delta.as_bytes(), float) {
                fields.insert(f.clone().into_bytes(), FieldChange::Add { delta, redis_after: Vec::new() });
            }
        }
        for (f, sets) in &self.paths {
            let sets = sets.iter().map(|s| PathSet { path: s.names.clone(), value: s.value.clone() }).collect();
            fields.insert(f.clone().into_bytes(), FieldChange::Paths(sets));
        }
        Write { op, fields, acks: Vec::new() }
    }
}

/// The entry id of a row: `<mapping>:<id>` (mapping names hold no `:`).
pub fn entry_id(mapping: &str, id: &str) -> String {
    format!("{mapping}:{id}")
}

/// The mapping name and row id an entry id names.
pub fn parse_entry_id(entry: &str) -> Option<(&str, &str)> {
    entry.split_once(':')
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

fn op_name(op: RowOp) -> &'static str {
    match op {
        RowOp::Upsert => "upsert",
        RowOp::Delete => "delete",
        RowOp::Replace => "replace",
    }
}

fn integer(value: &RedisValue) -> Option<i64> {
    match value {
        RedisValue::Integer(n) => Some(*n),
        RedisValue::Float(f) => Some(*f as i64),
        other => bytes(other).and_then(|b| std::str::from_utf8(&b).ok()?.parse::<f64>().ok()).map(|f| f as i64),
    }
}

/// Where entries dropped past `pgsync.deadletter-max` are counted: each
/// mapping's `dead_letters_dropped`, found by the mapping name in the entry id.
#[derive(Clone, Copy)]
pub struct DropCounters<'a> {
    /// The mappings, to find an entry's mapping by name.
    pub mappings: &'a Mappings,
    /// Counters by mapping index.
    pub stats: &'a [MappingStats],
}

/// The entry id of a Kafka record: `<mapping>:kafka:<topic>:<partition>:<offset>`.
pub fn record_entry_id(mapping: &str, origin: &KafkaOrigin) -> String {
    entry_id(mapping, &format!("kafka:{}:{}:{}", origin.topic, origin.partition, origin.offset))
}

/// Records a Kafka record that could not be applied, with why.
pub fn add_record(ctx: &Context, counters: DropCounters, mapping: &Mapping, origin: KafkaOrigin, error: &str) {
    let entry_id = record_entry_id(&mapping.name, &origin);
    let id = parse_entry_id(&entry_id).map_or_else(String::new, |(_, id)| id.to_string());
    let entry = DeadLetter {
        mapping: mapping.name.clone(),
        id,
        op: "record".into(),
        fields: BTreeMap::new(),
        increments: BTreeMap::new(),
        paths: BTreeMap::new(),
        error: error.to_string(),
        first_error: String::new(),
        time_ms: 0,
        first_time_ms: 0,
        count: 0,
        kafka: Some(origin),
    };
    store(ctx, counters, &entry_id, entry);
}

/// Records a rejected change: replaces the row's entry (counting the failure) and
/// moves it to the end of the order, then drops the stalest entries past the cap.
pub fn add(ctx: &Context, counters: DropCounters, mapping: &Mapping, row: &RowKey, change: &Change, error: &str) {
    let entry = DeadLetter {
        mapping: mapping.name.clone(),
        id: row.id.to_string(),
        op: op_name(change.op).into(),
        fields: change
            .fields
            .iter()
            .filter_map(|(f, c)| {
                let value = match c {
                    FieldChange::Set(v) => Some(String::from_utf8_lossy(v).into_owned()),
                    FieldChange::Remove => None,
                    FieldChange::Add { .. } | FieldChange::Paths(_) => return None,
                };
                Some((String::from_utf8_lossy(f).into_owned(), value))
            })
            .collect(),
        increments: change
            .fields
            .iter()
            .filter_map(|(f, c)| match c {
                FieldChange::Add { delta, .. } => Some((String::from_utf8_lossy(f).into_owned(), delta.to_text())),
                _ => None,
            })
            .collect(),
        paths: change
            .fields
            .iter()
            .filter_map(|(f, c)| match c {
                FieldChange::Paths(sets) => {
                    Some((String::from_utf8_lossy(f).into_owned(), sets.iter().map(ShownPathSet::of).collect()))
                }
                _ => None,
            })
            .collect(),
        error: error.to_string(),
        first_error: String::new(),
        time_ms: 0,
        first_time_ms: 0,
        count: 0,
        kafka: None,
    };
    store(ctx, counters, &entry_id(&mapping.name, &row.id), entry);
}

/// Writes `entry` as `entry_id`, stamped with the time, the first time and the
/// count it takes over from the entry it replaces; then trims the list.
fn store(ctx: &Context, counters: DropCounters, entry_id: &str, entry: DeadLetter) {
    // Scores are µs and strictly increasing, so the order is the order of the
    // rejections even within one millisecond, and SYNC.FAILED lists them so.
    let keys = keys(ctx);
    let newest = match call(ctx, "ZRANGE", &[&keys.order, b"-1", b"-1", b"WITHSCORES"]) {
        Ok(RedisValue::Array(items)) => items.get(1).and_then(integer).unwrap_or(0),
        _ => 0,
    };
    let score = now_us().max(u64::try_from(newest).unwrap_or(0) + 1);
    let time_ms = score / 1000;
    let previous = tally(ctx, &keys, entry_id);
    let first_error = previous.as_ref().map_or_else(|| entry.error.clone(), |p| p.first_error().to_string());
    let entry = DeadLetter {
        time_ms,
        first_error,
        first_time_ms: previous.as_ref().map_or(time_ms, Tally::first),
        count: previous.as_ref().map_or(1, |p| p.count.saturating_add(1)),
        ..entry
    };
    let Ok(json) = serde_json::to_string(&entry) else {
        return;
    };
    let score = score.to_string();
    own_writes(|| {
        call_logged(ctx, "HSET", &[&keys.hash, entry_id.as_bytes(), json.as_bytes()]);
        call_logged(ctx, "ZADD", &[&keys.order, score.as_bytes(), entry_id.as_bytes()]);
        trim(ctx, counters, &keys, config::count(&config::DEADLETTER_MAX));
    });
}

/// Moves the entries of another dead-letter list of this node (named by its hash
/// or its order key) into the node's own list, keeping the newer entry of a row
/// present in both, then deletes the other list. For resharding: when the slot
/// of the node's list is moved away, the list stays with the node under its new
/// home tag instead of leaving with the slot. O(entries moved), at most
/// `pgsync.deadletter-max`, once per move of that slot. Returns whether the
/// other list is gone.
pub fn absorb(ctx: &Context, counters: DropCounters, other: &[u8]) -> bool {
    let keys = keys(ctx);
    let other_hash = other.strip_suffix(b":order").unwrap_or(other).to_vec();
    // Without a home slot of its own (the node's last slot leaves), the list
    // leaves with its slot.
    let homed = keys.hash.starts_with(CLUSTER_PREFIX.as_bytes());
    if !homed || other_hash == keys.hash || !other_hash.starts_with(CLUSTER_PREFIX.as_bytes()) {
        return false;
    }
    let other_order = [other_hash.as_slice(), b":order"].concat();
    let entries = match crate::redis::redis_io::hgetall(ctx, &other_hash) {
        Ok(entries) => entries,
        Err(e) => {
            warn(&format!("cannot read the dead letters {}: {e}", other_hash.escape_ascii()));
            return false;
        }
    };
    own_writes(|| {
        for (id, json) in entries {
            let Ok(entry) = serde_json::from_slice::<Tally>(&json) else { continue };
            let ours = std::str::from_utf8(&id).ok().and_then(|id| tally(ctx, &keys, id));
            if ours.is_some_and(|ours| ours.time_ms >= entry.time_ms) {
                continue;
            }
            let score = (entry.time_ms * 1000).to_string();
            call_logged(ctx, "HSET", &[&keys.hash, &id, &json]);
            call_logged(ctx, "ZADD", &[&keys.order, score.as_bytes(), &id]);
        }
        call_logged(ctx, "DEL", &[&other_hash, &other_order]);
        trim(ctx, counters, &keys, config::count(&config::DEADLETTER_MAX));
    });
    true
}

/// What a new rejection of a row takes over from its entry. Read alone, so the
/// row's values (up to `pgsync.max-row-bytes`) are skipped, not copied.
#[derive(Deserialize)]
struct Tally {
    time_ms: u64,
    #[serde(default)]
    error: String,
    #[serde(default)]
    first_error: String,
    #[serde(default)]
    first_time_ms: u64,
    #[serde(default = "one")]
    count: u64,
}

impl Tally {
    /// The first rejection's time (entries of the first format have only one).
    fn first(&self) -> u64 {
        if self.first_time_ms == 0 {
            self.time_ms
        } else {
            self.first_time_ms
        }
    }

    /// The first rejection's error (entries made before it was kept have only the latest).
    fn first_error(&self) -> &str {
        if self.first_error.is_empty() {
            &self.error
        } else {
            &self.first_error
        }
    }
}

fn tally(ctx: &Context, keys: &Keys, entry: &str) -> Option<Tally> {
    let json = call(ctx, "HGET", &[&keys.hash, entry.as_bytes()]).ok()?;
    serde_json::from_slice(&bytes(&json)?).ok()
}

/// Drops the stalest entries past `max`, counting the drops per mapping.
fn trim(ctx: &Context, counters: DropCounters, keys: &Keys, max: usize) {
    let size = match call(ctx, "ZCARD", &[&keys.order]) {
        Ok(RedisValue::Integer(n)) => usize::try_from(n).unwrap_or(0),
        _ => return,
    };
    if size <= max {
        return;
    }
    let last = (size - max - 1).to_string();
    let range: [&[u8]; 3] = [&keys.order, b"0", last.as_bytes()];
    let dropped: Vec<Vec<u8>> = match call(ctx, "ZRANGE", &range) {
        Ok(RedisValue::Array(items)) => items.iter().filter_map(bytes).collect(),
        Ok(_) => Vec::new(),
        Err(e) => {
            warn(&format!("cannot trim the dead-letter list: {e}"));
            return;
        }
    };
    call_logged(ctx, "ZREMRANGEBYRANK", &range);
    if dropped.is_empty() {
        return;
    }
    let mut args: Vec<&[u8]> = vec![&keys.hash];
    args.extend(dropped.iter().map(Vec::as_slice));
    call_logged(ctx, "HDEL", &args);
    for entry in &dropped {
        let name = parse_entry_id(&String::from_utf8_lossy(entry)).map(|(m, _)| m.to_string());
        if let Some((i, _)) = name.and_then(|m| counters.mappings.by_name(&m)) {
            MappingStats::bump(&counters.stats[i].dead_letters_dropped, 1);
        }
    }
}

/// The entry `entry`, if there is one.
pub fn get(ctx: &Context, entry: &str) -> Result<Option<DeadLetter>, CallError> {
    let json = call(ctx, "HGET", &[&keys(ctx).hash, entry.as_bytes()])?;
    Ok(bytes(&json).and_then(|json| serde_json::from_slice(&json).ok()))
}

/// Whether there is an entry `entry` (without reading it).
pub fn exists(ctx: &Context, entry: &str) -> Result<bool, CallError> {
    Ok(matches!(call(ctx, "HEXISTS", &[&keys(ctx).hash, entry.as_bytes()])?, RedisValue::Integer(1)))
}

/// Walks the entry ids oldest first, a step at a time, and returns up to `max`
/// of those `wanted` accepts. Costs O(ids walked), never a read of an entry.
pub fn ids(ctx: &Context, max: usize, wanted: &mut dyn FnMut(&str) -> bool) -> Result<Vec<String>, CallError> {
    let mut out = Vec::new();
    let mut start = 0usize;
    let order = keys(ctx).order;
    while out.len() < max {
        let stop = (start + STEP - 1).to_string();
        let page = match call(ctx, "ZRANGE", &[&order, start.to_string().as_bytes(), stop.as_bytes()])? {
            RedisValue::Array(items) => items.iter().filter_map(bytes).collect::<Vec<_>>(),
            _ => Vec::new(),
        };
        let last_page = page.len() < STEP;
        for id in page {
            let id = String::from_utf8_lossy(&id).into_owned();
            if out.len() < max && wanted(&id) {
                out.push(id);
            }
        }
        if last_page {
            break;
        }
        start += STEP;
    }
    Ok(out)
}

/// The entries `ids` (in that order), skipping any that are gone.
pub fn entries(ctx: &Context, ids: Vec<String>) -> Result<Vec<(String, DeadLetter)>, CallError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let hash = keys(ctx).hash;
    let mut args: Vec<&[u8]> = vec![&hash];
    args.extend(ids.iter().map(String::as_bytes));
    let values = match call(ctx, "HMGET", &args)? {
        RedisValue::Array(values) => values,
        _ => Vec::new(),
    };
    Ok(ids
        .into_iter()
        .zip(values)
        .filter_map(|(id, json)| Some((id, serde_json::from_slice(&bytes(&json)?).ok()?)))
        .collect())
}

/// The module's own look at the list: no hit or miss in `INFO`'s keyspace
/// figures, no change to its LRU/LFU data.
const UNSEEN: KeyFlags = KeyFlags::NOSTATS.union(KeyFlags::NOTOUCH);

/// The entry of a row, read with the key API: on the write path, where the
/// list is usually empty, that is one lookup and no command call.
pub fn of_row(ctx: &Context, mapping: &str, id: &str) -> Option<DeadLetter> {
    let hash = ctx.create_string(keys(ctx).hash);
    let key = ctx.open_key_with_flags(&hash, UNSEEN);
    if key.key_type() != KeyType::Hash {
        return None;
    }
    let json = key.hash_get(&entry_id(mapping, id)).ok()??;
    serde_json::from_slice(json.as_slice()).ok()
}

/// Whether the list holds any entry (once per batch, so that rows landing
/// while it is empty cost no lookup each).
pub fn any(ctx: &Context) -> bool {
    let hash = ctx.create_string(keys(ctx).hash);
    ctx.open_key_with_flags(&hash, UNSEEN).key_type() != KeyType::Empty
}

/// Removes one entry; returns whether it existed.
pub fn remove(ctx: &Context, entry: &str) -> bool {
    let keys = keys(ctx);
    own_writes(|| {
        let _ = call(ctx, "ZREM", &[&keys.order, entry.as_bytes()]);
        matches!(call(ctx, "HDEL", &[&keys.hash, entry.as_bytes()]), Ok(RedisValue::Integer(1)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids_name_the_row_even_when_the_id_holds_colons() {
        let id = entry_id("users", "a:b");
        assert_eq!(id, "users:a:b");
        assert_eq!(parse_entry_id(&id), Some(("users", "a:b")));
    }

    #[test]
    fn a_path_set_shows_readably_and_is_retried_as_it_was() {
        let set = PathSet { path: vec!["address".into(), "city".into()], value: "\"Bergen\"".into() };
        let paths = [("profile".to_string(), vec![ShownPathSet::of(&set)])].into_iter().collect();
        let json = serde_json::to_string(&paths).unwrap();
        assert_eq!(json, r#"{"profile":[{"path":"$.address.city","names":["address","city"],"value":"\"Bergen\""}]}"#);
        let old = r#"{"mapping":"m","id":"1","op":"upsert","fields":{},"error":"e","time_ms":5}"#;
        let mut entry: DeadLetter = serde_json::from_str(old).unwrap();
        assert!(entry.paths.is_empty());
        entry.paths = paths;
        let write = entry.to_write();
        assert_eq!(write.fields.get(b"profile"), Some(&FieldChange::Paths(vec![set])));
    }

    #[test]
    fn entries_of_the_old_format_read_as_one_failure() {
        let old = r#"{"mapping":"m","id":"1","op":"upsert","fields":{},"error":"e","time_ms":5}"#;
        let entry: DeadLetter = serde_json::from_str(old).unwrap();
        assert_eq!((entry.count, entry.first_time_ms), (1, 0));
    }
}
