//! Turns a batch of coalesced row changes into as few multi-row statements as
//! possible, runs them, and when Postgres rejects one row, isolates it: the batch is
//! replayed row by row inside savepoints so every other row still commits.

use super::error::Error;
use super::schema::TableSchema;
use super::sql::{self, TypedColumn};
use crate::change::{Change, RowOp};
use crate::mapping::Mapping;
use postgres::types::{ToSql, Type};
use postgres::GenericClient;
use std::collections::BTreeMap;

/// A row change translated to columns, ready for SQL.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedRow {
    /// Index of the mapping (and table) the row belongs to.
    pub mapping: usize,
    /// What to do with the row.
    pub op: RowOp,
    /// Primary-key value as text.
    pub id: String,
    /// Column → text value (`None` = NULL). Only mapped, existing columns.
    pub values: BTreeMap<String, Option<String>>,
}

/// Translates a change into columns. Unmapped fields are dropped here, so they never
/// reach SQL. A value that is not UTF-8 cannot be Postgres text: the row is rejected.
/// A removed field (`None`), or in a whole-row change a mapped field that is
/// absent, makes its column NULL, except for columns with a DEFAULT, which are
/// left alone.
pub fn prepare(
    mapping_index: usize,
    mapping: &Mapping,
    schema: &TableSchema,
    id: &str,
    change: &Change,
) -> Result<PreparedRow, String> {
    let mut values = BTreeMap::new();
    if change.op != RowOp::Delete && change.whole_row {
        for (field, column) in mapping.field_columns(schema.columns.keys()) {
            if !change.fields.contains_key(field.as_bytes())
                && schema.columns.get(&column).is_some_and(|c| !c.has_default)
            {
                values.insert(column, None);
            }
        }
    }
    if change.op != RowOp::Delete {
        for (field, value) in &change.fields {
            let Ok(field) = std::str::from_utf8(field) else {
                continue;
            };
            let Some(column) = mapping.column_for(field) else {
                continue;
            };
            let Some(info) = schema.columns.get(column) else {
                continue;
            };
            let value = match value {
                Some(bytes) => Some(String::from_utf8(bytes.clone()).map_err(|_| {
                    format!("field \"{field}\" holds bytes that are not valid UTF-8 and cannot be stored in column \"{column}\"")
                })?),
                None if info.has_default => continue,
                None => None,
            };
            values.insert(column.to_string(), value);
        }
    }
    Ok(PreparedRow { mapping: mapping_index, op: change.op, id: id.to_string(), values })
}

/// One statement of a plan and the batch rows it covers.
#[derive(Debug)]
struct Statement {
    sql: String,
    params: Vec<Vec<Option<String>>>,
}

/// The tables of the batch: schema by mapping index.
pub type Tables<'a> = dyn Fn(usize) -> Option<(&'a Mapping, &'a TableSchema)> + 'a;

/// Builds the statements for `rows`: one DELETE per table, then one INSERT per table
/// and set of columns, so deletes-then-writes (replace) land in order.
fn plan(tables: &Tables<'_>, rows: &[&PreparedRow]) -> Result<Vec<Statement>, Error> {
    let mut deletes: BTreeMap<usize, Vec<Option<String>>> = BTreeMap::new();
    let mut upserts: BTreeMap<(usize, Vec<&str>), Vec<&PreparedRow>> = BTreeMap::new();
    for row in rows {
        if row.op != RowOp::Upsert {
            deletes.entry(row.mapping).or_default().push(Some(row.id.clone()));
        }
        if row.op != RowOp::Delete {
            let cols = row.values.keys().map(String::as_str).collect();
            upserts.entry((row.mapping, cols)).or_default().push(row);
        }
    }
    let table =
        |i: usize| tables(i).ok_or_else(|| Error::new(super::error::ErrorKind::Schema, "table schema not loaded yet"));
    let mut out = Vec::new();
    for (mapping, ids) in deletes {
        let (m, schema) = table(mapping)?;
        out.push(Statement { sql: sql::delete(&m.table, &schema.pk), params: vec![ids] });
    }
    for ((mapping, cols), group) in upserts {
        let (m, schema) = table(mapping)?;
        let typed: Vec<&TypedColumn> = cols.iter().filter_map(|c| schema.column(c)).collect();
        let mut params = vec![group.iter().map(|r| Some(r.id.clone())).collect::<Vec<_>>()];
        for col in &typed {
            params.push(group.iter().map(|r| r.values.get(&col.name).cloned().flatten()).collect());
        }
        out.push(Statement { sql: sql::upsert(&m.table, &schema.pk, &typed), params });
    }
    Ok(out)
}

fn run(client: &mut impl GenericClient, statements: &[Statement]) -> Result<(), Error> {
    for s in statements {
        let params: Vec<(&(dyn ToSql + Sync), Type)> =
            s.params.iter().map(|p| (p as &(dyn ToSql + Sync), Type::TEXT_ARRAY)).collect();
        client.execute_typed(&s.sql, &params)?;
    }
    Ok(())
}

