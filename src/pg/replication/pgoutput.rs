//! Decoding of the `pgoutput` messages (protocol version 1, values as text) that
//! carry a transaction's changes: relations, inserts, updates, deletes and
//! truncations. The replication client hands over Begin, Commit and logical
//! messages itself; every other message arrives here as raw bytes. Pure: no I/O.

/// A column's value in a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// A TOASTed value the update left unchanged: Postgres does not send it.
    Unchanged,
    /// The value as its type's output function prints it.
    Text(String),
}

/// A table as the stream describes it, before the first change to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// The relation's id, which later messages refer to.
    pub id: u32,
    /// Its schema.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Column names, in the order of the values of its changes.
    pub columns: Vec<String>,
}

/// One decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Describes a relation (sent before its first change in a session).
    Relation(Relation),
    /// A new row.
    Insert {
        /// The relation.
        relation: u32,
        /// The row's values.
        new: Vec<Value>,
    },
    /// A changed row; `old` holds the old key when the key changed (or the
    /// whole old row under `REPLICA IDENTITY FULL`).
    Update {
        /// The relation.
        relation: u32,
        /// The old key or row, when sent.
        old: Option<Vec<Value>>,
        /// The row's values.
        new: Vec<Value>,
    },
    /// A removed row: its key (other columns NULL), or the whole old row.
    Delete {
        /// The relation.
        relation: u32,
        /// The old key or row.
        old: Vec<Value>,
    },
    /// Truncated relations.
    Truncate {
        /// The relations.
        relations: Vec<u32>,
    },
    /// A message that carries no row change (type, origin, ...).
    Other(u8),
}

/// Decodes one `pgoutput` message; `Err` names what is malformed.
pub fn decode(bytes: &[u8]) -> Result<Message, String> {
    let mut r = Reader(bytes);
    let tag = r.u8()?;
    let message = match tag {
        b'R' => {
            let id = r.u32()?;
            let namespace = r.cstr()?;
            let name = r.cstr()?;
            let _identity = r.u8()?;
            let count = r.u16()?;
            let mut columns = Vec::with_capacity(count as usize);
            for _ in 0..count {
                let _flags = r.u8()?;
                columns.push(r.cstr()?);
                let _type = r.u32()?;
                let _modifier = r.u32()?;
            }
            Message::Relation(Relation { id, namespace, name, columns })
        }
        b'I' => {
            let relation = r.u32()?;
            r.expect(b'N')?;
            Message::Insert { relation, new: r.tuple()? }
        }
        b'U' => {
            let relation = r.u32()?;
            let old = match r.u8()? {
                b'K' | b'O' => {
                    let old = r.tuple()?;
                    r.expect(b'N')?;
                    Some(old)
                }
                b'N' => None,
                other => return Err(format!("update: unexpected tuple tag {other}")),
            };
            Message::Update { relation, old, new: r.tuple()? }
        }
        b'D' => {
            let relation = r.u32()?;
            match r.u8()? {
                b'K' | b'O' => Message::Delete { relation, old: r.tuple()? },
                other => return Err(format!("delete: unexpected tuple tag {other}")),
            }
        }
        b'T' => {
            let count = r.u32()?;
            let _options = r.u8()?;
            let relations = (0..count).map(|_| r.u32()).collect::<Result<_, _>>()?;
            Message::Truncate { relations }
        }
        other => Message::Other(other),
    };
    Ok(message)
}

/// A cursor over a message's bytes.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        if self.0.len() < n {
            return Err(format!("message cut short: {n} bytes wanted, {} left", self.0.len()));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn expect(&mut self, tag: u8) -> Result<(), String> {
        match self.u8()? {
            t if t == tag => Ok(()),
            t => Err(format!("expected tag {}, found {}", tag as char, t as char)),
        }
    }

    fn cstr(&mut self) -> Result<String, String> {
        let end = self.0.iter().position(|&b| b == 0).ok_or("a name without its terminating zero")?;
        let text = String::from_utf8(self.0[..end].to_vec()).map_err(|e| format!("a name not in UTF-8: {e}"))?;
        self.0 = &self.0[end + 1..];
        Ok(text)
    }

    fn tuple(&mut self) -> Result<Vec<Value>, String> {
        let count = self.u16()?;
        let mut values = Vec::with_capacity(count as usize);
        for _ in 0..count {
            values.push(match self.u8()? {
                b'n' => Value::Null,
                b'u' => Value::Unchanged,
                b't' => {
                    let len = self.u32()? as usize;
                    let bytes = self.take(len)?;
                    Value::Text(String::from_utf8(bytes.to_vec()).map_err(|e| format!("a value not in UTF-8: {e}"))?)
                }
                other => return Err(format!("value kind {} (binary values are not requested)", other as char)),
            });
        }
        Ok(values)
    }
}
