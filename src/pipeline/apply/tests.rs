//! The rules of apply against an in-memory store: hashes and JSON documents in
//! maps, and the events, acks and dead letters a batch sends, in order.

use super::{apply_row, Rejections, Store};
use crate::model::change::{Change, Delta, FieldChange, Fields, RowOp, Write};
use crate::model::journal_codec::{encode, encode_change};
use crate::model::journal_log::{frame, framed_len};
use crate::model::json_row;
use crate::model::mapping::{Mapping, Mappings};
use crate::model::queue::{Journaled, Outcome, RowKey};
use crate::model::shutdown::Shutdown;
use crate::model::stats::MappingStats;
use crate::pg::error::{Error, ErrorKind};
use crate::pg::writer::{Returned, RowOutcome};
use crate::pipeline::runtime::Runtime;
use crate::redis::journal::logs::{self, Op};
use crate::redis::notify::{Event, EventOp};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

type Hash = BTreeMap<Vec<u8>, Vec<u8>>;

#[derive(Default)]
struct FakeStore {
    hashes: RefCell<HashMap<String, Hash>>,
    /// Documents as JSON text.
    docs: RefCell<HashMap<String, String>>,
    /// (key, op, fields) of each change event.
    events: RefCell<Vec<(String, EventOp, Vec<String>)>>,
    /// (id, uuids, outcome) of each ack.
    acks: RefCell<Vec<(String, Vec<String>, Outcome)>>,
    /// (id, error) of each dead letter.
    dead: RefCell<Vec<(String, String)>>,
    /// Ids the dead-letter list holds an entry for.
    listed: RefCell<Vec<String>>,
    filled: RefCell<Vec<RowKey>>,
    expired: RefCell<Vec<String>>,
}

impl Store for FakeStore {
    type Error = String;

    fn exists(&self, key: &str) -> bool {
        self.hashes.borrow().contains_key(key) || self.docs.borrow().contains_key(key)
    }

    fn hash_set(&self, key: &str, pairs: &[(&[u8], &[u8])]) {
        let mut hashes = self.hashes.borrow_mut();
        let hash = hashes.entry(key.to_string()).or_default();
        pairs.iter().for_each(|(f, v)| drop(hash.insert(f.to_vec(), v.to_vec())));
    }

    fn hash_remove(&self, key: &str, fields: &[&[u8]]) {
        let mut hashes = self.hashes.borrow_mut();
        if let Some(hash) = hashes.get_mut(key) {
            fields.iter().for_each(|f| drop(hash.remove(*f)));
            if hash.is_empty() {
                hashes.remove(key);
            }
        }
    }

    fn delete(&self, key: &str) {
        self.hashes.borrow_mut().remove(key);
        self.docs.borrow_mut().remove(key);
    }

    fn hash_values(&self, key: &str, fields: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, String> {
        let hashes = self.hashes.borrow();
        Ok(fields.iter().map(|f| hashes.get(key).and_then(|h| h.get(*f).cloned())).collect())
    }

    fn json_merge(&self, key: &str, members: &[(String, Option<String>)]) -> Result<(), String> {
        let mut docs = self.docs.borrow_mut();
        let merged = json_row::merge(docs.get(key).map(String::as_str), members).map_err(|e| e.to_string())?;
        if let Some(doc) = merged {
            docs.insert(key.to_string(), doc);
        }
        Ok(())
    }

    fn json_members(&self, key: &str, names: &[&[u8]]) -> Option<Vec<Option<String>>> {
        let docs = self.docs.borrow();
        let Some(doc) = docs.get(key) else { return Some(vec![None; names.len()]) };
        let members = json_row::object_members(doc)?;
        let value = |name: &[u8]| members.iter().find(|(n, _)| n.as_bytes() == name).map(|(_, v)| v.clone());
        Some(names.iter().map(|name| value(name).filter(|v| v != "null")).collect())
    }

    fn json_remove(&self, key: &str, names: &[&[u8]]) -> Result<(), String> {
        let removed: Vec<(String, Option<String>)> =
            names.iter().map(|n| (String::from_utf8_lossy(n).into_owned(), None)).collect();
        self.json_merge(key, &removed)?;
        if self.docs.borrow().get(key).is_some_and(|doc| doc == "{}") {
            self.docs.borrow_mut().remove(key);
        }
        Ok(())
    }

    fn expire(&self, _m: &Mapping, key: &str) {
        self.expired.borrow_mut().push(key.to_string());
    }

    fn fill(&self, row: &RowKey) {
        self.filled.borrow_mut().push(row.clone());
    }

    fn announce(&self, _m: &Mapping, _stats: &MappingStats, event: &Event<'_>) {
        self.events.borrow_mut().push((event.key.to_string(), event.op, event.fields.clone()));
    }

    fn ack(&self, _m: &Mapping, id: &str, uuids: &[String], outcome: &Outcome) {
        self.acks.borrow_mut().push((id.to_string(), uuids.to_vec(), outcome.clone()));
    }

    fn dead_letter(&self, _m: &Mapping, row: &RowKey, _change: &Change, error: &str) {
        self.dead.borrow_mut().push((row.id.to_string(), error.to_string()));
        self.listed.borrow_mut().push(row.id.to_string());
    }

    fn landed(&self, _m: &Mapping, row: &RowKey, _change: &Change) -> bool {
        let mut listed = self.listed.borrow_mut();
        let before = listed.len();
        listed.retain(|id| *id != row.id);
        listed.len() < before
    }
}

static SHUTDOWN: Shutdown = Shutdown::new();

/// 0: `items` write-behind hashes; 1: `users` write-through hashes (fill on
/// write); 2: `accts` write-through JSON documents.
fn runtime() -> Runtime {
    let mappings = Mappings::parse(
        r#"{"mappings": [
        {"name": "items", "table": "items", "key_prefix": "items:", "primary_key": "id", "mode": "write-behind"},
        {"name": "users", "table": "users", "key_prefix": "users:", "primary_key": "id", "mode": "write-through",
         "fill_on_write": true},
        {"name": "accts", "table": "accts", "key_prefix": "acct:", "primary_key": "id", "mode": "write-through",
         "type": "json", "fields": {"name": "name", "score": "score"}}]}"#,
    )
    .unwrap();
    let settings = crate::pg::connect::settings("postgres://nobody@127.0.0.1:1/none", None).unwrap();
    Runtime::new(mappings, settings, false, &SHUTDOWN)
}

