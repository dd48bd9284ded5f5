//! Reading mapped rows out of Postgres for the listener and for `SYNC.RELOAD`:
//! by key, or the whole table through a cursor so it never sits in memory at once.

use super::error::Error;
use super::schema::TableSchema;
use super::sql;
use crate::model::mapping::Mapping;
use postgres::types::{ToSql, Type};
use postgres::{Client, Row};

/// A row as the hash it becomes: field → value (`None` = NULL, field absent).
#[derive(Debug, Clone, PartialEq)]
pub struct PgRow {
    /// Primary key as text.
    pub id: String,
    /// Mapped fields in column order.
    pub fields: Vec<(String, Option<String>)>,
}

/// How a mapping's rows are read.
pub struct RowShape {
    fields: Vec<String>,
    select_all: String,
    select_by_keys: String,
}

impl RowShape {
    /// The shape of a mapping's table: its mapped columns, under their field names.
    pub fn new(mapping: &Mapping, schema: &TableSchema) -> RowShape {
        let pairs = mapping.field_columns(schema.columns.keys());
        let columns: Vec<&str> = pairs.iter().map(|(_, c)| c.as_str()).collect();
        RowShape {
            select_all: sql::select_rows(&mapping.table, &schema.pk, &columns, false),
            select_by_keys: sql::select_rows(&mapping.table, &schema.pk, &columns, true),
            fields: pairs.into_iter().map(|(f, _)| f).collect(),
        }
    }

    fn convert(&self, row: &Row) -> Result<PgRow, Error> {
        let id: String = row.try_get(0)?;
        let mut fields = Vec::with_capacity(self.fields.len());
        for (i, field) in self.fields.iter().enumerate() {
            fields.push((field.clone(), row.try_get::<_, Option<String>>(i + 1)?));
        }
        Ok(PgRow { id, fields })
    }

    /// The current rows for `ids`; ids without a row are absent from the result.
    pub fn fetch(&self, client: &mut Client, ids: &[String]) -> Result<Vec<PgRow>, Error> {
        let rows = client.query_typed(&self.select_by_keys, &[(&ids as &(dyn ToSql + Sync), Type::TEXT_ARRAY)])?;
        rows.iter().map(|r| self.convert(r)).collect()
    }

    /// Streams the whole table in chunks of `chunk` rows through a cursor, handing
    /// each chunk to `each`. Returns the number of rows.
    pub fn stream(
        &self,
        client: &mut Client,
        chunk: i32,
        mut each: impl FnMut(Vec<PgRow>) -> Result<(), Error>,
    ) -> Result<u64, Error> {
        let mut tx = client.transaction()?;
        let statement = tx.prepare(&self.select_all)?;
        let portal = tx.bind(&statement, &[])?;
        let mut total = 0u64;
        loop {
            let rows = tx.query_portal(&portal, chunk)?;
            if rows.is_empty() {
                break;
            }
            total += rows.len() as u64;
            each(rows.iter().map(|r| self.convert(r)).collect::<Result<_, _>>()?)?;
        }
        tx.commit()?;
        Ok(total)
    }
}
