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
/// listed columns are updated on conflict, so a partial write leaves the others.
pub fn upsert(table: &str, pk: &TypedColumn, columns: &[&TypedColumn]) -> String {
    let all: Vec<&TypedColumn> = std::iter::once(pk).chain(columns.iter().copied()).collect();
    let mut sql = format!("INSERT INTO {} (", quote_table(table));
    sql.push_str(&all.iter().map(|c| quote_ident(&c.name)).collect::<Vec<_>>().join(", "));
    sql.push_str(") SELECT ");
    let casts: Vec<String> = all.iter().enumerate().map(|(i, c)| format!("u.c{i}::{}", c.sql_type)).collect();
    sql.push_str(&casts.join(", "));
    sql.push_str(" FROM unnest(");
    let params: Vec<String> = (1..=all.len()).map(|i| format!("${i}::text[]")).collect();
    sql.push_str(&params.join(", "));
    sql.push_str(") AS u(");
    sql.push_str(&(0..all.len()).map(|i| format!("c{i}")).collect::<Vec<_>>().join(", "));
    let _ = write!(sql, ") ON CONFLICT ({}) DO ", quote_ident(&pk.name));
    if columns.is_empty() {
        sql.push_str("NOTHING");
    } else {
        sql.push_str("UPDATE SET ");
        let sets: Vec<String> = columns
            .iter()
            .map(|c| {
                let q = quote_ident(&c.name);
                format!("{q} = EXCLUDED.{q}")
            })
            .collect();
        sql.push_str(&sets.join(", "));
    }
    sql
}

/// Deletes the rows whose keys are in `$1` (`text[]`).
pub fn delete(table: &str, pk: &TypedColumn) -> String {
    format!(
        "DELETE FROM {} WHERE {} = ANY($1::text[]::{}[])",
        quote_table(table),
        quote_ident(&pk.name),
        pk.sql_type
    )
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
            "INSERT INTO \"users\" (\"id\", \"score\") SELECT u.c0::integer, u.c1::integer \
             FROM unnest($1::text[], $2::text[]) AS u(c0, c1) \
             ON CONFLICT (\"id\") DO UPDATE SET \"score\" = EXCLUDED.\"score\""
        );
        let bare = upsert("users", &col("id", "integer"), &[]);
        assert!(bare.ends_with("DO NOTHING"), "{bare}");
    }

    #[test]
    fn delete_casts_keys_to_the_key_type() {
        assert_eq!(
            delete("users", &col("id", "integer")),
            "DELETE FROM \"users\" WHERE \"id\" = ANY($1::text[]::integer[])"
        );
    }
}
