//! A row's RedisJSON document, read and rewritten whole: mapped members merged
//! in (`model::json_row::merge`), every other member kept as it was. Used by
//! Postgres -> Redis (`sources/apply_json.rs`), by JSON writes to keys or
//! members Redis does not hold (`commands/json_write.rs`), and by apply, which
//! sets incremented members to the sums Postgres computed, merges a committed
//! write-through change into the row's document and clears what it staged.

use crate::model::json_row::{self, NoObject};
use crate::redis::redis_io::{bytes, call, CallError};
use redis_module::{Context, RedisError, RedisValue};

/// Why a document was not merged; `E` is the error of the caller's write.
#[derive(Debug)]
pub enum DocError<E> {
    /// Reading the document failed.
    Read(RedisError),
    /// The key holds something other than a JSON object.
    Held(NoObject),
    /// The write failed.
    Write(E),
}

impl<E: std::fmt::Display> std::fmt::Display for DocError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DocError::Read(e) => e.fmt(f),
            DocError::Held(e) => e.fmt(f),
            DocError::Write(e) => e.fmt(f),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for DocError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DocError::Read(_) => None,
            DocError::Held(e) => Some(e),
            DocError::Write(e) => Some(e),
        }
    }
}

/// Merges `members` (name, JSON text, `None` to remove) into the document at
/// `key` (a missing key becomes a new document), writing the result with
/// `write` (the arguments of `JSON.SET`: key, `$`, document). `Ok(false)` when
/// the document already held them and nothing was written; `Err` when the key
/// holds something else or the write failed.
pub fn merge_into<E>(
    ctx: &Context,
    key: &[u8],
    members: &[(String, Option<String>)],
    write: impl FnOnce(&[&[u8]]) -> Result<(), E>,
) -> Result<bool, DocError<E>> {
    let held = match ctx.call("JSON.GET", &[key]) {
        Ok(RedisValue::Null) => None,
        Ok(value) => bytes(&value),
        Err(e) => return Err(DocError::Read(e)),
    };
    let held = held.as_deref().map(String::from_utf8_lossy);
    match json_row::merge(held.as_deref(), members).map_err(DocError::Held)? {
        Some(doc) => write(&[key, b"$", doc.as_bytes()]).map(|()| true).map_err(DocError::Write),
        None => Ok(false),
    }
}

/// The members `names` of the document at `key` as their JSON text (`None`:
/// absent or `null`), in the order asked; `None` when the key holds no JSON object.
pub fn members(ctx: &Context, key: &[u8], names: &[&[u8]]) -> Option<Vec<Option<String>>> {
    let held = match ctx.call("JSON.GET", &[key]) {
        Ok(RedisValue::Null) => return Some(vec![None; names.len()]),
        Ok(value) => bytes(&value)?,
        Err(_) => return None,
    };
    let members = json_row::object_members(&String::from_utf8_lossy(&held))?;
    let value = |name: &[u8]| members.iter().find(|(n, _)| n.as_bytes() == name).map(|(_, v)| v.clone());
    Some(names.iter().map(|name| value(name).filter(|v| v != "null")).collect())
}

/// Removes `names` from the document at `key`, and the key once no member is
/// left (a write-through staging key goes away when all it staged is
/// committed, as a hash does with its last field).
pub fn remove_members(ctx: &Context, key: &[u8], names: &[&[u8]]) -> Result<(), DocError<CallError>> {
    let removed: Vec<(String, Option<String>)> =
        names.iter().map(|n| (String::from_utf8_lossy(n).into_owned(), None)).collect();
    let mut left = None;
    merge_into(ctx, key, &removed, |args| {
        left = args.get(2).map(|doc| doc.to_vec());
        Ok::<(), CallError>(())
    })?;
    match left {
        None => Ok(()),
        Some(doc) if doc == b"{}" => call(ctx, "DEL", &[key]).map(drop).map_err(DocError::Write),
        Some(doc) => call(ctx, "JSON.SET", &[key, b"$", &doc]).map(drop).map_err(DocError::Write),
    }
}
