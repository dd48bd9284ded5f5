//! The rules of Kafka apply against an in-memory store: hashes that run the
//! planned commands, offsets in a map, the cluster as a key → place table.

use super::{apply_batch, plan, retry_record, Applied, Batch, Plan, RecordStore, Refusal};
use crate::model::change::RowOp;
use crate::model::intent::Command;
use crate::model::kafka::{KafkaOrigin, KafkaSource};
use crate::model::mapping::{Mapping, Mappings};
use crate::redis::cluster::Place;
use crate::redis::deadletter;
use crate::sources::kafka::client::Fetched;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

type Hash = BTreeMap<String, String>;

#[derive(Default)]
struct FakeStore {
    /// False: a replica, or loading.
    not_writing: bool,
    offsets: RefCell<HashMap<String, i64>>,
    hashes: RefCell<HashMap<String, Hash>>,
    places: HashMap<String, Place>,
    /// Keys capture refuses as not synced.
    unsynced: Vec<String>,
    /// (key, op) of each change captured, in order.
    captured: RefCell<Vec<(String, RowOp)>>,
    /// (offset, why) of each dead letter.
    dead: RefCell<Vec<(i64, String, Option<String>)>>,
}

impl RecordStore for FakeStore {
    fn writing(&self) -> bool {
        !self.not_writing
    }

    fn offset_key(&self, source: &KafkaSource, partition: i32) -> String {
        source.offset_key(partition)
    }

    fn read_offset(&self, key: &str) -> Option<i64> {
        self.offsets.borrow().get(key).copied()
    }

    fn write_offset(&self, key: &str, next: i64) {
        self.offsets.borrow_mut().insert(key.to_string(), next);
    }

    fn place(&self, key: &str) -> Place {
        self.places.get(key).copied().unwrap_or(Place::Mine)
    }

    /// Runs the commands as Redis would on hashes of text.
    fn write(&self, plan: Plan) -> Result<(), Refusal> {
        if self.unsynced.contains(&plan.key) {
            return Err(Refusal::NotSynced { key: plan.key });
        }
        let mut hashes = self.hashes.borrow_mut();
        for (command, argv) in plan.commands {
            let args: Vec<String> = argv.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect();
            match command {
                Command::Hset => {
                    let hash = hashes.entry(args[1].clone()).or_default();
                    for pair in args[2..].chunks(2) {
                        hash.insert(pair[0].clone(), pair[1].clone());
                    }
                }
                Command::Hdel => {
                    let hash = hashes.entry(args[1].clone()).or_default();
                    args[2..].iter().for_each(|f| drop(hash.remove(f)));
                }
                Command::Del => args[1..].iter().for_each(|k| drop(hashes.remove(k))),
                other => panic!("a record never runs {other:?}"),
            }
        }
        self.captured.borrow_mut().push((plan.key, plan.write.op));
        Ok(())
    }

    fn dead_letter(&self, _: &Mapping, origin: KafkaOrigin, why: &Refusal) {
        self.dead.borrow_mut().push((origin.offset, why.to_string(), origin.payload));
    }
}

impl FakeStore {
    fn hash(&self, key: &str) -> Option<Hash> {
        self.hashes.borrow().get(key).cloned()
    }

    fn dead(&self) -> Vec<(i64, String, Option<String>)> {
        self.dead.borrow().clone()
    }
}

/// A mapping `ku` (`ku:<id>`) fed by topic `users`, ids in the `id` member.
fn kusers(mode: &str) -> Mappings {
    Mappings::parse(&format!(
        r#"{{"mappings": [{{"name": "ku", "table": "ku", "key_prefix": "ku:", "primary_key": "id",
        "mode": "{mode}", "kafka": {{"brokers": "127.0.0.1:9092", "topic": "users", "group": "g",
        "format": "json", "id_field": "id"}}}}]}}"#
    ))
    .unwrap()
}

fn record(offset: i64, value: Option<&str>) -> Fetched {
    Fetched { offset, key: Some(offset.to_string().into_bytes()), value: value.map(|v| v.as_bytes().to_vec()) }
}

/// Applies `records` of partition 0 expecting `expected` stored, up to `next`.
fn apply(store: &FakeStore, mappings: &Mappings, expected: Option<i64>, records: &[Fetched], next: i64) -> Applied {
    let m = &mappings.all()[0];
    let source = m.kafka.as_ref().unwrap();
    apply_batch(store, &Batch { m, source, partition: 0, expected, records, next })
}

