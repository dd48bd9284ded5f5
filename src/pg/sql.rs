//! SQL text building. Identifiers come only from the mapping file and the catalog
//! and are always quoted; values are never part of the text, they travel as bound
//! `text[]` parameters and are cast to each column's type by Postgres.

use std::fmt::Write;

/// Quotes an identifier (`users` → `"users"`, `a"b` → `"a""b"`).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a possibly schema-qualified table name (`public.users` → `"public"."users"`).
pub fn quote_table(name: &str) -> String {
    name.split('.').map(quote_ident).collect::<Vec<_>>().join(".")
}

/// A column and the SQL type its text values are cast to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypedColumn {
    /// Column name (unquoted).
    pub name: String,
    /// Type as printed by `format_type(atttypid, NULL)`, e.g. `integer`.
    pub sql_type: String,
}

/// One column an upsert writes: set to the given value, or (`add`) incremented by
/// it, as HINCRBY asks, on top of the row's own value (NULL counts as 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrittenColumn<'a> {
    /// The column.
    pub column: &'a TypedColumn,
    /// Whether the value is an increment.
    pub add: bool,
}

/// Multi-row upsert of `columns` for rows keyed by `pk`. Parameter `$1` holds the
/// keys and `$2..` one array per column, all `text[]` of equal length. Only the
/// listed columns are written, so a partial write leaves the others alone.
///
/// Existing rows are updated first and only the rest inserted: a plain
/// `INSERT ... ON CONFLICT` would check NOT NULL on the proposed row before it sees
/// the conflict, and so refuse a partial update of a row that exists. When some
/// column is incremented, the statement returns each row's key and the new values
/// of those columns (as text), so Redis can learn the sum.
pub fn upsert(table: &str, pk: &TypedColumn, columns: &[WrittenColumn<'_>]) -> String {
    let table = quote_table(table);
    let pk_name = quote_ident(&pk.name);
    let all: Vec<&TypedColumn> = std::iter::once(pk).chain(columns.iter().map(|c| c.column)).collect();
    let list = |f: &dyn Fn(usize, &TypedColumn) -> String| {
        all.iter().enumerate().map(|(i, c)| f(i, c)).collect::<Vec<_>>().join(", ")
    };
    let names = list(&|_, c| quote_ident(&c.name));
    let values = list(&|i, _| format!("v.c{i}"));
    let mut sql = format!(
        "WITH v AS (SELECT {} FROM unnest({}) AS u({}))",
        list(&|i, c| format!("u.c{i}::{} AS c{i}", c.sql_type)),
        list(&|i, _| format!("${}::text[]", i + 1)),
        list(&|i, _| format!("c{i}")),
    );
    if columns.is_empty() {
        let _ = write!(sql, " INSERT INTO {table} ({names}) SELECT {values} FROM v ON CONFLICT ({pk_name}) DO NOTHING");
        return sql;
    }
    let assign = |source: &dyn Fn(usize, &str) -> String| {
        columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let q = quote_ident(&c.column.name);
                let value = source(i + 1, &q);
                if c.add {
                    format!("{q} = coalesce(t.{q}, 0) + {value}")
                } else {
                    format!("{q} = {value}")
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let sets = assign(&|i, _| format!("v.c{i}"));
    let excluded = assign(&|_, q| format!("EXCLUDED.{q}"));
    let returned: Vec<String> = columns
        .iter()
        .enumerate()
        .filter(|(_, c)| c.add)
        .map(|(i, c)| format!(", t.{}::text AS r{}", quote_ident(&c.column.name), i + 1))
        .collect();
    let returned = returned.concat();
    let _ = write!(
        sql,
        ", updated AS (UPDATE {table} AS t SET {sets} FROM v WHERE t.{pk_name} = v.c0 RETURNING t.{pk_name} AS id{returned})"
    );
    let insert = format!(
        "INSERT INTO {table} AS t ({names}) SELECT {values} FROM v WHERE NOT EXISTS (SELECT 1 FROM updated WHERE updated.id = v.c0) \
         ON CONFLICT ({pk_name}) DO UPDATE SET {excluded}"
    );
    if returned.is_empty() {
        let _ = write!(sql, " {insert}");
    } else {
        let outputs: String =
            columns.iter().enumerate().filter(|(_, c)| c.add).map(|(i, _)| format!(", r{}", i + 1)).collect();
        let _ = write!(
            sql,
            ", inserted AS ({insert} RETURNING t.{pk_name} AS id{returned}) \
             SELECT id::text{outputs} FROM updated UNION ALL SELECT id::text{outputs} FROM inserted"
        );
    }
    sql
}

/// Update-only form of [`upsert`] (plain values, no increments): rows that do
/// not exist stay absent.
pub fn update(table: &str, pk: &TypedColumn, columns: &[WrittenColumn<'_>]) -> String {
    let upsert = upsert(table, pk, columns);
    let end = upsert.find(" RETURNING").unwrap_or(upsert.len());
    upsert[..end].replacen(", updated AS (", " ", 1)
}

/// Deletes the rows whose keys are in `$1` (`text[]`).
pub fn delete(table: &str, pk: &TypedColumn) -> String {
    format!("DELETE FROM {} WHERE {} = ANY($1::text[]::{}[])", quote_table(table), quote_ident(&pk.name), pk.sql_type)
}

/// Selects the key and `columns` of a table, all as text. With `by_keys`, only the
/// rows whose keys are in `$1` (`text[]`).
pub fn select_rows(table: &str, pk: &TypedColumn, columns: &[&str], by_keys: bool) -> String {
    let mut sql = format!("SELECT {}::text", quote_ident(&pk.name));
    for c in columns {
        let _ = write!(sql, ", {}::text", quote_ident(c));
    }
    let _ = write!(sql, " FROM {}", quote_table(table));
    if by_keys {
        let _ = write!(sql, " WHERE {} = ANY($1::text[]::{}[])", quote_ident(&pk.name), pk.sql_type);
    }
    sql
}

/// Quotes a string literal (`it's` → `'it''s'`), for the trigger's arguments, which
/// come from the mapping file.
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, t: &str) -> TypedColumn {
        TypedColumn { name: name.into(), sql_type: t.into() }
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("a\"b; drop"), "\"a\"\"b; drop\"");
        assert_eq!(quote_table("public.users"), "\"public\".\"users\"");
    }

    #[test]
    fn upsert_updates_only_listed_columns() {
        let score = col("score", "integer");
        let sql = upsert("users", &col("id", "integer"), &[WrittenColumn { column: &score, add: false }]);
        assert_eq!(
            sql,
            "WITH v AS (SELECT u.c0::integer AS c0, u.c1::integer AS c1 FROM unnest($1::text[], $2::text[]) AS u(c0, c1)), \
             updated AS (UPDATE \"users\" AS t SET \"score\" = v.c1 FROM v WHERE t.\"id\" = v.c0 RETURNING t.\"id\" AS id) \
             INSERT INTO \"users\" AS t (\"id\", \"score\") SELECT v.c0, v.c1 FROM v \
             WHERE NOT EXISTS (SELECT 1 FROM updated WHERE updated.id = v.c0) \
             ON CONFLICT (\"id\") DO UPDATE SET \"score\" = EXCLUDED.\"score\""
        );
        let bare = upsert("users", &col("id", "integer"), &[]);
        assert!(bare.ends_with("DO NOTHING"), "{bare}");
    }

    #[test]
    fn update_only_never_inserts() {
        let score = col("score", "integer");
        let sql = update("users", &col("id", "integer"), &[WrittenColumn { column: &score, add: false }]);
        assert!(sql.ends_with("UPDATE \"users\" AS t SET \"score\" = v.c1 FROM v WHERE t.\"id\" = v.c0"), "{sql}");
        assert!(!sql.contains("INSERT"), "{sql}");
    }

    #[test]
    fn increments_add_to_the_row_and_return_the_sum() {
        let (name, score) = (col("name", "text"), col("score", "integer"));
        let columns = [WrittenColumn { column: &name, add: false }, WrittenColumn { column: &score, add: true }];
        let sql = upsert("users", &col("id", "integer"), &columns);
        assert!(sql.contains("SET \"name\" = v.c1, \"score\" = coalesce(t.\"score\", 0) + v.c2 FROM v"), "{sql}");
        assert!(sql.contains("\"score\" = coalesce(t.\"score\", 0) + EXCLUDED.\"score\" RETURNING"), "{sql}");
        assert!(sql.ends_with("SELECT id::text, r2 FROM updated UNION ALL SELECT id::text, r2 FROM inserted"), "{sql}");
    }

    #[test]
    fn selects_cast_every_column_to_text() {
        assert_eq!(
            select_rows("users", &col("id", "integer"), &["score"], true),
            "SELECT \"id\"::text, \"score\"::text FROM \"users\" WHERE \"id\" = ANY($1::text[]::integer[])"
        );
        assert_eq!(quote_literal("it's"), "'it''s'");
    }

    #[test]
    fn delete_casts_keys_to_the_key_type() {
        assert_eq!(
            delete("users", &col("id", "integer")),
            "DELETE FROM \"users\" WHERE \"id\" = ANY($1::text[]::integer[])"
        );
    }
}
