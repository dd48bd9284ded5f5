//! What a RedisJSON write asks for, read from its arguments, on a `"type":
//! "json"` write-behind key: which top-level members (columns) it sets, removes
//! or increments, whether it writes below a member (and the path set that
//! write makes when Redis lacks the member), or deletes the row. As with
//! hashes, the command is the writer's intent, whether or not Redis held the
//! key. Pure: no Redis types, unit-tested.

use crate::model::change::Delta;
use crate::model::json_path_set::PathSet;
use crate::model::json_row;
use crate::model::mapping::Mapping;
use serde_json::value::RawValue;

/// A RedisJSON write the module captures on mapped JSON keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonCommand {
    /// `JSON.SET key path value [NX|XX]`
    Set,
    /// `JSON.DEL key [path]`
    Del,
    /// `JSON.FORGET key [path]` (JSON.DEL's other name)
    Forget,
    /// `JSON.NUMINCRBY key path number`
    NumIncrBy,
    /// A write that changes a member in place (`JSON.TOGGLE`, `JSON.STRAPPEND`,
    /// `JSON.ARRAPPEND`, ...; its name kept): the member's new value is read
    /// back after it ran.
    InPlace(&'static str),
    /// `JSON.MERGE key path value` (RFC 7396 merge patch)
    Merge,
    /// `JSON.MSET key path value [key path value ...]`: each triple read as a `JSON.SET`.
    MSet,
}

const NAMES: &[(&str, JsonCommand)] = &[
    ("JSON.SET", JsonCommand::Set),
    ("JSON.DEL", JsonCommand::Del),
    ("JSON.FORGET", JsonCommand::Forget),
    ("JSON.NUMINCRBY", JsonCommand::NumIncrBy),
    ("JSON.NUMMULTBY", JsonCommand::InPlace("JSON.NUMMULTBY")),
    ("JSON.NUMPOWBY", JsonCommand::InPlace("JSON.NUMPOWBY")),
    ("JSON.TOGGLE", JsonCommand::InPlace("JSON.TOGGLE")),
    ("JSON.CLEAR", JsonCommand::InPlace("JSON.CLEAR")),
    ("JSON.STRAPPEND", JsonCommand::InPlace("JSON.STRAPPEND")),
    ("JSON.ARRAPPEND", JsonCommand::InPlace("JSON.ARRAPPEND")),
    ("JSON.ARRINSERT", JsonCommand::InPlace("JSON.ARRINSERT")),
    ("JSON.ARRPOP", JsonCommand::InPlace("JSON.ARRPOP")),
    ("JSON.ARRTRIM", JsonCommand::InPlace("JSON.ARRTRIM")),
    ("JSON.MSET", JsonCommand::MSet),
    ("JSON.MERGE", JsonCommand::Merge),
];

impl JsonCommand {
    /// The command with this name (any case), if the module captures it.
    pub fn from_name(name: &[u8]) -> Option<JsonCommand> {
        if !(8..=14).contains(&name.len()) || !name[..5].eq_ignore_ascii_case(b"JSON.") {
            return None;
        }
        NAMES.iter().find(|(n, _)| n.as_bytes().eq_ignore_ascii_case(name)).map(|(_, c)| *c)
    }

    /// The command's name, as RedisJSON knows it.
    pub fn name(self) -> &'static str {
        match self {
            JsonCommand::InPlace(name) => name,
            _ => NAMES.iter().find(|(_, c)| *c == self).map_or("JSON.SET", |(n, _)| n),
        }
    }

    /// Positions of its key arguments in a call of `argc` arguments (name first):
    /// every third from 1 for `JSON.MSET`, else the first.
    pub fn key_positions(self, argc: usize) -> Vec<usize> {
        match self {
            JsonCommand::MSet => (1..argc).step_by(3).collect(),
            _ => vec![1],
        }
    }

    /// Whether Redis refuses it under `maxmemory` (RedisJSON marks its writes
    /// that can grow a document `deny-oom`; removals stay allowed).
    pub fn deny_oom(self) -> bool {
        !matches!(
            self,
            JsonCommand::Del
                | JsonCommand::Forget
                | JsonCommand::InPlace("JSON.ARRPOP" | "JSON.ARRTRIM" | "JSON.CLEAR")
        )
    }
}

