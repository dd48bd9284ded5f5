//! One row, one key: the id part of a key must be the primary key's canonical text
//! (`model::key_text`), so that `users:12`, `users:012` and `users:+12` cannot all
//! write row 12. A key over several columns
//! (`brands_categories_{brand_id}_{category_id}`) spells them joined by literal
//! separators ([`KeyShape`]), and a value that could make its key read back as
//! another row's is refused, in both directions.

use crate::model::key_text::KeyType;
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

    /// Why the value of key column `i` could make its key read back as another
    /// row's, if it could. The id is read back by cutting it at the first
    /// occurrence of each separator in turn, so a value may hold no separator of
    /// the key, and must not run into the separator beside it: before `::`, a
    /// value ending in `:` (`a:` `::` `b` spells `a:::b`, which reads as `a`
    /// `::` `:b`), and after it, by symmetry, one beginning with `:`. With
    /// these refused, no two accepted rows spell one id, whatever the
    /// separators' lengths (see the property test in `tests.rs`). A key of several
    /// columns also refuses an empty value.
    fn refuse_value(&self, i: usize, value: &str) -> Result<(), String> {
        if self.separators.is_empty() {
            return Ok(());
        }
        let column = &self.columns[i];
        let shown = value.escape_default();
        if value.is_empty() {
            return Err(format!("key column \"{column}\" is empty"));
        }
        if let Some(sep) = self.separators.iter().find(|sep| value.contains(sep.as_str())) {
            return Err(format!(
                "the value \"{shown}\" of key column \"{column}\" holds the separator \"{sep}\", so its key would be ambiguous"
            ));
        }
        // The separator after the value must first occur where it stands.
        if let Some(after) =
            self.separators.get(i).filter(|sep| format!("{value}{sep}").find(sep.as_str()) != Some(value.len()))
        {
            return Err(format!(
                "the value \"{shown}\" of key column \"{column}\" ends with the start of the separator \"{after}\" \
                 that follows it, so its key would be ambiguous"
            ));
        }
        if let Some(before) = i
            .checked_sub(1)
            .map(|b| &self.separators[b])
            .filter(|sep| format!("{sep}{value}").rfind(sep.as_str()) != Some(0))
        {
            return Err(format!(
                "the value \"{shown}\" of key column \"{column}\" begins with the end of the separator \"{before}\" \
                 before it, so its key would be ambiguous"
            ));
        }
        Ok(())
    }

    /// The key columns' values spelled in an id (`1_2` → `["1", "2"]`), cut at
    /// the first occurrence of each separator. An id that lacks a separator, or
    /// whose values could be read another way (see `refuse_value`), is refused.
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
        for (i, value) in values.iter().enumerate() {
            self.refuse_value(i, value)?;
        }
        Ok(values)
    }

    /// The id spelling these key column values; refused when one could be
    /// read back another way.
    pub fn join(&self, values: &[&str]) -> Result<String, String> {
        let mut id = String::new();
        for (i, value) in values.iter().enumerate().take(self.columns.len()) {
            self.refuse_value(i, value)?;
            if i > 0 {
                id.push_str(&self.separators[i - 1]);
            }
            id.push_str(value);
        }
        Ok(id)
    }

    /// Checks that each value is its column's canonical text (`types` are the
    /// key columns' types, in order).
    fn check_values(&self, values: &[&str], types: &[KeyType]) -> Result<(), String> {
        for ((column, value), key_type) in self.columns.iter().zip(values).zip(types) {
            key_type.check(value).map_err(|form| {
                let what = match self.separators.is_empty() {
                    true => format!("the key's id \"{}\"", value.escape_default()),
                    false => format!("the value \"{}\" of key column \"{column}\"", value.escape_default()),
                };
                format!("{what} is not a canonical {} ({form}); one row has exactly one key", key_type.name())
            })?;
        }
        Ok(())
    }

    /// Splits `id` and checks each value is its column's canonical text
    /// (`types` are the key columns' types, in order): what a write to a key
    /// must pass, after [`check_id`].
    pub fn check<'a>(&self, id: &'a str, types: &[KeyType]) -> Result<Vec<&'a str>, String> {
        let values = self.split(id)?;
        self.check_values(&values, types)?;
        Ok(values)
    }

    /// The id of a row read from Postgres (its key columns' `::text`), refused
    /// exactly when a write to that key would be: so Postgres never puts a key
    /// in Redis that a Redis write to it would refuse.
    pub fn spell(&self, values: &[&str], types: &[KeyType]) -> Result<String, String> {
        self.check_values(values, types)?;
        let id = self.join(values)?;
        check_id(id.as_bytes())?;
        Ok(id)
    }
}

#[cfg(test)]
mod tests;
