//! Change notifications: every change applied in either direction is published on
//! `<notify>:<id>`, or on each of the mapping's channel templates filled from the
//! row, as JSON or as the bare id, and appended to the mapping's changelog stream
//! when it has one (so consumers that were away can catch up with consumer groups).
//!
//! In a cluster, `PUBLISH` reaches subscribers on every node; with
//! `notify_sharded` (the `<notify>:<id>` form) the event goes out with `SPUBLISH`
//! on `<notify>:{<key>}`, a channel in the row's own slot, which only that shard
//! carries. The changelog stream is per node there: `<stream>:{<tag>}`, the tag
//! putting it in a slot the node owns (`cluster::home_tag`).

use crate::model::mapping::{Mapping, Notify, NotifyPayload};
use crate::model::stats::MappingStats;
use crate::redis::cluster;
use crate::redis::event_loop;
use crate::redis::hash_key::Key;
use crate::redis::redis_io::{call_logged, publish, string};
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

/// Publishes one event for `mapping` (if it asks for notifications). A channel
/// template naming a field the row does not have (a delete, a row without it) is
/// skipped and counted in `stats`.
pub fn send(ctx: &Context, mapping: &Mapping, stats: &MappingStats, event: &Event<'_>) {
    if !wanted(mapping, event.source) {
        return;
    }
    let Ok(json) = serde_json::to_string(event) else { return };
    let message = match mapping.notify_payload {
        NotifyPayload::Json => json.as_bytes(),
        NotifyPayload::Id => event.id.as_bytes(),
    };
    match &mapping.notify {
        Some(Notify::Prefix(prefix)) if mapping.notify_sharded => {
            publish(ctx, "SPUBLISH", format!("{prefix}:{{{}}}", event.key).as_bytes(), message)
        }
        Some(Notify::Prefix(prefix)) => publish(ctx, "PUBLISH", format!("{prefix}:{}", event.id).as_bytes(), message),
        Some(Notify::Channels(templates)) => {
            for template in templates {
                match template.render(|name| value_of(ctx, mapping, event, name)) {
                    Ok(channel) => publish(ctx, "PUBLISH", channel.as_bytes(), message),
                    Err(_) => MappingStats::bump(&stats.notify_skipped, 1),
                }
            }
        }
        None => {}
    }
    if let Some(log) = &mapping.changelog {
        if let Some(stream) = changelog_key(ctx, &log.stream) {
            let maxlen = log.maxlen.to_string();
            call_logged(ctx, "XADD", &[&stream, b"MAXLEN", b"~", maxlen.as_bytes(), b"*", b"event", json.as_bytes()]);
        }
    }
    // Sent from a module thread, it would wait for the idle server's next tick.
    event_loop::wake();
}

/// What a channel template's `{name}` stands for: a key column's value (from the
/// id), else the hash field of that name as the row's key holds it now, after the
/// change (so a write of one field still names the others).
fn value_of(ctx: &Context, mapping: &Mapping, event: &Event<'_>, name: &str) -> Option<String> {
    if let Some(value) = mapping.key_value(event.id, name) {
        return Some(value.to_string());
    }
    let hash = Key::open(ctx, &string(ctx, event.key.as_bytes())).ok()?;
    if hash.kind() != redis_module::raw::REDISMODULE_KEYTYPE_HASH {
        return None;
    }
    let value = hash.get(&string(ctx, name.as_bytes()))?;
    Some(String::from_utf8_lossy(value.as_slice()).into_owned())
}

/// The changelog stream this node appends to: `stream` on a single server,
/// `<stream>:{<tag>}` in a cluster (`None` on a node that owns no slot).
pub fn changelog_key(ctx: &Context, stream: &str) -> Option<Vec<u8>> {
    if !cluster::enabled() {
        return Some(stream.as_bytes().to_vec());
    }
    cluster::home_tag(ctx).map(|tag| [stream.as_bytes(), b":{", &tag, b"}"].concat())
}
