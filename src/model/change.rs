//! A captured change to one mapped row, the rgsync `#` field that tags it, and the
//! rule for coalescing several changes to the same row into one.

use crate::model::field_map::FieldMap;
use crate::model::json_path_set::{self, PathSet};

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

/// Why a `#` value cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpError {
    /// The value is empty.
    Empty,
    /// An unknown operation (the value, shown lossily).
    Unknown(String),
    /// The uuid after the operation holds other characters.
    BadUuid,
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpError::Empty => f.write_str("the # field is empty; expected one of = + - ~"),
            OpError::Unknown(value) => write!(f, "unknown # operation \"{value}\"; expected one of = + - ~"),
            OpError::BadUuid => f.write_str("the uuid after the # operation may hold only letters, digits, - and _"),
        }
    }
}

impl std::error::Error for OpError {}

/// Decodes a `#` value such as `=`, `~` or `=6ce0...`.
pub fn decode_op(value: &[u8]) -> Result<OpTag, OpError> {
    let (sign, rest) = value.split_first().ok_or(OpError::Empty)?;
    let op = match sign {
        b'=' => SyncOp::Replicate,
        b'+' => SyncOp::RedisOnlyUpsert,
        b'-' => SyncOp::RedisOnlyDelete,
        b'~' => SyncOp::Delete,
        _ => return Err(OpError::Unknown(String::from_utf8_lossy(value).into_owned())),
    };
    let uuid = match rest {
        [] => None,
        id if id.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_') => {
            Some(String::from_utf8_lossy(id).into_owned())
        }
        _ => return Err(OpError::BadUuid),
    };
    Ok(OpTag { op, uuid })
}

/// How one hash field changed.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldChange {
    /// Set to this value (HSET, HSETNX, ...).
    Set(Vec<u8>),
    /// Removed (HDEL): its column becomes NULL.
    Remove,
    /// Incremented (HINCRBY, HINCRBYFLOAT) by `delta`; `redis_after` is the value
    /// Redis held right after the latest increment. Postgres adds the delta to the
    /// row's own value, so an increment on a key Redis does not hold still counts.
    Add {
        /// Sum of the increments coalesced here.
        delta: Delta,
        /// The field's value in Redis after the latest of them.
        redis_after: Vec<u8>,
    },
    /// Paths set inside a `json`/`jsonb` column's value, in order, by a JSON
    /// write below a member Redis did not hold (`json_path_set`): Postgres
    /// sets them on the row's own value, and Redis learns the result.
    Paths(Vec<PathSet>),
}

/// An increment, as HINCRBY (integer) or HINCRBYFLOAT (float) gave it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Delta {
    /// HINCRBY: i128 so that sums of i64 deltas cannot overflow.
    Int(i128),
    /// HINCRBYFLOAT.
    Float(f64),
}

impl Delta {
    /// The increment left when `other` is taken out of this one.
    pub fn minus(self, other: Delta) -> Delta {
        match (self, other) {
            (Delta::Int(a), Delta::Int(b)) => Delta::Int(a.saturating_sub(b)),
            (a, b) => Delta::Float(a.as_f64() - b.as_f64()),
        }
    }

    /// The sum of two increments; a float makes the sum a float.
    pub fn plus(self, other: Delta) -> Delta {
        match (self, other) {
            (Delta::Int(a), Delta::Int(b)) => Delta::Int(a.saturating_add(b)),
            (a, b) => Delta::Float(a.as_f64() + b.as_f64()),
        }
    }

    fn as_f64(self) -> f64 {
        match self {
            Delta::Int(n) => n as f64,
            Delta::Float(f) => f,
        }
    }

    /// `value + self` as text, when `value` is a number of the delta's kind.
    pub fn added_to(self, value: &[u8]) -> Option<Vec<u8>> {
        let text = std::str::from_utf8(value).ok()?;
        let sum = match self {
            Delta::Int(d) => text.parse::<i128>().ok()?.checked_add(d).map(Delta::Int)?,
            Delta::Float(d) => Delta::Float(text.trim().parse::<f64>().ok()? + d),
        };
        Some(sum.to_text().into_bytes())
    }

    /// The delta as SQL literal text (bound as a parameter, never spliced).
    pub fn to_text(self) -> String {
        match self {
            Delta::Int(n) => n.to_string(),
            // An integral float is written as an integer, so that it also adds
            // to an integer column.
            Delta::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => format!("{}", f as i64),
            Delta::Float(f) => format!("{f:?}"),
        }
    }

