//! The read commands that read-through serves, which of their arguments are
//! keys, and the reply each gives for a row that Redis does not hold but
//! Postgres does (a replica answers from Postgres without writing the row). Pure:
//! no Redis types, unit-tested.

use crate::model::json_row;

/// A read command that loads a missing row of a `read_through` mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadCommand {
    /// `HGET key field`
    Hget,
    /// `HMGET key field [field ...]`
    Hmget,
    /// `HGETALL key`
    Hgetall,
    /// `HEXISTS key field`
    Hexists,
    /// `HLEN key`
    Hlen,
    /// `HKEYS key`
    Hkeys,
    /// `HVALS key`
    Hvals,
    /// `HSTRLEN key field`
    Hstrlen,
    /// `EXISTS key [key ...]`
    Exists,
    /// `TYPE key`
    Type,
    /// `JSON.GET key [path ...]`, for `"type": "json"` mappings, whose rows'
    /// fields hold their members' JSON text.
    JsonGet,
}

const NAMES: &[(&str, ReadCommand)] = &[
    ("HGET", ReadCommand::Hget),
    ("HMGET", ReadCommand::Hmget),
    ("HGETALL", ReadCommand::Hgetall),
    ("HEXISTS", ReadCommand::Hexists),
    ("HLEN", ReadCommand::Hlen),
    ("HKEYS", ReadCommand::Hkeys),
    ("HVALS", ReadCommand::Hvals),
    ("HSTRLEN", ReadCommand::Hstrlen),
    ("EXISTS", ReadCommand::Exists),
    ("TYPE", ReadCommand::Type),
    ("JSON.GET", ReadCommand::JsonGet),
];

/// A reply built without Redis types, sent as Redis would send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadReply {
    /// A null reply.
    Nil,
    /// An integer.
    Int(i64),
    /// A status reply (`TYPE`'s `hash`).
    Status(&'static str),
    /// A bulk string.
    Bulk(Vec<u8>),
    /// An array of bulk strings or nulls.
    Array(Vec<Option<Vec<u8>>>),
    /// A map of field → value (an array of pairs in RESP2).
    Map(Vec<(Vec<u8>, Vec<u8>)>),
}

/// A row as a hash's fields: only fields with a value (NULL columns are absent).
pub type RowFields = [(String, Option<String>)];

impl ReadCommand {
    /// The command with this name (any case), if read-through serves it.
    pub fn from_name(name: &[u8]) -> Option<ReadCommand> {
        if !(3..=8).contains(&name.len()) {
            return None;
        }
        NAMES.iter().find(|(n, _)| n.as_bytes().eq_ignore_ascii_case(name)).map(|(_, c)| *c)
    }

    /// Positions of the key arguments in `argv` (name first) of `argc` arguments.
    pub fn key_positions(self, argc: usize) -> std::ops::Range<usize> {
        match self {
            ReadCommand::Exists => 1..argc.max(1),
            _ => 1..argc.min(2),
        }
    }

    /// Whether `argc` arguments (name included) are a well-formed call; a
    /// malformed one is run as it is, so the client gets Redis's own error.
    pub fn arity_ok(self, argc: usize) -> bool {
        match self {
            ReadCommand::Hget | ReadCommand::Hexists | ReadCommand::Hstrlen => argc == 3,
            ReadCommand::Hmget | ReadCommand::Exists => argc >= 2 + usize::from(self == ReadCommand::Hmget),
            ReadCommand::JsonGet => argc >= 2,
            _ => argc == 2,
        }
    }

    /// Whether [`ReadCommand::reply_for_row`] can build the reply to a call with
    /// `args` after the key: `JSON.GET` only of the whole document (no path,
    /// `$` or `.`), since the rest of JSONPath is RedisJSON's to evaluate.
    pub fn answers_from_row(self, args: &[&[u8]]) -> bool {
        self != ReadCommand::JsonGet || matches!(args, [] | [b"$"] | [b"."])
    }