/// Where a JSONPath points, as far as columns are concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// The whole document (`$`, `.`): the row.
    Root,
    /// A top-level member (`$.score`, `.score`, `score`, `$["first name"]`): one column.
    Member(String),
    /// Somewhere inside a top-level member (`$.address.city`): that member's column.
    Below(String),
}

/// Why capture cannot give a JSON write a meaning for columns (the write is
/// refused with this text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonRefused {
    /// The path is not UTF-8.
    PathNotUtf8,
    /// The path does not name one top-level member (the path).
    NotOneMember(String),
    /// A write at the root whose value is no object (the command).
    RootNotObject(&'static str),
    /// A command that changes a member in place, given the root (the command).
    RootNotMember(&'static str),
}

impl std::fmt::Display for JsonRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JsonRefused::PathNotUtf8 => f.write_str("the path is not UTF-8"),
            JsonRefused::NotOneMember(path) => write!(
                f,
                "path {path} does not name one top-level member (a column); use $ for the row, $.member or $[\"member\"]"
            ),
            JsonRefused::RootNotObject(command) => {
                write!(f, "a JSON row is an object: {command} at the root takes an object")
            }
            JsonRefused::RootNotMember(command) => write!(f, "{command} needs a member's path, not the root"),
        }
    }
}

impl std::error::Error for JsonRefused {}

/// Reads a JSONPath (RedisJSON's `$` syntax or its legacy `.` syntax) down to
/// its first member; `Err` for a path that does not start with one member
/// (`$..name`, `$.*`, `$[0]`): it could touch any column.
pub fn place(path: &[u8]) -> Result<Place, JsonRefused> {
    let text = std::str::from_utf8(path).map_err(|_| JsonRefused::PathNotUtf8)?;
    let (name, after) = match first_member(text)? {
        Some(first) => first,
        None => return Ok(Place::Root),
    };
    Ok(match after.is_empty() {
        true => Place::Member(name),
        false => Place::Below(name),
    })
}

/// The first member a path names and the rest of the path after it; `None`
/// for the root.
fn first_member(text: &str) -> Result<Option<(String, &str)>, JsonRefused> {
    let rest = match text {
        "$" | "." => return Ok(None),
        _ if text.starts_with("$.") || text.starts_with("$[") => &text[1..],
        _ if text.starts_with('.') || text.starts_with('[') => text,
        _ if text.starts_with('$') => return Err(unsupported(text)),
        // The legacy syntax's leading dot is optional: `score` is `.score`.
        _ => return member_then(text, text).map(Some),
    };
    next_member(text, rest).map(Some)
}

/// The member named at the start of `rest` (`.name` or `["name"]`) and what follows it.
fn next_member<'a>(path: &str, rest: &'a str) -> Result<(String, &'a str), JsonRefused> {
    match rest.strip_prefix('.') {
        Some(after) if !after.starts_with('.') => member_then(path, after),
        Some(_) => Err(unsupported(path)),
        None => bracketed(path, rest),
    }
}

/// Every member name of a path made of names only (`$.profile.address.city`,
/// `$["a b"].c`), in order; `None` for the root or a path with anything else
/// (an index, a wildcard, a filter, `..`).
pub fn member_names(path: &[u8]) -> Option<Vec<String>> {
    let text = std::str::from_utf8(path).ok()?;
    let (first, mut rest) = first_member(text).ok()??;
    let mut names = vec![first];
    while !rest.is_empty() {
        let (name, after) = next_member(text, rest).ok()?;
        names.push(name);
        rest = after;
    }
    Some(names)
}

fn unsupported(path: &str) -> JsonRefused {
    JsonRefused::NotOneMember(path.to_string())
}

/// A dotted member name at the start of `after` (the path's own text is `path`).
fn member_then<'a>(path: &str, after: &'a str) -> Result<(String, &'a str), JsonRefused> {
    let end = after.find(['.', '[']).unwrap_or(after.len());
    let name = &after[..end];
    if name.is_empty() || name == "*" {
        return Err(unsupported(path));
    }
    Ok((name.to_string(), &after[end..]))
}

