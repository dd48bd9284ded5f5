//! Postgres -> Redis for a `"type": "json"` mapping: a row read from Postgres is
//! merged into its RedisJSON document (`redis/json_doc.rs`): one `JSON.GET`,
//! and one `JSON.SET key $` when something changed, as command calls so
//! RedisJSON replicates and announces its own write.

use crate::model::mapping::Mapping;
use crate::redis::json_doc;
use crate::redis::redis_io::{call, warn};
use crate::redis::ttl;
use redis_module::Context;

/// Writes one row into its JSON document: mapped members set, NULL columns'
/// members removed, other members kept; and the mapping's expiry. Returns false,
/// having written nothing, when the document already holds the row (it keeps
/// its expiry) or the key holds something else (logged).
pub(crate) fn write_json_row(ctx: &Context, m: &Mapping, key: &str, fields: &[(String, Option<String>)]) -> bool {
    let written = json_doc::merge_into(ctx, key.as_bytes(), fields, |args| call(ctx, "JSON.SET", args).map(drop));
    match written {
        Ok(true) => {
            ttl::set_on(ctx, m, key.as_bytes());
            true
        }
        Ok(false) => false,
        Err(why) => {
            warn(&format!("{key}: {why}; the row read from Postgres is not written"));
            false
        }
    }
}
