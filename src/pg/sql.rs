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

/// Multi-row upsert of `columns` for rows keyed by `pk`. Parameter `$1` holds the
/// keys and `$2..` one array per column, all `text[]` of equal length. Only the
/// listed columns are written, so a partial write leaves the others alone.
///
/// Existing rows are updated first and only the rest inserted: a plain
/// `INSERT ... ON CONFLICT` would check NOT NULL on the proposed row before it sees
/// the conflict, and so refuse a partial update of a row that exists.
pub fn upsert(table: &str, pk: &TypedColumn, columns: &[&TypedColumn]) -> String {
    let table = quote_table(table);
    let pk_name = quote_ident(&pk.name);
    let all: Vec<&TypedColumn> = std::iter::once(pk).chain(columns.iter().copied()).collect();
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
    let sets: Vec<String> =
        columns.iter().enumerate().map(|(i, c)| format!("{} = v.c{}", quote_ident(&c.name), i + 1)).collect();
    let excluded: Vec<String> = columns
        .iter()
        .map(|c| {
            let q = quote_ident(&c.name);
            format!("{q} = EXCLUDED.{q}")
        })
        .collect();
    let _ = write!(
        sql,
        ", updated AS (UPDATE {table} AS t SET {} FROM v WHERE t.{pk_name} = v.c0 RETURNING t.{pk_name} AS id) \
         INSERT INTO {table} ({names}) SELECT {values} FROM v WHERE NOT EXISTS (SELECT 1 FROM updated WHERE updated.id = v.c0) \
         ON CONFLICT ({pk_name}) DO UPDATE SET {}",
        sets.join(", "),
        excluded.join(", ")
    );
    sql
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
        let sql = upsert("users", &col("id", "integer"), &[&col("score", "integer")]);
        assert_eq!(
            sql,
            "WITH v AS (SELECT u.c0::integer AS c0, u.c1::integer AS c1 FROM unnest($1::text[], $2::text[]) AS u(c0, c1)), \
             updated AS (UPDATE \"users\" AS t SET \"score\" = v.c1 FROM v WHERE t.\"id\" = v.c0 RETURNING t.\"id\" AS id) \
             INSERT INTO \"users\" (\"id\", \"score\") SELECT v.c0, v.c1 FROM v \
             WHERE NOT EXISTS (SELECT 1 FROM updated WHERE updated.id = v.c0) \
             ON CONFLICT (\"id\") DO UPDATE SET \"score\" = EXCLUDED.\"score\""
        );
        let bare = upsert("users", &col("id", "integer"), &[]);
        assert!(bare.ends_with("DO NOTHING"), "{bare}");
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