fn row(mapping: usize, id: &str) -> RowKey {
    RowKey { mapping, id: id.into() }
}

fn change(op: RowOp, fields: &[(&str, FieldChange)], acks: &[&str]) -> Change {
    let fields: Fields = fields.iter().map(|(f, c)| (f.as_bytes().to_vec(), c.clone())).collect();
    let acks = acks.iter().map(|a| a.to_string()).collect();
    Change::new(Write { op, fields, acks }, 1)
}

fn set(v: &str) -> FieldChange {
    FieldChange::Set(v.as_bytes().to_vec())
}

fn add(delta: i128, redis_after: &str) -> FieldChange {
    FieldChange::Add { delta: Delta::Int(delta), redis_after: redis_after.as_bytes().to_vec() }
}

fn committed(returned: &[(&str, &str)]) -> RowOutcome {
    Ok(returned.iter().map(|(c, v)| (c.to_string(), Some(v.to_string()))).collect::<Returned>())
}

fn rejected(message: &str) -> RowOutcome {
    Err(Error::new(ErrorKind::Rejected, message))
}

/// A write to `row` captured while its batch was being written: journaled
/// (the log's records are what the queue reads back) and queued.
fn queue_since(rt: &Runtime, row: &RowKey, write: Write) {
    let key = rt.mapping(row.mapping).def.written_key(&row.id);
    let record = encode(write.op, &write.fields, &write.acks);
    logs::apply_replicated(Op::Set, key.as_bytes(), &frame(&record));
    rt.queue().push(row, Journaled::Fresh { bytes: framed_len(record.len()) });
}

/// Applies one row as `apply_batch` does, with what the queue holds for it since.
fn apply(store: &FakeStore, rt: &Runtime, row: &RowKey, change: &Change, outcome: &RowOutcome) -> Option<Change> {
    let m = rt.mapping(row.mapping).def;
    let written = match m.mode {
        crate::model::mapping::Mode::WriteThrough => m.temp_key(&row.id),
        _ => m.main_key(&row.id),
    };
    let mut pending = rt.dirty.pending_change(row, &written);
    apply_row(store, rt, row, change, outcome, &written, pending.as_ref());
    let listed = !store.listed.borrow().is_empty();
    Rejections { listed }.settle(store, rt, row, change, outcome, &mut pending);
    pending
}

