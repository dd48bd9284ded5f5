//! One row, one key: the id part of a key must be the primary key's canonical text
//! (`model::key_text`), so that `users:12`, `users:012` and `users:+12` cannot all
//! write row 12. A key over several columns
//! (`brands_categories_{brand_id}_{category_id}`) spells them joined by literal
//! separators ([`KeyShape`]), and a value that could make its key read back as
//! another row's is refused, in both directions.

use std::fmt;

use crate::model::key_text::{Form, KeyType};
use crate::model::template::Part;

/// Why a key's id cannot name a row: the refusal a write to the key gets, and
/// why a row read from Postgres gets no key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdError {
    /// The id is not UTF-8.
    NotUtf8,
    /// Nothing follows the prefix.
    Empty,
    /// A NUL byte, which Postgres text cannot hold.
    Nul,
    /// A brace (the id as given, escaped).
    Brace(String),
    /// The id lacks a separator of the key.
    TooFewColumns {
        /// The id.
        id: String,
        /// How many columns the key spells.
        columns: usize,
    },
    /// A value of a key of several columns is empty.
    EmptyColumn(String),
    /// A value could make its key read back as another row's.
    Ambiguous {
        /// The value.
        value: String,
        /// Its column.
        column: String,
        /// The separator it meets.
        separator: String,
        /// How it meets it.
        how: Overlap,
    },
    /// A value is not its column's canonical text.
    NotCanonical {
        /// The value.
        value: String,
        /// Its column, for a key of several columns.
        column: Option<String>,
        /// The column's type name.
        type_name: String,
        /// The text it should have (boxed: its bounds are wide, and this
        /// error travels in every key check's `Result`).
        form: Box<Form>,
    },
}

/// How a key column's value meets a separator of the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlap {
    /// The value holds the separator.
    Holds,
    /// The value ends with the start of the separator after it.
    EndsInto,
    /// The value begins with the end of the separator before it.
    BeginsFrom,
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdError::NotUtf8 => f.write_str("the key's id is not valid UTF-8"),
            IdError::Empty => f.write_str("the key has no id after its prefix"),
            IdError::Nul => f.write_str("the key's id contains a NUL byte, which Postgres cannot store"),
            IdError::Brace(id) => write!(f, "the key's id \"{id}\" contains a brace"),
            IdError::TooFewColumns { id, columns } => {
                write!(f, "the key's id \"{}\" does not spell {columns} columns", id.escape_default())
            }
            IdError::EmptyColumn(column) => write!(f, "key column \"{column}\" is empty"),
            IdError::Ambiguous { value, column, separator, how } => {
                let shown = value.escape_default();
                match how {
                    Overlap::Holds => write!(
                        f,
                        "the value \"{shown}\" of key column \"{column}\" holds the separator \"{separator}\", so its key would be ambiguous"
                    ),
                    Overlap::EndsInto => write!(
                        f,
                        "the value \"{shown}\" of key column \"{column}\" ends with the start of the separator \"{separator}\" \
                         that follows it, so its key would be ambiguous"
                    ),
                    Overlap::BeginsFrom => write!(
                        f,
                        "the value \"{shown}\" of key column \"{column}\" begins with the end of the separator \"{separator}\" \
                         before it, so its key would be ambiguous"
                    ),
                }
            }
            IdError::NotCanonical { value, column, type_name, form } => {
                match column {
                    None => write!(f, "the key's id \"{}\"", value.escape_default())?,
                    Some(column) => write!(f, "the value \"{}\" of key column \"{column}\"", value.escape_default())?,
                }
                write!(f, " is not a canonical {type_name} ({form}); one row has exactly one key")
            }
        }
    }
}

impl std::error::Error for IdError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            IdError::NotCanonical { form, .. } => Some(form.as_ref()),
            _ => None,
        }
    }
}

/// Why a key template's columns do not make a key shape (the mapping's error
/// names the template before it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShapeError {
    /// A column named twice.
    ColumnTwice(String),
    /// Two columns with nothing between them.
    NoSeparator,
    /// A literal where a column must be.
    NoColumn,
    /// A literal after the last column.
    NoFinalColumn,
}

impl fmt::Display for ShapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShapeError::ColumnTwice(c) => write!(f, "names column \"{c}\" twice"),
            ShapeError::NoSeparator => f.write_str("needs a separator between two columns"),
            ShapeError::NoColumn => f.write_str("must hold a column after its prefix and after each separator"),
            ShapeError::NoFinalColumn => f.write_str("must end with a column"),
        }
    }
}

impl std::error::Error for ShapeError {}

