//! The journal's record format: one write, or several coalesced (operation, the
//! fields set, removed or incremented, and the ack uuids waiting on it), as compact,
//! binary-safe bytes. Pure, unit-tested.
//!
//! Layout: `P3`, the op (`u`/`d`/`r`), then the fields as a u32 count followed by
//! items, then the acks as a u32 count followed by strings; every byte string is a
//! u32 length and the bytes (little endian). A field is a kind (`s` set, `x`
//! remove, `i`/`f` integer/float increment, `p` paths set inside a JSON
//! member), its name, then its value (set), delta text and Redis's value after
//! (increment), or a u32 count of path sets, each a u32 count of member names,
//! the names and the JSON value (paths). `P2`, the previous version's format,
//! is the same without the acks; it is still read. (`p` came later than `P3`
//! itself: a record holding one is unknown to a version without path sets.)

use crate::model::change::{Change, Delta, FieldChange, Fields, RowOp, Write};
use crate::model::json_path_set::PathSet;

const MAGIC: &[u8] = b"P3";
const MAGIC_V2: &[u8] = b"P2";

fn op_code(op: RowOp) -> u8 {
    match op {
        RowOp::Upsert => b'u',
        RowOp::Delete => b'd',
        RowOp::Replace => b'r',
    }
}

fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Encodes a journal record: a write (or writes coalesced) and its acks.
pub fn encode(op: RowOp, fields: &Fields, acks: &[String]) -> Vec<u8> {
    let size = fields.iter().map(|(f, c)| f.len() + field_size(c) + 16).sum::<usize>()
        + acks.iter().map(|a| a.len() + 4).sum::<usize>();
    let mut out = Vec::with_capacity(size + 16);
    out.extend_from_slice(MAGIC);
    out.push(op_code(op));
    out.extend_from_slice(&(fields.len() as u32).to_le_bytes());
    for (name, change) in fields {
        match change {
            FieldChange::Set(value) => {
                out.push(b's');
                put(&mut out, name);
                put(&mut out, value);
            }
            FieldChange::Remove => {
                out.push(b'x');
                put(&mut out, name);
            }
            FieldChange::Add { delta, redis_after } => {
                out.push(if matches!(delta, Delta::Int(_)) { b'i' } else { b'f' });
                put(&mut out, name);
                put(&mut out, delta.to_text().as_bytes());
                put(&mut out, redis_after);
            }
            FieldChange::Paths(sets) => {
                out.push(b'p');
                put(&mut out, name);
                out.extend_from_slice(&(sets.len() as u32).to_le_bytes());
                for set in sets {
                    out.extend_from_slice(&(set.path.len() as u32).to_le_bytes());
                    set.path.iter().for_each(|n| put(&mut out, n.as_bytes()));
                    put(&mut out, set.value.as_bytes());
                }
            }
        }
    }
    out.extend_from_slice(&(acks.len() as u32).to_le_bytes());
    for uuid in acks {
        put(&mut out, uuid.as_bytes());
    }
    out
}

fn field_size(change: &FieldChange) -> usize {
    match change {
        FieldChange::Set(value) => value.len(),
        FieldChange::Remove => 0,
        FieldChange::Add { redis_after, .. } => redis_after.len() + 24,
        FieldChange::Paths(sets) => sets.iter().map(|s| s.size_bytes() + 8 + 4 * s.path.len()).sum(),
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn count(&mut self) -> Option<usize> {
        let bytes: [u8; 4] = self.take(4)?.try_into().ok()?;
        Some(u32::from_le_bytes(bytes) as usize)
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.count()?;
        self.take(n)
    }

    fn text(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?.to_vec()).ok()
    }

    /// Path sets: a count, then each a count of names, the names, the value.
    fn paths(&mut self) -> Option<Vec<PathSet>> {
        let mut sets = Vec::new();
        for _ in 0..self.count()? {
            let path = (0..self.count()?).map(|_| self.text()).collect::<Option<Vec<_>>>()?;
            sets.push(PathSet { path, value: self.text()? });
        }
        Some(sets)
    }
}

/// The record a coalesced change is journaled as (a row's log rewritten as one).
pub fn encode_change(change: &Change) -> Vec<u8> {
    encode(change.op, &change.fields, &change.acks)
}

