//! The NOTIFY triggers that tell the listener which rows changed. The payload is
//! only `{"op", "id"}` (the id spelled as the key spells it, several key columns
//! joined by their separators), so it stays under Postgres's 8000-byte limit whatever the
//! row size; the listener reads the row itself. TRUNCATE fires no row trigger, so
//! a statement trigger announces it as `{"op": "truncate"}` (no id). Changes made
//! by the module's own sessions (marked with the `pgsync.origin` setting) are not
//! announced, so they never echo back into Redis.

use super::error::Error;
use super::sql::{quote_ident, quote_literal, quote_table};
use crate::model::key_text::KeyType;
use crate::model::mapping::{Document, Mapping};
use postgres::types::Type;
use postgres::Client;

/// Value of `pgsync.origin` on the module's writing sessions.
pub const ORIGIN: &str = "redis-pgsync";

/// The trigger function, shared by every mapped table of a database whose key
/// columns' JSON spelling (`to_jsonb(NEW) ->> column`, the cheapest way to read
/// a column named by an argument) is their text: integers, numeric, text, uuid,
/// boolean, date, time, enums.
pub const FUNCTION_SQL: &str = r#"CREATE OR REPLACE FUNCTION pgsync_notify() RETURNS trigger
LANGUAGE plpgsql AS $pgsync$
DECLARE
    new_row jsonb;
    old_row jsonb;
    new_id text;
    old_id text;
BEGIN
    IF current_setting('pgsync.origin', true) = 'redis-pgsync' THEN
        RETURN NULL;
    END IF;
    IF TG_OP <> 'DELETE' THEN new_row := to_jsonb(NEW); new_id := new_row ->> TG_ARGV[0]; END IF;
    IF TG_OP <> 'INSERT' THEN old_row := to_jsonb(OLD); old_id := old_row ->> TG_ARGV[0]; END IF;
    -- A key over several columns: the arguments after the channel are
    -- (separator, column) pairs, joined as the Redis key spells them.
    FOR i IN 1 .. (TG_NARGS - 2) / 2 LOOP
        new_id := new_id || TG_ARGV[2 * i] || (new_row ->> TG_ARGV[2 * i + 1]);
        old_id := old_id || TG_ARGV[2 * i] || (old_row ->> TG_ARGV[2 * i + 1]);
    END LOOP;
    IF length(coalesce(new_id, old_id)) > 7000 THEN
        RAISE WARNING 'pgsync: key too long to announce on %', TG_ARGV[1];
        RETURN NULL;
    END IF;
    IF old_id IS NOT NULL AND old_id IS DISTINCT FROM new_id THEN
        PERFORM pg_notify(TG_ARGV[1], json_build_object('op', 'delete', 'id', old_id)::text);
    END IF;
    IF new_id IS NOT NULL THEN
        PERFORM pg_notify(TG_ARGV[1], json_build_object('op', 'upsert', 'id', new_id)::text);
    END IF;
    RETURN NULL;
END
$pgsync$"#;

/// The trigger function of tables with a key column whose JSON spelling is not
/// its text (`timestamp`: `2024-01-01T10:00:00` for `2024-01-01 10:00:00`;
/// `timestamp with time zone`, in the writer's time zone; `character(n)`,
/// padded): it reads each key column's `::text` with a dynamic query, with the
/// module's sessions' DateStyle and TimeZone, at about twice the cost per row.
pub const TEXT_FUNCTION_SQL: &str = r#"CREATE OR REPLACE FUNCTION pgsync_notify_text() RETURNS trigger
LANGUAGE plpgsql SET DateStyle = 'ISO, MDY' SET TimeZone = 'UTC' AS $pgsync$
DECLARE
    spelled text;
    new_id text;
    old_id text;
