//! A row's RedisJSON document, read and rewritten whole: mapped members merged
//! in (`model::json_row::merge`), every other member kept as it was. Used by
//! Postgres -> Redis (`sources/apply_json.rs`), by JSON writes to keys or
//! members Redis does not hold (`commands/json_write.rs`), and by apply, which
//! sets incremented members to the sums Postgres computed.

use crate::model::json_row;
use crate::redis::redis_io::bytes;
use redis_module::{Context, RedisValue};

/// Merges `members` (name, JSON text, `None` to remove) into the document at
/// `key` (a missing key becomes a new document), writing the result with
/// `write` (the arguments of `JSON.SET`: key, `$`, document). `Ok(false)` when
/// the document already held them and nothing was written; `Err` when the key
/// holds something else or the write failed.
pub fn merge_into(
    ctx: &Context,
    key: &[u8],
    members: &[(String, Option<String>)],
    write: impl FnOnce(&[&[u8]]) -> Result<(), String>,
) -> Result<bool, String> {
    let held = match ctx.call("JSON.GET", &[key]) {
        Ok(RedisValue::Null) => None,
        Ok(value) => bytes(&value),
        Err(e) => return Err(e.to_string()),
    };
    let held = held.as_deref().map(String::from_utf8_lossy);
    match json_row::merge(held.as_deref(), members)? {
        Some(doc) => write(&[key, b"$", doc.as_bytes()]).map(|()| true),
        None => Ok(false),
    }
}
