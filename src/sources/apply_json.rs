//! Postgres -> Redis for a `"type": "json"` mapping: a row read from Postgres is
//! merged into its RedisJSON document (`model::json_row::merge`): one
//! `JSON.GET`, and one `JSON.SET key $` when something changed, as command
//! calls so RedisJSON replicates and announces its own write.

use crate::model::json_row;
use crate::model::mapping::Mapping;
use crate::server::redis_io::{bytes, call, warn};
use crate::server::ttl;
use redis_module::{Context, RedisValue};

/// Writes one row into its JSON document: mapped members set, NULL columns'
/// members removed, other members kept; and the mapping's expiry. Returns false,
/// having written nothing, when the document already holds the row (it keeps
/// its expiry) or the key holds something else (logged).
pub(crate) fn write_json_row(ctx: &Context, m: &Mapping, key: &str, fields: &[(String, Option<String>)]) -> bool {
    let held = match ctx.call("JSON.GET", &[key.as_bytes()]) {
        Ok(RedisValue::Null) => None,
        Ok(value) => bytes(&value),
        Err(e) => {
            warn(&format!("{key}: the row read from Postgres is not written: {e}"));
            return false;
        }
    };
    let held = held.as_deref().map(String::from_utf8_lossy);
    let doc = match json_row::merge(held.as_deref(), fields) {
        Ok(Some(doc)) => doc,
        Ok(None) => return false,
        Err(why) => {
            warn(&format!("{key}: {why}; the row read from Postgres is not written"));
            return false;
        }
    };
    if let Err(e) = call(ctx, "JSON.SET", &[key.as_bytes(), b"$", doc.as_bytes()]) {
        warn(&format!("cannot write {key}: {e}"));
        return false;
    }
    ttl::set_on(ctx, m, key.as_bytes());
    true
}
