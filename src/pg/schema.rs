//! Reads a mapped table's columns from the Postgres catalog and checks the mapping
//! against them, so a typo in the mapping file is a clear error, not a failed batch.

use super::error::{Error, ErrorKind};
use super::sql::{quote_table, TypedColumn};
use crate::model::json_row::MemberKind;
use crate::model::key_text::KeyType;
use crate::model::mapping::Mapping;
use crate::model::value_check::ColumnType;
use postgres::types::Type;
use postgres::Client;
use std::collections::HashMap;
use std::time::Instant;

/// What the workers need to know about a mapped table.
#[derive(Debug, Clone)]
pub struct TableSchema {
    /// The key columns and their types, in the key's order.
    pub keys: Vec<TypedColumn>,
    /// What spells each key column's values in a key, in the key's order.
    pub key_types: Vec<KeyType>,
    /// When the catalog was read (an enum key's labels may have grown since).
    pub read_at: Instant,
    /// Every column by name.
    pub columns: HashMap<String, ColumnInfo>,
}

/// One column of a mapped table.
#[derive(Debug, Clone)]
pub struct ColumnInfo {
    /// Name and type.
    pub typed: TypedColumn,
    /// The type with its modifier (`numeric(10,2)`), a domain's base type, and
    /// an enum's labels: what a key column's [`KeyType`] is made from.
    pub key_type: (String, Option<Vec<String>>),
    /// Whether the column is NOT NULL (removing its field is refused at write time).
    pub not_null: bool,
}

impl ColumnInfo {
    /// A column of this name and type, without modifier or constraints.
    #[cfg(test)]
    pub fn plain(name: &str, sql_type: &str) -> ColumnInfo {
        let typed = TypedColumn { name: name.to_string(), sql_type: sql_type.to_string() };
        ColumnInfo { typed, key_type: (sql_type.to_string(), None), not_null: false }
    }

    /// What a value written to the column must be (see `model::value_check`):
    /// its type, the `n` of `varchar(n)`/`char(n)`, an enum's labels.
    pub fn value_type(&self) -> ColumnType<'_> {
        let (with_modifier, labels) = &self.key_type;
        let max_chars = ["character varying(", "character("]
            .iter()
            .find_map(|p| with_modifier.strip_prefix(p)?.strip_suffix(')')?.parse().ok());
        ColumnType { sql_type: &self.typed.sql_type, max_chars, labels: labels.as_deref() }
    }
}

/// Each column's name and type, and for its key type:
/// the type with its modifier (for a domain, its base type's) and, for an
/// enum, its labels in order; then whether it is NOT NULL.
const COLUMNS_SQL: &str = "SELECT a.attname::text, format_type(a.atttypid, NULL), \
     format_type(b.oid, CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END), \
     CASE WHEN b.typtype = 'e' THEN ARRAY(SELECT e.enumlabel::text FROM pg_enum e \
         WHERE e.enumtypid = b.oid ORDER BY e.enumsortorder) END, \
     a.attnotnull \
     FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
     JOIN pg_type b ON b.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END \
     WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped \
     ORDER BY a.attnum";

/// Loads and checks the schema of one table mapping's table (a document
/// mapping's is checked by `pg::documents::check`).
pub fn load(client: &mut Client, mapping: &Mapping) -> Result<TableSchema, Error> {
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
        let key_type = (row.try_get(2)?, row.try_get(3)?);
        let not_null: bool = row.try_get(4)?;
        let typed = TypedColumn { name: name.clone(), sql_type };
        columns.insert(name, ColumnInfo { typed, key_type, not_null });
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
    let keys: Vec<&ColumnInfo> =
        mapping.key.columns().iter().map(|k| columns.get(k).ok_or_else(|| missing(k))).collect::<Result<_, _>>()?;
    let key_types = keys
        .iter()
        .map(|c| {
            let (sql_type, labels) = c.key_type.clone();
            KeyType::from_catalog(&sql_type, labels).map_err(|why| {
                let message = format!("mapping \"{}\": key column \"{}\": {why}", mapping.name, c.typed.name);
                Error::new(ErrorKind::Schema, message)
            })
        })
        .collect::<Result<_, _>>()?;
    let keys = keys.iter().map(|c| c.typed.clone()).collect();
    if let Some(fields) = &mapping.fields {
        if let Some(column) = fields.values().find(|c| !columns.contains_key(*c)) {
            return Err(missing(column));
        }
    }
    Ok(TableSchema { keys, key_types, columns, read_at: Instant::now() })
}

impl TableSchema {
    /// The column a mapped field writes to, if it exists.
    pub fn column(&self, name: &str) -> Option<&TypedColumn> {
        self.columns.get(name).map(|c| &c.typed)
    }

    /// How column `name`'s value reads as a JSON member (text when unknown).
    pub fn member_kind(&self, name: &str) -> MemberKind {
        self.columns.get(name).map_or(MemberKind::Text, |c| MemberKind::of(&c.key_type.0))
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
            ["id", "score"].iter().map(|n| (n.to_string(), ColumnInfo::plain(n, "integer"))).collect();
        let err = check(&m.all()[0], cols).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Schema);
        assert!(err.message.contains("\"scor\""), "{}", err.message);
    }

    #[test]
    fn a_value_s_type_comes_with_its_length_and_labels() {
        let column = |sql_type: &str, with_modifier: &str, labels: Option<Vec<String>>| ColumnInfo {
            key_type: (with_modifier.to_string(), labels),
            ..ColumnInfo::plain("c", sql_type)
        };
        let varchar = column("character varying", "character varying(8)", None);
        assert_eq!(varchar.value_type().max_chars, Some(8));
        assert_eq!(column("character", "character(3)", None).value_type().max_chars, Some(3));
        assert_eq!(column("character varying", "character varying", None).value_type().max_chars, None);
        assert_eq!(column("numeric", "numeric(10,2)", None).value_type().max_chars, None);
        let mood = column("mood", "mood", Some(vec!["sad".into(), "ok".into()]));
        assert_eq!(mood.value_type().labels.map(<[String]>::len), Some(2));
    }

    #[test]
    fn key_columns_get_their_key_type_and_a_type_without_one_spelling_is_refused() {
        let m = Mappings::parse(
            r#"{"mappings": [{"name": "rd", "table": "rd", "key": "rd:{sensor}@{ts}", "mode": "write-behind"}]}"#,
        )
        .unwrap();
        let columns = |ts_type: &str| -> HashMap<String, ColumnInfo> {
            [("sensor", "integer", "integer"), ("ts", "timestamp without time zone", ts_type)]
                .iter()
                .map(|(n, t, key_type)| {
                    let column = ColumnInfo { key_type: (key_type.to_string(), None), ..ColumnInfo::plain(n, t) };
                    (n.to_string(), column)
                })
                .collect()
        };
        let schema = check(&m.all()[0], columns("timestamp(3) without time zone")).unwrap();
        assert!(schema.key_types[1].check("2024-01-01 08:00:00.123").is_ok());
        assert!(schema.key_types[1].check("2024-01-01 08:00:00.1234").is_err(), "the modifier counts");
        let err = check(&m.all()[0], columns("real")).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Schema);
        assert!(err.message.contains("key column \"ts\": type real has no single text"), "{}", err.message);
    }
}
