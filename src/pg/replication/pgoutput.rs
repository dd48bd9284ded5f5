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

/// What is malformed in a `pgoutput` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The message ends before a field it announces.
    CutShort {
        /// Bytes the field needs.
        wanted: usize,
        /// Bytes left.
        left: usize,
    },
    /// A tuple tag this message kind cannot carry.
    TupleTag {
        /// The message kind (`update`, `delete`).
        message: &'static str,
        /// The tag found.
        found: u8,
    },
    /// A fixed tag is not where it should be.
    Expected {
        /// The tag the format puts here.
        wanted: u8,
        /// The tag found.
        found: u8,
    },
    /// A name runs to the end of the message.
    Unterminated,
    /// A name or a value is not UTF-8.
    NotUtf8 {
        /// Which: `name` or `value`.
        what: &'static str,
        /// The conversion's error.
        source: std::string::FromUtf8Error,
    },
    /// A value kind other than null, unchanged and text (binary is never asked for).
    ValueKind(u8),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::CutShort { wanted, left } => {
                write!(f, "message cut short: {wanted} bytes wanted, {left} left")
            }
            DecodeError::TupleTag { message, found } => write!(f, "{message}: unexpected tuple tag {found}"),
            DecodeError::Expected { wanted, found } => {
                write!(f, "expected tag {}, found {}", *wanted as char, *found as char)
            }
            DecodeError::Unterminated => f.write_str("a name without its terminating zero"),
            DecodeError::NotUtf8 { what, source } => write!(f, "a {what} not in UTF-8: {source}"),
            DecodeError::ValueKind(kind) => {
                write!(f, "value kind {} (binary values are not requested)", *kind as char)
            }
        }
    }
}

impl std::error::Error for DecodeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DecodeError::NotUtf8 { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Decodes one `pgoutput` message; `Err` names what is malformed.
pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
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
                found => return Err(DecodeError::TupleTag { message: "update", found }),
            };
            Message::Update { relation, old, new: r.tuple()? }
        }
        b'D' => {
            let relation = r.u32()?;
            match r.u8()? {
                b'K' | b'O' => Message::Delete { relation, old: r.tuple()? },
                found => return Err(DecodeError::TupleTag { message: "delete", found }),
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
    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::CutShort { wanted: n, left: self.0.len() });
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn expect(&mut self, tag: u8) -> Result<(), DecodeError> {
        match self.u8()? {
            t if t == tag => Ok(()),
            found => Err(DecodeError::Expected { wanted: tag, found }),
        }
    }

    fn cstr(&mut self) -> Result<String, DecodeError> {
        let end = self.0.iter().position(|&b| b == 0).ok_or(DecodeError::Unterminated)?;
        let text = String::from_utf8(self.0[..end].to_vec())
            .map_err(|source| DecodeError::NotUtf8 { what: "name", source })?;
        self.0 = &self.0[end + 1..];
        Ok(text)
    }

    fn tuple(&mut self) -> Result<Vec<Value>, DecodeError> {
        let count = self.u16()?;
        let mut values = Vec::with_capacity(count as usize);
        for _ in 0..count {
            values.push(match self.u8()? {
                b'n' => Value::Null,
                b'u' => Value::Unchanged,
                b't' => {
                    let len = self.u32()? as usize;
                    let bytes = self.take(len)?;
                    Value::Text(
                        String::from_utf8(bytes.to_vec())
                            .map_err(|source| DecodeError::NotUtf8 { what: "value", source })?,
                    )
                }
                other => return Err(DecodeError::ValueKind(other)),
            });
        }
        Ok(values)
    }
}
