//! Turns a batch of coalesced row changes into as few multi-row statements as
//! possible, runs them, and when Postgres rejects one row, isolates it: the batch is
//! replayed row by row inside savepoints so every other row still commits.

use super::commit_marker::{self, Proof};
use super::error::{Error, ErrorKind};
use super::prepared::Prepared;
use super::schema::TableSchema;
use super::sql::{self, TypedColumn, Written, WrittenColumn};
use crate::model::change::{Change, FieldChange, RowOp};
use crate::model::json_path_set;
use crate::model::mapping::Mapping;
use crate::model::row_id::IdError;
use postgres::types::ToSql;
use postgres::GenericClient;
use std::collections::{BTreeMap, HashMap};

/// What a write does to one column.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnWrite {
    /// Set to this text value (`None` = NULL).
    Set(Option<String>),
    /// Add this delta (text) to the column's value.
    Add(String),
    /// Set paths inside the column's `json`/`jsonb` value: the sets as one
    /// JSON array (`json_path_set::to_json`).
    Paths(String),
}

impl ColumnWrite {
    /// How the statement writes it.
    fn written(&self) -> Written {
        match self {
            ColumnWrite::Set(_) => Written::Set,
            ColumnWrite::Add(_) => Written::Add,
            ColumnWrite::Paths(_) => Written::Paths,
        }
    }

    /// Its bound value (text; NULL for a NULL column).
    fn param(&self) -> Option<String> {
        match self {
            ColumnWrite::Set(v) => v.clone(),
            ColumnWrite::Add(delta) => Some(delta.clone()),
            ColumnWrite::Paths(sets) => Some(sets.clone()),
        }
    }
}

/// A row change translated to columns, ready for SQL.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedRow {
    /// Index of the mapping (and table) the row belongs to.
    pub mapping: usize,
    /// What to do with the row.
    pub op: RowOp,
    /// The row's id: the key's text after its prefix.
    pub id: String,
    /// The key columns' values, as text, in the key's order.
    pub key: Vec<String>,
    /// Column → what to write. Only mapped, existing columns.
    pub values: BTreeMap<String, ColumnWrite>,
}

/// New values of incremented columns, as Postgres returned them: column → text.
pub type Returned = BTreeMap<String, Option<String>>;

/// How one row ended: committed (with the columns Postgres computed), or
/// rejected with Postgres's message.
pub type RowOutcome = Result<Returned, Error>;

/// Column types an increment can add to.
const NUMERIC_TYPES: &[&str] = &["smallint", "integer", "bigint", "numeric", "real", "double precision"];

/// Column types a path can be set inside.
const JSON_TYPES: &[&str] = &["json", "jsonb"];

/// Why a row cannot be written, whatever Postgres would say: it is rejected
/// (dead-lettered) before any statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrepareError {
    /// The id is not the key columns' canonical text (the key rules' reason).
    Key(IdError),
    /// A field's value is not UTF-8.
    NotUtf8 {
        /// The field.
        field: String,
        /// Its column.
        column: String,
    },
    /// A field was incremented whose column is not a number.
    NotNumeric {
        /// The field.
        field: String,
        /// Its column.
        column: String,
        /// The column's SQL type.
        sql_type: String,
    },
    /// Paths were set inside a field whose column is not `json`/`jsonb`.
    NotJson {
        /// The field.
        field: String,
        /// Its column.
        column: String,
        /// The column's SQL type.
        sql_type: String,
    },
    /// The row's values are over `pgsync.max-row-bytes`.
    TooLarge {
        /// Their size.
        bytes: usize,
        /// The setting.
        max: usize,
    },
}

