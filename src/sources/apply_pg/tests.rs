//! The rules of Postgres -> Redis apply against an in-memory store and a real
//! queue (whose snapshot decides which rows Redis is newer for).

use super::{apply_rows, Applied, Batch, RowStore};
use crate::model::mapping::{Mapping, Mappings};
use crate::model::queue::{Journaled, Queue, RowKey};
use crate::pg::reader::PgRow;
use crate::redis::cluster::Place;
use crate::redis::notify::{Event, EventOp, Source};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

/// Hashes as maps of fields, the cluster as a key → place table (absent:
/// mine), and a record of every event and every "rows changed" notice.
#[derive(Default)]
struct FakeStore {
    hashes: RefCell<HashMap<String, BTreeMap<String, String>>>,
    places: HashMap<String, Place>,
    writes: RefCell<Vec<String>>,
    events: RefCell<Vec<(String, EventOp, Source)>>,
    event_fields: RefCell<Vec<Vec<String>>>,
    changed: RefCell<Vec<String>>,
}

impl RowStore for FakeStore {
    fn place(&self, key: &str) -> Place {
        self.places.get(key).copied().unwrap_or(Place::Mine)
    }

    /// As the live store: a hash already holding the row is left alone;
    /// mapped fields set, NULL columns removed, other fields kept.
    fn write(&self, _: &Mapping, key: &str, fields: &[(String, Option<String>)]) -> bool {
        let mut hashes = self.hashes.borrow_mut();
        let hash = hashes.entry(key.to_string()).or_default();
        if fields.iter().all(|(f, v)| hash.get(f) == v.as_ref()) {
            return false;
        }
        for (field, value) in fields {
            match value {
                Some(value) => hash.insert(field.clone(), value.clone()),
                None => hash.remove(field),
            };
        }
        self.writes.borrow_mut().push(key.to_string());
        true
    }

    fn delete(&self, key: &str) {
        self.hashes.borrow_mut().remove(key);
    }

    fn announce(&self, _: &Mapping, _: usize, event: &Event<'_>) {
        self.events.borrow_mut().push((event.key.to_string(), event.op, event.source));
        self.event_fields.borrow_mut().push(event.fields.clone());
    }

    fn rows_changed(&self, _: usize, ids: &[&str]) {
        self.changed.borrow_mut().extend(ids.iter().map(|id| id.to_string()));
    }
}

impl FakeStore {
    fn hash(&self, key: &str) -> Option<BTreeMap<String, String>> {
        self.hashes.borrow().get(key).cloned()
    }

    fn events(&self) -> Vec<(String, EventOp, Source)> {
        self.events.borrow().clone()
    }
}

/// A mapping `users` (`users:<id>`) with events, and with `notify_reload` when asked.
fn users(notify_reload: bool) -> Mappings {
    Mappings::parse(&format!(
        r#"{{"mappings": [{{"name": "users", "table": "users", "key_prefix": "users:",
        "primary_key": "id", "mode": "write-behind", "notify": "ev", "notify_reload": {notify_reload}}}]}}"#
    ))
    .unwrap()
}

fn row(id: &str, fields: &[(&str, Option<&str>)]) -> PgRow {
    PgRow { id: id.to_string(), fields: fields.iter().map(|(f, v)| (f.to_string(), v.map(str::to_string))).collect() }
}

fn gone(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|id| id.to_string()).collect()
}

/// A client's write to row `id`, captured into the queue.
fn captured(queue: &Queue, id: &str) {
    queue.push(&RowKey { mapping: 0, id: id.into() }, Journaled::Fresh { bytes: 10 });
}

/// Applies `rows` and `gone` of mapping 0 with a snapshot taken before any of
/// the queue's writes that `after` makes.
fn apply(
    store: &FakeStore,
    mappings: &Mappings,
    queue: &Queue,
    rows: &[PgRow],
    gone: &[String],
    source: Source,
    after: impl FnOnce(),
) -> Applied {
    let snapshot = queue.snapshot();
    after();
    let batch = Batch { mapping: 0, m: &mappings.all()[0], rows, gone, source };
    apply_rows(store, &snapshot, &batch)
}

fn fields(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(f, v)| (f.to_string(), v.to_string())).collect()
}

#[test]
fn rows_are_written_in_order_and_announced() {
    let (store, mappings, queue) = (FakeStore::default(), users(false), Queue::default());
    let rows = [row("1", &[("name", Some("a"))]), row("2", &[("name", Some("b"))])];
    let applied = apply(&store, &mappings, &queue, &rows, &[], Source::Postgres, || ());
    assert_eq!(applied, Applied { later: Vec::new(), written: 2 });
    assert_eq!(*store.writes.borrow(), ["users:1", "users:2"]);
    assert_eq!(
        store.events(),
        [("users:1".into(), EventOp::Upsert, Source::Postgres), ("users:2".into(), EventOp::Upsert, Source::Postgres)]
    );
    assert_eq!(*store.changed.borrow(), ["1", "2"], "loads in flight hear of every row");
}

#[test]
fn null_columns_are_removed_and_unmapped_fields_kept() {
    let (store, mappings, queue) = (FakeStore::default(), users(false), Queue::default());
    store.hashes.borrow_mut().insert("users:1".into(), fields(&[("name", "a"), ("city", "x"), ("mine", "kept")]));
    let rows = [row("1", &[("name", Some("b")), ("city", None)])];
    apply(&store, &mappings, &queue, &rows, &[], Source::Postgres, || ());
    assert_eq!(store.hash("users:1"), Some(fields(&[("name", "b"), ("mine", "kept")])));
}

