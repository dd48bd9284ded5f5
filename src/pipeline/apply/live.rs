//! The live store of apply: the row's keys through the Redis lock's context,
//! messages through the notification, ack and dead-letter adapters.

use super::Store;
use crate::model::change::Change;
use crate::model::mapping::Mapping;
use crate::model::queue::{Outcome, RowKey};
use crate::model::stats::MappingStats;
use crate::pipeline::runtime::Runtime;
use crate::redis::json_doc::{self, DocError};
use crate::redis::notify::{self, Event};
use crate::redis::read_through::loads;
use crate::redis::redis_io::{bytes, call, call_logged, key_exists, string, CallError};
use crate::redis::{ack, deadletter, ttl};
use redis_module::{Context, RedisValue};

/// The store over the context of the Redis lock the caller holds.
pub(super) struct LiveStore<'a> {
    /// The Redis lock's context.
    pub ctx: &'a Context,
    /// The running module, for the dead-letter list's drop counters.
    pub rt: &'a Runtime,
}

/// Why a key could not be read or written.
#[derive(Debug)]
pub(super) enum LiveError {
    /// A command failed.
    Call(CallError),
    /// A document could not be read, merged or written.
    Doc(DocError<CallError>),
}

impl std::fmt::Display for LiveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LiveError::Call(e) => e.fmt(f),
            LiveError::Doc(e) => e.fmt(f),
        }
    }
}

impl Store for LiveStore<'_> {
    type Error = LiveError;

    fn exists(&self, key: &str) -> bool {
        key_exists(self.ctx, &string(self.ctx, key.as_bytes()))
    }

    fn hash_set(&self, key: &str, pairs: &[(&[u8], &[u8])]) {
        let mut args: Vec<&[u8]> = Vec::with_capacity(1 + 2 * pairs.len());
        args.push(key.as_bytes());
        pairs.iter().for_each(|(field, value)| args.extend([*field, *value]));
        call_logged(self.ctx, "HSET", &args);
    }

    fn hash_remove(&self, key: &str, fields: &[&[u8]]) {
        let mut args: Vec<&[u8]> = vec![key.as_bytes()];
        args.extend(fields);
        call_logged(self.ctx, "HDEL", &args);
    }

    fn delete(&self, key: &str) {
        call_logged(self.ctx, "DEL", &[key.as_bytes()]);
    }

    fn hash_values(&self, key: &str, fields: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, LiveError> {
        let mut args: Vec<&[u8]> = vec![key.as_bytes()];
        args.extend(fields);
        match call(self.ctx, "HMGET", &args).map_err(LiveError::Call)? {
            RedisValue::Array(values) => Ok(values.iter().map(bytes).collect()),
            // Not a hash's reply: nothing to compare, so nothing is cleared.
            _ => Ok(Vec::new()),
        }
    }

    fn json_merge(&self, key: &str, members: &[(String, Option<String>)]) -> Result<(), LiveError> {
        let set = |args: &[&[u8]]| call(self.ctx, "JSON.SET", args).map(drop);
        json_doc::merge_into(self.ctx, key.as_bytes(), members, set).map(drop).map_err(LiveError::Doc)
    }

    fn json_members(&self, key: &str, names: &[&[u8]]) -> Option<Vec<Option<String>>> {
        json_doc::members(self.ctx, key.as_bytes(), names)
    }

    fn json_remove(&self, key: &str, names: &[&[u8]]) -> Result<(), LiveError> {
        json_doc::remove_members(self.ctx, key.as_bytes(), names).map_err(LiveError::Doc)
    }

    fn expire(&self, m: &Mapping, key: &str) {
        ttl::set_on(self.ctx, m, key.as_bytes());
    }

    fn fill(&self, row: &RowKey) {
        loads::fill_after_write(row.clone());
    }

    fn announce(&self, m: &Mapping, stats: &MappingStats, event: &Event<'_>) {
        notify::send(self.ctx, m, stats, event);
    }

    fn ack(&self, m: &Mapping, id: &str, uuids: &[String], outcome: &Outcome) {
        ack::send(self.ctx, m, id, uuids, outcome);
    }

    fn dead_letter(&self, m: &Mapping, row: &RowKey, change: &Change, error: &str) {
        deadletter::add(self.ctx, self.rt.drop_counters(), m, row, change, error);
    }

    fn landed(&self, m: &Mapping, row: &RowKey, change: &Change) -> bool {
        deadletter::landed(self.ctx, m, row, change)
    }
}
