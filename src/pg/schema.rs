//! Reads a mapped table's columns from the Postgres catalog and checks the mapping
//! against them, so a typo in the mapping file is a clear error, not a failed batch.

use super::error::{Error, ErrorKind};
use super::sql::{quote_table, TypedColumn};
use crate::model::mapping::Mapping;
use crate::model::value_check::ColumnType;
use postgres::types::Type;
use postgres::Client;
use std::collections::HashMap;

/// What the workers need to know about a mapped table.
#[derive(Debug, Clone)]
pub struct TableSchema {
    /// The key columns and their types, in the key's order.
    pub keys: Vec<TypedColumn>,
    /// Every column by name.
    pub columns: HashMap<String, ColumnInfo>,
}

/// One column of a mapped table.
#[derive(Debug, Clone)]
pub struct ColumnInfo {
    /// Name and type.
    pub typed: TypedColumn,
    /// Whether the column has a DEFAULT (left alone when its field is absent).
    pub has_default: bool,
    /// Whether the column is NOT NULL (removing its field is refused at write time).
    pub not_null: bool,
    /// For `varchar(n)` and `char(n)`: `n`.
    pub max_chars: Option<usize>,
    /// For an enum column: its labels, in order.
    pub labels: Option<Vec<String>>,
}

impl ColumnInfo {
    /// A column of this name and type, without constraints.
    #[cfg(test)]
    pub fn plain(name: &str, sql_type: &str, has_default: bool) -> ColumnInfo {
        let typed = TypedColumn { name: name.to_string(), sql_type: sql_type.to_string() };
        ColumnInfo { typed, has_default, not_null: false, max_chars: None, labels: None }
    }

    /// What a value written to the column must be (see `model::value_check`).
    pub fn value_type(&self) -> ColumnType<'_> {
        ColumnType { sql_type: &self.typed.sql_type, max_chars: self.max_chars, labels: self.labels.as_deref() }
    }
}

// The length of varchar(n)/char(n) is in atttypmod (n + 4); an enum's labels in pg_enum.
const COLUMNS_SQL: &str = "SELECT a.attname::text, format_type(a.atttypid, NULL), a.atthasdef, a.attnotnull, \
     CASE WHEN a.atttypid IN ('varchar'::regtype, 'bpchar'::regtype) AND a.atttypmod > 4 THEN a.atttypmod - 4 END, \
     (SELECT array_agg(e.enumlabel::text ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = a.atttypid) \
     FROM pg_attribute a WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped \
     ORDER BY a.attnum";

/// Loads and checks the schema of one mapping's table (for a document mapping,
/// its watched tables and queries).
pub fn load(client: &mut Client, mapping: &Mapping) -> Result<TableSchema, Error> {
    if let Some(document) = &mapping.document {
        return super::documents::check(client, mapping, document);
    }
    let rows = client.query_typed(COLUMNS_SQL, &[(&quote_table(&mapping.table), Type::TEXT)])?;
    if rows.is_empty() {
        return Err(Error::new(
            ErrorKind::Schema,
            format!("mapping \"{}\": table \"{}\" does not exist", mapping.name, mapping.table),
        ));
    }
    let mut columns = HashMap::new();
    for row in rows {
        let name: String = row.try_get(0)?;
        let sql_type: String = row.try_get(1)?;
        let has_default: bool = row.try_get(2)?;
        let not_null: bool = row.try_get(3)?;
        let max_chars: Option<i32> = row.try_get(4)?;
        let labels: Option<Vec<String>> = row.try_get(5)?;
        let max_chars = max_chars.and_then(|n| usize::try_from(n).ok());
        let typed = TypedColumn { name: name.clone(), sql_type };
        columns.insert(name, ColumnInfo { typed, has_default, not_null, max_chars, labels });
    }
    check(mapping, columns)
}

fn check(mapping: &Mapping, columns: HashMap<String, ColumnInfo>) -> Result<TableSchema, Error> {
    let missing = |column: &str| {
        Error::new(
            ErrorKind::Schema,
            format!(
                "mapping \"{}\": column \"{}\" does not exist in table \"{}\"",
                mapping.name, column, mapping.table
            ),
        )
    };
    let keys = mapping
        .key
        .columns()
        .iter()
        .map(|k| columns.get(k).map(|c| c.typed.clone()).ok_or_else(|| missing(k)))
        .collect::<Result<_, _>>()?;
    if let Some(fields) = &mapping.fields {
        if let Some(column) = fields.values().find(|c| !columns.contains_key(*c)) {
            return Err(missing(column));
        }
    }
    Ok(TableSchema { keys, columns })
}

impl TableSchema {
    /// The key columns' SQL types, in the key's order.
    pub fn key_types(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.sql_type.as_str()).collect()
    }

    /// The column a mapped field writes to, if it exists.
    pub fn column(&self, name: &str) -> Option<&TypedColumn> {
        self.columns.get(name).map(|c| &c.typed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::mapping::Mappings;

    #[test]
    fn a_mapped_column_missing_from_the_table_is_named() {
        let m = Mappings::parse(
            r#"{"mappings": [{"name": "users", "table": "users", "key_prefix": "users:",
            "primary_key": "id", "mode": "write-through", "fields": {"score": "scor"}}]}"#,
        )
        .unwrap();
        let cols: HashMap<_, _> =
            ["id", "score"].iter().map(|n| (n.to_string(), ColumnInfo::plain(n, "integer", false))).collect();
        let err = check(&m.all()[0], cols).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Schema);
        assert!(err.message.contains("\"scor\""), "{}", err.message);
    }
}
