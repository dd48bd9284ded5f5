//! Rows as RedisJSON documents (`"type": "json"` mappings): each mapped column
//! is a top-level member typed after its column (numbers as numbers, booleans as
//! booleans, `json`/`jsonb` as the JSON they hold, anything else as a string of
//! Postgres's text; a NULL column has no member), and a row read from Postgres
//! is merged into the document Redis holds: mapped members set or removed,
//! members the mapping does not name kept, in their order. Pure: the Redis side
//! reads the document with `JSON.GET` and writes the result with `JSON.SET`.

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::fmt;

/// How a column's value becomes a JSON member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberKind {
    /// Integer and floating types: a JSON number (NaN and infinities, which
    /// JSON cannot spell, stay strings).
    Number,
    /// `boolean`: `true` or `false`.
    Boolean,
    /// `json` and `jsonb`: the value itself.
    Json,
    /// Anything else: a JSON string of the column's text.
    Text,
}

impl MemberKind {
    /// The kind for a column of `sql_type`, as `format_type` names it, with or
    /// without a modifier (`numeric(10,2)`).
    pub fn of(sql_type: &str) -> MemberKind {
        let base = sql_type.split('(').next().unwrap_or(sql_type);
        match base {
            "smallint" | "integer" | "bigint" | "numeric" | "real" | "double precision" => MemberKind::Number,
            "boolean" => MemberKind::Boolean,
            "json" | "jsonb" => MemberKind::Json,
            _ => MemberKind::Text,
        }
    }

    /// The column's `::text` (what the module's `SELECT`s read) for the text
    /// its type's output function printed (what logical replication sends):
    /// the two differ only for `boolean`, `t`/`f` against `true`/`false`.
    pub fn as_cast_text(self, output: &str) -> &str {
        match (self, output) {
            (MemberKind::Boolean, "t") => "true",
            (MemberKind::Boolean, "f") => "false",
            _ => output,
        }
    }

    /// The member's JSON text for a column value Postgres printed as `text`
    /// (its `::text`). A value that is not what its kind expects becomes a
    /// string rather than invalid JSON.
    pub fn member(self, text: &str) -> String {
        let raw = match self {
            MemberKind::Number => is_json_number(text),
            MemberKind::Boolean => text == "true" || text == "false",
            MemberKind::Json => serde_json::from_str::<&RawValue>(text).is_ok(),
            MemberKind::Text => false,
        };
        match raw {
            true if self == MemberKind::Json => compact(text),
            true => text.to_string(),
            false => quote(text),
        }
    }
}

/// `text` as a JSON string.
fn quote(text: &str) -> String {
    serde_json::Value::String(text.to_string()).to_string()
}

/// Valid JSON `text` without insignificant whitespace (`jsonb` prints `{"a": 1}`).
fn compact(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text).map_or_else(|_| text.to_string(), |v| v.to_string())
}

/// Whether `text` is a number as JSON writes one: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
fn is_json_number(text: &str) -> bool {
    let b = text.strip_prefix('-').unwrap_or(text).as_bytes();
    let digits = |from: usize| b[from..].iter().take_while(|c| c.is_ascii_digit()).count();
    let int = digits(0);
    if int == 0 || (int > 1 && b[0] == b'0') {
        return false;
    }
    let mut at = int;
    if b.get(at) == Some(&b'.') {
        let frac = digits(at + 1);
        if frac == 0 {
            return false;
        }
        at += 1 + frac;
    }
    if matches!(b.get(at), Some(b'e' | b'E')) {
        at += 1;
        if matches!(b.get(at), Some(b'+' | b'-')) {
            at += 1;
        }
        let exp = digits(at);
        if exp == 0 {
            return false;
        }
        at += exp;
    }
    at == b.len()
}

/// The member a committed write's value becomes in the row's document
/// (write-through): a column's text typed after its column (`kind`), as rows
/// read from Postgres are; a member no column takes (kept in Redis only, so
/// captured as its JSON text) as that JSON, or a string when it is none.
pub fn committed_member(kind: Option<MemberKind>, text: &str) -> String {
    match kind {
        Some(kind) => kind.member(text),
        None if serde_json::from_str::<&RawValue>(text).is_ok() => compact(text),
        None => quote(text),
    }
}

