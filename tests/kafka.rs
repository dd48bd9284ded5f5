//! The Kafka source against a real Kafka-protocol broker (`tansu`): records
//! become hashes, then rows, with one change event each; tombstones delete;
//! `kill -9` mid-stream neither loses nor repeats a record; a frozen broker
//! shows in SYNC.STATUS and loses nothing; bad records are dead-lettered with
//! their offset and SYNC.RETRY applies them again.

mod common;

use common::kafka::Broker;
use common::*;
use redis::Commands;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SQL: &str = "CREATE TABLE kusers (id bigint PRIMARY KEY, name text, seq bigint, tags text)";
const TOPIC: &str = "users";

fn mapping(brokers: &str, extra: &str) -> String {
    format!(
        r#"{{"mappings": [{{"name": "kusers", "table": "kusers", "key_prefix": "kusers:", "primary_key": "id",
            "mode": "write-behind", "notify": "sync:kusers"{extra},
            "kafka": {{"brokers": "{}", "topic": "{TOPIC}", "group": "pgsync", "format": "json", "id_field": "id"}}}}]}}"#,
        brokers
    )
}

/// Record `i`: key and JSON value for row `i`.
fn record(i: i64) -> (Option<String>, Option<String>) {
    (Some(i.to_string()), Some(format!(r#"{{"id": {i}, "name": "n{i}", "seq": {i}, "tags": ["a", {i}]}}"#)))
}

/// Produces records `ids` spread over 3 partitions (`i % 3`).
fn produce(broker: &Broker, ids: std::ops::RangeInclusive<i64>) {
    for partition in 0..3 {
        let records = ids.clone().filter(|i| i % 3 == partition).map(record).collect();
        broker.produce(TOPIC, partition as i32, records);
    }
}

fn pg_count(db: &TestDb) -> i64 {
    db.client().query_one("SELECT count(*) FROM kusers", &[]).expect("count").get(0)
}

fn dbsize(c: &mut redis::Connection) -> i64 {
    redis::cmd("DBSIZE").query(c).expect("DBSIZE")
}

fn keys_count(c: &mut redis::Connection, pattern: &str) -> usize {
    let keys: Vec<String> = c.keys(pattern).expect("KEYS");
    keys.len()
}

/// Counts messages per channel on a pattern, from a thread that ends with the
/// server (no read timeout: a timeout in the middle of a message would lose it).
struct Counter {
    counts: Arc<Mutex<HashMap<String, u32>>>,
}

impl Counter {
    fn start(port: u16, pattern: &str) -> Counter {
        let counts = Arc::new(Mutex::new(HashMap::new()));
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let (shared, pattern) = (counts.clone(), pattern.to_string());
        std::thread::spawn(move || {
            let mut c = connect(port);
            let mut pubsub = c.as_pubsub();
            pubsub.psubscribe(&pattern).expect("PSUBSCRIBE");
            let _ = ready_tx.send(());
            while let Ok(message) = pubsub.get_message() {
                let payload: String = message.get_payload().unwrap_or_default();
                let name = format!("{}|{payload}", message.get_channel_name());
                *shared.lock().unwrap().entry(name).or_insert(0) += 1;
            }
        });
        ready.recv().expect("subscriber ready");
        Counter { counts }
    }

    /// Messages per channel (and payload, for keyspace events).
    fn snapshot(&self) -> HashMap<String, u32> {
        self.counts.lock().unwrap().clone()
    }

    fn total(&self) -> u32 {
        self.counts.lock().unwrap().values().sum()
    }
}

/// A broker with the topic, a database, and a server consuming the topic.
fn setup(extra: &[(&str, &str)]) -> (Broker, TestDb, Server) {
    let broker = Broker::start();
    broker.create_topic(TOPIC, 3);
    let db = test_db(SQL);
    let server = Server::with_mapping(&db, &mapping(&broker.address(), ""), extra, &[]);
    (broker, db, server)
}

#[test]
fn json_records_become_hashes_then_rows_with_one_event_each() {
    let (broker, db, server) = setup(&[]);
    let mut c = server.conn();
    let events = Counter::start(server.port, "sync:kusers:*");
    produce(&broker, 1..=10_000);
    eventually("10,000 hashes", || keys_count(&mut c, "kusers:*") == 10_000);
    let h = hgetall(&mut c, "kusers:4242");
    assert_eq!(h.get("name").map(String::as_str), Some("n4242"));
    assert_eq!(h.get("tags").map(String::as_str), Some(r#"["a",4242]"#), "nested values as JSON text");
    assert!(!h.contains_key("id"), "the id lives in the key name");
    eventually("10,000 rows", || pg_count(&db) == 10_000);
    let row = db.client().query_one("SELECT name, seq, tags FROM kusers WHERE id = 77", &[]).unwrap();
    assert_eq!((row.get::<_, String>(0), row.get::<_, i64>(1)), ("n77".to_string(), 77));
    assert_eq!(row.get::<_, String>(2), r#"["a",77]"#);
    eventually("10,000 change events", || events.total() >= 10_000);
    std::thread::sleep(Duration::from_millis(300));
    let counts = events.snapshot();
    let channels: std::collections::HashSet<String> =
        counts.keys().map(|k| k.split('|').next().unwrap_or_default().to_string()).collect();
    assert_eq!(channels.len(), 10_000, "an event for every row");
    assert_eq!(events.total(), 10_000, "exactly one event per record");

    let s = status(&mut c, "kusers");
    assert_eq!(s["kafka"], "up");
    assert_eq!(s["kafka_offsets"], "0=3333 1=3334 2=3333");
    assert_eq!(s["kafka_lag"], "0");
    assert_eq!(s["kafka_applied"], "10000");
    let offset: String = c.get("pgsync:kafka:pgsync:users:1").unwrap();
    assert_eq!(offset, "3334", "the next offset of partition 1 is in Redis");
    let info: String = redis::cmd("INFO").arg("pgsync").query(&mut c).unwrap();
    assert!(info.contains("kusers_kafka_offsets:0=3333 1=3334 2=3333"), "{info}");
}

#[test]
fn a_tombstone_deletes_the_key_and_the_row() {
    let (broker, db, server) = setup(&[]);
    let mut c = server.conn();
    produce(&broker, 1..=3);
    eventually("three rows", || pg_count(&db) == 3);
    broker.produce(TOPIC, 2, vec![(Some("2".into()), None)]);
    eventually("the key deleted", || !exists(&mut c, "kusers:2"));
    eventually("the row deleted", || pg_count(&db) == 2);
    assert!(exists(&mut c, "kusers:1") && exists(&mut c, "kusers:3"));
}

#[test]
fn kill9_mid_stream_applies_every_record_exactly_once() {
    const N: i64 = 50_000;
    let broker = Broker::start();
    broker.create_topic(TOPIC, 3);
    let db = test_db(SQL);
    let mut server = Server::with_mapping(
        &db,
        &mapping(&broker.address(), ""),
        &[("retry-max-delay-ms", "300")],
        &["--appendonly", "yes", "--appendfsync", "always", "--notify-keyspace-events", "Kh"],
    );
    produce(&broker, 1..=N);
    // Every `hset` event of a key is a write of that key's one record: a record
    // applied twice shows as a second event (events follow the fsync of their
    // write, so none is seen for a write the AOF lost).
    let events = Counter::start(server.port, "__keyspace@0__:kusers:*");
    let mut c = server.conn();
    eventually("some records applied", || dbsize(&mut c) > 5_000);
    server.kill9();
    // The broker is frozen while the server comes back, so nothing is applied
    // before the event counter has subscribed again.
    broker.pause();
    server.restart();
    let mut c = server.conn();
    let before = keys_count(&mut c, "kusers:*");
    assert!((5_000..N as usize).contains(&before), "killed mid-stream ({before} keys)");
    let events_after = Counter::start(server.port, "__keyspace@0__:kusers:*");
    broker.resume();
    eventually("every record applied", || keys_count(&mut c, "kusers:*") == N as usize);
    for i in (1..=N).step_by(97) {
        let seq: String = c.hget(format!("kusers:{i}"), "seq").unwrap();
        assert_eq!(seq, i.to_string(), "kusers:{i} holds its own record");
    }
    let s = status(&mut c, "kusers");
    eventually("no lag", || status(&mut c, "kusers")["kafka_lag"] == "0");
    assert_eq!(status(&mut c, "kusers")["kafka_offsets"], "0=16666 1=16667 2=16667", "{s:?}");
    // Before the crash: no key written twice. After it: exactly the records
    // the AOF had not kept, each once (a record applied again would add a key).
    eventually("the last events", || events_after.total() as usize >= N as usize - before);
    std::thread::sleep(Duration::from_millis(300));
    let repeated =
        |counts: HashMap<String, u32>| counts.into_iter().filter(|(_, n)| *n > 1).take(5).collect::<Vec<_>>();
    assert!(repeated(events.snapshot()).is_empty(), "applied twice before the crash");
    assert!(repeated(events_after.snapshot()).is_empty(), "applied twice after the restart");
    assert_eq!(events_after.snapshot().len(), N as usize - before, "records applied after the restart");
    eventually("every row in Postgres", || pg_count(&db) == N);
}

#[test]
fn a_frozen_broker_shows_down_then_up_and_loses_nothing() {
    let (broker, db, server) = setup(&[("retry-max-delay-ms", "300")]);
    let mut c = server.conn();
    produce(&broker, 1..=3_000);
    eventually("the first records", || keys_count(&mut c, "kusers:*") == 3_000);
    broker.pause();
    eventually("SYNC.STATUS shows the source down", || status(&mut c, "kusers")["kafka"].starts_with("down"));
    assert_eq!(redis::cmd("PING").query::<String>(&mut c).unwrap(), "PONG", "Redis keeps serving");
    broker.resume();
    produce(&broker, 3_001..=6_000);
    eventually("every record", || keys_count(&mut c, "kusers:*") == 6_000);
    eventually("up again", || status(&mut c, "kusers")["kafka"] == "up");
    eventually("every row", || pg_count(&db) == 6_000);
}

#[test]
fn a_broker_killed_and_started_again_is_followed_again() {
    let (broker, db, server) = setup(&[("retry-max-delay-ms", "300")]);
    let mut c = server.conn();
    produce(&broker, 1..=1_500);
    eventually("the first records", || keys_count(&mut c, "kusers:*") == 1_500);
    let port = broker.port;
    drop(broker);
    eventually("SYNC.STATUS shows the source down", || status(&mut c, "kusers")["kafka"].starts_with("down"));
    // A memory broker comes back empty: its logs restart at offset 0, behind
    // the offsets Redis holds, so the source starts again from the earliest.
    let broker = Broker::start_on(port);
    broker.create_topic(TOPIC, 3);
    produce(&broker, 1_501..=1_800);
    eventually("the records after the restart", || keys_count(&mut c, "kusers:*") == 1_800);
    eventually("up again", || status(&mut c, "kusers")["kafka"] == "up");
    eventually("every row", || pg_count(&db) == 1_800);
}

#[test]
fn a_broker_down_at_start_is_waited_for() {
    let port = free_port();
    let db = test_db(SQL);
    let file = mapping(&format!("127.0.0.1:{port}"), "");
    let server = Server::with_mapping(&db, &file, &[("retry-max-delay-ms", "300")], &[]);
    let mut c = server.conn();
    eventually("SYNC.STATUS shows the source down", || status(&mut c, "kusers")["kafka"].starts_with("down"));
    let broker = Broker::start_on(port);
    broker.create_topic(TOPIC, 3);
    produce(&broker, 1..=300);
    eventually("every record", || keys_count(&mut c, "kusers:*") == 300);
    assert_eq!(status(&mut c, "kusers")["kafka"], "up");
}

/// `SYNC.FAILED` entries as name -> value text.
fn failed(c: &mut redis::Connection) -> Vec<HashMap<String, String>> {
    let entries: Vec<Vec<redis::Value>> = redis::cmd("SYNC.FAILED").query(c).expect("SYNC.FAILED");
    entries.into_iter().map(pairs).collect()
}

#[test]
fn a_bad_record_is_dead_lettered_with_its_offset_and_retry_applies_it_again() {
    let (broker, db, server) = setup(&[]);
    let mut c = server.conn();
    // Partition 2 holds ids 2, 5, 8, ...: id 500 is its record at offset 166.
    for partition in 0..3 {
        let records = (1..=1000)
            .filter(|i| i % 3 == partition)
            .map(|i| if i == 500 { (Some("500".into()), Some("{not json".into())) } else { record(i) })
            .collect();
        broker.produce(TOPIC, partition as i32, records);
    }
    eventually("999 rows", || pg_count(&db) == 999);
    assert_eq!(keys_count(&mut c, "kusers:*"), 999);
    let entries = failed(&mut c);
    assert_eq!(entries.len(), 1, "{entries:?}");
    let e = &entries[0];
    assert_eq!(e["entry"], "kusers:kafka:users:2:166");
    assert_eq!((e["topic"].as_str(), e["partition"].as_str(), e["offset"].as_str()), (TOPIC, "2", "166"));
    assert_eq!(e["payload"], "{not json");
    assert!(e["error"].contains("not valid JSON"), "{}", e["error"]);
    let s = status(&mut c, "kusers");
    assert_eq!((s["kafka_applied"].as_str(), s["kafka_dead_lettered"].as_str()), ("999", "1"));

    // A record that meets a key of another type is dead-lettered too; once the
    // key is gone, SYNC.RETRY applies it.
    let _: () = c.set("kusers:1001", "not a hash").unwrap();
    broker.produce(TOPIC, 2, vec![record(1001)]);
    eventually("the second entry", || failed(&mut c).len() == 2);
    let _: i64 = c.del("kusers:1001").unwrap();
    let retried: i64 = redis::cmd("SYNC.RETRY").arg("kusers:kafka:users:2:333").query(&mut c).unwrap();
    assert_eq!(retried, 1);
    assert_eq!(hgetall(&mut c, "kusers:1001").get("name").map(String::as_str), Some("n1001"));
    eventually("row 1001", || pg_count(&db) == 1000);
    let again: i64 = redis::cmd("SYNC.RETRY").arg("kusers:kafka:users:2:166").query(&mut c).unwrap();
    assert_eq!(again, 0, "still not JSON");
    let entries = failed(&mut c);
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["count"], "2");
}

#[test]
fn a_replica_is_idle_and_resumes_from_the_replicated_offsets_when_promoted() {
    let broker = Broker::start();
    broker.create_topic(TOPIC, 3);
    let db = test_db(SQL);
    let file = mapping(&broker.address(), "");
    let extra = [("retry-max-delay-ms", "300")];
    let mut primary = Server::with_mapping(&db, &file, &extra, &[]);
    let replicaof = primary.port.to_string();
    let replica = Server::with_mapping(
        &db,
        &file,
        &extra,
        &["--replicaof", "127.0.0.1", &replicaof, "--notify-keyspace-events", "Kh"],
    );
    let (mut p, mut r) = (primary.conn(), replica.conn());
    produce(&broker, 1..=3_000);
    eventually("the primary applied the records", || keys_count(&mut p, "kusers:*") == 3_000);
    let acked: i64 = redis::cmd("WAIT").arg(1).arg(10_000).query(&mut p).unwrap();
    assert_eq!(acked, 1);
    let st = status(&mut r, "kusers");
    assert_eq!((st["kafka"].as_str(), st["kafka_applied"].as_str()), ("idle: replica", "0"), "{st:?}");
    let offset: String = r.get("pgsync:kafka:pgsync:users:0").unwrap();
    assert_eq!(offset, "1000", "the offsets reached the replica with the records");

    primary.kill9();
    let events = Counter::start(replica.port, "__keyspace@0__:kusers:*");
    let _: () = redis::cmd("REPLICAOF").arg("NO").arg("ONE").query(&mut r).unwrap();
    produce(&broker, 3_001..=4_500);
    eventually("the promoted replica applied the new records", || keys_count(&mut r, "kusers:*") == 4_500);
    eventually("no lag", || status(&mut r, "kusers")["kafka_lag"] == "0");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(events.snapshot().len(), 1_500, "only the new records were applied");
    assert_eq!(status(&mut r, "kusers")["kafka_applied"], "1500");
    eventually("every row", || pg_count(&db) == 4_500);
}

/// `mapping` with the `"tls"` object `tls`.
fn tls_mapping(broker: &Broker, tls: &str) -> String {
    mapping(&broker.address(), "").replace(r#""id_field": "id""#, &format!(r#""id_field": "id", "tls": {tls}"#))
}

/// A `"tls"` object trusting `ca`.
fn trusting(ca: &str) -> String {
    format!(r#"{{"ca_file": "{ca}"}}"#)
}

/// A TLS broker (asking for client certificates or not) holding records
/// `1..=records`, and its certificates.
fn tls_broker(client_certs: bool, records: i64) -> (common::kafka::TestCerts, Broker) {
    let certs = common::kafka::TestCerts::make();
    let broker = Broker::start_tls(&certs, client_certs);
    broker.create_topic(TOPIC, 3);
    produce(&broker, 1..=records);
    (certs, broker)
}

#[test]
fn records_arrive_over_tls_and_a_broker_certificate_from_another_ca_is_refused() {
    let (certs, broker) = tls_broker(false, 300);
    let db = test_db(SQL);
    let server = Server::with_mapping(&db, &tls_mapping(&broker, &trusting(&certs.ca)), &[], &[]);
    let mut c = server.conn();
    eventually("records over TLS", || keys_count(&mut c, "kusers:*") == 300);
    sync_wait(&mut c);
    assert_eq!(pg_count(&db), 300);
    assert_eq!(status(&mut c, "kusers")["kafka"], "up");

    // The same broker, trusted through another CA, or through the system's
    // certificates (`{}`), which know nothing of the test CA.
    for tls in [trusting(&certs.other_ca), "{}".to_string()] {
        let db = test_db(SQL);
        let distrustful = Server::with_mapping(&db, &tls_mapping(&broker, &tls), &[], &[]);
        let mut c = distrustful.conn();
        eventually("the source reports the certificate", || {
            let state = status(&mut c, "kusers")["kafka"].clone();
            state.starts_with("down") && state.to_lowercase().contains("certificate")
        });
        let pong: String = redis::cmd("PING").query(&mut c).unwrap();
        assert_eq!(pong, "PONG", "Redis keeps serving");
        assert_eq!(keys_count(&mut c, "kusers:*"), 0, "nothing consumed from an untrusted broker ({tls})");
    }

    // The files are read at every connection: the right CA written over the
    // configured file is used by the next attempt, without a restart.
    let dir = TempDir::new("pgsync_kafka_renewed");
    let renewed = dir.0.join("ca.pem").display().to_string();
    std::fs::copy(&certs.other_ca, &renewed).unwrap();
    let db = test_db(SQL);
    let server =
        Server::with_mapping(&db, &tls_mapping(&broker, &trusting(&renewed)), &[("retry-max-delay-ms", "300")], &[]);
    let mut c = server.conn();
    eventually("the source refuses the broker", || status(&mut c, "kusers")["kafka"].starts_with("down"));
    std::fs::copy(&certs.ca, &renewed).unwrap();
    eventually("records over TLS with the renewed CA file", || keys_count(&mut c, "kusers:*") == 300);
}

#[test]
fn a_broker_that_asks_for_a_client_certificate_gets_the_configured_one() {
    let (certs, broker) = tls_broker(true, 90);
    let db = test_db(SQL);
    let with_cert = format!(
        r#"{{"ca_file": "{}", "cert_file": "{}", "key_file": "{}"}}"#,
        certs.ca, certs.client_cert, certs.client_key
    );
    let server = Server::with_mapping(&db, &tls_mapping(&broker, &with_cert), &[], &[]);
    let mut c = server.conn();
    eventually("records over mutual TLS", || keys_count(&mut c, "kusers:*") == 90);

    let db = test_db(SQL);
    let without = Server::with_mapping(&db, &tls_mapping(&broker, &trusting(&certs.ca)), &[], &[]);
    let mut c = without.conn();
    eventually("the source without a certificate is down", || status(&mut c, "kusers")["kafka"].starts_with("down"));
    assert_eq!(keys_count(&mut c, "kusers:*"), 0);
}