fn offset(store: &FakeStore, mappings: &Mappings) -> Option<i64> {
    store.read_offset(&mappings.all()[0].kafka.as_ref().unwrap().offset_key(0))
}

fn hash(pairs: &[(&str, &str)]) -> Hash {
    pairs.iter().map(|(f, v)| (f.to_string(), v.to_string())).collect()
}

fn done(applied: u64, dead: u64, skipped: u64, next: i64, held: bool) -> Applied {
    Applied::Done { applied, dead, skipped, next, held }
}

#[test]
fn records_are_applied_in_order_and_the_offset_stored_past_them() {
    let (store, mappings) = (FakeStore::default(), kusers("write-behind"));
    let records = [
        record(5, Some(r#"{"id": 1, "name": "a"}"#)),
        record(6, Some(r#"{"id": 1, "name": "b", "seq": 2}"#)),
        record(7, Some(r#"{"id": 2, "name": "c"}"#)),
    ];
    assert_eq!(apply(&store, &mappings, None, &records, 8), done(3, 0, 0, 8, false));
    assert_eq!(store.hash("ku:1"), Some(hash(&[("name", "b"), ("seq", "2")])), "the later record wins");
    assert_eq!(offset(&store, &mappings), Some(8));
    let captured: Vec<_> = store.captured.borrow().iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(captured, ["ku:1", "ku:1", "ku:2"], "captured like a client's writes, in order");
}

#[test]
fn an_upsert_merges_null_members_remove_their_fields() {
    let (store, mappings) = (FakeStore::default(), kusers("write-behind"));
    store.hashes.borrow_mut().insert("ku:1".into(), hash(&[("name", "a"), ("city", "x"), ("other", "kept")]));
    let records = [record(0, Some(r#"{"id": 1, "name": "b", "city": null, "tags": [1, "t"]}"#))];
    apply(&store, &mappings, None, &records, 1);
    assert_eq!(store.hash("ku:1"), Some(hash(&[("name", "b"), ("other", "kept"), ("tags", r#"[1,"t"]"#)])));
}

#[test]
fn a_tombstone_deletes_the_row() {
    let (store, mappings) = (FakeStore::default(), kusers("write-behind"));
    store.hashes.borrow_mut().insert("ku:4".into(), hash(&[("name", "a")]));
    assert_eq!(apply(&store, &mappings, None, &[record(4, None)], 5), done(1, 0, 0, 5, false));
    assert_eq!(store.hash("ku:4"), None);
    assert_eq!(*store.captured.borrow(), [("ku:4".to_string(), RowOp::Delete)]);
}

#[test]
fn write_through_writes_the_staging_key_and_a_tombstone_deletes_both() {
    let mappings = kusers("write-through");
    let m = &mappings.all()[0];
    let upsert = plan(m, crate::model::kafka::Decoded::Upsert { id: "1".into(), fields: vec![("a".into(), None)] });
    assert_eq!(upsert.key, "__{ku:1}");
    assert_eq!(upsert.commands, [(Command::Hdel, vec![b"HDEL".to_vec(), b"__{ku:1}".to_vec(), b"a".to_vec()])]);
    let delete = plan(m, crate::model::kafka::Decoded::Delete { id: "1".into() });
    assert_eq!(delete.commands, [(Command::Del, vec![b"DEL".to_vec(), b"ku:1".to_vec(), b"__{ku:1}".to_vec()])]);
    assert_eq!(delete.write.op, RowOp::Delete);
}

#[test]
fn bad_records_are_dead_lettered_with_their_bytes_and_the_stream_goes_on() {
    let store = FakeStore { unsynced: vec!["ku:3".into()], ..Default::default() };
    let mappings = kusers("write-behind");
    let records = [
        record(0, Some("not json")),
        record(1, Some(r#"{"name": "no id"}"#)),
        record(2, Some(r#"{"id": 3}"#)),
        record(3, Some(r#"{"id": 2, "name": "ok"}"#)),
    ];
    assert_eq!(apply(&store, &mappings, None, &records, 4), done(1, 3, 0, 4, false));
    let dead = store.dead();
    assert_eq!(dead.iter().map(|d| d.0).collect::<Vec<_>>(), [0, 1, 2]);
    assert!(dead[0].1.starts_with("the record is not valid JSON"), "{dead:?}");
    assert_eq!(dead[0].2.as_deref(), Some("not json"), "the raw bytes are kept");
    assert_eq!(dead[1].1, r#"the record has no id field "id""#);
    assert_eq!(dead[2].1, "ku:3 is not a key this mapping writes to Postgres");
    assert!(store.hash("ku:2").is_some());
    assert_eq!(offset(&store, &mappings), Some(4));
}

#[test]
fn a_stale_offset_writes_nothing() {
    let (store, mappings) = (FakeStore::default(), kusers("write-behind"));
    store.write_offset(&mappings.all()[0].kafka.as_ref().unwrap().offset_key(0), 10);
    let records = [record(3, Some(r#"{"id": 1}"#))];
    assert_eq!(apply(&store, &mappings, Some(3), &records, 4), Applied::Stale);
    assert_eq!(apply(&store, &mappings, None, &records, 4), Applied::Stale, "a flush or a restore moved it");
    assert!(store.captured.borrow().is_empty());
    assert_eq!(offset(&store, &mappings), Some(10));
}

#[test]
fn a_server_that_does_not_write_stays_idle() {
    let (store, mappings) = (FakeStore { not_writing: true, ..Default::default() }, kusers("write-behind"));
    assert_eq!(apply(&store, &mappings, None, &[record(0, Some(r#"{"id": 1}"#))], 1), Applied::Idle);
    assert!(store.captured.borrow().is_empty());
    assert_eq!(offset(&store, &mappings), None);
}

#[test]
fn other_nodes_records_are_skipped_and_a_moving_slot_holds_the_batch() {
    let mut store = FakeStore::default();
    store.places.insert("ku:2".into(), Place::Elsewhere);
    store.places.insert("ku:3".into(), Place::Moving);
    let mappings = kusers("write-behind");
    let records = [
        record(0, Some(r#"{"id": 1}"#)),
        record(1, Some(r#"{"id": 2}"#)),
        record(2, Some(r#"{"id": 3}"#)),
        record(3, Some(r#"{"id": 4}"#)),
    ];
    assert_eq!(apply(&store, &mappings, None, &records, 4), done(1, 0, 1, 2, true));
    assert_eq!(offset(&store, &mappings), Some(2), "fetched again from the held record");
    assert!(store.hash("ku:4").is_none(), "nothing after the held record is applied");
}

#[test]
fn a_malformed_record_belongs_to_the_node_of_its_dead_letter() {
    let mappings = kusers("write-behind");
    let origin = |offset| KafkaOrigin { topic: "users".into(), partition: 0, offset, key: None, payload: None };
    let mut store = FakeStore::default();
    store.places.insert(deadletter::record_entry_id("ku", &origin(0)), Place::Elsewhere);
    let records = [record(0, Some("not json")), record(1, Some("nor this"))];
    assert_eq!(apply(&store, &mappings, None, &records, 2), done(0, 1, 1, 2, false));
    assert_eq!(store.dead().iter().map(|d| d.0).collect::<Vec<_>>(), [1]);
}

#[test]
fn a_retried_record_is_applied_or_dead_lettered_again() {
    let mappings = kusers("write-behind");
    let m = &mappings.all()[0];
    let origin = |payload: &str| KafkaOrigin {
        topic: "users".into(),
        partition: 0,
        offset: 9,
        key: None,
        payload: Some(payload.to_string()),
    };
    let mut store = FakeStore::default();
    assert!(retry_record(&store, m, origin(r#"{"id": 1, "name": "a"}"#)));
    assert_eq!(store.hash("ku:1"), Some(hash(&[("name", "a")])));
    assert!(!retry_record(&store, m, origin("{")));
    store.places.insert("ku:2".into(), Place::Elsewhere);
    assert!(!retry_record(&store, m, origin(r#"{"id": 2}"#)));
    let whys: Vec<String> = store.dead().into_iter().map(|d| d.1).collect();
    assert!(whys[0].starts_with("the record is not valid JSON"), "{whys:?}");
    assert_eq!(whys[1], "ku:2 lives on another cluster node: retry there (SYNC.RETRY is per node)");
    let plain = Mappings::parse(
        r#"{"mappings": [{"name": "ku", "table": "ku", "key_prefix": "ku:", "primary_key": "id", "mode": "write-behind"}]}"#,
    )
    .unwrap();
    assert!(!retry_record(&store, &plain.all()[0], origin(r#"{"id": 1}"#)));
    assert_eq!(store.dead().last().map(|d| d.1.clone()), Some("the mapping has no kafka source".into()));
}