/// A JSON object's members in their order, each as its JSON text.
struct Members(Vec<(String, String)>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Object;
        impl<'de> Visitor<'de> for Object {
            type Value = Members;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut members = Vec::new();
                while let Some((name, value)) = map.next_entry::<String, Box<RawValue>>()? {
                    members.push((name, value.get().to_string()));
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(Object)
    }
}

/// A JSON object's members in their order, each value as its exact JSON text
/// (no number re-printed); `None` when `text` is no JSON object.
pub fn object_members(text: &str) -> Option<Vec<(String, String)>> {
    serde_json::from_str::<Members>(text).ok().map(|m| m.0)
}

/// A JSON object's text without its member `name` (the others as written, in
/// their order); `None` when `text` is no JSON object.
pub fn without_member(text: &str, name: &str) -> Option<String> {
    let members = object_members(text)?;
    Some(document(members.iter().filter(|(n, _)| n != name).map(|(n, v)| (n.as_str(), v.as_str()))))
}

/// Whether two JSON texts hold the same value (`1.50` and `1.5` do; texts
/// that are not JSON, such as a string member's column text, when equal).
pub fn same(a: &str, b: &str) -> bool {
    match (serde_json::from_str::<serde_json::Value>(a), serde_json::from_str::<serde_json::Value>(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// What Redis holds at a document's key is no JSON object, so no member can be
/// merged into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoObject;

impl std::fmt::Display for NoObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("it holds no JSON object")
    }
}

impl std::error::Error for NoObject {}

/// The document to write for a row whose mapped members are `fields` (member
/// name, its JSON text or `None` for NULL), given the document Redis holds
/// (`None`: no key). `Ok(None)` when the document already holds the row as
/// Postgres has it; `Err` when what Redis holds is no JSON object.
pub fn merge(held: Option<&str>, fields: &[(String, Option<String>)]) -> Result<Option<String>, NoObject> {
    let mut members = match held {
        Some(text) => object_members(text).ok_or(NoObject)?,
        None => Vec::new(),
    };
    let mut changed = held.is_none();
    for (name, value) in fields {
        let at = members.iter().position(|(n, _)| n == name);
        match (at, value) {
            (Some(i), Some(v)) if !same(&members[i].1, v) => members[i].1 = v.clone(),
            (Some(_), Some(_)) | (None, None) => continue,
            (None, Some(v)) => members.push((name.clone(), v.clone())),
            (Some(i), None) => {
                members.remove(i);
            }
        }
        changed = true;
    }
    Ok(changed.then(|| document(members.iter().map(|(n, v)| (n.as_str(), v.as_str())))))
}

/// The document of a row alone: its non-NULL members, in the order given.
pub fn row_document(fields: &[(String, Option<String>)]) -> String {
    document(fields.iter().filter_map(|(n, v)| v.as_deref().map(|v| (n.as_str(), v))))
}

fn document<'a>(members: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let members: Vec<String> = members.map(|(name, value)| format!("{}:{value}", quote(name))).collect();
    format!("{{{}}}", members.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(fields: &[(&str, Option<&str>)]) -> Vec<(String, Option<String>)> {
        fields.iter().map(|(n, v)| (n.to_string(), v.map(str::to_string))).collect()
    }

    #[test]
    fn columns_become_members_typed_after_their_column() {
        let kind = MemberKind::of;
        assert_eq!(kind("integer").member("42"), "42");
        assert_eq!(kind("bigint").member("-9223372036854775808"), "-9223372036854775808");
        assert_eq!(kind("numeric(10,2)").member("12.50"), "12.50");
        assert_eq!(kind("double precision").member("1e+20"), "1e+20");
        assert_eq!(kind("real").member("NaN"), "\"NaN\"", "JSON has no NaN");
        assert_eq!(kind("double precision").member("-Infinity"), "\"-Infinity\"");
        assert_eq!(kind("boolean").member("true"), "true");
        assert_eq!(kind("boolean").member("false"), "false");
        assert_eq!(kind("jsonb").member(r#"{"city": "Oslo", "zip": [1, 2]}"#), r#"{"city":"Oslo","zip":[1,2]}"#);
        assert_eq!(kind("json").member("\"a\""), "\"a\"");
        assert_eq!(kind("text").member("say \"hi\"\n"), r#""say \"hi\"\n""#);
        assert_eq!(kind("character varying(20)").member("42"), "\"42\"", "text stays text");
        assert_eq!(kind("timestamp with time zone").member("2024-01-01 10:00:00+00"), "\"2024-01-01 10:00:00+00\"");
        assert_eq!(kind("integer[]").member("{1,2}"), "\"{1,2}\"");
    }

    #[test]
    fn a_member_can_be_taken_out_of_an_object() {
        let tagged = r##"{"a": 1, "#": "=u1", "b": [1, 2]}"##;
        assert_eq!(without_member(tagged, "#").as_deref(), Some(r#"{"a":1,"b":[1, 2]}"#));
        assert_eq!(without_member(r##"{"#": "="}"##, "#").as_deref(), Some("{}"));
        assert_eq!(without_member("[1]", "#"), None);
    }

    #[test]
    fn committed_values_become_members_typed_after_their_column() {
        assert_eq!(committed_member(Some(MemberKind::Number), "5"), "5");
        assert_eq!(committed_member(Some(MemberKind::Text), "5"), "\"5\"");
        assert_eq!(committed_member(Some(MemberKind::Json), r#"{"a": 1}"#), r#"{"a":1}"#);
        assert_eq!(committed_member(None, "\"mine\""), "\"mine\"", "an unmapped member's own JSON");
        assert_eq!(committed_member(None, "[1, 2]"), "[1,2]");
        assert_eq!(committed_member(None, "plain"), "\"plain\"");
    }

    #[test]
    fn only_numbers_json_can_spell_are_numbers() {
        for good in ["0", "-0", "7", "10", "1.5", "-0.25", "1e5", "1E-7", "2.5e+10"] {
            assert!(is_json_number(good), "{good}");
        }
        for bad in ["", "-", "01", "1.", ".5", "1e", "1e+", "+1", "0x1F", "1_000", " 1", "Infinity", "NaN", "1.5.2"] {
            assert!(!is_json_number(bad), "{bad}");
        }
    }

    #[test]
    fn a_row_without_a_key_is_its_members_alone() {
        let fields = row(&[("name", Some("\"Ann\"")), ("email", None), ("score", Some("10"))]);
        assert_eq!(merge(None, &fields).unwrap().unwrap(), r#"{"name":"Ann","score":10}"#);
        assert_eq!(merge(None, &row(&[("email", None)])).unwrap().unwrap(), "{}", "the row exists");
        assert_eq!(row_document(&fields), r#"{"name":"Ann","score":10}"#);
    }

    #[test]
    fn a_merge_sets_and_removes_mapped_members_and_keeps_the_others_in_order() {
        let held = r#"{"note":{"pinned":true},"name":"Ann","email":"a@x","big":12345678901234567890123}"#;
        let fields = row(&[("name", Some("\"Bea\"")), ("email", None), ("score", Some("3"))]);
        assert_eq!(
            merge(Some(held), &fields).unwrap().unwrap(),
            r#"{"note":{"pinned":true},"name":"Bea","big":12345678901234567890123,"score":3}"#
        );
    }

    #[test]
    fn a_document_holding_the_row_is_left_alone() {
        let held = r#"{"name":"Ann","price":1.5,"tags":{"a":1,"b":2},"extra":true}"#;
        let fields = row(&[("name", Some("\"Ann\"")), ("price", Some("1.50")), ("tags", Some(r#"{"b":2,"a":1}"#))]);
        assert_eq!(merge(Some(held), &fields).unwrap(), None);
        assert_eq!(merge(Some(held), &row(&[("gone", None)])).unwrap(), None);
        assert!(merge(Some(held), &row(&[("price", Some("2"))])).unwrap().is_some());
    }

    #[test]
    fn what_is_no_json_object_is_not_merged_into() {
        for held in ["[1,2]", "\"text\"", "7", "{"] {
            assert!(merge(Some(held), &row(&[("a", Some("1"))])).is_err(), "{held}");
        }
    }
}
