//! Journal logs as Redis keys: the form the previous version kept them in, and
//! the form a log travels in between cluster nodes. One string per row,
//! `pgsync:journal:{<row key>}` (or, for a row key holding a brace,
//! `pgsync:journal:{<tag>}<row key>`, the tag being the server's canonical name
//! of the row key's slot), so the key is in the row's own slot. A server finds
//! such keys after an upgrade, or when `MIGRATE` brings one, and moves them into
//! the module's memory (`logs.rs`); `SYNC.MIGRATE` writes one just before a
//! row's keys leave. Written with the key API and replicated explicitly (`SET`,
//! `DEL`).

use crate::redis::cluster;
use crate::redis::redis_io::{self, string, warn};
use redis_module::{Context, RedisString};
use std::ffi::CStr;

/// Every journal key starts with this.
pub const PREFIX: &[u8] = b"pgsync:journal:{";

/// The journal hash of the previous version, one for all rows; read once after
/// an upgrade, then gone.
pub const LEGACY_KEY: &[u8] = b"pgsync:{journal}";

/// The journal key of the row written through `key`.
pub fn key_for(ctx: &Context, key: &[u8]) -> Vec<u8> {
    if !key.iter().any(|b| *b == b'{' || *b == b'}') {
        // Braces around the key itself: the slot of the whole key, as the row's.
        return [PREFIX, key, b"}"].concat();
    }
    // A key with a brace may carry its own hashtag, or an odd one Redis ignores:
    // name the slot through the server's canonical tag for it.
    let tag = cluster::slot_tag(cluster::slot(ctx, key));
    [PREFIX, &tag, b"}", key].concat()
}

/// The row key a journal key was named after.
pub fn row_key_of(journal: &[u8]) -> Option<&[u8]> {
    let rest = journal.strip_prefix(PREFIX)?;
    let close = rest.iter().position(|b| *b == b'}')?;
    match &rest[close + 1..] {
        [] => Some(&rest[..close]),
        key => Some(key),
    }
}

/// Whether `key` is one of the journal's keys (for eviction warnings).
pub fn is_journal_key(key: &[u8]) -> bool {
    key.starts_with(PREFIX) || key == LEGACY_KEY
}

/// Writes the log `journal` as a string key holding `bytes`, and replicates it.
pub fn write(ctx: &Context, journal: &[u8], bytes: &[u8]) {
    let name = string(ctx, journal);
    let key = ctx.open_key_writable(&name);
    if let Err(e) = key.as_string_dma().and_then(|mut log| log.write(bytes).map(|_| ())) {
        return warn(&format!("cannot write the journal {}: {e}", journal.escape_ascii()));
    }
    drop(key);
    replicate(ctx, c"SET", &[journal, bytes]);
}

/// Deletes the log `journal`.
pub fn delete(ctx: &Context, journal: &[u8]) {
    let name = string(ctx, journal);
    let key = ctx.open_key_writable(&name);
    if key.is_empty() {
        return;
    }
    if key.delete().is_err() {
        return warn(&format!("cannot delete the journal {}", journal.escape_ascii()));
    }
    drop(key);
    replicate(ctx, c"DEL", &[journal]);
}

/// The log `journal`, if there is one.
pub fn read(ctx: &Context, journal: &[u8]) -> Option<Vec<u8>> {
    let name = string(ctx, journal);
    let key = ctx.open_key(&name);
    match key.read() {
        Ok(log) => log.map(<[u8]>::to_vec),
        Err(e) => {
            warn(&format!("cannot read the journal {}: {e}", journal.escape_ascii()));
            None
        }
    }
}

/// Sends a journal write to the AOF and the replicas, with the command that made it.
fn replicate(ctx: &Context, command: &CStr, args: &[&[u8]]) {
    let strings: Vec<RedisString> = args.iter().map(|a| string(ctx, a)).collect();
    let strings: Vec<&RedisString> = strings.iter().collect();
    redis_io::replicate(ctx, command, &strings);
}