    /// The reply for a one-key command on a key whose row is `row` (`None`: no
    /// such row, so no key). `args` are the command's arguments after the key.
    pub fn reply_for_row(self, row: Option<&RowFields>, args: &[&[u8]]) -> ReadReply {
        let present = || row.into_iter().flatten().filter_map(|(f, v)| v.as_ref().map(|v| (f, v)));
        let get = |field: &[u8]| present().find(|(f, _)| f.as_bytes() == field).map(|(_, v)| v.as_bytes().to_vec());
        let first = args.first().copied().unwrap_or_default();
        match self {
            ReadCommand::Hget => get(first).map_or(ReadReply::Nil, ReadReply::Bulk),
            ReadCommand::Hmget => ReadReply::Array(args.iter().map(|f| get(f)).collect()),
            ReadCommand::Hgetall => {
                ReadReply::Map(present().map(|(f, v)| (f.as_bytes().to_vec(), v.as_bytes().to_vec())).collect())
            }
            ReadCommand::Hexists => ReadReply::Int(i64::from(get(first).is_some())),
            ReadCommand::Hlen => ReadReply::Int(present().count() as i64),
            ReadCommand::Hkeys => ReadReply::Array(present().map(|(f, _)| Some(f.as_bytes().to_vec())).collect()),
            ReadCommand::Hvals => ReadReply::Array(present().map(|(_, v)| Some(v.as_bytes().to_vec())).collect()),
            ReadCommand::Hstrlen => ReadReply::Int(get(first).map_or(0, |v| v.len() as i64)),
            ReadCommand::Exists => ReadReply::Int(i64::from(row.is_some())),
            ReadCommand::Type => ReadReply::Status(if row.is_some() { "hash" } else { "none" }),
            ReadCommand::JsonGet => match row.map(json_row::row_document) {
                Some(doc) if first == b"$" => ReadReply::Bulk(format!("[{doc}]").into_bytes()),
                Some(doc) => ReadReply::Bulk(doc.into_bytes()),
                None => ReadReply::Nil,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> Vec<(String, Option<String>)> {
        vec![("name".into(), Some("Ada".into())), ("email".into(), None), ("score".into(), Some("10".into()))]
    }

    #[test]
    fn names_and_keys() {
        assert_eq!(ReadCommand::from_name(b"hgetall"), Some(ReadCommand::Hgetall));
        assert_eq!(ReadCommand::from_name(b"HSET"), None);
        assert_eq!(ReadCommand::from_name(b"GET"), None);
        assert_eq!(ReadCommand::Exists.key_positions(4), 1..4);
        assert_eq!(ReadCommand::Hget.key_positions(3), 1..2);
        assert_eq!(ReadCommand::Hget.key_positions(1), 1..1);
        assert!(ReadCommand::Hget.arity_ok(3) && !ReadCommand::Hget.arity_ok(4));
        assert!(ReadCommand::Hmget.arity_ok(3) && !ReadCommand::Hmget.arity_ok(2));
        assert!(ReadCommand::Exists.arity_ok(2) && !ReadCommand::Exists.arity_ok(1));
        assert!(ReadCommand::Type.arity_ok(2) && !ReadCommand::Type.arity_ok(3));
        assert_eq!(ReadCommand::from_name(b"json.get"), Some(ReadCommand::JsonGet));
        assert_eq!(ReadCommand::JsonGet.key_positions(4), 1..2);
        assert!(ReadCommand::JsonGet.arity_ok(2) && ReadCommand::JsonGet.arity_ok(4));
    }

    #[test]
    fn a_replica_builds_a_json_document_only_whole() {
        let r = vec![
            ("name".to_string(), Some("\"Ada\"".to_string())),
            ("email".into(), None),
            ("score".into(), Some("10".into())),
        ];
        let doc = br#"{"name":"Ada","score":10}"#.to_vec();
        for args in [&[][..], &[&b"."[..]]] {
            assert!(ReadCommand::JsonGet.answers_from_row(args));
            assert_eq!(ReadCommand::JsonGet.reply_for_row(Some(&r), args), ReadReply::Bulk(doc.clone()));
        }
        let wrapped = [b"[".as_slice(), &doc, b"]"].concat();
        assert_eq!(ReadCommand::JsonGet.reply_for_row(Some(&r), &[b"$"]), ReadReply::Bulk(wrapped));
        assert_eq!(ReadCommand::JsonGet.reply_for_row(None, &[]), ReadReply::Nil);
        assert!(!ReadCommand::JsonGet.answers_from_row(&[b"$.name"]));
        assert!(!ReadCommand::JsonGet.answers_from_row(&[b"$", b"."]));
        assert!(ReadCommand::Hget.answers_from_row(&[b"name"]));
    }

    #[test]
    fn replies_as_redis_gives_them_for_a_row() {
        let r = row();
        let some = Some(r.as_slice());
        assert_eq!(ReadCommand::Hget.reply_for_row(some, &[b"name"]), ReadReply::Bulk(b"Ada".to_vec()));
        assert_eq!(ReadCommand::Hget.reply_for_row(some, &[b"email"]), ReadReply::Nil);
        assert_eq!(
            ReadCommand::Hmget.reply_for_row(some, &[b"score", b"nope"]),
            ReadReply::Array(vec![Some(b"10".to_vec()), None])
        );
        assert_eq!(
            ReadCommand::Hgetall.reply_for_row(some, &[]),
            ReadReply::Map(vec![(b"name".to_vec(), b"Ada".to_vec()), (b"score".to_vec(), b"10".to_vec())])
        );
        assert_eq!(ReadCommand::Hlen.reply_for_row(some, &[]), ReadReply::Int(2));
        assert_eq!(ReadCommand::Hexists.reply_for_row(some, &[b"email"]), ReadReply::Int(0));
        assert_eq!(ReadCommand::Hstrlen.reply_for_row(some, &[b"name"]), ReadReply::Int(3));
        assert_eq!(ReadCommand::Type.reply_for_row(some, &[]), ReadReply::Status("hash"));
        assert_eq!(ReadCommand::Exists.reply_for_row(None, &[]), ReadReply::Int(0));
        assert_eq!(ReadCommand::Hgetall.reply_for_row(None, &[]), ReadReply::Map(vec![]));
        assert_eq!(ReadCommand::Type.reply_for_row(None, &[]), ReadReply::Status("none"));
    }
}