impl std::fmt::Display for PrepareError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PrepareError::Key(why) => why.fmt(f),
            PrepareError::NotUtf8 { field, column } => write!(
                f,
                "field \"{field}\" holds bytes that are not valid UTF-8 and cannot be stored in column \"{column}\""
            ),
            PrepareError::NotNumeric { field, column, sql_type } => {
                write!(f, "field \"{field}\" was incremented, but column \"{column}\" is {sql_type}, not a number")
            }
            PrepareError::NotJson { field, column, sql_type } => write!(
                f,
                "a path was set inside field \"{field}\", but column \"{column}\" is {sql_type}, not json or jsonb"
            ),
            PrepareError::TooLarge { bytes, max } => {
                write!(f, "the row's values are {bytes} bytes, over pgsync.max-row-bytes ({max}); not sent to Postgres")
            }
        }
    }
}

impl std::error::Error for PrepareError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PrepareError::Key(why) => Some(why),
            _ => None,
        }
    }
}

/// Translates a change into columns. Unmapped fields are dropped here, so they never
/// reach SQL. An id that is not the key column's canonical text, a value that is not
/// UTF-8, or an increment of a non-numeric column rejects the row. A removed field
/// makes its column NULL.
pub fn prepare(
    mapping_index: usize,
    mapping: &Mapping,
    schema: &TableSchema,
    id: &str,
    change: &Change,
) -> Result<PreparedRow, PrepareError> {
    let key = mapping.key.check(id, &schema.key_types).map_err(PrepareError::Key)?;
    let key = key.into_iter().map(str::to_string).collect();
    let mut values = BTreeMap::new();
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
            let write = match value {
                FieldChange::Set(bytes) => ColumnWrite::Set(Some(
                    String::from_utf8(bytes.clone())
                        .map_err(|_| PrepareError::NotUtf8 { field: field.to_string(), column: column.to_string() })?,
                )),
                FieldChange::Remove => ColumnWrite::Set(None),
                FieldChange::Add { delta, .. } if NUMERIC_TYPES.contains(&info.typed.sql_type.as_str()) => {
                    ColumnWrite::Add(delta.to_text())
                }
                FieldChange::Add { .. } => {
                    return Err(PrepareError::NotNumeric {
                        field: field.to_string(),
                        column: column.to_string(),
                        sql_type: info.typed.sql_type.clone(),
                    })
                }
                FieldChange::Paths(sets) if JSON_TYPES.contains(&info.typed.sql_type.as_str()) => {
                    ColumnWrite::Paths(json_path_set::to_json(sets))
                }
                FieldChange::Paths(_) => {
                    return Err(PrepareError::NotJson {
                        field: field.to_string(),
                        column: column.to_string(),
                        sql_type: info.typed.sql_type.clone(),
                    })
                }
            };
            values.insert(column.to_string(), write);
        }
    }
    Ok(PreparedRow { mapping: mapping_index, op: change.op, id: id.to_string(), key, values })
}

/// Whether a prepared row writes nothing: an upsert of unmapped fields only.
pub fn writes_nothing(row: &PreparedRow) -> bool {
    row.op == RowOp::Upsert && row.values.is_empty()
}

/// One statement of a plan. `rows` are the positions of the batch rows it covers,
/// for statements that return incremented columns.
#[derive(Debug)]
struct Statement {
    sql: String,
    params: Vec<Vec<Option<String>>>,
    /// Names of the columns the statement returns after the key (increments).
    returning: Vec<String>,
    /// Batch positions of the rows, by key values, for matching returned rows.
    rows: HashMap<Vec<String>, usize>,
    /// Number of key columns the returned rows start with.
    key_len: usize,
}

/// The tables of the batch: schema by mapping index.
pub type Tables<'a> = dyn Fn(usize) -> Option<(&'a Mapping, &'a TableSchema)> + 'a;

/// Upserts group rows by table, by whether they may insert, and by which columns
/// they write and how.
type UpsertGroup<'r> = (usize, bool, Vec<(&'r str, Written)>);

/// Whether a row only removes fields: HDEL on a key Redis may not hold must
/// not bring a row into being, so such a write updates an existing row only.
fn only_removals(row: &PreparedRow) -> bool {
    row.values.values().all(|w| *w == ColumnWrite::Set(None))
}