/// A bracketed, quoted member name at the start of `rest` (`["name"]`, `['name']`).
fn bracketed<'a>(path: &str, rest: &'a str) -> Result<(String, &'a str), JsonRefused> {
    let inner = rest.strip_prefix('[').ok_or_else(|| unsupported(path))?;
    let quote = inner.chars().next().filter(|q| *q == '"' || *q == '\'').ok_or_else(|| unsupported(path))?;
    let mut name = String::new();
    let mut chars = inner[1..].char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => name.push(chars.next().ok_or_else(|| unsupported(path))?.1),
            c if c == quote => {
                let after = inner[1 + i + 1..].strip_prefix(']').ok_or_else(|| unsupported(path))?;
                return Ok((name, after));
            }
            c => name.push(c),
        }
    }
    Err(unsupported(path))
}

/// The path set a `JSON.SET key <path> <value>` (no `NX`/`XX`) below a member
/// makes when Redis does not hold that member: the member and the set inside
/// it. `None` for any other write, or a path that is not names only, which
/// then runs in RedisJSON as it is.
pub fn path_set(command: JsonCommand, args: &[&[u8]]) -> Option<(String, PathSet)> {
    let (JsonCommand::Set, [path, value]) = (command, args) else { return None };
    let value = std::str::from_utf8(value).ok().filter(|v| serde_json::from_str::<&RawValue>(v).is_ok())?;
    let mut names = member_names(path)?.into_iter();
    let member = names.next()?;
    let path: Vec<String> = names.collect();
    (!path.is_empty()).then(|| (member, PathSet { path, value: value.trim().to_string() }))
}

/// What a JSON write does to its row.
#[derive(Debug, Clone, PartialEq)]
pub enum JsonEffect {
    /// Sets members to these JSON values (`None`: JSON `null` or removed, so
    /// the column becomes NULL). For `JSON.SET ... NX|XX` only when it replies OK.
    Members(Vec<(String, Option<String>)>),
    /// `JSON.SET key $ {...}`: the members of the whole new document, as
    /// [`JsonEffect::Members`]; with `"on_set": "replace"` the mapped members
    /// it omits become NULL too ([`JsonEffect::omitted_as_null`]).
    Document(Vec<(String, Option<String>)>),
    /// Writes inside a member (a `json`/`jsonb` column): its whole new value,
    /// read back after the write, goes to its column. A `JSON.SET` there on a
    /// member Redis does not hold is a [`path_set`] instead.
    Below(String),
    /// Changes a top-level member in place (`JSON.TOGGLE key $.vip`): its new
    /// value, read back after the write, goes to its column.
    Reread(String),
    /// `JSON.MERGE`: members set or removed as with [`JsonEffect::Members`],
    /// and members an object was merged into, read back after the write.
    Merged {
        /// Members replaced (a scalar or array) or removed (`null`).
        members: Vec<(String, Option<String>)>,
        /// Members an object was merged into.
        reread: Vec<String>,
    },
    /// Adds `delta` to one member.
    Incr {
        /// The member.
        member: String,
        /// The increment.
        delta: Delta,
    },
    /// Deletes the row (`JSON.DEL key`, `JSON.DEL key $`).
    DeleteRow,
}

impl JsonEffect {
    /// A root set's members plus a NULL for each of `mapped` it does not name
    /// (`"on_set": "replace"`); any other effect unchanged.
    pub fn omitted_as_null<'a>(self, mapped: impl Iterator<Item = &'a String>) -> JsonEffect {
        let JsonEffect::Document(mut members) = self else { return self };
        let omitted: Vec<_> = mapped.filter(|f| !members.iter().any(|(n, _)| n == *f)).cloned().collect();
        members.extend(omitted.into_iter().map(|f| (f, None)));
        JsonEffect::Document(members)
    }
}

