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

/// How an upsert writes a column.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Written {
    /// Set to the given value.
    Set,
    /// Incremented by it, as HINCRBY asks, on top of the row's own value (NULL counts as 0).
    Add,
    /// Paths set inside its `json`/`jsonb` value ([`path_sets`]); the value is
    /// a `jsonb` array of `[names, value]`.
    Paths,
}

/// One column an upsert writes, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrittenColumn<'a> {
    /// The column.
    pub column: &'a TypedColumn,
    /// Set, added to, or paths set inside.
    pub how: &'a Written,
}

impl WrittenColumn<'_> {
    /// Whether the statement returns the column's new value (Postgres computed
    /// it from the row's own, so Redis learns it).
    pub fn returned(&self) -> bool {
        *self.how != Written::Set
    }

    /// The type its parameter's texts are cast to.
    fn param_type(&self) -> &str {
        match self.how {
            Written::Paths => "jsonb",
            _ => &self.column.sql_type,
        }
    }
}

/// The value `base` (a `json`/`jsonb` expression; NULL is `{}`) takes after
/// the path sets in `sets` (a `jsonb` array of `[[name, ...], value]`), in
/// order, as `model::json_path_set` makes them: a missing intermediate member
/// becomes `{}` (`jsonb_set` alone creates only the last level: the missing
/// rest of the path is set at once as nested objects, spelled as JSON text
/// from `to_jsonb` of each name), and when the value or a member on the way
/// is not an object the value stays. A recursive query takes one set per
/// step, so the text is the same whatever the sets; names and values stay in
/// the bound parameter. `OFFSET 0` keeps each step's path from being inlined
/// into every use of it, and the row estimates stay small enough not to wake
/// the JIT compiler for a statement of a few rows.
pub fn path_sets(base: &str, sets: &str, sql_type: &str) -> String {
    format!(
        "(WITH RECURSIVE f(n, d) AS (SELECT 0, coalesce({base}::jsonb, '{{}}'::jsonb) UNION ALL \
         SELECT f.n + 1, CASE WHEN jsonb_typeof(f.d) IS DISTINCT FROM 'object' THEN f.d \
         WHEN s.first IS NULL THEN jsonb_set(f.d, s.p, s.v, true) \
         WHEN f.d #> s.p[:s.first] IS NULL THEN jsonb_set(f.d, s.p[:s.first], \
         (SELECT (string_agg('{{' || to_jsonb(x.m)::text || ':', '' ORDER BY x.i) || s.v::text \
         || repeat('}}', count(*)::integer))::jsonb FROM unnest(s.p[s.first + 1:]) WITH ORDINALITY AS x(m, i)), true) \
         ELSE f.d END FROM f CROSS JOIN LATERAL (SELECT o.p, o.v, (SELECT min(y.i) \
         FROM unnest(o.p[:cardinality(o.p) - 1]) WITH ORDINALITY AS y(m, i) \
         WHERE jsonb_typeof(f.d #> o.p[:y.i]) IS DISTINCT FROM 'object') AS first \
         FROM (SELECT ARRAY(SELECT jsonb_array_elements_text(({sets}) -> f.n -> 0)) AS p, ({sets}) -> f.n -> 1 AS v \
         OFFSET 0) AS o OFFSET 0) AS s WHERE f.n < jsonb_array_length({sets})) \
         SELECT f.d::{sql_type} FROM f ORDER BY f.n DESC LIMIT 1)"
    )
}

