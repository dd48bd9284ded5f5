//! Walks a mapping's cached rows in Redis: the hashes `<key_prefix><id>`, one SCAN
//! step at a time, so a caller can hold the Redis lock per step only and Redis
//! keeps serving between steps (`SYNC.RELOAD FLUSH`, a TRUNCATE seen by the
//! listener). Staging keys `__{...}` and keys of other types are never returned.

use crate::model::mapping::{KeyRole, Mappings};
use crate::model::row_id::check_id;
use crate::redis::redis_io::{bytes, call};
use redis_module::{Context, RedisValue};

/// Keys examined per SCAN step.
const SCAN_COUNT: &str = "1000";

/// A scan over one mapping's row hashes, resumed step by step.
pub struct RowKeys<'m> {
    mappings: &'m Mappings,
    mapping: usize,
    pattern: String,
    /// The type of the mapping's keys (`hash`, or a document store's).
    key_type: &'static str,
    /// The SCAN cursor to resume from; `None` once the scan is over.
    cursor: Option<Vec<u8>>,
}

impl<'m> RowKeys<'m> {
    /// A scan over the row hashes of `mappings.all()[mapping]`, not yet started.
    pub fn new(mappings: &'m Mappings, mapping: usize) -> RowKeys<'m> {
        let m = mappings.all().get(mapping);
        let prefix = m.map_or("", |m| m.key_prefix.as_str());
        let key_type = m.map_or("hash", |m| m.redis_type());
        RowKeys {
            mappings,
            mapping,
            pattern: format!("{}*", glob_escape(prefix)),
            key_type,
            cursor: Some(b"0".to_vec()),
        }
    }

    /// Runs the next SCAN step with `ctx` (whose Redis lock the caller holds) and
    /// returns the ids of the row hashes it found; `None` once the scan is over.
    /// A SCAN error ends the scan (what was done so far stays done).
    pub fn next_step(&mut self, ctx: &Context) -> Option<Vec<String>> {
        let cursor = self.cursor.take()?;
        // Only hashes are rows (documents: their store's type); a stream or string
        // under the prefix is someone else's.
        let args: [&[u8]; 7] = [
            &cursor,
            b"MATCH",
            self.pattern.as_bytes(),
            b"COUNT",
            SCAN_COUNT.as_bytes(),
            b"TYPE",
            self.key_type.as_bytes(),
        ];
        let Ok(RedisValue::Array(parts)) = call(ctx, "SCAN", &args) else { return None };
        let (Some(next), Some(RedisValue::Array(keys))) = (parts.first().and_then(bytes), parts.get(1)) else {
            return None;
        };
        if next != b"0" {
            self.cursor = Some(next);
        }
        let ids = keys.iter().filter_map(bytes).filter_map(|key| {
            let resolved = self.mappings.resolve(&key)?;
            if resolved.mapping != self.mapping || resolved.role != KeyRole::Main {
                return None;
            }
            check_id(resolved.id).ok().map(str::to_string)
        });
        Some(ids.collect())
    }
}

/// Escapes glob metacharacters so a key prefix matches literally in SCAN MATCH.
fn glob_escape(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len());
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_characters_in_prefixes_match_literally() {
        assert_eq!(glob_escape("users:"), "users:");
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}
