//! The Postgres side of document mappings: the user's `query` (root ids in,
//! `(id, document)` rows out) and `ids_query` (every root id), wrapped so both
//! return text, run once per batch of ids, never once per id; and the check, at
//! load, that the watched tables and columns exist and both queries parse.

use super::error::{Error, ErrorKind};
use super::reader::through_cursor;
use super::schema::TableSchema;
use super::sql::quote_table;
use crate::model::mapping::{Document, Mapping};
use postgres::types::{ToSql, Type};
use postgres::GenericClient;

/// The user's `query` as this module runs it: `$1` is a `text[]` of root ids.
fn by_ids_sql(document: &Document) -> String {
    format!("SELECT (d.id)::text, (d.doc)::text FROM ({}) AS d (id, doc)", document.query)
}

/// The user's `ids_query` as this module runs it.
fn all_ids_sql(document: &Document) -> String {
    format!("SELECT (r.id)::text FROM ({}) AS r (id)", document.ids_query)
}

/// The documents of `ids`, as `(id, JSON text)`; an id without a document (its
/// root is gone, or the query returned NULL for it) is absent.
pub fn fetch(
    client: &mut impl GenericClient,
    document: &Document,
    ids: &[String],
) -> Result<Vec<(String, String)>, Error> {
    let rows = client.query_typed(&by_ids_sql(document), &[(&ids as &(dyn ToSql + Sync), Type::TEXT_ARRAY)])?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let (id, doc): (Option<String>, Option<String>) = (row.try_get(0)?, row.try_get(1)?);
        if let (Some(id), Some(doc)) = (id, doc) {
            out.push((id, doc));
        }
    }
    Ok(out)
}

/// Streams every root id through a cursor, `chunk` at a time, handing each chunk
/// and the transaction (to read its documents on the same snapshot) to `each`.
/// Returns the number of ids.
pub fn stream_ids(
    client: &mut postgres::Client,
    document: &Document,
    chunk: i32,
    mut each: impl FnMut(&mut postgres::Transaction<'_>, Vec<String>) -> Result<(), Error>,
) -> Result<u64, Error> {
    through_cursor(client, &all_ids_sql(document), chunk, |tx, rows| {
        let ids = rows.iter().map(|r| r.try_get::<_, Option<String>>(0)).collect::<Result<Vec<_>, _>>()?;
        each(tx, ids.into_iter().flatten().collect())
    })
}

/// Checks a document mapping against the catalog: each watched table has its
/// column, and both queries parse (so a typo is a load-time error, shown in
/// `SYNC.STATUS`, not a failed rebuild). A document has no key columns.
pub fn check(client: &mut impl GenericClient, mapping: &Mapping, document: &Document) -> Result<TableSchema, Error> {
    let schema_error =
        |message: String| Error::new(ErrorKind::Schema, format!("mapping \"{}\": {message}", mapping.name));
    for watch in &document.watch {
        let found = client.query_typed_opt(
            "SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass($1) AND attname = $2 AND attnum > 0 AND NOT attisdropped",
            &[(&quote_table(&watch.table), Type::TEXT), (&watch.column, Type::TEXT)],
        )?;
        if found.is_none() {
            return Err(schema_error(format!("watched table \"{}\" has no column \"{}\"", watch.table, watch.column)));
        }
    }
    for (option, sql) in [("query", by_ids_sql(document)), ("ids_query", all_ids_sql(document))] {
        if let Err(e) = client.prepare_typed(&sql, &[Type::TEXT_ARRAY]) {
            let e = Error::from(e);
            return Err(match e.kind {
                ErrorKind::Unavailable => e,
                _ => schema_error(format!("\"{option}\" does not run: {}", e.message)),
            });
        }
    }
    let read_at = std::time::Instant::now();
    Ok(TableSchema { keys: Vec::new(), key_types: Vec::new(), columns: Default::default(), read_at })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::mapping::{Store, Watch};

    #[test]
    fn the_users_queries_are_wrapped_to_return_text() {
        let d = Document {
            query:
                "SELECT id_customer, customer_document(id_customer) FROM customer WHERE id_customer = ANY($1::int[])"
                    .into(),
            ids_query: "SELECT id_customer FROM customer".into(),
            watch: vec![Watch { table: "customer".into(), column: "id_customer".into() }],
            store: Store::Json,
        };
        assert_eq!(
            by_ids_sql(&d),
            "SELECT (d.id)::text, (d.doc)::text FROM (SELECT id_customer, customer_document(id_customer) FROM customer \
             WHERE id_customer = ANY($1::int[])) AS d (id, doc)"
        );
        assert_eq!(all_ids_sql(&d), "SELECT (r.id)::text FROM (SELECT id_customer FROM customer) AS r (id)");
    }
}