/// Decodes a record written by [`encode`] (or a `P2` entry of the previous
/// version); `None` when it is not one (a corrupt entry, or another format).
pub fn decode(value: &[u8]) -> Option<Write> {
    let (mut r, with_acks) = match (value.strip_prefix(MAGIC), value.strip_prefix(MAGIC_V2)) {
        (Some(rest), _) => (Reader(rest), true),
        (None, Some(rest)) => (Reader(rest), false),
        (None, None) => return None,
    };
    let op = match r.byte()? {
        b'u' => RowOp::Upsert,
        b'd' => RowOp::Delete,
        b'r' => RowOp::Replace,
        _ => return None,
    };
    let mut fields = Fields::new();
    for _ in 0..r.count()? {
        let kind = r.byte()?;
        let name = r.bytes()?.to_vec();
        let change = match kind {
            b's' => FieldChange::Set(r.bytes()?.to_vec()),
            b'x' => FieldChange::Remove,
            b'i' | b'f' => {
                let delta = Delta::parse(r.bytes()?, kind == b'f')?;
                FieldChange::Add { delta, redis_after: r.bytes()?.to_vec() }
            }
            b'p' => FieldChange::Paths(r.paths()?),
            _ => return None,
        };
        fields.insert(name, change);
    }
    let mut acks = Vec::new();
    if with_acks {
        for _ in 0..r.count()? {
            acks.push(r.text()?);
        }
    }
    r.0.is_empty().then_some(Write { op, fields, acks })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_change_round_trips_with_binary_bytes() {
        let mut fields = Fields::new();
        fields.insert(b"bin\0\xff".to_vec(), FieldChange::Set(b"\x00\x01\n".to_vec()));
        fields.insert(b"gone".to_vec(), FieldChange::Remove);
        fields.insert(b"n".to_vec(), FieldChange::Add { delta: Delta::Int(-12), redis_after: b"3".to_vec() });
        fields.insert(b"x".to_vec(), FieldChange::Add { delta: Delta::Float(0.25), redis_after: b"1.25".to_vec() });
        let sets = vec![
            PathSet { path: vec!["city".into()], value: "\"Bergen\"".into() },
            PathSet { path: vec!["a\0b".into(), "".into(), "ø".into()], value: r#"{"x":[1,null]}"#.into() },
        ];
        fields.insert(b"profile\xff".to_vec(), FieldChange::Paths(sets));
        let acks = vec!["6ce0".to_string(), "b-2".to_string()];
        let bytes = encode(RowOp::Replace, &fields, &acks);
        assert_eq!(decode(&bytes), Some(Write { op: RowOp::Replace, fields, acks }));
    }

    #[test]
    fn foreign_or_truncated_values_are_refused() {
        assert_eq!(decode(b"u 6ce0"), None);
        let bytes = encode(RowOp::Delete, &Fields::new(), &[]);
        assert!(decode(&bytes).is_some());
        assert_eq!(decode(&bytes[..bytes.len() - 1]), None);
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode(&longer), None);
    }

    #[test]
    fn entries_of_the_previous_format_are_read_without_acks() {
        // P2: op, one field set, no ack section.
        let mut v2 = b"P2u".to_vec();
        v2.extend_from_slice(&1u32.to_le_bytes());
        v2.push(b's');
        v2.extend_from_slice(&1u32.to_le_bytes());
        v2.push(b'a');
        v2.extend_from_slice(&1u32.to_le_bytes());
        v2.push(b'1');
        let write = decode(&v2).expect("a P2 entry");
        assert_eq!((write.op, write.fields.len(), write.acks.len()), (RowOp::Upsert, 1, 0));
    }

    #[test]
    fn a_path_set_cut_short_or_not_utf8_is_refused() {
        let mut fields = Fields::new();
        let sets = vec![PathSet { path: vec!["a".into(), "b".into()], value: "1".into() }];
        fields.insert(b"p".to_vec(), FieldChange::Paths(sets));
        let bytes = encode(RowOp::Upsert, &fields, &[]);
        for cut in 1..bytes.len() {
            assert_eq!(decode(&bytes[..cut]), None, "{cut}");
        }
        let name = bytes.iter().position(|b| *b == b'a').expect("the name a");
        let mut bad = bytes.clone();
        bad[name] = 0xff;
        assert_eq!(decode(&bad), None);
    }
}
