//! The journal's value format: a row's unsynced change (operation and the fields
//! it sets, removes or increments) as compact, binary-safe bytes. Ack uuids are
//! journaled in fields of their own. Pure, unit-tested.
//!
//! Layout: `P2`, the op (`u`/`d`/`r`), then the fields as a u32 count followed by
//! items; every byte string is a u32 length and the bytes (little endian). A field is a kind (`s` set, `x` remove, `i`/`f` integer/float
//! increment), its name, then its value (set) or delta text and Redis's value after
//! (increment).

use crate::change::{Delta, FieldChange, Fields, RowOp, Write};

const MAGIC: &[u8] = b"P2";

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

/// Encodes what the journal keeps for a row.
pub fn encode(op: RowOp, fields: &Fields) -> Vec<u8> {
    let size: usize = fields.keys().map(|f| f.len() + 32).sum::<usize>();
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
        }
    }
    out
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
}

/// Decodes a value written by [`encode`]; `None` when it is not one (a corrupt
/// entry, or one written in another format).
pub fn decode(value: &[u8]) -> Option<Write> {
    let mut r = Reader(value.strip_prefix(MAGIC)?);
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
            _ => return None,
        };
        fields.insert(name, change);
    }
    r.0.is_empty().then_some(Write { op, fields, acks: Vec::new() })
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
        let bytes = encode(RowOp::Replace, &fields);
        assert_eq!(decode(&bytes), Some(Write { op: RowOp::Replace, fields, acks: Vec::new() }));
    }

    #[test]
    fn foreign_or_truncated_values_are_refused() {
        assert_eq!(decode(b"u 6ce0"), None);
        let bytes = encode(RowOp::Delete, &Fields::new());
        assert!(decode(&bytes).is_some());
        assert_eq!(decode(&bytes[..bytes.len() - 1]), None);
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode(&longer), None);
    }
}