/// Builds the statements for `rows` (`(position, row)`): one DELETE per table, then
/// one upsert per table and column shape, so deletes-then-writes (replace) land in
/// order.
fn plan(tables: &Tables<'_>, rows: &[(usize, &PreparedRow)]) -> Result<Vec<Statement>, Error> {
    let mut deletes: BTreeMap<usize, Vec<&PreparedRow>> = BTreeMap::new();
    let mut upserts: BTreeMap<UpsertGroup<'_>, Vec<(usize, &PreparedRow)>> = BTreeMap::new();
    for &(pos, row) in rows {
        if row.op != RowOp::Upsert {
            deletes.entry(row.mapping).or_default().push(row);
        }
        // A replace that only removes fields leaves no key in Redis: a delete.
        let inserts = !only_removals(row);
        if row.op == RowOp::Upsert && !writes_nothing(row) || row.op == RowOp::Replace && inserts {
            let shape = row.values.iter().map(|(c, w)| (c.as_str(), w.written())).collect();
            upserts.entry((row.mapping, inserts, shape)).or_default().push((pos, row));
        }
    }
    let table = |i: usize| tables(i).ok_or_else(|| Error::new(ErrorKind::Schema, "table schema not loaded yet"));
    let mut out = Vec::new();
    for (mapping, rows) in deletes {
        let (m, schema) = table(mapping)?;
        let sql = sql::delete(&m.table, &schema.keys);
        let params = key_params(schema, rows.iter().copied());
        out.push(Statement { sql, params, returning: Vec::new(), rows: HashMap::new(), key_len: schema.keys.len() });
    }
    for ((mapping, inserts, shape), group) in upserts {
        let (m, schema) = table(mapping)?;
        let typed: Vec<(&TypedColumn, &Written)> =
            shape.iter().filter_map(|(c, how)| schema.column(c).map(|t| (t, how))).collect();
        let columns: Vec<WrittenColumn<'_>> = typed.iter().map(|(column, how)| WrittenColumn { column, how }).collect();
        let mut params = key_params(schema, group.iter().map(|(_, r)| *r));
        for (col, _) in &typed {
            params.push(group.iter().map(|(_, r)| r.values.get(&col.name).and_then(ColumnWrite::param)).collect());
        }
        let returning: Vec<String> = columns.iter().filter(|c| c.returned()).map(|c| c.column.name.clone()).collect();
        let rows = if returning.is_empty() {
            HashMap::new()
        } else {
            group.iter().map(|(p, r)| (r.key.clone(), *p)).collect()
        };
        let sql = if inserts {
            sql::upsert(&m.table, &schema.keys, &columns)
        } else {
            sql::update(&m.table, &schema.keys, &columns)
        };
        out.push(Statement { sql, params, returning, rows, key_len: schema.keys.len() });
    }
    Ok(out)
}

/// One `text[]` parameter per key column, holding that column's value of each row.
fn key_params<'r>(
    schema: &TableSchema,
    rows: impl Iterator<Item = &'r PreparedRow> + Clone,
) -> Vec<Vec<Option<String>>> {
    (0..schema.keys.len()).map(|i| rows.clone().map(|r| r.key.get(i).cloned()).collect()).collect()
}

/// Runs the statements, recording returned columns into `returned` by position.
fn run(
    client: &mut impl GenericClient,
    prepared: &mut Prepared,
    statements: &[Statement],
    returned: &mut [Returned],
) -> Result<(), Error> {
    for s in statements {
        let params: Vec<&(dyn ToSql + Sync)> = s.params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        let statement = prepared.get(client, &s.sql, params.len())?;
        if s.returning.is_empty() {
            client.execute(&statement, &params)?;
            continue;
        }
        for row in client.query(&statement, &params)? {
            let key = (0..s.key_len).map(|i| row.try_get(i)).collect::<Result<Vec<String>, _>>()?;
            let Some(&pos) = s.rows.get(&key) else { continue };
            for (i, column) in s.returning.iter().enumerate() {
                returned[pos].insert(column.clone(), row.try_get::<_, Option<String>>(s.key_len + i)?);
            }
        }
    }
    Ok(())
}

