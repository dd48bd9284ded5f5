//! The journal: the durable half of the dirty set. Every captured write is
//! recorded, values and acks included, in the same command as the write, so the
//! AOF, the RDB and the replicas carry the write and its record together; the
//! in-memory queue is the other half. This module keeps the two in step: a write
//! is queued and journaled in one call ([`mark`]), a settled change deletes
//! exactly its own records ([`forget`]), and after a restart or a promotion the
//! records are queued again ([`recovery`]). See docs/journal.md.

mod legacy;
pub mod recovery;
mod store;

pub use recovery::{recover_all, recover_step, wait_until_recovered, Recovery};
pub use store::is_journal_key;

use crate::change::Write;
use crate::journal_codec::encode;
use crate::queue::{Journaled, Records, RowKey};
use crate::runtime::Runtime;
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

/// Queues a captured write of `row` (written through `key`) and journals it, in
/// the command that made the write. Returns the write's version.
pub fn mark(ctx: &Context, rt: &Runtime, row: RowKey, key: &[u8], write: Write) -> u64 {
    recovery::recover_slot_of(ctx, rt, key);
    let value = encode(write.op, &write.fields, &write.acks);
    let slot = store::key_of_slot(store::slot_of(ctx, key));
    let bytes = value.len() + key.len() + 24;
    let pushed = rt.queue.push(row, write, Journaled::Fresh { bytes });
    match pushed.compaction {
        None => store::put(ctx, &slot, &record_field(key, pushed.version), &value),
        Some(compaction) => {
            let change = &compaction.change;
            let whole = encode(change.op, &change.fields, &change.acks);
            store::put(ctx, &slot, &record_field(key, pushed.version), &whole);
            let replaced: Vec<Vec<u8>> = compaction.replaced.iter().map(|id| record_field(key, *id)).collect();
            store::remove(ctx, &slot, &replaced);
        }
    }
    pushed.version
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
