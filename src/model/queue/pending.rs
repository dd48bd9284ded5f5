//! A queued row's change as the journal keeps it: the records of its writes,
//! encoded (`model/journal_codec.rs`), each after its u32 length, oldest first.
//! A pending row thus costs its records' bytes, not a decoded change per write
//! (a field's name, value and map slot: about 110 B each); a push appends bytes
//! on the main thread, and a worker decodes them when it takes the row.

use super::entry::{Entry, Stamp};
use crate::model::change::{Change, Fields, RowOp, Write};
use crate::model::journal_codec::{decode, encode_change};
use crate::model::queue::row_map::Captured;

/// A row's queued change, encoded.
#[derive(Debug, Clone)]
pub(super) struct Pending {
    /// The framed records of the writes merged in, oldest first.
    records: Vec<u8>,
    /// Version of the newest write merged in.
    pub(super) version: u64,
    /// Version of the oldest (what `SYNC.WAIT` waits for).
    pub(super) first_version: u64,
    /// Capture time of the oldest write merged in (for lag).
    pub(super) since: Stamp,
    /// Bytes the journal holds for the change: the records of the writes
    /// merged in, or the one record they were rewritten as.
    pub(super) journal_bytes: usize,
    /// Length of `records` when they were last coalesced into one (0: never):
    /// they are again once they grow past twice that.
    coalesced: usize,
}

impl Captured for Pending {
    fn since(&self) -> Stamp {
        self.since
    }
}

fn frame(out: &mut Vec<u8>, record: &[u8]) {
    // Exactly what the row needs: a pending row keeps its buffer for its whole wait.
    out.reserve_exact(4 + record.len());
    out.extend_from_slice(&(record.len() as u32).to_le_bytes());
    out.extend_from_slice(record);
}

/// The records of a framed buffer, in order (a cut frame ends them).
fn records(mut buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let len = u32::from_le_bytes(buf.get(..4)?.try_into().ok()?) as usize;
        let record = buf.get(4..4 + len)?;
        buf = &buf[4 + len..];
        Some(record)
    })
}

impl Pending {
    /// A row's first record.
    pub(super) fn new(record: &[u8], version: u64, journal_bytes: usize) -> Pending {
        let mut records = Vec::new();
        frame(&mut records, record);
        Pending { records, version, first_version: version, since: Stamp::now(), journal_bytes, coalesced: 0 }
    }

    /// A decoded change, queued again (a failed batch, a hand-off taken back).
    pub(super) fn of(entry: &Entry) -> Pending {
        let mut pending = Pending::new(&encode_change(&entry.change), entry.change.version, entry.journal_bytes);
        pending.first_version = entry.change.first_version;
        pending.since = entry.since;
        pending
    }

    /// Adds a newer write's record.
    pub(super) fn append(&mut self, record: &[u8], version: u64, journal_bytes: usize) {
        frame(&mut self.records, record);
        self.version = self.version.max(version);
        self.journal_bytes += journal_bytes;
    }

    /// Puts a newer queued change on top of this one (a failed batch's change
    /// under what was captured meanwhile).
    pub(super) fn then(&mut self, newer: Pending) {
        self.records.reserve_exact(newer.records.len());
        self.records.extend_from_slice(&newer.records);
        self.version = self.version.max(newer.version);
        self.journal_bytes += newer.journal_bytes;
    }

    /// Bytes of the records: what bounds a batch (`pgsync.batch-max-bytes`).
    pub(super) fn size_bytes(&self) -> usize {
        self.records.len()
    }

    /// The coalesced change: every record decoded and merged in order, with
    /// the row's versions. A record that does not decode (it never happens: the
    /// queue encoded it) is skipped.
    pub(super) fn change(&self) -> Change {
        let mut change: Option<Change> = None;
        for write in records(&self.records).filter_map(decode) {
            match &mut change {
                Some(change) => change.absorb(Change::new(write, self.version)),
                None => change = Some(Change::new(write, self.version)),
            }
        }
        let empty = || Write { op: RowOp::Upsert, fields: Fields::new(), acks: Vec::new() };
        let mut change = change.unwrap_or_else(|| Change::new(empty(), self.version));
        change.version = self.version;
        change.first_version = self.first_version;
        change
    }

    /// The change decoded for a batch.
    pub(super) fn into_entry(self) -> Entry {
        Entry { change: self.change(), since: self.since, journal_bytes: self.journal_bytes }
    }

    /// Replaces the records with `change` as one record, whose journal bytes
    /// are `journal_bytes`.
    pub(super) fn replace(&mut self, change: &Change, journal_bytes: usize) {
        let mut records = Vec::new();
        frame(&mut records, &encode_change(change));
        self.coalesced = records.len();
        self.records = records;
        self.journal_bytes = journal_bytes;
    }

    /// Whether the records have grown enough since they were last coalesced
    /// for coalescing them again to pay (see `compaction.rs`).
    pub(super) fn grown(&self, slack: usize) -> bool {
        self.records.len() > 2 * self.coalesced + slack
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::change::FieldChange;
    use crate::model::journal_codec::encode;

    fn write(field: &str, value: &str) -> Write {
        let fields = [(field.as_bytes().to_vec(), FieldChange::Set(value.as_bytes().to_vec()))].into_iter().collect();
        Write { op: RowOp::Upsert, fields, acks: vec![format!("ack-{value}")] }
    }

    #[test]
    fn records_decode_into_the_change_their_writes_coalesce_to() {
        let encoded = |w: &Write| encode(w.op, &w.fields, &w.acks);
        let (a, b, c) = (write("x", "1"), write("y", "2"), write("x", "3"));
        let mut pending = Pending::new(&encoded(&a), 5, 10);
        pending.append(&encoded(&b), 6, 11);
        pending.append(&encoded(&c), 7, 12);
        let mut expected = Change::new(a, 5);
        expected.absorb(Change::new(b, 6));
        expected.absorb(Change::new(c, 7));
        assert_eq!(pending.change(), expected);
        assert_eq!((pending.first_version, pending.version, pending.journal_bytes), (5, 7, 33));
        let entry = pending.clone().into_entry();
        let again = Pending::of(&entry);
        assert_eq!(again.change(), expected, "a decoded change queued again decodes the same");
        assert_eq!(records(&[1, 0]).count(), 0, "a cut frame ends the records");
    }
}