fn hash(store: &FakeStore, key: &str) -> Vec<(String, String)> {
    let hashes = store.hashes.borrow();
    let text = |b: &Vec<u8>| String::from_utf8_lossy(b).into_owned();
    hashes.get(key).map(|h| h.iter().map(|(f, v)| (text(f), text(v))).collect()).unwrap_or_default()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

#[test]
fn an_increment_takes_postgres_sum_unless_a_newer_write_to_the_field_is_on_its_way() {
    let rt = runtime();
    let store = FakeStore::default();
    store.hash_set("items:1", &[(b"score", b"5"), (b"name", b"a")]);
    let incr = change(RowOp::Upsert, &[("score", add(5, "5"))], &[]);
    apply(&store, &rt, &row(0, "1"), &incr, &committed(&[("score", "105")]));
    assert_eq!(hash(&store, "items:1"), pairs(&[("name", "a"), ("score", "105")]), "Redis converges to the sum");

    // A newer write to the field is queued: its own commit brings the value.
    let newer =
        Write { op: RowOp::Upsert, fields: [(b"score".to_vec(), set("7"))].into_iter().collect(), acks: vec![] };
    queue_since(&rt, &row(0, "1"), newer);
    apply(&store, &rt, &row(0, "1"), &incr, &committed(&[("score", "110")]));
    assert_eq!(hash(&store, "items:1"), pairs(&[("name", "a"), ("score", "105")]));

    // A key Redis no longer holds stays gone.
    apply(&store, &rt, &row(0, "2"), &incr, &committed(&[("score", "9")]));
    assert!(!store.exists("items:2"));
    let events = store.events.borrow();
    assert_eq!(events.len(), 3, "every landed row is announced");
    assert_eq!(events[0], ("items:1".into(), EventOp::Upsert, vec!["score".to_string()]));
}

#[test]
fn a_write_through_commit_lands_on_the_row_and_clears_only_what_was_not_rewritten() {
    let rt = runtime();
    let store = FakeStore::default();
    store.hash_set("__{users:1}", &[(b"name", b"ann"), (b"email", b"new@x"), (b"score", b"3")]);
    let staged = change(
        RowOp::Upsert,
        &[("name", set("ann")), ("email", set("old@x")), ("score", add(3, "3")), ("nick", FieldChange::Remove)],
        &["u1"],
    );
    apply(&store, &rt, &row(1, "1"), &staged, &committed(&[("score", "13")]));
    assert_eq!(
        hash(&store, "users:1"),
        pairs(&[("email", "old@x"), ("name", "ann"), ("score", "13")]),
        "committed values, Postgres's sum"
    );
    assert_eq!(hash(&store, "__{users:1}"), pairs(&[("email", "new@x")]), "a field rewritten since stays staged");
    assert_eq!(*store.filled.borrow(), vec![row(1, "1")], "a row Redis did not hold is filled");
    assert_eq!(*store.expired.borrow(), vec!["users:1".to_string()]);
    assert_eq!(store.acks.borrow()[0], ("1".into(), vec!["u1".to_string()], Ok(())));

    // A delete empties the row key.
    store.hash_set("__{users:1}", &[]);
    apply(&store, &rt, &row(1, "1"), &change(RowOp::Delete, &[], &[]), &committed(&[]));
    assert!(!store.exists("users:1"));
    assert_eq!(store.events.borrow().last().map(|e| e.1), Some(EventOp::Delete));
}

#[test]
fn a_write_through_json_commit_merges_typed_members_into_the_document() {
    let rt = runtime();
    let store = FakeStore::default();
    store.docs.borrow_mut().insert("acct:1".into(), r#"{"name":"Ann","note":"kept"}"#.into());
    store.docs.borrow_mut().insert("__{acct:1}".into(), r#"{"score":"5"}"#.into());
    apply(&store, &rt, &row(2, "1"), &change(RowOp::Upsert, &[("score", set("5"))], &[]), &committed(&[]));
    let doc: serde_json::Value = serde_json::from_str(&store.docs.borrow()["acct:1"]).unwrap();
    assert_eq!(doc, serde_json::json!({"name": "Ann", "note": "kept", "score": 5}), "members not named stay");
    assert!(!store.docs.borrow().contains_key("__{acct:1}"), "the staging document goes once empty");
}

#[test]
fn a_rejected_row_is_dead_lettered_and_carried_by_its_newer_write_then_resolved_when_it_lands() {
    let rt = runtime();
    let store = FakeStore::default();
    let bad = change(RowOp::Upsert, &[("score", set("-1"))], &["u9"]);
    let newer = Write { op: RowOp::Upsert, fields: [(b"name".to_vec(), set("b"))].into_iter().collect(), acks: vec![] };
    queue_since(&rt, &row(0, "3"), newer);
    let carried = apply(&store, &rt, &row(0, "3"), &bad, &rejected("violates check constraint"));
    assert_eq!(*store.dead.borrow(), vec![("3".to_string(), "violates check constraint".to_string())]);
    assert!(store.events.borrow().is_empty(), "a rejected row is not announced");
    assert_eq!(store.acks.borrow()[0].2, Err(crate::model::queue::Rejected("violates check constraint".into())));
    let carried = carried.unwrap();
    assert!(carried.fields.contains_key(b"score") && carried.fields.contains_key(b"name"), "{carried:?}");
    let bytes = framed_len(encode_change(&carried).len());
    assert_eq!(
        rt.queue().pending(&row(0, "3")).map(|p| p.journal_bytes),
        Some(bytes),
        "the log will hold the merged change"
    );
    assert_eq!(rt.mapping(0).stats.failed.load(std::sync::atomic::Ordering::Relaxed), 1);

    // The merged change lands: its dead-letter entry is resolved.
    apply(&store, &rt, &row(0, "3"), &carried, &committed(&[]));
    assert!(store.listed.borrow().is_empty(), "the entry was resolved");
}