/// Writes a batch. `Err` means nothing is known to be committed and the whole batch
/// should be retried later; `Ok` holds each row's outcome (rejections with their
/// Postgres message), everything else committed. With a `proof` (a batch that
/// increments), a commit whose answer is lost is resolved through its marker.
pub fn write(
    client: &mut impl GenericClient,
    prepared: &mut Prepared,
    tables: &Tables<'_>,
    rows: &[PreparedRow],
    mut proof: Option<Proof<'_>>,
) -> Result<Vec<RowOutcome>, Error> {
    let all: Vec<(usize, &PreparedRow)> = rows.iter().enumerate().collect();
    let statements = plan(tables, &all)?;
    let mut returned = vec![Returned::new(); rows.len()];
    let marked = super::replication::MARK_OWN_WRITES.load(std::sync::atomic::Ordering::Relaxed);
    let attempt = if statements.len() <= 1 && proof.is_none() && !marked {
        // One statement is atomic on its own: save the BEGIN/COMMIT round trips.
        run(client, prepared, &statements, &mut returned)
    } else {
        client.transaction().map_err(Error::from).and_then(|mut tx| {
            mark(&mut tx, marked)?;
            run(&mut tx, prepared, &statements, &mut returned)?;
            commit(tx, &mut proof)
        })
    };
    if attempt.is_err() {
        // A statement may have failed because the table changed under it.
        prepared.clear();
    }
    match attempt {
        Ok(()) => Ok(returned.into_iter().map(Ok).collect()),
        Err(e) if e.is_retryable() => Err(e),
        Err(_) => write_row_by_row(client, prepared, tables, rows, proof),
    }
}

/// Commits, with the batch's marker when it has one; a lost answer to COMMIT is
/// then resolved by asking whether the marker is there.
fn commit(mut tx: postgres::Transaction<'_>, proof: &mut Option<Proof<'_>>) -> Result<(), Error> {
    if let Some(proof) = proof {
        commit_marker::record(&mut tx, &proof.marker)?;
    }
    let failure = match tx.commit() {
        Ok(()) => return Ok(()),
        Err(e) => Error::from(e),
    };
    match proof {
        Some(proof) if failure.is_retryable() => match (proof.resolve)(proof.marker.id)? {
            true => Ok(()),
            false => Err(failure),
        },
        _ => Err(failure),
    }
}

/// Marks the transaction as the module's own when the logical stream follows
/// its tables, so the stream does not bring its rows back.
fn mark(tx: &mut postgres::Transaction<'_>, marked: bool) -> Result<(), Error> {
    if marked {
        tx.batch_execute(super::replication::MARK_SQL)?;
    }
    Ok(())
}

