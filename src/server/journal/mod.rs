//! The journal: the durable half of the dirty set (`dirty_set.rs` keeps it in
//! step with the in-memory queue). Every row with unsynced writes has a log, a
//! Redis string of records, one per write, values and acks included, appended in
//! the same command as the write, so the AOF, the RDB and the replicas carry the
//! write and its record together. A settled change leaves the log holding only
//! what was written since, and after a restart or a promotion the logs are
//! queued again ([`recovery`]). See docs/journal.md.

mod legacy;
pub mod recovery;
mod store;

pub use recovery::{adopt, recover_all, recover_row, recover_step, wait_until_recovered, Recovery};
pub use store::is_journal_key;

use redis_module::Context;

/// Frames one record for a log: its length (u32, little endian), then its bytes.
fn frame(record: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(record.len() + 4);
    out.extend_from_slice(&(record.len() as u32).to_le_bytes());
    out.extend_from_slice(record);
    out
}

/// The records of a log, oldest first; `None` when it is not a whole log.
fn records(mut log: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    while !log.is_empty() {
        let len = u32::from_le_bytes(log.get(..4)?.try_into().ok()?) as usize;
        out.push(log.get(4..4 + len)?);
        log = &log[4 + len..];
    }
    Some(out)
}

/// Size in the journal of a record of `len` bytes.
pub fn framed_len(len: usize) -> usize {
    len + 4
}

/// Appends the record of a write to the log of the row written through `key`.
pub fn append(ctx: &Context, key: &[u8], record: &[u8]) {
    store::append(ctx, &store::key_for(ctx, key), &frame(record));
}

/// Replaces the log of the row written through `key` with one record (a
/// compaction, or what is still pending once a batch settles).
pub fn rewrite(ctx: &Context, key: &[u8], record: &[u8]) {
    store::replace(ctx, &store::key_for(ctx, key), &frame(record));
}

/// The name of the log of the row written through `key` (in the key's slot).
pub fn log_key(ctx: &Context, key: &[u8]) -> Vec<u8> {
    store::key_for(ctx, key)
}

/// Whether `key` names a row's log (not the previous version's journal).
pub fn is_log_key(key: &[u8]) -> bool {
    key.starts_with(store::PREFIX)
}

/// The row key a log was named after.
pub fn row_key_of(log: &[u8]) -> Option<&[u8]> {
    store::row_key_of(log)
}

/// Deletes the log of the row written through `key`: nothing of it is unsynced.
pub fn forget(ctx: &Context, key: &[u8]) {
    store::delete(ctx, &store::key_for(ctx, key));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_splits_back_into_its_records() {
        let log = [frame(b"one"), frame(b""), frame(b"three\0")].concat();
        assert_eq!(records(&log), Some(vec![&b"one"[..], b"", b"three\0"]));
        assert_eq!(records(&log[..log.len() - 1]), None, "a cut record");
        assert_eq!(records(b""), Some(Vec::new()));
    }

    #[test]
    fn journal_keys_name_their_row() {
        assert_eq!(store::row_key_of(b"pgsync:journal:{items:42}"), Some(&b"items:42"[..]));
        assert_eq!(store::row_key_of(b"pgsync:journal:{x7}__{users:1}"), Some(&b"__{users:1}"[..]));
        assert_eq!(store::row_key_of(b"items:42"), None);
    }
}
