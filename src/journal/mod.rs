//! The journal: the durable half of the dirty set (`dirty_set.rs` keeps it in
//! step with the in-memory queue). Every captured write is one record, values and
//! acks included, written in the same command as the write, so the AOF, the RDB
//! and the replicas carry the write and its record together. A settled change
//! deletes exactly its own records, and after a restart or a promotion the
//! records are queued again ([`recovery`]). See docs/journal.md.

mod legacy;
pub mod recovery;
mod store;

pub use recovery::{recover_all, recover_slot_of, recover_step, wait_until_recovered, Recovery};
pub use store::is_journal_key;

use crate::queue::Records;
use redis_module::Context;

/// The record field of write `id` to `key`: the key, NUL, the id in decimal. No
/// mapped key holds a NUL byte (ids with one are refused), so it splits back.
fn record_field(key: &[u8], id: u64) -> Vec<u8> {
    let id = id.to_string();
    let mut field = Vec::with_capacity(key.len() + 1 + id.len());
    field.extend_from_slice(key);
    field.push(0);
    field.extend_from_slice(id.as_bytes());
    field
}

/// The key and record id of a record field.
fn parse_field(field: &[u8]) -> Option<(&[u8], u64)> {
    let at = field.iter().rposition(|b| *b == 0)?;
    let id = std::str::from_utf8(&field[at + 1..]).ok()?.parse().ok()?;
    Some((&field[..at], id))
}

/// Writes the record of write `id` to `key`.
pub fn record(ctx: &Context, key: &[u8], id: u64, value: &[u8]) {
    let slot = store::key_of_slot(store::slot_of(ctx, key));
    store::put(ctx, &slot, &record_field(key, id), value);
}

/// Rewrites a row's pending records as one (see `queue::Compaction`): `whole`
/// under id `into`, and the `replaced` records deleted.
pub fn rewrite(ctx: &Context, key: &[u8], into: u64, whole: &[u8], replaced: &[u64]) {
    let slot = store::key_of_slot(store::slot_of(ctx, key));
    store::put(ctx, &slot, &record_field(key, into), whole);
    let replaced: Vec<Vec<u8>> = replaced.iter().map(|id| record_field(key, *id)).collect();
    store::remove(ctx, &slot, &replaced);
}

/// Deletes the records of a settled change (committed, or moved to the dead
/// letters); records of writes made since stay for their own turn.
pub fn forget(ctx: &Context, key: &[u8], records: &Records) {
    let slot = store::key_of_slot(store::slot_of(ctx, key));
    let fields: Vec<Vec<u8>> = records.ids.iter().map(|id| record_field(key, *id)).collect();
    store::remove(ctx, &slot, &fields);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_fields_split_back_into_key_and_id() {
        let field = record_field(b"__{users:42}", 1_763_790_000_000_000_123);
        assert_eq!(parse_field(&field), Some((&b"__{users:42}"[..], 1_763_790_000_000_000_123)));
        assert_eq!(parse_field(b"no-separator"), None);
        assert_eq!(parse_field(b"k\0not-a-number"), None);
    }
}
