//! A write below the top level of a JSON member that Redis does not hold
//! (`JSON.SET acct:1 $.profile.city '"Bergen"'` with no `profile` in Redis):
//! Redis cannot run it, but Postgres can set the path in the member's
//! `json`/`jsonb` column. This file is the meaning of such a path set, the
//! same in memory (coalescing it onto a known value) as in SQL
//! (`pg::sql::path_sets`): on the column's value (NULL is `{}`), each missing
//! intermediate member becomes `{}` and the last one is set; when the value or
//! an intermediate is not an object (a string, an array, `null`), nothing
//! changes, as RedisJSON sets nothing on a path that matches nothing. Pure,
//! unit-tested.

use serde_json::{Map, Value};

/// One path set inside a member: the member names below it and the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathSet {
    /// Member names from the member's value down to the one set (at least one).
    pub path: Vec<String>,
    /// The JSON text set there.
    pub value: String,
}

impl PathSet {
    /// Bytes of its names and value (what bounds a batch).
    pub fn size_bytes(&self) -> usize {
        self.path.iter().map(String::len).sum::<usize>() + self.value.len()
    }

    /// The path as JSONPath below the member (`$.city`, `$["a b"].x`), for people.
    pub fn shown(&self) -> String {
        let mut out = String::from("$");
        for name in &self.path {
            match name.chars().all(|c| c.is_alphanumeric() || c == '_') && !name.is_empty() {
                true => out.push_str(&format!(".{name}")),
                false => out.push_str(&format!("[{}]", Value::String(name.clone()))),
            }
        }
        out
    }
}

/// The member's value after `sets`, in order, on `base` (the member's JSON
/// text, `None` for NULL, which counts as `{}`); `None` when `base` or a value
/// is not JSON, so the caller keeps the sets for Postgres to apply.
pub fn apply(base: Option<&str>, sets: &[PathSet]) -> Option<String> {
    let mut doc = match base {
        Some(text) => serde_json::from_str::<Value>(text).ok()?,
        None => Value::Object(Map::new()),
    };
    for set in sets {
        let value = serde_json::from_str::<Value>(&set.value).ok()?;
        set_in(&mut doc, &set.path, value);
    }
    Some(doc.to_string())
}

/// Sets `path` in `doc` to `value`, making missing intermediates `{}`; a
/// value on the way that is not an object leaves `doc` as it was.
fn set_in(doc: &mut Value, path: &[String], value: Value) {
    let Some((last, above)) = path.split_last() else { return };
    // Checked first, so that a non-object further down leaves no `{}` created above it.
    let mut probe = &*doc;
    for name in above {
        match probe {
            Value::Object(members) => match members.get(name) {
                Some(next) => probe = next,
                None => break,
            },
            _ => return,
        }
    }
    if !probe.is_object() {
        return;
    }
    let mut at = doc;
    for name in above {
        let Value::Object(members) = at else { return };
        at = members.entry(name.clone()).or_insert_with(|| Value::Object(Map::new()));
    }
    if let Value::Object(members) = at {
        members.insert(last.clone(), value);
    }
}

/// The sets as JSON for Postgres, one bound parameter: `[[["a","b"],value], ...]`.
pub fn to_json(sets: &[PathSet]) -> String {
    let items: Vec<Value> = sets
        .iter()
        .map(|s| {
            let value = serde_json::from_str::<Value>(&s.value).unwrap_or_else(|_| Value::String(s.value.clone()));
            Value::Array(vec![Value::Array(s.path.iter().cloned().map(Value::String).collect()), value])
        })
        .collect();
    Value::Array(items).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(path: &[&str], value: &str) -> PathSet {
        PathSet { path: path.iter().map(|s| s.to_string()).collect(), value: value.into() }
    }

    fn applied(base: Option<&str>, sets: &[PathSet]) -> Option<Value> {
        apply(base, sets).map(|t| serde_json::from_str(&t).unwrap())
    }

    fn json(text: &str) -> Option<Value> {
        Some(serde_json::from_str(text).unwrap())
    }

    #[test]
    fn a_set_keeps_the_other_members_and_creates_what_is_missing() {
        let base = Some(r#"{"city":"Oslo","zip":"1"}"#);
        assert_eq!(applied(base, &[set(&["zip"], "\"2\"")]), json(r#"{"city":"Oslo","zip":"2"}"#));
        assert_eq!(applied(None, &[set(&["a", "b", "c"], "1")]), json(r#"{"a":{"b":{"c":1}}}"#));
        let both = [set(&["a", "x"], "1"), set(&["a", "y"], "[2]")];
        assert_eq!(applied(Some(r#"{"a":{"z":0}}"#), &both), json(r#"{"a":{"z":0,"x":1,"y":[2]}}"#));
        let order = [set(&["a"], "1"), set(&["a"], "2")];
        assert_eq!(applied(None, &order), json(r#"{"a":2}"#), "in order");
    }

    #[test]
    fn a_value_on_the_way_that_is_no_object_changes_nothing() {
        for base in [r#"{"a":"text"}"#, r#"{"a":[1]}"#, r#"{"a":null}"#, r#"{"a":{"b":5}}"#] {
            assert_eq!(applied(Some(base), &[set(&["a", "b", "c"], "1")]), json(base), "{base}");
        }
        assert_eq!(applied(Some("[1]"), &[set(&["a"], "1")]), json("[1]"));
        assert_eq!(applied(Some("not json"), &[set(&["a"], "1")]), None);
        assert_eq!(applied(None, &[set(&["a"], "nope")]), None);
    }

    #[test]
    fn sets_travel_as_one_json_array_and_show_as_paths() {
        let sets = [set(&["a b", "c"], r#"{"x":"y"}"#)];
        assert_eq!(to_json(&sets), r#"[[["a b","c"],{"x":"y"}]]"#);
        assert_eq!(sets[0].shown(), r#"$["a b"].c"#);
        assert_eq!(set(&["city"], "1").shown(), "$.city");
    }
}
