//! Rejected rows keep their order. A write-behind row's rejected change stays
//! attached to the row: the row's next write is merged on top of it and tried
//! again ([`carry`]), so a rejected row's entry always holds every field not yet
//! in Postgres, and the entry leaves when the row lands ([`landed`]). A
//! write-through entry is not carried (its `SYNC.HSET` client got the error); a
//! later landed write of the row drops the fields it superseded from the entry
//! ([`DeadLetter::supersede`]), so `SYNC.RETRY` never writes a value older than
//! one in Postgres.

use super::{entry_id, keys, of_row, remove, DeadLetter};
use crate::model::change::{Change, FieldChange, RowOp, Write};
use crate::model::mapping::{Mapping, Mode};
use crate::model::queue::RowKey;
use crate::redis::redis_io::{call_logged, own_writes};
use redis_module::Context;

impl DeadLetter {
    /// Drops what a later change that landed superseded, so a retry never writes
    /// a field older than one in Postgres: a delete or replace supersedes all of
    /// it; a field set or removed supersedes that field; an increment supersedes
    /// an older value of its field (older increments still add). A rejected
    /// delete or replace is superseded by any later landed change (retried, it
    /// would undo that change); what is left is an upsert. Returns whether
    /// nothing is left to retry.
    pub fn supersede(&mut self, landed: &Change) -> bool {
        let resolved = self.op != "upsert" || landed.op != RowOp::Upsert;
        if resolved {
            self.fields.clear();
            self.increments.clear();
            self.paths.clear();
        }
        for (field, change) in landed.fields.iter() {
            let field = String::from_utf8_lossy(field);
            self.fields.remove(field.as_ref());
            // Increments and path sets keep older ones of their kind: they still add.
            if !matches!(change, FieldChange::Add { .. }) {
                self.increments.remove(field.as_ref());
            }
            if !matches!(change, FieldChange::Paths(_)) {
                self.paths.remove(field.as_ref());
            }
        }
        resolved || (self.fields.is_empty() && self.increments.is_empty() && self.paths.is_empty())
    }
}

/// A rejected change with a newer write merged on top of it (per field, the
/// newer wins; increments add): what a write-behind row tries next.
fn merged(rejected: Write, newer: Write) -> Write {
    let mut change = Change::new(rejected, 0);
    change.absorb(Change::new(newer, 0));
    Write { op: change.op, fields: change.fields, acks: change.acks }
}

/// A captured write of a write-behind row, with the row's rejected change
/// under it when the row has one that is not queued yet: the next write of a
/// rejected row carries its unlanded fields and tries them again. `queued`
/// says whether the queue holds the row; it is asked only when there is an
/// entry, and when it does, the entry's change is in the queued one already.
pub fn carry(ctx: &Context, m: &Mapping, id: &str, write: Write, queued: impl FnOnce() -> bool) -> Write {
    match of_row(ctx, &m.name, id) {
        Some(entry) if entry.kafka.is_none() && !queued() => merged(entry.to_write(), write),
        _ => write,
    }
}

/// A change of `row` landed in Postgres. A write-behind row's entry leaves (the
/// change carried it); a write-through entry loses the fields the change
/// superseded, and leaves when none is left. Returns whether the entry left.
pub fn landed(ctx: &Context, m: &Mapping, row: &RowKey, change: &Change) -> bool {
    let Some(mut entry) = of_row(ctx, &m.name, &row.id) else { return false };
    let id = entry_id(&m.name, &row.id);
    if m.mode == Mode::WriteBehind || entry.supersede(change) {
        return remove(ctx, &id);
    }
    if let Ok(json) = serde_json::to_string(&entry) {
        let hash = keys(ctx).hash;
        own_writes(|| call_logged(ctx, "HSET", &[&hash, id.as_bytes(), json.as_bytes()]));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::change::Delta;

    fn entry(op: &str, fields: &[(&str, Option<&str>)], increments: &[(&str, &str)]) -> DeadLetter {
        DeadLetter {
            mapping: "m".into(),
            id: "1".into(),
            op: op.into(),
            fields: fields.iter().map(|(f, v)| (f.to_string(), v.map(str::to_string))).collect(),
            increments: increments.iter().map(|(f, d)| (f.to_string(), d.to_string())).collect(),
            paths: Default::default(),
            error: "e".into(),
            first_error: String::new(),
            time_ms: 0,
            first_time_ms: 0,
            count: 1,
            kafka: None,
        }
    }

    fn change(op: RowOp, fields: Vec<(&str, FieldChange)>) -> Change {
        let fields = fields.into_iter().map(|(f, c)| (f.as_bytes().to_vec(), c)).collect();
        Change::new(Write { op, fields, acks: Vec::new() }, 1)
    }

    fn set(v: &str) -> FieldChange {
        FieldChange::Set(v.as_bytes().to_vec())
    }

    fn add(d: i128) -> FieldChange {
        FieldChange::Add { delta: Delta::Int(d), redis_after: Vec::new() }
    }

    #[test]
    fn a_landed_write_supersedes_the_fields_it_wrote() {
        let mut e = entry("upsert", &[("a", Some("old")), ("b", Some("x")), ("c", None)], &[("n", "5"), ("m", "1")]);
        let landed = change(RowOp::Upsert, vec![("a", set("new")), ("n", add(1)), ("m", set("9"))]);
        assert!(!e.supersede(&landed));
        assert_eq!(e.fields.keys().collect::<Vec<_>>(), ["b", "c"]);
        assert_eq!(e.increments.keys().collect::<Vec<_>>(), ["n"], "a later increment adds; a set replaces");
        let landed = change(RowOp::Upsert, vec![("b", FieldChange::Remove), ("c", add(2)), ("n", set("0"))]);
        assert!(e.supersede(&landed), "every field superseded: nothing left to retry");
    }

    #[test]
    fn a_delete_or_replace_on_either_side_resolves_the_entry() {
        let wide = || entry("upsert", &[("a", Some("1")), ("b", Some("2"))], &[]);
        assert!(wide().supersede(&change(RowOp::Delete, vec![])));
        assert!(wide().supersede(&change(RowOp::Replace, vec![("a", set("3"))])));
        assert!(entry("delete", &[], &[]).supersede(&change(RowOp::Upsert, vec![("z", set("1"))])));
        assert!(entry("replace", &[("a", Some("1"))], &[]).supersede(&change(RowOp::Upsert, vec![])));
    }

    #[test]
    fn the_next_write_merges_on_top_of_the_rejected_change() {
        let rejected = entry("upsert", &[("username", Some("first")), ("bio", None)], &[("visits", "5")]).to_write();
        let newer = change(RowOp::Upsert, vec![("username", set("second")), ("visits", add(2)), ("email", set("e"))]);
        let newer = Write { op: newer.op, fields: newer.fields, acks: vec!["u".into()] };
        let m = merged(rejected, newer);
        assert_eq!(m.op, RowOp::Upsert);
        assert_eq!(m.fields.get(b"username"), Some(&set("second")), "the newer value wins");
        assert_eq!(m.fields.get(b"email"), Some(&set("e")));
        assert_eq!(m.fields.get(b"bio"), Some(&FieldChange::Remove), "unlanded fields ride along");
        assert!(
            matches!(m.fields.get(b"visits"), Some(FieldChange::Add { delta: Delta::Int(7), .. })),
            "increments add"
        );
        assert_eq!(m.acks, ["u"]);
        let after_delete = merged(entry("delete", &[], &[]).to_write(), Write { op: RowOp::Upsert, ..m });
        assert_eq!(after_delete.op, RowOp::Replace, "a rejected delete stays before the write");
    }
}