BEGIN
    IF current_setting('pgsync.origin', true) = 'redis-pgsync' THEN
        RETURN NULL;
    END IF;
    -- The id as the key spells it: each key column as ::text prints it, with the
    -- module's sessions' DateStyle and TimeZone (this function's SET), so a
    -- timestamp is 2024-01-01 10:00:00, not JSON's 2024-01-01T10:00:00. A key
    -- over several columns: the arguments after the channel are (separator,
    -- column) pairs.
    spelled := format('($1).%I::text', TG_ARGV[0]);
    FOR i IN 1 .. (TG_NARGS - 2) / 2 LOOP
        spelled := spelled || format(' || %L || ($1).%I::text', TG_ARGV[2 * i], TG_ARGV[2 * i + 1]);
    END LOOP;
    IF TG_OP <> 'DELETE' THEN EXECUTE 'SELECT ' || spelled INTO new_id USING NEW; END IF;
    IF TG_OP <> 'INSERT' THEN EXECUTE 'SELECT ' || spelled INTO old_id USING OLD; END IF;
    IF length(coalesce(new_id, old_id)) > 7000 THEN
        RAISE WARNING 'pgsync: key too long to announce on %', TG_ARGV[1];
        RETURN NULL;
    END IF;
    IF old_id IS NOT NULL AND old_id IS DISTINCT FROM new_id THEN
        PERFORM pg_notify(TG_ARGV[1], json_build_object('op', 'delete', 'id', old_id)::text);
    END IF;
    IF new_id IS NOT NULL THEN
        PERFORM pg_notify(TG_ARGV[1], json_build_object('op', 'upsert', 'id', new_id)::text);
    END IF;
    RETURN NULL;
END
$pgsync$"#;

/// The statement trigger's function, announcing a TRUNCATE of the table: its
/// argument is the channel.
pub const TRUNCATE_FUNCTION_SQL: &str = r#"CREATE OR REPLACE FUNCTION pgsync_notify_truncate() RETURNS trigger
LANGUAGE plpgsql AS $pgsync$
BEGIN
    IF current_setting('pgsync.origin', true) = 'redis-pgsync' THEN
        RETURN NULL;
    END IF;
    PERFORM pg_notify(TG_ARGV[0], '{"op":"truncate"}');
    RETURN NULL;
END
$pgsync$"#;

/// The row trigger function a key with these column types needs, and its SQL:
/// [`TEXT_FUNCTION_SQL`]'s when a key column's JSON spelling is not its text.
fn row_function(key_types: &[KeyType]) -> (&'static str, &'static str) {
    match key_types.iter().all(KeyType::json_spells_text) {
        true => ("pgsync_notify", FUNCTION_SQL),
        false => ("pgsync_notify_text", TEXT_FUNCTION_SQL),
    }
}

/// The statement that attaches the row trigger to a mapping's table (whose key
/// columns have `key_types`): its arguments are the first key column, the
/// channel, then a (separator, column) pair for each further key column.
pub fn trigger_sql(mapping: &Mapping, key_types: &[KeyType]) -> String {
    let columns = mapping.key.columns();
    let mut args = vec![quote_literal(&columns[0]), quote_literal(&mapping.pg_channel())];
    for (separator, column) in mapping.key.separators().iter().zip(&columns[1..]) {
        args.extend([quote_literal(separator), quote_literal(column)]);
    }
    format!(
        "CREATE TRIGGER pgsync_notify AFTER INSERT OR UPDATE OR DELETE ON {} \
         FOR EACH ROW EXECUTE FUNCTION {}({})",
        quote_table(&mapping.table),
        row_function(key_types).0,
        args.join(", ")
    )
}

/// The statement that attaches the TRUNCATE trigger to a mapping's table.
pub fn truncate_trigger_sql(mapping: &Mapping) -> String {
    truncate_sql("pgsync_truncate", &mapping.table, mapping)
}

fn truncate_sql(name: &str, table: &str, mapping: &Mapping) -> String {
    format!(
        "CREATE TRIGGER {} AFTER TRUNCATE ON {} \
         FOR EACH STATEMENT EXECUTE FUNCTION pgsync_notify_truncate({})",
        quote_ident(name),
        quote_table(table),
        quote_literal(&mapping.pg_channel())
    )
}

/// A trigger to install.
#[derive(Debug)]
pub struct Trigger {
    /// Its name.
    pub name: String,
    /// The table it is on.
    pub table: String,
    /// The function it calls.
    pub function: &'static str,
    /// The statement that creates it.
    pub sql: String,
}

/// The triggers of a document mapping: on each watched table, a row trigger
/// announcing the root id in the watched column, and a TRUNCATE trigger, named
/// after the mapping so several mappings can watch one table.
pub fn watch_triggers(mapping: &Mapping, document: &Document) -> Vec<Trigger> {
    // Postgres cuts names at 63 bytes; mapping names are ASCII.
    let name = |suffix: &str| {
        let full = format!("pgsync_{}{suffix}", mapping.name);
        full[..full.len().min(63)].to_string()
    };
    let (row, truncate) = (name(""), name("_t"));
    document
        .watch
        .iter()
        .flat_map(|w| {
            let row_sql = format!(
                "CREATE TRIGGER {} AFTER INSERT OR UPDATE OR DELETE ON {} \
                 FOR EACH ROW EXECUTE FUNCTION pgsync_notify({}, {})",
                quote_ident(&row),
                quote_table(&w.table),
                quote_literal(&w.column),
                quote_literal(&mapping.pg_channel())
            );
            let truncate_sql = truncate_sql(&truncate, &w.table, mapping);
            [
                Trigger { name: row.clone(), table: w.table.clone(), function: "pgsync_notify", sql: row_sql },
                Trigger {
                    name: truncate.clone(),
                    table: w.table.clone(),
                    function: "pgsync_notify_truncate",
                    sql: truncate_sql,
                },
            ]
        })
        .collect()
}

/// A function's body, as `pg_proc.prosrc` holds it.
fn body_of(function_sql: &str) -> &str {
    function_sql.split("$pgsync$").nth(1).unwrap_or_default()
}

/// Installs what is missing: the functions (unless the same ones are there) and
/// the table's triggers (`key_types`: the key columns' types, which choose the
/// row function). Nothing is replaced that is already right, so a user without
/// the rights to create them can have the owner run the README's SQL once.
pub fn install(client: &mut Client, mapping: &Mapping, key_types: &[KeyType]) -> Result<(), Error> {
    ensure_function(client, "pgsync_notify_truncate", TRUNCATE_FUNCTION_SQL)?;
    if let Some(document) = &mapping.document {
        ensure_function(client, "pgsync_notify", FUNCTION_SQL)?;
        for t in watch_triggers(mapping, document) {
            ensure_trigger(client, &t.table, &t.name, t.function, &t.sql)?;
        }
        return Ok(());
    }
    let (function, function_sql) = row_function(key_types);
    ensure_function(client, function, function_sql)?;
    ensure_trigger(client, &mapping.table, "pgsync_notify", function, &trigger_sql(mapping, key_types))?;
    let truncate = truncate_trigger_sql(mapping);
    ensure_trigger(client, &mapping.table, "pgsync_truncate", "pgsync_notify_truncate", &truncate)
}

/// Creates (or replaces) the function `name` unless its body is already `sql`'s.
fn ensure_function(client: &mut Client, name: &str, sql: &str) -> Result<(), Error> {
    let current = client.query_typed_opt(
        "SELECT prosrc FROM pg_proc WHERE proname = $1 AND pronargs = 0 LIMIT 1",
        &[(&name, Type::TEXT)],
    )?;
    let current: Option<String> = current.map(|row| row.try_get(0)).transpose()?;
    if current.as_deref() != Some(body_of(sql)) {
        client.batch_execute(sql)?;
    }
    Ok(())
}

/// Runs `sql` (a CREATE TRIGGER calling `function`) unless `table` already has
/// a trigger `name` calling it. One calling another function (installed before
/// the key's types chose [`TEXT_FUNCTION_SQL`]) is replaced in one transaction,
/// so no change goes unannounced meanwhile.
fn ensure_trigger(client: &mut Client, table: &str, name: &str, function: &str, sql: &str) -> Result<(), Error> {
    let current = client.query_typed_opt(
        "SELECT tgfoid::regproc::text FROM pg_trigger WHERE tgname = $1 AND tgrelid = to_regclass($2)",
        &[(&name, Type::TEXT), (&quote_table(table), Type::TEXT)],
    )?;
    // `regproc` prints the schema only when it is not on the search path.
    match current.map(|row| row.try_get::<_, String>(0)).transpose()? {
        None => client.batch_execute(sql)?,
        Some(current) if current.rsplit('.').next() != Some(function) => {
            client.batch_execute(&format!("DROP TRIGGER {} ON {}; {sql}", quote_ident(name), quote_table(table)))?
        }
        Some(_) => {}
    }
    Ok(())
}

/// Whether every trigger [`install`] would create for `mapping` is there: only
/// then does a change to its tables announce itself.
pub fn installed(client: &mut Client, mapping: &Mapping) -> Result<bool, Error> {
    let wanted: Vec<(String, String)> = match &mapping.document {
        Some(document) => watch_triggers(mapping, document).into_iter().map(|t| (t.table, t.name)).collect(),
        None => ["pgsync_notify", "pgsync_truncate"].map(|name| (mapping.table.clone(), name.to_string())).to_vec(),
    };
    for (table, name) in wanted {
        if !trigger_exists(client, &table, &name)? {
            return Ok(false);
        }
    }
    Ok(true)
}

fn trigger_exists(client: &mut Client, table: &str, name: &str) -> Result<bool, Error> {
    let exists = client.query_typed_opt(
        "SELECT 1 FROM pg_trigger WHERE tgname = $1 AND tgrelid = to_regclass($2)",
        &[(&name, Type::TEXT), (&quote_table(table), Type::TEXT)],
    )?;
    Ok(exists.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_shows_the_sql_the_module_installs() {
        let readme = include_str!("../../README.md");
        assert!(readme.contains(FUNCTION_SQL), "README's trigger function differs from FUNCTION_SQL");
        assert!(readme.contains(TEXT_FUNCTION_SQL), "README's text trigger function differs from TEXT_FUNCTION_SQL");
        assert!(
            readme.contains(TRUNCATE_FUNCTION_SQL),
            "README's TRUNCATE trigger function differs from TRUNCATE_FUNCTION_SQL"
        );
        assert!(body_of(FUNCTION_SQL).contains("pg_notify"));
        assert!(body_of(TEXT_FUNCTION_SQL).contains("::text"));
        assert!(body_of(TRUNCATE_FUNCTION_SQL).contains("pg_notify"));
    }

    #[test]
    fn composite_keys_and_watched_tables_get_their_trigger_arguments() {
        use crate::model::mapping::Mappings;
        let m = Mappings::parse(
            r#"{"mappings": [
            {"name": "bc", "table": "bc", "key": "bc_{brand_id}_{category_id}", "mode": "write-behind"},
            {"name": "customers", "mode": "document", "key_prefix": "customer:", "query": "SELECT 1, 2",
             "ids_query": "SELECT 1", "store": "json",
             "watch": [{"table": "customer", "column": "id_customer"}, {"table": "address", "column": "id_customer"}]}]}"#,
        )
        .unwrap();
        let bc = &m.all()[0];
        let types = |names: &[&str]| -> Vec<KeyType> {
            names.iter().map(|t| KeyType::from_catalog(t, None).unwrap()).collect()
        };
        let sql = trigger_sql(bc, &types(&["text", "integer"]));
        assert!(sql.ends_with("EXECUTE FUNCTION pgsync_notify('brand_id', 'pgsync_bc', '_', 'category_id')"), "{sql}");
        // JSON spells a timestamp 2024-01-01T10:00:00: its text is read by ::text.
        let sql = trigger_sql(bc, &types(&["text", "timestamp(3) without time zone"]));
        assert!(
            sql.ends_with("EXECUTE FUNCTION pgsync_notify_text('brand_id', 'pgsync_bc', '_', 'category_id')"),
            "{sql}"
        );
        assert!(!types(&["character(4)"])[0].json_spells_text(), "padded");
        let customers = &m.all()[1];
        let triggers = watch_triggers(customers, customers.document.as_ref().unwrap());
        let names: Vec<(&str, &str)> = triggers.iter().map(|t| (t.name.as_str(), t.table.as_str())).collect();
        assert_eq!(
            names,
            [
                ("pgsync_customers", "customer"),
                ("pgsync_customers_t", "customer"),
                ("pgsync_customers", "address"),
                ("pgsync_customers_t", "address")
            ]
        );
        assert!(triggers[2]
            .sql
            .contains("ON \"address\" FOR EACH ROW EXECUTE FUNCTION pgsync_notify('id_customer', 'pgsync_customers')"));
        assert_eq!(customers.table, "customer");
    }
}
