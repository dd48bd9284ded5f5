//! One row, one key: the id part of a key must be the primary key's canonical text,
//! so that `users:12`, `users:012` and `users:+12` cannot all write row 12. A key
//! over several columns (`brands_categories_{brand_id}_{category_id}`) spells
//! them joined by literal separators ([`KeyShape`]), and a value holding a
//! separator is refused, since its key could be read back two ways.

use crate::model::template::Part;

/// Checks that a key suffix can be a primary-key value at all: non-empty UTF-8,
/// no NUL byte (Postgres text cannot hold one) and no braces (which would break the
/// `__{...}` and ack-stream key shapes).
pub fn check_id(id: &[u8]) -> Result<&str, String> {
    let text = std::str::from_utf8(id).map_err(|_| "the key's id is not valid UTF-8".to_string())?;
    if text.is_empty() {
        return Err("the key has no id after its prefix".into());
    }
    if text.contains('\0') {
        return Err("the key's id contains a NUL byte, which Postgres cannot store".into());
    }
    if text.contains(['{', '}']) {
        return Err(format!("the key's id \"{}\" contains a brace", text.as_bytes().escape_ascii()));
    }
    Ok(text)
}

/// Checks that `id` is written exactly as Postgres prints a value of the key
/// column's type (`sql_type` as `format_type` names it), so no two keys alias one
/// row. Integers: optional `-`, no `+`, no leading zeros, no spaces, in range.
/// UUIDs: lowercase, hyphenated. Text types: any text. Other types: no leading or
/// trailing whitespace (Postgres then decides).
pub fn check_canonical(id: &str, sql_type: &str) -> Result<(), String> {
    let range = match sql_type {
        "smallint" => Some((i16::MIN as i128, i16::MAX as i128)),
        "integer" => Some((i32::MIN as i128, i32::MAX as i128)),
        "bigint" => Some((i64::MIN as i128, i64::MAX as i128)),
        _ => None,
    };
    let refuse = |form: &str| {
        Err(format!(
            "the key's id \"{}\" is not a canonical {sql_type} ({form}); one row has exactly one key",
            id.as_bytes().escape_ascii()
        ))
    };
    if let Some((min, max)) = range {
        let digits = id.strip_prefix('-').unwrap_or(id);
        let well_formed = !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
            && (digits == "0" || !digits.starts_with('0'))
            && id != "-0";
        return match id.parse::<i128>() {
            Ok(n) if well_formed && (min..=max).contains(&n) => Ok(()),
            Ok(_) if well_formed => refuse("out of range"),
            _ => refuse("digits only, an optional -, no leading zeros"),
        };
    }
    if sql_type == "uuid" {
        let lower_hex = |s: &str| s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        let groups: Vec<&str> = id.split('-').collect();
        let lengths: Vec<usize> = groups.iter().map(|g| g.len()).collect();
        return if lengths == [8, 4, 4, 4, 12] && groups.iter().all(|g| lower_hex(g)) {
            Ok(())
        } else {
            refuse("lowercase xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx")
        };
    }
    let texty = matches!(sql_type, "text" | "name" | "citext") || sql_type.starts_with("character");
    if !texty && id.trim() != id {
        return refuse("no surrounding whitespace");
    }
    Ok(())
}

/// How the id part of a mapping's keys spells the row's key columns: one
/// column, or several joined by literal separators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyShape {
    columns: Vec<String>,
    /// `separators[i]` stands between `columns[i]` and `columns[i + 1]`.
    separators: Vec<String>,
}

impl KeyShape {
    /// A key of one column (`key_prefix` + `primary_key`).
    pub fn single(column: &str) -> KeyShape {
        KeyShape { columns: vec![column.to_string()], separators: Vec::new() }
    }

    /// The shape of a key template's parts after its leading literal: columns
    /// separated by non-empty literals, each column once, ending with a column.
    pub fn from_parts(parts: &[Part]) -> Result<KeyShape, String> {
        let mut shape = KeyShape { columns: Vec::new(), separators: Vec::new() };
        let mut expect_column = true;
        for part in parts {
            match (part, expect_column) {
                (Part::Name(c), true) if shape.columns.contains(c) => {
                    return Err(format!("names column \"{c}\" twice"))
                }
                (Part::Name(c), true) => shape.columns.push(c.clone()),
                (Part::Literal(sep), false) => shape.separators.push(sep.clone()),
                (Part::Name(_), false) => return Err("needs a separator between two columns".into()),
                (Part::Literal(_), true) => {
                    return Err("must hold a column after its prefix and after each separator".into())
                }
            }
            expect_column = !expect_column;
        }
        if expect_column {
            return Err("must end with a column".into());
        }
        Ok(shape)
    }

    /// The key columns, in the key's order.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// The separators between the columns.
    pub fn separators(&self) -> &[String] {
        &self.separators
    }

    /// Whether a value would make a key ambiguous (it holds a separator), or empty.
    fn refuse_value(&self, column: &str, value: &str) -> Result<(), String> {
        if self.columns.len() > 1 && value.is_empty() {
            return Err(format!("key column \"{column}\" is empty"));
        }
        match self.separators.iter().find(|sep| value.contains(sep.as_str())) {
            Some(sep) => Err(format!(
                "the value \"{}\" of key column \"{column}\" holds the separator \"{sep}\", so its key would be ambiguous",
                value.escape_default()
            )),
            None => Ok(()),
        }
    }