/// Reads the effect of a JSON write from its arguments after the key. `Err`
/// says why capture cannot give it a meaning for columns (the write is refused);
/// `Ok(None)` is a malformed call, which RedisJSON refuses with its own error.
pub fn parse(command: JsonCommand, args: &[&[u8]]) -> Result<Option<JsonEffect>, JsonRefused> {
    match (command, args) {
        (JsonCommand::Set | JsonCommand::MSet, [path, value, flags @ ..]) if flags.len() <= 1 => {
            let Some(value) = std::str::from_utf8(value).ok().filter(|v| serde_json::from_str::<&RawValue>(v).is_ok())
            else {
                return Ok(None);
            };
            Ok(Some(match place(path)? {
                Place::Root => match json_row::object_members(value) {
                    Some(members) => {
                        JsonEffect::Document(members.into_iter().map(|(n, v)| (n, not_null(&v))).collect())
                    }
                    None => return Err(JsonRefused::RootNotObject("JSON.SET")),
                },
                Place::Member(name) => JsonEffect::Members(vec![(name, not_null(value))]),
                Place::Below(name) => JsonEffect::Below(name),
            }))
        }
        (JsonCommand::Del | JsonCommand::Forget, []) => Ok(Some(JsonEffect::DeleteRow)),
        (JsonCommand::Del | JsonCommand::Forget, [path]) => Ok(Some(match place(path)? {
            Place::Root => JsonEffect::DeleteRow,
            Place::Member(name) => JsonEffect::Members(vec![(name, None)]),
            Place::Below(name) => JsonEffect::Below(name),
        })),
        (JsonCommand::Merge, [path, value]) => {
            let Some(value) = std::str::from_utf8(value).ok().filter(|v| serde_json::from_str::<&RawValue>(v).is_ok())
            else {
                return Ok(None);
            };
            Ok(Some(match place(path)? {
                Place::Root => match json_row::object_members(value) {
                    Some(patch) => merged(patch),
                    None => return Err(JsonRefused::RootNotObject("JSON.MERGE")),
                },
                Place::Member(name) => merged(vec![(name, value.trim().to_string())]),
                Place::Below(name) => JsonEffect::Below(name),
            }))
        }
        (JsonCommand::InPlace(name), [path, ..]) => match place(path)? {
            Place::Root => Err(JsonRefused::RootNotMember(name)),
            Place::Member(member) => Ok(Some(JsonEffect::Reread(member))),
            Place::Below(member) => Ok(Some(JsonEffect::Below(member))),
        },
        (JsonCommand::InPlace(name), []) => Err(JsonRefused::RootNotMember(name)),
        (JsonCommand::NumIncrBy, [path, number]) => {
            let Some(delta) = json_delta(number) else { return Ok(None) };
            match place(path)? {
                Place::Root => Err(JsonRefused::RootNotMember("JSON.NUMINCRBY")),
                Place::Member(member) => Ok(Some(JsonEffect::Incr { member, delta })),
                Place::Below(name) => Ok(Some(JsonEffect::Below(name))),
            }
        }
        _ => Ok(None),
    }
}

/// What a merge patch's top-level members do: an object is merged into the
/// member (read back after), `null` removes it, anything else replaces it.
fn merged(patch: Vec<(String, String)>) -> JsonEffect {
    let (objects, others): (Vec<_>, Vec<_>) = patch.into_iter().partition(|(_, v)| v.trim_start().starts_with('{'));
    JsonEffect::Merged {
        members: others.into_iter().map(|(n, v)| (n, not_null(&v))).collect(),
        reread: objects.into_iter().map(|(n, _)| n).collect(),
    }
}

/// A JSON value's exact text (trimmed), `None` for `null`.
fn not_null(value: &str) -> Option<String> {
    let value = value.trim();
    (value != "null").then(|| value.to_string())
}

/// A JSON number as an increment: an integer when it is written as one.
fn json_delta(number: &[u8]) -> Option<Delta> {
    let text = std::str::from_utf8(number).ok()?;
    match serde_json::from_str::<serde_json::Number>(text).ok()? {
        n if n.is_i64() => n.as_i64().map(|i| Delta::Int(i.into())),
        n => n.as_f64().filter(|f| f.is_finite()).map(Delta::Float),
    }
}

