//! The dead-letter list: changes Postgres rejected, with the error and the time,
//! kept in the Redis hash `pgsync:{deadletter}` so they survive restarts and reach
//! replicas. Operators list them (`SYNC.FAILED`), queue them again after fixing the
//! cause (`SYNC.RETRY`) or drop them (`SYNC.DISCARD`).

use crate::change::{Change, Delta, FieldChange, Fields, RowOp, Write};
use crate::mapping::Mapping;
use crate::queue::RowKey;
use crate::redis_io::{bytes, call, call_logged, own_writes};
use redis_module::{Context, RedisValue};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The dead-letter hash: entry id → JSON entry.
pub const DEADLETTER_KEY: &str = "pgsync:{deadletter}";

static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// One rejected change.
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
    /// Postgres's error message.
    pub error: String,
    /// When it was rejected, in ms since the Unix epoch.
    pub time_ms: u64,
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
        Write { op, fields, acks: Vec::new() }
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn op_name(op: RowOp) -> &'static str {
    match op {
        RowOp::Upsert => "upsert",
        RowOp::Delete => "delete",
        RowOp::Replace => "replace",
    }
}

/// Records a rejected change.
pub fn add(ctx: &Context, mapping: &Mapping, row: &RowKey, change: &Change, error: &str) {
    let time_ms = now_ms();
    let entry = DeadLetter {
        mapping: mapping.name.clone(),
        id: row.id.clone(),
        op: op_name(change.op).into(),
        fields: change
            .fields
            .iter()
            .filter_map(|(f, c)| {
                let value = match c {
                    FieldChange::Set(v) => Some(String::from_utf8_lossy(v).into_owned()),
                    FieldChange::Remove => None,
                    FieldChange::Add { .. } => return None,
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
        error: error.to_string(),
        time_ms,
    };
    let Ok(json) = serde_json::to_string(&entry) else {
        return;
    };
    // Ids sort by time; the sequence keeps two rejections in one millisecond apart.
    let id = format!("{time_ms}-{}", SEQUENCE.fetch_add(1, Ordering::Relaxed));
    own_writes(|| call_logged(ctx, "HSET", &[DEADLETTER_KEY.as_bytes(), id.as_bytes(), json.as_bytes()]));
}

/// Every entry, oldest first, as (entry id, entry).
pub fn list(ctx: &Context) -> Result<Vec<(String, DeadLetter)>, String> {
    let flat = match call(ctx, "HGETALL", &[DEADLETTER_KEY.as_bytes()])? {
        RedisValue::Array(items) => items.iter().filter_map(bytes).collect::<Vec<_>>(),
        _ => Vec::new(),
    };
    let mut entries: Vec<(String, DeadLetter)> = flat
        .chunks_exact(2)
        .filter_map(|p| {
            let id = String::from_utf8_lossy(&p[0]).into_owned();
            serde_json::from_slice(&p[1]).ok().map(|e| (id, e))
        })
        .collect();
    entries.sort_by_key(|(id, _)| sort_key(id));
    Ok(entries)
}

fn sort_key(id: &str) -> (u64, u64) {
    let (a, b) = id.split_once('-').unwrap_or((id, "0"));
    (a.parse().unwrap_or(0), b.parse().unwrap_or(0))
}

/// Removes one entry; returns whether it existed.
pub fn remove(ctx: &Context, id: &str) -> bool {
    let removed = own_writes(|| call(ctx, "HDEL", &[DEADLETTER_KEY.as_bytes(), id.as_bytes()]));
    matches!(removed, Ok(RedisValue::Integer(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_time_then_sequence() {
        let mut ids = vec!["20-1", "3-9", "20-0"];
        ids.sort_by_key(|id| sort_key(id));
        assert_eq!(ids, ["3-9", "20-0", "20-1"]);
    }
}