/// Writes a batch. `Err` means nothing is known to be committed and the whole batch
/// should be retried later; `Ok` holds each row's outcome (rejections with their
/// Postgres message), everything else committed.
pub fn write(
    client: &mut impl GenericClient,
    tables: &Tables<'_>,
    rows: &[PreparedRow],
) -> Result<Vec<Result<(), String>>, Error> {
    let all: Vec<&PreparedRow> = rows.iter().collect();
    let statements = plan(tables, &all)?;
    let attempt = if statements.len() == 1 {
        // One statement is atomic on its own: save the BEGIN/COMMIT round trips.
        run(client, &statements)
    } else {
        client.transaction().map_err(Error::from).and_then(|mut tx| {
            run(&mut tx, &statements)?;
            tx.commit().map_err(Error::from)
        })
    };
    match attempt {
        Ok(()) => Ok(vec![Ok(()); rows.len()]),
        Err(e) if e.is_retryable() => Err(e),
        Err(_) => write_row_by_row(client, tables, rows),
    }
}

fn write_row_by_row(
    client: &mut impl GenericClient,
    tables: &Tables<'_>,
    rows: &[PreparedRow],
) -> Result<Vec<Result<(), String>>, Error> {
    let mut tx = client.transaction()?;
    let mut outcomes = Vec::with_capacity(rows.len());
    for row in rows {
        let statements = plan(tables, &[row])?;
        let mut savepoint = tx.savepoint("pgsync_row")?;
        match run(&mut savepoint, &statements) {
            Ok(()) => {
                savepoint.commit()?;
                outcomes.push(Ok(()));
            }
            Err(e) if e.is_retryable() => return Err(e),
            Err(e) => {
                savepoint.rollback()?;
                outcomes.push(Err(e.message));
            }
        }
    }
    tx.commit()?;
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::Mappings;

    fn schema() -> TableSchema {
        let col = |n: &str, has_default: bool| {
            let typed = TypedColumn { name: n.into(), sql_type: "text".into() };
            (n.to_string(), crate::pg::schema::ColumnInfo { typed, has_default })
        };
        TableSchema {
            pk: TypedColumn { name: "id".into(), sql_type: "integer".into() },
            columns: [col("id", true), col("password_hash", false), col("score", true)].into_iter().collect(),
        }
    }

    fn users() -> Mappings {
        Mappings::parse(
            r#"{"mappings": [{"name": "users", "table": "users", "key_prefix": "users:",
            "primary_key": "id", "mode": "write-through", "fields": {"pwhash": "password_hash", "score": "score"}}]}"#,
        )
        .unwrap()
    }

    fn change(fields: &[(&[u8], &[u8])]) -> Change {
        let write = crate::change::Write { op: RowOp::Upsert, whole_row: false, acks: vec![] };
        let mut change = Change::new(write, 1);
        change.fields = fields.iter().map(|(f, v)| (f.to_vec(), Some(v.to_vec()))).collect();
        change
    }

    #[test]
    fn unmapped_fields_never_reach_sql() {
        let m = users();
        let row = prepare(0, &m.all()[0], &schema(), "1", &change(&[(b"pwhash", b"x"), (b"nick'; --", b"y")])).unwrap();
        assert_eq!(row.values.keys().collect::<Vec<_>>(), vec!["password_hash"]);
    }

    #[test]
    fn non_utf8_values_are_rejected_with_the_field_name() {
        let m = users();
        let err = prepare(0, &m.all()[0], &schema(), "1", &change(&[(b"score", b"\xff\xfe")])).unwrap_err();
        assert!(err.contains("\"score\""), "{err}");
    }

    #[test]
    fn a_whole_row_change_nulls_the_mapped_columns_it_lacks() {
        let m = users();
        let mut c = change(&[(b"pwhash", b"x")]);
        c.whole_row = true;
        let mut schema = schema();
        schema.columns.get_mut("score").unwrap().has_default = false;
        let row = prepare(0, &m.all()[0], &schema, "1", &c).unwrap();
        assert_eq!(row.values.get("score"), Some(&None));
        assert_eq!(row.values.get("password_hash"), Some(&Some("x".to_string())));
    }

    #[test]
    fn removed_fields_become_null_unless_the_column_has_a_default() {
        let m = users();
        let mut c = change(&[]);
        c.fields.insert(b"pwhash".to_vec(), None);
        c.fields.insert(b"score".to_vec(), None);
        let row = prepare(0, &m.all()[0], &schema(), "1", &c).unwrap();
        assert_eq!(row.values.get("password_hash"), Some(&None));
        assert!(!row.values.contains_key("score"), "a column with a default is left alone");
    }
}
