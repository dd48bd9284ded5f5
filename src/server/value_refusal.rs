//! Writes refused before they run because Postgres would certainly refuse
//! them: a value that cannot be its column's type (the rules are in
//! `model/value_check.rs`), or the removal of a NOT NULL column's field.
//! `SYNC.WRITE`/`SYNC.REMOVE` ask here before running the command, once the
//! table's schema is known; the client gets `ERR pgsync: ...` naming the column,
//! and nothing is written to Redis or Postgres. What only Postgres can decide
//! (constraints, triggers, other rows) is left to it: a dead letter.

use crate::model::change::{decode_op, SyncOp, OP_FIELD};
use crate::model::intent::Effect;
use crate::model::mapping::Mapping;
use crate::model::value_check;
use crate::pg::schema::{ColumnInfo, TableSchema};
use crate::pipeline::capture::{refuse, Target, ENUM_REREAD};
use crate::pipeline::runtime::Runtime;
use crate::redis::acl::Caller;
use crate::redis::replies;
use redis_module::{Context, RedisError, RedisString};

/// Refuses a write Postgres would certainly refuse, before it runs (so nothing
/// is written anywhere): a value that cannot be its column's type, or the
/// removal of a NOT NULL column's field. Only once the table's schema is known;
/// O(size of the write). `argv` is the command as the client sent it.
pub fn check(
    ctx: &Context,
    rt: &Runtime,
    target: &Target,
    argv: &[RedisString],
    effect: &Effect,
) -> Result<(), RedisError> {
    let m = rt.mapping(target.mapping).def;
    let Some(schema) = rt.schema(target.mapping) else { return Ok(()) };
    let Some(Refusal { problem, unknown_label }) = bad_value(m, &schema, effect) else { return Ok(()) };
    // A client that may not run the command hears that, and nothing of the table.
    Caller::of(ctx)?.check_command(ctx, argv)?;
    // A label added to the enum since the schema was read is unknown here: the
    // checker reads the schema again (at most this often), so the label is
    // accepted from then on.
    if unknown_label && schema.read_at.elapsed() > ENUM_REREAD {
        rt.refresh_schema(target.mapping);
    }
    let key = argv.get(1).map(|k| k.as_slice()).unwrap_or_default();
    let message = format!("{}: write to {} refused: {problem}", m.name, key.escape_ascii());
    refuse(rt, target.mapping, &message);
    Err(replies::refused(&message))
}

/// Why a write is refused.
#[derive(Debug, PartialEq)]
struct Refusal {
    /// The field, its column and the reason.
    problem: String,
    /// Whether a value is no label of its enum column (as the schema knows it).
    unknown_label: bool,
}

/// What in `effect` Postgres would certainly refuse (see [`check`]).
fn bad_value(m: &Mapping, schema: &TableSchema, effect: &Effect) -> Option<Refusal> {
    let (sets, removes): (&[_], &[_]) = match effect {
        Effect::Set(pairs) => (pairs.as_slice(), &[]),
        Effect::Remove(names) => (&[], names),
        Effect::Incr { .. } => return None,
    };
    // An rgsync `#` op other than `=` sends no value to Postgres.
    let tag = sets.iter().find(|(f, _)| f == OP_FIELD).and_then(|(_, v)| decode_op(v).ok());
    if tag.is_some_and(|t| t.op != SyncOp::Replicate) {
        return None;
    }
    let column = |field| written_column(m, schema, field);
    sets.iter()
        .find_map(|(field, value)| {
            let (field, name, info) = column(field)?;
            let column = info.value_type();
            let why = value_check::check(&column, value).err()?;
            let problem = format!("field \"{field}\" (column \"{name}\", {}): {why}", info.typed.sql_type);
            Some(Refusal { problem, unknown_label: column.labels.is_some() })
        })
        .or_else(|| {
            removes.iter().find_map(|field| {
                let (field, name, _) = column(field).filter(|(_, _, info)| info.not_null)?;
                let problem = format!("field \"{field}\" cannot be removed: column \"{name}\" is NOT NULL");
                Some(Refusal { problem, unknown_label: false })
            })
        })
}