    /// Parses a delta written by [`Delta::to_text`] or given to HINCRBY(FLOAT).
    pub fn parse(text: &[u8], float: bool) -> Option<Delta> {
        let text = std::str::from_utf8(text).ok()?;
        // i128 and any float: a journaled sum may exceed what one command gives
        // (Redis itself refuses non-finite increments before they are captured).
        if float {
            text.trim().parse::<f64>().ok().map(Delta::Float)
        } else {
            text.parse::<i128>().ok().map(Delta::Int)
        }
    }
}

/// Field name → how it changed.
pub type Fields = FieldMap<FieldChange>;

/// Merges a newer change of one field on top of an older one.
fn merge_field(older: &mut FieldChange, newer: FieldChange) {
    *older = match (std::mem::replace(older, FieldChange::Remove), newer) {
        (FieldChange::Add { delta: a, .. }, FieldChange::Add { delta: b, redis_after }) => {
            FieldChange::Add { delta: a.plus(b), redis_after }
        }
        // After an absolute value the increment's result is absolute too: the value
        // plus the delta (not what Redis returned, which may have started from a
        // key that was evicted or a staging key that was deleted meanwhile).
        (FieldChange::Set(value), FieldChange::Add { delta, redis_after }) => {
            FieldChange::Set(delta.added_to(&value).unwrap_or(redis_after))
        }
        (FieldChange::Remove, FieldChange::Add { delta, .. }) => FieldChange::Set(delta.to_text().into_bytes()),
        (FieldChange::Paths(mut sets), FieldChange::Paths(more)) => {
            sets.extend(more);
            FieldChange::Paths(sets)
        }
        // On a known value the sets are made here. A value that is no JSON
        // stays as it is: Postgres refuses it, and the row is a dead letter.
        (FieldChange::Set(value), FieldChange::Paths(sets)) => {
            let now = json_path_set::apply(Some(&String::from_utf8_lossy(&value)), &sets);
            FieldChange::Set(now.map_or(value, String::into_bytes))
        }
        (FieldChange::Remove, FieldChange::Paths(sets)) => match json_path_set::apply(None, &sets) {
            Some(now) => FieldChange::Set(now.into_bytes()),
            None => FieldChange::Paths(sets),
        },
        (_, newer) => newer,
    };
}

/// What must happen to the row in Postgres.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowOp {
    /// Write the fields of the change; other columns keep their values.
    Upsert,
    /// Delete the row.
    Delete,
    /// Delete the row, then insert `fields` (a delete followed by a write).
    Replace,
}

/// One captured write: exactly what the command changed, O(size of the write).
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    /// What to do in Postgres.
    pub op: RowOp,
    /// The fields the command set, removed or incremented (empty for a delete).
    pub fields: Fields,
    /// Uuids whose ack streams await the outcome.
    pub acks: Vec<String>,
}