    /// The key columns' values spelled in an id (`1_2` → `["1", "2"]`). An id
    /// that lacks a separator, or whose values hold one, is refused.
    pub fn split<'a>(&self, id: &'a str) -> Result<Vec<&'a str>, String> {
        let mut values = Vec::with_capacity(self.columns.len());
        let mut rest = id;
        for sep in &self.separators {
            let at = rest.find(sep.as_str()).ok_or_else(|| {
                format!("the key's id \"{}\" does not spell {} columns", id.escape_default(), self.columns.len())
            })?;
            values.push(&rest[..at]);
            rest = &rest[at + sep.len()..];
        }
        values.push(rest);
        for (column, value) in self.columns.iter().zip(&values) {
            self.refuse_value(column, value)?;
        }
        Ok(values)
    }

    /// The id spelling these key column values; refused when one holds a separator.
    pub fn join(&self, values: &[&str]) -> Result<String, String> {
        let mut id = String::new();
        for (i, (column, value)) in self.columns.iter().zip(values).enumerate() {
            self.refuse_value(column, value)?;
            if i > 0 {
                id.push_str(&self.separators[i - 1]);
            }
            id.push_str(value);
        }
        Ok(id)
    }

    /// Splits `id` and checks each value is its column's canonical text
    /// (`types` are the key columns' SQL types, in order).
    pub fn check<'a>(&self, id: &'a str, types: &[&str]) -> Result<Vec<&'a str>, String> {
        let values = self.split(id)?;
        for (value, sql_type) in values.iter().zip(types) {
            check_canonical(value, sql_type)?;
        }
        Ok(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_ids_are_reported() {
        assert!(check_id(b"").is_err());
        assert!(check_id(b"\xff").is_err());
        assert!(check_id(b"a}b").is_err());
        assert!(check_id(b"1\x002").is_err());
        assert_eq!(check_id(b"42"), Ok("42"));
    }

    #[test]
    fn integer_ids_have_one_spelling() {
        for ok in ["0", "12", "-5", "2147483647"] {
            assert!(check_canonical(ok, "integer").is_ok(), "{ok}");
        }
        for bad in ["00012", "+12", " 12", "12 ", "12\n", "-0", "", "1e3", "2147483648", "0x1"] {
            assert!(check_canonical(bad, "integer").is_err(), "{bad:?}");
        }
        assert!(check_canonical("2147483648", "bigint").is_ok());
        assert!(check_canonical("40000", "smallint").is_err());
    }

    #[test]
    fn uuid_and_text_ids() {
        assert!(check_canonical("6ce0ab12-0000-4000-8000-00000000000a", "uuid").is_ok());
        assert!(check_canonical("6CE0AB12-0000-4000-8000-00000000000A", "uuid").is_err());
        assert!(check_canonical("6ce0ab1200004000800000000000000a", "uuid").is_err());
        assert!(check_canonical(" padded ", "text").is_ok(), "text keys are any text");
        assert!(check_canonical("a b", "character varying").is_ok());
        assert!(check_canonical(" 2024-01-01", "date").is_err());
    }

    fn brands_categories() -> KeyShape {
        let t = crate::model::template::Template::parse("{brand_id}_{category_id}").unwrap();
        KeyShape::from_parts(t.parts()).unwrap()
    }

    #[test]
    fn composite_ids_split_and_join() {
        let shape = brands_categories();
        assert_eq!(shape.split("7_12"), Ok(vec!["7", "12"]));
        assert_eq!(shape.join(&["7", "12"]).unwrap(), "7_12");
        assert_eq!(shape.check("7_12", &["integer", "integer"]), Ok(vec!["7", "12"]));
        assert!(shape.check("7_012", &["integer", "integer"]).is_err());
        let single = KeyShape::single("id");
        assert_eq!(single.split("a_b"), Ok(vec!["a_b"]), "one column has no separator to hold");
        assert_eq!(single.join(&["a_b"]).unwrap(), "a_b");
    }

    #[test]
    fn ambiguous_values_are_refused_both_ways() {
        let shape = brands_categories();
        let err = shape.join(&["ben_jerry", "icecream"]).unwrap_err();
        assert!(err.contains("ambiguous") && err.contains("brand_id"), "{err}");
        assert!(shape.split("ben_jerry_icecream").unwrap_err().contains("ambiguous"));
        assert!(shape.split("7").unwrap_err().contains("does not spell 2 columns"));
        assert!(shape.split("_7").is_err(), "an empty value");
    }

    #[test]
    fn key_templates_need_separators_and_a_final_column() {
        let shape = |t: &str| {
            let t = crate::model::template::Template::parse(t).unwrap();
            KeyShape::from_parts(t.parts())
        };
        assert!(shape("{a}{b}").unwrap_err().contains("separator"));
        assert!(shape("{a}_{b}:x").unwrap_err().contains("end with a column"));
        assert!(shape("{a}_{a}").unwrap_err().contains("twice"));
        assert_eq!(shape("{a}:{b}:{c}").unwrap().columns(), ["a", "b", "c"]);
    }
}
