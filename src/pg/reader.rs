//! Reading mapped rows out of Postgres for the listener and for `SYNC.RELOAD`:
//! by key, or the whole table through a cursor so it never sits in memory at once.

use super::error::Error;
use super::schema::TableSchema;
use super::sql;
use crate::model::json_row::MemberKind;
use crate::model::key_text::KeyType;
use crate::model::mapping::{Mapping, ValueType};
use crate::model::row_id::{check_id, IdError, KeyShape};
use postgres::types::{ToSql, Type};
use postgres::{Client, Row, Transaction};

/// A row as the hash it becomes: field → value (`None` = NULL, field absent).
/// For a `"type": "json"` mapping each value is its member's JSON text
/// (`model::json_row`).
#[derive(Debug, Clone, PartialEq)]
pub struct PgRow {
    /// The row's id: its key columns as the key spells them.
    pub id: String,
    /// Mapped fields in column order.
    pub fields: Vec<(String, Option<String>)>,
}

/// Why an id names no row the way a write to its key must (the key rules' reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRefused(pub IdError);

impl std::fmt::Display for KeyRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for KeyRefused {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// How a mapping's rows are read.
pub struct RowShape {
    key: KeyShape,
    key_types: Vec<KeyType>,
    fields: Vec<String>,
    /// For a `"type": "json"` mapping, how each field's column becomes a member.
    members: Option<Vec<MemberKind>>,
    select_all: String,
    select_by_keys: String,
}

impl RowShape {
    /// The shape of a mapping's table: its mapped columns, under their field names.
    pub fn new(mapping: &Mapping, schema: &TableSchema) -> RowShape {
        let pairs = mapping.field_columns(schema.columns.keys());
        let columns: Vec<&str> = pairs.iter().map(|(_, c)| c.as_str()).collect();
        let members =
            (mapping.value_type == ValueType::Json).then(|| columns.iter().map(|c| schema.member_kind(c)).collect());
        RowShape {
            members,
            key: mapping.key.clone(),
            key_types: schema.key_types.iter().map(KeyType::printed_by_postgres).collect(),
            select_all: sql::select_rows(&mapping.table, &schema.keys, &columns, false),
            select_by_keys: sql::select_rows(&mapping.table, &schema.keys, &columns, true),
            fields: pairs.into_iter().map(|(f, _)| f).collect(),
        }
    }

    /// Whether `id` (announced by a trigger, or a key Redis holds) names a row
    /// the way a write to its key must: `Err` says why not. Every enum label
    /// passes: Postgres printed it (a label added since the schema was read is
    /// accepted by writes once the schema is read again).
    pub fn check(&self, id: &str) -> Result<(), KeyRefused> {
        check_id(id.as_bytes()).and_then(|id| self.key.check(id, &self.key_types)).map(|_| ()).map_err(KeyRefused)
    }

    /// The row as a hash, or (inner `Err`) why its key cannot be spelled: a
    /// write to that key would be refused (a key column's value could be read
    /// back as another row's, or is not its type's canonical text).
    fn convert(&self, row: &Row) -> Result<Result<PgRow, KeyRefused>, Error> {
        let k = self.key.columns().len();
        let key = (0..k).map(|i| row.try_get(i)).collect::<Result<Vec<String>, _>>()?;
        let id = match self.key.spell(&key.iter().map(String::as_str).collect::<Vec<_>>(), &self.key_types) {
            Ok(id) => id,
            Err(why) => return Ok(Err(KeyRefused(why))),
        };
        let mut fields = Vec::with_capacity(self.fields.len());
        for (i, field) in self.fields.iter().enumerate() {
            let value = row.try_get::<_, Option<String>>(k + i)?;
            let value = match self.members.as_ref().and_then(|m| m.get(i)) {
                Some(kind) => value.map(|v| kind.member(&v)),
                None => value,
            };
            fields.push((field.clone(), value));
        }
        Ok(Ok(PgRow { id, fields }))
    }