/// Checks that a key suffix can be a primary-key value at all: non-empty UTF-8,
/// no NUL byte (Postgres text cannot hold one) and no braces (which would break the
/// `__{...}` and ack-stream key shapes).
pub fn check_id(id: &[u8]) -> Result<&str, IdError> {
    let text = std::str::from_utf8(id).map_err(|_| IdError::NotUtf8)?;
    if text.is_empty() {
        return Err(IdError::Empty);
    }
    if text.contains('\0') {
        return Err(IdError::Nul);
    }
    if text.contains(['{', '}']) {
        return Err(IdError::Brace(text.as_bytes().escape_ascii().to_string()));
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
    pub fn from_parts(parts: &[Part]) -> Result<KeyShape, ShapeError> {
        let mut shape = KeyShape { columns: Vec::new(), separators: Vec::new() };
        let mut expect_column = true;
        for part in parts {
            match (part, expect_column) {
                (Part::Name(c), true) if shape.columns.contains(c) => return Err(ShapeError::ColumnTwice(c.clone())),
                (Part::Name(c), true) => shape.columns.push(c.clone()),
                (Part::Literal(sep), false) => shape.separators.push(sep.clone()),
                (Part::Name(_), false) => return Err(ShapeError::NoSeparator),
                (Part::Literal(_), true) => return Err(ShapeError::NoColumn),
            }
            expect_column = !expect_column;
        }
        if expect_column {
            return Err(ShapeError::NoFinalColumn);
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
    fn refuse_value(&self, i: usize, value: &str) -> Result<(), IdError> {
        if self.separators.is_empty() {
            return Ok(());
        }
        let column = &self.columns[i];
        if value.is_empty() {
            return Err(IdError::EmptyColumn(column.clone()));
        }
        let ambiguous = |separator: &String, how| IdError::Ambiguous {
            value: value.to_string(),
            column: column.clone(),
            separator: separator.clone(),
            how,
        };
        if let Some(sep) = self.separators.iter().find(|sep| value.contains(sep.as_str())) {
            return Err(ambiguous(sep, Overlap::Holds));
        }
        // The separator after the value must first occur where it stands.
        if let Some(after) =
            self.separators.get(i).filter(|sep| format!("{value}{sep}").find(sep.as_str()) != Some(value.len()))
        {
            return Err(ambiguous(after, Overlap::EndsInto));
        }
        if let Some(before) = i
            .checked_sub(1)
            .map(|b| &self.separators[b])
            .filter(|sep| format!("{sep}{value}").rfind(sep.as_str()) != Some(0))
        {
            return Err(ambiguous(before, Overlap::BeginsFrom));
        }
        Ok(())
    }

    /// The key columns' values spelled in an id (`1_2` → `["1", "2"]`), cut at
    /// the first occurrence of each separator. An id that lacks a separator, or
    /// whose values could be read another way (see `refuse_value`), is refused.
    pub fn split<'a>(&self, id: &'a str) -> Result<Vec<&'a str>, IdError> {
        let mut values = Vec::with_capacity(self.columns.len());
        let mut rest = id;
        for sep in &self.separators {
            let at = rest
                .find(sep.as_str())
                .ok_or_else(|| IdError::TooFewColumns { id: id.to_string(), columns: self.columns.len() })?;
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
    pub fn join(&self, values: &[&str]) -> Result<String, IdError> {
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
    fn check_values(&self, values: &[&str], types: &[KeyType]) -> Result<(), IdError> {
        for ((column, value), key_type) in self.columns.iter().zip(values).zip(types) {
            key_type.check(value).map_err(|form| IdError::NotCanonical {
                value: value.to_string(),
                column: (!self.separators.is_empty()).then(|| column.clone()),
                type_name: key_type.name().to_string(),
                form: Box::new(form),
            })?;
        }
        Ok(())
    }

    /// Splits `id` and checks each value is its column's canonical text
    /// (`types` are the key columns' types, in order): what a write to a key
    /// must pass, after [`check_id`].
    pub fn check<'a>(&self, id: &'a str, types: &[KeyType]) -> Result<Vec<&'a str>, IdError> {
        let values = self.split(id)?;
        self.check_values(&values, types)?;
        Ok(values)
    }

    /// The id of a row read from Postgres (its key columns' `::text`), refused
    /// exactly when a write to that key would be: so Postgres never puts a key
    /// in Redis that a Redis write to it would refuse.
    pub fn spell(&self, values: &[&str], types: &[KeyType]) -> Result<String, IdError> {
        self.check_values(values, types)?;
        let id = self.join(values)?;
        check_id(id.as_bytes())?;
        Ok(id)
    }
}

#[cfg(test)]
mod tests;