/// The field (as text), the column it writes and that column, when it writes one.
fn written_column<'a>(
    m: &'a Mapping,
    schema: &'a TableSchema,
    field: &'a [u8],
) -> Option<(&'a str, &'a str, &'a ColumnInfo)> {
    let field = std::str::from_utf8(field).ok()?;
    let name = m.column_for(field)?;
    Some((field, name, schema.columns.get(name)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::mapping::Mappings;

    fn people() -> (Mappings, TableSchema) {
        let mappings = Mappings::parse(
            r#"{"mappings": [{"name": "people", "table": "people", "key_prefix": "people:",
            "primary_key": "id", "mode": "write-behind", "fields": {"n": "visits", "mail": "email", "m": "mood"}}]}"#,
        )
        .unwrap();
        let mut email = ColumnInfo::plain("email", "text");
        email.not_null = true;
        let mood =
            ColumnInfo { key_type: ("mood".into(), Some(vec!["ok".into()])), ..ColumnInfo::plain("mood", "mood") };
        let columns = [("visits", ColumnInfo::plain("visits", "integer")), ("email", email), ("mood", mood)];
        let schema = TableSchema {
            keys: vec![id_column()],
            key_types: Vec::new(),
            read_at: std::time::Instant::now(),
            columns: columns.into_iter().map(|(n, c)| (n.to_string(), c)).collect(),
        };
        (mappings, schema)
    }

    fn id_column() -> crate::pg::sql::TypedColumn {
        crate::pg::sql::TypedColumn { name: "id".into(), sql_type: "integer".into() }
    }

    fn set(pairs: &[(&str, &str)]) -> Effect {
        Effect::Set(pairs.iter().map(|(f, v)| (f.as_bytes().to_vec(), v.as_bytes().to_vec())).collect())
    }

    #[test]
    fn values_are_checked_against_the_column_their_field_writes() {
        let (mappings, schema) = people();
        let m = &mappings.all()[0];
        let why = bad_value(m, &schema, &set(&[("mail", "a"), ("n", "x")])).expect("refused");
        assert_eq!(why.problem, "field \"n\" (column \"visits\", integer): not an integer (integer)");
        assert!(!why.unknown_label);
        assert_eq!(
            bad_value(m, &schema, &set(&[("n", "7"), ("other", "x"), ("visits", "x")])),
            None,
            "unmapped fields pass"
        );
        let removal = Effect::Remove(vec![b"n".to_vec(), b"mail".to_vec()]);
        assert_eq!(
            bad_value(m, &schema, &removal).map(|r| r.problem).as_deref(),
            Some("field \"mail\" cannot be removed: column \"email\" is NOT NULL")
        );
        let label = bad_value(m, &schema, &set(&[("m", "new")])).expect("no such label");
        assert!(label.unknown_label, "the schema is read again: the label may be new");
        assert_eq!(bad_value(m, &schema, &set(&[("m", "ok")])), None);
        let incr = Effect::Incr { field: b"mail".to_vec(), delta: crate::model::change::Delta::Int(1) };
        assert_eq!(bad_value(m, &schema, &incr), None, "increments are the writer's to judge");
    }

    #[test]
    fn only_an_rgsync_op_that_reaches_postgres_is_checked() {
        let (mappings, schema) = people();
        let m = &mappings.all()[0];
        assert!(bad_value(m, &schema, &set(&[("#", "="), ("n", "x")])).is_some());
        assert!(bad_value(m, &schema, &set(&[("#", "=abc"), ("n", "x")])).is_some());
        assert_eq!(bad_value(m, &schema, &set(&[("#", "+"), ("n", "x")])), None, "Redis only");
        assert_eq!(bad_value(m, &schema, &set(&[("#", "~"), ("n", "x")])), None, "a delete sends no values");
    }
}
