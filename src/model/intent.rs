//! What a write command asks for, read from its arguments: which fields it sets,
//! removes or increments. The command itself is the writer's intent, so a write
//! means the same whether or not Redis held the key (a cache holds only some rows,
//! and some fields of them). Pure: no Redis types, unit-tested.

use crate::model::change::{Delta, OP_FIELD};
use std::ffi::CStr;

/// A write command the module captures on mapped keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `HSET key field value [field value ...]`
    Hset,
    /// `HMSET key field value [field value ...]`
    Hmset,
    /// `HSETNX key field value`
    Hsetnx,
    /// `HSETEX key [FNX|FXX] [EX s|PX ms|EXAT t|PXAT t|KEEPTTL] FIELDS n field value ...` (Redis 8)
    Hsetex,
    /// `HINCRBY key field delta`
    Hincrby,
    /// `HINCRBYFLOAT key field delta`
    Hincrbyfloat,
    /// `HDEL key field [field ...]`
    Hdel,
    /// `HGETDEL key FIELDS n field ...` (Redis 8)
    Hgetdel,
    /// `DEL key [key ...]`
    Del,
    /// `UNLINK key [key ...]`
    Unlink,
}

const NAMES: &[(&CStr, Command)] = &[
    (c"HSET", Command::Hset),
    (c"HMSET", Command::Hmset),
    (c"HSETNX", Command::Hsetnx),
    (c"HSETEX", Command::Hsetex),
    (c"HINCRBY", Command::Hincrby),
    (c"HINCRBYFLOAT", Command::Hincrbyfloat),
    (c"HDEL", Command::Hdel),
    (c"HGETDEL", Command::Hgetdel),
    (c"DEL", Command::Del),
    (c"UNLINK", Command::Unlink),
];

impl Command {
    /// The command with this name (any case), if the module captures it.
    pub fn from_name(name: &[u8]) -> Option<Command> {
        // Most commands are not ours: reject on length before comparing.
        if !(3..=12).contains(&name.len()) {
            return None;
        }
        NAMES.iter().find(|(n, _)| n.to_bytes().eq_ignore_ascii_case(name)).map(|(_, c)| *c)
    }

    /// The command's name, as Redis knows it.
    pub fn name(self) -> &'static str {
        self.c_name().to_str().unwrap_or("HSET")
    }

    /// The name as a C string, for the module API (no allocation per write).
    pub fn c_name(self) -> &'static CStr {
        NAMES.iter().find(|(_, c)| *c == self).map_or(c"HSET", |(n, _)| n)
    }

    /// Whether it deletes whole keys (`DEL`, `UNLINK`) rather than writing one hash.
    pub fn deletes_keys(self) -> bool {
        matches!(self, Command::Del | Command::Unlink)
    }

    /// Whether Redis refuses it under `maxmemory` (`deny-oom`): everything that can
    /// grow a hash. Removals stay allowed, as in Redis.
    pub fn deny_oom(self) -> bool {
        !matches!(self, Command::Hdel | Command::Hgetdel | Command::Del | Command::Unlink)
    }
}

/// What a hash write does to its key's fields.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Sets these fields (the last value wins for a field named twice). For HSETNX
    /// and HSETEX it happens only when the command replies 1.
    Set(Pairs),
    /// Adds `delta` to one field.
    Incr {
        /// The field.
        field: Vec<u8>,
        /// The increment.
        delta: Delta,
    },
    /// Removes these fields.
    Remove(Vec<Vec<u8>>),
}

impl Effect {
    /// Whether the command's reply says it wrote nothing (HSETNX and HSETEX reply 0).
    pub fn conditional(command: Command) -> bool {
        matches!(command, Command::Hsetnx | Command::Hsetex)
    }
}

/// Reads the effect of a hash write from its arguments after the key, or `None`
/// when they are malformed (Redis then refuses the command with its own error).
pub fn parse(command: Command, args: &[&[u8]]) -> Option<Effect> {
    match command {
        Command::Hset | Command::Hmset => pairs(args).map(Effect::Set),
        Command::Hsetnx => match args {
            [field, value] => Some(Effect::Set(vec![(field.to_vec(), value.to_vec())])),
            _ => None,
        },
        Command::Hsetex => after_fields_count(args, 2).and_then(pairs).map(Effect::Set),
        Command::Hincrby | Command::Hincrbyfloat => match args {
            [field, delta] => Delta::parse(delta, command == Command::Hincrbyfloat)
                .map(|delta| Effect::Incr { field: field.to_vec(), delta }),
            _ => None,
        },
        Command::Hdel if !args.is_empty() => Some(Effect::Remove(args.iter().map(|f| f.to_vec()).collect())),
        Command::Hgetdel => after_fields_count(args, 1).map(|f| Effect::Remove(f.iter().map(|f| f.to_vec()).collect())),
        Command::Hdel | Command::Del | Command::Unlink => None,
    }
}