/// Multi-row upsert of `columns` for rows keyed by the `keys` columns. Parameters
/// `$1..$k` hold the key columns' values and the next ones one array per column,
/// all `text[]` of equal length. Only the listed columns are written, so a partial
/// write leaves the others alone.
///
/// Existing rows are updated first and only the rest inserted: a plain
/// `INSERT ... ON CONFLICT` would check NOT NULL on the proposed row before it sees
/// the conflict, and so refuse a partial update of a row that exists. When some
/// column is incremented, the statement returns each row's key columns and the new
/// values of those columns (as text), so Redis can learn the sum.
pub fn upsert(table: &str, keys: &[TypedColumn], columns: &[WrittenColumn<'_>]) -> String {
    let table = quote_table(table);
    let k = keys.len();
    let key_names = keys.iter().map(|c| quote_ident(&c.name)).collect::<Vec<_>>().join(", ");
    // `<left>.<key i> = <right>.<i-th key name>` for every key column.
    let same_key = |left: &dyn Fn(usize, &TypedColumn) -> String, right: &str| {
        keys.iter().enumerate().map(|(i, c)| format!("{} = {right}.c{i}", left(i, c))).collect::<Vec<_>>().join(" AND ")
    };
    let key_outputs = (0..k).map(|i| format!("k{i}")).collect::<Vec<_>>();
    let all: Vec<&TypedColumn> = keys.iter().chain(columns.iter().map(|c| c.column)).collect();
    let list = |f: &dyn Fn(usize, &TypedColumn) -> String| {
        all.iter().enumerate().map(|(i, c)| f(i, c)).collect::<Vec<_>>().join(", ")
    };
    let names = list(&|_, c| quote_ident(&c.name));
    let values = list(&|i, c| match i.checked_sub(k).map(|at| columns[at].how) {
        Some(Written::Paths) => path_sets("NULL", &format!("v.c{i}"), &c.sql_type),
        _ => format!("v.c{i}"),
    });
    let param_type = |i: usize| match i.checked_sub(k) {
        Some(at) => columns[at].param_type(),
        None => &keys[i].sql_type,
    };
    let mut sql = format!(
        "WITH v AS (SELECT {} FROM unnest({}) AS u({}))",
        list(&|i, _| format!("u.c{i}::{} AS c{i}", param_type(i))),
        list(&|i, _| format!("${}::text[]", i + 1)),
        list(&|i, _| format!("c{i}")),
    );
    if columns.is_empty() {
        let _ =
            write!(sql, " INSERT INTO {table} ({names}) SELECT {values} FROM v ON CONFLICT ({key_names}) DO NOTHING");
        return sql;
    }
    let assign = |source: &dyn Fn(usize, &str) -> String| {
        columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let q = quote_ident(&c.column.name);
                let value = source(k + i, &q);
                match c.how {
                    Written::Set => format!("{q} = {value}"),
                    Written::Add => format!("{q} = coalesce(t.{q}, 0) + {value}"),
                    Written::Paths => format!("{q} = {}", path_sets(&format!("t.{q}"), &value, &c.column.sql_type)),
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let sets = assign(&|i, _| format!("v.c{i}"));
    // On a conflict the path sets are read again from `v`: EXCLUDED holds the
    // value made from nothing, not the sets.
    let v_of_excluded = same_key(&|_, c| format!("EXCLUDED.{}", quote_ident(&c.name)), "v");
    let excluded = assign(&|i, q| match columns[i - k].how {
        Written::Paths => format!("(SELECT v.c{i} FROM v WHERE {v_of_excluded})"),
        _ => format!("EXCLUDED.{q}"),
    });
    let returned: Vec<String> = columns
        .iter()
        .enumerate()
        .filter(|(_, c)| c.returned())
        .map(|(i, c)| format!(", t.{}::text AS r{}", quote_ident(&c.column.name), k + i))
        .collect();
    let returned = returned.concat();
    let returned_keys = keys
        .iter()
        .enumerate()
        .map(|(i, c)| format!("t.{} AS k{i}", quote_ident(&c.name)))
        .collect::<Vec<_>>()
        .join(", ");
    let _ = write!(
        sql,
        ", updated AS (UPDATE {table} AS t SET {sets} FROM v WHERE {} RETURNING {returned_keys}{returned})",
        same_key(&|_, c| format!("t.{}", quote_ident(&c.name)), "v")
    );
    let insert = format!(
        "INSERT INTO {table} AS t ({names}) SELECT {values} FROM v WHERE NOT EXISTS (SELECT 1 FROM updated WHERE {}) \
         ON CONFLICT ({key_names}) DO UPDATE SET {excluded}",
        same_key(&|i, _| format!("updated.k{i}"), "v")
    );
    if returned.is_empty() {
        let _ = write!(sql, " {insert}");
    } else {
        let outputs: String =
            columns.iter().enumerate().filter(|(_, c)| c.returned()).map(|(i, _)| format!(", r{}", k + i)).collect();
        let selected = key_outputs.iter().map(|o| format!("{o}::text")).collect::<Vec<_>>().join(", ");
        let _ = write!(
            sql,
            ", inserted AS ({insert} RETURNING {returned_keys}{returned}) \
             SELECT {selected}{outputs} FROM updated UNION ALL SELECT {selected}{outputs} FROM inserted"
        );
    }
    sql
}

/// Update-only form of [`upsert`] (plain values, no increments): rows that do
/// not exist stay absent.
pub fn update(table: &str, keys: &[TypedColumn], columns: &[WrittenColumn<'_>]) -> String {
    let upsert = upsert(table, keys, columns);
    let end = upsert.find(" RETURNING").unwrap_or(upsert.len());
    upsert[..end].replacen(", updated AS (", " ", 1)
}

/// The condition "the row's key is one of `$1..$k`" (`text[]` each, one per key
/// column): `= ANY` for one column, a row comparison over them all for several.
fn key_among(keys: &[TypedColumn]) -> String {
    match keys {
        [pk] => format!("{} = ANY($1::text[]::{}[])", quote_ident(&pk.name), pk.sql_type),
        _ => {
            let list = |f: &dyn Fn(usize, &TypedColumn) -> String| {
                keys.iter().enumerate().map(|(i, c)| f(i, c)).collect::<Vec<_>>().join(", ")
            };
            format!(
                "({}) IN (SELECT {} FROM unnest({}) AS u({}))",
                list(&|_, c| quote_ident(&c.name)),
                list(&|i, c| format!("u.c{i}::{}", c.sql_type)),
                list(&|i, _| format!("${}::text[]", i + 1)),
                list(&|i, _| format!("c{i}")),
            )
        }
    }
}

/// Deletes the rows whose keys are in `$1..$k` (`text[]` per key column).
pub fn delete(table: &str, keys: &[TypedColumn]) -> String {
    format!("DELETE FROM {} WHERE {}", quote_table(table), key_among(keys))
}

/// Selects the key columns and `columns` of a table, all as text. With `by_keys`,
/// only the rows whose keys are in `$1..$k` (`text[]` per key column).
pub fn select_rows(table: &str, keys: &[TypedColumn], columns: &[&str], by_keys: bool) -> String {
    let key_names: Vec<String> = keys.iter().map(|k| format!("{}::text", quote_ident(&k.name))).collect();
    let mut sql = format!("SELECT {}", key_names.join(", "));
    for c in columns {
        let _ = write!(sql, ", {}::text", quote_ident(c));
    }
    let _ = write!(sql, " FROM {}", quote_table(table));
    if by_keys {
        let _ = write!(sql, " WHERE {}", key_among(keys));
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
        let sql = upsert("users", &[col("id", "integer")], &[WrittenColumn { column: &score, how: &Written::Set }]);
        assert_eq!(
            sql,
            "WITH v AS (SELECT u.c0::integer AS c0, u.c1::integer AS c1 FROM unnest($1::text[], $2::text[]) AS u(c0, c1)), \
             updated AS (UPDATE \"users\" AS t SET \"score\" = v.c1 FROM v WHERE t.\"id\" = v.c0 RETURNING t.\"id\" AS k0) \
             INSERT INTO \"users\" AS t (\"id\", \"score\") SELECT v.c0, v.c1 FROM v \
             WHERE NOT EXISTS (SELECT 1 FROM updated WHERE updated.k0 = v.c0) \
             ON CONFLICT (\"id\") DO UPDATE SET \"score\" = EXCLUDED.\"score\""
        );
        let bare = upsert("users", &[col("id", "integer")], &[]);
        assert!(bare.ends_with("DO NOTHING"), "{bare}");
    }

    #[test]
    fn update_only_never_inserts() {
        let score = col("score", "integer");
        let sql = update("users", &[col("id", "integer")], &[WrittenColumn { column: &score, how: &Written::Set }]);
        assert!(sql.ends_with("UPDATE \"users\" AS t SET \"score\" = v.c1 FROM v WHERE t.\"id\" = v.c0"), "{sql}");
        assert!(!sql.contains("INSERT"), "{sql}");
    }

    #[test]
    fn increments_add_to_the_row_and_return_the_sum() {
        let (name, score) = (col("name", "text"), col("score", "integer"));
        let columns =
            [WrittenColumn { column: &name, how: &Written::Set }, WrittenColumn { column: &score, how: &Written::Add }];
        let sql = upsert("users", &[col("id", "integer")], &columns);
        assert!(sql.contains("SET \"name\" = v.c1, \"score\" = coalesce(t.\"score\", 0) + v.c2 FROM v"), "{sql}");
        assert!(sql.contains("\"score\" = coalesce(t.\"score\", 0) + EXCLUDED.\"score\" RETURNING"), "{sql}");
        assert!(sql.ends_with("SELECT k0::text, r2 FROM updated UNION ALL SELECT k0::text, r2 FROM inserted"), "{sql}");
    }

    #[test]
    fn path_sets_are_one_recursive_expression_and_return_the_new_value() {
        let sql = path_sets("t.\"p\"", "v.c1", "json");
        assert!(
            sql.starts_with("(WITH RECURSIVE f(n, d) AS (SELECT 0, coalesce(t.\"p\"::jsonb, '{}'::jsonb)"),
            "{sql}"
        );
        assert!(sql.contains("jsonb_array_elements_text((v.c1) -> f.n -> 0)"), "{sql}");
        assert!(sql.ends_with("SELECT f.d::json FROM f ORDER BY f.n DESC LIMIT 1)"), "{sql}");
        let profile = col("profile", "jsonb");
        let sql =
            upsert("accounts", &[col("id", "integer")], &[WrittenColumn { column: &profile, how: &Written::Paths }]);
        assert!(sql.contains("u.c1::jsonb AS c1"), "{sql}");
        assert!(
            sql.contains("SET \"profile\" = (WITH RECURSIVE f(n, d) AS (SELECT 0, coalesce(t.\"profile\"::jsonb"),
            "{sql}"
        );
        assert!(sql.contains("SELECT v.c0, (WITH RECURSIVE f(n, d) AS (SELECT 0, coalesce(NULL::jsonb"), "{sql}");
        assert!(sql.contains("((SELECT v.c1 FROM v WHERE EXCLUDED.\"id\" = v.c0)) -> f.n -> 0"), "{sql}");
        assert!(sql.ends_with("SELECT k0::text, r1 FROM updated UNION ALL SELECT k0::text, r1 FROM inserted"), "{sql}");
    }

    #[test]
    fn selects_cast_every_column_to_text() {
        assert_eq!(
            select_rows("users", &[col("id", "integer")], &["score"], true),
            "SELECT \"id\"::text, \"score\"::text FROM \"users\" WHERE \"id\" = ANY($1::text[]::integer[])"
        );
        assert_eq!(quote_literal("it's"), "'it''s'");
    }

    #[test]
    fn delete_casts_keys_to_the_key_type() {
        assert_eq!(
            delete("users", &[col("id", "integer")]),
            "DELETE FROM \"users\" WHERE \"id\" = ANY($1::text[]::integer[])"
        );
    }

    #[test]
    fn composite_keys_use_every_key_column() {
        let keys = [col("brand_id", "text"), col("category_id", "integer")];
        let rank = col("rank", "integer");
        let sql = upsert("bc", &keys, &[WrittenColumn { column: &rank, how: &Written::Add }]);
        assert!(sql.contains("unnest($1::text[], $2::text[], $3::text[])"), "{sql}");
        assert!(sql.contains("WHERE t.\"brand_id\" = v.c0 AND t.\"category_id\" = v.c1 RETURNING t.\"brand_id\" AS k0, t.\"category_id\" AS k1, t.\"rank\"::text AS r2"), "{sql}");
        assert!(sql.contains("WHERE updated.k0 = v.c0 AND updated.k1 = v.c1"), "{sql}");
        assert!(sql.contains("ON CONFLICT (\"brand_id\", \"category_id\") DO UPDATE"), "{sql}");
        assert!(sql.ends_with("SELECT k0::text, k1::text, r2 FROM inserted"), "{sql}");
        assert_eq!(
            delete("bc", &keys),
            "DELETE FROM \"bc\" WHERE (\"brand_id\", \"category_id\") IN (SELECT u.c0::text, u.c1::integer \
             FROM unnest($1::text[], $2::text[]) AS u(c0, c1))"
        );
        assert!(select_rows("bc", &keys, &["rank"], false)
            .starts_with("SELECT \"brand_id\"::text, \"category_id\"::text, \"rank\"::text"));
    }
}