/// The text a member's JSON value writes to its column: a string's own text,
/// any other value's JSON text (`5`, `true`, `{"city":"Oslo"}`).
pub fn column_text(json: &str) -> Vec<u8> {
    match serde_json::from_str::<serde_json::Value>(json) {
        Ok(serde_json::Value::String(s)) => s.into_bytes(),
        _ => json.as_bytes().to_vec(),
    }
}

/// The text a write captures for member `name` holding `json`: a mapped
/// member's [`column_text`]; a member no column takes keeps its JSON text,
/// so that write-through puts it into the row's document as it was written.
pub fn captured_text(m: &Mapping, name: &str, json: &str) -> Vec<u8> {
    match m.column_for(name) {
        Some(_) => column_text(json),
        None => json.as_bytes().to_vec(),
    }
}

/// Whether a member's JSON value is an object or an array, which only a
/// `json`/`jsonb` column takes.
pub fn is_structured(json: &str) -> bool {
    json.starts_with(['{', '['])
}

/// The number in a `JSON.NUMINCRBY` reply: `[8]` for a `$` path, `8` for a
/// legacy one; `None` when the member held no number (`[null]`).
pub fn incremented(reply: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(reply).ok()?;
    let inner = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')).unwrap_or(text);
    serde_json::from_str::<serde_json::Number>(inner).ok().map(|n| n.to_string().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str) -> Place {
        Place::Member(name.into())
    }

    #[test]
    fn names_match_in_any_case_and_others_do_not() {
        assert_eq!(JsonCommand::from_name(b"json.set"), Some(JsonCommand::Set));
        assert_eq!(JsonCommand::from_name(b"JSON.NumIncrBy"), Some(JsonCommand::NumIncrBy));
        assert_eq!(JsonCommand::from_name(b"JSON.FORGET"), Some(JsonCommand::Forget));
        assert_eq!(JsonCommand::from_name(b"JSON.GET"), None);
        assert_eq!(JsonCommand::from_name(b"JSON.MERGE"), Some(JsonCommand::Merge));
        assert_eq!(JsonCommand::from_name(b"JSON.MSET"), Some(JsonCommand::MSet));
        assert_eq!(JsonCommand::MSet.key_positions(7), vec![1, 4]);
        assert_eq!(JsonCommand::Set.key_positions(4), vec![1]);
        assert_eq!(JsonCommand::from_name(b"json.toggle"), Some(JsonCommand::InPlace("JSON.TOGGLE")));
        assert_eq!(JsonCommand::from_name(b"JSON.MGET"), None);
        assert_eq!(JsonCommand::from_name(b"JSON.ARRLEN"), None);
        assert_eq!(JsonCommand::InPlace("JSON.ARRPOP").name(), "JSON.ARRPOP");
        assert!(!JsonCommand::InPlace("JSON.ARRPOP").deny_oom() && JsonCommand::InPlace("JSON.ARRAPPEND").deny_oom());
        assert_eq!(JsonCommand::from_name(b"HSET"), None);
        assert!(JsonCommand::Set.deny_oom() && !JsonCommand::Del.deny_oom());
        assert_eq!(JsonCommand::NumIncrBy.name(), "JSON.NUMINCRBY");
    }

    #[test]
    fn paths_name_the_row_a_member_or_a_place_inside_one() {
        for root in ["$", "."] {
            assert_eq!(place(root.as_bytes()), Ok(Place::Root));
        }
        for path in ["$.score", ".score", "score", "$[\"score\"]", "$['score']", "[\"score\"]"] {
            assert_eq!(place(path.as_bytes()), Ok(member("score")), "{path}");
        }
        assert_eq!(place(br#"$["first name"]"#), Ok(member("first name")));
        assert_eq!(place(br#"$["say \"hi\""]"#), Ok(member("say \"hi\"")));
        assert_eq!(place(b"$.address.city"), Ok(Place::Below("address".into())));
        assert_eq!(place(b"$.tags[0]"), Ok(Place::Below("tags".into())));
        assert_eq!(place(b".address.city"), Ok(Place::Below("address".into())));
        assert_eq!(place(br#"$["address"]["city"]"#), Ok(Place::Below("address".into())));
        for bad in ["$..name", "$.*", "$[0]", "$[*]", "$x", "$.", "$[\"open", "$['a'", ""] {
            assert!(place(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_set_below_a_member_is_a_path_set_when_its_path_is_names_only() {
        let names = |p: &str| member_names(p.as_bytes());
        let owned = |n: &[&str]| Some(n.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(names("$.profile.address.city"), owned(&["profile", "address", "city"]));
        assert_eq!(names(".profile.city"), owned(&["profile", "city"]));
        assert_eq!(names(r#"$["a b"]['c'].d"#), owned(&["a b", "c", "d"]));
        assert_eq!(names("$.score"), owned(&["score"]));
        for other in ["$", "$.tags[0]", "$.a.*", "$.a..b", "$.a[*].b", "$.a.", "$.a[?(@.x)]"] {
            assert_eq!(names(other), None, "{other}");
        }
        let set = |a: &[&str]| path_set(JsonCommand::Set, &args(a));
        let city = PathSet { path: vec!["city".into()], value: "\"Bergen\"".into() };
        assert_eq!(set(&["$.profile.city", " \"Bergen\" "]), Some(("profile".into(), city)));
        let deep = set(&["$.profile.a.b", "{}"]).expect("a deeper path");
        assert_eq!((deep.0.as_str(), deep.1.path.len()), ("profile", 2));
        assert_eq!(set(&["$.profile", "{}"]), None, "a whole member is no path set");
        assert_eq!(set(&["$.profile.city", "1", "NX"]), None, "NX and XX need what Redis holds");
        assert_eq!(set(&["$.profile.city", "nope"]), None);
        assert_eq!(set(&["$.tags[0]", "1"]), None);
        assert_eq!(path_set(JsonCommand::Merge, &args(&["$.profile.city", "1"])), None);
    }

    fn args<'a>(items: &'a [&'a str]) -> Vec<&'a [u8]> {
        items.iter().map(|s| s.as_bytes()).collect()
    }

    fn pairs(items: &[(&str, Option<&str>)]) -> Vec<(String, Option<String>)> {
        items.iter().map(|(n, v)| (n.to_string(), v.map(str::to_string))).collect()
    }

    fn members(items: &[(&str, Option<&str>)]) -> JsonEffect {
        JsonEffect::Members(pairs(items))
    }

    fn document(items: &[(&str, Option<&str>)]) -> JsonEffect {
        JsonEffect::Document(pairs(items))
    }

    #[test]
    fn a_replacing_root_set_nulls_the_mapped_members_it_omits() {
        let mapped = ["name".to_string(), "score".to_string(), "email".to_string()];
        let set = document(&[("name", Some("\"Ann\"")), ("note", Some("1"))]);
        assert_eq!(
            set.omitted_as_null(mapped.iter()),
            document(&[("name", Some("\"Ann\"")), ("note", Some("1")), ("score", None), ("email", None)])
        );
        let member = members(&[("name", None)]);
        assert_eq!(member.clone().omitted_as_null(mapped.iter()), member, "only a root set replaces");
    }

    #[test]
    fn json_writes_say_which_columns_they_touch() {
        let set = |a: &[&str]| parse(JsonCommand::Set, &args(a));
        assert_eq!(
            set(&["$", r#"{"name": "Ann", "score": 5, "email": null, "address": {"city": "Oslo"}}"#]),
            Ok(Some(document(&[
                ("name", Some("\"Ann\"")),
                ("score", Some("5")),
                ("email", None),
                ("address", Some(r#"{"city": "Oslo"}"#))
            ])))
        );
        assert_eq!(set(&["$.score", "5"]), Ok(Some(members(&[("score", Some("5"))]))));
        let big = "12345678901234567890.123456789";
        assert_eq!(set(&["$.score", big]), Ok(Some(members(&[("score", Some(big))]))), "digits kept exactly");
        assert_eq!(set(&["$.score", "5", "XX"]), Ok(Some(members(&[("score", Some("5"))]))));
        assert_eq!(set(&["$.email", "null"]), Ok(Some(members(&[("email", None)]))));
        assert_eq!(set(&["$.address.city", "\"Bergen\""]), Ok(Some(JsonEffect::Below("address".into()))));
        assert!(set(&["$", "[1, 2]"]).unwrap_err().to_string().contains("takes an object"));
        assert_eq!(set(&["$.score", "not json"]), Ok(None), "RedisJSON refuses it itself");
        assert_eq!(set(&["$.score"]), Ok(None));
        let del = |a: &[&str]| parse(JsonCommand::Del, &args(a));
        assert_eq!(del(&[]), Ok(Some(JsonEffect::DeleteRow)));
        assert_eq!(del(&["$"]), Ok(Some(JsonEffect::DeleteRow)));
        assert_eq!(del(&["$.email"]), Ok(Some(members(&[("email", None)]))));
        assert_eq!(parse(JsonCommand::Forget, &args(&[".email"])), Ok(Some(members(&[("email", None)]))));
        let incr = |a: &[&str]| parse(JsonCommand::NumIncrBy, &args(a));
        assert_eq!(
            incr(&["$.score", "3"]),
            Ok(Some(JsonEffect::Incr { member: "score".into(), delta: Delta::Int(3) }))
        );
        assert_eq!(
            incr(&["$.price", "-0.5"]),
            Ok(Some(JsonEffect::Incr { member: "price".into(), delta: Delta::Float(-0.5) }))
        );
        assert_eq!(incr(&["$.score", "x"]), Ok(None));
        assert!(incr(&["$", "1"]).is_err());
        assert!(incr(&["$..score", "1"]).is_err());
        let toggle = |a: &[&str]| parse(JsonCommand::InPlace("JSON.TOGGLE"), &args(a));
        assert_eq!(toggle(&["$.vip"]), Ok(Some(JsonEffect::Reread("vip".into()))));
        assert_eq!(toggle(&["$.profile.active"]), Ok(Some(JsonEffect::Below("profile".into()))));
        assert!(toggle(&["$"]).unwrap_err().to_string().contains("needs a member's path"));
        assert!(toggle(&[]).unwrap_err().to_string().contains("needs a member's path"));
        let mset = parse(JsonCommand::MSet, &args(&["$.score", "1"]));
        assert_eq!(mset, Ok(Some(members(&[("score", Some("1"))]))));
        let merge = |a: &[&str]| parse(JsonCommand::Merge, &args(a));
        assert_eq!(
            merge(&["$", r#"{"name": "Ann", "email": null, "profile": {"city": "Oslo"}, "tags": [1]}"#]),
            Ok(Some(JsonEffect::Merged {
                members: pairs(&[("name", Some("\"Ann\"")), ("email", None), ("tags", Some("[1]"))]),
                reread: vec!["profile".into()]
            }))
        );
        assert_eq!(
            merge(&["$.profile", r#"{"zip": null}"#]),
            Ok(Some(JsonEffect::Merged { members: vec![], reread: vec!["profile".into()] }))
        );
        assert_eq!(
            merge(&["$.score", "7"]),
            Ok(Some(JsonEffect::Merged { members: pairs(&[("score", Some("7"))]), reread: vec![] }))
        );
        assert_eq!(merge(&["$.profile.city", "\"Bergen\""]), Ok(Some(JsonEffect::Below("profile".into()))));
        assert!(merge(&["$", "3"]).unwrap_err().to_string().contains("takes an object"));
    }

    #[test]
    fn members_become_column_text() {
        assert_eq!(column_text("\"Ann\""), b"Ann");
        assert_eq!(column_text(r#""say \"hi\"""#), br#"say "hi""#);
        assert_eq!(column_text("5"), b"5");
        assert_eq!(column_text("true"), b"true");
        assert_eq!(column_text(r#"{"city":"Oslo"}"#), br#"{"city":"Oslo"}"#);
        assert!(is_structured("[1]") && is_structured("{}") && !is_structured("\"{\""));
        assert_eq!(incremented(b"[8]"), Some(b"8".to_vec()));
        assert_eq!(incremented(b"2.5"), Some(b"2.5".to_vec()));
        assert_eq!(incremented(b"[null]"), None);
    }
}
