//! A captured change to one mapped row, the rgsync `#` field that tags it, and the
//! rule for coalescing several changes to the same row into one.

use std::collections::BTreeMap;

/// The hash field that carries the rgsync operation; never stored.
pub const OP_FIELD: &[u8] = b"#";

/// What a writer asked for with the `#` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncOp {
    /// `=`: upsert in Redis and Postgres (the default).
    Replicate,
    /// `+`: upsert in Redis only.
    RedisOnlyUpsert,
    /// `-`: delete in Redis only.
    RedisOnlyDelete,
    /// `~`: delete in Redis and Postgres.
    Delete,
}

/// A decoded `#` value: the operation and the optional uuid for the ack stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpTag {
    /// The requested operation.
    pub op: SyncOp,
    /// When present, the outcome goes to the stream `{<prefix><id>}<uuid>`.
    pub uuid: Option<String>,
}

/// Decodes a `#` value such as `=`, `~` or `=6ce0...`.
pub fn decode_op(value: &[u8]) -> Result<OpTag, String> {
    let (sign, rest) =
        value.split_first().ok_or_else(|| "the # field is empty; expected one of = + - ~".to_string())?;
    let op = match sign {
        b'=' => SyncOp::Replicate,
        b'+' => SyncOp::RedisOnlyUpsert,
        b'-' => SyncOp::RedisOnlyDelete,
        b'~' => SyncOp::Delete,
        _ => {
            return Err(format!("unknown # operation \"{}\"; expected one of = + - ~", String::from_utf8_lossy(value)))
        }
    };
    let uuid = match rest {
        [] => None,
        id if id.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_') => {
            Some(String::from_utf8_lossy(id).into_owned())
        }
        _ => return Err("the uuid after the # operation may hold only letters, digits, - and _".into()),
    };
    Ok(OpTag { op, uuid })
}

/// Field name → value; `None` means the field was removed (its column becomes NULL).
pub type Fields = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// What must happen to the row in Postgres.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowOp {
    /// Insert or update the columns present in `fields`.
    Upsert,
    /// Delete the row.
    Delete,
    /// Delete the row, then insert `fields` (a delete followed by a write).
    Replace,
}

/// A captured write before it is queued. It carries no field values: the key
/// holds the latest state, and the worker reads it when the row's batch is taken,
/// so capture stays O(1) and ten writes to a key cost one read.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    /// What to do in Postgres.
    pub op: RowOp,
    /// True when the hash is the whole row (write-behind): every mapped field it
    /// lacks was removed and its column becomes NULL.
    pub whole_row: bool,
    /// Uuids whose ack streams await the outcome.
    pub acks: Vec<String>,
}

/// The latest unsynced state of one row, possibly several writes coalesced.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// What to do in Postgres.
    pub op: RowOp,
    /// The fields to write, read from the key when the batch is taken.
    pub fields: Fields,
    /// See [`Write::whole_row`].
    pub whole_row: bool,
    /// Uuids whose ack streams await this change's outcome.
    pub acks: Vec<String>,
    /// Version of the newest write merged in; grows with every capture.
    pub version: u64,
    /// Version of the oldest write merged in (what `SYNC.WAIT` waits for).
    pub first_version: u64,
}

impl Change {
    /// A change holding one write.
    pub fn new(write: Write, version: u64) -> Change {
        Change {
            op: write.op,
            fields: Fields::new(),
            whole_row: write.whole_row,
            acks: write.acks,
            version,
            first_version: version,
        }
    }

    /// Merges a newer change to the same row on top of this one: a delete wins, a
    /// write after a delete becomes a replace. Fields are read afresh anyway.
    pub fn absorb(&mut self, newer: Change) {
        self.op = combine(self.op, newer.op);
        self.whole_row = newer.whole_row;
        self.acks.extend(newer.acks);
        self.version = self.version.max(newer.version);
        self.first_version = self.first_version.min(newer.first_version);
    }
}

/// The operation of an older change followed by a newer one.
pub fn combine(older: RowOp, newer: RowOp) -> RowOp {
    match (older, newer) {
        (_, RowOp::Delete) => RowOp::Delete,
        (_, RowOp::Replace) | (RowOp::Delete | RowOp::Replace, RowOp::Upsert) => RowOp::Replace,
        (RowOp::Upsert, RowOp::Upsert) => RowOp::Upsert,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(op: RowOp, version: u64, acks: &[&str]) -> Change {
        let acks = acks.iter().map(|a| a.to_string()).collect();
        Change::new(Write { op, whole_row: false, acks }, version)
    }

    #[test]
    fn decodes_every_rgsync_op() {
        assert_eq!(decode_op(b"=").unwrap().op, SyncOp::Replicate);
        assert_eq!(decode_op(b"+").unwrap().op, SyncOp::RedisOnlyUpsert);
        assert_eq!(decode_op(b"-").unwrap().op, SyncOp::RedisOnlyDelete);
        let tag = decode_op(b"~6ce0-aa").unwrap();
        assert_eq!((tag.op, tag.uuid.as_deref()), (SyncOp::Delete, Some("6ce0-aa")));
        assert!(decode_op(b"").is_err());
        assert!(decode_op(b"*").is_err());
        assert!(decode_op(b"=a b").is_err());
    }

    #[test]
    fn coalesced_writes_keep_every_ack_and_the_oldest_version() {
        let mut c = change(RowOp::Upsert, 1, &["a"]);
        c.absorb(change(RowOp::Upsert, 2, &["b"]));
        assert_eq!((c.op, c.first_version, c.version), (RowOp::Upsert, 1, 2));
        assert_eq!(c.acks, ["a", "b"]);
    }

    #[test]
    fn delete_then_write_becomes_replace() {
        let mut c = change(RowOp::Upsert, 1, &[]);
        c.absorb(change(RowOp::Delete, 2, &[]));
        assert_eq!(c.op, RowOp::Delete);
        c.absorb(change(RowOp::Upsert, 3, &[]));
        assert_eq!(c.op, RowOp::Replace);
        c.absorb(change(RowOp::Upsert, 4, &[]));
        assert_eq!(c.op, RowOp::Replace);
        c.absorb(change(RowOp::Delete, 5, &[]));
        assert_eq!(c.op, RowOp::Delete);
    }
}
