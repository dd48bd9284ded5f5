//! One transaction read from the stream, buffered until its COMMIT: each change
//! to a listened table becomes, per mapping of that table, the row's mapped
//! fields (an upsert) or its removal, merged per row in commit order; a TRUNCATE
//! empties what the mapping had gathered so far. Pure: the relations and the
//! mappings' shapes come in, the rows to apply go out.

use crate::model::json_row::MemberKind;
use crate::model::key_text::KeyType;
use crate::model::row_id::{IdError, KeyShape};
use crate::pg::replication::pgoutput::{Message, Relation, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

/// Fields of a row as a hash gets them: `None` removes the field (a NULL column).
pub type Fields = Vec<(String, Option<String>)>;

/// How one mapping reads a change of its table.
#[derive(Debug, Clone)]
pub struct Target {
    /// The mapping (index).
    pub mapping: usize,
    /// How its key columns spell a row's id.
    pub key: KeyShape,
    /// The key columns' types, as Postgres prints them.
    pub key_types: Vec<KeyType>,
    /// The mapped columns.
    pub fields: Vec<MappedColumn>,
    /// Rows become JSON documents (`"type": "json"`): fields are typed members.
    pub json: bool,
}

/// One mapped column of a [`Target`].
#[derive(Debug, Clone)]
pub struct MappedColumn {
    /// The hash field (or JSON member) it fills.
    pub field: String,
    /// The table's column.
    pub column: String,
    /// How its type reads, so that the stream's text is spelled as a read
    /// from Postgres spells it (`boolean` as `true`, typed JSON members).
    pub kind: MemberKind,
}

impl MappedColumn {
    /// The field's value for the text the stream carries.
    fn value(&self, output: &str, json: bool) -> String {
        let text = self.kind.as_cast_text(output);
        if json {
            self.kind.member(text)
        } else {
            text.to_string()
        }
    }
}

/// A document mapping's watched column in one table: a change to a row
/// rebuilds the document of the root its value names.
#[derive(Debug, Clone)]
pub struct Watcher {
    /// The document mapping (index).
    pub mapping: usize,
    /// The column holding the root id.
    pub column: String,
}

/// What the transaction did to one document mapping's roots.
#[derive(Debug, Default, PartialEq)]
pub struct RootChanges {
    /// A watched table was truncated: every document is rebuilt.
    pub truncated: bool,
    /// The roots whose documents are rebuilt.
    pub ids: BTreeSet<String>,
}

/// What the transaction did to one mapping's rows.
#[derive(Debug, Default, PartialEq)]
pub struct MappingChanges {
    /// The table was truncated: every cached row not written below goes.
    pub truncated: bool,
    /// Each row's outcome by id: its fields, or `None` when it is gone.
    pub rows: BTreeMap<String, Option<Fields>>,
    /// Rows whose key cannot be spelled (counted as refused), with the first reason.
    pub unkeyed: (u64, Option<String>),
}

/// The relations announced on the stream, and which mappings each one feeds.
#[derive(Default)]
pub struct Relations {
    known: HashMap<u32, Relation>,
    /// Targets by (schema, table).
    targets: HashMap<(String, String), Vec<Target>>,
    /// Document mappings' watched columns by (schema, table).
    watchers: HashMap<(String, String), Vec<Watcher>>,
}

impl Relations {
    /// Relations feeding `targets` and `watchers`, by (schema, table).
    pub fn new(
        targets: HashMap<(String, String), Vec<Target>>,
        watchers: HashMap<(String, String), Vec<Watcher>>,
    ) -> Relations {
        Relations { known: HashMap::new(), targets, watchers }
    }

    fn targets(&self, relation: u32) -> (&[Target], Option<&Relation>) {
        let Some(rel) = self.known.get(&relation) else { return (&[], None) };
        let targets = self.targets.get(&(rel.namespace.clone(), rel.name.clone()));
        (targets.map_or(&[][..], Vec::as_slice), Some(rel))
    }

    fn watchers(&self, relation: u32) -> (&[Watcher], Option<&Relation>) {
        let Some(rel) = self.known.get(&relation) else { return (&[], None) };
        let watchers = self.watchers.get(&(rel.namespace.clone(), rel.name.clone()));
        (watchers.map_or(&[][..], Vec::as_slice), Some(rel))
    }
}

/// A transaction being read.
#[derive(Debug, Default)]
pub struct Txn {
    /// Per mapping (index), what it changed.
    pub changes: BTreeMap<usize, MappingChanges>,
    /// Per document mapping (index), the roots to rebuild.
    pub roots: BTreeMap<usize, RootChanges>,
    /// The module wrote it (its mark was seen): nothing of it is applied.
    pub own: bool,
    /// Its id, as the stream sends it.
    pub xid: u32,
}

impl Txn {
    /// Adds one message of the transaction; a relation message updates `relations`.
    pub fn add(&mut self, relations: &mut Relations, message: Message) {
        match message {
            Message::Relation(rel) => {
                relations.known.insert(rel.id, rel);
            }
            Message::Insert { relation, new } => {
                self.announce(relations, relation, &[&new]);
                self.upsert(relations, relation, None, &new);
            }
            Message::Update { relation, old, new } => {
                // The old row names the root a row moved away from.
                self.announce(relations, relation, &[&new, old.as_deref().unwrap_or_default()]);
                self.upsert(relations, relation, old.as_deref(), &new);
            }
            Message::Delete { relation, old } => {
                self.announce(relations, relation, &[&old]);
                let (targets, Some(rel)) = relations.targets(relation) else { return };
                for t in targets {
                    let changes = self.changes.entry(t.mapping).or_default();
                    match spell(t, rel, &old) {
                        Ok(id) => drop(changes.rows.insert(id, None)),
                        Err(why) => changes.refuse(why.to_string()),
                    }
                }
            }
            Message::Truncate { relations: truncated } => {
                for relation in truncated {
                    for w in relations.watchers(relation).0 {
                        let roots = self.roots.entry(w.mapping).or_default();
                        roots.truncated = true;
                        roots.ids.clear();
                    }
                    for t in relations.targets(relation).0 {
                        let changes = self.changes.entry(t.mapping).or_default();
                        changes.truncated = true;
                        changes.rows.clear();
                    }
                }
            }
            Message::Other(_) => {}
        }
    }

    /// Adds the rows and roots of `later`, committed just after this
    /// transaction, as if one transaction had made both: per row the later
    /// change wins (an upsert's fields merged over an earlier upsert's), a
    /// TRUNCATE drops what came before it, and the roots to rebuild add up. A
    /// transaction the module wrote adds nothing.
    pub fn then(&mut self, later: Txn) {
        if later.own {
            return;
        }
        for (mapping, r) in later.roots {
            let mine = self.roots.entry(mapping).or_default();
            mine.truncated |= r.truncated;
            mine.ids.extend(r.ids);
        }
        for (mapping, c) in later.changes {
            let mine = self.changes.entry(mapping).or_default();
            if c.truncated {
                mine.truncated = true;
                mine.rows.clear();
            }
            for (id, fields) in c.rows {
                match (mine.rows.get_mut(&id), fields) {
                    (Some(Some(earlier)), Some(fields)) => merge(earlier, fields),
                    (_, fields) => drop(mine.rows.insert(id, fields)),
                }
            }
            mine.unkeyed.0 += c.unkeyed.0;
            if mine.unkeyed.1.is_none() {
                mine.unkeyed.1 = c.unkeyed.1;
            }
        }
    }

    /// How many rows the transaction writes or deletes, and roots it rebuilds.
    pub fn row_count(&self) -> usize {
        self.changes.values().map(|c| c.rows.len()).sum::<usize>()
            + self.roots.values().map(|r| r.ids.len()).sum::<usize>()
    }

    /// Adds the roots the watched columns of `tuples` name (a NULL names none).
    fn announce(&mut self, relations: &Relations, relation: u32, tuples: &[&[Value]]) {
        let (watchers, Some(rel)) = relations.watchers(relation) else { return };
        for w in watchers {
            let roots = self.roots.entry(w.mapping).or_default();
            for tuple in tuples {
                if let Some(Value::Text(id)) = value(rel, tuple, &w.column) {
                    roots.ids.insert(id.clone());
                }
            }
        }
    }

    fn upsert(&mut self, relations: &Relations, relation: u32, old: Option<&[Value]>, new: &[Value]) {
        let (targets, Some(rel)) = relations.targets(relation) else { return };
        for t in targets {
            let changes = self.changes.entry(t.mapping).or_default();
            let id = match spell(t, rel, new) {
                Ok(id) => id,
                Err(why) => {
                    changes.refuse(why.to_string());
                    continue;
                }
            };
            // A changed key moves the row: the old id's hash goes.
            if let Some(old_id) = old.and_then(|old| spell(t, rel, old).ok()).filter(|old_id| *old_id != id) {
                changes.rows.insert(old_id, None);
            }
            let fields: Fields = t
                .fields
                .iter()
                .filter_map(|c| match value(rel, new, &c.column) {
                    Some(Value::Text(text)) => Some((c.field.clone(), Some(c.value(text, t.json)))),
                    Some(Value::Null) => Some((c.field.clone(), None)),
                    // Unchanged TOAST values and columns the stream lacks keep what Redis has.
                    Some(Value::Unchanged) | None => None,
                })
                .collect();
            match changes.rows.get_mut(&id) {
                Some(Some(earlier)) => merge(earlier, fields),
                _ => drop(changes.rows.insert(id, Some(fields))),
            }
        }
    }
}

impl MappingChanges {
    fn refuse(&mut self, why: String) {
        self.unkeyed.0 += 1;
        self.unkeyed.1.get_or_insert(why);
    }
}

/// Later fields of a row win over earlier ones of the same transaction.
fn merge(earlier: &mut Fields, later: Fields) {
    for (field, value) in later {
        match earlier.iter_mut().find(|(f, _)| *f == field) {
            Some(slot) => slot.1 = value,
            None => earlier.push((field, value)),
        }
    }
}

fn value<'v>(rel: &Relation, values: &'v [Value], column: &str) -> Option<&'v Value> {
    rel.columns.iter().position(|c| c == column).and_then(|i| values.get(i))
}

/// Why a change's row has no id: it is counted and the first reason logged.
#[derive(Debug)]
enum Unkeyed {
    /// A key column is missing or NULL in the change (the column).
    NoValue(String),
    /// The values spell no key a write would accept.
    Key(IdError),
}

impl fmt::Display for Unkeyed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unkeyed::NoValue(column) => write!(f, "key column {column} has no value in the change"),
            Unkeyed::Key(why) => why.fmt(f),
        }
    }
}

/// The row's id from its key columns, as a write to its key would spell it.
fn spell(t: &Target, rel: &Relation, values: &[Value]) -> Result<String, Unkeyed> {
    let mut key = Vec::with_capacity(t.key.columns().len());
    for column in t.key.columns() {
        match value(rel, values, column) {
            Some(Value::Text(text)) => key.push(text.as_str()),
            _ => return Err(Unkeyed::NoValue(column.clone())),
        }
    }
    t.key.spell(&key, &t.key_types).map_err(Unkeyed::Key)
}

#[cfg(test)]
mod tests;
