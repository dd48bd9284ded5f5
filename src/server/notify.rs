//! Change notifications: every change applied in either direction is published on
//! `<notify>:<id>` as JSON, and appended to the mapping's changelog stream when it
//! has one (so consumers that were away can catch up with consumer groups).
//!
//! In a cluster, `PUBLISH` reaches subscribers on every node; with
//! `notify_sharded` the event goes out with `SPUBLISH` on `<notify>:{<key>}`,
//! a channel in the row's own slot, which only that shard carries. The
//! changelog stream is per node there: `<stream>:{<tag>}`, the tag putting it
//! in a slot the node owns (`cluster::home_tag`).

use crate::model::mapping::Mapping;
use crate::server::cluster;
use crate::server::redis_io::{call_logged, publish};
use redis_module::Context;
use serde::Serialize;
use std::time::{SystemTime, UNIX_EPOCH};

/// Where a change came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A Redis write that was committed to Postgres (or a Redis-only `#` op).
    Redis,
    /// A Postgres change applied to Redis by the listener.
    Postgres,
    /// A row loaded by `SYNC.RELOAD`.
    Reload,
}

/// What happened to the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventOp {
    /// The row was inserted or updated.
    Upsert,
    /// The row was deleted.
    Delete,
}

/// One change event, as published.
#[derive(Debug, Clone, Serialize)]
pub struct Event<'a> {
    /// The row's Redis key.
    pub key: &'a str,
    /// The row's primary key.
    pub id: &'a str,
    /// Upsert or delete.
    pub op: EventOp,
    /// Which side the change came from.
    pub source: Source,
    /// Names of the hash fields that changed.
    pub fields: Vec<String>,
    /// When it was applied, in ms since the Unix epoch.
    pub time: u64,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Whether `mapping` publishes changes from `source` at all.
pub fn wanted(mapping: &Mapping, source: Source) -> bool {
    (mapping.notify.is_some() || mapping.changelog.is_some()) && (source != Source::Reload || mapping.notify_reload)
}

/// Publishes one event for `mapping` (if it asks for notifications).
pub fn send(ctx: &Context, mapping: &Mapping, event: &Event<'_>) {
    if !wanted(mapping, event.source) {
        return;
    }
    let Ok(json) = serde_json::to_string(event) else { return };
    if let Some(prefix) = &mapping.notify {
        match mapping.notify_sharded {
            false => publish(ctx, "PUBLISH", format!("{prefix}:{}", event.id).as_bytes(), json.as_bytes()),
            true => publish(ctx, "SPUBLISH", format!("{prefix}:{{{}}}", event.key).as_bytes(), json.as_bytes()),
        }
    }
    if let Some(log) = &mapping.changelog {
        let Some(stream) = changelog_key(ctx, &log.stream) else { return };
        let maxlen = log.maxlen.to_string();
        call_logged(ctx, "XADD", &[&stream, b"MAXLEN", b"~", maxlen.as_bytes(), b"*", b"event", json.as_bytes()]);
    }
}

/// The changelog stream this node appends to: `stream` on a single server,
/// `<stream>:{<tag>}` in a cluster (`None` on a node that owns no slot).
pub fn changelog_key(ctx: &Context, stream: &str) -> Option<Vec<u8>> {
    if !cluster::enabled() {
        return Some(stream.as_bytes().to_vec());
    }
    cluster::home_tag(ctx).map(|tag| [stream.as_bytes(), b":{", &tag, b"}"].concat())
}
