//! A Kafka source's stored offsets: one key per (topic, group, partition)
//! holding the next offset to consume, written in the same locked step as the
//! records (`apply.rs`). In a cluster the keys carry the node's home tag and
//! follow it when that slot leaves, instead of leaving with it.

use crate::model::kafka::{retagged_offset_key, KafkaSource, OFFSET_PREFIX};
use crate::pipeline::capture;
use crate::pipeline::runtime::Runtime;
use crate::redis::cluster;
use crate::redis::redis_io::{self, string, warn};
use redis_module::{Context, ThreadSafeContext};
use std::collections::HashMap;
use std::sync::Mutex;

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
pub(super) fn offset_key(ctx: &Context, source: &KafkaSource, partition: i32) -> String {
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

/// The next offset stored in `key` (`None`: none, or not a number, which is logged).
pub(super) fn read_offset(ctx: &Context, key: &str) -> Option<i64> {
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
pub(super) fn write_offset(ctx: &Context, key: &str, next: i64) {
    let name = string(ctx, key.as_bytes());
    let text = next.to_string();
    let written = ctx.open_key_writable(&name).write(&text);
    if let Err(e) = written {
        return warn(&format!("cannot store the Kafka offset {key}: {e}"));
    }
    let value = string(ctx, text.as_bytes());
    redis_io::replicate(ctx, c"SET", &[&name, &value]);
}