    /// The current rows for `ids`; ids without a row, or that are no row's
    /// key ([`RowShape::check`]), are absent from the result.
    pub fn fetch(&self, client: &mut Client, ids: &[String]) -> Result<Vec<PgRow>, Error> {
        let split: Vec<Vec<&str>> = ids
            .iter()
            .filter_map(|id| check_id(id.as_bytes()).and_then(|id| self.key.check(id, &self.key_types)).ok())
            .collect();
        let params: Vec<Vec<&str>> =
            (0..self.key.columns().len()).map(|i| split.iter().map(|values| values[i]).collect()).collect();
        let params: Vec<(&(dyn ToSql + Sync), Type)> =
            params.iter().map(|p| (p as &(dyn ToSql + Sync), Type::TEXT_ARRAY)).collect();
        let rows = client.query_typed(&self.select_by_keys, &params)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            out.extend(self.convert(row)?.ok());
        }
        Ok(out)
    }

    /// Streams the whole table in chunks of `chunk` rows through a cursor, handing
    /// each chunk to `each`. Returns the number of rows read; the rows whose key
    /// cannot be spelled are left out and counted in `refused`, with the first reason.
    pub fn stream(
        &self,
        client: &mut Client,
        chunk: i32,
        refused: &mut Refused,
        each: impl FnMut(Vec<PgRow>) -> Result<(), Error>,
    ) -> Result<u64, Error> {
        self.stream_at(client, None, chunk, refused, each)
    }

    /// [`RowShape::stream`], reading in the exported `snapshot` when given (the
    /// one a replication slot was created with, so the stream then carries on
    /// exactly after what was read).
    pub fn stream_at(
        &self,
        client: &mut Client,
        snapshot: Option<&str>,
        chunk: i32,
        refused: &mut Refused,
        mut each: impl FnMut(Vec<PgRow>) -> Result<(), Error>,
    ) -> Result<u64, Error> {
        through_cursor_at(client, snapshot, &self.select_all, chunk, |_, rows| {
            let mut good = Vec::with_capacity(rows.len());
            for row in &rows {
                match self.convert(row)? {
                    Ok(row) => good.push(row),
                    Err(KeyRefused(why)) => refused.add(why.to_string()),
                }
            }
            each(good)
        })
    }
}

/// Runs `sql` through a cursor in a transaction of its own, handing `each` the
/// transaction (to read more on the same snapshot) and `chunk` rows at a time,
/// so a whole table never sits in memory at once. Returns the number of rows.
pub fn through_cursor(
    client: &mut Client,
    sql: &str,
    chunk: i32,
    each: impl FnMut(&mut Transaction<'_>, Vec<Row>) -> Result<(), Error>,
) -> Result<u64, Error> {
    through_cursor_at(client, None, sql, chunk, each)
}

/// [`through_cursor`] in the exported `snapshot`, when given.
fn through_cursor_at(
    client: &mut Client,
    snapshot: Option<&str>,
    sql: &str,
    chunk: i32,
    mut each: impl FnMut(&mut Transaction<'_>, Vec<Row>) -> Result<(), Error>,
) -> Result<u64, Error> {
    let mut tx = match snapshot {
        None => client.transaction()?,
        Some(name) => {
            let mut tx =
                client.build_transaction().isolation_level(postgres::IsolationLevel::RepeatableRead).start()?;
            tx.batch_execute(&format!("SET TRANSACTION SNAPSHOT {}", sql::quote_literal(name)))?;
            tx
        }
    };
    let statement = tx.prepare(sql)?;
    let portal = tx.bind(&statement, &[])?;
    let mut total = 0u64;
    loop {
        let rows = tx.query_portal(&portal, chunk)?;
        if rows.is_empty() {
            break;
        }
        total += rows.len() as u64;
        each(&mut tx, rows)?;
    }
    tx.commit()?;
    Ok(total)
}

/// Rows a read left out because their key cannot be spelled: how many, and the
/// first reason (enough for the log without a line per row).
#[derive(Debug, Default)]
pub struct Refused {
    /// Rows left out.
    pub count: u64,
    /// Why the first one was.
    pub first: Option<String>,
}

impl Refused {
    /// Counts one more row left out.
    pub fn add(&mut self, why: String) {
        self.count += 1;
        self.first.get_or_insert(why);
    }
}