#[test]
fn a_row_redis_already_holds_is_counted_but_not_announced() {
    let (store, mappings, queue) = (FakeStore::default(), users(false), Queue::default());
    store.hashes.borrow_mut().insert("users:1".into(), fields(&[("name", "a")]));
    let applied = apply(&store, &mappings, &queue, &[row("1", &[("name", Some("a"))])], &[], Source::Postgres, || ());
    assert_eq!(applied.written, 1);
    assert!(store.events().is_empty(), "a catch-up publishes only what changed");
}

#[test]
fn a_reload_announces_every_row_only_with_notify_reload() {
    let rows = [row("1", &[("name", Some("a"))])];
    for notify_reload in [false, true] {
        let (store, mappings, queue) = (FakeStore::default(), users(notify_reload), Queue::default());
        store.hashes.borrow_mut().insert("users:1".into(), fields(&[("name", "a")]));
        apply(&store, &mappings, &queue, &rows, &[], Source::Reload, || ());
        let expected = match notify_reload {
            true => vec![("users:1".to_string(), EventOp::Upsert, Source::Reload)],
            false => Vec::new(),
        };
        assert_eq!(store.events(), expected, "notify_reload: {notify_reload}");
    }
}

#[test]
fn gone_rows_are_deleted_and_announced_after_the_rows() {
    let (store, mappings, queue) = (FakeStore::default(), users(false), Queue::default());
    store.hashes.borrow_mut().insert("users:9".into(), fields(&[("name", "z")]));
    let applied =
        apply(&store, &mappings, &queue, &[row("1", &[("name", Some("a"))])], &gone(&["9"]), Source::Postgres, || ());
    assert_eq!(applied.written, 2);
    assert_eq!(store.hash("users:9"), None);
    let ops: Vec<_> = store.events().into_iter().map(|(key, op, _)| (key, op)).collect();
    assert_eq!(ops, [("users:1".into(), EventOp::Upsert), ("users:9".into(), EventOp::Delete)]);
}

#[test]
fn a_row_redis_changed_after_the_snapshot_is_left_for_later() {
    let (store, mappings, queue) = (FakeStore::default(), users(false), Queue::default());
    let rows = [row("1", &[("name", Some("old"))]), row("2", &[("name", Some("b"))])];
    let applied = apply(&store, &mappings, &queue, &rows, &gone(&["3"]), Source::Postgres, || {
        captured(&queue, "1");
        captured(&queue, "3");
    });
    assert_eq!(applied, Applied { later: gone(&["1", "3"]), written: 1 });
    assert_eq!(*store.writes.borrow(), ["users:2"]);
    assert_eq!(store.events().len(), 1, "no event for a row not written");
}

#[test]
fn a_row_still_on_its_way_to_postgres_is_not_overwritten() {
    let (store, mappings, queue) = (FakeStore::default(), users(false), Queue::default());
    captured(&queue, "1");
    let applied = apply(&store, &mappings, &queue, &[row("1", &[("name", Some("old"))])], &[], Source::Reload, || ());
    assert_eq!(applied, Applied { later: gone(&["1"]), written: 0 });
    assert!(store.writes.borrow().is_empty());
}

#[test]
fn other_nodes_rows_are_skipped_and_moving_ones_left_for_later() {
    let mut store = FakeStore::default();
    store.places.insert("users:2".into(), Place::Elsewhere);
    store.places.insert("users:3".into(), Place::Moving);
    store.places.insert("users:4".into(), Place::Elsewhere);
    store.hashes.borrow_mut().insert("users:4".into(), fields(&[("name", "theirs")]));
    let (mappings, queue) = (users(false), Queue::default());
    let rows = [row("1", &[("n", Some("a"))]), row("2", &[("n", Some("b"))]), row("3", &[("n", Some("c"))])];
    let applied = apply(&store, &mappings, &queue, &rows, &gone(&["4"]), Source::Postgres, || ());
    assert_eq!(applied, Applied { later: gone(&["3"]), written: 1 }, "another node's rows are not counted");
    assert_eq!(*store.writes.borrow(), ["users:1"]);
    assert!(store.hash("users:4").is_some(), "another node's key is not deleted");
    assert_eq!(store.events().len(), 1);
}

#[test]
fn a_newer_row_is_left_for_later_even_on_another_node() {
    let mut store = FakeStore::default();
    store.places.insert("users:1".into(), Place::Elsewhere);
    let (mappings, queue) = (users(false), Queue::default());
    captured(&queue, "1");
    let applied = apply(&store, &mappings, &queue, &[row("1", &[("n", Some("a"))])], &[], Source::Postgres, || ());
    assert_eq!(applied.later, ["1"], "the snapshot is asked first, as before");
}

#[test]
fn loads_in_flight_hear_of_every_row_even_those_not_written() {
    let mut store = FakeStore::default();
    store.places.insert("users:2".into(), Place::Elsewhere);
    let (mappings, queue) = (users(false), Queue::default());
    let rows = [row("1", &[("n", Some("a"))]), row("2", &[("n", Some("b"))])];
    apply(&store, &mappings, &queue, &rows, &gone(&["3"]), Source::Postgres, || captured(&queue, "1"));
    assert_eq!(*store.changed.borrow(), ["1", "2", "3"]);
}

#[test]
fn an_event_names_every_column_of_the_row_nulls_included() {
    let (store, mappings, queue) = (FakeStore::default(), users(false), Queue::default());
    let rows = [row("1", &[("name", Some("a")), ("city", None)])];
    apply(&store, &mappings, &queue, &rows, &gone(&["2"]), Source::Postgres, || ());
    assert_eq!(*store.event_fields.borrow(), [vec!["name".to_string(), "city".to_string()], Vec::new()]);
}