fn write_row_by_row(
    client: &mut impl GenericClient,
    prepared: &mut Prepared,
    tables: &Tables<'_>,
    rows: &[PreparedRow],
    mut proof: Option<Proof<'_>>,
) -> Result<Vec<RowOutcome>, Error> {
    let mut tx = client.transaction()?;
    mark(&mut tx, super::replication::MARK_OWN_WRITES.load(std::sync::atomic::Ordering::Relaxed))?;
    // A deferred constraint would only fail at COMMIT, for the whole batch, again
    // and again: check every constraint at its row's statement instead.
    tx.batch_execute("SET CONSTRAINTS ALL IMMEDIATE")?;
    let mut outcomes = Vec::with_capacity(rows.len());
    for row in rows {
        let statements = plan(tables, &[(0, row)])?;
        let mut returned = vec![Returned::new()];
        let mut savepoint = tx.savepoint("pgsync_row")?;
        match run(&mut savepoint, prepared, &statements, &mut returned) {
            Ok(()) => {
                savepoint.commit()?;
                outcomes.push(Ok(returned.pop().unwrap_or_default()));
            }
            Err(e) if e.is_retryable() => return Err(e),
            Err(e) => {
                savepoint.rollback()?;
                outcomes.push(Err(e));
            }
        }
    }
    commit(tx, &mut proof)?;
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::change::Delta;
    use crate::model::mapping::Mappings;

    fn schema() -> TableSchema {
        let col = |n: &str| (n.to_string(), crate::pg::schema::ColumnInfo::plain(n, "text"));
        TableSchema {
            keys: vec![TypedColumn { name: "id".into(), sql_type: "integer".into() }],
            key_types: vec![crate::model::key_text::KeyType::from_catalog("integer", None).unwrap()],
            read_at: std::time::Instant::now(),
            columns: [col("id"), col("password_hash"), col("score")].into_iter().collect(),
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
        let fields = fields.iter().map(|(f, v)| (f.to_vec(), FieldChange::Set(v.to_vec()))).collect();
        Change::new(crate::model::change::Write { op: RowOp::Upsert, fields, acks: vec![] }, 1)
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
        assert_eq!(err, PrepareError::NotUtf8 { field: "score".into(), column: "score".into() });
        assert!(err.to_string().contains("\"score\""), "{err}");
    }

    #[test]
    fn a_key_that_is_not_canonical_is_rejected() {
        let m = users();
        let err = prepare(0, &m.all()[0], &schema(), "007", &change(&[(b"score", b"1")])).unwrap_err();
        assert!(matches!(&err, PrepareError::Key(IdError::NotCanonical { .. })), "{err}");
    }

    #[test]
    fn removed_fields_become_null_and_increments_need_numbers() {
        let m = users();
        let mut c = change(&[]);
        c.fields.insert(b"pwhash".to_vec(), FieldChange::Remove);
        c.fields.insert(b"score".to_vec(), FieldChange::Add { delta: Delta::Int(2), redis_after: b"2".to_vec() });
        let mut schema = schema();
        schema.columns.get_mut("score").unwrap().typed.sql_type = "integer".into();
        let row = prepare(0, &m.all()[0], &schema, "1", &c).unwrap();
        assert_eq!(row.values.get("password_hash"), Some(&ColumnWrite::Set(None)));
        assert_eq!(row.values.get("score"), Some(&ColumnWrite::Add("2".into())));
        schema.columns.get_mut("score").unwrap().typed.sql_type = "text".into();
        let err = prepare(0, &m.all()[0], &schema, "1", &c).unwrap_err();
        assert!(matches!(err, PrepareError::NotNumeric { .. }), "{err}");
        assert!(err.to_string().contains("not a number"), "{err}");
    }

    #[test]
    fn paths_are_set_inside_json_columns_only() {
        let m = users();
        let mut c = change(&[]);
        let set = json_path_set::PathSet { path: vec!["a".into(), "b".into()], value: "1".into() };
        c.fields.insert(b"pwhash".to_vec(), FieldChange::Paths(vec![set]));
        let mut schema = schema();
        schema.columns.get_mut("password_hash").unwrap().typed.sql_type = "jsonb".into();
        let row = prepare(0, &m.all()[0], &schema, "1", &c).unwrap();
        let sets = r#"[[["a","b"],1]]"#.to_string();
        assert_eq!(row.values.get("password_hash"), Some(&ColumnWrite::Paths(sets)));
        schema.columns.get_mut("password_hash").unwrap().typed.sql_type = "text".into();
        let err = prepare(0, &m.all()[0], &schema, "1", &c).unwrap_err();
        assert!(err.to_string().contains("is text, not json or jsonb"), "{err}");
    }
}