fn pairs(args: &[&[u8]]) -> Option<Pairs> {
    if args.is_empty() || !args.len().is_multiple_of(2) {
        return None;
    }
    Some(args.chunks_exact(2).map(|p| (p[0].to_vec(), p[1].to_vec())).collect())
}

/// The items after `FIELDS <n>` (each `per_field` arguments long), checking `n`.
fn after_fields_count<'a>(args: &'a [&'a [u8]], per_field: usize) -> Option<&'a [&'a [u8]]> {
    let at = args.iter().position(|a| a.eq_ignore_ascii_case(b"FIELDS"))?;
    let count: usize = std::str::from_utf8(args.get(at + 1)?).ok()?.parse().ok()?;
    let rest = &args[at + 2..];
    (count > 0 && rest.len() == count * per_field).then_some(rest)
}

/// Field/value pairs of a hash write.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Splits the rgsync `#` field out of HSET pairs: the pairs to write, and the
/// `#` value if one was given (the last one, as HSET would keep).
pub fn take_op_field(pairs: Pairs) -> (Pairs, Option<Vec<u8>>) {
    // Almost no write carries one: give the pairs back as they came.
    if !pairs.iter().any(|(f, _)| f == OP_FIELD) {
        return (pairs, None);
    }
    let mut op = None;
    let rest = pairs
        .into_iter()
        .filter_map(|(f, v)| {
            if f == OP_FIELD {
                op = Some(v);
                None
            } else {
                Some((f, v))
            }
        })
        .collect();
    (rest, op)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args<'a>(items: &'a [&'a str]) -> Vec<&'a [u8]> {
        items.iter().map(|s| s.as_bytes()).collect()
    }

    fn set(items: &[(&str, &str)]) -> Effect {
        Effect::Set(items.iter().map(|(f, v)| (f.as_bytes().to_vec(), v.as_bytes().to_vec())).collect())
    }

    #[test]
    fn names_match_in_any_case_and_others_do_not() {
        assert_eq!(Command::from_name(b"hset"), Some(Command::Hset));
        assert_eq!(Command::from_name(b"HincrByFloat"), Some(Command::Hincrbyfloat));
        assert_eq!(Command::from_name(b"unlink"), Some(Command::Unlink));
        assert_eq!(Command::from_name(b"GET"), None);
        assert_eq!(Command::from_name(b"HGETALL"), None);
        assert!(!Command::Hdel.deny_oom() && Command::Hset.deny_oom());
        assert_eq!(Command::Hincrby.name(), "HINCRBY");
        assert_eq!(Command::Hgetdel.c_name(), c"HGETDEL");
    }

    #[test]
    fn hash_writes_say_which_fields_they_touch() {
        assert_eq!(parse(Command::Hset, &args(&["a", "1", "b", "2"])), Some(set(&[("a", "1"), ("b", "2")])));
        assert_eq!(parse(Command::Hset, &args(&["a"])), None);
        assert_eq!(parse(Command::Hsetnx, &args(&["a", "1"])), Some(set(&[("a", "1")])));
        assert_eq!(
            parse(Command::Hincrby, &args(&["n", "-3"])),
            Some(Effect::Incr { field: b"n".to_vec(), delta: Delta::Int(-3) })
        );
        assert_eq!(parse(Command::Hincrby, &args(&["n", "1.5"])), None);
        assert_eq!(
            parse(Command::Hincrbyfloat, &args(&["n", "1.5"])),
            Some(Effect::Incr { field: b"n".to_vec(), delta: Delta::Float(1.5) })
        );
        assert_eq!(parse(Command::Hdel, &args(&["a", "b"])), Some(Effect::Remove(vec![b"a".to_vec(), b"b".to_vec()])));
        assert_eq!(parse(Command::Hdel, &args(&[])), None);
    }

    #[test]
    fn redis_8_field_commands_are_read_after_fields() {
        let hsetex = args(&["FNX", "EX", "10", "FIELDS", "2", "a", "1", "b", "2"]);
        assert_eq!(parse(Command::Hsetex, &hsetex), Some(set(&[("a", "1"), ("b", "2")])));
        assert_eq!(parse(Command::Hsetex, &args(&["FIELDS", "2", "a", "1"])), None, "count mismatch");
        let hgetdel = args(&["FIELDS", "2", "a", "b"]);
        assert_eq!(parse(Command::Hgetdel, &hgetdel), Some(Effect::Remove(vec![b"a".to_vec(), b"b".to_vec()])));
    }

    #[test]
    fn the_op_field_is_split_out() {
        let pairs = vec![(b"#".to_vec(), b"=ab".to_vec()), (b"a".to_vec(), b"1".to_vec())];
        let (rest, op) = take_op_field(pairs);
        assert_eq!(rest, vec![(b"a".to_vec(), b"1".to_vec())]);
        assert_eq!(op, Some(b"=ab".to_vec()));
        let plain = vec![(b"a".to_vec(), b"1".to_vec())];
        assert_eq!(take_op_field(plain.clone()), (plain, None));
    }
}
