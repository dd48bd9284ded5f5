//! A row's journal log as bytes: its records (`journal_codec.rs`), each after
//! its u32 length (little endian), oldest first; and the change they coalesce
//! to. Pure. The log is the one copy of a pending row's writes: the queue keeps
//! only how many of its bytes are pending, and a worker decodes them when it
//! takes the row.

use crate::model::change::{Change, Fields, RowOp, Write};
use crate::model::journal_codec::decode;

/// Size in a log of a record of `len` bytes.
pub fn framed_len(len: usize) -> usize {
    len + 4
}

/// Appends `record`, framed, to `out`.
pub fn frame_into(out: &mut Vec<u8>, record: &[u8]) {
    out.reserve_exact(framed_len(record.len()));
    out.extend_from_slice(&(record.len() as u32).to_le_bytes());
    out.extend_from_slice(record);
}

/// `record`, framed: a log of one record.
pub fn frame(record: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    frame_into(&mut out, record);
    out
}

/// The records of a log, oldest first, up to a cut frame (never written so by
/// the module) if there is one.
fn frames(log: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = log;
    std::iter::from_fn(move || {
        let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let record = rest.get(4..4 + len)?;
        rest = &rest[4 + len..];
        Some(record)
    })
}

/// The records of a log, oldest first; `None` when it is not a whole log.
pub fn records(log: &[u8]) -> Option<Vec<&[u8]>> {
    let out: Vec<&[u8]> = frames(log).collect();
    (out.iter().map(|record| framed_len(record.len())).sum::<usize>() == log.len()).then_some(out)
}

/// The writes of a log, oldest first, each with its size in the log; `None`
/// when a record cannot be read.
pub fn writes(log: &[u8]) -> Option<Vec<(usize, Write)>> {
    let read = |record: &[u8]| decode(record).map(|write| (framed_len(record.len()), write));
    records(log)?.into_iter().map(read).collect()
}

/// The change the records of `log` coalesce to, with the row's versions: every
/// record merged in order. A log that does not read (never written so by the
/// module) gives what its readable records hold.
pub fn coalesce(log: &[u8], version: u64, first_version: u64) -> Change {
    let mut change: Option<Change> = None;
    for write in frames(log).filter_map(decode) {
        match &mut change {
            Some(change) => change.absorb(Change::new(write, version)),
            None => change = Some(Change::new(write, version)),
        }
    }
    let empty = || Write { op: RowOp::Upsert, fields: Fields::new(), acks: Vec::new() };
    let mut change = change.unwrap_or_else(|| Change::new(empty(), version));
    change.version = version;
    change.first_version = first_version;
    change
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
    fn a_log_splits_back_into_its_records() {
        let log = [frame(b"one"), frame(b""), frame(b"three\0")].concat();
        assert_eq!(records(&log), Some(vec![&b"one"[..], b"", b"three\0"]));
        assert_eq!(records(&log[..log.len() - 1]), None, "a cut record");
        assert_eq!(records(b""), Some(Vec::new()));
    }

    #[test]
    fn records_coalesce_into_the_change_their_writes_make() {
        let (a, b, c) = (write("x", "1"), write("y", "2"), write("x", "3"));
        let mut log = Vec::new();
        for w in [&a, &b, &c] {
            frame_into(&mut log, &encode(w.op, &w.fields, &w.acks));
        }
        let mut expected = Change::new(a, 7);
        expected.absorb(Change::new(b, 7));
        expected.absorb(Change::new(c, 7));
        expected.first_version = 5;
        assert_eq!(coalesce(&log, 7, 5), expected);
        assert_eq!(writes(&log).map(|w| w.len()), Some(3));
        assert_eq!(coalesce(&[1, 0], 2, 1).fields.len(), 0, "a cut frame ends the records");
    }
}