/// The unsynced changes of one row, several writes coalesced.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// What to do in Postgres.
    pub op: RowOp,
    /// The fields to write: every field any coalesced write touched, latest first.
    pub fields: Fields,
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
        Change { op: write.op, fields: write.fields, acks: write.acks, version, first_version: version }
    }

    /// Merges a newer change to the same row on top of this one: a delete drops
    /// every earlier field, a write after a delete becomes a replace, and fields
    /// merge one by one (the newer value wins; increments add up).
    pub fn absorb(&mut self, newer: Change) {
        self.op = combine(self.op, newer.op);
        if newer.op != RowOp::Upsert {
            self.fields.clear();
        }
        for (field, change) in newer.fields {
            match self.fields.get_mut(&field) {
                Some(older) => merge_field(older, change),
                None => {
                    self.fields.insert(field, change);
                }
            }
        }
        self.acks.extend(newer.acks);
        self.version = self.version.max(newer.version);
        self.first_version = self.first_version.min(newer.first_version);
    }

    /// A copy without the ack uuids: what the journal keeps in the row's entry
    /// (acks have entries of their own), at a cost that does not grow with them.
    pub fn without_acks(&self) -> Change {
        Change { op: self.op, fields: self.fields.clone(), acks: Vec::new(), ..*self }
    }

    /// Whether a field has a change here (used to keep apply from overwriting it).
    pub fn touches(&self, field: &[u8]) -> bool {
        self.op != RowOp::Upsert || self.fields.contains_key(field)
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
        Change::new(Write { op, fields: Fields::new(), acks }, version)
    }

    fn with(field: &str, f: FieldChange) -> Change {
        let fields = [(field.as_bytes().to_vec(), f)].into_iter().collect();
        Change::new(Write { op: RowOp::Upsert, fields, acks: vec![] }, 1)
    }

    fn add(delta: Delta, after: &str) -> FieldChange {
        FieldChange::Add { delta, redis_after: after.as_bytes().to_vec() }
    }

    #[test]
    fn increments_add_up_and_an_absolute_value_absorbs_them() {
        let mut c = with("score", add(Delta::Int(5), "5"));
        c.absorb(with("score", add(Delta::Int(-2), "3")));
        assert_eq!(c.fields.get(b"score").cloned().expect("score"), add(Delta::Int(3), "3"));
        c.absorb(with("score", add(Delta::Float(0.5), "3.5")));
        assert_eq!(c.fields.get(b"score").cloned().expect("score"), add(Delta::Float(3.5), "3.5"));
        c.absorb(with("score", FieldChange::Set(b"10".to_vec())));
        c.absorb(with("score", add(Delta::Int(1), "1")));
        assert_eq!(
            c.fields.get(b"score").cloned().expect("score"),
            FieldChange::Set(b"11".to_vec()),
            "set then incremented: the sum, whatever Redis held"
        );
        c.absorb(with("score", FieldChange::Remove));
        c.absorb(with("score", add(Delta::Int(4), "9")));
        assert_eq!(
            c.fields.get(b"score").cloned().expect("score"),
            FieldChange::Set(b"4".to_vec()),
            "removed then incremented: the delta"
        );
    }

    fn paths(sets: &[(&[&str], &str)]) -> FieldChange {
        let set = |(path, value): &(&[&str], &str)| PathSet {
            path: path.iter().map(|s| s.to_string()).collect(),
            value: value.to_string(),
        };
        FieldChange::Paths(sets.iter().map(set).collect())
    }

    #[test]
    fn path_sets_keep_their_order_a_set_replaces_them_and_a_known_value_takes_them() {
        let mut c = with("profile", paths(&[(&["zip"], "\"2\"")]));
        c.absorb(with("profile", paths(&[(&["a", "b"], "1")])));
        assert_eq!(
            c.fields.get(b"profile"),
            Some(&paths(&[(&["zip"], "\"2\""), (&["a", "b"], "1")])),
            "both, in order"
        );
        c.absorb(with("profile", FieldChange::Set(br#"{"city":"Oslo"}"#.to_vec())));
        assert_eq!(c.fields.get(b"profile"), Some(&FieldChange::Set(br#"{"city":"Oslo"}"#.to_vec())), "a set replaces");
        c.absorb(with("profile", paths(&[(&["zip"], "\"2\"")])));
        assert_eq!(
            c.fields.get(b"profile"),
            Some(&FieldChange::Set(br#"{"city":"Oslo","zip":"2"}"#.to_vec())),
            "applied to the known value"
        );
        c.absorb(with("profile", FieldChange::Remove));
        c.absorb(with("profile", paths(&[(&["a", "b"], "1")])));
        assert_eq!(c.fields.get(b"profile"), Some(&FieldChange::Set(br#"{"a":{"b":1}}"#.to_vec())), "on NULL: {{}}");
        let mut bad = with("profile", FieldChange::Set(b"not json".to_vec()));
        bad.absorb(with("profile", paths(&[(&["a"], "1")])));
        assert_eq!(bad.fields.get(b"profile"), Some(&FieldChange::Set(b"not json".to_vec())), "Postgres refuses it");
    }

    #[test]
    fn fields_of_separate_writes_accumulate_and_a_delete_drops_them() {
        let mut c = with("a", FieldChange::Set(b"1".to_vec()));
        c.absorb(with("b", FieldChange::Remove));
        assert_eq!(c.fields.len(), 2);
        assert!(c.touches(b"a") && c.touches(b"b") && !c.touches(b"c"));
        c.absorb(change(RowOp::Delete, 2, &[]));
        assert!(c.fields.is_empty());
        c.absorb(with("c", FieldChange::Set(b"3".to_vec())));
        assert_eq!((c.op, c.fields.len()), (RowOp::Replace, 1));
    }

    #[test]
    fn bad_op_tags_read_as_before_they_were_kinds() {
        let why = |value: &[u8]| decode_op(value).unwrap_err().to_string();
        assert_eq!(why(b""), "the # field is empty; expected one of = + - ~");
        assert_eq!(why(b"*x"), "unknown # operation \"*x\"; expected one of = + - ~");
        assert_eq!(why(b"=a b"), "the uuid after the # operation may hold only letters, digits, - and _");
    }

    #[test]
    fn deltas_round_trip_as_text() {
        assert_eq!(Delta::parse(b"-7", false), Some(Delta::Int(-7)));
        assert_eq!(Delta::parse(b"1.5", true), Some(Delta::Float(1.5)));
        assert_eq!(Delta::parse(b"x", false), None);
        assert_eq!(Delta::parse(b"170141183460469231731687303715884105727", false), Some(Delta::Int(i128::MAX)));
        assert_eq!(Delta::parse(Delta::Float(0.1).to_text().as_bytes(), true), Some(Delta::Float(0.1)));
        assert_eq!(Delta::Float(2.0).to_text(), "2", "adds to an integer column too");
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
